//! Maps field paths (`nodes[2].mac`) to line numbers in the config text, and byte offsets back
//! to field paths, so every error can say where it is.

use std::fmt;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a field in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// Builds a path from a dotted table name (`lb.pools`) and further segments.
    pub fn parse(dotted: &str) -> FieldPath {
        FieldPath(dotted.split('.').filter(|s| !s.is_empty()).map(|k| Seg::Key(k.to_owned())).collect())
    }

    pub fn key(mut self, key: &str) -> FieldPath {
        self.0.extend(FieldPath::parse(key).0);
        self
    }

    /// Appends a path as problems write it (`node_groups[1].placement.target_nodes[0]`); a
    /// part that is not a field name (`node master-0.mac`) ends it.
    pub fn key_path(mut self, path: &str) -> FieldPath {
        for part in path.split('.') {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            self.0.push(Seg::Key(key.to_owned()));
            for index in rest.split('[').map(|i| i.trim_end_matches(']')).filter(|i| !i.is_empty()) {
                match index.parse() {
                    Ok(n) => self.0.push(Seg::Index(n)),
                    Err(_) => return self,
                }
            }
        }
        self
    }

    pub fn index(mut self, i: usize) -> FieldPath {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The parsed document with spans, over the original text.
pub struct Locator<'t> {
    text: &'t str,
    root: Option<Spanned<DeTable<'t>>>,
}

impl<'t> Locator<'t> {
    pub fn new(text: &'t str) -> Locator<'t> {
        Locator { text, root: DeTable::parse(text).ok() }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
        (line, col)
    }

    /// The line of the deepest part of `path` present in the file.
    pub fn line_of(&self, path: &FieldPath) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut span = None;
        let mut table: Option<&DeTable<'t>> = Some(root.get_ref());
        let mut value: Option<&Spanned<DeValue<'t>>> = None;
        for seg in &path.0 {
            let next = match (seg, table, value.map(|v| v.get_ref())) {
                (Seg::Key(k), Some(t), _) => t.get(k.as_str()),
                (Seg::Key(k), None, Some(DeValue::Table(t))) => t.get(k.as_str()),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = Some(next.span());
            table = None;
            value = Some(next);
        }
        span.map(|s| self.line_col(s.start).0)
    }

    /// The path of the innermost value whose span holds `offset`. Headers of `[[array]]`
    /// tables span only the header line, so every child is searched, not just the enclosing span.
    pub fn path_at(&self, offset: usize) -> FieldPath {
        let mut path = FieldPath::default();
        if let Some(root) = self.root.as_ref() {
            search_table(root.get_ref(), offset, &mut path);
        }
        path
    }
}

fn search_table(table: &DeTable<'_>, offset: usize, path: &mut FieldPath) -> bool {
    for (key, value) in table.iter() {
        path.0.push(Seg::Key(key.get_ref().to_string()));
        if search_value(value, offset, path) || key.span().contains(&offset) {
            return true;
        }
        path.0.pop();
    }
    false
}

fn search_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut FieldPath) -> bool {
    let inner = match value.get_ref() {
        DeValue::Table(t) => search_table(t, offset, path),
        DeValue::Array(a) => a.iter().enumerate().any(|(i, v)| {
            path.0.push(Seg::Index(i));
            let hit = search_value(v, offset, path);
            if !hit {
                path.0.pop();
            }
            hit
        }),
        _ => false,
    };
    inner || value.span().contains(&offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "state_dir = \"/x\"\n\n[[nodes]]\nname = \"a\"\n\n[[nodes]]\nname = \"b\"\nmac = \"zz\"\n[lb]\n[[lb.pools]]\nname = \"api\"\n";

    #[test]
    fn paths_map_to_lines() {
        let loc = Locator::new(TEXT);
        assert_eq!(loc.line_of(&FieldPath::parse("nodes").index(1).key("mac")), Some(8));
        assert_eq!(loc.line_of(&FieldPath::parse("lb.pools").index(0).key("name")), Some(11));
        assert_eq!(loc.line_of(&FieldPath::parse("state_dir")), Some(1));
    }

    #[test]
    fn offsets_map_to_paths() {
        let loc = Locator::new(TEXT);
        let offset = TEXT.find("\"zz\"").expect("present") + 1;
        assert_eq!(loc.path_at(offset).to_string(), "nodes[1].mac");
        assert_eq!(loc.line_col(offset), (8, 8));
    }
}
