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
pub mod cache;
pub mod chart;
mod checks;
mod compare;
mod documents;
pub mod helm;
pub mod helm_deps;
pub mod helm_schemas;
pub mod helpers;
pub mod memo;
pub mod nesting;
pub mod pin;
pub mod schema;
pub mod scopes;
pub mod sources;

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::config::{self, Filter, Layout, ReleaseSpec, ServiceValues};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::resource::{Resource, ResourceId};
use crate::secrets::{self, Need, Sealed};
use crate::source::{self, Snapshot};

pub use chart::Chart;
pub use checks::hashed_ids;
use checks::{check_duplicates, check_shared_clusters};
pub use compare::{Comparison, GivenSettings, PolicyFrom, compare, compare_with};
use documents::{parse_documents, resources_of};

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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl ReleaseKey {
    /// The key of `spec` rendered with the chart whose content is
    /// `chart_key`: `None` in the work tree, and for a release with SOPS
    /// files, whose output holds decrypted values and is never cached.
    fn of(
        spec: &ReleaseSpec,
        settings: Option<gix::ObjectId>,
        chart_key: Option<&str>,
    ) -> Option<ReleaseKey> {
        let service = spec.service_key()?;
        if service[4].is_some() || service[5].is_some() {
            return None;
        }
        Some(ReleaseKey {
            service,
            settings,
            chart: chart_key?.to_string(),
        })
    }

    /// Feeds every part of the key to `h` ([`cache`]).
    fn feed(&self, h: &mut sha2::Sha256) {
        use sha2::Digest as _;
        for id in self.service.iter().chain([&self.settings]) {
            h.update(id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()));
            h.update([0]);
        }
        h.update(&self.chart);
    }
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
    /// What all its releases read besides their own files, for the render
    /// cache ([`cache`]); `None` in the work tree.
    pub cache_scope: Option<cache::Scope>,
}

impl State {
    /// Every resource by (environment, id): what a check of a plan's
    /// changes looks its objects up in.
    pub fn index(&self) -> std::collections::HashMap<(String, ResourceId), &Resource> {
        self.releases
            .iter()
            .flat_map(|r| {
                r.resources
                    .iter()
                    .map(move |x| ((r.release.env.clone(), x.id.clone()), x))
            })
            .collect()
    }

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
    render_layout(snapshot, layout, need, images, true, None)
}

/// Work done on each release as soon as it has rendered (and its images
/// are pinned), on the rendering thread: [`crate::emit`] checks and
/// serializes it there and frees its objects. Problems are reported with
/// every other release's.
pub type Finish<'a> =
    dyn Fn(&mut Rendered, &config::Settings) -> Result<(), Diagnostics> + Sync + 'a;

/// [`render`], with `finish` run on each release as it renders.
///
/// # Errors
/// As [`render`], with the problems `finish` reports.
pub fn render_finishing(
    snapshot: &Snapshot,
    filter: &Filter,
    finish: &Finish<'_>,
) -> Result<State, Error> {
    let layout = Layout::load(&snapshot.reader(), &snapshot.root(), filter)?;
    render_layout(
        snapshot,
        layout,
        Need::Required,
        Images::Locked,
        true,
        Some(finish),
    )
}

/// The `kdeploy.yaml` settings of `snapshot`, every problem in them an
/// error (where [`config::head_settings`] falls back to the defaults).
///
/// # Errors
/// The settings' problems, at their lines; read failures.
pub fn settings(snapshot: &Snapshot) -> Result<config::Settings, Error> {
    // An environment glob no name matches: only kdeploy.yaml is parsed.
    let nothing = Filter::new(Some("-"), None)
        .map_err(|e| Diagnostics::from(Diagnostic::global(e.to_string())))?;
    Ok(Layout::load(&snapshot.reader(), &snapshot.root(), &nothing)?.settings)
}

/// Renders a pull request's preview (see [`config::preview`]): the releases
/// of the template's `from` environment whose apps `apps` selects, each as
/// the preview's environment, with the template's values and namespace.
/// The template is read from `trusted` when given (the base branch's
/// settings, which the pull request cannot change), else from `snapshot`.
/// Namespaces hard-coded in templates are left to the caller
/// ([`crate::preview`] rewrites them).
///
/// # Errors
/// As [`render`]; also when the `from` environment has no releases.
pub fn render_preview(
    snapshot: &Snapshot,
    apps: Option<&str>,
    template: &str,
    pr: u64,
    trusted: Option<&config::Settings>,
) -> Result<(State, config::preview::Overlay), Error> {
    let reader = snapshot.reader();
    // The settings first (their problems reported as any render's), then
    // the releases of the environment the template copies.
    let settings = settings(snapshot)?;
    let overlay = config::preview::Overlay::new(trusted.unwrap_or(&settings), template, pr)
        .map_err(Diagnostics::from)?;
    let overlay = &overlay;
    let filter = Filter::new(Some(&overlay.from), apps)
        .map_err(|e| Diagnostics::from(Diagnostic::global(format!("invalid app glob: {e}"))))?;
    // The pull request's head renders under the base's runner policy.
    let policy = trusted.map(config::policy::RunnerPolicy::of);
    let mut layout = Layout::load_as(
        &reader,
        &snapshot.root(),
        &filter,
        &|_| true,
        None,
        policy.as_ref(),
    )?;
    if layout.releases.is_empty() && layout.sources.is_empty() {
        return Err(Diagnostics::from(
            Diagnostic::new(
                Location::file(config::SETTINGS_FILE),
                format!(
                    "preview template `{}` copies environment `{}`, which has no releases{}",
                    overlay.template,
                    overlay.from,
                    apps.map(|a| format!(" of apps matching `{a}`")).unwrap_or_default()
                ),
            )
            .help(format!(
                "set `environments.{}.from` to an environment with services/<app>/<env>/ directories",
                overlay.template
            )),
        )
        .into());
    }
    let shared = Arc::new(overlay.clone());
    for spec in &mut layout.releases {
        spec.env.clone_from(&overlay.env);
        spec.preview = Some(shared.clone());
    }
    for s in &mut layout.sources {
        s.env.clone_from(&overlay.env);
        s.namespace = overlay.namespace_for(&s.app);
    }
    // Every release renders into the same namespace, its Namespace object
    // too: duplicates are checked once the preview module has isolated it.
    let state = render_layout(
        snapshot,
        layout,
        Need::Required,
        Images::Locked,
        false,
        None,
    )?;
    Ok((state, overlay.clone()))
}

/// Renders every release a loaded layout lists, `finish` run on each.
fn render_layout(
    snapshot: &Snapshot,
    layout: Layout,
    need: Need,
    images: Images,
    checks: bool,
    finish: Option<&Finish<'_>>,
) -> Result<State, Error> {
    let mut charts = ChartCache::default();
    // Images are pinned as each release renders, before `finish` sees it.
    let lock = match (&layout.lock_file, images) {
        (Some((path, text)), Images::Locked) => Some(crate::lock::Lock::parse(path, text)?),
        _ => None,
    };
    let pin_then_finish = |r: &mut Rendered, settings: &config::Settings| {
        scopes::apply_declared(r, settings)?;
        if images == Images::Locked {
            pin::pin(std::slice::from_mut(r), lock.as_ref(), &settings.images)?;
        }
        finish.map_or(Ok(()), |f| f(r, settings))
    };
    let specs: Vec<&ReleaseSpec> = layout.releases.iter().collect();
    let rendered = render_specs(
        snapshot,
        &layout,
        &specs,
        &mut charts,
        need,
        Hooks {
            finish: Some(&pin_then_finish),
            memo: None,
            cache: None,
        },
    );
    let sourced = render_sources(
        snapshot,
        &layout,
        &layout.sources.iter().collect::<Vec<_>>(),
        need,
        Some(&pin_then_finish),
    );
    let releases = merge_results(rendered, sourced)?;
    if checks {
        check_duplicates(&releases)?;
        check_shared_clusters(&releases, &layout.settings)?;
    }
    Ok(State {
        label: snapshot.label().to_string(),
        commit: snapshot.commit(),
        cache_scope: cache::Scope::of(&layout, snapshot.commit().is_some()),
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
    pin::pin(releases, lock.as_ref(), &settings)?;
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

impl Engine {
    /// Identity of the chart's content (see [`ReleaseKey`]).
    fn key(&self) -> Option<&str> {
        match self {
            Engine::Handlebars(c) => c.key.as_deref(),
            Engine::Helm(c) => c.key.as_deref(),
        }
    }
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
    finish: Option<&Finish<'_>>,
) -> Result<Vec<Rendered>, Error> {
    let root = snapshot.root();
    let results: Vec<Result<Result<Rendered, Diagnostics>, source::Error>> = specs
        .par_iter()
        .map_init(
            || snapshot.reader(),
            |reader, spec| {
                let rendered = sources::render(
                    reader,
                    &root,
                    spec,
                    &layout.settings.sources,
                    layout.settings.limits.release_bytes,
                    need,
                )?;
                Ok(rendered.and_then(|r| finished(r, &layout.settings, finish)))
            },
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

/// Releases whose values are loaded at once: loading every release's values
/// before rendering any held them all (8 MB for 3,000 releases, on top of
/// the output that streaming keeps); a chunk keeps every core busy and the
/// values few.
const CHUNK: usize = 256;

/// What [`render_specs`] does besides rendering: work on each finished
/// release, and template output shared with the other revision of a plan.
#[derive(Clone, Copy, Default)]
struct Hooks<'a> {
    finish: Option<&'a Finish<'a>>,
    memo: Option<memo::Use<'a>>,
    /// Releases found here are taken as they are, not rendered (a plan's
    /// base, [`cache`]).
    cache: Option<&'a cache::Reads<'a>>,
}

/// Renders the given releases of one snapshot.
fn render_specs(
    snapshot: &Snapshot,
    layout: &Layout,
    specs: &[&ReleaseSpec],
    charts: &mut ChartCache,
    need: Need,
    hooks: Hooks<'_>,
) -> Result<Vec<Rendered>, Error> {
    let (mut rendered, cached) = render_specs_cached(snapshot, layout, specs, charts, need, hooks)?;
    rendered.extend(cached);
    Ok(rendered)
}

/// [`render_specs`], returning apart the releases taken from
/// `hooks.cache` (already finished: their scopes applied and images
/// pinned when they were rendered).
fn render_specs_cached(
    snapshot: &Snapshot,
    layout: &Layout,
    specs: &[&ReleaseSpec],
    charts: &mut ChartCache,
    need: Need,
    hooks: Hooks<'_>,
) -> Result<(Vec<Rendered>, Vec<Rendered>), Error> {
    let mut run = Run {
        problems: Diagnostics::default(),
        out: Vec::with_capacity(specs.len()),
        cached: Vec::new(),
        by_name: HashMap::new(),
        total: std::sync::atomic::AtomicU64::new(0),
    };
    for chunk in specs.chunks(CHUNK) {
        render_chunk(snapshot, layout, chunk, charts, need, hooks, &mut run)?;
    }
    let cached = run.cached;
    Ok((run.problems.into_result(run.out)?, cached))
}

/// What [`render_specs`] gathers over its chunks.
struct Run {
    problems: Diagnostics,
    out: Vec<Rendered>,
    /// Releases taken from the render cache.
    cached: Vec<Rendered>,
    by_name: HashMap<String, Option<Arc<Engine>>>,
    /// Bytes rendered, against `limits.totalBytes`.
    total: std::sync::atomic::AtomicU64,
}

/// Loads and renders one chunk of [`render_specs`].
fn render_chunk(
    snapshot: &Snapshot,
    layout: &Layout,
    specs: &[&ReleaseSpec],
    charts: &mut ChartCache,
    need: Need,
    hooks: Hooks<'_>,
    run: &mut Run,
) -> Result<(), Error> {
    let Run {
        problems,
        out,
        cached,
        by_name,
        total,
    } = run;
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

    if let Some(reads) = hooks.cache {
        let (found, rest) = from_cache(jobs, layout, reads);
        cached.extend(found);
        jobs = rest;
    }
    let rendered: Vec<Result<Rendered, Diagnostics>> = jobs
        .into_par_iter()
        .map(|(spec, sv, engine, sealed)| {
            let rendered = match &*engine {
            Engine::Handlebars(chart) => {
                let rendered = render_release(spec, sv, chart, layout.settings_id, &layout.settings.limits, hooks.memo);
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
                helm::render(
                    spec,
                    sv,
                    chart,
                    &layout.settings.helm,
                    layout.settings_id,
                    layout.settings.limits.release_bytes,
                )
                    .map(|r| Rendered { sealed, ..r })
            }
            };
            rendered.and_then(|r| finished(r, &layout.settings, hooks.finish))
        })
        .collect();
    for r in rendered {
        match r {
            Ok(r) => out.push(r),
            Err(d) => problems.extend(d.0),
        }
    }
    Ok(())
}

/// A release to render: its spec, values, chart and undecrypted files.
type Job<'a> = (&'a ReleaseSpec, ServiceValues, Arc<Engine>, Vec<Sealed>);

/// Splits `jobs` into the releases `reads` holds and those to render,
/// reading entries in parallel.
fn from_cache<'a>(
    jobs: Vec<Job<'a>>,
    layout: &Layout,
    reads: &cache::Reads<'_>,
) -> (Vec<Rendered>, Vec<Job<'a>>) {
    let looked: Vec<Option<Rendered>> = jobs
        .par_iter()
        .map(
            |job| match ReleaseKey::of(job.0, layout.settings_id, job.2.key()) {
                Some(key) => reads.get(&job.0.env, &job.0.app, &key),
                None => {
                    reads.unkeyed();
                    None
                }
            },
        )
        .collect();
    let mut found = Vec::new();
    let mut rest = Vec::new();
    for (job, l) in jobs.into_iter().zip(looked) {
        match l {
            Some(r) => found.push(r),
            None => rest.push(job),
        }
    }
    (found, rest)
}

/// `r` once `finish` has run on it.
fn finished(
    mut r: Rendered,
    settings: &config::Settings,
    finish: Option<&Finish<'_>>,
) -> Result<Rendered, Diagnostics> {
    if let Some(f) = finish {
        f(&mut r, settings)?;
    }
    Ok(r)
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
    memo: Option<memo::Use<'_>>,
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
    let digest = memo.and_then(|_| memo::context_digest(&ctx));
    let ctx = handlebars::Context::from(ctx);
    let mut objects = Vec::new();
    let mut bytes = 0u64;
    let (_, exceeded) = budget::with_budget(limits, || {
        let _shared = chart.sharing_includes(&ctx);
        for (template, fingerprint) in chart.templates_with_fingerprints() {
            let key = digest.map(|d| memo::key(fingerprint, &d));
            if let (Some(memo::Use::Reuse(m)), Some(key)) = (memo, key)
                && let Some(entry) = m.take(&key)
                && budget::charge(entry.drawn.0, entry.drawn.1)
            {
                bytes += entry.bytes;
                objects.extend(entry.docs);
                continue;
            }
            let drawn_before = budget::drawn();
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
            let (first, problems_before) = (objects.len(), problems.0.len());
            parse_documents(&text, template, &release, &mut objects, &mut problems);
            if let (Some(memo::Use::Record(m)), Some(key)) = (memo, key)
                && problems.0.len() == problems_before
                && m.wants(fingerprint)
            {
                let after = budget::drawn();
                m.record(
                    key,
                    memo::Entry {
                        docs: objects[first..].to_vec(),
                        bytes: text.len() as u64,
                        drawn: (after.0 - drawn_before.0, after.1 - drawn_before.1),
                    },
                );
            }
        }
    });
    drop(ctx);
    if exceeded.is_some() {
        objects.clear();
    }
    let resources = resources_of(objects, &release.namespace, &mut problems);
    let key = ReleaseKey::of(spec, settings_id, chart.key.as_deref());
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
