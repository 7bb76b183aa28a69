//! Version files written from image policies (`kdeploy images update`) and
//! by hand or an app's CI (`kdeploy set-version`): the work tree's
//! `services/<app>/<env>/version` files, never anything else.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt as _;

use crate::config::{Filter, ImagePolicy, Layout, ReleaseSpec, SETTINGS_FILE};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::images::policy::{self, Compiled};
use crate::images::registry::Registry;
use crate::source::{Revision, Snapshot};

/// One version file changed (or, with `--dry-run`, that would change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// App.
    pub app: String,
    /// Environment; `None` for the app-level version file.
    pub env: Option<String>,
    /// The file written, relative to the repo.
    pub file: String,
    /// The version before.
    pub from: Option<String>,
    /// The version now.
    pub to: String,
    /// Why: the policy and what it chose from.
    pub why: String,
    /// The file's whole new text, for a change that is not a version file
    /// (a config key promoted); `None`: `to` is the version written.
    pub edit: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} → {} ({})",
            self.app,
            self.env.as_deref().unwrap_or("(all environments)"),
            self.from.as_deref().unwrap_or("(none)"),
            self.to,
            self.why
        )
    }
}

/// What `images update` did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Version files changed.
    pub changes: Vec<Change>,
    /// Policies that chose nothing, or kept the current version.
    pub notices: Vec<String>,
}

/// A tag Docker and OCI accept: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The work tree as kdeploy reads it: the snapshot (whose reader refuses
/// links out of the repo), its layout, and kdeploy.yaml's text for lines.
pub(crate) struct WorkTree {
    snapshot: Snapshot,
    /// Settings and releases.
    pub(crate) layout: Layout,
    settings_text: String,
}

impl WorkTree {
    /// Opens `repo`'s work tree with the releases `filter` selects.
    ///
    /// # Errors
    /// An unreadable or invalid layout.
    pub(crate) fn open(repo: &Path, filter: &Filter) -> anyhow::Result<WorkTree> {
        let snapshot = Snapshot::open(repo, &Revision::parse(None))?;
        let reader = snapshot.reader();
        let root = snapshot.root();
        let layout = Layout::load(&reader, &root, filter).map_err(crate::render::Error::from)?;
        let settings_text = match reader.child(&root, SETTINGS_FILE)? {
            Some(node) if !node.is_dir => reader.read_text(&node)?,
            _ => String::new(),
        };
        drop(reader);
        Ok(WorkTree {
            snapshot,
            layout,
            settings_text,
        })
    }

    /// The version `spec` runs (its env `version`, else its app `version`),
    /// read as the renderer reads it.
    pub(crate) fn version(&self, spec: &ReleaseSpec) -> Option<String> {
        self.read_version(spec.env_version.as_ref())
            .or_else(|| self.read_version(spec.app_version.as_ref()))
    }

    /// A file's text, read as the renderer reads it (inside the repo only).
    pub(crate) fn read(&self, node: &crate::source::Node) -> anyhow::Result<String> {
        Ok(self.snapshot.reader().read_text(node)?)
    }

    fn read_version(&self, node: Option<&crate::source::Node>) -> Option<String> {
        let text = self.snapshot.reader().read_text(node?).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    }
}

/// Files as they are now, to put back.
pub(crate) struct Saved(Vec<(String, Option<String>)>);

impl Saved {
    pub(crate) fn take(repo: &Path, files: impl IntoIterator<Item = String>) -> Saved {
        Saved(
            files
                .into_iter()
                .map(|f| {
                    let text = crate::repo_write::read(repo, &f).ok().flatten();
                    (f, text)
                })
                .collect(),
        )
    }

    pub(crate) fn restore(&self, repo: &Path) {
        for (file, text) in &self.0 {
            let _ = match text {
                Some(t) => crate::repo_write::write(repo, file, t.as_bytes()),
                None => crate::repo_write::remove(repo, file),
            };
        }
    }
}

/// `services/<app>/version` of a release.
fn app_version_file(spec: &ReleaseSpec) -> String {
    let app_dir = spec
        .app_config
        .path
        .strip_suffix("/config.yaml")
        .unwrap_or(&spec.app_config.path);
    format!("{app_dir}/version")
}

/// `services/<app>/<env>/version` of a release.
pub(crate) fn env_version_file(spec: &ReleaseSpec) -> String {
    format!("{}/version", spec.env_dir())
}

/// Compiles the policies of the selected apps; problems at their lines.
fn compile_all(
    layout: &Layout,
    settings_text: &str,
    filter: &Filter,
) -> Result<BTreeMap<String, (ImagePolicy, Compiled)>, Diagnostics> {
    let index = crate::yaml::index(settings_text).unwrap_or_default();
    let mut problems = Diagnostics::default();
    let mut out = BTreeMap::new();
    for (app, p) in &layout.settings.images.policies {
        if !filter.matches_app(app) {
            continue;
        }
        match policy::compile(p) {
            Ok(c) => {
                out.insert(app.clone(), (p.clone(), c));
            }
            Err(e) => {
                let at = index
                    .iter()
                    .find(|l| l.path.len() == 2 && l.path[0] == "images" && l.path[1] == *app);
                problems.push(
                    Diagnostic::new(
                        Location::at(SETTINGS_FILE, at.map(|l| l.line), at.map(|l| l.column)),
                        format!("image policy of `{app}`: {e}"),
                    )
                    .help("policies follow Flux's ImagePolicy: see README, Image automation"),
                );
            }
        }
    }
    problems.into_result(out)
}

/// Where an app's (or app and env's) version lives, and what it is now.
struct Target {
    file: String,
    current: Option<String>,
}

fn target(tree: &WorkTree, app: &str, env: Option<&str>) -> Option<Target> {
    let spec = tree
        .layout
        .releases
        .iter()
        .find(|s| s.app == app && env.is_none_or(|e| s.env == e))?;
    Some(match env {
        Some(_) => Target {
            file: env_version_file(spec),
            current: tree.version(spec),
        },
        None => Target {
            file: app_version_file(spec),
            current: tree.read_version(spec.app_version.as_ref()),
        },
    })
}

/// Writes a version file of the work tree (never through a link).
pub(crate) fn write_version(repo: &Path, file: &str, version: &str) -> anyhow::Result<()> {
    write_file(repo, file, &format!("{version}\n"))
}

/// Writes a file of the work tree kdeploy edits (never through a link).
pub(crate) fn write_file(repo: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    Ok(crate::repo_write::write(repo, file, text.as_bytes())?)
}

/// `kdeploy images update`: evaluates the selected apps' policies against
/// their registries and writes the chosen tags (unless `dry_run`).
///
/// # Errors
/// Invalid policies (at their kdeploy.yaml line), registry failures
/// (nothing is written then), unwritable files.
pub async fn update(repo: &Path, filter: &Filter, dry_run: bool) -> anyhow::Result<Outcome> {
    let tree = WorkTree::open(repo, filter)?;
    let layout = &tree.layout;
    let policies = compile_all(layout, &tree.settings_text, filter)?;
    let registry = Registry::new(&layout.settings.images.insecure_registries);
    let repositories: Vec<String> = policies
        .values()
        .map(|(p, _)| p.repository.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let fetched: Vec<(String, Result<Vec<String>, crate::images::registry::Error>)> =
        futures::stream::iter(repositories)
            .map(|r| {
                let registry = &registry;
                async move {
                    let tags = registry.tags(&r).await;
                    (r, tags)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut tags = BTreeMap::new();
    let mut failures = Vec::new();
    for (r, t) in fetched {
        match t {
            Ok(t) => {
                tags.insert(r, t);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        failures.sort();
        anyhow::bail!(
            "cannot list tags; no version file was changed:\n  {}",
            failures.join("\n  ")
        );
    }
    let mut outcome = Outcome::default();
    let mut writes = Vec::new();
    for (app, (p, compiled)) in &policies {
        let available = tags
            .get(&p.repository)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let envs: Vec<Option<&str>> = if p.environments.is_empty() {
            vec![None]
        } else {
            p.environments
                .iter()
                .filter(|e| filter.matches_env(e))
                .map(|e| Some(e.as_str()))
                .collect()
        };
        for env in envs {
            let Some(t) = target(&tree, app, env) else {
                outcome.notices.push(format!(
                    "{app} {}: no such release in services/; the policy's environment is skipped",
                    env.unwrap_or("(app)")
                ));
                continue;
            };
            let where_ = env.unwrap_or("(all environments)");
            let Some(chosen) = compiled.select(available) else {
                outcome.notices.push(format!(
                    "{app} {where_}: none of the {} tags of {} qualifies under {}; unchanged",
                    available.len(),
                    p.repository,
                    compiled.describe()
                ));
                continue;
            };
            if !is_valid_tag(chosen) {
                anyhow::bail!(
                    "{app} {where_}: the policy chose `{chosen}`, which is not a valid image tag; no version file was changed"
                );
            }
            if t.current.as_deref() == Some(chosen) {
                outcome
                    .notices
                    .push(format!("{app} {where_}: {chosen} is current"));
                continue;
            }
            let change = Change {
                app: app.clone(),
                env: env.map(str::to_string),
                file: t.file.clone(),
                from: t.current.clone(),
                to: chosen.to_string(),
                why: format!(
                    "{}, newest of {} tags of {}",
                    compiled.describe(),
                    available.len(),
                    p.repository
                ),
                edit: None,
            };
            writes.push((t.file, chosen.to_string()));
            outcome.changes.push(change);
        }
    }
    if dry_run || writes.is_empty() {
        return Ok(outcome);
    }
    let before = Saved::take(repo, writes.iter().map(|(file, _)| file.clone()));
    for (file, version) in &writes {
        write_version(repo, file, version)?;
    }
    // A repo that locks images gets the bumped images locked in the same
    // change; if they do not resolve, the version files go back as they were.
    let locks = layout.settings.images.require_lock
        || repo.join(&layout.settings.images.lock_file).is_file();
    if locks && let Err(e) = relock(repo, &outcome.changes, &mut outcome.notices).await {
        before.restore(repo);
        return Err(e.context("the new versions were not written"));
    }
    Ok(outcome)
}

/// Refreshes the image lock for the releases `changes` touched.
pub(crate) async fn relock(
    repo: &Path,
    changes: &[Change],
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for c in changes {
        if !seen.insert((c.app.clone(), c.env.clone())) {
            continue;
        }
        let filter = Filter::new(c.env.as_deref(), Some(&c.app))?;
        let report = crate::edit::lock::command(repo, &filter, false).await?;
        if report.failed > 0 {
            anyhow::bail!(
                "the image lock could not be refreshed for {}:\n{}",
                c.app,
                report.lines.join("\n")
            );
        }
        notes.extend(
            report
                .lines
                .into_iter()
                .filter(|l| !l.contains("(unchanged)"))
                .map(|l| l.trim().to_string()),
        );
    }
    Ok(())
}

/// `kdeploy set-version APP ENV VERSION`: writes one version file (unless
/// `write` is false: the change is returned for publishing), after
/// checking the version is a tag and passes the app's policy pattern.
///
/// # Errors
/// Unknown release, invalid tag, a version the policy would never choose.
pub fn set_version(
    repo: &Path,
    app: &str,
    env: &str,
    version: &str,
    write: bool,
) -> anyhow::Result<Option<Change>> {
    let filter = Filter::default();
    let tree = WorkTree::open(repo, &filter)?;
    let layout = &tree.layout;
    if !is_valid_tag(version) {
        anyhow::bail!(
            "`{version}` is not a valid image tag: letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`"
        );
    }
    if !layout.releases.iter().any(|s| s.app == app && s.env == env) {
        let known: Vec<String> = layout
            .releases
            .iter()
            .map(|s| format!("{}/{}", s.app, s.env))
            .collect();
        anyhow::bail!(
            "there is no release {app}/{env} (services/{app}/{env}/config.yaml); releases: {}",
            known.join(", ")
        );
    }
    let policies = compile_all(layout, &tree.settings_text, &Filter::new(None, Some(app))?)?;
    let why = match policies.get(app) {
        Some((p, compiled)) => {
            if !compiled.admits(version) {
                let pattern = p
                    .filter_tags
                    .as_ref()
                    .map(|f| f.pattern.as_str())
                    .unwrap_or_default();
                anyhow::bail!(
                    "`{version}` does not match the image policy of `{app}` (filterTags.pattern `{pattern}` in {SETTINGS_FILE}); its automation would never choose it"
                );
            }
            format!(
                "set by hand; passes the policy's pattern ({})",
                compiled.describe()
            )
        }
        None => "set by hand".to_string(),
    };
    let Some(t) = target(&tree, app, Some(env)) else {
        anyhow::bail!("there is no release {app}/{env}");
    };
    if t.current.as_deref() == Some(version) {
        return Ok(None);
    }
    if write {
        write_version(repo, &t.file, version)?;
    }
    Ok(Some(Change {
        app: app.to_string(),
        env: Some(env.to_string()),
        file: t.file,
        from: t.current,
        to: version.to_string(),
        why,
        edit: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        for ok in [
            "1.4.2",
            "v1_abc1234_2026-01-02T10.00.00Z".replace(':', ".").as_str(),
            "latest",
            "_x",
        ] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a:b", &"x".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }
}
