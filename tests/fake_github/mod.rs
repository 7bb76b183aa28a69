//! An in-process fake of the GitHub REST API endpoints kdeploy calls, over
//! real HTTP on 127.0.0.1. It is a simulator, not GitHub: it keeps comments
//! in memory and follows the real paths, status codes, JSON shapes, `Link`
//! pagination (switching to `/repositories/{id}/…` URLs as GitHub does),
//! rate-limit headers and error bodies. Faults can be queued per request.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde_json::{Value, json};

mod git;
mod issues;

/// The repository the fake serves, as in the octokit/webhooks payloads.
pub const REPO: &str = "Codertocat/Hello-World";
const REPO_ID: u64 = 186853002;

/// A response to return instead of handling a request.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Fault {
    /// A 502 as GitHub's front end sends it.
    pub fn bad_gateway() -> Fault {
        Fault {
            status: 502,
            headers: vec![],
            body: json!({"message": "Server Error"}),
        }
    }

    /// A 422 as GitHub sends for a body it will not take.
    pub fn unprocessable() -> Fault {
        Fault {
            status: 422,
            headers: vec![],
            body: json!({"message": "Validation Failed", "errors": [{"resource": "CheckRun", "code": "invalid", "field": "head_sha"}], "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run"}),
        }
    }

    /// A secondary rate limit: 429 with `retry-after`.
    pub fn rate_limited(seconds: u64) -> Fault {
        Fault {
            status: 429,
            headers: vec![("retry-after", seconds.to_string())],
            body: json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}),
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    comments: BTreeMap<u64, Value>,
    next_id: u64,
    requests: Vec<Request>,
    /// Faults for the next requests, each for any path or only paths
    /// containing a substring.
    faults: VecDeque<(Option<&'static str>, Fault)>,
    /// Writes answer 403 "Resource not accessible by integration".
    read_only: bool,
    check_runs: BTreeMap<u64, Value>,
    deployments: BTreeMap<u64, (Value, Vec<Value>)>,
    page_size: usize,
    /// Commits, trees, refs and pull requests.
    git: git::Git,
    /// Paths (substrings) whose writes answer 403, for a token that lacks
    /// one permission.
    denied: Vec<(&'static str, &'static str)>,
    /// `POST /pulls` answers 403 as when the repository does not let
    /// Actions open pull requests.
    no_pull_creation: bool,
    /// Issues by number.
    issues: BTreeMap<u64, Value>,
    /// The token is a user's (`GET /user` answers this login, comments
    /// are theirs); `None` is an installation token (`GITHUB_TOKEN`).
    user_login: Option<String>,
    /// The repository was renamed (or transferred): its old paths answer
    /// 301 (reads) and 307 (writes) to `/repositories/<id>/…`, as GitHub
    /// does; `Some(origin)` sends them to another host instead.
    renamed: Option<Option<String>>,
}

/// A running fake.
#[derive(Clone)]
pub struct FakeGitHub {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:PORT`, the `GITHUB_API_URL`.
    pub url: String,
}

impl FakeGitHub {
    /// Starts the fake on a free port in the current tokio runtime.
    pub async fn start() -> FakeGitHub {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 1_000_000,
            page_size: 2,
            ..Inner::default()
        }));
        // GitHub Enterprise Server serves the same API under /api/v3.
        let mut app = Router::new();
        for prefix in ["", "/api/v3"] {
            app = app
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/issues/{{number}}/comments"),
                    get(list_comments).post(create_comment),
                )
                .route(
                    &format!("{prefix}/repositories/{{id}}/issues/{{number}}/comments"),
                    get(list_comments_by_id),
                )
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/issues/comments/{{id}}"),
                    patch(update_comment).delete(delete_comment),
                )
                .route(&format!("{prefix}/user"), get(authenticated_user))
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/check-runs"),
                    axum::routing::post(create_check_run),
                )
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/check-runs/{{id}}"),
                    patch(update_check_run),
                )
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/commits/{{sha}}/check-runs"),
                    get(list_check_runs_for_ref),
                )
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/deployments"),
                    axum::routing::post(create_deployment),
                )
                .route(
                    &format!("{prefix}/repos/{{owner}}/{{repo}}/deployments/{{id}}/statuses"),
                    axum::routing::post(create_deployment_status),
                );
            app = git::routes(app, prefix);
            app = issues::routes(app, prefix);
        }
        let app = app.fallback(not_found).with_state(inner.clone());
        // Redirects are answered before routing, and `/repositories/<id>/…`
        // is served by the same handlers: an outer router whose only
        // service is the inner one. Every request is recorded first.
        let app = Router::new()
            .fallback_service(app)
            .layer(axum::middleware::from_fn_with_state(
                inner.clone(),
                renamed_repository,
            ))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitHub { inner, url }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues faults for the next requests.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock()
            .faults
            .extend(faults.into_iter().map(|f| (None, f)));
    }

    /// Queues faults for the next requests whose path contains `path`.
    pub fn fail_next_on(&self, path: &'static str, faults: impl IntoIterator<Item = Fault>) {
        self.lock()
            .faults
            .extend(faults.into_iter().map(|f| (Some(path), f)));
    }

    /// Makes every write answer 403, as for a read-only token.
    pub fn read_only(&self) {
        self.lock().read_only = true;
    }

    /// Makes writes to paths containing `path` answer 403 naming
    /// `permission` (`contents=write`), as for a token without it.
    pub fn deny(&self, path: &'static str, permission: &'static str) {
        self.lock().denied.push((path, permission));
    }

    /// Makes `POST /pulls` answer as GitHub does when the repository's
    /// Actions settings do not allow creating pull requests.
    pub fn forbid_pull_creation(&self) {
        self.lock().no_pull_creation = true;
    }

    /// Comments on issue `number`, oldest first: (id, body).
    /// Replaces comment `id`'s body, as its author editing it would.
    pub fn edit_comment(&self, id: u64, body: &str) {
        if let Some(c) = self.lock().comments.get_mut(&id) {
            c["body"] = Value::String(body.to_string());
        }
    }

    pub fn comments(&self, number: u64) -> Vec<(u64, String)> {
        self.lock()
            .comments
            .values()
            .filter(|c| c["_issue"] == number)
            .map(|c| {
                (
                    c["id"].as_u64().unwrap_or(0),
                    c["body"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Check runs with every annotation they received.
    pub fn check_runs(&self) -> Vec<Value> {
        self.lock().check_runs.values().cloned().collect()
    }

    /// Deployments with their statuses, oldest first.
    pub fn deployments(&self) -> Vec<(Value, Vec<Value>)> {
        self.lock().deployments.values().cloned().collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Adds a comment by someone else (a person, `octocat`).
    pub fn add_comment(&self, number: u64, body: &str) {
        self.add_comment_by(number, body, "octocat", "User");
    }

    /// Adds a comment by `login` (of `kind` `User` or `Bot`).
    pub fn add_comment_by(&self, number: u64, body: &str, login: &str, kind: &str) {
        let mut inner = self.lock();
        let c = new_comment(&mut inner, number, body);
        let id = c["id"].as_u64().unwrap_or(0);
        let mut c = c;
        c["user"] = json!({"login": login, "id": 583231, "type": kind, "site_admin": false});
        inner.comments.insert(id, c);
    }

    /// Renames the repository: its old paths redirect to
    /// `/repositories/<id>/…` on this host, as GitHub does.
    pub fn rename_repository(&self) {
        self.lock().renamed = Some(None);
    }

    /// Like [`FakeGitHub::rename_repository`], redirecting to `origin`
    /// (another host).
    pub fn redirect_elsewhere(&self, origin: &str) {
        self.lock().renamed = Some(Some(origin.to_string()));
    }

    /// Makes the token a user's (a personal access token of `login`).
    pub fn as_user(&self, login: &str) {
        self.lock().user_login = Some(login.to_string());
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn rate_headers(h: &mut HeaderMap) {
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("4990"));
    h.insert("x-ratelimit-reset", HeaderValue::from_static("4102444800"));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    h.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
}

fn json_response(status: u16, body: Value, extra: &[(&str, String)]) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if body.is_null() {
        status.into_response()
    } else {
        (status, axum::Json(body)).into_response()
    };
    rate_headers(resp.headers_mut());
    for (k, v) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(*k),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// Records every request, checks authentication and applies queued faults.
/// GitHub's answer for a renamed repository: 301 on GET, 307 on writes,
/// `Location` on `/repositories/<id>/…` (the path after the repository kept,
/// query included); that location is then served as the old one was.
async fn renamed_repository(
    State(state): State<Shared>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let renamed = lock(&state).renamed.clone();
    let Some(target) = renamed else {
        return next.run(req).await;
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    for prefix in ["", "/api/v3"] {
        let old = format!("{prefix}/repos/{REPO}/");
        if let Some(rest) = path_and_query.strip_prefix(&old) {
            let origin = target.clone().unwrap_or_else(|| {
                let host = req
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1");
                format!("http://{host}")
            });
            let status = if req.method() == Method::GET {
                301
            } else {
                307
            };
            let location = format!("{origin}{prefix}/repositories/{REPO_ID}/{rest}");
            return json_response(
                status,
                json!({"message": if status == 301 { "Moved Permanently" } else { "Temporary Redirect" }, "url": location, "documentation_url": "https://docs.github.com/v3/#http-redirects"}),
                &[("location", location.clone())],
            );
        }
        let new = format!("{prefix}/repositories/{REPO_ID}/");
        if let Some(rest) = path_and_query.strip_prefix(&new)
            && let Ok(uri) = format!("{prefix}/repos/{REPO}/{rest}").parse()
        {
            *req.uri_mut() = uri;
            break;
        }
    }
    next.run(req).await
}

async fn record(
    State(state): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 10 << 20)
        .await
        .unwrap_or_default();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let fault = {
        let mut inner = lock(&state);
        inner.requests.push(Request {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            authorization: authorization.clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
        let path = parts.uri.to_string();
        let at = inner
            .faults
            .iter()
            .position(|(on, _)| on.is_none_or(|p| path.contains(p)));
        at.and_then(|i| inner.faults.remove(i)).map(|(_, f)| f)
    };
    if authorization.is_none() {
        return json_response(
            401,
            json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest"}),
            &[],
        );
    }
    if let Some(f) = fault {
        return json_response(f.status, f.body, &f.headers);
    }
    let writes = parts.method != Method::GET;
    let denied = lock(&state)
        .denied
        .iter()
        .find(|(p, _)| parts.uri.path().contains(p))
        .map(|(_, perm)| *perm);
    if let (true, Some(permission)) = (writes, denied) {
        return json_response(
            403,
            json!({"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest", "status": "403"}),
            &[("x-accepted-github-permissions", permission.to_string())],
        );
    }
    if writes && lock(&state).read_only {
        // GitHub names the permission sets that would have allowed the call.
        let path = parts.uri.path();
        let accepted = if path.contains("/check-runs") {
            "checks=write"
        } else if path.contains("/deployments") {
            "deployments=write"
        } else if path.contains("/git/") {
            "contents=write"
        } else if path.contains("/pulls") {
            "pull_requests=write"
        } else if path.ends_with("/issues")
            || path.contains("/issues/") && !path.contains("/comments")
        {
            "issues=write"
        } else {
            "issues=write; pull_requests=write"
        };
        return json_response(
            403,
            json!({"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest", "status": "403"}),
            &[("x-accepted-github-permissions", accepted.to_string())],
        );
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

async fn not_found() -> Response {
    json_response(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
        &[],
    )
}

/// `GET /user`: the login of a user's token; an installation token gets
/// the 403 GitHub answers there.
async fn authenticated_user(State(state): State<Shared>) -> Response {
    match lock(&state).user_login.clone() {
        Some(login) => json_response(
            200,
            json!({"login": login, "id": 583231, "type": "User", "site_admin": false}),
            &[],
        ),
        None => json_response(
            403,
            json!({"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user", "status": "403"}),
            &[],
        ),
    }
}

fn new_comment(inner: &mut Inner, number: u64, body: &str) -> Value {
    inner.next_id += 1;
    let id = inner.next_id;
    let author = match &inner.user_login {
        Some(login) => json!({"login": login, "id": 583231, "type": "User", "site_admin": false}),
        None => {
            json!({"login": "github-actions[bot]", "id": 41898282, "type": "Bot", "site_admin": false})
        }
    };
    json!({
        "url": format!("https://api.github.com/repos/{REPO}/issues/comments/{id}"),
        "html_url": format!("https://github.com/{REPO}/pull/{number}#issuecomment-{id}"),
        "issue_url": format!("https://api.github.com/repos/{REPO}/issues/{number}"),
        "id": id,
        "node_id": format!("IC_kwDO{id}"),
        "user": author,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "author_association": "NONE",
        "body": body,
        "reactions": {"url": format!("https://api.github.com/repos/{REPO}/issues/comments/{id}/reactions"), "total_count": 0},
        "performed_via_github_app": null,
        "_issue": number,
    })
}

fn public(c: &Value) -> Value {
    let mut c = c.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("_issue");
    }
    c
}

fn page(state: &Shared, number: u64, query: &BTreeMap<String, String>) -> Response {
    let inner = lock(state);
    let all: Vec<Value> = inner
        .comments
        .values()
        .filter(|c| c["_issue"] == number)
        .map(public)
        .collect();
    let size = inner.page_size;
    let page: usize = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(size).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    let mut links = Vec::new();
    let base = format!("http://{{host}}{{prefix}}/repositories/{REPO_ID}/issues/{number}/comments");
    if page < last {
        links.push(format!(
            "<{base}?per_page=100&page={}>; rel=\"next\"",
            page + 1
        ));
        links.push(format!("<{base}?per_page=100&page={last}>; rel=\"last\""));
    }
    let mut extra = Vec::new();
    if !links.is_empty() {
        extra.push(("link", links.join(", ")));
    }
    json_response(200, Value::Array(items), &extra)
}

async fn list_comments(
    State(state): State<Shared>,
    uri: axum::extract::OriginalUri,
    headers: HeaderMap,
    Path((_o, _r, number)): Path<(String, String, u64)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    with_host(page(&state, number, &q), &headers, &uri)
}

async fn list_comments_by_id(
    State(state): State<Shared>,
    uri: axum::extract::OriginalUri,
    headers: HeaderMap,
    Path((_id, number)): Path<(u64, u64)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    with_host(page(&state, number, &q), &headers, &uri)
}

/// Puts the request's host and API prefix into `Link` URLs.
fn with_host(
    mut resp: Response,
    headers: &HeaderMap,
    uri: &axum::extract::OriginalUri,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let prefix = if uri.0.path().starts_with("/api/v3/") {
        "/api/v3"
    } else {
        ""
    };
    let link = resp
        .headers()
        .get("link")
        .and_then(|l| l.to_str().ok())
        .map(|l| l.replace("{host}", &host).replace("{prefix}", prefix));
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert("link", v);
    }
    resp
}

fn body_field(bytes: &Bytes) -> Option<String> {
    serde_json::from_slice::<Value>(bytes)
        .ok()?
        .get("body")?
        .as_str()
        .map(str::to_string)
}

fn validation_failed() -> Response {
    json_response(
        422,
        json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "missing_field", "field": "body"}], "documentation_url": "https://docs.github.com/rest/issues/comments"}),
        &[],
    )
}

async fn create_comment(
    State(state): State<Shared>,
    Path((_o, _r, number)): Path<(String, String, u64)>,
    bytes: Bytes,
) -> Response {
    let Some(body) = body_field(&bytes) else {
        return validation_failed();
    };
    if body.chars().count() > 65_536 {
        return json_response(
            422,
            json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "custom", "field": "body", "message": "body is too long (maximum is 65536 characters)"}]}),
            &[],
        );
    }
    let mut inner = lock(&state);
    let c = new_comment(&mut inner, number, &body);
    let id = c["id"].as_u64().unwrap_or(0);
    inner.comments.insert(id, c.clone());
    json_response(
        201,
        public(&c),
        &[(
            "location",
            format!("https://api.github.com/repos/{REPO}/issues/comments/{id}"),
        )],
    )
}

async fn update_comment(
    State(state): State<Shared>,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    bytes: Bytes,
) -> Response {
    let Some(body) = body_field(&bytes) else {
        return validation_failed();
    };
    if body.chars().count() > 65_536 {
        return validation_failed();
    }
    let mut inner = lock(&state);
    match inner.comments.get_mut(&id) {
        Some(c) => {
            c["body"] = Value::String(body);
            c["updated_at"] = Value::String("2026-01-01T00:05:00Z".into());
            json_response(200, public(c), &[])
        }
        None => json_response(404, json!({"message": "Not Found"}), &[]),
    }
}

async fn delete_comment(
    State(state): State<Shared>,
    Path((_o, _r, id)): Path<(String, String, u64)>,
) -> Response {
    match lock(&state).comments.remove(&id) {
        Some(_) => json_response(204, Value::Null, &[]),
        None => json_response(404, json!({"message": "Not Found"}), &[]),
    }
}

fn validation(message: &str) -> Response {
    json_response(
        422,
        json!({"message": "Validation Failed", "errors": [message], "documentation_url": "https://docs.github.com/rest/checks/runs"}),
        &[],
    )
}

/// Checks GitHub's output limits; returns the annotations of the request.
fn check_output(body: &Value) -> Result<Vec<Value>, Box<Response>> {
    let output = &body["output"];
    for field in ["summary", "text"] {
        if output[field]
            .as_str()
            .is_some_and(|s| s.chars().count() > 65_535)
        {
            return Err(Box::new(validation(&format!(
                "output.{field} is too long (maximum is 65535 characters)"
            ))));
        }
    }
    let annotations = output["annotations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if annotations.len() > 50 {
        return Err(Box::new(validation(
            "Only 50 annotations are allowed per request",
        )));
    }
    for a in &annotations {
        if !["notice", "warning", "failure"].contains(&a["annotation_level"].as_str().unwrap_or(""))
            || a["path"].as_str().is_none()
        {
            return Err(Box::new(validation(
                "annotation needs path, start_line, end_line and annotation_level",
            )));
        }
    }
    Ok(annotations)
}

/// `GET /repos/{owner}/{repo}/commits/{ref}/check-runs`, `check_name`
/// filtering by name, as GitHub answers it (`total_count` and
/// `check_runs`, newest first).
async fn list_check_runs_for_ref(
    State(state): State<Shared>,
    Path((_o, _r, sha)): Path<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = lock(&state);
    let runs: Vec<Value> = inner
        .check_runs
        .values()
        .rev()
        .filter(|r| r["head_sha"] == sha.as_str())
        .filter(|r| q.get("check_name").is_none_or(|n| r["name"] == n.as_str()))
        .map(|r| {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("annotations");
            }
            r
        })
        .collect();
    json_response(
        200,
        json!({"total_count": runs.len(), "check_runs": runs}),
        &[],
    )
}

async fn create_check_run(State(state): State<Shared>, bytes: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return validation("invalid JSON");
    };
    if body["name"].as_str().is_none() || body["head_sha"].as_str().is_none() {
        return validation("name and head_sha are required");
    }
    let annotations = match check_output(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let mut inner = lock(&state);
    inner.next_id += 1;
    let id = inner.next_id;
    let run = json!({
        "id": id, "node_id": format!("CR_{id}"), "name": body["name"], "head_sha": body["head_sha"],
        "status": body["status"].as_str().unwrap_or("queued"), "conclusion": body["conclusion"],
        "started_at": body["started_at"], "completed_at": null, "details_url": body["details_url"],
        "url": format!("https://api.github.com/repos/{REPO}/check-runs/{id}"),
        "html_url": format!("https://github.com/{REPO}/runs/{id}"),
        "output": {"title": body["output"]["title"], "summary": body["output"]["summary"], "text": body["output"]["text"], "annotations_count": annotations.len()},
        "annotations": annotations, "app": {"slug": "github-actions"}, "pull_requests": [],
    });
    inner.check_runs.insert(id, run.clone());
    json_response(201, run, &[])
}

async fn update_check_run(
    State(state): State<Shared>,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    bytes: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return validation("invalid JSON");
    };
    let annotations = match check_output(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let mut inner = lock(&state);
    let Some(run) = inner.check_runs.get_mut(&id) else {
        return json_response(404, json!({"message": "Not Found"}), &[]);
    };
    for field in ["status", "conclusion", "completed_at"] {
        if !body[field].is_null() {
            run[field] = body[field].clone();
        }
    }
    if body["output"].is_object() {
        for field in ["title", "summary", "text"] {
            run["output"][field] = body["output"][field].clone();
        }
        if let Some(all) = run["annotations"].as_array_mut() {
            all.extend(annotations);
        }
        run["output"]["annotations_count"] =
            json!(run["annotations"].as_array().map_or(0, Vec::len));
    }
    json_response(200, run.clone(), &[])
}

async fn create_deployment(State(state): State<Shared>, bytes: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return validation("invalid JSON");
    };
    let Some(git_ref) = body["ref"].as_str() else {
        return validation("ref is required");
    };
    let mut inner = lock(&state);
    inner.next_id += 1;
    let id = inner.next_id;
    let d = json!({
        "id": id, "node_id": format!("DE_{id}"), "sha": git_ref, "ref": git_ref, "task": body["task"].as_str().unwrap_or("deploy"),
        "payload": {}, "environment": body["environment"].as_str().unwrap_or("production"),
        "description": body["description"], "transient_environment": body["transient_environment"].as_bool().unwrap_or(false),
        "production_environment": body["production_environment"].as_bool().unwrap_or(false),
        "url": format!("https://api.github.com/repos/{REPO}/deployments/{id}"),
        "statuses_url": format!("https://api.github.com/repos/{REPO}/deployments/{id}/statuses"),
        "_request": body,
    });
    inner.deployments.insert(id, (d.clone(), Vec::new()));
    json_response(201, d, &[])
}

async fn create_deployment_status(
    State(state): State<Shared>,
    Path((_o, _r, id)): Path<(String, String, u64)>,
    bytes: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return validation("invalid JSON");
    };
    let valid = [
        "error",
        "failure",
        "inactive",
        "in_progress",
        "queued",
        "pending",
        "success",
    ];
    if !valid.contains(&body["state"].as_str().unwrap_or("")) {
        return validation("state is not included in the list");
    }
    let mut inner = lock(&state);
    inner.next_id += 1;
    let status_id = inner.next_id;
    let Some((_, statuses)) = inner.deployments.get_mut(&id) else {
        return json_response(404, json!({"message": "Not Found"}), &[]);
    };
    let status = json!({"id": status_id, "state": body["state"], "description": body["description"].as_str().unwrap_or(""),
        "log_url": body["log_url"], "environment_url": body["environment_url"], "target_url": body["log_url"].as_str().unwrap_or("")});
    statuses.push(status.clone());
    json_response(201, status, &[])
}
