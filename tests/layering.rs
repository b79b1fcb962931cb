//! The library's modules form layers: each imports only from modules below it, so that any one
//! of them can be read, tested and changed knowing only what lies under it. Checked on the
//! source: between top-level modules (`crate::a` used in `b`) and between sibling files of one
//! directory (`super::a` used in `b`). A parent's `mod.rs` and its own children may use each
//! other (that is how a module's files share its items).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are both `["a", "b"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code without its unit tests (which may reach anywhere in the crate).
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The first path segment after every `prefix` (`crate::` or `super::`), including each item
/// of a `prefix{a, b::c}` group.
fn segments_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let identifier = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        out.insert(identifier(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(identifier(rest));
        }
    }
    out
}

fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut loop_ = path[at..].to_vec();
            loop_.push(node.to_string());
            return Some(loop_);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_only_from_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The binary's own modules sit on top of the library and are not part of it.
    files.retain(|f| !f.starts_with(src.join("cli")) && !f.ends_with("main.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let top_level: BTreeSet<&String> = modules.iter().filter_map(|m| m.first()).collect();

    let mut across = Graph::new();
    let mut siblings: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for file in &files {
        let module = module_path(&src, file);
        let Some(own) = module.first() else { continue }; // lib.rs
        let code = code_of(file);
        for used in segments_after(&code, "crate::") {
            if top_level.contains(&used) && &used != own {
                across.entry(own.clone()).or_default().insert(used);
            }
        }
        // `super::x` in a `mod.rs` means the parent's parent; only sibling files count here.
        let is_mod_rs = file.ends_with("mod.rs");
        if let (false, Some((name, parent))) = (is_mod_rs, module.split_last()) {
            for used in segments_after(&code, "super::") {
                let mut sibling = parent.to_vec();
                sibling.push(used.clone());
                if modules.contains(&sibling) && &used != name {
                    let graph = siblings.entry(parent.to_vec()).or_default();
                    graph.entry(name.clone()).or_default().insert(used);
                }
            }
        }
    }

    assert!(across.len() > 5, "too few modules found: {across:?}");
    if let Some(found) = cycle(&across) {
        panic!("import loop between modules: {}", found.join(" → "));
    }
    for (parent, graph) in &siblings {
        if let Some(found) = cycle(graph) {
            panic!(
                "import loop between the files of src/{}: {}",
                parent.join("/"),
                found.join(" → ")
            );
        }
    }
}

#[test]
fn the_loop_finder_finds_loops() {
    let graph: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let code = "use crate::{io::{A, B}, embed, error::Result};\nuse super::texts::X;";
    assert_eq!(
        segments_after(code, "crate::"),
        ["embed", "error", "io"].map(String::from).into()
    );
    assert_eq!(
        segments_after(code, "super::"),
        ["texts".to_string()].into()
    );
}
