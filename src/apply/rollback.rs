//! Rollback after a failed deploy: the previous content of what the deploy
//! applied or deleted is applied again, what it created is deleted, and
//! that is tracked too.

use std::collections::{BTreeMap, HashMap};

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};

use crate::resource::{Resource, ResourceId};

use super::*;

/// The previous state's resources of the target's environment: the base
/// when it is that commit, else the commit rendered from `opts.repo_dir`.
pub(super) fn previous_resources(
    target: &Target<'_>,
    opts: &Options,
    commit: &str,
) -> Result<Vec<Resource>, String> {
    if let Some((c, resources)) = &target.base
        && c == commit
    {
        return Ok(resources.iter().map(|r| (*r).clone()).collect());
    }
    let dir = opts
        .repo_dir
        .as_ref()
        .ok_or("no config repo to render the previous state from")?;
    let snapshot =
        crate::source::Snapshot::open(dir, &crate::source::Revision::Commit(commit.to_string()))
            .map_err(|e| e.to_string())?;
    let filter = crate::config::Filter::new(Some(&target.env), None).map_err(|e| e.to_string())?;
    let state = crate::render::render(&snapshot, &filter).map_err(|e| e.to_string())?;
    Ok(state
        .releases
        .into_iter()
        .filter(|r| (target.in_scope)(&r.release.app))
        .flat_map(|r| r.resources)
        .collect())
}

/// Puts back the previous content of what a failed deploy applied or
/// deleted, deletes what it created, and waits for that too.
pub(super) async fn rollback(
    client: &kube::Client,
    kinds: &mut Kinds,
    target: &Target<'_>,
    opts: &Options,
    report: &Report,
    previous: &BTreeMap<ResourceId, Entry>,
    previous_commit: Option<String>,
) -> Rollback {
    let mut rb = Rollback {
        restored: Vec::new(),
        deleted: Vec::new(),
        failed: Vec::new(),
        tracked: Vec::new(),
        skipped: None,
    };
    let before: Vec<Resource> = match &previous_commit {
        Some(c) => match previous_resources(target, opts, c) {
            Ok(r) => r,
            Err(e) => {
                rb.skipped = Some(format!("cannot render the previous state at {c}: {e}"));
                return rb;
            }
        },
        None => Vec::new(),
    };
    let by_id: HashMap<String, &Resource> = before.iter().map(|r| (r.id.to_string(), r)).collect();
    let touched: Vec<String> = report
        .applied
        .iter()
        .chain(report.deleted.iter())
        .cloned()
        .collect();
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = false;
    let mut to_track = Vec::new();
    let global = opts.wait.as_ref().map(|w| w.timeout).unwrap_or_default();
    for id in touched {
        let created = target
            .head
            .iter()
            .find(|r| r.id.to_string() == id)
            .filter(|r| !previous.contains_key(&r.id));
        match (by_id.get(&id), created) {
            (Some(old), _) => {
                let Ok(Some((ar, caps))) =
                    kinds.resolve(&old.api_version, &old.id.kind, opts).await
                else {
                    continue;
                };
                let api = api_for(client, &ar, &caps, old.id.namespace.as_deref());
                let result = match serde_json::from_value::<DynamicObject>(old.object.clone()) {
                    Ok(obj) => {
                        let patch = Patch::Apply(&obj);
                        with_retry(opts, || api.patch(&old.id.name, &params, &patch))
                            .await
                            .map(|_| ())
                    }
                    Err(e) => Err(kube::Error::SerdeError(e)),
                };
                match result {
                    Ok(()) => {
                        rb.restored.push(id.clone());
                        to_track.extend(crate::wait::Target::applied(
                            old,
                            &ar,
                            matches!(caps.scope, Scope::Namespaced),
                            opts.wait.as_ref(),
                            global,
                        ));
                    }
                    Err(e) => rb.failed.push(Failure {
                        id,
                        app: old.origin.app.clone(),
                        source: old.origin.file.clone(),
                        error: api_message(&e),
                    }),
                }
            }
            (None, Some(new)) => {
                let Ok(Some((ar, caps))) =
                    kinds.resolve(&new.api_version, &new.id.kind, opts).await
                else {
                    continue;
                };
                let api = api_for(client, &ar, &caps, new.id.namespace.as_deref());
                let dp = DeleteParams {
                    propagation_policy: Some(opts.propagation.clone()),
                    ..DeleteParams::default()
                };
                match with_retry(opts, || api.delete(&new.id.name, &dp)).await {
                    Ok(_) => rb.deleted.push(id),
                    Err(kube::Error::Api(s)) if s.code == 404 => rb.deleted.push(id),
                    Err(e) => rb.failed.push(Failure {
                        id,
                        app: new.origin.app.clone(),
                        source: new.origin.file.clone(),
                        error: api_message(&e),
                    }),
                }
            }
            (None, None) => {}
        }
    }
    if let Some(w) = &opts.wait {
        let mut progress = Vec::new();
        rb.tracked = crate::wait::track(client, to_track, w, &mut progress).await;
    }
    rb
}

/// The values of the Secrets being deployed, decoded: what logs and events
/// shown in reports must never contain.
pub(super) fn secret_values(resources: &[&Resource]) -> Vec<String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.id.group.is_empty() && r.id.kind == "Secret")
    {
        for v in r.object["stringData"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            out.extend(v.as_str().map(str::to_string));
        }
        for v in r.object["data"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            if let Some(decoded) = v
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
            {
                out.push(decoded);
            }
        }
    }
    out
}
