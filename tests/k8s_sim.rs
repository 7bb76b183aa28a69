//! An in-process Kubernetes API server simulator for tests, over real HTTP on
//! 127.0.0.1. It is not Kubernetes: it stores objects in memory and follows
//! the API's wire behaviour where kdeploy depends on it:
//!
//! - discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`) for the core and
//!   common groups, plus the kinds of CRDs created through it;
//! - GET, LIST (label selectors), POST, PUT (resourceVersion preconditions),
//!   server-side apply PATCH (`application/apply-patch+yaml`, `fieldManager`,
//!   `force`, conflicts between managers, `dryRun=All`), DELETE;
//! - `resourceVersion` (one counter), `uid`, `creationTimestamp`,
//!   `generation` bumped when anything outside metadata/status changes,
//!   `managedFields` (`fieldsV1` per apply manager; a forced apply takes
//!   over the fields it changes); namespaced objects need an existing namespace;
//! - CRDs become Established; errors are `Status` objects (404, 409, 422);
//! - faults: a status for the next N matching requests, latency;
//! - admission webhooks ([`Webhook`]): mutating ones change the object,
//!   validating ones deny it (403, `admission webhook "…" denied the
//!   request: …`), on creates and updates, dry runs included (as webhooks
//!   declaring `sideEffects: None` are called).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A kind the simulator serves.
#[derive(Debug, Clone)]
struct Kind {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

fn builtin_kinds() -> Vec<Kind> {
    let k = |g: &str, v: &str, kind: &str, plural: &str, ns: bool| Kind {
        group: g.into(),
        version: v.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced: ns,
    };
    vec![
        k("", "v1", "Namespace", "namespaces", false),
        k("", "v1", "ConfigMap", "configmaps", true),
        k("", "v1", "Secret", "secrets", true),
        k("", "v1", "Service", "services", true),
        k("", "v1", "ServiceAccount", "serviceaccounts", true),
        k("", "v1", "Pod", "pods", true),
        k(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        ),
        k("", "v1", "ResourceQuota", "resourcequotas", true),
        k("", "v1", "Event", "events", true),
        k("apps", "v1", "Deployment", "deployments", true),
        k("apps", "v1", "StatefulSet", "statefulsets", true),
        k("apps", "v1", "DaemonSet", "daemonsets", true),
        k("apps", "v1", "ReplicaSet", "replicasets", true),
        k("batch", "v1", "Job", "jobs", true),
        k("batch", "v1", "CronJob", "cronjobs", true),
        k(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        ),
        k("networking.k8s.io", "v1", "Ingress", "ingresses", true),
        k(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        ),
        k(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        ),
        k("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        k("coordination.k8s.io", "v1", "Lease", "leases", true),
        k(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        k(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
        ),
    ]
}

/// Key of a stored object: (group, plural, namespace, name).
type Key = (String, String, String, String);

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    /// Last applied configuration per field manager.
    applied: BTreeMap<String, Value>,
}

/// A fault to inject into matching requests.
#[derive(Debug, Clone)]
pub struct Fault {
    /// HTTP method to match (`None`: any).
    pub method: Option<&'static str>,
    /// Substring of the path to match.
    pub path: String,
    /// Status to answer; 0 breaks the connection off mid-response.
    pub status: u16,
    /// How many matching requests to fail.
    pub times: usize,
}

/// One request the simulator received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// When it arrived.
    pub at: std::time::Instant,
    /// When its answer was ready (latency included).
    pub done: Option<std::time::Instant>,
}

/// One watch event: the resourceVersion it happened at.
#[derive(Debug, Clone)]
struct WatchEvent {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
}

/// An admission webhook of the simulated cluster, for objects of one kind.
#[derive(Clone)]
pub struct Webhook {
    /// Its name, as the denial message quotes it.
    pub name: String,
    /// The kind it is registered for (`Deployment`).
    pub kind: String,
    /// What it does with an object.
    pub admit: Admit,
}

/// What a mutating webhook does to an object.
pub type Mutation = Arc<dyn Fn(&mut Value) + Send + Sync>;
/// A validating webhook's reason to deny an object, if it does.
pub type Validation = Arc<dyn Fn(&Value) -> Option<String> + Send + Sync>;

/// A webhook's decision.
#[derive(Clone)]
pub enum Admit {
    /// Changes the object (a mutating webhook).
    Mutate(Mutation),
    /// `Some(reason)` denies it (a validating webhook).
    Validate(Validation),
}

/// Runs the webhooks for `kind` over `object`: mutating ones first, then
/// validating ones, as the API server orders admission.
fn admit(inner: &Inner, kind: &str, object: &mut Value) -> Option<Response> {
    for w in inner.webhooks.iter().filter(|w| w.kind == kind) {
        if let Admit::Mutate(f) = &w.admit {
            f(object);
        }
    }
    for w in inner.webhooks.iter().filter(|w| w.kind == kind) {
        if let Admit::Validate(f) = &w.admit
            && let Some(why) = f(object)
        {
            return Some(status(
                403,
                "Forbidden",
                format!("admission webhook \"{}\" denied the request: {why}", w.name),
                json!({}),
            ));
        }
    }
    None
}

#[derive(Default)]
struct Inner {
    webhooks: Vec<Webhook>,
    events: Vec<WatchEvent>,
    /// Watches asking for older resourceVersions get 410 Gone.
    compacted_to: u64,
    watchers: Option<tokio::sync::broadcast::Sender<WatchEvent>>,
    behaviours: BTreeMap<(String, String, String), Behaviour>,
    image_behaviours: BTreeMap<String, Behaviour>,
    /// Container log text by (namespace, workload name).
    logs: BTreeMap<(String, String), String>,
    kinds: Vec<Kind>,
    objects: BTreeMap<Key, Stored>,
    resource_version: u64,
    uid: u64,
    requests: Vec<Request>,
    faults: Vec<Fault>,
    latency: Duration,
}

/// A running simulator.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    /// Registers an admission webhook.
    pub fn webhook(&self, w: Webhook) {
        self.lock().webhooks.push(w);
    }

    /// Starts a simulator with the `default` and `kube-system` namespaces.
    pub async fn start() -> Sim {
        let inner = Arc::new(Mutex::new(Inner {
            kinds: builtin_kinds(),
            resource_version: 1000,
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let sim = Sim { inner, url };
        for ns in ["default", "kube-system"] {
            sim.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
        sim
    }

    /// A kubeconfig pointing at the simulator.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\ncurrent-context: sim\nusers:\n- name: sim\n  user:\n    token: sim-token-CANARY-KUBE\n",
            self.url
        )
    }

    /// The kubeconfig in a file of a fresh directory, for the CLI: the
    /// directory (kept alive by the first value) also suits a report.
    pub fn kubeconfig_file(&self) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, self.kubeconfig()).expect("write kubeconfig");
        let path = path.display().to_string();
        (dir, path)
    }

    /// A client for the simulator.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        // The client kdeploy builds, with its retry layer, at test speed.
        kdeploy::cluster::from_config_with(
            config,
            kdeploy::cluster::retry::RetryPolicy::new(5, std::time::Duration::from_millis(10)),
        )
        .await
        .expect("client")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Stores an object directly (as if another client created it).
    pub fn insert(&self, object: Value) {
        let mut inner = self.lock();
        let Some(kind) = find_kind_by_object(&inner, &object) else {
            panic!("unknown kind in {object}");
        };
        let ns = if kind.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stored = finalize_new(&mut inner, object, &kind, &ns);
        inner.put(
            (kind.group.clone(), kind.plural.clone(), ns, name),
            Stored {
                object: stored,
                applied: BTreeMap::new(),
            },
        );
    }

    /// Serves a custom kind, as when its CRD was installed by someone else
    /// (the CRD is not in the repository).
    pub fn serve_kind(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        self.lock().kinds.push(Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        });
    }

    /// The stored object, if any.
    pub fn get(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.lock();
        let k = inner
            .kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)?
            .clone();
        let ns = if k.namespaced { namespace } else { "" };
        inner
            .objects
            .get(&(k.group, k.plural, ns.to_string(), name.to_string()))
            .map(|s| s.object.clone())
    }

    /// Number of stored objects of a kind.
    pub fn count(&self, group: &str, kind: &str) -> usize {
        let inner = self.lock();
        let Some(k) = inner
            .kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)
            .cloned()
        else {
            return 0;
        };
        inner
            .objects
            .keys()
            .filter(|key| key.0 == k.group && key.1 == k.plural)
            .count()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Requests in flight over time, from the first request logged: the
    /// most at once within each `bucket`, and the most overall.
    pub fn in_flight(&self, bucket: Duration) -> (Vec<usize>, usize) {
        let requests = self.requests();
        let Some(start) = requests.iter().map(|r| r.at).min() else {
            return (Vec::new(), 0);
        };
        // +1 at each arrival, -1 at each answer, in time order.
        let mut events: Vec<(Duration, i64)> = Vec::new();
        for r in &requests {
            events.push((r.at - start, 1));
            events.push((r.done.unwrap_or(r.at) - start, -1));
        }
        events.sort_by_key(|(t, d)| (*t, *d));
        let width = bucket.as_nanos().max(1);
        let mut timeline: Vec<usize> = Vec::new();
        let (mut now, mut peak) = (0i64, 0usize);
        for (t, d) in events {
            let slot = (t.as_nanos() / width) as usize;
            if timeline.len() <= slot {
                // Slots without an event hold what was in flight before.
                timeline.resize(slot + 1, now.max(0) as usize);
            }
            now += d;
            let n = now.max(0) as usize;
            timeline[slot] = timeline[slot].max(n);
            peak = peak.max(n);
        }
        (timeline, peak)
    }

    /// The request log as `METHOD /path` lines, for assertions that read
    /// like it.
    pub fn request_lines(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Adds a fault.
    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Delay for every request.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }
}

impl Inner {
    fn emit(&mut self, kind: &'static str, key: &Key, object: &Value) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.resource_version);
        let ev = WatchEvent {
            rv,
            key: key.clone(),
            kind,
            object: object.clone(),
        };
        if let Some(tx) = &self.watchers {
            let _ = tx.send(ev.clone());
        }
        self.events.push(ev);
    }

    fn put(&mut self, key: Key, stored: Stored) {
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.emit(kind, &key, &stored.object);
        self.objects.insert(key, stored);
    }

    fn del(&mut self, key: &Key) -> Option<Stored> {
        let removed = self.objects.remove(key);
        if let Some(s) = &removed {
            self.resource_version += 1;
            let mut obj = s.object.clone();
            obj["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
            self.emit("DELETED", key, &obj);
        }
        removed
    }
}

fn find_kind_by_object(inner: &Inner, object: &Value) -> Option<Kind> {
    let api_version = object["apiVersion"].as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str()?;
    inner
        .kinds
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .cloned()
}

fn now() -> String {
    "2026-01-01T00:00:00Z".into()
}

fn finalize_new(inner: &mut Inner, mut object: Value, kind: &Kind, ns: &str) -> Value {
    inner.resource_version += 1;
    inner.uid += 1;
    let meta = object["metadata"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut meta = meta;
    meta.insert(
        "uid".into(),
        json!(format!("00000000-0000-4000-8000-{:012}", inner.uid)),
    );
    meta.insert(
        "resourceVersion".into(),
        json!(inner.resource_version.to_string()),
    );
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    if kind.namespaced {
        meta.insert("namespace".into(), json!(ns));
    }
    object["metadata"] = Value::Object(meta);
    if kind.kind == "Namespace" {
        object["status"] = json!({"phase": "Active"});
    }
    if kind.kind == "CustomResourceDefinition" {
        object["status"] = json!({"conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
        ], "acceptedNames": object["spec"]["names"].clone()});
    }
    object
}

fn status(code: u16, reason: &str, message: String, details: Value) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "details": details, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn ok(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response()
}

/// Parsed resource path.
struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
}

enum Route {
    CoreVersions,
    GroupList,
    ResourceList(String, String),
    Resource(Target),
    NotFound,
}

fn route(inner: &Inner, path: &str) -> Route {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::GroupList,
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    let (namespace, plural, name) = match rest {
        [] => return Route::ResourceList(group.into(), version.into()),
        ["namespaces", ns, plural] => (*ns, *plural, None),
        ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
        [plural] => ("", *plural, None),
        [plural, name] => ("", *plural, Some(*name)),
        _ => return Route::NotFound,
    };
    match inner
        .kinds
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
    {
        Some(kind) => Route::Resource(Target {
            kind: kind.clone(),
            namespace: namespace.to_string(),
            name: name.map(str::to_string),
        }),
        None => Route::NotFound,
    }
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v.replace("%2C", ",")
                            .replace("%3D", "=")
                            .replace("%2F", "/"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = std::time::Instant::now();
    let index = {
        let mut inner = lock(&state);
        inner.requests.push(Request {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            user_agent: headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            at,
            done: None,
        });
        inner.requests.len() - 1
    };
    let response = answer(state.clone(), method, uri, headers, body).await;
    let mut inner = lock(&state);
    if let Some(r) = inner.requests.get_mut(index).filter(|r| r.at == at) {
        r.done = Some(std::time::Instant::now());
    }
    response
}

/// The answer to one request, after the simulated latency.
async fn answer(
    state: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = lock(&state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = lock(&state);
    if let Some(f) = inner.faults.iter_mut().find(|f| {
        f.times > 0 && uri.path().contains(&f.path) && f.method.is_none_or(|m| m == method.as_str())
    }) {
        f.times -= 1;
        let code = f.status;
        if code == 0 {
            // A connection reset: the connection dies before any answer.
            drop(inner);
            std::panic::resume_unwind(Box::new("simulated connection reset"));
        }
        let reason = match code {
            429 => "TooManyRequests",
            403 => "Forbidden",
            422 => "Invalid",
            _ => "InternalError",
        };
        let msg = match code {
            403 => format!(
                "{} is forbidden: User \"system:serviceaccount:ci:deployer\" cannot patch resource at {}",
                uri.path(),
                uri.path()
            ),
            429 => "Too many requests, please try again later.".into(),
            _ => format!("simulated failure ({code})"),
        };
        let mut resp = status(code, reason, msg, json!({}));
        if code == 429 {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        return resp;
    }
    let query = query_map(&uri);
    if let Some(rest) = uri.path().strip_prefix("/api/v1/namespaces/")
        && let [ns, "pods", pod, "log"] = rest.split('/').collect::<Vec<_>>().as_slice()
    {
        let key = (
            String::new(),
            "pods".to_string(),
            ns.to_string(),
            pod.to_string(),
        );
        let Some(p) = inner.objects.get(&key) else {
            return status(
                404,
                "NotFound",
                format!("pods \"{pod}\" not found"),
                json!({}),
            );
        };
        let owner = p.object["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or("");
        let workload = owner.rsplit_once('-').map_or(owner, |(w, _)| w);
        let text = inner
            .logs
            .get(&(ns.to_string(), workload.to_string()))
            .cloned()
            .unwrap_or_default();
        return (StatusCode::OK, text).into_response();
    }
    if uri.path() == "/version" {
        return ok(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kdeploy-sim", "platform": "linux/amd64"}),
        );
    }
    // Aggregated discovery (apidiscovery.k8s.io/v2, GA in 1.30): every
    // group's resources in one answer, when the client asks for it.
    let aggregated = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"));
    if aggregated && matches!(uri.path(), "/api" | "/apis") {
        return aggregated_discovery(&inner, uri.path() == "/api");
    }
    match route(&inner, uri.path()) {
        Route::CoreVersions => ok(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        Route::GroupList => {
            let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for k in inner.kinds.iter().filter(|k| !k.group.is_empty()) {
                groups
                    .entry(k.group.clone())
                    .or_default()
                    .insert(k.version.clone());
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    let preferred = versions[0].clone();
                    json!({"name": g, "versions": versions, "preferredVersion": preferred})
                })
                .collect();
            ok(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Route::ResourceList(group, version) => {
            let resources: Vec<Value> = inner
                .kinds
                .iter()
                .filter(|k| k.group == group && k.version == version)
                .map(|k| {
                    json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced, "kind": k.kind,
                        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]})
                })
                .collect();
            if resources.is_empty() {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    json!({}),
                );
            }
            let gv = if group.is_empty() {
                version
            } else {
                format!("{group}/{version}")
            };
            ok(
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            )
        }
        Route::NotFound => status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        ),
        Route::Resource(t) => resource(&mut inner, &method, &t, &query, &headers, &body),
    }
}

/// An `APIGroupDiscoveryList` as the API server serves it at `/api` (the
/// core group) or `/apis` (every other group), versions in order of
/// preference.
fn aggregated_discovery(inner: &Inner, core: bool) -> Response {
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for k in inner.kinds.iter().filter(|k| k.group.is_empty() == core) {
        groups
            .entry(k.group.clone())
            .or_default()
            .entry(k.version.clone())
            .or_default()
            .push(json!({
                "resource": k.plural,
                "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": k.kind.to_lowercase(),
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }));
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let mut metadata = json!({"creationTimestamp": null});
            if !g.is_empty() {
                metadata["name"] = json!(g);
            }
            let versions: Vec<Value> = versions
                .into_iter()
                .rev()
                .map(|(v, resources)| json!({"version": v, "resources": resources, "freshness": "Current"}))
                .collect();
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    let mut response = ok(
        200,
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}),
    );
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    response
}

fn not_found(t: &Target, name: &str) -> Response {
    let what = if t.kind.group.is_empty() {
        t.kind.plural.clone()
    } else {
        format!("{}.{}", t.kind.plural, t.kind.group)
    };
    status(
        404,
        "NotFound",
        format!("{what} \"{name}\" not found"),
        json!({"name": name, "group": t.kind.group, "kind": t.kind.plural}),
    )
}

/// The key of the namespace a namespaced target is in.
fn namespace_key(t: &Target) -> Option<Key> {
    t.kind.namespaced.then(|| {
        (
            String::new(),
            "namespaces".to_string(),
            String::new(),
            t.namespace.clone(),
        )
    })
}

fn namespace_missing(inner: &Inner, t: &Target) -> Option<Response> {
    let key = namespace_key(t)?;
    (!inner.objects.contains_key(&key)).then(|| {
        status(
            404,
            "NotFound",
            format!("namespaces \"{}\" not found", t.namespace),
            json!({"name": t.namespace, "kind": "namespaces"}),
        )
    })
}

/// Creating in a namespace being deleted: the API server's
/// NamespaceLifecycle admission refuses it (updates are still allowed).
fn namespace_terminating(inner: &Inner, t: &Target, name: &str) -> Option<Response> {
    let ns = inner.objects.get(&namespace_key(t)?)?;
    if !ns.object["metadata"]["deletionTimestamp"].is_string() {
        return None;
    }
    let what = if t.kind.group.is_empty() {
        t.kind.plural.clone()
    } else {
        format!("{}.{}", t.kind.plural, t.kind.group)
    };
    Some(status(
        403,
        "Forbidden",
        format!(
            "{what} \"{name}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
            t.namespace
        ),
        json!({"name": name, "group": t.kind.group, "kind": t.kind.plural,
            "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {} is being terminated", t.namespace), "field": "metadata.namespace"}]}),
    ))
}

fn resource(
    inner: &mut Inner,
    method: &Method,
    t: &Target,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let key = |name: &str| {
        (
            t.kind.group.clone(),
            t.kind.plural.clone(),
            t.namespace.clone(),
            name.to_string(),
        )
    };
    match (method.as_str(), &t.name) {
        ("GET", None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(inner, t, query)
        }
        ("GET", None) => {
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|(k, _)| {
                    k.0 == t.kind.group
                        && k.1 == t.kind.plural
                        && (t.namespace.is_empty() || k.2 == t.namespace)
                })
                .filter(|(_, s)| matches_selector(&s.object, &selector))
                .filter(|(k, _)| field_name(query).is_none_or(|n| k.3 == n))
                .map(|(_, s)| s.object.clone())
                .collect();
            let api_version = if t.kind.group.is_empty() {
                t.kind.version.clone()
            } else {
                format!("{}/{}", t.kind.group, t.kind.version)
            };
            ok(
                200,
                json!({"kind": format!("{}List", t.kind.kind), "apiVersion": api_version,
                "metadata": {"resourceVersion": inner.resource_version.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name)) => match inner.objects.get(&key(name)) {
            Some(s) => ok(200, s.object.clone()),
            None => not_found(t, name),
        },
        ("DELETE", Some(name)) => {
            if dry_run {
                return match inner.objects.get(&key(name)) {
                    Some(s) => ok(200, s.object.clone()),
                    None => not_found(t, name),
                };
            }
            let slow = match behaviour(inner, &t.kind.kind, &t.namespace, name) {
                Behaviour::SlowDelete(ticks) => Some(ticks),
                _ => None,
            };
            if let (Some(ticks), Some(mut stored)) = (slow, inner.objects.get(&key(name)).cloned())
            {
                if !stored.object["metadata"]["deletionTimestamp"].is_string() {
                    stored.object["metadata"]["deletionTimestamp"] = json!(now());
                    stored.object["metadata"]["finalizers"] = json!(["sim/slow"]);
                    stored.object["metadata"]["annotations"]["sim/delete-ticks"] =
                        json!(ticks.to_string());
                    inner.resource_version += 1;
                    stored.object["metadata"]["resourceVersion"] =
                        json!(inner.resource_version.to_string());
                    inner.put(key(name), stored.clone());
                }
                return ok(200, stored.object);
            }
            if t.kind.kind == "Namespace"
                && let Some(mut stored) = inner.objects.get(&key(name)).cloned()
            {
                // As the API server does: the namespace turns Terminating,
                // held by the `kubernetes` finalizer until the namespace
                // controller (`controllers_step`) has deleted its content.
                if !stored.object["metadata"]["deletionTimestamp"].is_string() {
                    stored.object["metadata"]["deletionTimestamp"] = json!(now());
                    stored.object["spec"]["finalizers"] = json!(["kubernetes"]);
                    stored.object["status"] = json!({"phase": "Terminating"});
                    inner.resource_version += 1;
                    stored.object["metadata"]["resourceVersion"] =
                        json!(inner.resource_version.to_string());
                    inner.put(key(name), stored.clone());
                }
                return ok(200, stored.object);
            }
            match inner.del(&key(name)) {
                Some(s) => {
                    if t.kind.kind == "CustomResourceDefinition" {
                        let names = &s.object["spec"]["names"];
                        let plural = names["plural"].as_str().unwrap_or("").to_string();
                        inner
                            .kinds
                            .retain(|k| k.plural != plural || k.group != s.object["spec"]["group"]);
                    }
                    ok(
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": t.kind.group, "kind": t.kind.plural, "uid": s.object["metadata"]["uid"]}}),
                    )
                }
                None => not_found(t, name),
            }
        }
        ("POST", None) => {
            let Ok(object) = parse_body(headers, body) else {
                return status(
                    400,
                    "BadRequest",
                    "the request body is not valid JSON or YAML".into(),
                    json!({}),
                );
            };
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(r) = namespace_missing(inner, t) {
                return r;
            }
            if let Some(r) = namespace_terminating(inner, t, &name) {
                return r;
            }
            if inner.objects.contains_key(&key(&name)) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", t.kind.plural),
                    json!({"name": name, "kind": t.kind.plural}),
                );
            }
            let stored = finalize_new(inner, object, &t.kind, &t.namespace);
            if !dry_run {
                created(inner, t, &name, stored.clone(), BTreeMap::new());
            }
            ok(201, stored)
        }
        ("PUT", Some(name)) => {
            let Ok(object) = parse_body(headers, body) else {
                return status(
                    400,
                    "BadRequest",
                    "the request body is not valid JSON or YAML".into(),
                    json!({}),
                );
            };
            let Some(existing) = inner.objects.get(&key(name)).cloned() else {
                return not_found(t, name);
            };
            let want = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
            let have = existing.object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("");
            if !want.is_empty() && want != have {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        t.kind.plural
                    ),
                    json!({"name": name, "kind": t.kind.plural}),
                );
            }
            let updated = update(inner, &existing.object, object);
            if !dry_run {
                inner.put(
                    key(name),
                    Stored {
                        object: updated.clone(),
                        applied: existing.applied,
                    },
                );
            }
            ok(200, updated)
        }
        ("PATCH", Some(name)) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with("application/apply-patch") {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("the simulator only supports server-side apply, not {content_type}"),
                    json!({}),
                );
            }
            let Some(manager) = query.get("fieldManager").cloned() else {
                return status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(), json!({}));
            };
            let force = query.get("force").is_some_and(|v| v == "true");
            let Ok(applied) = parse_body(headers, body) else {
                return status(
                    400,
                    "BadRequest",
                    "error decoding YAML: the body is not valid".into(),
                    json!({}),
                );
            };
            if let Some(r) = namespace_missing(inner, t) {
                return r;
            }
            let existing = inner.objects.get(&key(name)).cloned();
            if existing.is_none()
                && let Some(r) = namespace_terminating(inner, t, name)
            {
                return r;
            }
            // The API server validates the object the apply results in: a
            // partial configuration (`spec.replicas` alone) is fine for an
            // object that exists.
            match existing {
                None => {
                    if let Some(r) = validate(&t.kind, name, &applied) {
                        return r;
                    }
                    let mut object = applied.clone();
                    if let Some(r) = admit(inner, &t.kind.kind, &mut object) {
                        return r;
                    }
                    let mut appl = BTreeMap::new();
                    appl.insert(manager, applied);
                    object["metadata"]["managedFields"] = managed_fields(&appl);
                    let stored = finalize_new(inner, object, &t.kind, &t.namespace);
                    if !dry_run {
                        created(inner, t, name, stored.clone(), appl);
                    }
                    ok(201, stored)
                }
                Some(existing) => {
                    if !force
                        && let Some(conflict) = conflicts(&existing.applied, &manager, &applied)
                    {
                        return status(
                            409,
                            "Conflict",
                            format!(
                                "Apply failed with 1 conflict: conflict with \"{}\": {}",
                                conflict.0, conflict.1
                            ),
                            json!({"name": name, "kind": t.kind.plural, "causes": [{"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", conflict.0), "field": conflict.1}]}),
                        );
                    }
                    let mut object = existing.object.clone();
                    if let Some(previous) = existing.applied.get(&manager) {
                        remove_owned(&mut object, previous, &applied);
                    }
                    merge(&mut object, &applied);
                    if let Some(r) = admit(inner, &t.kind.kind, &mut object) {
                        return r;
                    }
                    if let Some(r) = validate(&t.kind, name, &object) {
                        return r;
                    }
                    if let Some(r) = immutable(&t.kind, name, &existing.object, &object) {
                        return r;
                    }
                    let mut appl = existing.applied.clone();
                    if force {
                        transfer(&mut appl, &manager, &applied);
                    }
                    appl.insert(manager.clone(), applied);
                    object["metadata"]["managedFields"] = managed_fields(&appl);
                    let updated = update(inner, &existing.object, object);
                    if !dry_run {
                        inner.put(
                            key(name),
                            Stored {
                                object: updated.clone(),
                                applied: appl,
                            },
                        );
                    }
                    ok(200, updated)
                }
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
            json!({}),
        ),
    }
}

fn created(
    inner: &mut Inner,
    t: &Target,
    name: &str,
    object: Value,
    applied: BTreeMap<String, Value>,
) {
    if t.kind.kind == "CustomResourceDefinition" {
        let spec = &object["spec"];
        let group = spec["group"].as_str().unwrap_or("").to_string();
        let namespaced = spec["scope"] != "Cluster";
        for v in spec["versions"].as_array().cloned().unwrap_or_default() {
            inner.kinds.push(Kind {
                group: group.clone(),
                version: v["name"].as_str().unwrap_or("v1").to_string(),
                kind: spec["names"]["kind"].as_str().unwrap_or("").to_string(),
                plural: spec["names"]["plural"].as_str().unwrap_or("").to_string(),
                namespaced,
            });
        }
    }
    inner.put(
        (
            t.kind.group.clone(),
            t.kind.plural.clone(),
            t.namespace.clone(),
            name.to_string(),
        ),
        Stored { object, applied },
    );
}

/// `managedFields` with each apply manager's `fieldsV1`: the fields of its
/// applied configuration (`{"f:spec": {"f:replicas": {}}}`). Lists are
/// owned whole, as atomic lists are; the API server tracks the items of
/// associative lists (`k:{"name":…}`) separately, which this does not.
fn managed_fields(applied: &BTreeMap<String, Value>) -> Value {
    Value::Array(
        applied
            .iter()
            .map(|(m, cfg)| {
                let mut paths = Vec::new();
                leaves(cfg, String::new(), &mut paths);
                let mut fields = json!({});
                for (path, _) in paths {
                    if [".apiVersion", ".kind", ".metadata.name", ".metadata.namespace"]
                        .contains(&path.as_str())
                    {
                        continue;
                    }
                    let mut at = &mut fields;
                    for part in path.trim_start_matches('.').split('.') {
                        at = &mut at[format!("f:{part}")];
                        if at.is_null() {
                            *at = json!({});
                        }
                    }
                }
                json!({"manager": m, "operation": "Apply", "apiVersion": "v1", "time": now(), "fieldsType": "FieldsV1", "fieldsV1": fields})
            })
            .collect(),
    )
}

/// A forced apply takes the fields it sets to another value away from the
/// other managers (they stop owning them), as the API server does.
fn transfer(applied: &mut BTreeMap<String, Value>, manager: &str, new: &Value) {
    let mut mine = Vec::new();
    leaves(new, String::new(), &mut mine);
    for (_, cfg) in applied.iter_mut().filter(|(m, _)| *m != manager) {
        let mut theirs = Vec::new();
        leaves(cfg, String::new(), &mut theirs);
        for (path, value) in &mine {
            if theirs.iter().any(|(p, v)| p == path && v != value) {
                let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
                remove_path(cfg, &parts);
            }
        }
    }
}

fn remove_path(v: &mut Value, parts: &[&str]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    let Some(map) = v.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(*first);
    } else if let Some(child) = map.get_mut(*first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(serde_json::Map::is_empty) {
            map.remove(*first);
        }
    }
}

/// Bumps resourceVersion, and generation when anything outside metadata
/// and status changed; keeps identity fields.
fn update(inner: &mut Inner, old: &Value, mut new: Value) -> Value {
    for field in ["uid", "creationTimestamp", "generation"] {
        new["metadata"][field] = old["metadata"][field].clone();
    }
    if old.get("status").is_some() && new.get("status").is_none() {
        new["status"] = old["status"].clone();
    }
    let spec_of = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    let changed = spec_of(old) != spec_of(&new);
    let same_meta = {
        let strip = |v: &Value| {
            let mut m = v["metadata"].clone();
            if let Some(o) = m.as_object_mut() {
                o.remove("resourceVersion");
                o.remove("managedFields");
            }
            m
        };
        strip(old) == strip(&new)
    };
    if changed {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if changed || !same_meta {
        inner.resource_version += 1;
        new["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
    } else {
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    }
    new
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ()> {
    let _ = headers;
    serde_json::from_slice(body)
        .or_else(|_| serde_norway::from_slice(body))
        .map_err(|_| ())
}

/// Update validation of immutable fields, as the API server's
/// `Validate*Update` functions word it (values printed as JSON, not Go).
fn immutable(kind: &Kind, name: &str, old: &Value, new: &Value) -> Option<Response> {
    let what = if kind.group.is_empty() {
        kind.kind.clone()
    } else {
        format!("{}.{}", kind.kind, kind.group)
    };
    let refuse = |field: &str, value: &Value, detail: &str| {
        let message = format!("Invalid value: {value}: {detail}");
        status(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {field}: {message}"),
            json!({"name": name, "group": kind.group, "kind": kind.kind, "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]}),
        )
    };
    let changed = |pointer: &str| {
        let (a, b) = (old.pointer(pointer), new.pointer(pointer));
        a.is_some_and(|a| !a.is_null()) && b.is_some_and(|b| !b.is_null()) && a != b
    };
    let checks: &[(&str, &str)] = match (kind.group.as_str(), kind.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            &[("/spec/selector", "spec.selector")]
        }
        ("batch", "Job") => &[
            ("/spec/selector", "spec.selector"),
            ("/spec/template", "spec.template"),
        ],
        ("", "Service") => &[("/spec/clusterIP", "spec.clusterIP")],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            &[("/roleRef", "roleRef")]
        }
        _ => &[],
    };
    for (pointer, field) in checks {
        if changed(pointer) {
            return Some(refuse(
                field,
                new.pointer(pointer).unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    if matches!(kind.kind.as_str(), "ConfigMap" | "Secret")
        && kind.group.is_empty()
        && old["immutable"] == json!(true)
        && (old["data"] != new["data"] || old["binaryData"] != new["binaryData"])
    {
        return Some(status(
            422,
            "Invalid",
            format!(
                "{what} \"{name}\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
            ),
            json!({"name": name, "group": "", "kind": kind.kind, "causes": [{"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable when `immutable` is set", "field": "data"}]}),
        ));
    }
    None
}

/// The few schema checks kdeploy's tests rely on, with the API's wording.
fn validate(kind: &Kind, name: &str, object: &Value) -> Option<Response> {
    let invalid = |field: &str, detail: String| {
        let what = if kind.group.is_empty() {
            kind.kind.clone()
        } else {
            format!("{}.{}", kind.kind, kind.group)
        };
        status(
            422,
            "Invalid",
            format!("{what} \"{name}\" is invalid: {field}: {detail}"),
            json!({"name": name, "group": kind.group, "kind": kind.kind, "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]}),
        )
    };
    if object["metadata"]["name"].as_str() != Some(name) {
        return Some(invalid(
            "metadata.name",
            "Invalid value: the name of the object does not match the name on the URL".into(),
        ));
    }
    if kind.kind == "Deployment" {
        let replicas = &object["spec"]["replicas"];
        if !replicas.is_null() && !replicas.is_i64() {
            return Some(invalid(
                "spec.replicas",
                format!("Invalid value: {replicas}: spec.replicas in body must be of type integer"),
            ));
        }
        if object["spec"]["selector"].is_null() {
            return Some(invalid("spec.selector", "Required value".into()));
        }
    }
    None
}

/// Leaf paths of a value, for field ownership.
fn leaves(v: &Value, prefix: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, format!("{prefix}.{k}"), out);
            }
        }
        other => out.push((prefix, other.clone())),
    }
}

fn conflicts(
    applied: &BTreeMap<String, Value>,
    manager: &str,
    new: &Value,
) -> Option<(String, String)> {
    let mut mine = Vec::new();
    leaves(new, String::new(), &mut mine);
    for (other, cfg) in applied.iter().filter(|(m, _)| *m != manager) {
        let mut theirs = Vec::new();
        leaves(cfg, String::new(), &mut theirs);
        for (path, value) in &mine {
            if path.starts_with(".metadata.name")
                || path.starts_with(".apiVersion")
                || path.starts_with(".kind")
            {
                continue;
            }
            if let Some((_, v)) = theirs.iter().find(|(p, _)| p == path)
                && v != value
            {
                return Some((other.clone(), path.clone()));
            }
        }
    }
    None
}

/// Removes fields the manager applied before but no longer applies.
fn remove_owned(object: &mut Value, previous: &Value, new: &Value) {
    if let (Value::Object(o), Value::Object(p)) = (object, previous) {
        for (k, pv) in p {
            match new.get(k) {
                None => {
                    o.remove(k);
                }
                Some(nv) => {
                    if let Some(ov) = o.get_mut(k) {
                        remove_owned(ov, pv, nv);
                    }
                }
            }
        }
    }
}

/// Maps merge, everything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge(bv, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn matches_selector(object: &Value, selector: &str) -> bool {
    let labels: Map<String, Value> = object["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|req| match req.split_once('=') {
            Some((k, v)) => labels.get(k.trim_end_matches('=')).and_then(Value::as_str) == Some(v),
            None => labels.contains_key(req),
        })
}

/// `metadata.name=X` of a fieldSelector, the only field selector supported.
fn field_name(query: &BTreeMap<String, String>) -> Option<String> {
    query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string)
}

/// A watch: the events after `resourceVersion` (all objects as ADDED for
/// "0"), then live ones, as JSON lines, until `timeoutSeconds` (30 at most).
fn watch(inner: &mut Inner, t: &Target, query: &BTreeMap<String, String>) -> Response {
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let name = field_name(query);
    let (group, plural, ns) = (
        t.kind.group.clone(),
        t.kind.plural.clone(),
        t.namespace.clone(),
    );
    let matches = move |key: &Key| {
        key.0 == group
            && key.1 == plural
            && (ns.is_empty() || key.2 == ns)
            && name.as_ref().is_none_or(|n| key.3 == *n)
    };
    let line =
        |kind: &str, object: &Value| format!("{}\n", json!({"type": kind, "object": object}));
    if since != 0 && since < inner.compacted_to {
        let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {since} ({})", inner.compacted_to), "reason": "Expired", "code": 410});
        return (StatusCode::OK, line("ERROR", &gone)).into_response();
    }
    let backlog: Vec<String> = if since == 0 {
        inner
            .objects
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(_, s)| line("ADDED", &s.object))
            .collect()
    } else {
        inner
            .events
            .iter()
            .filter(|e| e.rv > since && matches(&e.key))
            .map(|e| line(e.kind, &e.object))
            .collect()
    };
    let rx = inner
        .watchers
        .get_or_insert_with(|| tokio::sync::broadcast::channel(4096).0)
        .subscribe();
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30u64)
        .min(30);
    let live = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    use futures::StreamExt as _;
    let live = live.filter_map(move |ev| {
        let out = if ev.kind == "EXPIRE" {
            Some(line("ERROR", &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410})))
        } else {
            matches(&ev.key).then(|| line(ev.kind, &ev.object))
        };
        futures::future::ready(out)
    });
    let stream = futures::stream::iter(backlog)
        .chain(live)
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)))
        .map(|l| Ok::<_, std::io::Error>(Bytes::from(l)));
    let mut resp = axum::body::Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// How the simulated controllers treat a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Rolls out one replica per tick; Jobs complete after a few ticks.
    Healthy,
    /// The image cannot be pulled: ErrImagePull, then ImagePullBackOff.
    ImagePullBackOff,
    /// The container is OOMKilled (exit 137) and restarts: CrashLoopBackOff.
    CrashLoopOomKilled,
    /// Pods run but never become ready.
    NeverReady,
    /// The Job fails its backoffLimit.
    JobFails,
    /// Deletion waits this many ticks (a finalizer).
    SlowDelete(u32),
}

impl Sim {
    /// Sets how the controllers treat an object (`kind` as in `Deployment`).
    pub fn behave(&self, kind: &str, namespace: &str, name: &str, b: Behaviour) {
        self.lock()
            .behaviours
            .insert((kind.into(), namespace.into(), name.into()), b);
    }

    /// Sets how the controllers treat workloads running `image`.
    pub fn behave_image(&self, image: &str, b: Behaviour) {
        self.lock().image_behaviours.insert(image.into(), b);
    }

    /// What `kubectl logs` prints for the pods of a workload.
    pub fn set_logs(&self, namespace: &str, workload: &str, text: &str) {
        self.lock()
            .logs
            .insert((namespace.into(), workload.into()), text.into());
    }

    /// Forgets watch history: watches from older versions get 410 Gone,
    /// and open watches are ended with it.
    pub fn expire_watches(&self) {
        let mut inner = self.lock();
        inner.compacted_to = inner.resource_version + 1;
        inner.events.clear();
        if let Some(tx) = &inner.watchers {
            let _ = tx.send(WatchEvent {
                rv: 0,
                key: Default::default(),
                kind: "EXPIRE",
                object: Value::Null,
            });
        }
    }

    /// Makes a Deployment complete at once (as a controller would at the end
    /// of a rollout).
    pub fn mark_ready(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        let key = (
            "apps".to_string(),
            "deployments".to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        let Some(obj) = inner.objects.get(&key).map(|s| s.object.clone()) else {
            return;
        };
        let n = obj["spec"]["replicas"].as_i64().unwrap_or(1);
        let status = json!({"observedGeneration": obj["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n,
            "conditions": [condition("Progressing", "True", "NewReplicaSetAvailable", "done")]});
        set_status(&mut inner, &key, status);
    }

    /// One step of the simulated controllers, for tests that run none in
    /// the background (e.g. to let the namespace controller empty and
    /// remove a Terminating namespace).
    pub fn step_controllers(&self) {
        controllers_step(&mut self.lock(), 0);
    }

    /// Starts the simulated controllers: one step every `tick`.
    pub fn run_controllers(&self, tick: Duration) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(tick).await;
                n += 1;
                controllers_step(&mut lock(&inner), n);
            }
        });
    }
}

fn behaviour(inner: &Inner, kind: &str, ns: &str, name: &str) -> Behaviour {
    if let Some(b) = inner
        .behaviours
        .get(&(kind.to_string(), ns.to_string(), name.to_string()))
    {
        return b.clone();
    }
    let key = match kind {
        "Deployment" => ("apps", "deployments"),
        "Job" => ("batch", "jobs"),
        _ => return Behaviour::Healthy,
    };
    let image = inner
        .objects
        .get(&(
            key.0.to_string(),
            key.1.to_string(),
            ns.to_string(),
            name.to_string(),
        ))
        .and_then(|s| {
            s.object["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .map(str::to_string)
        });
    image
        .and_then(|i| inner.image_behaviours.get(&i).cloned())
        .unwrap_or(Behaviour::Healthy)
}

fn set_status(inner: &mut Inner, key: &Key, status: Value) {
    let Some(mut stored) = inner.objects.get(key).cloned() else {
        return;
    };
    if stored.object["status"] == status {
        return;
    }
    stored.object["status"] = status;
    inner.resource_version += 1;
    stored.object["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
    inner.put(key.clone(), stored);
}

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now(), "lastUpdateTime": now()})
}

/// Pods of a workload revision, with container states by behaviour.
#[allow(clippy::too_many_arguments)]
fn sync_pods(
    inner: &mut Inner,
    ns: &str,
    owner: &str,
    hash: &str,
    labels: &Value,
    count: i64,
    ready: i64,
    b: &Behaviour,
    step: u64,
) {
    for i in 0..count {
        let name = format!("{owner}-{hash}-{i}");
        let mut pod_labels = labels.clone();
        pod_labels["pod-template-hash"] = json!(hash);
        let (phase, state, ready_flag, restarts, last) = match b {
            Behaviour::ImagePullBackOff => {
                let reason = if step.is_multiple_of(2) {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                (
                    "Pending",
                    json!({"waiting": {"reason": reason, "message": format!("Back-off pulling image \"ghcr.io/example/{owner}\"")}}),
                    false,
                    0,
                    Value::Null,
                )
            }
            Behaviour::CrashLoopOomKilled => (
                "Running",
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}}),
                false,
                step as i64,
                json!({"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
            ),
            Behaviour::NeverReady => (
                "Running",
                json!({"running": {"startedAt": now()}}),
                false,
                0,
                Value::Null,
            ),
            _ => (
                "Running",
                json!({"running": {"startedAt": now()}}),
                i < ready,
                0,
                Value::Null,
            ),
        };
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": pod_labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{owner}-{hash}"), "uid": "rs", "controller": true}]},
            "spec": {"containers": [{"name": owner, "image": "x"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready_flag { "True" } else { "False" }}],
                "containerStatuses": [{"name": owner, "ready": ready_flag, "restartCount": restarts, "state": state, "lastState": last, "image": "x", "imageID": ""}]}
        });
        if let Some(reason) =
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str()
        {
            let event_name = format!("{name}.{}", reason.to_lowercase());
            let event_key = (
                String::new(),
                "events".to_string(),
                ns.to_string(),
                event_name.clone(),
            );
            if !inner.objects.contains_key(&event_key)
                && let Some(kind) = inner.kinds.iter().find(|k| k.kind == "Event").cloned()
            {
                let (ev_reason, message) = match reason {
                    "CrashLoopBackOff" => (
                        "BackOff",
                        "Back-off restarting failed container".to_string(),
                    ),
                    other => ("Failed", format!("Error: {other}")),
                };
                let event = json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": event_name, "namespace": ns},
                    "involvedObject": {"kind": "Pod", "name": name, "namespace": ns},
                    "type": "Warning", "reason": ev_reason, "message": message, "count": 1});
                let stored = finalize_new(inner, event, &kind, ns);
                inner.put(
                    event_key,
                    Stored {
                        object: stored,
                        applied: BTreeMap::new(),
                    },
                );
            }
        }
        let key = (
            String::new(),
            "pods".to_string(),
            ns.to_string(),
            name.clone(),
        );
        match inner.objects.get(&key).cloned() {
            Some(mut existing) => {
                if existing.object["status"] != pod["status"] {
                    existing.object["status"] = pod["status"].clone();
                    inner.resource_version += 1;
                    existing.object["metadata"]["resourceVersion"] =
                        json!(inner.resource_version.to_string());
                    inner.put(key, existing);
                }
            }
            None => {
                let kind = inner.kinds.iter().find(|k| k.kind == "Pod").cloned();
                if let Some(kind) = kind {
                    let stored = finalize_new(inner, pod, &kind, ns);
                    inner.put(
                        key,
                        Stored {
                            object: stored,
                            applied: BTreeMap::new(),
                        },
                    );
                }
            }
        }
    }
}

fn template_hash(template: &Value) -> String {
    let mut h: u64 = 1469598103934665603;
    for b in template.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
    }
    format!("{:x}", h & 0xffff_ffff)
}

fn controllers_step(inner: &mut Inner, step: u64) {
    let keys: Vec<Key> = inner.objects.keys().cloned().collect();
    for key in keys {
        let Some(obj) = inner.objects.get(&key).map(|s| s.object.clone()) else {
            continue;
        };
        let (ns, name) = (key.2.clone(), key.3.clone());
        // The namespace controller: a Terminating namespace's content is
        // deleted (objects with finalizers go when those are done), then
        // the namespace itself.
        if key.1 == "namespaces" && obj["metadata"]["deletionTimestamp"].is_string() {
            let inside: Vec<Key> = inner
                .objects
                .keys()
                .filter(|k| k.2 == name)
                .cloned()
                .collect();
            if inside.is_empty() {
                inner.del(&key);
            }
            for k in inside {
                let held = inner
                    .objects
                    .get(&k)
                    .is_some_and(|s| s.object["metadata"]["deletionTimestamp"].is_string());
                if !held {
                    inner.del(&k);
                }
            }
            continue;
        }
        // Deletions held by a finalizer.
        if obj["metadata"]["deletionTimestamp"].is_string() {
            let left = obj["metadata"]["annotations"]["sim/delete-ticks"]
                .as_str()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            if left == 0 {
                inner.del(&key);
            } else if let Some(mut stored) = inner.objects.get(&key).cloned() {
                stored.object["metadata"]["annotations"]["sim/delete-ticks"] =
                    json!((left - 1).to_string());
                inner.objects.insert(key.clone(), stored);
            }
            continue;
        }
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        match (key.0.as_str(), key.1.as_str()) {
            ("apps", "deployments") => {
                let b = behaviour(inner, "Deployment", &ns, &name);
                let desired = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                let mut st = obj["status"].clone();
                if !st.is_object() {
                    st = json!({});
                }
                let hash = template_hash(&obj["spec"]["template"]);
                if st["observedGeneration"].as_i64() != Some(generation) {
                    st = json!({"observedGeneration": generation, "replicas": desired, "updatedReplicas": 0,
                        "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": desired,
                        "conditions": [condition("Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{name}-{hash}\" is progressing."))]});
                    let mut rs_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
                    rs_labels["pod-template-hash"] = json!(hash);
                    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": rs_labels,
                            "annotations": {"deployment.kubernetes.io/revision": generation.to_string()},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": obj["metadata"]["uid"], "controller": true}]},
                        "spec": {"replicas": desired, "selector": obj["spec"]["selector"], "template": obj["spec"]["template"]}});
                    let rs_key = (
                        "apps".to_string(),
                        "replicasets".to_string(),
                        ns.clone(),
                        format!("{name}-{hash}"),
                    );
                    // Going back to an old template reuses its ReplicaSet at a new revision.
                    if let Some(mut existing) = inner.objects.get(&rs_key).cloned() {
                        existing.object["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                            json!(generation.to_string());
                        inner.resource_version += 1;
                        existing.object["metadata"]["resourceVersion"] =
                            json!(inner.resource_version.to_string());
                        inner.put(rs_key.clone(), existing);
                    } else if let Some(kind) =
                        inner.kinds.iter().find(|k| k.kind == "ReplicaSet").cloned()
                    {
                        let stored = finalize_new(inner, rs, &kind, &ns);
                        inner.put(
                            rs_key,
                            Stored {
                                object: stored,
                                applied: BTreeMap::new(),
                            },
                        );
                    }
                    set_status(inner, &key, st);
                    continue;
                }
                let updated = st["updatedReplicas"].as_i64().unwrap_or(0);
                let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
                match b {
                    Behaviour::Healthy => {
                        let n = (updated + 1).min(desired);
                        st["updatedReplicas"] = json!(n);
                        st["readyReplicas"] = json!(n);
                        st["availableReplicas"] = json!(n);
                        st["unavailableReplicas"] = json!(desired - n);
                        st["replicas"] = json!(desired);
                        if n == desired {
                            st["conditions"] = json!([
                                condition(
                                    "Available",
                                    "True",
                                    "MinimumReplicasAvailable",
                                    "Deployment has minimum availability."
                                ),
                                condition(
                                    "Progressing",
                                    "True",
                                    "NewReplicaSetAvailable",
                                    &format!(
                                        "ReplicaSet \"{name}-{hash}\" has successfully progressed."
                                    )
                                )
                            ]);
                        }
                        sync_pods(inner, &ns, &name, &hash, &labels, desired, n, &b, step);
                    }
                    other => {
                        st["updatedReplicas"] = json!(desired);
                        st["readyReplicas"] = json!(0);
                        st["availableReplicas"] = json!(0);
                        st["unavailableReplicas"] = json!(desired);
                        sync_pods(inner, &ns, &name, &hash, &labels, desired, 0, &other, step);
                    }
                }
                set_status(inner, &key, st);
            }
            ("batch", "jobs") => {
                let b = behaviour(inner, "Job", &ns, &name);
                let mut st = if obj["status"].is_object() {
                    obj["status"].clone()
                } else {
                    json!({"active": 1, "startTime": now()})
                };
                let ticks = st["sim/ticks"].as_u64().unwrap_or(0) + 1;
                st["sim/ticks"] = json!(ticks);
                if ticks >= 3 && st["conditions"].is_null() {
                    st["active"] = json!(0);
                    if b == Behaviour::JobFails {
                        st["failed"] = json!(7);
                        st["conditions"] = json!([condition(
                            "Failed",
                            "True",
                            "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit"
                        )]);
                    } else {
                        st["succeeded"] = json!(1);
                        st["conditions"] = json!([condition("Complete", "True", "", "")]);
                    }
                }
                set_status(inner, &key, st);
            }
            _ => {}
        }
    }
}
