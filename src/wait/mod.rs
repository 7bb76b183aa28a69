//! Waiting until what was applied really runs, and saying why when not.
//!
//! Each workload is watched (kube-runtime's `watch_object`, which relists
//! after expired watches) and judged by the rules `kubectl rollout status`
//! uses; the pods of a Deployment's newest ReplicaSet are checked on the side
//! so a rollout that cannot succeed (ImagePullBackOff, CrashLoopBackOff,
//! CreateContainerConfigError, ...) fails early instead of at the timeout.
//! Deleted resources are watched until they are gone. Everything runs
//! concurrently under one deadline; a resource may shorten or lengthen its
//! own with the annotation `kdeploy.io/timeout` (e.g. `15m`).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::resource::{Resource, ResourceId};

mod status;

use status::rule;
pub use status::*;

/// Annotation overriding the timeout of one resource.
pub const TIMEOUT_ANNOTATION: &str = "kdeploy.io/timeout";

/// How to wait.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline for everything (the `timeout` input).
    pub timeout: Duration,
    /// A pod failure reason must be seen this many times (per replica
    /// checked) before the rollout is declared failed.
    pub failure_threshold: u32,
    /// How often pods are checked.
    pub pod_check: Duration,
    /// Values never to show (Secret values of the deployed state): scrubbed
    /// from container logs and events before they reach any report.
    pub redact: Vec<String>,
    /// Wait until `LoadBalancer` Services have an address.
    pub load_balancers: bool,
    /// Custom kinds (`group/Kind`, or `*` for all) whose objects must reach a
    /// `Ready=True` condition when they report conditions.
    pub ready_condition_kinds: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(600),
            failure_threshold: 2,
            pod_check: Duration::from_secs(2),
            redact: Vec::new(),
            load_balancers: false,
            ready_condition_kinds: Vec::new(),
        }
    }
}

/// What happened to one resource.
#[derive(Debug, Clone, Serialize)]
pub struct Tracked {
    /// `apps/Deployment shop/api`.
    pub id: String,
    /// App of the resource.
    pub app: String,
    /// `applied` or `deleted`.
    pub action: &'static str,
    /// Final state.
    pub state: State,
    /// True when the deadline passed first.
    pub timed_out: bool,
    /// Seconds from the start of tracking to the final state.
    pub seconds: f64,
    /// Evidence for a failure: recent events and the failing container's
    /// last log lines (Secret values scrubbed); notes when it could not be read.
    pub details: Vec<String>,
}

impl Tracked {
    /// True for a resource that is where it should be.
    pub fn ok(&self) -> bool {
        self.state == State::Ready && !self.timed_out
    }
}

/// Something to wait for.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its identity.
    pub id: ResourceId,
    /// Its app.
    pub app: String,
    /// API resource for the dynamic client.
    pub api: ApiResource,
    /// Namespaced?
    pub namespaced: bool,
    /// The deadline of this resource (annotation or global).
    pub timeout: Duration,
    /// Wait until it is gone instead of ready.
    pub deleted: bool,
}

impl Target {
    /// The readiness target of an applied resource, when `opts` tracks its kind.
    pub fn applied(
        res: &Resource,
        api: &ApiResource,
        namespaced: bool,
        opts: Option<&Options>,
        default_timeout: Duration,
    ) -> Option<Target> {
        opts.is_some_and(|o| needs_tracking(&res.id, false, o))
            .then(|| Target {
                id: res.id.clone(),
                app: res.origin.app.clone(),
                api: api.clone(),
                namespaced,
                timeout: timeout_of(&res.object, default_timeout),
                deleted: false,
            })
    }
}

/// The timeout of a resource: its annotation when valid, else `default`.
pub fn timeout_of(object: &Value, default: Duration) -> Duration {
    object["metadata"]["annotations"][TIMEOUT_ANNOTATION]
        .as_str()
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(default)
}

/// Which targets need watching at all.
pub fn needs_tracking(id: &ResourceId, deleted: bool, opts: &Options) -> bool {
    deleted || rule(&id.group, &id.kind, opts).is_some()
}

fn api(client: &kube::Client, t: &Target) -> Api<DynamicObject> {
    match (t.namespaced, t.id.namespace.as_deref()) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &t.api),
        _ => Api::all_with(client.clone(), &t.api),
    }
}

/// A fatal container problem and where it is.
struct PodProblem {
    key: String,
    detail: String,
    namespace: String,
    pod: String,
    container: String,
}

/// Fatal pod problems of a Deployment's newest ReplicaSet. `Err` when the
/// pods cannot be read (RBAC): readiness is then judged without causes.
async fn deployment_pod_problem(
    client: &kube::Client,
    d: &Value,
) -> Result<Option<PodProblem>, String> {
    let (Some(ns), Some(labels)) = (
        d["metadata"]["namespace"].as_str(),
        d["spec"]["selector"]["matchLabels"].as_object(),
    ) else {
        return Ok(None);
    };
    let selector: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let forbidden = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 403 => Err(format!(
            "cannot read ReplicaSets/Pods in {ns} ({}): readiness is reported without causes",
            s.message
        )),
        _ => Ok(None),
    };
    let rs_api: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), ns);
    let sets = match rs_api
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
    {
        Ok(s) => s,
        Err(e) => return forbidden(e),
    };
    let newest = sets.items.iter().max_by_key(|rs| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    });
    let Some(hash) = newest.and_then(|rs| {
        rs.metadata
            .labels
            .as_ref()?
            .get("pod-template-hash")
            .cloned()
    }) else {
        return Ok(None);
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let list = match pods
        .list(
            &ListParams::default()
                .labels(&format!("{},pod-template-hash={hash}", selector.join(","))),
        )
        .await
    {
        Ok(l) => l,
        Err(e) => return forbidden(e),
    };
    Ok(list
        .items
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .find_map(|p| {
            let (key, detail) = pod_problem(&p)?;
            let container = p["status"]["containerStatuses"]
                .as_array()
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["state"]["waiting"]["reason"].is_string())
                })
                .and_then(|c| c["name"].as_str())
                .unwrap_or("")
                .to_string();
            Some(PodProblem {
                key,
                detail,
                namespace: ns.to_string(),
                pod: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                container,
            })
        }))
}

/// Replaces every value in `redact` by a marker.
fn scrub(text: &str, redact: &[String]) -> String {
    let mut out = text.to_string();
    for secret in redact.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret.as_str(), "<redacted>");
    }
    out
}

/// The last events of a failing pod and its container's last log lines,
/// bounded and scrubbed; a note instead when they cannot be read.
async fn evidence(client: &kube::Client, p: &PodProblem, redact: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), &p.namespace);
    match events
        .list(&ListParams::default().fields(&format!("involvedObject.name={}", p.pod)))
        .await
    {
        Ok(list) => {
            let mut items: Vec<_> = list
                .items
                .iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(p.pod.as_str()))
                .collect();
            items.sort_by_key(|e| {
                e.metadata
                    .resource_version
                    .clone()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            });
            for e in items.iter().rev().take(5).rev() {
                out.push(scrub(
                    &format!(
                        "event {} {}: {}",
                        e.type_.as_deref().unwrap_or(""),
                        e.reason.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("")
                    ),
                    redact,
                ));
            }
        }
        Err(e) => out.push(format!(
            "events of pod {} not readable: {}",
            p.pod,
            crate::cluster::api_message(&e)
        )),
    }
    if !p.container.is_empty() && p.key == "CrashLoopBackOff" {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(client.clone(), &p.namespace);
        let params = kube::api::LogParams {
            container: Some(p.container.clone()),
            previous: true,
            tail_lines: Some(20),
            limit_bytes: Some(8192),
            ..Default::default()
        };
        match pods.logs(&p.pod, &params).await {
            Ok(log) => {
                out.push(format!("last log lines of {}/{}:", p.pod, p.container));
                out.extend(log.lines().map(|l| format!("  {}", scrub(l, redact))));
            }
            Err(e) => out.push(format!(
                "logs of {}/{} not readable: {}",
                p.pod,
                p.container,
                crate::cluster::api_message(&e)
            )),
        }
    }
    out
}

/// Watches one target until ready, failed, gone or out of time; sends a
/// progress line on every change of state.
async fn track_one(
    client: kube::Client,
    t: Target,
    opts: Options,
    started: Instant,
    progress: mpsc::UnboundedSender<String>,
) -> Tracked {
    let judge = rule(&t.id.group, &t.id.kind, &opts);
    let api = api(&client, &t);
    let mut stream = kube::runtime::watcher::watch_object(api, &t.id.name).boxed();
    let mut last: Option<State> = None;
    let mut strikes: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut pod_check = tokio::time::interval(opts.pod_check);
    let mut current: Option<Value> = None;
    let mut details: Vec<String> = Vec::new();
    let mut pods_readable = true;
    let deadline = tokio::time::sleep(t.timeout);
    tokio::pin!(deadline);
    let send = |state: &State| {
        let text = match state {
            State::Ready if t.deleted => "deleted".to_string(),
            State::Ready => "ready".to_string(),
            State::Waiting(w) => w.clone(),
            State::Failed(f) => format!("FAILED: {f}"),
        };
        let _ = progress.send(format!(
            "[{:>6.1}s] {}: {text}",
            started.elapsed().as_secs_f64(),
            t.id
        ));
    };
    let state = loop {
        tokio::select! {
            _ = &mut deadline => {
                break (last.clone().unwrap_or(State::Waiting("no status yet".into())), true);
            }
            _ = pod_check.tick(), if !t.deleted && t.id.kind == "Deployment" && pods_readable => {
                let Some(d) = &current else { continue };
                match deployment_pod_problem(&client, d).await {
                    Ok(Some(problem)) => {
                        let n = strikes.entry(problem.key.clone()).or_default();
                        *n += 1;
                        if *n >= opts.failure_threshold {
                            details = evidence(&client, &problem, &opts.redact).await;
                            break (State::Failed(problem.detail), false);
                        }
                    }
                    Ok(None) => {}
                    Err(note) => {
                        pods_readable = false;
                        details.push(note.clone());
                        let _ = progress.send(format!("[{:>6.1}s] {}: note: {note}", started.elapsed().as_secs_f64(), t.id));
                    }
                }
            }
            item = stream.next() => {
                let state = match item {
                    None => { tokio::time::sleep(Duration::from_millis(200)).await; continue; }
                    // Transient API errors: the watcher relists on its next poll.
                    Some(Err(_)) => { tokio::time::sleep(Duration::from_millis(200)).await; continue; }
                    Some(Ok(None)) if t.deleted => State::Ready,
                    Some(Ok(None)) => State::Waiting("not found".into()),
                    Some(Ok(Some(_))) if t.deleted => State::Waiting("terminating".into()),
                    Some(Ok(Some(obj))) => {
                        let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
                        let s = judge.map_or(State::Ready, |j| j(&value));
                        current = Some(value);
                        s
                    }
                };
                if last.as_ref() != Some(&state) {
                    send(&state);
                    last = Some(state.clone());
                }
                if matches!(state, State::Ready | State::Failed(_)) {
                    break (state, false);
                }
            }
        }
    };
    let (state, timed_out) = state;
    if matches!(state, State::Failed(_)) && last.as_ref() != Some(&state) {
        send(&state);
    }
    if timed_out {
        let _ = progress.send(format!(
            "[{:>6.1}s] {}: TIMED OUT waiting for {}",
            started.elapsed().as_secs_f64(),
            t.id,
            state.detail()
        ));
    }
    Tracked {
        id: t.id.to_string(),
        app: t.app,
        action: if t.deleted { "deleted" } else { "applied" },
        state,
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
        details,
    }
}

impl State {
    /// What it waits for or why it failed; empty when ready.
    pub fn detail(&self) -> &str {
        match self {
            State::Ready => "",
            State::Waiting(w) | State::Failed(w) => w,
        }
    }
}

impl Tracked {
    /// One word for the result (`ready`, `timed out`, `failed`, `waiting`)
    /// and the detail people need, for every report.
    pub fn outcome(&self) -> (&'static str, String) {
        match (&self.state, self.timed_out) {
            (s, true) => ("timed out", format!("waiting for {}", s.detail())),
            (State::Ready, _) => ("ready", String::new()),
            (State::Failed(f), _) => ("failed", f.clone()),
            (State::Waiting(w), _) => ("waiting", w.clone()),
        }
    }
}

/// The final table of a tracking run, with the failure evidence under
/// each failed row.
///
/// # Errors
/// When writing fails.
pub fn write_table(tracked: &[Tracked], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:<50} {:<9} {:>8}  DETAIL",
        "RESOURCE", "RESULT", "TIME"
    )?;
    for t in tracked {
        let (result, detail) = t.outcome();
        writeln!(
            out,
            "  {:<50} {:<9} {:>7.1}s  {detail}",
            t.id, result, t.seconds
        )?;
        for d in &t.details {
            writeln!(out, "      {d}")?;
        }
    }
    Ok(())
}

/// Targets for resource ids as reports write them (`apps/Deployment shop/api`),
/// resolved through discovery; only the ones that need watching.
///
/// # Errors
/// Discovery failures.
pub async fn targets_from_ids(
    client: &kube::Client,
    ids: impl IntoIterator<Item = (String, bool)>,
    opts: &Options,
) -> Result<Vec<Target>, kube::Error> {
    let mut out = Vec::new();
    for (text, deleted) in ids {
        let Some((gk, rest)) = text.split_once(' ') else {
            continue;
        };
        let (group, kind) = gk.rsplit_once('/').unwrap_or(("", gk));
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
            None => (None, rest.to_string()),
        };
        let id = ResourceId {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace,
            name,
        };
        if !needs_tracking(&id, deleted, opts) {
            continue;
        }
        let found = if group.is_empty() {
            kube::discovery::pinned_group(client, &kube::core::GroupVersion::gv("", "v1"))
                .await?
                .recommended_kind(kind)
        } else {
            kube::discovery::group(client, group)
                .await?
                .recommended_kind(kind)
        };
        if let Some((api, caps)) = found {
            out.push(Target {
                id,
                app: String::new(),
                api,
                namespaced: matches!(caps.scope, kube::discovery::Scope::Namespaced),
                timeout: opts.timeout,
                deleted,
            });
        }
    }
    Ok(out)
}

/// Tracks every target concurrently, writing progress lines to `out` as
/// they happen.
pub async fn track(
    client: &kube::Client,
    targets: Vec<Target>,
    opts: &Options,
    out: &mut dyn std::io::Write,
) -> Vec<Tracked> {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = futures::stream::FuturesUnordered::new();
    for t in targets {
        tasks.push(tokio::spawn(track_one(
            client.clone(),
            t,
            opts.clone(),
            started,
            tx.clone(),
        )));
    }
    drop(tx);
    let mut results = Vec::new();
    loop {
        tokio::select! {
            Some(line) = rx.recv() => { let _ = writeln!(out, "{line}"); }
            next = tasks.next() => match next {
                Some(Ok(r)) => results.push(r),
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    while let Ok(line) = rx.try_recv() {
        let _ = writeln!(out, "{line}");
    }
    results.sort_by(|a, b| a.id.cmp(&b.id));
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_rules() {
        let d = |generation: i64, observed: i64, status: Value| {
            let mut st = status;
            st["observedGeneration"] = json!(observed);
            json!({"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": st})
        };
        assert!(
            matches!(deployment_state(&d(2, 1, json!({}))), State::Waiting(w) if w.contains("generation 2"))
        );
        assert_eq!(
            deployment_state(&d(
                2,
                2,
                json!({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2})
            )),
            State::Waiting("2/3 replicas available".into())
        );
        assert_eq!(
            deployment_state(&d(
                2,
                2,
                json!({"updatedReplicas": 3, "replicas": 4, "availableReplicas": 3})
            )),
            State::Waiting("1 old replicas pending termination".into())
        );
        assert_eq!(
            deployment_state(&d(
                2,
                2,
                json!({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            )),
            State::Ready
        );
        let stuck = d(
            2,
            2,
            json!({"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]}),
        );
        assert!(
            matches!(deployment_state(&stuck), State::Failed(m) if m.contains("timed out progressing"))
        );
    }

    #[test]
    fn statefulset_and_daemonset_rules() {
        let sts = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
            "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1}});
        assert_eq!(statefulset_state(&sts), State::Ready);
        let rolling = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}});
        assert!(matches!(statefulset_state(&rolling), State::Waiting(_)));
        assert_eq!(
            statefulset_state(&json!({"spec": {"updateStrategy": {"type": "OnDelete"}}})),
            State::Ready
        );
        let ds = json!({"metadata": {"generation": 3}, "spec": {}, "status": {"observedGeneration": 3, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}});
        assert_eq!(
            daemonset_state(&ds),
            State::Waiting("2/3 nodes available".into())
        );
        assert_eq!(
            daemonset_state(&json!({"spec": {"updateStrategy": {"type": "OnDelete"}}})),
            State::Ready
        );
    }

    #[test]
    fn job_rules_and_pod_problems() {
        assert_eq!(
            job_state(&json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})),
            State::Ready
        );
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        assert_eq!(
            job_state(&failed),
            State::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
        let oom = json!({"metadata": {"name": "api-1"}, "status": {"containerStatuses": [{"name": "api", "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}});
        let (key, detail) = pod_problem(&oom).unwrap();
        assert_eq!(key, "CrashLoopBackOff");
        assert!(
            detail.contains("OOMKilled (exit code 137), 4 restarts"),
            "{detail}"
        );
        assert!(
            pod_problem(&json!({"status": {"containerStatuses": [{"state": {"running": {}}}]}}))
                .is_none()
        );
    }

    #[test]
    fn load_balancers_and_ready_conditions() {
        let lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert!(matches!(load_balancer_state(&lb), State::Waiting(_)));
        let lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
        assert_eq!(load_balancer_state(&lb), State::Ready);
        let cr = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending", "message": "issuing"}]}});
        assert_eq!(
            ready_condition_state(&cr),
            State::Waiting("Ready=False (Pending: issuing)".into())
        );
        assert_eq!(ready_condition_state(&json!({"spec": {}})), State::Ready);
        let opts = Options {
            ready_condition_kinds: vec!["cert-manager.io/Certificate".into()],
            ..Options::default()
        };
        assert!(rule("cert-manager.io", "Certificate", &opts).is_some());
        assert!(rule("monitoring.coreos.com", "ServiceMonitor", &opts).is_none());
        assert!(rule("", "Service", &opts).is_none());
    }

    #[test]
    fn timeout_annotation() {
        let o = json!({"metadata": {"annotations": {"kdeploy.io/timeout": "15m"}}});
        assert_eq!(
            timeout_of(&o, Duration::from_secs(1)),
            Duration::from_secs(900)
        );
        assert_eq!(
            timeout_of(&json!({}), Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }
}
