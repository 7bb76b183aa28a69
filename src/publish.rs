//! Publishing a change to the config repository through GitHub: version
//! bumps and promotions as a pull request (`--pr`, one branch and one PR per
//! change set) or as a commit on the checked-out branch (`--push`), and
//! fast-forwarding an environment's branch.
//!
//! Commits are made with the git data API rather than `git push`: the
//! action's container needs no git credentials, the commit is exactly the
//! files kdeploy wrote (nothing else in the work tree rides along), and
//! GitHub signs commits made with an app token such as `GITHUB_TOKEN`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;

use crate::config::Filter;
use crate::edit::images::{Change, Saved};
use crate::github::{self, GitHub, PullRequest, RetryPolicy};
use crate::plan::Plan;
use crate::source::{Revision, Snapshot};

/// Why a change could not be published; the action reports its class as
/// the `error` output (`permission`, `conflict`, `input`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// GitHub refused a write; the message names what, and the permission
    /// or repository setting that refused it.
    #[error("{message}")]
    Refused {
        /// The explanation.
        message: String,
        /// GitHub's status, when it answered.
        status: Option<u16>,
    },
    /// The target branch moved on since the checkout, or has commits the
    /// source lacks: nothing was written.
    #[error("{0}")]
    Moved(String),
    /// The run cannot publish as set up (token, repository, branch).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// GitHub's refusal of `what`, naming `permission` for a 403.
    pub fn refused(e: &github::Error, what: &str, permission: &str) -> Error {
        Error::Refused {
            message: e.explain(what, permission),
            status: e.status(),
        }
    }
}

/// How a change leaves the work tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// A branch `kdeploy/…` and a pull request into the checked-out branch.
    PullRequest,
    /// A commit straight onto the checked-out branch (fast-forward only).
    Push,
}

/// The repository on GitHub and the commit the work tree was checked out at.
pub struct Remote {
    /// The API client.
    pub gh: GitHub,
    /// The checked-out branch: where PRs go and pushes land.
    pub branch: String,
    /// The checked-out commit, the parent of every commit made.
    pub head: String,
    /// The config repo's directory inside the git repository (`deploy`), or "".
    pub prefix: String,
}

/// Where the GitHub API is and who calls it, from the environment.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `GITHUB_API_URL`.
    pub api_url: String,
    /// `GITHUB_TOKEN`.
    pub token: String,
    /// `GITHUB_REPOSITORY`.
    pub repository: String,
}

impl Credentials {
    /// From `GITHUB_TOKEN` (or `GH_TOKEN`), `GITHUB_REPOSITORY` and
    /// `GITHUB_API_URL` (default api.github.com), as a workflow sets them.
    ///
    /// # Errors
    /// When the token or the repository is missing.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Credentials> {
        let token = var("GITHUB_TOKEN")
            .or_else(|| var("GH_TOKEN"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Setup("--pr and --push publish through the GitHub API: set GITHUB_TOKEN (in a workflow, `env: GITHUB_TOKEN: ${{ github.token }}` with `contents: write` and `pull-requests: write`)".into()))?;
        let repository = var("GITHUB_REPOSITORY")
            .filter(|r| r.split('/').count() == 2)
            .ok_or_else(|| {
                Error::Setup(
                    "--pr and --push need GITHUB_REPOSITORY=owner/name (a workflow sets it)".into(),
                )
            })?;
        let api_url = var("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into());
        Ok(Credentials {
            api_url,
            token,
            repository,
        })
    }
}

impl Remote {
    /// The remote of the config repo in `dir`, at its checked-out commit.
    ///
    /// # Errors
    /// No git repository, a detached HEAD with no branch in `GITHUB_REF`.
    pub fn open(
        dir: &Path,
        credentials: &Credentials,
        github_ref: Option<&str>,
        retry: RetryPolicy,
    ) -> anyhow::Result<Remote> {
        let repo = crate::source::discover(dir)
            .with_context(|| format!("{} is not in a git repository", dir.display()))?;
        let head = repo
            .head_id()
            .context("the repository has no commit checked out")?
            .detach()
            .to_string();
        let branch = match repo.head_name().ok().flatten() {
            Some(name) => name.shorten().to_string(),
            None => github_ref
                .and_then(|r| r.strip_prefix("refs/heads/"))
                .map(str::to_string)
                .ok_or_else(|| Error::Setup("HEAD is detached and GITHUB_REF names no branch: check out the branch the change should go to".into()))?,
        };
        let prefix = crate::source::prefix_in_repo(&repo, dir);
        let gh = GitHub::new(
            &credentials.api_url,
            &credentials.token,
            &credentials.repository,
            retry,
        )?;
        Ok(Remote {
            gh,
            branch,
            head,
            prefix,
        })
    }

    fn git_path(&self, file: &str) -> String {
        if self.prefix.is_empty() {
            file.to_string()
        } else {
            format!("{}/{file}", self.prefix)
        }
    }

    /// The checked-out commit as GitHub has it, and a tree of it with the
    /// change set's files written over it.
    async fn tree(&self, set: &ChangeSet) -> anyhow::Result<(github::Commit, String)> {
        let base = self.base().await?;
        let files: Vec<(String, String)> = set
            .files
            .iter()
            .map(|(f, c)| (self.git_path(f), c.clone()))
            .collect();
        let tree = self.gh.create_tree(&base.tree, &files).await.map_err(|e| {
            anyhow::Error::from(Error::refused(
                &e,
                "cannot commit the change",
                "contents: write",
            ))
        })?;
        Ok((base, tree))
    }

    /// The checked-out commit as GitHub has it.
    async fn base(&self) -> anyhow::Result<github::Commit> {
        let found = self.gh.commit(&self.head).await?;
        found.ok_or_else(|| {
            Error::Setup(format!(
                "the checked-out commit {} is not on GitHub ({}): push it first; kdeploy builds its commit on it",
                self.head,
                self.gh.repo()
            ))
            .into()
        })
    }
}

/// Files to commit, with what to call the change.
pub struct ChangeSet {
    /// Its branch is `kdeploy/<key>`: one per (app, env) for version
    /// bumps, so a newer tag updates the open PR instead of adding one.
    pub key: String,
    /// PR title and the commit message's first line.
    pub title: String,
    /// Commit message body.
    pub message: String,
    /// PR body: what changed and the plan it causes.
    pub body: String,
    /// (path relative to the config repo, new content).
    pub files: Vec<(String, String)>,
    /// The plan the change causes, for the terminal.
    pub plan: Plan,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A pull request was opened.
    Opened(PullRequest),
    /// An open pull request got a new commit or text.
    Updated(PullRequest),
    /// The open pull request already proposes exactly this.
    Unchanged(PullRequest),
    /// A commit landed on the branch.
    Pushed {
        /// The branch.
        branch: String,
        /// The new commit.
        commit: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Opened(pr) => write!(f, "opened pull request #{} {}", pr.number, pr.html_url),
            Outcome::Updated(pr) => {
                write!(f, "updated pull request #{} {}", pr.number, pr.html_url)
            }
            Outcome::Unchanged(pr) => write!(
                f,
                "pull request #{} already proposes this: {}",
                pr.number, pr.html_url
            ),
            Outcome::Pushed { branch, commit } => write!(f, "pushed {commit} to {branch}"),
        }
    }
}

/// GitHub's answer when a repository does not let workflows open PRs.
fn explain_pull_refusal(e: &github::Error) -> Error {
    match e {
        github::Error::Status {
            status: 403,
            message,
            ..
        } if message.contains("not permitted to create") => Error::Refused {
            message: format!(
                "cannot open the pull request: {e} (allow it under Settings → Actions → General → \"Allow GitHub Actions to create and approve pull requests\", or give the step a GitHub App token)"
            ),
            status: Some(403),
        },
        _ => Error::refused(e, "cannot open the pull request", "pull-requests: write"),
    }
}

/// Publishes `set` as a pull request from `kdeploy/<key>` into the
/// checked-out branch. Idempotent: the same files on the same base make
/// no new commit, and an open PR is updated, never duplicated.
///
/// # Errors
/// API errors, explained (the permission to grant for a 403). A branch
/// created by this call is deleted again when its PR cannot be opened.
pub async fn pull_request(remote: &Remote, set: &ChangeSet) -> anyhow::Result<Outcome> {
    let gh = &remote.gh;
    let (base, tree) = remote.tree(set).await?;
    let branch = format!("kdeploy/{}", set.key);
    let existing = gh.branch(&branch).await?;
    let current_tree = match &existing {
        Some(sha) => gh.commit(sha).await?.map(|c| c.tree),
        None => None,
    };
    let moved = current_tree.as_deref() != Some(tree.as_str());
    if moved {
        let message = format!("{}\n\n{}", set.title, set.message);
        let commit = gh
            .create_commit(&message, &tree, std::slice::from_ref(&base.sha))
            .await
            .map_err(|e| {
                anyhow::Error::from(Error::refused(
                    &e,
                    "cannot commit the change",
                    "contents: write",
                ))
            })?;
        // The branch is kdeploy's own: it is rebuilt on the current base.
        let written = match &existing {
            Some(_) => gh.update_branch(&branch, &commit, true).await,
            None => gh.create_branch(&branch, &commit).await,
        };
        written.map_err(|e| {
            anyhow::Error::from(Error::refused(
                &e,
                &format!("cannot write branch {branch}"),
                "contents: write",
            ))
        })?;
    }
    let result = open_or_update(gh, &branch, &remote.branch, &set.title, &set.body, moved).await;
    match result {
        Ok(o) => Ok(o),
        Err(e) => {
            // Nothing half-done: a branch nobody will review goes again.
            if existing.is_none() && moved {
                let _ = gh.delete_branch(&branch).await;
            }
            Err(e)
        }
    }
}

/// The pull request from `head` into `base` with this title and body:
/// opened, updated, or left as it is (`moved`: its branch got a new
/// commit, so an unchanged text still counts as updated).
///
/// # Errors
/// API errors, explained (the permission, or the repository setting, that
/// refused it).
pub async fn open_or_update(
    gh: &GitHub,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
    moved: bool,
) -> anyhow::Result<Outcome> {
    let outcome = match gh.open_pull(head, base).await? {
        Some(pr) if pr.title == title && pr.body.as_deref() == Some(body) => {
            if moved {
                Outcome::Updated(pr)
            } else {
                Outcome::Unchanged(pr)
            }
        }
        Some(pr) => {
            Outcome::Updated(gh.update_pull(pr.number, title, body).await.map_err(|e| {
                anyhow::Error::from(Error::refused(
                    &e,
                    "cannot update the pull request",
                    "pull-requests: write",
                ))
            })?)
        }
        None => Outcome::Opened(
            gh.create_pull(title, head, base, body)
                .await
                .map_err(|e| explain_pull_refusal(&e))?,
        ),
    };
    Ok(outcome)
}

/// Publishes `set` as one commit on the checked-out branch. Refuses, with
/// nothing written, when the branch has moved on since the checkout.
///
/// # Errors
/// API errors, explained; a branch that is no longer at the checkout.
pub async fn push(remote: &Remote, set: &ChangeSet) -> anyhow::Result<Outcome> {
    let gh = &remote.gh;
    let (base, tree) = remote.tree(set).await?;
    let commit_err = |e: github::Error| {
        anyhow::Error::from(Error::refused(
            &e,
            "cannot commit the change",
            "contents: write",
        ))
    };
    let message = format!("{}\n\n{}", set.title, set.message);
    let commit = gh
        .create_commit(&message, &tree, std::slice::from_ref(&base.sha))
        .await
        .map_err(commit_err)?;
    match gh.update_branch(&remote.branch, &commit, false).await {
        Ok(()) => Ok(Outcome::Pushed {
            branch: remote.branch.clone(),
            commit,
        }),
        Err(e) if e.status() == Some(422) => Err(Error::Moved(format!(
            "{} has moved on since {} was checked out, so the commit would not be a fast-forward; nothing was pushed: run again on the new head ({e})",
            remote.branch,
            &remote.head[..remote.head.len().min(12)]
        ))
        .into()),
        Err(e) => Err(Error::refused(
            &e,
            &format!("cannot push to {}", remote.branch),
            "contents: write",
        )
        .into()),
    }
}

/// Publishes `set` as `how` says.
///
/// # Errors
/// As [`pull_request`] and [`push`].
pub async fn publish(remote: &Remote, how: Publish, set: &ChangeSet) -> anyhow::Result<Outcome> {
    match how {
        Publish::PullRequest => pull_request(remote, set).await,
        Publish::Push => push(remote, set).await,
    }
}

/// Stages `changes` and publishes them, `kind` naming the branch
/// (`version`: one PR per release; anything else: one PR or commit for
/// all). Stops at the first failure; what was published before stays.
///
/// # Errors
/// As [`stage`] and [`publish`].
pub async fn changes(
    remote: &Remote,
    repo: &Path,
    how: Publish,
    changes: &[Change],
    kind: &str,
) -> anyhow::Result<Vec<(ChangeSet, Outcome)>> {
    let grouping = match how {
        Publish::PullRequest if kind == "version" => Grouping::PerRelease,
        _ => Grouping::Together,
    };
    let mut done = Vec::new();
    for set in stage(repo, changes, grouping, kind).await? {
        let outcome = publish(remote, how, &set).await?;
        done.push((set, outcome));
    }
    Ok(done)
}

/// A branch name part from free text (`api`, `prod*` → `prod_`).
pub fn branch_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The plan of the work tree against HEAD for the releases `filter`
/// selects: what a change set will do once merged.
///
/// # Errors
/// Render and validation errors.
pub fn plan_work_tree(repo: &Path, filter: &Filter, context: usize) -> anyhow::Result<Plan> {
    let base = Snapshot::open(repo, &Revision::parse(Some("HEAD")))?;
    let head = Snapshot::open(repo, &Revision::parse(None))?;
    Ok(crate::pipeline::plan::plan(crate::pipeline::PlanRequest {
        context,
        ..crate::pipeline::PlanRequest::new(&base, &head, filter)
    })?
    .plan)
}

/// GitHub's cap on a PR body is 65,536 characters.
const BODY_LIMIT: usize = 60_000;

/// The changes as a markdown table (PR bodies, job summaries).
pub fn table(changes: &[Change]) -> String {
    let mut out = String::from("| App | Environment | From | To | Why |\n|---|---|---|---|---|\n");
    for c in changes {
        out.push_str(&format!(
            "| {} | {} | {} | `{}` | {} |\n",
            c.app,
            c.env.as_deref().unwrap_or("(all)"),
            c.from
                .as_deref()
                .map_or("(none)".into(), |v| format!("`{v}`")),
            c.to,
            c.why.replace('|', "\\|")
        ));
    }
    out
}

/// A PR body: the changes in words, then the plan.
fn body(changes: &[Change], plan: &Plan, marker: &str) -> String {
    let mut out = table(changes);
    out.push('\n');
    out.push_str(&crate::report::markdown(
        plan,
        marker,
        BODY_LIMIT - out.len(),
    ));
    out.push_str("\n\n<sub>Opened by kdeploy; it updates this pull request when the version changes again.</sub>\n");
    out
}

/// How version changes are grouped into change sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One per (app, env): one PR each.
    PerRelease,
    /// All in one (a push, a promotion).
    Together,
}

/// Turns version changes (found with `dry_run`) into change sets: each
/// set's version files are written, the image lock refreshed when the
/// repo locks images, the plan taken, the files read, and the work tree put
/// back as it was. `kind` names the branch (`version`, `promote/a-to-b`).
///
/// # Errors
/// Unwritable files, lock failures, render errors; the work tree is
/// restored either way.
pub async fn stage(
    repo: &Path,
    changes: &[Change],
    grouping: Grouping,
    kind: &str,
) -> anyhow::Result<Vec<ChangeSet>> {
    let mut groups: BTreeMap<(String, Option<String>), Vec<Change>> = BTreeMap::new();
    for c in changes {
        let key = match grouping {
            Grouping::PerRelease => (c.app.clone(), c.env.clone()),
            Grouping::Together => (String::new(), None),
        };
        groups.entry(key).or_default().push(c.clone());
    }
    let lock_file = {
        let tree = crate::edit::images::WorkTree::open(repo, &Filter::default())?;
        let images = &tree.layout.settings.images;
        (images.require_lock || repo.join(&images.lock_file).is_file())
            .then(|| images.lock_file.clone())
    };
    let mut sets = Vec::new();
    for ((app, env), group) in groups {
        let mut touched: Vec<String> = group.iter().map(|c| c.file.clone()).collect();
        touched.extend(lock_file.iter().cloned());
        let saved = Saved::take(repo, touched.clone());
        let staged = stage_one(repo, &group, lock_file.is_some(), &touched).await;
        saved.restore(repo);
        let (files, plan) = staged?;
        let (key, title) = match grouping {
            Grouping::PerRelease => {
                let env_part = env.as_deref().unwrap_or("_all");
                let c = &group[0];
                (
                    format!("{kind}/{}/{}", branch_part(&app), branch_part(env_part)),
                    format!(
                        "{app}: {} → {} in {}",
                        c.from.as_deref().unwrap_or("(none)"),
                        c.to,
                        env.as_deref().unwrap_or("every environment")
                    ),
                )
            }
            Grouping::Together => (
                kind.to_string(),
                match group.as_slice() {
                    [c] => format!(
                        "{}: {} → {} in {}",
                        c.app,
                        c.from.as_deref().unwrap_or("(none)"),
                        c.to,
                        c.env.as_deref().unwrap_or("every environment")
                    ),
                    many => format!("kdeploy: {} version changes", many.len()),
                },
            ),
        };
        let message = group
            .iter()
            .map(|c| format!("- {c}"))
            .collect::<Vec<_>>()
            .join("\n");
        let marker = format!("<!-- kdeploy:{key} -->");
        // The plan's head is this change, not a work tree the reader never saw.
        let mut plan = plan;
        plan.head = format!("kdeploy/{key}");
        sets.push(ChangeSet {
            body: body(&group, &plan, &marker),
            key,
            title,
            message,
            files,
            plan,
        });
    }
    Ok(sets)
}

async fn stage_one(
    repo: &Path,
    group: &[Change],
    relock: bool,
    touched: &[String],
) -> anyhow::Result<(Vec<(String, String)>, Plan)> {
    for c in group {
        match &c.edit {
            Some(text) => crate::edit::images::write_file(repo, &c.file, text)?,
            None => crate::edit::images::write_version(repo, &c.file, &c.to)?,
        }
    }
    if relock {
        let mut notes = Vec::new();
        crate::edit::images::relock(repo, group, &mut notes).await?;
    }
    let mut files = Vec::new();
    for file in touched {
        let before_and_after = std::fs::read_to_string(repo.join(file)).ok();
        if let Some(text) = before_and_after {
            files.push((file.clone(), text));
        }
    }
    // The plan of just these releases.
    let envs: Vec<&str> = group.iter().filter_map(|c| c.env.as_deref()).collect();
    let apps: Vec<&str> = group.iter().map(|c| c.app.as_str()).collect();
    let glob = |names: &[&str]| {
        let mut n: Vec<&str> = names.to_vec();
        n.sort_unstable();
        n.dedup();
        format!("{{{}}}", n.join(","))
    };
    let env_glob = (!envs.is_empty() && envs.len() == group.len()).then(|| glob(&envs));
    let filter = Filter::new(env_glob.as_deref(), Some(&glob(&apps)))?;
    let plan = plan_work_tree(repo, &filter, 3)?;
    Ok((files, plan))
}
