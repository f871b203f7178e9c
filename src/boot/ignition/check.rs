//! The checks `ignition-validate` makes beyond the spec's shape, ported from Ignition's own
//! validation (`config/validate`, `config/v3_*/types`): entries that share a key (users and
//! groups by name, files/directories/links by path across the three lists, units by name,
//! dropins by name, every list of strings by value), paths that are not absolute and clean,
//! nodes under a link, unit and dropin names, unit file syntax (go-systemd's parser), links
//! without a target and files that sit where a unit is written. Pure; problems name where, never
//! the values of a config (they may be secrets), except for keys such as a path or a unit name.

use std::collections::HashSet;

use serde_json::Value;

/// Unit name endings systemd (and Ignition) accept.
const UNIT_TYPES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".snapshot",
    ".slice",
    ".scope",
];

/// Every problem `config` has, each as `$.json.path: what` (empty: valid).
pub fn problems(config: &Value) -> Vec<String> {
    let mut out = Problems(Vec::new());
    let storage = &config["storage"];
    for (list, key) in [("disks", "device"), ("raid", "name"), ("filesystems", "device"), ("luks", "name")] {
        out.keyed(&[("storage", list)], storage, key);
    }
    out.keyed(&[("passwd", "users")], &config["passwd"], "name");
    out.keyed(&[("passwd", "groups")], &config["passwd"], "name");
    for (i, user) in items(&config["passwd"]["users"]) {
        for list in ["sshAuthorizedKeys", "groups"] {
            out.strings(&format!("$.passwd.users.{i}.{list}"), &user[list]);
        }
    }
    // One key space: an argument may not be both wanted and unwanted.
    let mut args = HashSet::new();
    for list in ["shouldExist", "shouldNotExist"] {
        for (i, arg) in items(&config["kernelArguments"][list]) {
            if let Some(arg) = arg.as_str()
                && !args.insert(arg)
            {
                out.add(format!("$.kernelArguments.{list}.{i}"), "duplicate entry");
            }
        }
    }
    out.keyed_at("$.ignition.config.merge", &config["ignition"]["config"]["merge"], "source");
    out.keyed_at(
        "$.ignition.security.tls.certificateAuthorities",
        &config["ignition"]["security"]["tls"]["certificateAuthorities"],
        "source",
    );
    nodes(storage, &mut out);
    units(config, &mut out);
    out.0
}

struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, at: String, what: impl Into<String>) {
        self.0.push(format!("{at}: {}", what.into()));
    }

    /// Duplicate keys in the list `parent[name]` (`path` names it for messages).
    fn keyed(&mut self, path: &[(&str, &str)], parent: &Value, key: &str) {
        for (section, list) in path {
            self.keyed_at(&format!("$.{section}.{list}"), &parent[*list], key);
        }
    }

    fn keyed_at(&mut self, at: &str, list: &Value, key: &str) {
        let mut seen = HashSet::new();
        for (i, item) in items(list) {
            if let Some(k) = item[key].as_str()
                && !seen.insert(k)
            {
                self.add(format!("{at}.{i}"), format!("duplicate entry ({key} {})", shown_key(key, k)));
            }
        }
    }

    /// Duplicate strings in a list of strings.
    fn strings(&mut self, at: &str, list: &Value) {
        let mut seen = HashSet::new();
        for (i, item) in items(list) {
            if let Some(s) = item.as_str()
                && !seen.insert(s)
            {
                self.add(format!("{at}.{i}"), "duplicate entry");
            }
        }
    }
}

/// A key is shown when it names a place (a path, a unit, a user), not when it could be data.
fn shown_key<'a>(key: &str, value: &'a str) -> &'a str {
    if key == "source" { "…" } else { value }
}

fn items(list: &Value) -> impl Iterator<Item = (usize, &Value)> {
    list.as_array().into_iter().flatten().enumerate()
}

/// Files, directories and links: one key space (paths), valid paths, nothing under a link.
fn nodes(storage: &Value, out: &mut Problems) {
    let mut seen = HashSet::new();
    let links: Vec<&str> = items(&storage["links"]).filter_map(|(_, l)| l["path"].as_str()).collect();
    for list in ["files", "directories", "links"] {
        for (i, node) in items(&storage[list]) {
            let at = format!("$.storage.{list}.{i}");
            let Some(path) = node["path"].as_str() else {
                out.add(format!("{at}.path"), "path is required");
                continue;
            };
            if let Err(what) = check_path(path) {
                out.add(format!("{at}.path"), format!("{what} ({path})"));
            }
            if !seen.insert(path) {
                out.add(at.clone(), format!("duplicate entry (path {path})"));
            }
            if let Some(link) = links.iter().find(|l| path.starts_with(&format!("{l}/"))) {
                out.add(at.clone(), format!("{path} is under the link {link}"));
            }
            if list == "links" && node["target"].as_str().is_none_or(str::is_empty) {
                out.add(format!("{at}.target"), "a link needs a target");
            }
        }
    }
}

/// Ignition's `validatePath`: absolute and clean (what Go's `path.Clean` would leave as it is).
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("path is required");
    }
    if !path.starts_with('/') {
        return Err("path not absolute");
    }
    let dirty = path.len() > 1
        && (path.ends_with('/') || path.split('/').skip(1).any(|part| part.is_empty() || part == "." || part == ".."));
    if dirty { Err("path is not clean") } else { Ok(()) }
}

/// Unit and dropin names and contents, and files written where a unit will be.
fn units(config: &Value, out: &mut Problems) {
    out.keyed(&[("systemd", "units")], &config["systemd"], "name");
    let mut unit_paths = HashSet::new();
    for (i, unit) in items(&config["systemd"]["units"]) {
        let at = format!("$.systemd.units.{i}");
        let name = unit["name"].as_str().unwrap_or_default();
        if !UNIT_TYPES.iter().any(|t| name.ends_with(t) && name.len() > t.len()) {
            out.add(format!("{at}.name"), format!("invalid systemd unit extension ({name})"));
        }
        unit_file(out, &at, &unit["contents"], format!("/etc/systemd/system/{name}"), &mut unit_paths);
        out.keyed_at(&format!("{at}.dropins"), &unit["dropins"], "name");
        for (j, dropin) in items(&unit["dropins"]) {
            let dropin_name = dropin["name"].as_str().unwrap_or_default();
            if !dropin_name.ends_with(".conf") {
                out.add(format!("{at}.dropins.{j}.name"), format!("invalid systemd drop-in extension ({dropin_name})"));
            }
            let path = format!("/etc/systemd/system/{name}.d/{dropin_name}");
            unit_file(out, &format!("{at}.dropins.{j}"), &dropin["contents"], path, &mut unit_paths);
        }
    }
    for list in ["files", "directories", "links"] {
        for (i, node) in items(&config["storage"][list]) {
            if let Some(path) = node["path"].as_str()
                && unit_paths.contains(path)
            {
                out.add(format!("$.storage.{list}.{i}.path"), format!("{path} is also written by a systemd unit"));
            }
        }
    }
}

/// A unit's or drop-in's `contents` at `at`: parsed, and its path noted when it writes one.
fn unit_file(out: &mut Problems, at: &str, contents: &Value, path: String, paths: &mut HashSet<String>) {
    let Some(contents) = contents.as_str() else { return };
    if let Err(e) = parse_unit(contents) {
        out.add(format!("{at}.contents"), format!("invalid unit content: {e}"));
    }
    if !contents.is_empty() {
        paths.insert(path);
    }
}

/// go-systemd's line limit: a line of this many bytes (its newline counted) is refused.
const UNIT_LINE_MAX: usize = 2048;

/// go-systemd's unit lexer (what Ignition uses): no line of `UNIT_LINE_MAX` bytes or more, text
/// before the first section is skipped, a section header ends with `]` and nothing but spaces
/// after it, an option line has a `=` before the end of its line, a `\` as the last byte of a
/// line continues a value (a comment's may be followed by one space).
pub fn parse_unit(text: &str) -> Result<(), &'static str> {
    if text.split('\n').any(|l| l.len() + 1 >= UNIT_LINE_MAX) {
        return Err("a line of 2048 bytes or more");
    }
    let mut in_section = false;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            let mut l = line;
            while continued(l.strip_suffix(' ').unwrap_or(l)) {
                let Some(next) = lines.next() else { return Ok(()) };
                l = next;
            }
            continue;
        }
        if let Some(after) = trimmed.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Err("unable to find end of section");
            };
            if !after[end + 1..].trim().is_empty() {
                return Err("found garbage after section name");
            }
            in_section = true;
            continue;
        }
        if !in_section || trimmed.trim().is_empty() {
            continue;
        }
        if !trimmed.contains('=') {
            return Err("an option line without `=`");
        }
        let mut l = line;
        while continued(l) {
            let Some(next) = lines.next() else { return Ok(()) };
            l = next;
        }
    }
    Ok(())
}

/// A value goes on to the next line when a backslash is its line's last byte.
fn continued(line: &str) -> bool {
    line.ends_with('\\')
}
