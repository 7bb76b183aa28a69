//! Rendering: a config repo snapshot becomes a [`State`] of Kubernetes
//! resources per environment.
//!
//! Each (env, app) [`Release`] is rendered with its chart: chart defaults,
//! then app values, then env values. Releases render in parallel; each
//! document is parsed once. [`compare`] renders two revisions and skips every
//! release whose inputs have the same git ids at both, which keeps a
//! one-service change in a large repo cheap. Nothing here touches the network
//! or the cluster.

pub mod budget;
pub mod chart;
pub mod helm;
pub mod helm_deps;
pub mod helpers;
pub mod schema;
pub mod sources;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::config::{self, Filter, Layout, ReleaseSpec, ServiceValues};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::resource::{self, Origin, Resource, ResourceId};
use crate::secrets::{self, Need, Sealed};
use crate::source::{self, Snapshot};
use crate::yaml;

pub use chart::Chart;

/// The error returned by [`render`] and [`compare`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot could not be read.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The config repo has problems the user must fix.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl From<config::Error> for Error {
    fn from(e: config::Error) -> Self {
        match e {
            config::Error::Source(e) => Error::Source(e),
            config::Error::Invalid(d) => Error::Invalid(d),
        }
    }
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

/// One (environment, app) pair, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// Environment.
    pub env: String,
    /// App.
    pub app: String,
    /// Chart name.
    pub chart: String,
    /// Version (image tag).
    pub version: String,
    /// Namespace of the release's namespaced resources.
    pub namespace: String,
    /// `services/<app>/<env>`, where problems with this release are reported.
    pub dir: String,
}

/// What decides a release's output; equal keys give equal output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseKey {
    service: [Option<gix::ObjectId>; 6],
    settings: Option<gix::ObjectId>,
    chart: String,
}

/// A rendered release.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The release.
    pub release: Release,
    /// Its resources in apply order (kind rank, then template order).
    pub resources: Vec<Resource>,
    /// Its cache key; `None` when read from the work tree.
    pub key: Option<ReleaseKey>,
    /// (path, text) of the service files it was made from, to point errors
    /// in rendered fields at the user's line (see `validate`).
    pub inputs: Vec<(String, String)>,
    /// SOPS files of this release that were not decrypted (a plan without
    /// keys): their values are placeholders.
    pub sealed: Vec<crate::secrets::Sealed>,
}

/// Everything rendered at one revision.
#[derive(Debug)]
pub struct State {
    /// "work tree" or the short commit id.
    pub label: String,
    /// The commit, when rendered from git.
    pub commit: Option<gix::ObjectId>,
    /// The layout's settings (`kdeploy.yaml`).
    pub settings: config::Settings,
    /// Releases sorted by (env, app).
    pub releases: Vec<Rendered>,
}

impl State {
    /// Number of resources over all releases.
    pub fn resource_count(&self) -> usize {
        self.releases.iter().map(|r| r.resources.len()).sum()
    }
}

/// Renders every release selected by `filter` at `snapshot`.
///
/// # Errors
/// [`Error::Invalid`] listing every problem found; nothing is partial.
pub fn render(snapshot: &Snapshot, filter: &Filter) -> Result<State, Error> {
    render_with(snapshot, filter, Need::Required, Images::Locked)
}

/// Whether rendered images are replaced by their locked digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Images {
    /// As deployed: `reference@digest` from the image lock (the default).
    Locked,
    /// As the templates wrote them, for `kdeploy lock` to resolve.
    AsWritten,
}

/// [`render`], where SOPS files that no key here opens may be left as
/// placeholders (`Need::Optional`: rendering for review, never to apply),
/// and images may be left as written.
///
/// # Errors
/// As [`render`].
pub fn render_with(
    snapshot: &Snapshot,
    filter: &Filter,
    need: Need,
    images: Images,
) -> Result<State, Error> {
    let reader = snapshot.reader();
    let layout = Layout::load(&reader, &snapshot.root(), filter)?;
    let mut charts = ChartCache::default();
    let specs: Vec<&ReleaseSpec> = layout.releases.iter().collect();
    let rendered = render_specs(snapshot, &layout, &specs, &mut charts, need);
    let sourced = render_sources(
        snapshot,
        &layout,
        &layout.sources.iter().collect::<Vec<_>>(),
        need,
    );
    let mut releases = merge_results(rendered, sourced)?;
    if images == Images::Locked {
        pin_images(&mut releases, &layout, true)?;
    }
    check_duplicates(&releases)?;
    check_shared_clusters(&releases, &layout.settings)?;
    Ok(State {
        label: snapshot.label().to_string(),
        commit: snapshot.commit(),
        settings: layout.settings,
        releases,
    })
}

/// Replaces locked images by their digests (see [`crate::lock`]).
/// `enforce: false` (a plan's base, which is history) lets unlocked images
/// through whatever `images.requireLock` says.
fn pin_images(releases: &mut [Rendered], layout: &Layout, enforce: bool) -> Result<(), Error> {
    let lock = match &layout.lock_file {
        Some((path, text)) => Some(crate::lock::Lock::parse(path, text)?),
        None => None,
    };
    let mut settings = layout.settings.images.clone();
    settings.require_lock &= enforce;
    crate::lock::pin(releases, lock.as_ref(), &settings)?;
    Ok(())
}

/// Joins chart and source releases, every problem of both reported.
fn merge_results(
    a: Result<Vec<Rendered>, Error>,
    b: Result<Vec<Rendered>, Error>,
) -> Result<Vec<Rendered>, Error> {
    let mut problems = Diagnostics::default();
    let mut out = Vec::new();
    for r in [a, b] {
        match r {
            Ok(v) => out.extend(v),
            Err(Error::Invalid(d)) => problems.extend(d.0),
            Err(e) => return Err(e),
        }
    }
    // Stable: a release from services/ comes before one from a source.
    out.sort_by(|x, y| (&x.release.env, &x.release.app).cmp(&(&y.release.env, &y.release.app)));
    for pair in out.windows(2) {
        let (first, r) = (&pair[0].release, &pair[1].release);
        if (&first.env, &first.app) == (&r.env, &r.app) {
            problems.push(
                Diagnostic::new(
                    Location::file(&r.dir),
                    format!(
                        "release {}/{} is defined twice (services/ and a source in kdeploy.yaml)",
                        r.env, r.app
                    ),
                )
                .help("an (environment, app) pair must come from one place: when a raw source replaces services/ (a committed `_gen` tree being adopted), set `services: null` in kdeploy.yaml, or remove one of the two"),
            );
        }
    }
    problems.into_result(out).map_err(Error::from)
}

/// Two revisions rendered for comparison. Releases whose inputs are the same
/// git objects at both revisions are listed in `unchanged` and not rendered.
#[derive(Debug)]
pub struct Comparison {
    /// The base revision, holding only releases that may differ.
    pub base: State,
    /// The head revision, holding only releases that may differ.
    pub head: State,
    /// (env, app) of releases skipped because their inputs are identical.
    pub unchanged: Vec<(String, String)>,
    /// What a reader of the plan must know about how it was made (a base
    /// rendered with the head's kdeploy.yaml).
    pub notes: Vec<String>,
}

/// Renders `base` and `head`, re-rendering only releases whose inputs
/// (service files, chart tree, kdeploy.yaml) differ between the two.
///
/// Duplicate resource ids are checked among the rendered releases only; a
/// full [`render`] (as apply does) checks all of them.
///
/// # Errors
/// Problems at either revision, each naming its file.
pub fn compare(base: &Snapshot, head: &Snapshot, filter: &Filter) -> Result<Comparison, Error> {
    compare_with(base, head, filter, None)
}

/// Settings given for both revisions (`--config FILE`) in place of each
/// revision's own kdeploy.yaml.
#[derive(Debug, Clone)]
pub struct GivenSettings {
    /// The parsed settings.
    pub settings: config::Settings,
    /// The file's blob id, so that releases are still compared by inputs.
    pub id: Option<gix::ObjectId>,
}

impl GivenSettings {
    /// Reads and parses `path` (a file of the work tree).
    ///
    /// # Errors
    /// Unreadable file or invalid settings, naming the file.
    pub fn read(path: &std::path::Path) -> Result<GivenSettings, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(
                Diagnostic::new(Location::file(&shown), format!("cannot read it: {e}")).into(),
            )
        })?;
        let (settings, problems) = config::parse_settings(&text, &shown);
        if !problems.is_empty() {
            return Err(Error::Invalid(Diagnostics(problems)));
        }
        let id = gix::objs::compute_hash(
            gix::hash::Kind::Sha1,
            gix::objs::Kind::Blob,
            text.as_bytes(),
        )
        .ok();
        Ok(GivenSettings { settings, id })
    }
}

/// [`compare`], with `given` settings for both revisions when set.
///
/// # Errors
/// As [`compare`].
pub fn compare_with(
    base: &Snapshot,
    head: &Snapshot,
    filter: &Filter,
    given_settings: Option<&GivenSettings>,
) -> Result<Comparison, Error> {
    let base_reader = base.reader();
    let head_reader = head.reader();
    // First only list apps, so that apps whose tree is identical at both
    // revisions are never read.
    type Given<'a> = Option<(&'a config::Settings, Option<gix::ObjectId>)>;
    let load = |reader: &source::Reader<'_>,
                snap: &Snapshot,
                expand: &dyn Fn(&source::Node) -> bool,
                given: Given<'_>| {
        if snap.is_empty() {
            Ok(Layout::empty())
        } else {
            Layout::load_as(reader, &snap.root(), filter, expand, given)
        }
    };
    let forced: Given<'_> = given_settings.map(|g| (&g.settings, g.id));
    let head_shallow = load(&head_reader, head, &|_| false, forced)?;
    let mut base_shallow = load(&base_reader, base, &|_| false, forced)
        .map_err(|e| prefix_revision(e.into(), base.label()))?;
    // A base from before kdeploy.yaml existed (the adoption pull request,
    // older history) is read with the head's settings: with the defaults it
    // would render other charts and namespaces, and the plan would delete
    // what the repository really deploys.
    let mut notes = Vec::new();
    let inherit = forced.is_none()
        && !base.is_empty()
        && !base_shallow.settings_file
        && head_shallow.settings_file;
    let given: Given<'_> = if inherit {
        Some((&head_shallow.settings, head_shallow.settings_id))
    } else {
        forced
    };
    if inherit {
        base_shallow = load(&base_reader, base, &|_| false, given)
            .map_err(|e| prefix_revision(e.into(), base.label()))?;
        notes.push(format!(
            "the base {} has no {}: it was rendered with the head's",
            base.label(),
            config::SETTINGS_FILE
        ));
    }
    // The image lock changes every release's output, like kdeploy.yaml.
    let settings_same = base_shallow.settings_id == head_shallow.settings_id
        && base_shallow.lock_id == head_shallow.lock_id
        && base.commit().is_some()
        && head.commit().is_some();
    let charts_same = |name: &str| {
        let b = base_shallow.charts.get(name).map(|n| n.id);
        let h = head_shallow.charts.get(name).map(|n| n.id);
        match (b, h) {
            (Some(Some(b)), Some(Some(h))) => b == h,
            (None, None) => true, // both use the built-in chart
            _ => false,
        }
    };
    let all_charts_same = base_shallow.charts.len() == head_shallow.charts.len()
        && base_shallow.charts.keys().all(|name| charts_same(name));
    let base_app_ids: HashMap<&str, Option<gix::ObjectId>> = base_shallow
        .skipped_apps
        .iter()
        .map(|n| (n.name(), n.id))
        .collect();
    let same_app = |node: &source::Node| {
        settings_same
            && all_charts_same
            && node.id.is_some()
            && base_app_ids.get(node.name()) == Some(&node.id)
    };
    let head_layout = load(&head_reader, head, &|n| !same_app(n), forced)?;
    let head_app_ids: HashMap<&str, Option<gix::ObjectId>> = head_shallow
        .skipped_apps
        .iter()
        .map(|n| (n.name(), n.id))
        .collect();
    let base_layout = load(
        &base_reader,
        base,
        &|n| {
            !(settings_same
                && all_charts_same
                && n.id.is_some()
                && head_app_ids.get(n.name()) == Some(&n.id))
        },
        given,
    )
    .map_err(|e| prefix_revision(e.into(), base.label()))?;

    // Identical app trees (same settings and charts): unchanged, unread.
    let mut unchanged = Vec::new();
    for app in &head_layout.skipped_apps {
        for env in config::env_names(&head_reader, app, filter)? {
            unchanged.push((env, app.name().to_string()));
        }
    }

    let base_specs: BTreeMap<(&str, &str), &ReleaseSpec> = base_layout
        .releases
        .iter()
        .map(|r| ((r.env.as_str(), r.app.as_str()), r))
        .collect();
    let mut head_todo = Vec::new();
    let mut same_inputs = Vec::new();
    for spec in &head_layout.releases {
        let key = (spec.env.as_str(), spec.app.as_str());
        let same_service = settings_same
            && base_specs.get(&key).is_some_and(|b| {
                b.service_key().is_some() && b.service_key() == spec.service_key()
            });
        if same_service {
            same_inputs.push(spec);
        } else {
            head_todo.push(spec);
        }
    }
    // Same service files: the chart name is the same at both revisions, so
    // the release is unchanged unless that chart's tree changed.
    if all_charts_same {
        unchanged.extend(same_inputs.iter().map(|s| (s.env.clone(), s.app.clone())));
    } else {
        let chart_of = same_inputs
            .par_iter()
            .map_init(
                || head.reader(),
                |reader, spec| {
                    config::load_service(reader, spec, &head_layout.settings).map(|sv| sv.chart)
                },
            )
            .collect::<Vec<_>>();
        for (spec, chart) in same_inputs.iter().zip(chart_of) {
            match chart {
                Ok(name) if charts_same(&name) => {
                    unchanged.push((spec.env.clone(), spec.app.clone()))
                }
                _ => head_todo.push(spec),
            }
        }
    }
    unchanged.sort();
    let skip: std::collections::HashSet<(&str, &str)> = unchanged
        .iter()
        .map(|(e, a)| (e.as_str(), a.as_str()))
        .collect();
    let base_todo: Vec<&ReleaseSpec> = base_layout
        .releases
        .iter()
        .filter(|r| !skip.contains(&(r.env.as_str(), r.app.as_str())))
        .collect();
    head_todo.sort_by(|a, b| (&a.env, &a.app).cmp(&(&b.env, &b.app)));

    // Raw and Kustomize sources: unchanged when everything they read is.
    let key_of =
        |reader: &source::Reader<'_>, snap: &Snapshot, spec: &config::sources::SourceSpec| {
            if snap.commit().is_some() && settings_same {
                sources::key(reader, &snap.root(), spec)
            } else {
                Ok(None)
            }
        };
    let mut base_sources_todo = Vec::new();
    let mut head_sources_todo = Vec::new();
    for spec in &head_layout.sources {
        let same = base_layout
            .sources
            .iter()
            .find(|b| b.env == spec.env && b.app == spec.app && b.kind == spec.kind);
        let unchanged_source = match same {
            Some(b) => {
                let hk = key_of(&head_reader, head, spec)?;
                hk.is_some() && hk == key_of(&base_reader, base, b)?
            }
            None => false,
        };
        if unchanged_source {
            unchanged.push((spec.env.clone(), spec.app.clone()));
        } else {
            head_sources_todo.push(spec);
            if let Some(b) = same {
                base_sources_todo.push(b);
            }
        }
    }
    for b in &base_layout.sources {
        if !head_layout
            .sources
            .iter()
            .any(|h| h.env == b.env && h.app == b.app && h.kind == b.kind)
        {
            base_sources_todo.push(b);
        }
    }
    unchanged.sort();

    let mut charts = ChartCache::default();
    let mut base_releases = merge_results(
        render_specs(base, &base_layout, &base_todo, &mut charts, Need::Optional),
        render_sources(base, &base_layout, &base_sources_todo, Need::Optional),
    )
    .map_err(|e| prefix_revision(e, base.label()))?;
    pin_images(&mut base_releases, &base_layout, false)
        .map_err(|e| prefix_revision(e, base.label()))?;
    // The base must be valid as `render --rev` would find it: a plan from
    // a broken base is no plan.
    check_duplicates(&base_releases).map_err(|e| prefix_revision(e.into(), base.label()))?;
    let mut head_releases = merge_results(
        render_specs(head, &head_layout, &head_todo, &mut charts, Need::Optional),
        render_sources(head, &head_layout, &head_sources_todo, Need::Optional),
    )?;
    pin_images(&mut head_releases, &head_layout, true)?;
    check_duplicates(&head_releases)?;
    // The same app in the other environments is the usual collision: render
    // those releases too (only for this check) when they were skipped.
    let changed_apps: std::collections::HashSet<&str> = head_releases
        .iter()
        .map(|r| r.release.app.as_str())
        .collect();
    let siblings: Vec<&ReleaseSpec> = head_layout
        .releases
        .iter()
        .filter(|s| {
            changed_apps.contains(s.app.as_str())
                && !head_releases
                    .iter()
                    .any(|r| r.release.env == s.env && r.release.app == s.app)
        })
        .collect();
    let sibling_releases = if siblings.is_empty() {
        Vec::new()
    } else {
        render_specs(head, &head_layout, &siblings, &mut charts, Need::Optional)?
    };
    check_shared_clusters(
        head_releases.iter().chain(&sibling_releases),
        &head_layout.settings,
    )?;
    notes.extend(sealed_notes(&base_releases, &head_releases));
    Ok(Comparison {
        base: State {
            label: base.label().to_string(),
            commit: base.commit(),
            settings: base_layout.settings,
            releases: base_releases,
        },
        head: State {
            label: head.label().to_string(),
            commit: head.commit(),
            settings: head_layout.settings,
            releases: head_releases,
        },
        unchanged,
        notes,
    })
}

/// One note per SOPS file that changed but could not be decrypted here:
/// its values are placeholders, so the plan cannot say which keys changed.
fn sealed_notes(base: &[Rendered], head: &[Rendered]) -> Vec<String> {
    let base_digests: HashMap<&str, &str> = base
        .iter()
        .flat_map(|r| &r.sealed)
        .map(|s| (s.path.as_str(), s.digest.as_str()))
        .collect();
    let mut notes: Vec<String> = head
        .iter()
        .flat_map(|r| &r.sealed)
        .filter(|s| base_digests.get(s.path.as_str()) != Some(&s.digest.as_str()))
        .map(|s| {
            format!(
                "{} changed, but its values were not compared: {} (a pull request from a fork gets no secrets); the keys of the Secrets it feeds are shown as changed",
                s.path, s.why
            )
        })
        .collect();
    notes.sort();
    notes.dedup();
    notes
}

/// Problems at the base revision say so, since the files may differ at head.
fn prefix_revision(e: Error, label: &str) -> Error {
    match e {
        Error::Invalid(mut d) => {
            for p in &mut d.0 {
                p.message = format!("at base revision {label}: {}", p.message);
            }
            Error::Invalid(d)
        }
        other => other,
    }
}

/// Compiled charts, shared between revisions when their content is equal.
#[derive(Default)]
struct ChartCache {
    by_key: HashMap<String, Arc<Engine>>,
}

/// A compiled chart of either engine.
enum Engine {
    Handlebars(Box<Chart>),
    Helm(Box<helm::HelmChart>),
}

impl ChartCache {
    fn get(
        &mut self,
        snapshot: &Snapshot,
        layout: &Layout,
        name: &str,
        remote: Option<&config::RemoteChart>,
    ) -> Result<Option<Arc<Engine>>, Error> {
        if let Some(remote) = remote {
            let key = format!("remote:{}", remote.key());
            if let Some(c) = self.by_key.get(&key) {
                return Ok(Some(c.clone()));
            }
            let engine = Arc::new(Engine::Helm(Box::new(helm::HelmChart::remote(
                remote,
                &layout.settings.helm,
                &layout.settings.images.insecure_registries,
            )?)));
            self.by_key.insert(key, engine.clone());
            return Ok(Some(engine));
        }
        let node = layout.charts.get(name);
        let key = match node {
            Some(n) => n.id.map(|id| id.to_string()),
            None if name == chart::BUILTIN_NAME => Some("builtin".to_string()),
            None => return Ok(None),
        };
        if let Some(c) = key.as_ref().and_then(|k| self.by_key.get(k)) {
            return Ok(Some(c.clone()));
        }
        let engine = match node {
            Some(n) => {
                let reader = snapshot.reader();
                let meta = match reader.child(n, "Chart.yaml")? {
                    Some(f) => reader.read_text(&f)?,
                    None => String::new(),
                };
                if helm::is_helm_chart(&meta) {
                    Engine::Helm(Box::new(helm::HelmChart::load(
                        &reader,
                        n,
                        &layout.settings.helm,
                        &layout.settings.images.insecure_registries,
                    )?))
                } else {
                    Engine::Handlebars(Box::new(Chart::load(&reader, n).map_err(|e| match e {
                        chart::LoadError::Source(s) => Error::Source(s),
                        chart::LoadError::Invalid(d) => Error::Invalid(d),
                    })?))
                }
            }
            None => Engine::Handlebars(Box::new(Chart::builtin()?)),
        };
        let engine = Arc::new(engine);
        if let Some(k) = key {
            self.by_key.insert(k, engine.clone());
        }
        Ok(Some(engine))
    }
}

/// Renders the releases of raw and Kustomize sources.
fn render_sources(
    snapshot: &Snapshot,
    layout: &Layout,
    specs: &[&config::sources::SourceSpec],
    need: Need,
) -> Result<Vec<Rendered>, Error> {
    let root = snapshot.root();
    let results: Vec<Result<Result<Rendered, Diagnostics>, source::Error>> = specs
        .par_iter()
        .map_init(
            || snapshot.reader(),
            |reader, spec| sources::render(reader, &root, spec, &layout.settings.sources, need),
        )
        .collect();
    let mut problems = Diagnostics::default();
    let mut out = Vec::new();
    for r in results {
        match r? {
            Ok(r) => out.push(r),
            Err(d) => problems.extend(d.0),
        }
    }
    problems.into_result(out).map_err(Error::from)
}

/// Decrypts a release's `secrets.sops.yaml` files (app, then env) and
/// merges them under `values.secrets`.
fn open_secrets(sv: &mut ServiceValues, need: Need) -> Result<Vec<Sealed>, config::Error> {
    if sv.secret_files.is_empty() {
        return Ok(Vec::new());
    }
    let mut problems = Diagnostics::default();
    let mut merged = match sv.values.remove("secrets") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut sealed = Vec::new();
    for (path, text) in &sv.secret_files {
        match secrets::open_values(path, text, need) {
            Ok(opened) => {
                if let Value::Object(m) = opened.value {
                    config::merge_into(&mut merged, m);
                }
                sealed.extend(opened.sealed);
            }
            Err(d) => problems.push(d),
        }
    }
    sv.values.insert("secrets".into(), Value::Object(merged));
    problems.into_result(sealed).map_err(config::Error::from)
}

/// A hash of a release's encrypted files (never of plaintext): changes
/// whenever one is edited, so pods restart for new secrets.
fn secrets_revision(files: &[(String, String)]) -> String {
    use sha2::Digest as _;
    if files.is_empty() {
        return String::new();
    }
    let mut h = sha2::Sha256::new();
    for (path, text) in files {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Renders the given releases of one snapshot.
fn render_specs(
    snapshot: &Snapshot,
    layout: &Layout,
    specs: &[&ReleaseSpec],
    charts: &mut ChartCache,
    need: Need,
) -> Result<Vec<Rendered>, Error> {
    let mut problems = Diagnostics::default();
    type Loaded = Result<(ServiceValues, Vec<Sealed>), config::Error>;
    let services: Vec<Loaded> = specs
        .par_iter()
        .map_init(
            || snapshot.reader(),
            |reader, spec| {
                let mut sv = config::load_service(reader, spec, &layout.settings)?;
                let sealed = open_secrets(&mut sv, need)?;
                Ok((sv, sealed))
            },
        )
        .collect();

    let mut by_name: HashMap<String, Option<Arc<Engine>>> = HashMap::new();
    let mut jobs = Vec::with_capacity(specs.len());
    for (spec, loaded) in specs.iter().zip(services) {
        let (sv, sealed) = match loaded {
            Ok(x) => x,
            Err(config::Error::Invalid(d)) => {
                problems.extend(d.0);
                continue;
            }
            Err(config::Error::Source(e)) => return Err(e.into()),
        };
        if !by_name.contains_key(&sv.chart) {
            let chart = match charts.get(snapshot, layout, &sv.chart, sv.remote_chart.as_ref()) {
                Ok(c) => c,
                Err(Error::Invalid(d)) => {
                    // A remote chart's problem points at the config naming it.
                    problems.extend(d.0.into_iter().map(|mut p| {
                        p.location
                            .get_or_insert_with(|| Location::file(&spec.env_config.path));
                        p
                    }));
                    None
                }
                Err(e) => return Err(e),
            };
            by_name.insert(sv.chart.clone(), chart);
        }
        match by_name.get(&sv.chart).cloned().flatten() {
            Some(chart) => jobs.push((*spec, sv, chart, sealed)),
            None => {
                if layout.charts.contains_key(&sv.chart)
                    || sv.chart == chart::BUILTIN_NAME
                    || sv.remote_chart.is_some()
                {
                    continue; // the chart itself is broken; already reported
                }
                let known: Vec<&str> = layout.charts.keys().map(String::as_str).collect();
                problems.push(
                    Diagnostic::new(
                        Location::file(&spec.env_config.path),
                        format!(
                            "unknown chart `{}` for release {}/{}",
                            sv.chart, spec.env, spec.app
                        ),
                    )
                    .help(format!(
                        "charts available in {}/: {}",
                        layout.settings.charts,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )),
                );
            }
        }
    }

    let total = std::sync::atomic::AtomicU64::new(0);
    let rendered: Vec<Result<Rendered, Diagnostics>> = jobs
        .into_par_iter()
        .map(|(spec, sv, engine, sealed)| match &*engine {
            Engine::Handlebars(chart) => {
                let rendered = render_release(spec, sv, chart, layout.settings_id, &layout.settings.limits);
                // Every release's text counts against one total per revision.
                if let Ok((_, bytes)) = &rendered
                    && total.fetch_add(*bytes, std::sync::atomic::Ordering::Relaxed) + bytes
                        > layout.settings.limits.total_bytes
                {
                    return Err(Diagnostic::global(format!(
                        "rendered output of all releases exceeds the limit of {} bytes",
                        layout.settings.limits.total_bytes
                    ))
                    .help("raise `limits.totalBytes` in kdeploy.yaml, or render fewer releases at once with --env/--app")
                    .into());
                }
                rendered.map(|(r, _)| Rendered { sealed, ..r })
            }
            Engine::Helm(chart) => {
                helm::render(spec, sv, chart, &layout.settings.helm, layout.settings_id)
                    .map(|r| Rendered { sealed, ..r })
            }
        })
        .collect();
    let mut out = Vec::with_capacity(rendered.len());
    for r in rendered {
        match r {
            Ok(r) => out.push(r),
            Err(d) => problems.extend(d.0),
        }
    }
    problems.into_result(out).map_err(Error::from)
}

impl Release {
    /// The release of `spec` rendered with `chart`.
    fn of(spec: &ReleaseSpec, chart: &str, version: String, namespace: String) -> Release {
        Release {
            env: spec.env.clone(),
            app: spec.app.clone(),
            chart: chart.to_string(),
            version,
            namespace,
            dir: spec.env_dir().to_string(),
        }
    }
}

/// `namespace` from the merged values (a DNS-1123 label), else the
/// `namespace` template of kdeploy.yaml (`{app}-{env}`); the same rule for
/// every engine.
fn release_namespace(
    values: &Map<String, Value>,
    spec: &ReleaseSpec,
    default: &str,
) -> Result<String, Diagnostic> {
    match values.get("namespace") {
        None | Some(Value::Null) if config::is_dns_label(default) => Ok(default.to_string()),
        None | Some(Value::Null) => Err(Diagnostic::new(
            Location::file(config::SETTINGS_FILE),
            format!(
                "the `namespace` template gives `{default}` for release {}/{}, which is not a DNS-1123 label",
                spec.env, spec.app
            ),
        )
        .help("keep the template short enough (63 characters) and made of lowercase letters, digits and '-', or set `namespace:` in the service's config.yaml")),
        Some(Value::String(s)) if config::is_dns_label(s) => Ok(s.clone()),
        Some(other) => Err(Diagnostic::new(
            Location::file(&spec.env_config.path),
            format!("`namespace` must be a DNS-1123 label, found {other}"),
        )
        .help("use lowercase letters, digits and '-'")),
    }
}

/// Renders one release with its chart.
fn render_release(
    spec: &ReleaseSpec,
    sv: ServiceValues,
    chart: &Chart,
    settings_id: Option<gix::ObjectId>,
    limits: &config::Limits,
) -> Result<(Rendered, u64), Diagnostics> {
    let mut problems = Diagnostics::default();
    let mut values = chart.defaults.clone();
    let secrets_revision = secrets_revision(&sv.secret_files);
    let inputs = sv.inputs;
    let default_namespace = sv.default_namespace;
    config::merge_into(&mut values, sv.values);
    let values = Value::Object(values);
    if let Some(schema) = &chart.schema {
        let found = schema.check(
            &values,
            &inputs,
            &format!("{}/values.yaml", chart.dir),
            &chart.name,
        );
        if !found.is_empty() {
            return Err(Diagnostics(found));
        }
    }
    let Value::Object(values) = values else {
        unreachable!("built as an object above")
    };
    let release = Release::of(
        spec,
        &chart.name,
        sv.version,
        release_namespace(&values, spec, &default_namespace)?,
    );
    // The values move into the context (the `json!` macro would deep-copy
    // them through `to_value`) and are freed with it after rendering.
    let strings = |pairs: &[(&str, &str)]| {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
                .collect(),
        )
    };
    let mut ctx = Map::new();
    ctx.insert("values".into(), Value::Object(values));
    ctx.insert(
        "release".into(),
        strings(&[
            ("app", &release.app),
            ("env", &release.env),
            ("version", &release.version),
            ("namespace", &release.namespace),
            ("name", &release.app),
            ("secretsRevision", &secrets_revision),
        ]),
    );
    ctx.insert(
        "chart".into(),
        strings(&[("name", &chart.name), ("version", &chart.version)]),
    );
    // `From<Value>` takes the value as is; `Context::wraps` would copy it again.
    let ctx = Value::Object(ctx);
    let ctx = handlebars::Context::from(ctx);
    let mut objects = Vec::new();
    let mut bytes = 0u64;
    let (_, exceeded) = budget::with_budget(limits, || {
        for template in chart.templates() {
            let text = match chart.render_template(template, &ctx) {
                Ok(t) => t,
                Err(d) => {
                    let message =
                        format!("{} (rendering {}/{})", d.message, release.env, release.app);
                    problems.push(Diagnostic { message, ..d });
                    if budget::exceeded().is_some() {
                        break; // no budget left for the other templates
                    }
                    continue;
                }
            };
            bytes += text.len() as u64;
            parse_documents(&text, template, &release, &mut objects, &mut problems);
        }
    });
    drop(ctx);
    if exceeded.is_some() {
        objects.clear();
    }
    let resources = resources_of(objects, &release.namespace, &mut problems);
    let key = spec.service_key().map(|service| ReleaseKey {
        service,
        settings: settings_id,
        chart: chart.key.clone().unwrap_or_default(),
    });
    let key = key.filter(|_| chart.key.is_some());
    problems.into_result((
        Rendered {
            release,
            resources,
            key,
            inputs,
            sealed: Vec::new(),
        },
        bytes,
    ))
}

/// Turns parsed objects into resources in apply order (kind rank, then the
/// order they came in), with namespaces filled in; CRDs among them decide
/// the scope of their own kinds.
fn resources_of(
    objects: Vec<(Value, Origin)>,
    namespace: &str,
    problems: &mut Diagnostics,
) -> Vec<Resource> {
    let cluster_crds = resource::crd_scopes(objects.iter().map(|(v, _)| v));
    let mut resources = Vec::with_capacity(objects.len());
    for (object, origin) in objects {
        match to_resource(object, origin, namespace, &cluster_crds) {
            Ok(r) => resources.push(r),
            Err(d) => problems.push(d),
        }
    }
    resources.sort_by_key(|r| resource::kind_rank(&r.id.group, &r.id.kind));
    resources
}

/// Splits a template's output into documents and parses each once.
fn parse_documents(
    text: &str,
    template: &str,
    release: &Release,
    out: &mut Vec<(Value, Origin)>,
    problems: &mut Diagnostics,
) {
    for doc in yaml::split_documents(text) {
        if yaml::is_blank(doc.text) {
            continue;
        }
        let origin = Origin {
            env: release.env.clone(),
            app: release.app.clone(),
            file: template.to_string(),
            document: doc.index,
            line: doc.first_line,
        };
        match yaml::parse(doc.text) {
            Ok(v) => out.push((v, origin)),
            Err(e) => {
                let line_in_output = e.line.map(|l| l + doc.first_line - 1);
                // The line's shape only: a rendered value may be a secret.
                let snippet = line_in_output
                    .and_then(|l| text.lines().nth(l.saturating_sub(1)))
                    .map(|l| format!("\n  | {}", shape_of_line(l)))
                    .unwrap_or_default();
                problems.push(
                    Diagnostic::new(
                        Location::file(template),
                        format!(
                            "rendered output for {}/{} is not valid YAML (document {}, line {} of the output): {}{snippet}",
                            release.env,
                            release.app,
                            doc.index + 1,
                            line_in_output.map_or("?".into(), |l| l.to_string()),
                            e.message
                        ),
                    )
                    .help("check indentation around {{…}} expressions; use nindent/toYaml for maps and lists"),
                );
            }
        }
    }
}

/// A YAML line with its value hidden: indentation, `- ` and the key stay,
/// which is what a syntax error is about; the value could be a secret.
fn shape_of_line(line: &str) -> String {
    let indent = line.len() - line.trim_start().len();
    let mut rest = &line[indent..];
    let mut out = line[..indent].to_string();
    while let Some(r) = rest.strip_prefix("- ") {
        out.push_str("- ");
        rest = r;
    }
    match rest.split_once(':') {
        Some((key, value))
            if !key.contains(['"', '\'', ' ', '{', '[']) && !value.trim().is_empty() =>
        {
            format!("{out}{key}: <value hidden>")
        }
        Some((key, _)) if !key.contains(['"', '\'', ' ', '{', '[']) => format!("{out}{key}:"),
        _ if rest.is_empty() => out,
        _ => format!("{out}<value hidden>"),
    }
}

/// Checks the fields every object needs and builds its id; namespaced kinds
/// without a namespace get the release's.
fn to_resource(
    mut object: Value,
    origin: Origin,
    namespace: &str,
    cluster_crds: &[(String, String)],
) -> Result<Resource, Diagnostic> {
    let fail = |what: &str| {
        Diagnostic::new(
            Location::file(&origin.file),
            format!(
                "document {} rendered for {}/{} {what}",
                origin.document + 1,
                origin.env,
                origin.app
            ),
        )
        .help("every document needs apiVersion, kind and metadata.name")
    };
    if !object.is_object() {
        return Err(fail(&format!(
            "is {}, not a Kubernetes object",
            config::type_name(&object)
        )));
    }
    let api_version = object["apiVersion"].as_str().map(str::to_string);
    let kind = object["kind"].as_str().map(str::to_string);
    let name = object["metadata"]["name"].as_str().map(str::to_string);
    let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
        let missing: Vec<&str> = [
            ("apiVersion", object["apiVersion"].is_string()),
            ("kind", object["kind"].is_string()),
            ("metadata.name", object["metadata"]["name"].is_string()),
        ]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(f, _)| *f)
        .collect();
        return Err(fail(&format!("has no {}", missing.join(", "))));
    };
    if name.is_empty() {
        return Err(fail("has an empty metadata.name"));
    }
    let group = resource::split_api_version(&api_version).0.to_string();
    let cluster = resource::is_cluster_scoped(&group, &kind)
        || cluster_crds.iter().any(|(g, k)| *g == group && *k == kind);
    let ns = if cluster {
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            return Err(Diagnostic::new(
                Location::file(&origin.file),
                format!(
                    "document {} rendered for {}/{}: {kind} {name} is cluster-scoped but sets metadata.namespace `{ns}`",
                    origin.document + 1,
                    origin.env,
                    origin.app
                ),
            )
            .help("remove metadata.namespace: cluster-scoped objects belong to no namespace"));
        }
        None
    } else {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(namespace)
            .to_string();
        object["metadata"]["namespace"] = Value::String(ns.clone());
        Some(ns)
    };
    Ok(Resource {
        id: ResourceId {
            group,
            kind,
            namespace: ns,
            name,
        },
        api_version,
        object,
        origin,
    })
}

/// Two releases of one environment must not produce the same object.
///
/// `releases` are sorted by environment; each environment is checked on its
/// own, in parallel.
fn check_duplicates(releases: &[Rendered]) -> Result<(), Diagnostics> {
    let problems: Vec<Diagnostic> = releases
        .chunk_by(|a, b| a.release.env == b.release.env)
        .collect::<Vec<_>>()
        .into_par_iter()
        .flat_map_iter(duplicates_in_env)
        .collect();
    Diagnostics(problems).into_result(())
}

/// Environments that deploy to the same cluster must not produce the same
/// object: the later deploy would overwrite the earlier one, and removing it
/// from one environment would delete the other's. Environments share a
/// cluster when kdeploy.yaml gives them the same `context`, or none.
fn check_shared_clusters<'a>(
    releases: impl IntoIterator<Item = &'a Rendered>,
    settings: &config::Settings,
) -> Result<(), Diagnostics> {
    let context = |env: &str| {
        settings
            .environments
            .get(env)
            .and_then(|e| e.context.as_deref())
    };
    // cluster -> env -> releases
    let mut groups: BTreeMap<Option<&str>, BTreeMap<&str, Vec<&Rendered>>> = BTreeMap::new();
    for r in releases {
        groups
            .entry(context(&r.release.env))
            .or_default()
            .entry(&r.release.env)
            .or_default()
            .push(r);
    }
    let mut problems = Diagnostics::default();
    for (cluster, envs) in groups.into_iter().filter(|(_, e)| e.len() > 1) {
        let mut seen: HashMap<&ResourceId, &Release, foldhash::fast::RandomState> =
            HashMap::default();
        for env in envs.values() {
            let mut first_in_env: HashMap<&ResourceId, &Release, foldhash::fast::RandomState> =
                HashMap::default();
            for r in env {
                for res in &r.resources {
                    match seen.get(&res.id) {
                        Some(other) if other.env != r.release.env => {
                            let why = match cluster {
                                Some(c) => format!("both use the kubeconfig context `{c}`"),
                                None => "kdeploy.yaml sets no `context` for either".to_string(),
                            };
                            problems.push(
                                Diagnostic::new(
                                    Location::file(&r.release.dir),
                                    format!(
                                        "{} is produced by environments {} ({}) and {} ({}), which deploy to the same cluster ({why}): one would overwrite the other, and removing it from one would delete it from both",
                                        res.id, other.env, other.dir, r.release.env, r.release.dir
                                    ),
                                )
                                .help("give each environment its own namespaces: `namespace: \"{app}-{env}\"` in kdeploy.yaml (the default), or another `namespace:` per environment; if they are separate clusters, set `environments.<env>.context` for each"),
                            );
                        }
                        _ => {
                            first_in_env.entry(&res.id).or_insert(&r.release);
                        }
                    }
                }
            }
            seen.extend(first_in_env);
        }
    }
    problems.into_result(())
}

/// The duplicate resources among the releases of one environment.
fn duplicates_in_env(releases: &[Rendered]) -> Vec<Diagnostic> {
    let count = releases.iter().map(|r| r.resources.len()).sum();
    let mut seen: HashMap<&ResourceId, (&Release, &Resource), foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(count, Default::default());
    let mut problems = Vec::new();
    for r in releases {
        for res in &r.resources {
            if let Some((first, first_res)) = seen.get(&res.id) {
                problems.push(
                    Diagnostic::new(
                        Location::file(&r.release.dir),
                        format!(
                            "{} in environment {} is produced twice: by {} ({}) and by {} ({})",
                            res.id,
                            r.release.env,
                            first.dir,
                            first_res.origin.file,
                            r.release.dir,
                            res.origin.file
                        ),
                    )
                    .help("give one of them another name or namespace"),
                );
            } else {
                seen.insert(&res.id, (&r.release, res));
            }
        }
    }
    problems
}
