//! The config repo model: `kdeploy.yaml`, `charts/`, and the
//! `services/<app>/<env>/` tree with its inheritance rules.
//!
//! This module finds releases and merges their values. It does not render:
//! a [`ReleaseSpec`] names its inputs (with git ids, for caching) and
//! [`load_service`] turns them into values. Every problem found is collected
//! into [`Diagnostics`] so one run reports all of them.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::source::{self, Node, Reader};
use crate::yaml;

pub mod edit;
pub mod policy;
pub mod preview;
mod service;
mod settings;
pub mod sources;

pub use service::*;
pub use settings::*;

/// The file name of a service's encrypted values (`secrets.sops.yaml`
/// beside its `config.yaml`): part of the layout, decrypted by
/// [`crate::secrets`].
pub const VALUES_FILE: &str = "secrets.sops.yaml";

/// The namespace of kdeploy's deploy records and leases (the action's
/// `record-namespace` default); no release may render objects there.
pub const RECORD_NAMESPACE: &str = "kdeploy-system";

/// The error returned when the layout cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the snapshot failed.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The config repo has problems the user must fix.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

/// Which releases to consider, by shell-style globs on names.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    env: Option<globset::GlobMatcher>,
    app: Option<globset::GlobMatcher>,
    /// Environments allowed by the branch a run is on.
    scope: settings::BranchScope,
}

impl Filter {
    /// Builds a filter from optional `--env` and `--app` globs.
    ///
    /// # Errors
    /// When a glob is malformed.
    pub fn new(env: Option<&str>, app: Option<&str>) -> Result<Filter, globset::Error> {
        let compile = |g: Option<&str>| -> Result<_, globset::Error> {
            g.map(|g| globset::Glob::new(g).map(|g| g.compile_matcher()))
                .transpose()
        };
        Ok(Filter {
            env: compile(env)?,
            app: compile(app)?,
            scope: settings::BranchScope::Any,
        })
    }

    /// This filter, also restricted to the environments `scope` allows.
    #[must_use]
    pub fn scoped(mut self, scope: settings::BranchScope) -> Filter {
        self.scope = scope;
        self
    }

    /// True when no glob restricts the selection.
    pub fn is_all(&self) -> bool {
        self.env.is_none() && self.app.is_none() && self.scope == settings::BranchScope::Any
    }

    /// True when the environment is selected (`--env`, and its branch).
    pub fn matches_env(&self, env: &str) -> bool {
        self.env.as_ref().is_none_or(|g| g.is_match(env)) && self.scope.allows(env)
    }

    /// True when the app is selected (`--app`).
    pub fn matches_app(&self, app: &str) -> bool {
        self.app.as_ref().is_none_or(|g| g.is_match(app))
    }

    /// True when the release (env, app) is selected.
    pub fn matches(&self, env: &str, app: &str) -> bool {
        self.matches_env(env) && self.app.as_ref().is_none_or(|g| g.is_match(app))
    }
}

/// A snapshot's `kdeploy.yaml` settings, read before anything is rendered
/// (to choose what to render); defaults when it is missing or invalid, whose
/// problems the render that follows reports at their lines.
pub fn head_settings(snapshot: &crate::source::Snapshot) -> Settings {
    let reader = snapshot.reader();
    let root = snapshot.root();
    match reader.child(&root, SETTINGS_FILE) {
        Ok(Some(node)) if !node.is_dir => reader
            .read_text(&node)
            .map(|text| parse_settings(&text, &node.path).0)
            .unwrap_or_default(),
        _ => Settings::default(),
    }
}

/// The problem with `--env`/`--app` globs that select no release of
/// `snapshot`, naming what exists; `None` when something matches. A filter
/// that matches nothing would otherwise report "no changes" and succeed.
///
/// # Errors
/// When the snapshot cannot be read.
pub fn unmatched(
    snapshot: &crate::source::Snapshot,
    env: Option<&str>,
    app: Option<&str>,
) -> Result<Option<Diagnostic>, Error> {
    let filter = Filter::new(env, app).unwrap_or_default();
    if filter.is_all() || snapshot.is_empty() {
        return Ok(None);
    }
    let reader = snapshot.reader();
    let layout = Layout::load(&reader, &snapshot.root(), &Filter::default())?;
    let pairs: Vec<(&str, &str)> = layout
        .releases
        .iter()
        .map(|r| (r.env.as_str(), r.app.as_str()))
        .chain(
            layout
                .sources
                .iter()
                .map(|s| (s.env.as_str(), s.app.as_str())),
        )
        .collect();
    if pairs.iter().any(|(e, a)| filter.matches(e, a)) {
        return Ok(None);
    }
    let names = |first: bool| {
        let set: std::collections::BTreeSet<&str> = pairs
            .iter()
            .map(|(e, a)| if first { *e } else { *a })
            .collect();
        // A repo of a thousand apps would print them all: the first few.
        const SHOWN: usize = 20;
        match set.len() {
            0 => "none".to_string(),
            n if n > SHOWN => format!(
                "{} and {} more",
                set.into_iter().take(SHOWN).collect::<Vec<_>>().join(", "),
                n - SHOWN
            ),
            _ => set.into_iter().collect::<Vec<_>>().join(", "),
        }
    };
    let mut what = Vec::new();
    if let Some(e) = env {
        what.push(format!("--env {e}"));
    }
    if let Some(a) = app {
        what.push(format!("--app {a}"));
    }
    Ok(Some(
        Diagnostic::global(format!(
            "{} selects no release at {}",
            what.join(" with "),
            snapshot.label()
        ))
        .help(format!(
            "environments: {}; apps: {}",
            names(true),
            names(false)
        )),
    ))
}

/// One (environment, app) pair and the files it is made of.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    /// Environment name (a DNS-1123 label).
    pub env: String,
    /// App name (a DNS-1123 label).
    pub app: String,
    /// `services/<app>/config.yaml`.
    pub app_config: Node,
    /// `services/<app>/version`, if present.
    pub app_version: Option<Node>,
    /// `services/<app>/<env>/config.yaml`.
    pub env_config: Node,
    /// `services/<app>/<env>/version`, if present.
    pub env_version: Option<Node>,
    /// `services/<app>/secrets.sops.yaml`, if present.
    pub app_secrets: Option<Node>,
    /// `services/<app>/<env>/secrets.sops.yaml`, if present.
    pub env_secrets: Option<Node>,
    /// Set when the release is rendered for a pull request's preview: the
    /// env's values are laid over, its namespace replaced.
    pub preview: Option<std::sync::Arc<preview::Overlay>>,
}

impl ReleaseSpec {
    /// The service inputs' git ids; equal keys mean equal service values.
    /// `None` in the work tree, where nothing is hashed.
    pub fn service_key(&self) -> Option<[Option<gix::ObjectId>; 6]> {
        let ids = [
            self.app_config.id,
            self.app_version.as_ref().and_then(|n| n.id),
            self.env_config.id,
            self.env_version.as_ref().and_then(|n| n.id),
            self.app_secrets.as_ref().and_then(|n| n.id),
            self.env_secrets.as_ref().and_then(|n| n.id),
        ];
        self.app_config.id.map(|_| ids)
    }

    /// `services/<app>/<env>`: where annotations about this release point.
    pub fn env_dir(&self) -> &str {
        self.env_config
            .path
            .strip_suffix("/config.yaml")
            .unwrap_or(&self.env_config.path)
    }
}

/// What a config repo holds at one revision, before anything is parsed.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Parsed `kdeploy.yaml` (defaults when absent).
    pub settings: Settings,
    /// The `kdeploy.yaml` blob id, part of every release's cache key.
    pub settings_id: Option<gix::ObjectId>,
    /// True when the revision has a `kdeploy.yaml` of its own (and it was
    /// read, not replaced by given settings).
    pub settings_file: bool,
    /// Chart directories by name.
    pub charts: BTreeMap<String, Node>,
    /// Every release found, sorted by (env, app).
    pub releases: Vec<ReleaseSpec>,
    /// App directories that [`Layout::load_with`] was told not to expand.
    pub skipped_apps: Vec<Node>,
    /// Releases of raw and Kustomize sources.
    pub sources: Vec<sources::SourceSpec>,
    /// (path, text) of the image lock (`images.lockFile`), if present.
    pub lock_file: Option<(String, String)>,
    /// Its blob id: a release's output depends on it too.
    pub lock_id: Option<gix::ObjectId>,
    /// Runner-policy keys ([`policy::KEYS`]) this revision's kdeploy.yaml
    /// set otherwise than the policy imposed on it (a pull request's head).
    pub policy_overridden: Vec<&'static str>,
}

/// True for a DNS-1123 label: what Kubernetes accepts as a namespace name.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_any_length(s)
}

/// True for a DNS-1123 subdomain: dot-separated labels, at most 253 bytes.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A DNS-1123 label without its length limit: one part of a subdomain.
pub fn is_dns_label_any_length(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl Layout {
    /// A config repo with nothing in it.
    pub fn empty() -> Layout {
        Layout {
            settings: Settings::default(),
            settings_id: None,
            settings_file: false,
            charts: BTreeMap::new(),
            releases: Vec::new(),
            skipped_apps: Vec::new(),
            sources: Vec::new(),
            lock_file: None,
            lock_id: None,
            policy_overridden: Vec::new(),
        }
    }

    /// Lists charts and releases. Reads only `kdeploy.yaml` and directory
    /// listings, so it is cheap even for thousands of services.
    ///
    /// # Errors
    /// When reading fails or the layout breaks the rules (missing
    /// `config.yaml`, bad names, a malformed `kdeploy.yaml`).
    pub fn load(reader: &Reader<'_>, root: &Node, filter: &Filter) -> Result<Layout, Error> {
        Layout::load_with(reader, root, filter, &|_| true)
    }

    /// Like [`Layout::load`], but only app directories for which `expand`
    /// is true are read; the others are listed in `skipped_apps`. Comparing
    /// two revisions uses this to skip apps whose tree is identical.
    ///
    /// # Errors
    /// As [`Layout::load`].
    pub fn load_with(
        reader: &Reader<'_>,
        root: &Node,
        filter: &Filter,
        expand: &dyn Fn(&Node) -> bool,
    ) -> Result<Layout, Error> {
        Layout::load_as(reader, root, filter, expand, None, None)
    }

    /// Like [`Layout::load_with`], with `settings` (and their blob id) in
    /// place of the revision's own `kdeploy.yaml` when given: a base that
    /// predates kdeploy.yaml is read with the head's. `policy`, when given,
    /// replaces the runner-policy part of whichever settings are used
    /// before anything else is read (a pull request's head is read under
    /// its base's limits).
    ///
    /// # Errors
    /// As [`Layout::load`].
    pub fn load_as(
        reader: &Reader<'_>,
        root: &Node,
        filter: &Filter,
        expand: &dyn Fn(&Node) -> bool,
        settings: Option<(&Settings, Option<gix::ObjectId>)>,
        policy: Option<&policy::RunnerPolicy>,
    ) -> Result<Layout, Error> {
        let mut problems = Diagnostics::default();
        let (settings, settings_id, settings_file) =
            match (settings, reader.child(root, SETTINGS_FILE)?) {
                (Some((given, id)), _) => (given.clone(), id, false),
                (None, Some(node)) if !node.is_dir => {
                    let text = reader.read_text(&node)?;
                    let (settings, found) = parse_settings(&text, &node.path);
                    problems.extend(found);
                    (settings, node.id, true)
                }
                _ => (Settings::default(), None, false),
            };
        let mut settings = settings;
        let policy_overridden = policy.map_or_else(Vec::new, |p| p.impose(&mut settings));
        reader.snapshot().set_file_limit(settings.limits.file_bytes);
        let (lock_file, lock_id) = match reader.find(root, &settings.images.lock_file)? {
            Some(node) if !node.is_dir => {
                let text = reader.read_text(&node)?;
                (Some((node.path.clone(), text)), node.id)
            }
            _ => (None, None),
        };

        let charts = match find_dir(reader, root, &settings.charts)? {
            Some(dir) => reader
                .list(&dir)?
                .into_iter()
                .filter(|n| n.is_dir)
                .map(|n| (n.name().to_string(), n))
                .collect(),
            None => BTreeMap::new(),
        };

        let mut releases = Vec::new();
        let mut skipped_apps = Vec::new();
        let mut sources = sources::find(reader, root, &settings.sources, filter, &mut problems)?;
        for s in &mut sources {
            s.namespace = match &s.fixed_namespace {
                Some(ns) => ns.clone(),
                None => settings.namespace_for(&s.app, &s.env),
            };
        }
        let has_sources =
            !settings.sources.raw.is_empty() || !settings.sources.kustomize.is_empty();
        let services = if settings.services.is_empty() {
            None
        } else {
            find_dir(reader, root, &settings.services)?
        };
        if services.is_none() && !has_sources {
            problems.push(
                Diagnostic::new(
                    Location::file(&settings.services),
                    "no services directory in the config repo",
                )
                .help("create services/<app>/<env>/config.yaml, or set `services:` or `sources:` in kdeploy.yaml"),
            );
            return Err(problems.into());
        }
        let app_dirs = match &services {
            Some(s) => reader.list(s)?,
            None => Vec::new(),
        };
        let mut to_load = Vec::new();
        for app_dir in app_dirs.into_iter().filter(|n| n.is_dir) {
            let app = app_dir.name().to_string();
            if app.starts_with('_') {
                continue;
            }
            // Cheap test first: skip apps the filter rules out for every env.
            if let Some(g) = &filter.app
                && !g.is_match(&app)
            {
                continue;
            }
            if expand(&app_dir) {
                to_load.push((app_dir, app));
            } else {
                skipped_apps.push(app_dir);
            }
        }
        // Listing a thousand apps' trees is worth both cores.
        let snapshot = reader.snapshot();
        let loaded: Vec<Result<(Vec<ReleaseSpec>, Diagnostics), Error>> = to_load
            .par_iter()
            .map_init(
                || snapshot.reader(),
                |reader, (app_dir, app)| {
                    let mut found = Vec::new();
                    let mut app_problems = Diagnostics::default();
                    load_app(reader, app_dir, app, filter, &mut found, &mut app_problems)?;
                    Ok((found, app_problems))
                },
            )
            .collect();
        for result in loaded {
            let (found, app_problems) = result?;
            releases.extend(found);
            problems.extend(app_problems.0);
        }
        releases.sort_by(|a, b| (&a.env, &a.app).cmp(&(&b.env, &b.app)));
        // `<template>-pr-<n>` is a preview's name: an environment called so
        // would take over that pull request's preview record.
        let named_like_a_preview = |env: &str| {
            settings
                .environments
                .iter()
                .filter(|(_, e)| e.from.is_some())
                .find(|(template, _)| {
                    env.strip_prefix(template.as_str())
                        .and_then(|r| r.strip_prefix("-pr-"))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .map(|(template, _)| template.clone())
        };
        let places = releases
            .iter()
            .map(|r| (r.env.as_str(), r.env_config.path.clone()))
            .chain(sources.iter().map(|s| (s.env.as_str(), s.dir.path.clone())));
        for (env, path) in places {
            if let Some(template) = named_like_a_preview(env) {
                problems.push(
                    Diagnostic::new(
                        Location::file(path),
                        format!("environment `{env}` is named like a preview of the template `{template}` (`{template}-pr-<number>`)"),
                    )
                    .help("rename the environment: previews own every name of that form"),
                );
            }
        }
        problems
            .into_result(Layout {
                settings,
                settings_id,
                settings_file,
                charts,
                releases,
                skipped_apps,
                sources,
                lock_file,
                lock_id,
                policy_overridden,
            })
            .map_err(Error::from)
    }
}

fn load_app(
    reader: &Reader<'_>,
    app_dir: &Node,
    app: &str,
    filter: &Filter,
    releases: &mut Vec<ReleaseSpec>,
    problems: &mut Diagnostics,
) -> Result<(), Error> {
    let entries = reader.list(app_dir)?;
    let file = |name: &str| {
        let path = app_dir.join(name);
        entries
            .iter()
            .find(|n| n.path == path && !n.is_dir)
            .cloned()
    };
    if !is_dns_label(app) {
        problems.push(
            Diagnostic::new(
                Location::file(&app_dir.path),
                format!("app name `{app}` is not a DNS-1123 label"),
            )
            .help("use lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit"),
        );
    }
    let Some(app_config) = file("config.yaml") else {
        problems.push(
            Diagnostic::new(
                Location::file(app_dir.join("config.yaml")),
                "missing app-level config.yaml",
            )
            .help("create it (it may be empty) so the app's environments can inherit from it"),
        );
        return Ok(());
    };
    let app_version = file("version");
    for env_dir in entries.iter().filter(|n| n.is_dir) {
        let env = env_dir.name();
        if env.starts_with('_') {
            continue;
        }
        let env_entries = reader.list(env_dir)?;
        let env_file = |name: &str| {
            let path = env_dir.join(name);
            env_entries
                .iter()
                .find(|n| n.path == path && !n.is_dir)
                .cloned()
        };
        let Some(env_config) = env_file("config.yaml") else {
            problems.push(
                Diagnostic::new(
                    Location::file(env_dir.join("config.yaml")),
                    format!("environment directory `{}` has no config.yaml", env_dir.path),
                )
                .help("add a config.yaml (it may be empty) to make it an environment, or prefix the directory name with '_' to ignore it"),
            );
            continue;
        };
        if !is_dns_label(env) {
            problems.push(
                Diagnostic::new(
                    Location::file(&env_dir.path),
                    format!("environment name `{env}` is not a DNS-1123 label"),
                )
                .help("use lowercase letters, digits and '-', at most 63 characters"),
            );
            continue;
        }
        if !filter.matches(env, app) {
            continue;
        }
        releases.push(ReleaseSpec {
            env: env.to_string(),
            app: app.to_string(),
            app_config: app_config.clone(),
            app_version: app_version.clone(),
            env_config,
            env_version: env_file("version"),
            app_secrets: file(VALUES_FILE),
            env_secrets: env_file(VALUES_FILE),
            preview: None,
        });
    }
    Ok(())
}

/// The environments of an app directory that `filter` selects, by name
/// only: used for apps known to be identical to an already validated revision.
///
/// # Errors
/// When the directory cannot be read.
pub fn env_names(
    reader: &Reader<'_>,
    app_dir: &Node,
    filter: &Filter,
) -> Result<Vec<String>, source::Error> {
    Ok(reader
        .list(app_dir)?
        .into_iter()
        .filter(|n| n.is_dir && !n.name().starts_with('_'))
        .map(|n| n.name().to_string())
        .filter(|env| filter.matches(env, app_dir.name()))
        .collect())
}

/// Finds a directory by a `/`-separated path below `root`.
fn find_dir(reader: &Reader<'_>, root: &Node, path: &str) -> Result<Option<Node>, source::Error> {
    Ok(reader.find(root, path)?.filter(|n| n.is_dir))
}

/// A short name for a YAML value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Merges `over` into `base`: maps merge recursively; scalars and lists are
/// replaced; an explicit `null` removes the key (as in Helm).
pub fn merge_into(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (_, Value::Null) => {
                base.remove(&k);
            }
            (Some(Value::Object(b)), Value::Object(o)) => merge_into(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is a map"),
        }
    }

    #[test]
    fn merge_maps_recursively_replaces_lists_and_scalars() {
        let mut base = map(json!({"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "old", "gone": 1}));
        merge_into(
            &mut base,
            map(json!({"a": {"y": 3}, "l": [9], "s": "new", "gone": null})),
        );
        assert_eq!(
            Value::Object(base),
            json!({"a": {"x": 1, "y": 3}, "l": [9], "s": "new"})
        );
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("api-2"));
        assert!(!is_dns_label("Api"));
        assert!(!is_dns_label("-api"));
        assert!(!is_dns_label("a_b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn settings_reject_unknown_keys() {
        assert!(yaml::parse_as::<Settings>("chartz: x\n").is_err());
        let s: Settings = yaml::parse_as("defaultChart: web\n").unwrap();
        assert_eq!(s.default_chart, "web");
        assert_eq!(s.services, "services");
    }

    #[test]
    fn filter_globs() {
        let f = Filter::new(Some("prod*"), None).unwrap();
        assert!(f.matches("production", "api"));
        assert!(!f.matches("staging", "api"));
        assert!(Filter::default().is_all());
    }
}
