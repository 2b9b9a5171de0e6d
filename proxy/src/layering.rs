//! A test that the proxy's top-level modules import one another without a circle: it reads
//! `src/**/*.rs`, collects the `crate::X` and `super::X` paths between modules, and names any circle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one module uses another: the file and line.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

/// Every `.rs` file below `dir`, as (path relative to `root`, text).
fn sources(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let rel = path
                .strip_prefix(root)
                .expect("below the root")
                .to_path_buf();
            out.push((rel, text));
        }
    }
}

/// A file's module path below the crate root: `backend.rs` is `[backend]`,
/// `session/mod.rs` is `[session]`, `session/queue.rs` is `[session, queue]`.
fn module_path(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a path names when it starts at the crate root (`rest` follows
/// `crate::`): one, or each of a `{a, b::C}` group's.
fn roots_of(rest: &str) -> Vec<&str> {
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut names = Vec::new();
    let (mut depth, mut start) = (0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                names.push(ident(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    names
}

/// The uses of one top-level module by another in `files` (paths relative to `src/`), each
/// with the first place it is made. Comment lines do not count.
fn edges(files: &[(PathBuf, String)]) -> Edges {
    let modules: Vec<String> = files
        .iter()
        .filter_map(|(f, _)| module_path(f).first().cloned())
        .collect();
    let mut edges = Edges::new();
    for (file, text) in files {
        let path = module_path(file);
        let Some(from) = path.first() else { continue };
        let code: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("//") {
                    ""
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        // `super::` as many times as the file is deep reaches the crate root.
        let up = "super::".repeat(path.len());
        for prefix in ["crate::", up.as_str()] {
            for (at, _) in code.match_indices(prefix) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for to in roots_of(&code[at + prefix.len()..]) {
                    if to != from && modules.iter().any(|m| m == to) {
                        let line = code[..at].matches('\n').count() + 1;
                        edges
                            .entry(from.clone())
                            .or_default()
                            .entry(to.to_string())
                            .or_insert_with(|| format!("{}:{line}", file.display()));
                    }
                }
            }
        }
    }
    edges
}

/// A circle of imports, as `a -> b -> a` with where each use is, or `None`.
fn find_circle(edges: &Edges) -> Option<String> {
    fn visit(
        node: &str,
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|m| m == node) {
            let circle = &path[i..];
            let places: Vec<String> = circle
                .iter()
                .zip(circle.iter().skip(1).chain([&circle[0]]))
                .map(|(a, b)| format!("{a} uses {b} at src/{}", edges[a][b]))
                .collect();
            return Some(format!(
                "{} -> {node} ({})",
                circle.join(" -> "),
                places.join("; ")
            ));
        }
        if done.iter().any(|m| m == node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.push(node.to_string());
        None
    }
    let mut done = Vec::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_proxys_modules_import_one_another_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let uses = edges(&files);
    assert!(
        uses.get("session")
            .is_some_and(|e| e.contains_key("router")),
        "the check finds no use of router by session: it reads no imports ({uses:?})"
    );
    if let Some(circle) = find_circle(&uses) {
        panic!("import circle among the proxy's modules: {circle}");
    }
}

#[test]
fn a_circle_is_named_with_where_each_use_is() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let files = [
        file("backend.rs", "use crate::shared::Shared;\n"),
        file(
            "shared.rs",
            "// crate::session in a comment is no use\nuse crate::{config, router::X};\n",
        ),
        file("config.rs", "fn f() {}\n"),
        file("router.rs", "use super::backend;\n"),
        file("session/mod.rs", "use crate::backend;\n"),
        file(
            "session/queue.rs",
            "use super::super::shared;\nuse tessera_x::crate::backend;\n",
        ),
    ];
    let uses = edges(&files);
    assert_eq!(
        find_circle(&uses).as_deref(),
        Some(
            "backend -> shared -> router -> backend (backend uses shared at src/backend.rs:1; \
             shared uses router at src/shared.rs:2; router uses backend at src/router.rs:1)"
        )
    );
    let session: Vec<&String> = uses["session"].keys().collect();
    assert_eq!(session, ["backend", "shared"]);
    assert!(!uses["shared"].contains_key("session"), "{uses:?}");

    let acyclic: Vec<_> = files
        .into_iter()
        .filter(|(f, _)| f != Path::new("router.rs"))
        .collect();
    assert_eq!(find_circle(&edges(&acyclic)), None);
}
