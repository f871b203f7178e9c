//! The import graph of `src/` follows the layering DESIGN.md draws: wiring on top, the API and
//! the config below it, the services in the middle, boot/hypervisor/images under them, the store
//! and the inventory at the bottom with neutral helpers that import nothing of slipway's. A
//! module imports only from lower layers (or from inside its own top-level module), and no two
//! modules import each other, directly or around a loop. Test and fuzz code (`tests.rs`,
//! `fuzz.rs`, `#[cfg(test)]` items) is left out: it may borrow a lab from anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer; a module may import from a strictly lower layer only.
const LAYERS: &[(&str, u8)] = &[
    ("app", 7),
    ("cli", 7),
    ("api", 6),
    ("config", 5),
    ("dhcp", 4),
    ("dns", 4),
    ("tftp", 4),
    ("http", 4),
    ("lb", 4),
    ("cluster", 4),
    ("boot", 3),
    ("hypervisor", 3),
    ("images", 3),
    ("kube", 3),
    ("ssh", 3),
    ("metrics", 3),
    ("service", 3),
    ("store", 2),
    ("inventory", 1),
    ("listen", 0),
    ("readiness", 0),
    ("confine", 0),
    ("template", 0),
    ("throttle", 0),
    ("runtime", 0),
    ("tls", 0),
    ("udp", 0),
    ("sockets", 0),
    ("causes", 0),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/dhcp/decide.rs` -> `dhcp::decide`; `src/dhcp/mod.rs` -> `dhcp`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    parts.join("::")
}

/// The source without `#[cfg(test)]` / `#[cfg(any(test, fuzzing))]` items and comments.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(") && trimmed.contains("test") {
            // Skip the item: one line ending in `;`, or a block to its closing brace.
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                depth += next.matches('{').count() as i32 - next.matches('}').count() as i32;
                opened |= next.contains('{');
                if (opened && depth <= 0) || (!opened && next.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The modules `code` (of module `me`) names through `crate::` or `super::` paths, resolved to
/// the longest module that exists.
fn imports(me: &str, is_mod_file: bool, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let resolve = |path: &str| -> Option<String> {
        let segs: Vec<&str> = path.split("::").collect();
        (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|m| modules.contains(m))
    };
    let mut found = BTreeSet::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (prefix, base) in [
        ("crate::", String::new()),
        ("super::", {
            // `super` of a mod.rs is its parent; of a file module, the module holding it.
            let mut parts: Vec<&str> = me.split("::").collect();
            if is_mod_file || !parts.is_empty() {
                parts.pop();
            }
            parts.join("::")
        }),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            let tail = &rest[at + prefix.len()..];
            let path: String = tail.chars().take_while(|c| word(*c)).collect();
            let path = path.trim_end_matches(':');
            if before.is_none_or(|c| !word(c)) && !path.is_empty() {
                let full = if base.is_empty() { path.to_string() } else { format!("{base}::{path}") };
                if let Some(m) = resolve(&full)
                    && m != me
                {
                    found.insert(m);
                }
            }
            rest = tail;
        }
    }
    found
}

#[test]
fn imports_point_down_and_never_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name != "tests.rs" && name != "fuzz.rs" && !f.components().any(|c| c.as_os_str() == "tests")
        })
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let me = module_of(&src, file);
        if me.is_empty() {
            continue; // lib.rs / main.rs: the crate root declares the modules.
        }
        let is_mod = file.file_name().is_some_and(|n| n == "mod.rs");
        let code = production_code(&std::fs::read_to_string(file).expect("read"));
        let top = me.split("::").next().unwrap_or_default().to_string();
        let Some(&my_layer) = layer.get(top.as_str()) else {
            wrong.push(format!("{me}: top-level module {top} has no layer in LAYERS"));
            continue;
        };
        for target in imports(&me, is_mod, &code, &modules) {
            let target_top = target.split("::").next().unwrap_or_default();
            if target_top != top {
                match layer.get(target_top) {
                    Some(&l) if l < my_layer => {}
                    // Neutral helpers may build on each other (the loop check below still holds).
                    Some(0) if my_layer == 0 => {}
                    Some(&l) => wrong.push(format!("{me} (layer {my_layer}) imports {target} (layer {l})")),
                    None => wrong.push(format!("{me} imports {target}, which has no layer")),
                }
            }
            // A module's own children (a mod.rs naming its submodules) are not a loop edge.
            if !target.starts_with(&format!("{me}::")) {
                graph.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    // Loops: a module that reaches itself again.
    for start in graph.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    wrong.push(format!("import loop: {} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "{} layering problems:\n{}", wrong.len(), wrong.join("\n"));
}
