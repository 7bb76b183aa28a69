//! Two revisions rendered for a plan: only releases whose inputs (service
//! files, chart tree, kdeploy.yaml, image lock) differ are rendered, at
//! both revisions; the rest are listed as unchanged.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::cache::{Reads, RenderCache};
use super::{
    ChartCache, Error, Hooks, Rendered, State, check_duplicates, check_shared_clusters,
    merge_results, pin_images, render_sources, render_specs, render_specs_cached, sources,
};
use crate::config::policy::RunnerPolicy;
use crate::config::{self, Filter, Layout, ReleaseSpec};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::secrets::Need;
use crate::source::{self, Snapshot};

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
    /// Template outputs the head took from the base instead of rendering
    /// them ([`super::memo`]).
    pub reused_templates: usize,
    /// The base's settings are its own kdeploy.yaml (or the runner's), not
    /// the head's lent to a base that has none: what the runner may trust.
    pub base_settings_own: bool,
    /// How the render cache served the base, when one was given.
    pub cache: Option<super::cache::Summary>,
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
    compare_with(base, head, filter, None, PolicyFrom::Base, None)
}

/// Which revision's kdeploy.yaml supplies runner policy
/// ([`crate::config::policy`]) to a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFrom {
    /// The base: a pull request's plan (the head is the author's).
    Base,
    /// Each revision its own: a push to a branch, already merged.
    Own,
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

/// [`compare`], with `given` settings for both revisions when set, runner
/// policy from `policy_from`, and the base's releases taken from `cache`
/// where it holds them ([`super::cache`]: only ever for a plan, which
/// shows the base and never applies it).
///
/// # Errors
/// As [`compare`].
pub fn compare_with(
    base: &Snapshot,
    head: &Snapshot,
    filter: &Filter,
    given_settings: Option<&GivenSettings>,
    policy_from: PolicyFrom,
    cache: Option<&RenderCache>,
) -> Result<Comparison, Error> {
    let base_reader = base.reader();
    let head_reader = head.reader();
    // First only list apps, so that apps whose tree is identical at both
    // revisions are never read.
    type Given<'a> = Option<(&'a config::Settings, Option<gix::ObjectId>)>;
    let load = |reader: &source::Reader<'_>,
                snap: &Snapshot,
                expand: &dyn Fn(&source::Node) -> bool,
                given: Given<'_>,
                policy: Option<&RunnerPolicy>| {
        if snap.is_empty() {
            Ok(Layout::empty())
        } else {
            Layout::load_as(reader, &snap.root(), filter, expand, given, policy)
        }
    };
    let forced: Given<'_> = given_settings.map(|g| (&g.settings, g.id));
    // A base from before kdeploy.yaml existed (the adoption pull request,
    // older history) is read with the head's settings: with the defaults it
    // would look for services/ the repository may not have, render other
    // charts and namespaces, and the plan would delete what the repository
    // really deploys. So whether it has one is asked before it is read.
    let base_has_file = !base.is_empty()
        && base_reader
            .child(&base.root(), config::SETTINGS_FILE)
            .map_err(|e| prefix_revision(config::Error::from(e).into(), base.label()))?
            .is_some_and(|n| !n.is_dir);
    let base_own = if base_has_file || forced.is_some() || base.is_empty() {
        Some(
            load(&base_reader, base, &|_| false, forced, None)
                .map_err(|e| prefix_revision(e.into(), base.label()))?,
        )
    } else {
        None
    };
    // Runner policy (programs, limits, registries in clear, what a plan
    // hides) comes from the base, never the head: a pull request changes
    // what is deployed, not what runs or what its own plan shows. Settings
    // the runner gave (`--config`) are the runner's own.
    let policy =
        (forced.is_none() && policy_from == PolicyFrom::Base && !base.is_empty()).then(|| {
            match &base_own {
                Some(b) if b.settings_file => RunnerPolicy::of(&b.settings),
                _ => RunnerPolicy::default(),
            }
        });
    let head_shallow = load(&head_reader, head, &|_| false, forced, policy.as_ref())?;
    let mut notes = Vec::new();
    if !head_shallow.policy_overridden.is_empty() {
        notes.push(format!(
            "the head changes runner policy in {} ({}): a plan uses its base's (the head's takes effect once merged)",
            config::SETTINGS_FILE,
            head_shallow.policy_overridden.join(", ")
        ));
    }
    let inherit =
        forced.is_none() && !base.is_empty() && !base_has_file && head_shallow.settings_file;
    let given: Given<'_> = if inherit {
        Some((&head_shallow.settings, head_shallow.settings_id))
    } else {
        forced
    };
    let base_shallow = match base_own {
        Some(b) => b,
        None => load(&base_reader, base, &|_| false, given, policy.as_ref())
            .map_err(|e| prefix_revision(e.into(), base.label()))?,
    };
    if inherit {
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
    let head_layout = load(
        &head_reader,
        head,
        &|n| !same_app(n),
        forced,
        policy.as_ref(),
    )?;
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
        policy.as_ref(),
    )
    .map_err(|e| prefix_revision(e.into(), base.label()))?;

    let mut unchanged = Vec::new();
    let (base_todo, head_todo) = releases_todo(
        head,
        filter,
        (&base_layout, &head_layout),
        (settings_same, all_charts_same),
        &charts_same,
        &mut unchanged,
    )?;

    // Raw and Kustomize sources: unchanged when everything they read is.
    let (base_sources_todo, head_sources_todo) = sources_todo(
        (base, &base_layout),
        (head, &head_layout),
        settings_same,
        &mut unchanged,
    )?;
    unchanged.sort();

    let mut charts = ChartCache::default();
    // Templates that are the same at both revisions render once. With the
    // same settings and charts, a release is re-rendered only because its
    // own files changed, so its context differs and nothing could be reused:
    // keep nothing then (a PR touching many apps would copy them all).
    let reusable = !(settings_same && all_charts_same);
    let memo = reusable
        .then(|| super::memo::Memo::keeping(head_fingerprints(head, &head_layout, &mut charts)));
    // Each side's scope, found once: the base's keys its cache lookups.
    let base_scope = super::cache::Scope::of(&base_layout, base.commit().is_some());
    let head_scope = super::cache::Scope::of(&head_layout, head.commit().is_some());
    let reads = cache.zip(base_scope).map(|(c, scope)| c.reads(scope));
    let base_releases = render_side(
        base,
        Side::Base(reads.as_ref()),
        &base_layout,
        (&base_todo, &base_sources_todo),
        &mut charts,
        memo.as_ref(),
    )?;
    let cache = reads.map(super::cache::Reads::summary);
    let head_releases = render_side(
        head,
        Side::Head,
        &head_layout,
        (&head_todo, &head_sources_todo),
        &mut charts,
        memo.as_ref(),
    )?;
    let reused_templates = memo.as_ref().map_or(0, super::memo::Memo::reused);
    drop(memo);
    check_with_siblings(head, &head_layout, &head_releases, &mut charts)?;
    notes.extend(sealed_notes(&base_releases, &head_releases));
    Ok(Comparison {
        base: state_of(base, base_layout, base_scope, base_releases),
        head: state_of(head, head_layout, head_scope, head_releases),
        cache,
        unchanged,
        base_settings_own: !inherit,
        notes,
        reused_templates,
    })
}

/// One side's [`State`].
fn state_of(
    snap: &Snapshot,
    layout: Layout,
    cache_scope: Option<super::cache::Scope>,
    releases: Vec<Rendered>,
) -> State {
    State {
        label: snap.label().to_string(),
        commit: snap.commit(),
        cache_scope,
        settings: layout.settings,
        releases,
    }
}

/// Which side of a comparison [`render_side`] renders.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// History: records template outputs for the head, lets unlocked
    /// images through, names its revision in errors (a plan from a broken
    /// base is no plan), and takes releases from the render cache when
    /// given one.
    Base(Option<&'a Reads<'a>>),
    /// What the pull request proposes: reuses the base's template outputs
    /// and enforces the image lock.
    Head,
}

/// Renders one side's releases to compare, with declared scopes, pinned
/// images and no duplicates.
fn render_side(
    snap: &Snapshot,
    side: Side<'_>,
    layout: &Layout,
    (todo, sources_todo): (&[&ReleaseSpec], &Sources<'_>),
    charts: &mut ChartCache,
    memo: Option<&super::memo::Memo>,
) -> Result<Vec<Rendered>, Error> {
    let (cache, is_head) = match side {
        Side::Base(cache) => (cache, false),
        Side::Head => (None, true),
    };
    let named = |e: Error| {
        if is_head {
            e
        } else {
            prefix_revision(e, snap.label())
        }
    };
    let memo = memo.map(if is_head {
        super::memo::Use::Reuse
    } else {
        super::memo::Use::Record
    });
    let (sources_todo, mut cached) = match cache {
        Some(reads) => cached_sources(snap, sources_todo, reads)?,
        None => (sources_todo.clone(), Vec::new()),
    };
    let rendered = render_specs_cached(
        snap,
        layout,
        todo,
        charts,
        Need::Optional,
        Hooks {
            finish: None,
            memo,
            cache,
        },
    );
    let rendered = rendered.map(|(r, c)| {
        cached.extend(c);
        r
    });
    let mut releases = merge_results(
        rendered,
        render_sources(snap, layout, &sources_todo, Need::Optional, None),
    )
    .map_err(named)?;
    for r in &mut releases {
        super::scopes::apply_declared(r, &layout.settings).map_err(|d| named(Error::Invalid(d)))?;
    }
    pin_images(&mut releases, layout, is_head).map_err(named)?;
    // Cached releases were finished when a deploy rendered them.
    if !cached.is_empty() {
        releases = merge_results(Ok(releases), Ok(cached)).map_err(named)?;
    }
    check_duplicates(&releases).map_err(|e| named(e.into()))?;
    Ok(releases)
}

/// Splits `todo` into the sources to render and those `reads` holds.
fn cached_sources<'a>(
    snap: &Snapshot,
    todo: &Sources<'a>,
    reads: &Reads<'_>,
) -> Result<(Sources<'a>, Vec<Rendered>), Error> {
    let reader = snap.reader();
    let mut rest = Vec::new();
    let mut found = Vec::new();
    for spec in todo {
        match sources::key(&reader, &snap.root(), spec)? {
            Some(key) => match reads.get(&spec.env, &spec.app, &key) {
                Some(r) => found.push(r),
                None => rest.push(*spec),
            },
            None => {
                reads.unkeyed();
                rest.push(*spec);
            }
        }
    }
    Ok((rest, found))
}

/// The releases to render at each revision. A release is unchanged (and
/// pushed to `unchanged`, sorted) when its app's tree is identical and was
/// not even read, or when its service files are the same git objects and
/// its chart's tree is too.
fn releases_todo<'a>(
    head: &Snapshot,
    filter: &Filter,
    (base_layout, head_layout): (&'a Layout, &'a Layout),
    (settings_same, all_charts_same): (bool, bool),
    charts_same: &dyn Fn(&str) -> bool,
    unchanged: &mut Vec<(String, String)>,
) -> Result<(Vec<&'a ReleaseSpec>, Vec<&'a ReleaseSpec>), Error> {
    // Identical app trees (same settings and charts): unchanged, unread.
    for app in &head_layout.skipped_apps {
        for env in config::env_names(&head.reader(), app, filter)? {
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
    Ok((base_todo, head_todo))
}

/// The raw and Kustomize sources to render at each revision: a source is
/// unchanged (and pushed to `unchanged`) when everything it reads is the
/// same git objects at both, under the same settings.
type Sources<'a> = Vec<&'a config::sources::SourceSpec>;

fn sources_todo<'a>(
    (base, base_layout): (&Snapshot, &'a Layout),
    (head, head_layout): (&Snapshot, &'a Layout),
    settings_same: bool,
    unchanged: &mut Vec<(String, String)>,
) -> Result<(Sources<'a>, Sources<'a>), Error> {
    let (base_reader, head_reader) = (base.reader(), head.reader());
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
    Ok((base_sources_todo, head_sources_todo))
}

/// Checks the head's releases against the other environments of the same
/// apps: the same app in another environment is the usual collision on a
/// shared cluster, so those releases are rendered too (only for this
/// check) when the comparison skipped them.
fn check_with_siblings(
    head: &Snapshot,
    head_layout: &Layout,
    head_releases: &[Rendered],
    charts: &mut ChartCache,
) -> Result<(), Error> {
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
        render_specs(
            head,
            head_layout,
            &siblings,
            charts,
            Need::Optional,
            Hooks::default(),
        )?
    };
    check_shared_clusters(
        head_releases.iter().chain(&sibling_releases),
        &head_layout.settings,
    )?;
    Ok(())
}

/// The fingerprints of the templates of the head's handlebars charts (the
/// repo's and the built-in), compiled now and kept in `charts` for the
/// head's render. Helm charts are not opened (their dependencies may need
/// fetching); a chart that fails to compile is left for the render to report.
fn head_fingerprints(
    head: &Snapshot,
    layout: &config::Layout,
    charts: &mut ChartCache,
) -> std::collections::HashSet<[u8; 32]> {
    let reader = head.reader();
    let mut names: Vec<&str> = layout
        .charts
        .iter()
        .filter(|(_, node)| {
            let meta = reader
                .child(node, "Chart.yaml")
                .ok()
                .flatten()
                .and_then(|f| reader.read_text(&f).ok())
                .unwrap_or_default();
            !super::helm::is_helm_chart(&meta)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if !layout.charts.contains_key(super::chart::BUILTIN_NAME) {
        names.push(super::chart::BUILTIN_NAME);
    }
    let mut out = std::collections::HashSet::new();
    for name in names {
        if let Ok(Some(engine)) = charts.get(head, layout, name, None)
            && let super::Engine::Handlebars(chart) = &*engine
        {
            out.extend(chart.templates_with_fingerprints().map(|(_, f)| *f));
        }
    }
    out
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
