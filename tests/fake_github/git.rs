//! The git data and pull request endpoints of the fake: commits, trees,
//! refs and pulls, with GitHub's paths, status codes and bodies (422
//! "Reference already exists", "Update is not a fast forward", "A pull
//! request already exists for …"). Commits of a local repository are
//! "pushed" into it with [`FakeGitHub::push_branch`]; their trees are read
//! from that repository when a request needs them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, patch, post};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{FakeGitHub, Inner, REPO, Shared, json_response, lock};

enum Tree {
    /// A tree of a pushed local repository, read when needed.
    Local(PathBuf),
    /// A tree made through the API: path → content.
    Files(BTreeMap<String, String>),
}

struct Commit {
    tree: String,
    parents: Vec<String>,
    message: String,
}

/// The fake's git objects and pull requests.
#[derive(Default)]
pub(super) struct Git {
    trees: HashMap<String, Tree>,
    commits: HashMap<String, Commit>,
    /// `heads/main` → commit.
    refs: BTreeMap<String, String>,
    pulls: BTreeMap<u64, Value>,
    made: u64,
}

/// A pull request as the fake holds it.
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub state: String,
}

fn git(dir: &FsPath, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hash(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())[..40].to_string()
}

impl Git {
    /// The files of a tree, path → content.
    fn files(&self, tree: &str) -> Option<BTreeMap<String, String>> {
        match self.trees.get(tree)? {
            Tree::Files(f) => Some(f.clone()),
            Tree::Local(dir) => {
                let listing = git(dir, &["ls-tree", "-r", tree]);
                let mut files = BTreeMap::new();
                for line in listing.lines() {
                    let (meta, path) = line.split_once('\t')?;
                    let blob = meta.split_whitespace().nth(2)?;
                    files.insert(path.to_string(), git(dir, &["cat-file", "blob", blob]));
                }
                Some(files)
            }
        }
    }

    fn is_ancestor(&self, old: &str, new: &str) -> bool {
        let mut todo = vec![new.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(c) = todo.pop() {
            if c == old {
                return true;
            }
            if seen.insert(c.clone())
                && let Some(commit) = self.commits.get(&c)
            {
                todo.extend(commit.parents.iter().cloned());
            }
        }
        false
    }

    fn commit_json(&self, sha: &str) -> Option<Value> {
        let c = self.commits.get(sha)?;
        Some(json!({
            "sha": sha, "node_id": format!("C_{sha}"),
            "url": format!("https://api.github.com/repos/{REPO}/git/commits/{sha}"),
            "html_url": format!("https://github.com/{REPO}/commit/{sha}"),
            "author": {"name": "github-actions[bot]", "email": "41898282+github-actions[bot]@users.noreply.github.com", "date": "2026-11-27T10:00:00Z"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "date": "2026-11-27T10:00:00Z"},
            "tree": {"sha": c.tree, "url": format!("https://api.github.com/repos/{REPO}/git/trees/{}", c.tree)},
            "message": c.message,
            "parents": c.parents.iter().map(|p| json!({"sha": p, "url": format!("https://api.github.com/repos/{REPO}/git/commits/{p}"), "html_url": format!("https://github.com/{REPO}/commit/{p}")})).collect::<Vec<_>>(),
            "verification": {"verified": true, "reason": "valid", "signature": null, "payload": null, "verified_at": "2026-11-27T10:00:00Z"},
        }))
    }
}

fn ref_json(name: &str, sha: &str) -> Value {
    json!({
        "ref": format!("refs/{name}"), "node_id": format!("REF_{name}"),
        "url": format!("https://api.github.com/repos/{REPO}/git/refs/{name}"),
        "object": {"sha": sha, "type": "commit", "url": format!("https://api.github.com/repos/{REPO}/git/commits/{sha}")},
    })
}

fn message(status: u16, message: &str, docs: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "documentation_url": format!("https://docs.github.com/rest/{docs}"), "status": status.to_string()}),
        &[],
    )
}

fn not_found(docs: &str) -> Response {
    message(404, "Not Found", docs)
}

fn body(bytes: &Bytes) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

pub(super) fn routes(app: Router<Shared>, prefix: &str) -> Router<Shared> {
    let repo = format!("{prefix}/repos/{{owner}}/{{repo}}");
    app.route(&format!("{repo}/git/commits/{{sha}}"), get(get_commit))
        .route(&format!("{repo}/git/commits"), post(create_commit))
        .route(&format!("{repo}/git/trees"), post(create_tree))
        .route(&format!("{repo}/git/ref/{{*name}}"), get(get_ref))
        .route(&format!("{repo}/git/refs"), post(create_ref))
        .route(
            &format!("{repo}/git/refs/{{*name}}"),
            patch(update_ref).delete(delete_ref),
        )
        .route(
            &format!("{repo}/commits/{{sha}}/pulls"),
            get(pulls_for_commit),
        )
        .route(&format!("{repo}/pulls"), get(list_pulls).post(create_pull))
        .route(
            &format!("{repo}/pulls/{{number}}"),
            get(get_pull).patch(update_pull),
        )
}

type RepoPath = Path<(String, String, String)>;

async fn get_commit(State(state): State<Shared>, Path((_o, _r, sha)): RepoPath) -> Response {
    match lock(&state).git.commit_json(&sha) {
        Some(c) => json_response(200, c, &[]),
        None => not_found("git/commits#get-a-commit-object"),
    }
}

async fn create_tree(State(state): State<Shared>, bytes: Bytes) -> Response {
    let docs = "git/trees#create-a-tree";
    let Some(b) = body(&bytes) else {
        return message(400, "Problems parsing JSON", docs);
    };
    let mut inner = lock(&state);
    let mut files = match b["base_tree"].as_str() {
        Some(base) => match inner.git.files(base) {
            Some(f) => f,
            None => return message(422, "Invalid tree info", docs),
        },
        None => BTreeMap::new(),
    };
    for entry in b["tree"].as_array().cloned().unwrap_or_default() {
        let (Some(path), Some(content)) = (entry["path"].as_str(), entry["content"].as_str())
        else {
            return message(422, "Invalid tree info", docs);
        };
        if entry["mode"] != "100644" || entry["type"] != "blob" {
            return message(422, "Invalid tree info", docs);
        }
        files.insert(path.to_string(), content.to_string());
    }
    let flat: Vec<String> = files.iter().map(|(p, c)| format!("{p}\0{c}")).collect();
    let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
    let sha = hash(&refs);
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    let entries: Vec<Value> = top
        .iter()
        .map(|name| {
            let kind = if files.contains_key(name) { "blob" } else { "tree" };
            json!({"path": name, "mode": if kind == "blob" {"100644"} else {"040000"}, "type": kind, "sha": hash(&[name, &sha])})
        })
        .collect();
    inner.git.trees.insert(sha.clone(), Tree::Files(files));
    json_response(
        201,
        json!({"sha": sha, "url": format!("https://api.github.com/repos/{REPO}/git/trees/{sha}"), "tree": entries, "truncated": false}),
        &[],
    )
}

async fn create_commit(State(state): State<Shared>, bytes: Bytes) -> Response {
    let docs = "git/commits#create-a-commit";
    let Some(b) = body(&bytes) else {
        return message(400, "Problems parsing JSON", docs);
    };
    let mut inner = lock(&state);
    let (Some(msg), Some(tree)) = (b["message"].as_str(), b["tree"].as_str()) else {
        return message(
            422,
            "Invalid request.\n\n\"message\", \"tree\" weren't supplied.",
            docs,
        );
    };
    if !inner.git.trees.contains_key(tree) {
        return message(422, "Tree SHA does not exist", docs);
    }
    let parents: Vec<String> = b["parents"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if parents.iter().any(|p| !inner.git.commits.contains_key(p)) {
        return message(
            422,
            "Parent SHA does not exist or is not a commit object",
            docs,
        );
    }
    inner.git.made += 1;
    let sha = hash(&[tree, &parents.join(","), msg, &inner.git.made.to_string()]);
    inner.git.commits.insert(
        sha.clone(),
        Commit {
            tree: tree.to_string(),
            parents,
            message: msg.to_string(),
        },
    );
    let c = inner.git.commit_json(&sha).unwrap_or_default();
    json_response(201, c, &[])
}

async fn get_ref(State(state): State<Shared>, Path((_o, _r, name)): RepoPath) -> Response {
    match lock(&state).git.refs.get(&name) {
        Some(sha) => json_response(200, ref_json(&name, sha), &[]),
        None => not_found("git/refs#get-a-reference"),
    }
}

async fn create_ref(State(state): State<Shared>, bytes: Bytes) -> Response {
    let docs = "git/refs#create-a-reference";
    let Some(b) = body(&bytes) else {
        return message(400, "Problems parsing JSON", docs);
    };
    let (Some(full), Some(sha)) = (b["ref"].as_str(), b["sha"].as_str()) else {
        return message(422, "Invalid request.", docs);
    };
    let Some(name) = full.strip_prefix("refs/").filter(|n| n.contains('/')) else {
        return message(
            422,
            "Reference name must start with 'refs/' and have at least two slashes.",
            docs,
        );
    };
    let mut inner = lock(&state);
    if !inner.git.commits.contains_key(sha) {
        return message(422, "Object does not exist", docs);
    }
    if inner.git.refs.contains_key(name) {
        return message(422, "Reference already exists", docs);
    }
    inner.git.refs.insert(name.to_string(), sha.to_string());
    json_response(201, ref_json(name, sha), &[])
}

async fn update_ref(
    State(state): State<Shared>,
    Path((_o, _r, name)): RepoPath,
    bytes: Bytes,
) -> Response {
    let docs = "git/refs#update-a-reference";
    let Some(b) = body(&bytes) else {
        return message(400, "Problems parsing JSON", docs);
    };
    let Some(sha) = b["sha"].as_str() else {
        return message(422, "Invalid request.\n\n\"sha\" wasn't supplied.", docs);
    };
    let force = b["force"].as_bool().unwrap_or(false);
    let mut inner = lock(&state);
    let Some(old) = inner.git.refs.get(&name).cloned() else {
        return message(422, "Reference does not exist", docs);
    };
    if !inner.git.commits.contains_key(sha) {
        return message(422, "Object does not exist", docs);
    }
    if !force && !inner.git.is_ancestor(&old, sha) {
        return message(422, "Update is not a fast forward", docs);
    }
    inner.git.refs.insert(name.clone(), sha.to_string());
    // Open PRs from the branch follow it, as on GitHub.
    let branch = name.strip_prefix("heads/").unwrap_or(&name).to_string();
    for pr in inner.git.pulls.values_mut() {
        if pr["head"]["ref"] == branch.as_str() {
            pr["head"]["sha"] = json!(sha);
        }
    }
    json_response(200, ref_json(&name, sha), &[])
}

async fn delete_ref(State(state): State<Shared>, Path((_o, _r, name)): RepoPath) -> Response {
    let mut inner = lock(&state);
    if inner.git.refs.remove(&name).is_none() {
        return message(
            422,
            "Reference does not exist",
            "git/refs#delete-a-reference",
        );
    }
    json_response(204, Value::Null, &[])
}

fn owner() -> &'static str {
    REPO.split('/').next().unwrap_or_default()
}

async fn list_pulls(
    State(state): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = lock(&state);
    let state_wanted = q.get("state").map_or("open", String::as_str);
    let pulls: Vec<Value> = inner
        .git
        .pulls
        .values()
        .filter(|p| state_wanted == "all" || p["state"] == state_wanted)
        .filter(|p| {
            q.get("head")
                .is_none_or(|h| p["head"]["label"] == h.as_str())
        })
        .filter(|p| q.get("base").is_none_or(|b| p["base"]["ref"] == b.as_str()))
        .cloned()
        .collect();
    json_response(200, Value::Array(pulls), &[])
}

/// `GET /repos/{owner}/{repo}/commits/{sha}/pulls`, as GitHub answers it:
/// the merged pull request whose merge (or squash, or rebase) commit it
/// is; for a commit not merged, the open pull requests whose head it is.
async fn pulls_for_commit(State(state): State<Shared>, Path((_o, _r, sha)): RepoPath) -> Response {
    let inner = lock(&state);
    if !sha.bytes().all(|b| b.is_ascii_hexdigit()) || sha.len() < 7 {
        return message(
            422,
            &format!("No commit found for SHA: {sha}"),
            "commits/commits#list-pull-requests-associated-with-a-commit",
        );
    }
    let merged: Vec<Value> = inner
        .git
        .pulls
        .values()
        .filter(|p| {
            p["merged"] == true
                && p["merge_commit_sha"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&sha))
        })
        .cloned()
        .collect();
    let pulls = if merged.is_empty() {
        inner
            .git
            .pulls
            .values()
            .filter(|p| {
                p["state"] == "open"
                    && p["head"]["sha"]
                        .as_str()
                        .is_some_and(|h| h.starts_with(&sha))
            })
            .cloned()
            .collect()
    } else {
        merged
    };
    json_response(200, Value::Array(pulls), &[])
}

fn pull_validation(errors: Value) -> Response {
    json_response(
        422,
        json!({"message": "Validation Failed", "errors": errors, "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request", "status": "422"}),
        &[],
    )
}

async fn create_pull(State(state): State<Shared>, bytes: Bytes) -> Response {
    let docs = "pulls/pulls#create-a-pull-request";
    let Some(b) = body(&bytes) else {
        return message(400, "Problems parsing JSON", docs);
    };
    let mut inner = lock(&state);
    if inner.no_pull_creation {
        return message(
            403,
            "GitHub Actions is not permitted to create or approve pull requests.",
            docs,
        );
    }
    let (Some(title), Some(head), Some(base)) =
        (b["title"].as_str(), b["head"].as_str(), b["base"].as_str())
    else {
        return pull_validation(
            json!([{"resource": "PullRequest", "code": "missing_field", "field": "head"}]),
        );
    };
    let head = head.strip_prefix(&format!("{}:", owner())).unwrap_or(head);
    let Some(head_sha) = inner.git.refs.get(&format!("heads/{head}")).cloned() else {
        return pull_validation(
            json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]),
        );
    };
    let Some(base_sha) = inner.git.refs.get(&format!("heads/{base}")).cloned() else {
        return pull_validation(
            json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]),
        );
    };
    let label = format!("{}:{head}", owner());
    if inner.git.pulls.values().any(|p| {
        p["state"] == "open" && p["head"]["label"] == label.as_str() && p["base"]["ref"] == base
    }) {
        return pull_validation(
            json!([{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {label}.")}]),
        );
    }
    if inner.git.is_ancestor(&head_sha, &base_sha) {
        return pull_validation(
            json!([{"resource": "PullRequest", "code": "custom", "message": format!("No commits between {base} and {head}")}]),
        );
    }
    let number = super::issues::next_number(&inner);
    let pr = json!({
        "id": 2_000_000 + number, "node_id": format!("PR_{number}"), "number": number, "state": "open",
        "locked": false, "draft": false, "merged": false,
        "title": title, "body": b["body"],
        "url": format!("https://api.github.com/repos/{REPO}/pulls/{number}"),
        "html_url": format!("https://github.com/{REPO}/pull/{number}"),
        "user": {"login": "github-actions[bot]", "type": "Bot"},
        "head": {"label": label, "ref": head, "sha": head_sha},
        "base": {"label": format!("{}:{base}", owner()), "ref": base, "sha": base_sha},
    });
    inner.git.pulls.insert(number, pr.clone());
    json_response(201, pr, &[])
}

async fn get_pull(
    State(state): State<Shared>,
    Path((_o, _r, number)): Path<(String, String, u64)>,
) -> Response {
    let inner = lock(&state);
    match inner.git.pulls.get(&number) {
        Some(pr) => json_response(200, pr.clone(), &[]),
        None => not_found("pulls/pulls#get-a-pull-request"),
    }
}

async fn update_pull(
    State(state): State<Shared>,
    Path((_o, _r, number)): Path<(String, String, u64)>,
    bytes: Bytes,
) -> Response {
    let Some(b) = body(&bytes) else {
        return message(
            400,
            "Problems parsing JSON",
            "pulls/pulls#update-a-pull-request",
        );
    };
    let mut inner = lock(&state);
    let Some(pr) = inner.git.pulls.get_mut(&number) else {
        return not_found("pulls/pulls#update-a-pull-request");
    };
    for field in ["title", "body", "state"] {
        if let Some(v) = b.get(field) {
            pr[field] = v.clone();
        }
    }
    json_response(200, pr.clone(), &[])
}

impl FakeGitHub {
    /// "Pushes" a local branch: every commit reachable from it, and the
    /// branch pointing at its tip. Returns the tip.
    pub fn push_branch(&self, dir: &FsPath, branch: &str) -> String {
        let log = git(dir, &["log", "--format=%H %T %P", branch]);
        let mut inner = self.lock();
        let mut tip = None;
        for line in log.lines() {
            let mut parts = line.split_whitespace();
            let (Some(sha), Some(tree)) = (parts.next(), parts.next()) else {
                continue;
            };
            tip.get_or_insert_with(|| sha.to_string());
            inner
                .git
                .trees
                .entry(tree.to_string())
                .or_insert_with(|| Tree::Local(dir.to_path_buf()));
            inner.git.commits.entry(sha.to_string()).or_insert(Commit {
                tree: tree.to_string(),
                parents: parts.map(str::to_string).collect(),
                message: String::new(),
            });
        }
        let tip = tip.expect("the branch has commits");
        inner
            .git
            .refs
            .insert(format!("heads/{branch}"), tip.clone());
        tip
    }

    /// The commit a branch points at.
    pub fn branch(&self, name: &str) -> Option<String> {
        self.lock().git.refs.get(&format!("heads/{name}")).cloned()
    }

    /// The files of a commit, path → content.
    pub fn files_at(&self, commit: &str) -> BTreeMap<String, String> {
        let inner = self.lock();
        let tree = inner
            .git
            .commits
            .get(commit)
            .map(|c| c.tree.clone())
            .unwrap_or_default();
        inner.git.files(&tree).unwrap_or_default()
    }

    /// A commit's message and parents.
    pub fn commit(&self, sha: &str) -> Option<(String, Vec<String>)> {
        let inner = self.lock();
        inner
            .git
            .commits
            .get(sha)
            .map(|c| (c.message.clone(), c.parents.clone()))
    }

    /// A pull request someone opened from `head` (a branch of this
    /// repository), `open` or `closed` (merged when `merged`).
    pub fn add_pull(&self, number: u64, head: &str, state: &str, merged: bool) {
        let closed = (state == "closed").then_some("2026-11-20T10:00:00Z");
        let pr = json!({
            "id": 2_000_000 + number, "node_id": format!("PR_{number}"), "number": number,
            "state": state, "locked": false, "draft": false, "merged": merged,
            "closed_at": closed, "merged_at": if merged { closed } else { None },
            "title": format!("Change {number}"), "body": null,
            "url": format!("https://api.github.com/repos/{REPO}/pulls/{number}"),
            "html_url": format!("https://github.com/{REPO}/pull/{number}"),
            "user": {"login": "octocat", "type": "User"},
            "head": {"label": format!("{}:{head}", owner()), "ref": head, "sha": "0".repeat(40)},
            "base": {"label": format!("{}:main", owner()), "ref": "main", "sha": "0".repeat(40)},
        });
        self.lock().git.pulls.insert(number, pr);
    }

    /// Pull request `number` (added with [`FakeGitHub::add_pull`]) is at
    /// `head`, and was merged as `merge` when given (closed, merged, its
    /// `merge_commit_sha`, as GitHub sets them).
    pub fn pull_commits(&self, number: u64, head: &str, merge: Option<&str>) {
        let mut inner = self.lock();
        let Some(pr) = inner.git.pulls.get_mut(&number) else {
            return;
        };
        pr["head"]["sha"] = json!(head);
        if let Some(m) = merge {
            pr["state"] = json!("closed");
            pr["merged"] = json!(true);
            pr["merged_at"] = json!("2026-11-20T10:00:00Z");
            pr["closed_at"] = json!("2026-11-20T10:00:00Z");
            pr["merge_commit_sha"] = json!(m);
        }
    }

    /// Adds label `name` to pull request `number`.
    pub fn label_pull(&self, number: u64, name: &str) {
        if let Some(pr) = self.lock().git.pulls.get_mut(&number) {
            let id = pr["labels"].as_array().map_or(0, Vec::len) as u64 + 1;
            let label =
                json!({"id": 9_000 + id, "name": name, "color": "d73a4a", "default": false});
            match pr["labels"].as_array_mut() {
                Some(list) => list.push(label),
                None => pr["labels"] = json!([label]),
            }
        }
    }

    /// Every pull request, by number.
    pub fn pulls(&self) -> Vec<Pull> {
        pulls_of(&self.lock())
    }
}

impl Inner {
    /// The numbers of every pull request.
    pub(super) fn git_pull_numbers(&self) -> Vec<u64> {
        self.git.pulls.keys().copied().collect()
    }

    /// Pull requests as the issues API lists them (with `pull_request`).
    pub(super) fn git_pulls_as_issues(&self) -> Vec<(u64, Value)> {
        self.git
            .pulls
            .iter()
            .map(|(n, p)| {
                let mut i = p.clone();
                i["pull_request"] = json!({"url": p["url"], "html_url": p["html_url"]});
                (*n, i)
            })
            .collect()
    }
}

fn pulls_of(inner: &Inner) -> Vec<Pull> {
    inner
        .git
        .pulls
        .values()
        .map(|p| Pull {
            number: p["number"].as_u64().unwrap_or(0),
            title: p["title"].as_str().unwrap_or("").to_string(),
            body: p["body"].as_str().unwrap_or("").to_string(),
            head: p["head"]["ref"].as_str().unwrap_or("").to_string(),
            base: p["base"]["ref"].as_str().unwrap_or("").to_string(),
            state: p["state"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}
