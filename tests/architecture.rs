//! The shape of `src/`, read from the source text: modules depend one way
//! (no import circle between top-level modules), functions stay under 200
//! lines and the faces do not run pipeline stages themselves. rustfmt's
//! layout makes the reading reliable: an item's closing brace is at its
//! own indentation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text up to its test module.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("src is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("utf-8 source");
                let code = match text.find("\n#[cfg(test)]") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                };
                out.push((path, code));
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`apply` for `src/apply/mod.rs`).
fn top(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// `crate::x` paths used in code (comments left out).
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources(&src()) {
        let from = top(&path);
        if from == "main" || from == "lib" {
            continue;
        }
        let to = graph.entry(from.clone()).or_default();
        to.extend(uses(&code).into_iter().filter(|m| *m != from));
    }
    graph
}

/// A path from `to` back to `from`, if there is one.
fn path_back(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut queue = std::collections::VecDeque::from([vec![to.to_string()]]);
    while let Some(path) = queue.pop_front() {
        let last = path.last().expect("non-empty").clone();
        if last == from {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in graph.get(&last).into_iter().flatten() {
            let mut p = path.clone();
            p.push(next.clone());
            queue.push_back(p);
        }
    }
    None
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let graph = graph();
    assert!(graph.contains_key("render") && graph["render"].contains("config"));
    let mut circles = Vec::new();
    for (from, tos) in &graph {
        for to in tos {
            if let Some(back) = path_back(&graph, from, to) {
                circles.push(format!("{from} -> {}", back.join(" -> ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_faces_do_not_run_pipeline_stages() {
    let forbidden = [
        "render::compare",
        "plan::plan(",
        "check_for_plan",
        "deploy_environments",
    ];
    let mut found = Vec::new();
    for face in ["cli", "action"] {
        for (path, code) in sources(&src().join(face)) {
            for (n, line) in code.lines().enumerate() {
                for f in forbidden.iter().filter(|f| line.contains(*f)) {
                    if !line.contains("pipeline::plan::plan(")
                        && !line.trim_start().starts_with("//")
                    {
                        found.push(format!("{}:{}: {f}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Non-test functions and their lengths in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let sig = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("const ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ");
        if let Some(rest) = sig.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let close = format!("{indent}}}");
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_end() == close)
                .unwrap_or(i);
            out.push((name, i + 1, end - i + 1));
            i = end.max(i) + 1;
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn functions_stay_under_200_lines() {
    let mut long = Vec::new();
    for (path, code) in sources(&src()) {
        for (name, line, len) in functions(&code) {
            if len > 200 {
                long.push(format!("{}:{line}: {name} ({len} lines)", path.display()));
            }
        }
    }
    // The reader finds functions: this one is 3 lines.
    assert!(
        functions("fn a() {\n    b();\n}\n")
            .iter()
            .any(|(n, _, l)| n == "a" && *l == 3)
    );
    assert!(
        long.is_empty(),
        "functions over 200 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_largest_module_files_stay_small() {
    let mut big = Vec::new();
    for rel in ["action/mod.rs", "apply/mod.rs"] {
        let text = std::fs::read_to_string(src().join(rel)).expect("readable");
        let n = text.lines().count();
        if n >= 600 {
            big.push(format!("src/{rel}: {n} lines"));
        }
    }
    assert!(big.is_empty(), "{}", big.join("\n"));
}
