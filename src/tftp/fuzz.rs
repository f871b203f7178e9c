//! The property the `tftp_name` fuzz target checks, callable from the unit tests too.

use std::path::{Component, Path};

use super::{Wanted, check, inside};

/// Panics if `check` lets through a name that could leave the root.
pub fn check_name(name: &str) {
    if let Ok(Wanted::File(path)) = check(name) {
        assert!(path.is_relative(), "{name:?} passed as an absolute path");
        assert!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "{name:?} passed with a special component"
        );
        let root = Path::new("/srv/tftp");
        assert!(inside(root, &root.join(&path)), "{name:?} leaves the root");
        assert!(!name.contains(['\\', '%', '\0']), "{name:?} passed with a refused character");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mutations_of_traversal_names_never_escape() {
        let seeds = ["../etc/passwd", "a/../../b", "..\\x", "%2e%2e/x", "/abs", "ok/file.efi", "a//b", "./x", "x/."];
        let extra = ['.', '/', '\\', '%', '\0', 'a'];
        for seed in seeds {
            super::check_name(seed);
            for (i, _) in seed.char_indices() {
                for c in extra {
                    let mut s = seed.to_string();
                    s.insert(i, c);
                    super::check_name(&s);
                    s.remove(i);
                    if i < s.len() && s.is_char_boundary(i) && s.is_char_boundary(i + 1) {
                        s.replace_range(i..i + 1, &c.to_string());
                        super::check_name(&s);
                    }
                }
            }
        }
    }
}
