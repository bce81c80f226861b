//! The shape of the code, checked mechanically (docs/ARCHITECTURE.md, "Code map"): no import
//! circle between the modules of the product and chaos crates, no dispatch on the target kind
//! outside the target registry, and a thin binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module a file belongs to, two levels deep (`target::delta`, `state`, `run_steps`).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.truncate(2);
    parts.join("::")
}

/// `crate::a::b` paths named in non-test code of `text`, as modules two levels deep.
fn crate_refs(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    // Code only: not the tests, not comments (a doc may name the module that uses this one).
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    // `use crate::{a, b::c}` groups are rare here; paths are spelled out.
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        // The deepest known module of the path (two levels at most).
        for depth in (1..=segs.len().min(2)).rev() {
            let m = segs[..depth].join("::");
            if modules.contains(&m) {
                out.insert(m);
                break;
            }
        }
    }
    out
}

/// Cycles among the modules of a crate's `src/`, ignoring a module's use of its own parent
/// or children (`super::`).
fn cycles(src: &Path) -> Vec<Vec<String>> {
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for to in crate_refs(&text, &modules) {
            let related = to == from
                || to.starts_with(&format!("{from}::"))
                || from.starts_with(&format!("{to}::"));
            if !related {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Every elementary cycle through each node, found by DFS (the graph is small).
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut c = path.clone();
                    let min = c.iter().enumerate().min_by_key(|(_, m)| *m).unwrap().0;
                    c.rotate_left(min);
                    found.insert(c);
                } else if !path.contains(next) && next > start {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found.into_iter().collect()
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_circle_in_the_product_or_chaos_crates() {
    for src in ["src", "chaos/src"] {
        let c = cycles(&workspace().join(src));
        assert!(c.is_empty(), "import circles in {src}: {c:#?}");
    }
}

#[test]
fn the_cycle_finder_finds_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::x;").unwrap();
    std::fs::write(dir.path().join("b.rs"), "use crate::a::y;").unwrap();
    std::fs::write(dir.path().join("c.rs"), "use crate::a::z;").unwrap();
    assert_eq!(
        cycles(dir.path()),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
}

#[test]
fn only_the_target_registry_matches_on_the_target_kind() {
    let root = workspace();
    let registry = root.join("src/target/mod.rs");
    let mut offenders = Vec::new();
    for src in ["src", "chaos/src", "workflows/src"] {
        for f in rust_files(&root.join(src)) {
            let text = std::fs::read_to_string(&f).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let n = code.matches("TargetKind::").count();
            let allowed = f == registry
                // The payload type's own definition and the chaos case's mapping to it.
                || f.ends_with("workflows/src/spec.rs")
                || f.ends_with("chaos/src/case.rs");
            if n > 0 && !allowed {
                offenders.push(format!("{}: {n}", f.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "TargetKind:: outside the registry: {offenders:#?}"
    );
}

#[test]
fn the_binary_only_parses_and_dispatches() {
    let main = std::fs::read_to_string(workspace().join("src/main.rs")).unwrap();
    let lines = main.lines().count();
    assert!(lines < 150, "src/main.rs has {lines} lines");
}
