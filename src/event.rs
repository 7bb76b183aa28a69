//! The GitHub event that triggered a run, and the two commits it compares.
//!
//! [`Event::parse`] reads the payload GitHub Actions writes to
//! `$GITHUB_EVENT_PATH` (only the fields kdeploy needs, tolerant of nulls and
//! missing keys). [`resolve`] turns it into [`Revisions`]: for a pull request
//! the merge base of base and head vs the head (not `GITHUB_SHA`, which is a
//! test merge commit); for a push `before`/`after`. Commits missing from a
//! shallow clone are fetched from `origin` with the `git` CLI.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use gix::ObjectId;
use serde::Deserialize;

/// The error returned when an event cannot be read or resolved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload is not the JSON GitHub sends.
    #[error("malformed {event} event payload in {path}: {source}")]
    Malformed {
        /// Event name.
        event: String,
        /// Payload path.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The payload file could not be read.
    #[error("cannot read the event payload {path} (GITHUB_EVENT_PATH): {source}")]
    Read {
        /// Payload path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A required field is missing or invalid.
    #[error("{0}")]
    Invalid(String),
    /// A field kdeploy reads as text has another JSON type.
    #[error(
        "{event}: `{field}` is {found}, not a string; kdeploy takes it only as text, never converted (a number loses what a version says: 1.10 reads as 1.1): send it quoted, e.g. \"{field_name}\": \"1.10\""
    )]
    NotText {
        /// Event name.
        event: String,
        /// `client_payload.version`, `inputs.head`.
        field: String,
        /// The field's own name.
        field_name: String,
        /// `a number`, `true`, `null`, `a list`, `a map`.
        found: &'static str,
    },
    /// A commit is neither present nor fetchable.
    #[error(
        "commit {sha} is not in the clone and `git fetch origin {sha}` failed: {detail}; use actions/checkout with fetch-depth: 0"
    )]
    Fetch {
        /// The commit.
        sha: String,
        /// git's message.
        detail: String,
    },
    /// Resolving a commit failed.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
}

#[derive(Debug, Deserialize)]
struct Sha {
    sha: String,
    /// The branch name (`main`).
    #[serde(default, rename = "ref")]
    branch: Option<String>,
    repo: Option<RepoRef>,
}

#[derive(Debug, Deserialize)]
struct RepoRef {
    full_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    number: u64,
    base: Sha,
    head: Sha,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

#[derive(Debug, Deserialize)]
struct PullRequestPayload {
    action: Option<String>,
    pull_request: PullRequest,
}

#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
}

#[derive(Debug, Deserialize)]
struct RepositoryDispatchPayload {
    /// The `event_type` the sender chose.
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    client_payload: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct MergeGroupPayload {
    merge_group: MergeGroupFields,
}

#[derive(Debug, Deserialize)]
struct MergeGroupFields {
    head_sha: String,
    base_sha: String,
    base_ref: String,
}

#[derive(Debug, Deserialize)]
struct DispatchPayload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What triggered the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `pull_request` (or `pull_request_target`): plan and comment.
    PullRequest {
        /// PR number.
        number: u64,
        /// `opened`, `synchronize`, `closed`, ...
        action: String,
        /// Tip of the base branch.
        base_sha: String,
        /// Tip of the PR branch.
        head_sha: String,
        /// The PR comes from a fork: the token is read-only.
        from_fork: bool,
        /// `pull_request_target`: the run has the base repository's token
        /// and secrets while the PR's files are the head's.
        target: bool,
        /// Closed with a merge.
        merged: bool,
        /// The branch the PR would merge into (`main`).
        base_ref: Option<String>,
        /// Its labels' names when the event fired.
        labels: Vec<String>,
    },
    /// `push`: deploy `after`, compared with `before`.
    Push {
        /// `refs/heads/main`.
        git_ref: String,
        /// Previous tip; `None` for a new branch (all zeros).
        before: Option<String>,
        /// New tip; `None` when the ref was deleted.
        after: Option<String>,
    },
    /// `merge_group` (`checks_requested`): a merge queue asks for checks
    /// on the commit it will fast-forward the branch to.
    MergeGroup {
        /// The queue's base: the branch's tip the group builds on.
        base_sha: String,
        /// The commit the queue tests and then pushes.
        head_sha: String,
        /// `refs/heads/main`: the branch the group merges into.
        base_ref: String,
    },
    /// `workflow_dispatch`: revisions come from inputs and `GITHUB_SHA`.
    WorkflowDispatch {
        /// The ref the workflow ran on.
        git_ref: Option<String>,
        /// The `base` input, if given.
        base: Option<String>,
        /// The `head` input, if given.
        head: Option<String>,
        /// Every input, as text (booleans and numbers too).
        inputs: BTreeMap<String, String>,
    },
    /// `repository_dispatch`: another repository's CI asks for something,
    /// e.g. `{app, env, version}` after pushing an image.
    RepositoryDispatch {
        /// The sender's `event_type`.
        event_type: String,
        /// `client_payload`'s scalar fields, as text.
        payload: BTreeMap<String, String>,
    },
    /// Anything else: kdeploy does nothing.
    Unsupported(String),
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

fn non_zero(sha: String) -> Option<String> {
    (sha != ZERO_SHA && !sha.is_empty()).then_some(sha)
}

impl Event {
    /// The branch the run deploys from or plans into: a push's branch, a
    /// pull request's base branch, a dispatch's branch. `None` for tags.
    pub fn branch(&self) -> Option<&str> {
        match self {
            Event::Push { git_ref, .. } => git_ref.strip_prefix("refs/heads/"),
            Event::PullRequest { base_ref, .. } => base_ref.as_deref(),
            Event::MergeGroup { base_ref, .. } => base_ref.strip_prefix("refs/heads/"),
            Event::WorkflowDispatch { git_ref, .. } => {
                git_ref.as_deref()?.strip_prefix("refs/heads/")
            }
            Event::RepositoryDispatch { .. } | Event::Unsupported(_) => None,
        }
    }

    /// Reads `GITHUB_EVENT_NAME`'s payload from `path`.
    ///
    /// # Errors
    /// When the file is missing or does not have the event's shape.
    pub fn read(name: &str, path: &Path) -> Result<Event, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Event::parse(name, &bytes).map_err(|e| match e {
            Error::Malformed { event, source, .. } => Error::Malformed {
                event,
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses a payload of event `name`.
    ///
    /// # Errors
    /// When it does not have the event's shape.
    pub fn parse(name: &str, payload: &[u8]) -> Result<Event, Error> {
        let malformed = |source| Error::Malformed {
            event: name.to_string(),
            path: "<payload>".into(),
            source,
        };
        Ok(match name {
            "pull_request" | "pull_request_target" => {
                let p: PullRequestPayload = serde_json::from_slice(payload).map_err(malformed)?;
                let repo = |s: &Sha| s.repo.as_ref().and_then(|r| r.full_name.clone());
                let from_fork = match (repo(&p.pull_request.head), repo(&p.pull_request.base)) {
                    (Some(h), Some(b)) => h != b,
                    // A deleted fork has `head.repo: null`.
                    (None, _) => true,
                    _ => false,
                };
                Event::PullRequest {
                    number: p.pull_request.number,
                    action: p.action.unwrap_or_default(),
                    base_sha: p.pull_request.base.sha,
                    head_sha: p.pull_request.head.sha,
                    from_fork,
                    target: name == "pull_request_target",
                    merged: p.pull_request.merged.unwrap_or(false),
                    base_ref: p.pull_request.base.branch,
                    labels: p.pull_request.labels.into_iter().map(|l| l.name).collect(),
                }
            }
            "push" => {
                let p: PushPayload = serde_json::from_slice(payload).map_err(malformed)?;
                Event::Push {
                    git_ref: p.git_ref,
                    before: non_zero(p.before),
                    after: if p.deleted { None } else { non_zero(p.after) },
                }
            }
            "merge_group" => {
                let p: MergeGroupPayload = serde_json::from_slice(payload).map_err(malformed)?;
                Event::MergeGroup {
                    base_sha: p.merge_group.base_sha,
                    head_sha: p.merge_group.head_sha,
                    base_ref: p.merge_group.base_ref,
                }
            }
            "workflow_dispatch" => {
                let p: DispatchPayload = serde_json::from_slice(payload).map_err(malformed)?;
                let inputs = typed(name, "inputs", p.inputs.as_ref())?;
                let input = |k: &str| inputs.get(k).filter(|s| !s.is_empty()).cloned();
                Event::WorkflowDispatch {
                    git_ref: p.git_ref.clone(),
                    base: input("base"),
                    head: input("head"),
                    inputs: inputs.clone(),
                }
            }
            "repository_dispatch" => {
                let p: RepositoryDispatchPayload =
                    serde_json::from_slice(payload).map_err(malformed)?;
                Event::RepositoryDispatch {
                    event_type: p.action.unwrap_or_default(),
                    payload: typed(name, "client_payload", p.client_payload.as_ref())?,
                }
            }
            other => Event::Unsupported(other.to_string()),
        })
    }
}

/// The fields kdeploy reads from a dispatch: only ever text.
const TEXT_FIELDS: &[&str] = &["app", "env", "version", "from", "to", "base", "head"];

/// The fields of a dispatch's `inputs` or `client_payload` as text. The
/// fields kdeploy reads ([`TEXT_FIELDS`]) must be strings: a JSON number is
/// not a version (`1.10` arrives as 1.1) and `true` is no app, so any other
/// type is refused before anything is written. Other scalars are kept as
/// their JSON text (a boolean input); nested values are left out.
fn typed(
    event: &str,
    what: &str,
    map: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<BTreeMap<String, String>, Error> {
    use serde_json::Value;
    let mut out = BTreeMap::new();
    for (k, v) in map.into_iter().flatten() {
        let found = match v {
            Value::String(s) => {
                out.insert(k.clone(), s.clone());
                continue;
            }
            Value::Number(_) => "a number",
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Null => "null",
            Value::Array(_) => "a list",
            Value::Object(_) => "a map",
        };
        if TEXT_FIELDS.contains(&k.as_str()) {
            return Err(Error::NotText {
                event: event.to_string(),
                field: format!("{what}.{k}"),
                field_name: k.clone(),
                found,
            });
        }
        if matches!(v, Value::Number(_) | Value::Bool(_)) {
            out.insert(k.clone(), v.to_string());
        }
    }
    Ok(out)
}

/// The two commits a run compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    /// The deployed state; `None` means nothing (first push: all is added).
    pub base: Option<ObjectId>,
    /// The state to deploy.
    pub head: ObjectId,
}

/// Credentials for fetching what a shallow checkout lacks when the checkout
/// kept none (`persist-credentials: false`): the action's token, sent as
/// actions/checkout sends it, and only to the GitHub server's URL.
#[derive(Clone)]
pub struct FetchAuth {
    /// `GITHUB_SERVER_URL`, e.g. `https://github.com`.
    pub server_url: String,
    /// The `github-token` input.
    pub token: String,
}

impl std::fmt::Debug for FetchAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FetchAuth({}, <token>)", self.server_url)
    }
}

impl FetchAuth {
    /// The `GIT_CONFIG_*` variables that add the header for git (2.31+),
    /// kept out of argv and out of the repository's config.
    fn env(&self) -> Vec<(String, String)> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", self.token));
        vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            (
                "GIT_CONFIG_KEY_0".into(),
                format!(
                    "http.{}/.extraheader",
                    self.server_url.trim_end_matches('/')
                ),
            ),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!("AUTHORIZATION: basic {basic}"),
            ),
        ]
    }
}

/// Makes sure commit `sha` is in the checkout at `workdir`, fetching it
/// from `origin` (with `auth` when the checkout has no credentials) if not.
///
/// # Errors
/// No repository, or a commit that is neither there nor fetchable.
pub fn ensure_commit(
    workdir: &Path,
    sha: &str,
    auth: Option<&FetchAuth>,
) -> Result<ObjectId, Error> {
    let repo = crate::source::discover(workdir)
        .map_err(|e| Error::Invalid(format!("{} is not a git checkout: {e}", workdir.display())))?;
    let top = repo.workdir().unwrap_or(workdir).to_path_buf();
    let git = Git {
        dir: &top,
        auth: auth.filter(|_| !has_own_credentials(&top)),
    };
    git.ensure_commit(&repo, sha)
}

/// The checkout's own credentials win: two Authorization headers are
/// refused, so the token is added only where there are none.
fn has_own_credentials(top: &Path) -> bool {
    git_command(top)
        .args(["config", "--get-regexp", r"^http\..*extraheader$"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// git, confined to the checkout at `top`: no system or global config, no
/// hooks, no fsmonitor, ssh, proxy, upload-pack and credential helpers as
/// the runner has them and never from config, no submodules, no `ext::`
/// transport, no prompt.
/// The checkout's own `.git/config` is the runner's (actions/checkout wrote
/// it), but its programs are switched off all the same.
fn git_command(top: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-c")
        .arg(format!("safe.directory={}", top.display()))
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.sshCommand=ssh -o BatchMode=yes",
            "-c",
            "core.askPass=",
            "-c",
            "credential.helper=",
            "-c",
            "core.gitProxy=none",
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "submodule.recurse=false",
            "-c",
            "fetch.recurseSubmodules=false",
        ])
        .current_dir(top)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS");
    cmd
}

/// Whether `rev` is a full object id (SHA-1 or SHA-256), the only thing
/// kdeploy fetches: a name from a payload could be read as an option.
fn is_full_object_id(rev: &str) -> bool {
    matches!(rev.len(), 40 | 64) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs git in a checkout, with `auth` (when the checkout has no
/// credentials of its own) on every fetch.
struct Git<'a> {
    dir: &'a Path,
    auth: Option<&'a FetchAuth>,
}

impl Git<'_> {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = git_command(self.dir);
        cmd.args(args);
        if let Some(auth) = self.auth {
            cmd.envs(auth.env());
        }
        let out = cmd.output().map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Makes sure `sha` is in the repository, fetching it from `origin` if
    /// not.
    fn ensure_commit(&self, repo: &gix::Repository, sha: &str) -> Result<ObjectId, Error> {
        if let Ok(id) = crate::source::resolve_commit(repo, sha) {
            return Ok(id);
        }
        if !is_full_object_id(sha) {
            return Err(Error::Invalid(format!(
                "`{sha}` is not a commit of the checkout, and kdeploy fetches only full commit ids (40 hexadecimal digits); pass the full SHA, or fetch the branch in the checkout step"
            )));
        }
        self.run(&[
            "fetch",
            "--no-tags",
            "--quiet",
            "--depth=1",
            "--no-recurse-submodules",
            // The remote's configured upload-pack would win over `-c`.
            "--upload-pack=git-upload-pack",
            "--end-of-options",
            "origin",
            sha,
        ])
        .map_err(|detail| Error::Fetch {
            sha: sha.to_string(),
            detail,
        })?;
        // Objects fetched by another process: reopen to see the new pack.
        let fresh = gix::open(repo.git_dir())
            .map_err(|e| Error::Invalid(format!("cannot reopen the repository: {e}")))?;
        Ok(crate::source::resolve_commit(&fresh, sha)?)
    }

    /// The merge base of two commits, deepening a shallow clone until found.
    fn merge_base(&self, one: ObjectId, two: ObjectId) -> Result<ObjectId, Error> {
        let attempt = || -> Option<ObjectId> {
            let repo = gix::open(self.dir).ok()?;
            repo.merge_base(one, two)
                .ok()
                .flatten()
                .map(|id| id.detach())
        };
        if let Some(id) = attempt() {
            return Ok(id);
        }
        for deepen in ["--deepen=50", "--deepen=500", "--unshallow"] {
            let fetched = self.run(&[
                "fetch",
                "--no-tags",
                "--quiet",
                deepen,
                "--no-recurse-submodules",
                "--upload-pack=git-upload-pack",
                "--end-of-options",
                "origin",
                &one.to_string(),
                &two.to_string(),
            ]);
            if fetched.is_ok()
                && let Some(id) = attempt()
            {
                return Ok(id);
            }
        }
        Err(Error::Invalid(format!(
            "no merge base between {one} and {two}; the branches share no history"
        )))
    }
}

/// Resolves the revisions for an event. `github_sha` is `GITHUB_SHA`.
///
/// # Errors
/// Missing commits that cannot be fetched, or inputs missing for a dispatch.
pub fn resolve(
    event: &Event,
    workdir: &Path,
    github_sha: Option<&str>,
    auth: Option<&FetchAuth>,
) -> Result<Revisions, Error> {
    let repo = crate::source::discover(workdir)
        .map_err(|e| Error::Invalid(format!("{} is not a git checkout: {e}", workdir.display())))?;
    let top = repo.workdir().unwrap_or(workdir).to_path_buf();
    let own_credentials = auth.is_some() && has_own_credentials(&top);
    let git = Git {
        dir: &top,
        auth: auth.filter(|_| !own_credentials),
    };
    match event {
        Event::PullRequest {
            base_sha, head_sha, ..
        } => {
            let head = git.ensure_commit(&repo, head_sha)?;
            let base_tip = git.ensure_commit(&repo, base_sha)?;
            let base = git.merge_base(base_tip, head)?;
            Ok(Revisions {
                base: Some(base),
                head,
            })
        }
        Event::Push { before, after, .. } => {
            let after = after.as_deref().ok_or_else(|| {
                Error::Invalid("the push deleted the ref; nothing to deploy".into())
            })?;
            let head = git.ensure_commit(&repo, after)?;
            let base = match before {
                Some(b) => Some(git.ensure_commit(&repo, b)?),
                None => None,
            };
            Ok(Revisions { base, head })
        }
        Event::MergeGroup {
            base_sha, head_sha, ..
        } => {
            let head = git.ensure_commit(&repo, head_sha)?;
            let base = git.ensure_commit(&repo, base_sha)?;
            Ok(Revisions {
                base: Some(base),
                head,
            })
        }
        Event::WorkflowDispatch { base, head, .. } => {
            let head_spec = head.as_deref().or(github_sha).ok_or_else(|| {
                Error::Invalid("workflow_dispatch needs a `head` input or GITHUB_SHA".into())
            })?;
            let head = git.ensure_commit(&repo, head_spec)?;
            let base = match base {
                Some(b) => Some(git.ensure_commit(&repo, b)?),
                None => None,
            };
            Ok(Revisions { base, head })
        }
        Event::RepositoryDispatch { .. } => Err(Error::Invalid(
            "repository_dispatch names no revisions to compare; it runs `mode: images`".into(),
        )),
        Event::Unsupported(name) => Err(Error::Invalid(format!("event `{name}` is not handled"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_before_means_first_push() {
        let e = Event::parse(
            "push",
            br#"{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"abc","deleted":false}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            Event::Push {
                git_ref: "refs/heads/main".into(),
                before: None,
                after: Some("abc".into())
            }
        );
    }

    #[test]
    fn fetch_credentials_go_to_the_server_only_and_stay_out_of_argv() {
        let auth = FetchAuth {
            server_url: "https://github.example.com/".into(),
            token: "ghs_canary".into(),
        };
        let env = auth.env();
        assert_eq!(env[1].1, "http.https://github.example.com/.extraheader");
        // base64("x-access-token:ghs_canary")
        assert_eq!(
            env[2].1,
            "AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46Z2hzX2NhbmFyeQ=="
        );
        assert!(!format!("{auth:?}").contains("canary"));
    }

    #[test]
    fn malformed_payload_is_an_error() {
        assert!(matches!(
            Event::parse("pull_request", b"{\"action\": 1}"),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            Event::parse("issues", b"{}"),
            Ok(Event::Unsupported(_))
        ));
    }
}
