//! What a workload's status says: ready, still waiting (and for what), or
//! failed (and why), by the rules `kubectl rollout status` uses, and the pod
//! problems that will not fix themselves.

use serde::Serialize;
use serde_json::Value;

use super::Options;

/// A workload's state as its status says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum State {
    /// Done: ready, complete, or gone for deletions.
    Ready,
    /// Not yet, with what it waits for ("2/3 replicas available").
    Waiting(String),
    /// It will not get there, and why.
    Failed(String),
}

impl std::fmt::Display for State {
    /// As a person reads it: `ready`, `waiting: 2/3 replicas available`,
    /// `failed: OOMKilled`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Ready => f.write_str("ready"),
            State::Waiting(why) => write!(f, "waiting: {why}"),
            State::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn observed(obj: &Value) -> Option<State> {
    let generation = int(&obj["metadata"]["generation"]);
    let seen = int(&obj["status"]["observedGeneration"]);
    (seen < generation).then(|| {
        State::Waiting(format!(
            "waiting for the controller to observe generation {generation}"
        ))
    })
}

/// `kubectl rollout status` for a Deployment.
pub fn deployment_state(d: &Value) -> State {
    if let Some(s) = observed(d) {
        return s;
    }
    let st = &d["status"];
    if let Some(c) = condition(st, "Progressing")
        && c["status"] == "False"
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        return State::Failed(format!(
            "progress deadline exceeded: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (updated, replicas, available) = (
        int(&st["updatedReplicas"]),
        int(&st["replicas"]),
        int(&st["availableReplicas"]),
    );
    if updated < want {
        State::Waiting(format!("{updated}/{want} replicas updated"))
    } else if replicas > updated {
        State::Waiting(format!(
            "{} old replicas pending termination",
            replicas - updated
        ))
    } else if available < updated {
        State::Waiting(format!("{available}/{want} replicas available"))
    } else {
        State::Ready
    }
}

/// `kubectl rollout status` for a StatefulSet.
pub fn statefulset_state(s: &Value) -> State {
    if s["spec"]["updateStrategy"]["type"] == "OnDelete" {
        return State::Ready;
    }
    if let Some(st) = observed(s) {
        return st;
    }
    let st = &s["status"];
    let want = s["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = int(&st["readyReplicas"]);
    if ready < want {
        return State::Waiting(format!("{ready}/{want} replicas ready"));
    }
    match s["spec"]["updateStrategy"]["rollingUpdate"]["partition"].as_i64() {
        Some(partition) if partition > 0 => {
            let updated = int(&st["updatedReplicas"]);
            if updated < want - partition {
                State::Waiting(format!(
                    "{updated}/{} replicas updated (partition {partition})",
                    want - partition
                ))
            } else {
                State::Ready
            }
        }
        _ if st["updateRevision"] != st["currentRevision"] => State::Waiting(format!(
            "{}/{want} replicas at the new revision",
            int(&st["updatedReplicas"])
        )),
        _ => State::Ready,
    }
}

/// `kubectl rollout status` for a DaemonSet.
pub fn daemonset_state(d: &Value) -> State {
    if d["spec"]["updateStrategy"]["type"] == "OnDelete" {
        return State::Ready;
    }
    if let Some(s) = observed(d) {
        return s;
    }
    let st = &d["status"];
    let (desired, updated, available) = (
        int(&st["desiredNumberScheduled"]),
        int(&st["updatedNumberScheduled"]),
        int(&st["numberAvailable"]),
    );
    if updated < desired {
        State::Waiting(format!("{updated}/{desired} nodes updated"))
    } else if available < desired {
        State::Waiting(format!("{available}/{desired} nodes available"))
    } else {
        State::Ready
    }
}

/// A Job: Complete or Failed.
pub fn job_state(j: &Value) -> State {
    let st = &j["status"];
    if condition(st, "Complete").is_some_and(|c| c["status"] == "True") {
        return State::Ready;
    }
    if let Some(c) = condition(st, "Failed").filter(|c| c["status"] == "True") {
        return State::Failed(format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or("Failed"),
            c["message"].as_str().unwrap_or("")
        ));
    }
    State::Waiting(format!(
        "{} active, {} succeeded",
        int(&st["active"]),
        int(&st["succeeded"])
    ))
}

/// A LoadBalancer Service: ready once it has an address.
pub fn load_balancer_state(svc: &Value) -> State {
    if svc["spec"]["type"] != "LoadBalancer" {
        return State::Ready;
    }
    if svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|i| !i.is_empty())
    {
        State::Ready
    } else {
        State::Waiting("waiting for a load balancer address".into())
    }
}

/// A custom resource with conditions: ready at `Ready=True`.
pub fn ready_condition_state(obj: &Value) -> State {
    let Some(c) = condition(&obj["status"], "Ready") else {
        return if obj["status"]["conditions"].is_array() {
            State::Waiting("no Ready condition yet".into())
        } else {
            State::Ready
        };
    };
    match c["status"].as_str() {
        Some("True") => State::Ready,
        _ => State::Waiting(format!(
            "Ready={} ({}: {})",
            c["status"].as_str().unwrap_or("Unknown"),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )),
    }
}

/// Built-in API groups: their kinds are never "custom".
fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

/// The rule for a kind, or `None` when applied means ready.
pub(super) fn rule(group: &str, kind: &str, opts: &Options) -> Option<fn(&Value) -> State> {
    match (group, kind) {
        ("apps", "Deployment") => Some(deployment_state),
        ("apps", "StatefulSet") => Some(statefulset_state),
        ("apps", "DaemonSet") => Some(daemonset_state),
        ("batch", "Job") => Some(job_state),
        ("", "Service") if opts.load_balancers => Some(load_balancer_state),
        (g, k)
            if !is_builtin_group(g)
                && opts
                    .ready_condition_kinds
                    .iter()
                    .any(|x| x == "*" || *x == format!("{g}/{k}")) =>
        {
            Some(ready_condition_state)
        }
        _ => None,
    }
}

/// Container problems that will not fix themselves.
const FATAL_WAITING: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The first fatal container problem of a pod, described for people.
pub fn pod_problem(pod: &Value) -> Option<(String, String)> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("?");
    let statuses = pod["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s, true))
        .chain(
            pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| (s, false)),
        );
    for (cs, init) in statuses {
        let reason = cs["state"]["waiting"]["reason"].as_str().unwrap_or("");
        if !FATAL_WAITING.contains(&reason) {
            continue;
        }
        let container = cs["name"].as_str().unwrap_or("?");
        let mut detail = format!(
            "pod {name}, {}container {container}: {reason}",
            if init { "init " } else { "" }
        );
        if let Some(m) = cs["state"]["waiting"]["message"].as_str() {
            detail.push_str(&format!(" ({m})"));
        }
        let last = &cs["lastState"]["terminated"];
        if last.is_object() {
            detail.push_str(&format!(
                "; last terminated: {} (exit code {}), {} restarts",
                last["reason"].as_str().unwrap_or("?"),
                int(&last["exitCode"]),
                int(&cs["restartCount"])
            ));
        }
        // An image pull error settles into its back-off: count them as one.
        let key = match reason {
            "ErrImagePull" => "ImagePullBackOff",
            other => other,
        };
        return Some((key.to_string(), detail));
    }
    if let Some(c) = condition(&pod["status"], "PodScheduled")
        && c["status"] == "False"
        && c["reason"] == "Unschedulable"
    {
        return Some((
            "FailedScheduling".into(),
            format!(
                "pod {name} cannot be scheduled: {}",
                c["message"].as_str().unwrap_or("")
            ),
        ));
    }
    None
}
