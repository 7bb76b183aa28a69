//! Promotion between environments (`kdeploy promote --from staging --to
//! production`): each selected app's effective version in the source
//! environment is written into the target environment's version file, in
//! the work tree; the caller shows the plan that causes.

use std::path::Path;

use crate::config::Filter;
use crate::images::update::{self, Change};

/// Copies versions from `from` to `to` for the apps `filter` selects that
/// have both environments. Returns what changed (or would, with `dry_run`).
///
/// # Errors
/// Unknown environments, unreadable layout, unwritable files.
pub fn versions(
    repo: &Path,
    from: &str,
    to: &str,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<Vec<Change>> {
    if from == to {
        anyhow::bail!("--from and --to are both `{from}`: nothing to promote");
    }
    let tree = update::WorkTree::open(repo, filter)?;
    let layout = &tree.layout;
    for env in [from, to] {
        if !layout.releases.iter().any(|s| s.env == env) {
            let mut known: Vec<&str> = layout.releases.iter().map(|s| s.env.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            anyhow::bail!(
                "no selected app has an environment `{env}`; environments: {}",
                known.join(", ")
            );
        }
    }
    let mut changes = Vec::new();
    for source in layout.releases.iter().filter(|s| s.env == from) {
        let Some(target) = layout
            .releases
            .iter()
            .find(|s| s.env == to && s.app == source.app)
        else {
            continue;
        };
        let Some(version) = tree.version(source) else {
            continue;
        };
        let current = tree.version(target);
        if current.as_deref() == Some(version.as_str()) {
            continue;
        }
        let file = update::env_version_file(target);
        if !dry_run {
            update::write_version(repo, &file, &version)?;
        }
        changes.push(Change {
            app: source.app.clone(),
            env: Some(to.to_string()),
            file,
            from: current,
            to: version,
            why: format!("promoted from {from}"),
        });
    }
    Ok(changes)
}
