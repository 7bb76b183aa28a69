//! `kdeploy lock`: resolves every unpinned image of the work tree through
//! its registry and writes the image lock ([`crate::lock`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use futures::StreamExt as _;

use crate::config::Filter;
use crate::images::registry;
use crate::lock::Lock;
use crate::render::{self, pin::references};
use crate::secrets::Need;
use crate::source::{Revision, Snapshot};

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
