//! Immutable fields before the first write. The plan warns from the two
//! revisions; here the API server decides: every changed resource of a
//! kind with immutable fields is applied as a server-side dry run first.
//! A refusal for an immutable field stops the deploy before any write,
//! unless the resource asks to be replaced (`kdeploy.io/update-strategy:
//! replace`, as kapp's fallback-on-replace): it is then deleted, its
//! deletion waited for, and created again by the apply.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};

use crate::resource::Resource;

use super::*;

/// The annotation that lets kdeploy delete and re-create a resource whose
/// immutable fields change.
pub const UPDATE_STRATEGY: &str = "kdeploy.io/update-strategy";

pub(crate) fn wants_replace(r: &Resource) -> bool {
    r.object["metadata"]["annotations"][UPDATE_STRATEGY] == "replace"
}

/// Dry-runs the updates of kinds with immutable fields; returns the
/// resources to replace, or the preflight error listing the refusals.
pub(super) async fn immutable_changes<'r>(
    client: &kube::Client,
    kinds: &mut Kinds,
    target: &Target<'_>,
    to_apply: &[&'r Resource],
    opts: &Options,
) -> Result<Vec<&'r Resource>, Error> {
    let mut replace = Vec::new();
    let mut problems = Vec::new();
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if opts.force_conflicts {
        params = params.force();
    }
    params.dry_run = true;
    // Resolve kinds first (discovery is cached in `kinds`), then dry-run
    // with the apply's concurrency.
    let mut jobs = Vec::new();
    for r in to_apply {
        if !crate::plan::warnings::has_immutable_fields(&r.id.group, &r.id.kind) {
            continue;
        }
        if let Ok(Some((ar, caps))) = kinds.resolve(&r.api_version, &r.id.kind, opts).await {
            jobs.push((*r, ar, caps));
        } // the apply reports kinds it cannot resolve
    }
    let params = &params;
    let refused: Vec<(&Resource, String)> = futures::stream::iter(jobs)
        .map(|(r, ar, caps)| async move {
            let api = api_for(client, &ar, &caps, r.id.namespace.as_deref());
            let obj = serde_json::from_value::<DynamicObject>(r.object.clone()).ok()?;
            let patch = Patch::Apply(&obj);
            match with_retry(opts, || api.patch(&r.id.name, params, &patch)).await {
                Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("immutable") => {
                    Some((r, s.message))
                }
                // Anything else (a namespace the plan creates, a conflict)
                // is the apply's to report.
                _ => None,
            }
        })
        .buffered(opts.concurrency.max(1))
        .filter_map(|x| async move { x })
        .collect()
        .await;
    for (r, message) in refused {
        if wants_replace(r) {
            replace.push(r);
        } else {
            problems.push(format!(
                "{} ({}): {message}; the API server cannot change this in place: set the annotation `{UPDATE_STRATEGY}: replace` on it to delete and re-create it, or keep the old value",
                r.id, r.origin.file
            ));
        }
    }
    if problems.is_empty() {
        Ok(replace)
    } else {
        Err(Error::Preflight {
            env: target.env.clone(),
            problems,
        })
    }
}

/// Deletes `r` (foreground: its dependents first) and waits until it is
/// gone, so that the apply creates it anew.
pub(super) async fn delete_for_replace(
    client: &kube::Client,
    kinds: &mut Kinds,
    r: &Resource,
    opts: &Options,
    timeout: Duration,
) -> Result<(), String> {
    let (ar, caps) = match kinds.resolve(&r.api_version, &r.id.kind, opts).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(format!("kind {} is not served", r.id.kind)),
        Err(e) => return Err(api_message(&e)),
    };
    let api = api_for(client, &ar, &caps, r.id.namespace.as_deref());
    let dp = DeleteParams::foreground();
    match with_retry(opts, || api.delete(&r.id.name, &dp)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(format!("deleting it to replace it: {}", api_message(&e))),
    }
    let start = Instant::now();
    loop {
        match with_retry(opts, || api.get_opt(&r.id.name)).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if start.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(_)) => {
                return Err(format!(
                    "deleted to replace it, but still there after {}s (a finalizer?)",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(api_message(&e)),
        }
    }
}
