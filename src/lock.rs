//! The image lock (kbld's job): `images.lock.yaml` maps each image reference
//! the config renders to the digest it resolved to when `kdeploy lock` ran,
//! so a commit deploys exactly those images however tags move later.
//! Rendering replaces each locked reference with `reference@digest`; with
//! `images.requireLock`, an image that is neither locked nor pinned by
//! digest is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::Value;

use crate::config::{Filter, ImagesSettings};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::images::{self, registry};
use crate::render::{self, Rendered};
use crate::resource::Origin;
use crate::secrets::Need;
use crate::source::{Revision, Snapshot};
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

/// Where an image is used: for errors and `kdeploy lock`'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// `production/api`.
    pub release: String,
    /// `apps/Deployment api-production/api containers[0]`.
    pub at: String,
}

/// Calls `f` with every unpinned image of `releases`, with the id and
/// origin of the resource holding it.
fn each_unpinned(
    releases: &mut [Rendered],
    settings: &ImagesSettings,
    mut f: impl FnMut(&str, &Origin, images::ImageField<'_>),
) {
    for r in releases.iter_mut() {
        for res in &mut r.resources {
            let id = res.id.to_string();
            let origin = &res.origin;
            images::for_each_image(
                &mut res.object,
                &res.id.group,
                &res.id.kind,
                &settings.pod_specs,
                |field| {
                    if !images::is_pinned(field.image) {
                        f(&id, origin, field);
                    }
                },
            );
        }
    }
}

/// Every unpinned image reference of `releases`, with where each is used.
pub fn references(
    releases: &mut [Rendered],
    settings: &ImagesSettings,
) -> BTreeMap<String, Vec<Use>> {
    let mut out: BTreeMap<String, Vec<Use>> = BTreeMap::new();
    each_unpinned(releases, settings, |id, origin, f| {
        out.entry(f.image.clone()).or_default().push(Use {
            release: format!("{}/{}", origin.env, origin.app),
            at: format!("{id} {}", f.container),
        });
    });
    out
}

/// Replaces each locked image of `releases` with `reference@digest`; with
/// `images.requireLock`, every image left unpinned is a problem.
///
/// # Errors
/// The unlocked images (each at its template and line), when required.
pub fn pin(
    releases: &mut [Rendered],
    lock: Option<&Lock>,
    settings: &ImagesSettings,
) -> Result<(), Diagnostics> {
    if lock.is_none_or(|l| l.entries.is_empty()) && !settings.require_lock {
        return Ok(()); // nothing to pin: no walk over every resource
    }
    let mut problems = Diagnostics::default();
    let lock_path = lock.map_or(settings.lock_file.as_str(), |l| l.path.as_str());
    each_unpinned(releases, settings, |id, origin, f| {
        if let Some(digest) = lock.and_then(|l| l.entries.get(f.image.as_str())) {
            *f.image = format!("{}@{digest}", f.image);
        } else if settings.require_lock {
            problems.push(
                Diagnostic::new(
                    Location::at(&origin.file, Some(origin.line), None),
                    format!(
                        "image `{}` ({id} {}, release {}/{}) is not in {lock_path}, and `images.requireLock` is set",
                        f.image, f.container, origin.env, origin.app
                    ),
                )
                .help(format!(
                    "run `kdeploy lock` and commit {lock_path} (or pin the image by digest)"
                )),
            );
        }
    });
    problems.into_result(())
}

/// What `kdeploy lock` did for one reference.
#[derive(Debug)]
pub struct Resolved {
    /// The reference.
    pub reference: String,
    /// Its digest before, if it was locked.
    pub before: Option<String>,
    /// The digest now, or why it did not resolve.
    pub after: Result<String, registry::Error>,
}

/// Resolves `references` through `registry`, `concurrency` at a time, in
/// reference order.
pub async fn resolve(
    registry: &registry::Registry,
    references: impl IntoIterator<Item = String>,
    previous: &Lock,
    concurrency: usize,
) -> Vec<Resolved> {
    let mut out: Vec<Resolved> = futures::stream::iter(references)
        .map(|reference| async move {
            let after = registry.digest(&reference).await;
            Resolved {
                before: previous.entries.get(&reference).cloned(),
                reference,
                after,
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    out
}

/// What `kdeploy lock` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines to print, one per image.
    pub lines: Vec<String>,
    /// References that failed to resolve (nothing was written).
    pub failed: usize,
    /// `--check`: the lock does not match the rendered images.
    pub out_of_date: bool,
}

/// `kdeploy lock`: renders the work tree of `repo` (images as written),
/// resolves every unpinned image through its registry and writes the lock
/// file; with `check`, only compares (no network). Nothing is written when
/// any image fails to resolve.
///
/// # Errors
/// Render problems, an invalid lock file, a lock path that is a link.
pub async fn command(repo: &Path, filter: &Filter, check: bool) -> anyhow::Result<Report> {
    let snapshot = Snapshot::open(repo, &Revision::parse(None))?;
    let mut state =
        render::render_with(&snapshot, filter, Need::Optional, render::Images::AsWritten)?;
    let settings = state.settings.images.clone();
    let refs = references(&mut state.releases, &settings);
    let previous = match crate::repo_write::read(repo, &settings.lock_file)? {
        Some(text) => Lock::parse(&settings.lock_file, &text)?,
        None => Lock {
            path: settings.lock_file.clone(),
            ..Default::default()
        },
    };
    let mut report = Report::default();
    if check {
        for (reference, uses) in &refs {
            if !previous.entries.contains_key(reference) {
                report.out_of_date = true;
                report.lines.push(format!(
                    "  missing  {reference} (used by {})",
                    uses.iter()
                        .map(|u| u.release.as_str())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if filter.is_all() {
            for reference in previous.entries.keys().filter(|r| !refs.contains_key(*r)) {
                report.out_of_date = true;
                report.lines.push(format!(
                    "  unused   {reference} (no rendered resource uses it)"
                ));
            }
        }
        return Ok(report);
    }
    let registry = registry::Registry::new(&settings.insecure_registries);
    let resolved = resolve(&registry, refs.keys().cloned(), &previous, CONCURRENCY).await;
    let mut next = previous.clone();
    // One line per reference, in reference order.
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    if filter.is_all() {
        next.entries.retain(|r, _| refs.contains_key(r));
        for r in previous.entries.keys().filter(|r| !refs.contains_key(*r)) {
            lines.insert(
                r.clone(),
                format!("  removed  {r} (no rendered resource uses it)"),
            );
        }
    }
    for r in &resolved {
        match &r.after {
            Ok(digest) => {
                let what = match &r.before {
                    None => "new".to_string(),
                    Some(b) if b == digest => "unchanged".to_string(),
                    Some(b) => format!("changed from {}", short(b)),
                };
                lines.insert(
                    r.reference.clone(),
                    format!("  locked   {} {} ({what})", r.reference, short(digest)),
                );
                next.entries.insert(r.reference.clone(), digest.clone());
            }
            Err(e) => {
                report.failed += 1;
                let uses = refs
                    .get(&r.reference)
                    .map(|u| u.as_slice())
                    .unwrap_or_default();
                let first = uses
                    .first()
                    .map(|u| format!(" (used by {}: {})", u.release, u.at))
                    .unwrap_or_default();
                lines.insert(r.reference.clone(), format!("  failed   {e}{first}"));
            }
        }
    }
    report.lines = lines.into_values().collect();
    if report.failed == 0 && next != previous {
        crate::repo_write::write(repo, &settings.lock_file, next.to_text().as_bytes())
            .with_context(|| format!("cannot write {}", settings.lock_file))?;
    }
    Ok(report)
}

/// Registry requests in flight at once.
const CONCURRENCY: usize = 16;

/// `sha256:0123456789ab…` for reports.
fn short(digest: &str) -> String {
    format!("{}…", digest.chars().take(19).collect::<String>())
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
