//! Writing the resources of a deploy: server-side apply in stage order
//! (change groups, [`crate::order`]) and kind order, a stage's
//! `kdeploy.io/wait` resources ready before the next, pre-deploy hooks
//! before the first workload, new CRDs established before their objects.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{ApiResource, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;

use super::hooks;
use super::preflight::{namespace_created_by_plan, wait_established};
use super::rollback::secret_values;
use super::{
    FIELD_MANAGER, Failure, Kinds, Options, Report, Target, api_for, api_message, with_retry,
};
use crate::hooks::Phase;
use crate::resource::Resource;

/// What writing needs from the deploy.
pub(super) struct Writes<'a, 'r> {
    pub client: &'a kube::Client,
    pub target: &'a Target<'r>,
    pub opts: &'a Options,
    /// Pre-deploy hooks to run before the first workload.
    pub pre: &'a [&'r Resource],
    /// The readiness timeout of the deploy.
    pub global_timeout: Duration,
}

/// Writes `to_apply`; stops at the first failed stage (the rest is
/// reported as not attempted). Returns true when the pre-deploy hooks ran.
pub(super) async fn stages<'r>(
    w: &Writes<'_, 'r>,
    kinds: &mut Kinds,
    to_apply: Vec<&'r Resource>,
    report: &mut Report,
    to_track: &mut Vec<crate::wait::Target>,
) -> bool {
    let (client, target, opts, global_timeout) = (w.client, w.target, w.opts, w.global_timeout);
    // Change groups (kdeploy.io/group, apply-after) order stages; the kind
    // order holds within each. Validation refused bad groups before this.
    let stages = crate::order::stages(&target.head).unwrap_or_default();
    let mut groups: BTreeMap<(usize, u8), Vec<&Resource>> = BTreeMap::new();
    for r in to_apply {
        groups.entry(stages.key(r)).or_default().push(r);
    }
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if opts.force_conflicts {
        params = params.force();
    }
    params.dry_run = opts.dry_run;
    let group_list: Vec<((usize, u8), Vec<&Resource>)> = groups.into_iter().collect();
    // Resources marked kdeploy.io/wait in the stage being applied.
    let mut stage_waits: Vec<crate::wait::Target> = Vec::new();
    let mut pre_done = false;
    for (i, ((_, rank), group)) in group_list.iter().enumerate() {
        // Pre-deploy hooks run once config and Services are written, before
        // the first workload changes.
        if !pre_done && *rank >= 10 && report.failed.is_empty() {
            pre_done = true;
            hooks::run(
                client,
                kinds,
                w.pre,
                Phase::PreDeploy,
                opts,
                secret_values(&target.head),
                report,
            )
            .await;
        }
        if !report.failed.is_empty() {
            report.not_attempted.extend(
                group_list[i..]
                    .iter()
                    .flat_map(|(_, g)| g.iter().map(|r| r.id.to_string())),
            );
            break;
        }
        let mut jobs = Vec::new();
        for r in group {
            match kinds.resolve(&r.api_version, &r.id.kind, opts).await {
                Ok(Some((ar, caps))) => jobs.push((*r, ar, caps)),
                Ok(None) => report.failed.push(Failure {
                    app: r.origin.app.clone(),
                    id: r.id.to_string(),
                    source: r.origin.file.clone(),
                    error: format!(
                        "kind {} is not served by the cluster (its CRD is not Established?)",
                        r.id.kind
                    ),
                }),
                Err(e) => report.failed.push(Failure {
                    app: r.origin.app.clone(),
                    id: r.id.to_string(),
                    source: r.origin.file.clone(),
                    error: api_message(&e),
                }),
            }
        }
        let params = &params;
        for (r, ar, caps) in jobs.iter().filter(|(r, _, _)| crate::order::waits(r)) {
            let explicit = opts.wait.clone().unwrap_or_default();
            stage_waits.extend(crate::wait::Target::applied(
                r,
                ar,
                matches!(caps.scope, Scope::Namespaced),
                Some(&explicit),
                global_timeout.max(explicit.timeout),
            ));
        }
        for (r, ar, caps) in &jobs {
            to_track.extend(crate::wait::Target::applied(
                r,
                ar,
                matches!(caps.scope, Scope::Namespaced),
                opts.wait.as_ref(),
                global_timeout,
            ));
        }
        // Unordered: a slow write must not hold a slot the ones finished
        // behind it could use; the report keeps the group's order.
        type Written<'r> = (usize, &'r Resource, Result<Option<Value>, kube::Error>);
        let mut results: Vec<Written<'_>> = futures::stream::iter(jobs.into_iter().enumerate())
            .map(|(at, (r, ar, caps))| async move {
                let result = apply_one(client, r, &ar, &caps, params, opts).await;
                (at, r, result)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        results.sort_by_key(|(at, _, _)| *at);
        for (_, r, result) in results {
            match result {
                Ok(stored) => {
                    if let Some(stored) = stored {
                        let fields = super::fidelity::mismatches(r, &stored);
                        report.fidelity.add(r, fields);
                    }
                    report.applied.push(r.id.to_string());
                }
                // A dry run cannot create the namespace the plan creates, so
                // the server cannot validate what goes into it: say so
                // instead of failing (the weakness of `kubectl diff`).
                Err(kube::Error::Api(s))
                    if opts.dry_run && s.code == 404 && namespace_created_by_plan(target, r) =>
                {
                    report.applied.push(format!(
                        "{} (in a namespace the plan creates: not validated by the server)",
                        r.id
                    ));
                }
                Err(e) => report.failed.push(Failure {
                    app: r.origin.app.clone(),
                    id: r.id.to_string(),
                    source: r.origin.file.clone(),
                    error: api_message(&e),
                }),
            }
        }
        // Custom resources of a new CRD need it Established and rediscovered.
        for r in group
            .iter()
            .filter(|r| r.id.kind == "CustomResourceDefinition" && !opts.dry_run)
        {
            if report.failed.iter().any(|f| f.id == r.id.to_string()) {
                continue;
            }
            if let Err(e) = wait_established(client, &r.id.name, opts).await {
                report.failed.push(Failure {
                    app: r.origin.app.clone(),
                    id: r.id.to_string(),
                    source: r.origin.file.clone(),
                    error: e,
                });
            }
            kinds.forget(r.object["spec"]["group"].as_str().unwrap_or(""));
        }
        // The stage ends: what it marked kdeploy.io/wait must be ready
        // before the next stage starts.
        let stage_ends = group_list
            .get(i + 1)
            .is_none_or(|((next, _), _)| *next != group_list[i].0.0);
        if stage_ends && !stage_waits.is_empty() && !opts.dry_run && report.failed.is_empty() {
            let waits = std::mem::take(&mut stage_waits);
            let mut progress = Vec::new();
            let w = opts.wait.clone().unwrap_or_default();
            let w = crate::wait::Options {
                redact: secret_values(&target.head),
                ..w
            };
            for t in crate::wait::track(client, waits, &w, &mut progress).await {
                if !t.ok() {
                    report.failed.push(Failure {
                        app: t.app.clone(),
                        id: t.id.clone(),
                        source: "kdeploy.io/wait".into(),
                        error: format!(
                            "not ready ({}{}), so the stages after it were not applied{}",
                            t.state,
                            if t.timed_out { ", timed out" } else { "" },
                            t.details
                                .first()
                                .map(|d| format!(": {d}"))
                                .unwrap_or_default()
                        ),
                    });
                }
                report.tracked.push(t);
            }
            report
                .progress
                .push_str(&String::from_utf8_lossy(&progress));
        }
    }
    pre_done
}

/// One server-side apply of `r`'s object as rendered. The object goes out
/// as it is, without a round trip through `DynamicObject`: the same request
/// as `Api::patch`, with less of the client's work per write. The answer,
/// the object as stored, comes back as JSON for [`super::fidelity`]; a dry
/// run's is checked and dropped (nothing was stored).
async fn apply_one(
    client: &kube::Client,
    r: &Resource,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    params: &PatchParams,
    opts: &Options,
) -> Result<Option<Value>, kube::Error> {
    let api = api_for(client, ar, caps, r.id.namespace.as_deref());
    let request = kube::core::Request::new(api.resource_url());
    let patch = Patch::Apply(&r.object);
    with_retry(opts, || async {
        let req = request
            .patch(&r.id.name, params, &patch)
            .map_err(kube::Error::BuildRequest)?;
        if params.dry_run {
            client
                .request::<serde::de::IgnoredAny>(req)
                .await
                .map(|_| None)
        } else {
            client.request::<Value>(req).await.map(Some)
        }
    })
    .await
}
