//! Promotion between environments (`kdeploy promote --from staging --to
//! production`): each selected app's effective version in the source
//! environment is written into the target environment's version file, in
//! the work tree; the caller shows the plan that causes.

use std::path::Path;

use crate::config::Filter;
use crate::images::update::{self, Change};

/// The version a release runs: its env `version`, else its app `version`.
fn effective(repo: &Path, app_dir: &str, env_dir: &str) -> Option<String> {
    let read = |p: String| {
        std::fs::read_to_string(repo.join(p))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    read(format!("{env_dir}/version")).or_else(|| read(format!("{app_dir}/version")))
}

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
    let (layout, _) = update::open(repo, filter)?;
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
        let app_dir = source
            .app_config
            .path
            .strip_suffix("/config.yaml")
            .unwrap_or(&source.app_config.path);
        let Some(version) = effective(repo, app_dir, source.env_dir()) else {
            continue;
        };
        let current = effective(repo, app_dir, target.env_dir());
        if current.as_deref() == Some(version.as_str()) {
            continue;
        }
        let file = format!("{}/version", target.env_dir());
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
