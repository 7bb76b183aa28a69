//! Running deploy hooks during an apply ([`crate::hooks`]): each one fresh
//! (the previous Job deleted and gone first), then waited for; its outcome,
//! and for a failure its events and log tail, go into the report.

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::Scope;

use super::{FIELD_MANAGER, Failure, Kinds, Options, Report, api_for, api_message, with_retry};
use crate::hooks::Phase;
use crate::resource::Resource;

/// How long the previous run's Job may take to go.
const GONE_WITHIN: Duration = Duration::from_secs(120);

/// Runs `hooks` of `phase` one after another; stops at the first failure
/// (recorded in `report.failed`, the rest as not attempted).
pub(super) async fn run(
    client: &kube::Client,
    kinds: &mut Kinds,
    hooks: &[&Resource],
    phase: Phase,
    opts: &Options,
    redact: Vec<String>,
    report: &mut Report,
) {
    if opts.dry_run {
        for h in hooks {
            report.hooks.push(format!("{phase} {}: would run", h.id));
        }
        return;
    }
    let wait = crate::wait::Options {
        redact,
        ..opts.wait.clone().unwrap_or_default()
    };
    for (i, h) in hooks.iter().enumerate() {
        if let Err(error) = run_one(client, kinds, h, phase, opts, &wait, report).await {
            report.failed.push(Failure {
                id: h.id.to_string(),
                app: h.origin.app.clone(),
                source: format!("{phase} hook ({})", h.origin.file),
                error,
            });
        }
        if !report.failed.is_empty() {
            report
                .not_attempted
                .extend(hooks[i + 1..].iter().map(|h| h.id.to_string()));
            return;
        }
    }
}

async fn run_one(
    client: &kube::Client,
    kinds: &mut Kinds,
    h: &Resource,
    phase: Phase,
    opts: &Options,
    wait: &crate::wait::Options,
    report: &mut Report,
) -> Result<(), String> {
    let (ar, caps) = match kinds.resolve(&h.api_version, &h.id.kind, opts).await {
        Ok(Some(x)) => x,
        Ok(None) => return Err(format!("kind {} is not served by the cluster", h.id.kind)),
        Err(e) => return Err(api_message(&e)),
    };
    let api: Api<DynamicObject> = api_for(client, &ar, &caps, h.id.namespace.as_deref());
    // The previous run's Job: Jobs are immutable, and a hook runs fresh.
    let params = DeleteParams::background();
    match with_retry(opts, || api.delete(&h.id.name, &params)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(format!(
                "cannot delete the previous run: {}",
                api_message(&e)
            ));
        }
    }
    let started = Instant::now();
    loop {
        match with_retry(opts, || api.get_opt(&h.id.name)).await {
            Ok(None) => break,
            Ok(Some(_)) if started.elapsed() < GONE_WITHIN => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(_)) => {
                return Err(format!(
                    "the previous run was still there after {}s (a finalizer?)",
                    GONE_WITHIN.as_secs()
                ));
            }
            Err(e) => return Err(api_message(&e)),
        }
    }
    let obj: DynamicObject = serde_json::from_value(h.object.clone()).map_err(|e| e.to_string())?;
    let patch = Patch::Apply(&obj);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    with_retry(opts, || api.patch(&h.id.name, &apply, &patch))
        .await
        .map_err(|e| api_message(&e))?;
    let Some(target) = crate::wait::Target::applied(
        h,
        &ar,
        matches!(caps.scope, Scope::Namespaced),
        Some(wait),
        wait.timeout,
    ) else {
        return Ok(());
    };
    let mut progress = Vec::new();
    let tracked = crate::wait::track(client, vec![target], wait, &mut progress).await;
    report
        .progress
        .push_str(&String::from_utf8_lossy(&progress));
    for t in tracked {
        let state = match &t.state {
            crate::wait::State::Ready => "complete".to_string(),
            crate::wait::State::Waiting(w) => format!("still {w}"),
            crate::wait::State::Failed(f) => format!("failed: {f}"),
        };
        report.hooks.push(format!(
            "{phase} {}: {state}{} ({:.1}s)",
            t.id,
            if t.timed_out { ", timed out" } else { "" },
            t.seconds
        ));
        let ok = t.ok();
        let details = t.details.clone();
        report.tracked.push(t);
        if !ok {
            let mut error = format!("the {phase} hook did not complete: {state}");
            for d in details.iter().take(12) {
                error.push_str(&format!("\n  {d}"));
            }
            if phase == Phase::PreDeploy {
                error.push_str("\nthe workloads were not changed");
            }
            return Err(error);
        }
    }
    Ok(())
}
