//! Issue endpoints of the fake: list (open issues and pull requests, as
//! GitHub lists both, paginated with `Link`), create, update and close.
//! Issues and pull requests share one number sequence, as on GitHub.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, patch};
use serde_json::{Value, json};

use super::{FakeGitHub, Inner, REPO, Shared, json_response, lock, with_host};

pub(super) fn routes(app: Router<Shared>, prefix: &str) -> Router<Shared> {
    let repo = format!("{prefix}/repos/{{owner}}/{{repo}}");
    app.route(&format!("{repo}/issues"), get(list).post(create))
        .route(&format!("{repo}/issues/{{number}}"), patch(update))
}

/// The next issue or pull request number.
pub(super) fn next_number(inner: &Inner) -> u64 {
    let pulls = inner.git_pull_numbers().last().copied().unwrap_or(0);
    let issues = inner.issues.keys().last().copied().unwrap_or(0);
    pulls.max(issues) + 1
}

fn validation(field: &str) -> Response {
    json_response(
        422,
        json!({"message": "Validation Failed", "errors": [{"resource": "Issue", "code": "missing_field", "field": field}], "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue", "status": "422"}),
        &[],
    )
}

async fn list(
    State(state): State<Shared>,
    uri: axum::extract::OriginalUri,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = lock(&state);
    let wanted = q.get("state").map_or("open", String::as_str);
    let mut all: Vec<(u64, Value)> = inner
        .issues
        .iter()
        .map(|(n, i)| (*n, i.clone()))
        .chain(inner.git_pulls_as_issues())
        .filter(|(_, i)| wanted == "all" || i["state"] == wanted)
        .collect();
    // Newest first, GitHub's default sort.
    all.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let size: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100)
        .min(inner.page_size.max(1));
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(size).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|(_, i)| i.clone())
        .collect();
    let mut extra = Vec::new();
    if page < last {
        extra.push((
            "link",
            format!(
                "<http://{{host}}{{prefix}}/repos/{REPO}/issues?state={wanted}&per_page={size}&page={}>; rel=\"next\"",
                page + 1
            ),
        ));
    }
    drop(inner);
    with_host(
        json_response(200, Value::Array(items), &extra),
        &headers,
        &uri,
    )
}

async fn create(State(state): State<Shared>, bytes: Bytes) -> Response {
    let Ok(b) = serde_json::from_slice::<Value>(&bytes) else {
        return json_response(400, json!({"message": "Problems parsing JSON"}), &[]);
    };
    let Some(title) = b["title"].as_str().filter(|t| !t.is_empty()) else {
        return validation("title");
    };
    let mut inner = lock(&state);
    let number = next_number(&inner);
    let issue = json!({
        "id": 3_000_000 + number, "node_id": format!("I_{number}"), "number": number,
        "title": title, "body": b["body"], "state": "open", "state_reason": null, "locked": false,
        "url": format!("https://api.github.com/repos/{REPO}/issues/{number}"),
        "html_url": format!("https://github.com/{REPO}/issues/{number}"),
        "user": {"login": "github-actions[bot]", "type": "Bot"}, "labels": [], "comments": 0,
    });
    inner.issues.insert(number, issue.clone());
    json_response(201, issue, &[])
}

async fn update(
    State(state): State<Shared>,
    Path((_o, _r, number)): Path<(String, String, u64)>,
    bytes: Bytes,
) -> Response {
    let Ok(b) = serde_json::from_slice::<Value>(&bytes) else {
        return json_response(400, json!({"message": "Problems parsing JSON"}), &[]);
    };
    let mut inner = lock(&state);
    let Some(issue) = inner.issues.get_mut(&number) else {
        return json_response(
            404,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/issues/issues#update-an-issue", "status": "404"}),
            &[],
        );
    };
    for field in ["title", "body", "state", "state_reason"] {
        if let Some(v) = b.get(field) {
            issue[field] = v.clone();
        }
    }
    json_response(200, issue.clone(), &[])
}

/// An issue as the fake holds it.
#[derive(Debug, Clone)]
pub struct IssueView {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub state: String,
}

impl FakeGitHub {
    /// Every issue (not pull requests), by number.
    pub fn issues(&self) -> Vec<IssueView> {
        self.lock()
            .issues
            .values()
            .map(|i| IssueView {
                number: i["number"].as_u64().unwrap_or(0),
                title: i["title"].as_str().unwrap_or("").to_string(),
                body: i["body"].as_str().unwrap_or("").to_string(),
                state: i["state"].as_str().unwrap_or("").to_string(),
            })
            .collect()
    }
}
