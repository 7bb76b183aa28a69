//! Preview environments: a pull request's head, deployed to a namespace of
//! its own, and removed when the pull request closes.
//!
//! A template in `kdeploy.yaml` (`environments.<template>.from`, see
//! [`crate::config::preview`]) names the environment to copy. Pull request
//! `n` becomes the environment `<template>-pr-<n>` with the record
//! `kdeploy-<template>-pr-<n>`, which carries the pull request's number:
//! deploys of the config repo leave such records alone, `kdeploy preview
//! delete` and `gc` remove them. Everything a preview deploys is namespaced
//! into its own namespace, which it creates and, on the way out, deletes
//! after its contents (so the namespace's finalization is waited for too).

pub mod comment;
mod gc;

pub use gc::{Collected, Reason, collect, gc};

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::apply::record::{self, PreviewOf};
use crate::apply::{self, Options, Report, Target};
use crate::config::preview::Overlay;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::render::{self, State};
use crate::resource::{Origin, Resource, ResourceId};
use crate::source::Snapshot;

/// The annotation on a preview's namespace: whose it is.
pub const ANNOTATION: &str = "kdeploy.io/preview";

/// A preview rendered and made to stay in its namespace.
#[derive(Debug)]
pub struct Preview {
    /// The template, pull request and names.
    pub overlay: Overlay,
    /// Its releases (environment `overlay.env`).
    pub state: State,
    /// What was changed to keep it apart, for the log.
    pub notes: Vec<String>,
}

impl Preview {
    /// The namespaces it deploys into.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .state
            .releases
            .iter()
            .map(|r| self.overlay.namespace_for(&r.release.app))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The record entry this preview's resources carry.
    pub fn of(&self) -> PreviewOf {
        PreviewOf {
            template: self.overlay.template.clone(),
            pull_request: self.overlay.pr,
        }
    }
}

/// Renders pull request `pr`'s preview of `template` at `snapshot` and
/// keeps it in its namespace (see [`isolate`]); validated like any state.
///
/// The template comes from `trusted` settings when given: the action
/// passes the base branch's, so a pull request cannot widen what its own
/// preview may do (its namespace, cluster-scoped objects, its cluster).
///
/// # Errors
/// Render problems, a template that does not exist, cluster-scoped objects
/// the template does not allow, and anything [`crate::validate::check`] finds.
pub fn render(
    snapshot: &Snapshot,
    template: &str,
    pr: u64,
    apps: Option<&str>,
    trusted: Option<&crate::config::Settings>,
) -> Result<Preview, render::Error> {
    let (mut state, overlay) = render::render_preview(snapshot, apps, template, pr, trusted)?;
    let notes = isolate(&mut state, &overlay)?;
    crate::validate::check(&state).map_err(render::Error::Invalid)?;
    Ok(Preview {
        overlay,
        state,
        notes,
    })
}

/// Moves every namespaced object into the preview's namespace, leaves out
/// the Namespaces the copied environment renders (the preview has its own,
/// added here) and refuses cluster-scoped objects unless the template
/// allows them: they would be shared with every environment on the cluster.
///
/// # Errors
/// One problem per refused object, at the release that renders it.
pub fn isolate(state: &mut State, overlay: &Overlay) -> Result<Vec<String>, Diagnostics> {
    let mut problems = Diagnostics::default();
    let mut notes = Vec::new();
    let mut namespaces_added: Vec<String> = Vec::new();
    for r in &mut state.releases {
        let ns = overlay.namespace_for(&r.release.app);
        let mut moved = 0;
        let mut kept = Vec::with_capacity(r.resources.len());
        for mut res in std::mem::take(&mut r.resources) {
            let is_namespace = res.id.group.is_empty() && res.id.kind == "Namespace";
            match &res.id.namespace {
                // The chart's own Namespace of the release: already the
                // preview's name, replaced by the preview's (below).
                _ if is_namespace && res.id.name == ns => continue,
                _ if is_namespace => {
                    notes.push(format!(
                        "left out {} (rendered for {} from {}): a preview deploys into its own namespace {ns}",
                        res.id, r.release.app, overlay.from
                    ));
                    continue;
                }
                None if !overlay.cluster_scoped => {
                    problems.push(
                        Diagnostic::new(
                            Location::file(&r.release.dir),
                            format!(
                                "{} (rendered for {} by {}) is cluster-scoped: preview `{}` would share it with {} and every other environment on the cluster",
                                res.id, r.release.app, res.origin.file, overlay.env, overlay.from
                            ),
                        )
                        .help(format!(
                            "leave it out of previews (e.g. a value the template's `values` switch off), or allow cluster-scoped objects with `environments.{}.clusterScoped: true`",
                            overlay.template
                        )),
                    );
                    continue;
                }
                None => {}
                Some(current) if *current != ns => {
                    res.object["metadata"]["namespace"] = json!(ns);
                    res.id.namespace = Some(ns.clone());
                    moved += 1;
                }
                Some(_) => {}
            }
            kept.push(res);
        }
        if moved > 0 {
            notes.push(format!(
                "{}: {moved} object(s) that name their own namespace moved into {ns}",
                r.release.app
            ));
        }
        if !namespaces_added.contains(&ns) {
            kept.insert(0, namespace_object(&ns, overlay, &r.release.app));
            namespaces_added.push(ns);
        }
        r.resources = kept;
    }
    problems.into_result(notes)
}

/// The preview's Namespace, annotated with whose it is.
fn namespace_object(ns: &str, overlay: &Overlay, app: &str) -> Resource {
    Resource {
        id: ResourceId {
            group: String::new(),
            kind: "Namespace".into(),
            namespace: None,
            name: ns.to_string(),
        },
        api_version: "v1".into(),
        object: json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "annotations": {ANNOTATION: PreviewOf {
                    template: overlay.template.clone(),
                    pull_request: overlay.pr,
                }
                .mark()},
            },
        }),
        origin: Origin {
            env: overlay.env.clone(),
            app: app.to_string(),
            file: crate::config::SETTINGS_FILE.into(),
            document: 0,
            line: 1,
        },
    }
}

/// The Namespace [`isolate`] adds (annotated), not one a chart renders.
fn is_own_namespace(r: &Resource) -> bool {
    r.id.group.is_empty()
        && r.id.kind == "Namespace"
        && r.object["metadata"]["annotations"][ANNOTATION].is_string()
}

/// The error when a preview's namespace exists but is not the preview's.
#[derive(Debug, thiserror::Error)]
#[error(
    "namespace {namespace} exists and is not preview {env}'s (its deploy record does not list it); kdeploy deletes a preview's namespace when the pull request closes, so it never takes over one it did not create: delete it, or change `environments.{template}.namespace`"
)]
pub struct ForeignNamespace {
    /// The namespace.
    pub namespace: String,
    /// The preview's environment.
    pub env: String,
    /// Its template.
    pub template: String,
}

/// Deploys a rendered preview: everything it renders is applied (what the
/// last deploy of this pull request had and this one does not is pruned),
/// then waited for when `opts.wait` says so.
///
/// # Errors
/// A namespace that exists without being the preview's, and every error
/// [`apply::apply`] returns before the first write.
pub async fn deploy(
    client: &kube::Client,
    preview: &Preview,
    repository: &str,
    head_commit: &str,
    opts: &Options,
) -> anyhow::Result<Report> {
    let env = &preview.overlay.env;
    let existing = record::read(client, &opts.record_namespace, env).await?;
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    for ns in preview.namespaces() {
        let listed = existing.as_ref().is_some_and(|r| {
            r.entries
                .keys()
                .any(|id| id.group.is_empty() && id.kind == "Namespace" && id.name == ns)
        });
        let found = api
            .get_opt(&ns)
            .await
            .with_context(|| format!("cannot read namespace {ns}"))?;
        // Made by an earlier deploy of this preview that did not finish.
        let mark = preview.of().mark();
        let annotated = found.as_ref().is_some_and(|n| {
            n.metadata.annotations.as_ref().is_some_and(|a| {
                a.get(ANNOTATION) == Some(&mark)
                    && a.get(REPOSITORY_ANNOTATION).map(String::as_str) == Some(repository)
            })
        });
        if found.is_some() && !listed && !annotated {
            return Err(ForeignNamespace {
                namespace: ns,
                env: env.clone(),
                template: preview.overlay.template.clone(),
            }
            .into());
        }
    }
    // The namespaces say whose preview they are, so that one whose first
    // deploy never finished (and so has no record) can still be removed.
    let stamped: Vec<Resource> = preview
        .state
        .releases
        .iter()
        .flat_map(|r| r.resources.iter())
        .filter(|r| is_own_namespace(r))
        .map(|r| {
            let mut r = r.clone();
            r.object["metadata"]["annotations"][REPOSITORY_ANNOTATION] = json!(repository);
            r
        })
        .collect();
    let all = |_: &str| true;
    let target = Target {
        env: env.clone(),
        repository: repository.to_string(),
        head_commit: head_commit.to_string(),
        head: preview
            .state
            .releases
            .iter()
            .flat_map(|r| r.resources.iter())
            .filter(|r| !is_own_namespace(r))
            .chain(stamped.iter())
            .collect(),
        base: None,
        in_scope: &all,
        preview: Some(preview.of()),
    };
    // A preview is the pull request's own and transient: what its head no
    // longer has goes without asking.
    let opts = Options {
        prune: true,
        deletion_consent: Some("a preview environment".into()),
        ..opts.clone()
    };
    Ok(apply::apply(client, &target, &opts).await?)
}

/// What removing a preview did.
#[derive(Debug)]
pub struct Removed {
    /// The preview's environment.
    pub env: String,
    /// `None` when there was no record: no deploy of the preview finished.
    pub report: Option<Report>,
    /// Without a record: the preview's namespaces (by their annotation)
    /// that were deleted and waited for, with what they held.
    pub namespaces: Vec<String>,
    /// Without a record: namespaces still there when the wait ended.
    pub left: Vec<String>,
}

impl Removed {
    /// True when everything is gone (or there was nothing).
    pub fn succeeded(&self) -> bool {
        self.report.as_ref().is_none_or(Report::succeeded) && self.left.is_empty()
    }
}

/// The annotation naming the repository whose preview a namespace is.
pub const REPOSITORY_ANNOTATION: &str = "kdeploy.io/repository";

/// The namespaces annotated as a preview of `repository`, with the
/// annotation's `template/pr` and their creation time.
pub(crate) async fn preview_namespaces(
    client: &kube::Client,
    repository: &str,
) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .context("cannot list namespaces")?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|ns| {
            let a = ns.metadata.annotations.as_ref()?;
            let of = a.get(ANNOTATION)?.clone();
            (a.get(REPOSITORY_ANNOTATION).map(String::as_str) == Some(repository)).then(|| {
                (
                    ns.metadata.name.clone().unwrap_or_default(),
                    of,
                    ns.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                )
            })
        })
        .collect())
}

/// Deletes namespaces and waits until they are gone (their content goes
/// with them); returns those still there at the deadline.
async fn delete_namespaces(
    client: &kube::Client,
    names: &[String],
    opts: &Options,
) -> anyhow::Result<Vec<String>> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    for name in names {
        match api.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete namespace {name}")),
        }
    }
    let timeout = opts
        .wait
        .as_ref()
        .map_or(Duration::from_secs(600), |w| w.timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut left: Vec<String> = names.to_vec();
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for name in left {
            if api.get_opt(&name).await.ok().flatten().is_some() {
                still.push(name);
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(left)
}

/// Removes pull request `of`'s preview: everything its record lists is
/// deleted (its namespace last), waited for until gone, then the record
/// itself. Without a record (no deploy of it finished), the namespaces
/// annotated as this preview of `repository` are deleted instead.
///
/// # Errors
/// API failures before the first delete; a record that is not a preview's.
pub async fn remove(
    client: &kube::Client,
    of: &PreviewOf,
    repository: &str,
    opts: &Options,
) -> anyhow::Result<Removed> {
    let env = crate::config::preview::env_name(&of.template, of.pull_request);
    let env = env.as_str();
    // Gone means gone: the deletions (the namespace's finalization too)
    // are waited for whatever the deploy's own setting.
    let opts = Options {
        prune: true,
        rollback: false,
        wait: Some(opts.wait.clone().unwrap_or_default()),
        // Closing the pull request is the consent to remove its preview.
        deletion_consent: Some("the pull request was closed".into()),
        ..opts.clone()
    };
    let Some(existing) = record::read(client, &opts.record_namespace, env).await? else {
        let mark = of.mark();
        let namespaces: Vec<String> = preview_namespaces(client, repository)
            .await?
            .into_iter()
            .filter(|(_, m, _)| *m == mark)
            .map(|(n, _, _)| n)
            .collect();
        let left = if opts.dry_run {
            Vec::new()
        } else {
            delete_namespaces(client, &namespaces, &opts).await?
        };
        return Ok(Removed {
            env: env.to_string(),
            report: None,
            namespaces,
            left,
        });
    };
    if existing.preview.is_none() {
        anyhow::bail!(
            "the deploy record of {env} ({}/{}) is not a preview's; refusing to remove an environment of the config repo (remove its directories instead)",
            opts.record_namespace,
            record::name(env)
        );
    }
    let all = |_: &str| true;
    let target = Target {
        env: env.to_string(),
        repository: repository.to_string(),
        head_commit: existing.commit.clone(),
        head: Vec::new(),
        base: None,
        in_scope: &all,
        preview: Some(of.clone()),
    };
    let report = apply::apply(client, &target, &opts).await?;
    if report.succeeded() && !opts.dry_run {
        record::delete(client, &opts.record_namespace, env, &opts).await?;
    }
    Ok(Removed {
        env: env.to_string(),
        report: Some(report),
        namespaces: Vec::new(),
        left: Vec::new(),
    })
}

/// Options of a preview's apply: prune, wait, no rollback (the preview is
/// the pull request's; a failure is reported, not undone).
pub fn apply_options(record_namespace: &str, wait: Option<std::time::Duration>) -> Options {
    Options {
        record_namespace: record_namespace.to_string(),
        wait: wait.map(|timeout| crate::wait::Options {
            timeout,
            ..crate::wait::Options::default()
        }),
        ..Options::default()
    }
}

/// The template to use: the one named, else the only one there is.
///
/// # Errors
/// No template, or several and none named.
pub fn template(settings: &crate::config::Settings, named: Option<&str>) -> anyhow::Result<String> {
    if let Some(t) = named {
        return Ok(t.to_string());
    }
    let all: Vec<&str> = crate::config::preview::templates(settings)
        .map(|(n, _)| n)
        .collect();
    match all.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => anyhow::bail!(
            "kdeploy.yaml declares no preview template: add one, e.g. `environments: {{preview: {{from: staging, namespace: \"pr-{{pr}}\"}}}}`"
        ),
        many => anyhow::bail!(
            "kdeploy.yaml declares several preview templates ({}): name one with --template",
            many.join(", ")
        ),
    }
}

/// The kubeconfig context of a template's previews: the flag's, else the
/// template's `context`, else its `from` environment's.
pub fn context(
    settings: &crate::config::Settings,
    template: &str,
    given: Option<&str>,
) -> Option<String> {
    if let Some(c) = given {
        return Some(c.to_string());
    }
    let t = settings.environments.get(template)?;
    t.context.clone().or_else(|| {
        let from = t.from.as_deref()?;
        settings.environments.get(from)?.context.clone()
    })
}

/// Prints what removing a preview did.
///
/// # Errors
/// Writing to `out`.
pub fn describe_removed(removed: &Removed, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    match &removed.report {
        None if !removed.left.is_empty() => writeln!(
            out,
            "{}: no deploy record; namespace(s) {} deleted but still there at the deadline",
            removed.env,
            removed.left.join(", ")
        ),
        None if !removed.namespaces.is_empty() => writeln!(
            out,
            "{}: no deploy record (no deploy finished); deleted its namespace(s) {} with everything in them, and they are gone",
            removed.env,
            removed.namespaces.join(", ")
        ),
        None => writeln!(out, "{}: no deploy record; nothing to remove", removed.env),
        Some(r) => {
            for id in &r.deleted {
                writeln!(out, "  deleted  {id}")?;
            }
            for f in &r.failed {
                writeln!(out, "  FAILED   {}: {}", f.id, f.error)?;
            }
            for t in r.tracked.iter().filter(|t| !t.ok()) {
                writeln!(out, "  not gone {}: {}", t.id, t.state)?;
            }
            if r.succeeded() {
                writeln!(
                    out,
                    "{}: removed ({} deleted and gone; record deleted)",
                    removed.env,
                    r.deleted.len()
                )
            } else {
                writeln!(
                    out,
                    "{}: removal failed; the record was kept, so running it again retries",
                    removed.env
                )
            }
        }
    }
}
