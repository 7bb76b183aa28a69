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
/// # Errors
/// Render problems, a template that does not exist, cluster-scoped objects
/// the template does not allow, and anything [`crate::validate::check`] finds.
pub fn render(
    snapshot: &Snapshot,
    template: &str,
    pr: u64,
    apps: Option<&str>,
) -> Result<Preview, render::Error> {
    let (mut state, overlay) = render::render_preview(snapshot, apps, template, pr)?;
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
                "annotations": {ANNOTATION: format!("{}/{}", overlay.template, overlay.pr)},
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
        if found.is_some() && !listed {
            return Err(ForeignNamespace {
                namespace: ns,
                env: env.clone(),
                template: preview.overlay.template.clone(),
            }
            .into());
        }
    }
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
            .collect(),
        base: None,
        in_scope: &all,
        preview: Some(preview.of()),
    };
    let opts = Options {
        prune: true,
        ..opts.clone()
    };
    Ok(apply::apply(client, &target, &opts).await?)
}

/// What removing a preview did.
#[derive(Debug)]
pub struct Removed {
    /// The preview's environment.
    pub env: String,
    /// `None` when there was no record: nothing of the preview was deployed.
    pub report: Option<Report>,
}

impl Removed {
    /// True when everything is gone (or there was nothing).
    pub fn succeeded(&self) -> bool {
        self.report.as_ref().is_none_or(Report::succeeded)
    }
}

/// Removes the preview `env`: everything its record lists is deleted (its
/// namespace last), waited for until gone, then the record itself.
///
/// # Errors
/// API failures before the first delete; a record that is not a preview's.
pub async fn remove(
    client: &kube::Client,
    env: &str,
    repository: &str,
    opts: &Options,
) -> anyhow::Result<Removed> {
    let Some(existing) = record::read(client, &opts.record_namespace, env).await? else {
        return Ok(Removed {
            env: env.to_string(),
            report: None,
        });
    };
    let Some(of) = existing.preview.clone() else {
        anyhow::bail!(
            "the deploy record of {env} ({}/{}) is not a preview's; refusing to remove an environment of the config repo (remove its directories instead)",
            opts.record_namespace,
            record::name(env)
        );
    };
    let all = |_: &str| true;
    let target = Target {
        env: env.to_string(),
        repository: repository.to_string(),
        head_commit: existing.commit.clone(),
        head: Vec::new(),
        base: None,
        in_scope: &all,
        preview: Some(of),
    };
    // Gone means gone: the deletions (the namespace's finalization too)
    // are waited for whatever the deploy's own setting.
    let opts = Options {
        prune: true,
        rollback: false,
        wait: Some(opts.wait.clone().unwrap_or_default()),
        ..opts.clone()
    };
    let report = apply::apply(client, &target, &opts).await?;
    if report.succeeded() && !opts.dry_run {
        record::delete(client, &opts.record_namespace, env, &opts).await?;
    }
    Ok(Removed {
        env: env.to_string(),
        report: Some(report),
    })
}

/// Why `gc` removes a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Its pull request is closed (or gone).
    Closed(String),
    /// Not deployed for longer than `--older-than`.
    Stale(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Closed(s) | Reason::Stale(s) => f.write_str(s),
        }
    }
}

/// One preview `gc` looked at.
#[derive(Debug)]
pub struct Collected {
    /// The preview's environment.
    pub env: String,
    /// Why it goes; `None` when it stays.
    pub reason: Option<Reason>,
    /// What removing it did (not set with `dry_run` or when it stays).
    pub removed: Option<Removed>,
}

/// Asks GitHub whether a pull request is closed: `None` when it cannot say.
pub type PullState<'a> =
    &'a (dyn Fn(u64) -> futures::future::BoxFuture<'a, anyhow::Result<Option<String>>> + Sync);

/// Removes the previews of this repository whose pull request is closed
/// (when `pull_state` is given) or that were last deployed longer than
/// `older_than` ago; `dry_run` only says which.
///
/// # Errors
/// API failures listing records or asking GitHub.
pub async fn gc(
    client: &kube::Client,
    repository: &str,
    pull_state: Option<PullState<'_>>,
    older_than: Option<Duration>,
    opts: &Options,
) -> anyhow::Result<Vec<Collected>> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut out = Vec::new();
    for (env, rec) in record::list(client, &opts.record_namespace, opts).await? {
        let Some(of) = &rec.preview else { continue };
        if !rec.repository.is_empty() && rec.repository != repository {
            continue;
        }
        let mut reason = None;
        if let Some(ask) = pull_state {
            match ask(of.pull_request).await? {
                Some(state) if state == "open" => {}
                Some(state) => {
                    reason = Some(Reason::Closed(format!(
                        "pull request #{} is {state}",
                        of.pull_request
                    )));
                }
                None => {
                    reason = Some(Reason::Closed(format!(
                        "pull request #{} does not exist",
                        of.pull_request
                    )));
                }
            }
        }
        if reason.is_none()
            && let Some(limit) = older_than
        {
            let at: Option<k8s_openapi::jiff::Timestamp> =
                rec.deployed_at.as_deref().and_then(|t| t.parse().ok());
            let age: Option<Duration> = at.and_then(|t| now.duration_since(t).try_into().ok());
            match age {
                Some(age) if age > limit => {
                    reason = Some(Reason::Stale(format!(
                        "last deployed {} ago (--older-than {})",
                        humanize(age.as_secs()),
                        humanize(limit.as_secs())
                    )));
                }
                Some(_) => {}
                None => {
                    reason = Some(Reason::Stale(
                        "its record says not when it was deployed".into(),
                    ));
                }
            }
        }
        let removed = match (&reason, opts.dry_run) {
            (Some(_), false) => Some(remove(client, &env, repository, opts).await?),
            _ => None,
        };
        out.push(Collected {
            env,
            reason,
            removed,
        });
    }
    Ok(out)
}

fn humanize(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
