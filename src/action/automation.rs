//! `mode: images` and `mode: promote`: the action edits the config repo
//! instead of deploying it. A schedule runs the image policies; a
//! `repository_dispatch` (client payload `{app, env, version}`) or a
//! `workflow_dispatch` with those inputs sets one version; promotion copies
//! versions between environments. Each change is published as a pull
//! request (one per release) or a commit, through the API.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::{Inputs, Mode, Runner};
use crate::config::Filter;
use crate::edit::images::Change;
use crate::event::Event;
use crate::github::RetryPolicy;
use crate::publish::{self, Credentials, Outcome, Publish, Remote};

/// The dispatch's fields: a `repository_dispatch` client payload or
/// `workflow_dispatch` inputs.
fn dispatch_fields(event: &Event) -> BTreeMap<String, String> {
    match event {
        Event::RepositoryDispatch { payload, .. } => payload.clone(),
        Event::WorkflowDispatch { inputs, .. } => inputs.clone(),
        _ => BTreeMap::new(),
    }
    .into_iter()
    .map(|(k, v)| (k, v.trim().to_string()))
    .filter(|(_, v)| !v.is_empty())
    .collect()
}

/// Runs `mode` (images or promote); returns the exit code.
///
/// # Errors
/// Missing token, invalid dispatch fields, registry and API failures.
pub(super) async fn run(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    mode: Mode,
    repo_dir: &Path,
    retry: RetryPolicy,
) -> anyhow::Result<u8> {
    if let Event::PullRequest { .. } = event {
        anyhow::bail!(
            "`mode: images` and `mode: promote` change the repository; run them on schedule, workflow_dispatch or repository_dispatch, not on pull requests"
        );
    }
    let env = runner.env;
    let credentials = Credentials::from_env(|k| match k {
        "GITHUB_TOKEN" => inputs.token.clone(),
        _ => env.var(k).map(str::to_string),
    })?;
    let remote = Remote::open(repo_dir, &credentials, env.var("GITHUB_REF"), retry)?;
    let fields = dispatch_fields(event);
    let filter = Filter::new(inputs.environments.as_deref(), inputs.apps.as_deref())
        .context("invalid `environments`/`apps` glob")?;

    runner.group("Version changes")?;
    let (changes, kind) = match mode {
        Mode::Promote => {
            let field = |input: &Option<String>, key: &str| {
                input
                    .clone()
                    .or_else(|| fields.get(key).cloned())
                    .with_context(|| format!("`mode: promote` needs the input `promote-{key}` (or a dispatch field `{key}`)"))
            };
            let (from, to) = (
                field(&inputs.promote_from, "from")?,
                field(&inputs.promote_to, "to")?,
            );
            let request = crate::promote::Request {
                repo: repo_dir,
                from: &from,
                to: &to,
                apps: inputs.apps.as_deref(),
                keys: &inputs.promote_keys,
                dry_run: true,
            };
            let changes = match crate::promote::promotion(&request)? {
                crate::promote::Promotion::Branches(b) => {
                    runner.end_group()?;
                    return promote_branches(runner, inputs, &remote, b, &to, repo_dir).await;
                }
                crate::promote::Promotion::Files { changes, notices } => {
                    for n in notices {
                        runner.line(&format!("  {n}"))?;
                    }
                    changes
                }
            };
            let kind = format!(
                "promote/{}-to-{}",
                publish::branch_part(&from),
                publish::branch_part(&to)
            );
            (changes, kind)
        }
        _ if fields.contains_key("version") => {
            let get = |k: &str| {
                fields.get(k).cloned().with_context(|| {
                    format!("the dispatch has a `version` but no `{k}`: send {{\"app\", \"env\", \"version\"}}")
                })
            };
            let (app, env_name, version) = (get("app")?, get("env")?, get("version")?);
            let change =
                crate::edit::images::set_version(repo_dir, &app, &env_name, &version, false)?;
            if change.is_none() {
                runner.line(&format!("{app}/{env_name} is already at {version}"))?;
            }
            (change.into_iter().collect(), "version".to_string())
        }
        _ => {
            let outcome = crate::edit::images::update(repo_dir, &filter, true).await?;
            for n in &outcome.notices {
                runner.line(&format!("  {n}"))?;
            }
            (outcome.changes, "version".to_string())
        }
    };
    for c in &changes {
        runner.line(&format!("propose {c}"))?;
    }
    runner.end_group()?;
    if changes.is_empty() {
        runner.notice("no version changes")?;
        runner.summary("### kdeploy: no version changes\n")?;
        runner.outputs(&[
            ("has-changes", "false".into()),
            ("pull-requests", "[]".into()),
        ])?;
        return Ok(0);
    }

    runner.group("Publish")?;
    let done = publish::changes(&remote, repo_dir, inputs.publish, &changes, &kind).await?;
    let mut pulls = Vec::new();
    let mut commit = String::new();
    for (set, outcome) in &done {
        runner.line(&format!("{}: {outcome}", set.title))?;
        match outcome {
            Outcome::Opened(pr) | Outcome::Updated(pr) | Outcome::Unchanged(pr) => {
                pulls.push(serde_json::json!({
                    "number": pr.number,
                    "url": pr.html_url,
                    "title": set.title,
                    "outcome": match outcome {
                        Outcome::Opened(_) => "opened",
                        Outcome::Updated(_) => "updated",
                        _ => "unchanged",
                    },
                }));
            }
            Outcome::Pushed { commit: c, .. } => commit.clone_from(c),
        }
    }
    runner.end_group()?;
    runner.summary(&summary(&changes, &done, inputs.publish))?;
    runner.outputs(&[
        ("has-changes", "true".into()),
        ("pull-requests", serde_json::Value::Array(pulls).to_string()),
        ("commit", commit),
    ])?;
    Ok(0)
}

/// Promotion between branch-bound environments: `publish: push`
/// fast-forwards the target branch, `publish: pr` opens a PR between them.
async fn promote_branches(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    remote: &Remote,
    branches: crate::promote::Branches,
    to_env: &str,
    repo_dir: &Path,
) -> anyhow::Result<u8> {
    use crate::promote::BranchOutcome;
    let auth = runner.fetch_auth(inputs.token.as_ref());
    runner.group("Promote")?;
    let p = crate::promote::branches(
        &remote.gh,
        repo_dir,
        branches,
        to_env,
        inputs.apps.as_deref(),
        inputs.publish == Publish::PullRequest,
        false,
        auth.as_ref(),
    )
    .await?;
    let mut text = Vec::new();
    crate::report::text_with(&p.plan, false, true, &mut text)?;
    runner.log.write_all(&text)?;
    runner.end_group()?;
    let (from, to) = (&p.branches.from, &p.branches.to);
    let (line, pulls) = match &p.outcome {
        None => (
            format!("{to} is already at {from}: nothing to promote"),
            vec![],
        ),
        Some(BranchOutcome::FastForwarded) => (
            format!("fast-forwarded `{to}` to `{from}` (`{}`)", p.from_sha),
            vec![],
        ),
        Some(BranchOutcome::PullRequest(o)) => {
            let pr = match o {
                Outcome::Opened(pr) | Outcome::Updated(pr) | Outcome::Unchanged(pr) => Some(
                    serde_json::json!({"number": pr.number, "url": pr.html_url, "title": pr.title}),
                ),
                Outcome::Pushed { .. } => None,
            };
            (o.to_string(), pr.into_iter().collect())
        }
    };
    runner.line(&line)?;
    runner.summary(&format!(
        "### kdeploy: promote {from} → {to}\n\n{line}\n\n{}",
        crate::report::markdown(&p.plan, "<!-- kdeploy:promote -->", 60_000)
    ))?;
    let moved = matches!(p.outcome, Some(BranchOutcome::FastForwarded));
    runner.outputs(&[
        ("has-changes", (p.from_sha != p.to_sha).to_string()),
        ("pull-requests", serde_json::Value::Array(pulls).to_string()),
        (
            "commit",
            if moved {
                p.from_sha.clone()
            } else {
                String::new()
            },
        ),
    ])?;
    Ok(0)
}

fn summary(changes: &[Change], done: &[(publish::ChangeSet, Outcome)], how: Publish) -> String {
    let mut out = format!(
        "### kdeploy: version changes\n\n{}",
        publish::table(changes)
    );
    out.push('\n');
    for (set, outcome) in done {
        let line = match outcome {
            Outcome::Opened(pr) => {
                format!("- opened [#{}]({}): {}", pr.number, pr.html_url, set.title)
            }
            Outcome::Updated(pr) => {
                format!("- updated [#{}]({}): {}", pr.number, pr.html_url, set.title)
            }
            Outcome::Unchanged(pr) => format!(
                "- [#{}]({}) already proposes this: {}",
                pr.number, pr.html_url, set.title
            ),
            Outcome::Pushed { branch, commit } => format!("- pushed `{commit}` to `{branch}`"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if how == Publish::Push {
        out.push_str("\nA push made with the workflow's `GITHUB_TOKEN` starts no other workflow: deploy it in this job, or publish with a GitHub App token.\n");
    }
    out
}
