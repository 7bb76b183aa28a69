//! The image lock (kbld's job): `images.lock.yaml` maps each image reference
//! the config renders to the digest it resolved to when `kdeploy lock` ran,
//! so a commit deploys exactly those images however tags move later.
//! Rendering replaces each locked reference with `reference@digest`; with
//! `images.requireLock`, an image that is neither locked nor pinned by
//! digest is an error.
//!
//! This module is the file model only: [`crate::render`] pins rendered
//! images by it, and [`crate::edit::lock`] is the `kdeploy lock` command
//! that writes it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::images;
use crate::yaml;

/// A parsed lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// Path in the config repo.
    pub path: String,
    /// Reference (as rendered) -> digest (`sha256:…`).
    pub entries: BTreeMap<String, String>,
}

const HEADER: &str = "# Written by `kdeploy lock`: the digest each image reference resolved to.\n# Rendering deploys `reference@digest`. Refresh with `kdeploy lock`; do not edit by hand.\n";

fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

impl Lock {
    /// Parses a lock file.
    ///
    /// # Errors
    /// Every malformed entry, at its line.
    pub fn parse(path: &str, text: &str) -> Result<Lock, Diagnostics> {
        let index =
            yaml::index(text).map_err(|e| Diagnostics::from(e.diagnostic(path, "invalid YAML")))?;
        let line_of = |key: &str| {
            index
                .iter()
                .find(|l| l.path.len() == 2 && l.path[0] == "images" && l.path[1] == key)
                .map(|l| (l.line, l.column))
        };
        let value =
            yaml::parse(text).map_err(|e| Diagnostics::from(e.diagnostic(path, "invalid YAML")))?;
        let help = "regenerate it with `kdeploy lock`";
        let images = match &value {
            Value::Null => {
                return Ok(Lock {
                    path: path.into(),
                    entries: BTreeMap::new(),
                });
            }
            Value::Object(m) if m.keys().all(|k| k == "images") => match m.get("images") {
                Some(Value::Object(images)) => images.clone(),
                Some(Value::Null) | None => serde_json::Map::new(),
                Some(_) => {
                    return Err(Diagnostic::new(
                        Location::file(path),
                        "`images` must be a map of reference: digest",
                    )
                    .help(help)
                    .into());
                }
            },
            _ => {
                return Err(Diagnostic::new(
                    Location::at(path, Some(1), Some(1)),
                    "an image lock holds one key, `images`: a map of reference: digest",
                )
                .help(help)
                .into());
            }
        };
        let mut problems = Diagnostics::default();
        let mut entries = BTreeMap::new();
        for (reference, digest) in images {
            let (line, column) = line_of(&reference).unzip();
            let at = Location::at(path, line, column);
            match digest.as_str() {
                Some(d) if is_digest(d) && !reference.is_empty() && !images::is_pinned(&reference) => {
                    entries.insert(reference, d.to_string());
                }
                Some(d) if !is_digest(d) => problems.push(
                    Diagnostic::new(at, format!("`{reference}`: `{d}` is not a digest (sha256: and 64 lowercase hex digits)"))
                        .help(help),
                ),
                _ => problems.push(
                    Diagnostic::new(at, format!("`{reference}` is not a lockable reference with a digest"))
                        .help(help),
                ),
            }
        }
        problems.into_result(Lock {
            path: path.into(),
            entries,
        })
    }

    /// The file's text: sorted, one entry per line, stable across runs.
    pub fn to_text(&self) -> String {
        let mut out = String::from(HEADER);
        if self.entries.is_empty() {
            out.push_str("images: {}\n");
            return out;
        }
        out.push_str("images:\n");
        for (reference, digest) in &self.entries {
            out.push_str(&format!(
                "  {}: {digest}\n",
                serde_json::Value::String(reference.clone())
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn round_trips_and_names_bad_lines() {
        let mut lock = Lock {
            path: "images.lock.yaml".into(),
            ..Default::default()
        };
        lock.entries.insert("ghcr.io/acme/api:1.0".into(), D.into());
        lock.entries.insert("nginx".into(), D.into());
        let text = lock.to_text();
        assert_eq!(Lock::parse("images.lock.yaml", &text).unwrap(), lock);

        let bad = format!("images:\n  a:1: {D}\n  b:2: sha256:XYZ\n  c@sha256:00: {D}\n");
        let err = Lock::parse("images.lock.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("images.lock.yaml:3:3: `b:2`: `sha256:XYZ` is not a digest"),
            "{err}"
        );
        assert!(
            err.contains("`c@sha256:00` is not a lockable reference"),
            "{err}"
        );
        assert!(Lock::parse("l", "other: 1\n").is_err());
    }
}
