//! The values schemas of a Helm chart and its subcharts, checked for
//! references that make Helm read beyond the chart.
//!
//! `helm template` validates values against every `values.schema.json` of
//! the chart and its dependencies, and Helm's JSON Schema loader follows a
//! `$ref` (or an unknown `$schema`) to any URL or file: a pull request's
//! chart would make the plan job fetch from an address of its author's
//! choosing, or read files of the runner. Only references inside the
//! schema (`#/…`) and the published metaschemas are allowed. Subcharts
//! packed as `charts/*.tgz` are read too, nested ones included.

use std::io::Read as _;
use std::path::Path;

use serde_json::Value;

/// The most bytes read of one archive or schema: a chart is small.
const MAX_BYTES: u64 = 64 << 20;
/// How deep archives nest (`charts/a.tgz` holding `charts/b.tgz` …).
const MAX_DEPTH: usize = 8;

/// One reference Helm would follow out of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The schema, relative to the chart (`charts/db-1.0.tgz:db/values.schema.json`).
    pub schema: String,
    /// The keyword (`$ref`, `$schema`, `$dynamicRef`).
    pub keyword: &'static str,
    /// Its value.
    pub target: String,
}

/// Every reference out of the chart at `root`, in its schemas and those
/// of its subcharts (directories and archives).
pub fn reaches(root: &Path) -> Vec<Reach> {
    let mut out = Vec::new();
    walk_dir(root, root, &mut out, 0);
    out
}

fn walk_dir(root: &Path, dir: &Path, out: &mut Vec<Reach>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() && depth < 32 {
            walk_dir(root, &path, out, depth + 1);
        } else if kind.is_file() && name == "values.schema.json" {
            if let Ok(f) = std::fs::File::open(&path) {
                let mut text = Vec::new();
                let _ = f.take(MAX_BYTES).read_to_end(&mut text);
                check_schema(&rel, &text, out);
            }
        } else if kind.is_file()
            && name.ends_with(".tgz")
            && let Ok(f) = std::fs::File::open(&path)
        {
            walk_archive(&rel, f.take(MAX_BYTES), out, 0);
        }
    }
}

fn walk_archive(label: &str, reader: impl std::io::Read, out: &mut Vec<Reach>, depth: usize) {
    if depth >= MAX_DEPTH {
        return;
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let Ok(entries) = archive.entries() else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(path) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
            continue;
        };
        let mut bytes = Vec::new();
        if entry.take(MAX_BYTES).read_to_end(&mut bytes).is_err() {
            continue;
        }
        let inner = format!("{label}:{path}");
        if path.ends_with("/values.schema.json") || path == "values.schema.json" {
            check_schema(&inner, &bytes, out);
        } else if path.ends_with(".tgz") {
            walk_archive(&inner, bytes.as_slice(), out, depth + 1);
        }
    }
}

/// Metaschemas Helm's loader knows without fetching them.
/// (Named with `http://` or `https://`, with or without a final `#`.)
const METASCHEMAS: &[&str] = &[
    "json-schema.org/draft-04/schema",
    "json-schema.org/draft-06/schema",
    "json-schema.org/draft-07/schema",
    "json-schema.org/draft/2019-09/schema",
    "json-schema.org/draft/2020-12/schema",
];

fn check_schema(label: &str, text: &[u8], out: &mut Vec<Reach>) {
    // A schema that is not JSON fails Helm's own validation with its own
    // message; it reaches nothing.
    let Ok(schema) = serde_json::from_slice::<Value>(text) else {
        return;
    };
    let mut stack = vec![&schema];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let keyword = match k.as_str() {
                        "$ref" => Some("$ref"),
                        "$dynamicRef" => Some("$dynamicRef"),
                        "$recursiveRef" => Some("$recursiveRef"),
                        "$schema" => Some("$schema"),
                        _ => None,
                    };
                    match (keyword, child.as_str()) {
                        (Some(keyword), Some(target)) if reaches_out(keyword, target) => {
                            out.push(Reach {
                                schema: label.to_string(),
                                keyword,
                                target: target.to_string(),
                            });
                        }
                        _ => stack.push(child),
                    }
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

fn reaches_out(keyword: &str, target: &str) -> bool {
    if keyword == "$schema" {
        let bare = target
            .strip_prefix("https://")
            .or_else(|| target.strip_prefix("http://"))
            .map(|t| t.trim_end_matches('#'));
        return !bare.is_some_and(|b| METASCHEMAS.contains(&b));
    }
    !target.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_out_of_the_schema_are_found_in_directories_and_nested_archives() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("values.schema.json"),
            r##"{"$schema":"https://json-schema.org/draft/2020-12/schema","properties":{"a":{"$ref":"#/$defs/a"},"b":{"$ref":"https://evil.example/x.json"}}}"##,
        )
        .unwrap();
        // charts/outer.tgz holds outer/charts/inner.tgz whose schema reads a file.
        let tgz = |files: &[(&str, &[u8])]| -> Vec<u8> {
            let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::fast(),
            ));
            for (name, data) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, *data).unwrap();
            }
            b.into_inner().unwrap().finish().unwrap()
        };
        let inner = tgz(&[(
            "inner/values.schema.json",
            br#"{"items":[{"$ref":"../../../../etc/passwd"}],"$schema":"http://evil.example/meta"}"#,
        )]);
        let outer = tgz(&[("outer/charts/inner.tgz", &inner)]);
        std::fs::create_dir(root.join("charts")).unwrap();
        std::fs::write(root.join("charts/outer.tgz"), outer).unwrap();
        let mut found: Vec<String> = reaches(root)
            .into_iter()
            .map(|r| format!("{} {} {}", r.schema, r.keyword, r.target))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "charts/outer.tgz:outer/charts/inner.tgz:inner/values.schema.json $ref ../../../../etc/passwd",
                "charts/outer.tgz:outer/charts/inner.tgz:inner/values.schema.json $schema http://evil.example/meta",
                "values.schema.json $ref https://evil.example/x.json",
            ]
        );
    }
}
