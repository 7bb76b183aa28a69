//! `mode: preview`. On `pull_request` (opened, synchronize, reopened) the
//! head is deployed as the pull request's preview ([`crate::preview`]) and
//! a sticky comment says where it runs and whether it is ready; on
//! `closed` the preview is removed and the comment says so. On a schedule
//! or a dispatch, the previews of closed pull requests (and, with
//! `preview-older-than`, stale ones) are removed.
//!
//! The template is read from the base branch: a pull request cannot widen
//! what its own preview may do. A pull request from a fork gets no preview
//! (its run has no cluster credentials).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::{Inputs, Runner, prefixed_annotation};
use crate::event::{self, Event};
use crate::github::{GitHub, RetryPolicy};
use crate::preview::{self, comment};
use crate::source::Snapshot;

/// Runs the preview mode; returns the exit code.
///
/// # Errors
/// Setup problems (revisions, settings), cluster and API failures before
/// anything was changed.
pub(super) async fn run(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    repo_dir: &Path,
    retry: RetryPolicy,
) -> anyhow::Result<u8> {
    let auth = runner.fetch_auth(inputs.token.as_ref());
    let Event::PullRequest {
        number,
        action,
        base_sha,
        head_sha,
        from_fork,
        ..
    } = event
    else {
        return collect(runner, inputs, repo_dir, retry).await;
    };
    // The template and its cluster come from the base branch's kdeploy.yaml.
    let base_id = event::ensure_commit(repo_dir, base_sha, auth.as_ref())?;
    let open = |id| -> anyhow::Result<Snapshot> {
        Ok(Snapshot::at_commit(
            crate::source::discover(repo_dir)?,
            repo_dir,
            id,
            &id.to_string(),
        )?)
    };
    let trusted = crate::render::settings(&open(base_id)?)
        .context("the preview template is read from the base branch's kdeploy.yaml")?;
    let template =
        preview::template(&trusted, inputs.preview_template.as_deref()).context("mode: preview")?;
    let env = crate::config::preview::env_name(&template, *number);
    let marker = comment::marker(&template);
    let run_url = runner.run_url();
    let access = crate::cluster::Access {
        kubeconfig: inputs.kubeconfig.clone(),
        context: preview::context(&trusted, &template, inputs.context.as_deref()),
    };
    let repository = runner
        .env
        .var("GITHUB_REPOSITORY")
        .unwrap_or("unknown")
        .to_string();
    let opts = crate::apply::Options {
        repo_dir: Some(repo_dir.to_path_buf()),
        rollback: false,
        ..inputs.apply.clone()
    };
    runner.outputs(&[("preview-environment", env.clone())])?;

    match action.as_str() {
        "opened" | "synchronize" | "reopened" => {}
        "closed" => {
            runner.group(&format!("Remove preview {env}"))?;
            let client = crate::cluster::connect(&access).await?;
            let of = crate::apply::record::PreviewOf {
                template: template.clone(),
                pull_request: *number,
            };
            let removed = preview::remove(&client, &of, &repository, &opts).await?;
            let mut text = Vec::new();
            preview::describe_removed(&removed, &mut text)?;
            runner.log.write_all(&text)?;
            runner.end_group()?;
            let body = comment::removed(&template, &removed);
            runner.summary(&body)?;
            post(runner, inputs, *number, &marker, &body, retry).await?;
            if removed.succeeded() {
                return Ok(0);
            }
            runner.command("::error::the preview could not be removed completely; see the job summary. Its record was kept, so a re-run (or `kdeploy preview gc`) retries")?;
            return Ok(1);
        }
        other => {
            runner.notice(&format!(
                "mode: preview does nothing on pull_request `{other}` (it deploys on opened, synchronize and reopened, and removes on closed)"
            ))?;
            return Ok(0);
        }
    }
    if *from_fork {
        let repo = runner.env.var("GITHUB_REPOSITORY").unwrap_or("");
        let body = comment::fork(&template, &env, repo);
        runner
            .notice("pull request from a fork: no preview (its run has no cluster credentials)")?;
        runner.summary(&body)?;
        post(runner, inputs, *number, &marker, &body, retry).await?;
        return Ok(0);
    }

    runner.group(&format!("Render preview {env}"))?;
    let head_id = event::ensure_commit(repo_dir, head_sha, auth.as_ref())?;
    let head = open(head_id)?;
    let rendered = preview::render(
        &head,
        &template,
        *number,
        inputs.apps.as_deref(),
        Some(&trusted),
    );
    runner.end_group()?;
    let preview = match rendered {
        Ok(p) => p,
        Err(crate::render::Error::Invalid(problems)) => {
            for p in &problems.0 {
                runner.command(&prefixed_annotation(p, &inputs.working_directory))?;
            }
            let body =
                comment::not_deployed(&template, &env, &problems.to_string(), run_url.as_deref());
            runner.summary(&body)?;
            post(runner, inputs, *number, &marker, &body, retry).await?;
            runner.command(&format!(
                "::error::the preview could not be rendered ({} problem(s)); see the annotations",
                problems.0.len()
            ))?;
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    };
    for note in &preview.notes {
        runner.line(&format!("note: {note}"))?;
    }

    runner.group(&format!("Deploy preview {env}"))?;
    let deployed = async {
        let client = crate::cluster::connect(&access).await?;
        preview::deploy(&client, &preview, &repository, &head_id.to_string(), &opts).await
    }
    .await;
    let report = match deployed {
        Ok(r) => r,
        Err(e) => {
            runner.end_group()?;
            let body =
                comment::not_deployed(&template, &env, &format!("{e:#}"), run_url.as_deref());
            runner.summary(&body)?;
            post(runner, inputs, *number, &marker, &body, retry).await?;
            return Err(e);
        }
    };
    let mut text = Vec::new();
    crate::report::deploy::text(&report, &mut text)?;
    runner.log.write_all(&text)?;
    runner.end_group()?;
    let body = comment::deployed(&preview, &report, run_url.as_deref());
    runner.summary(&body)?;
    post(runner, inputs, *number, &marker, &body, retry).await?;
    let urls: Vec<String> = preview
        .state
        .releases
        .iter()
        .flat_map(|r| comment::urls(&preview, &r.release.app))
        .collect();
    runner.outputs(&[
        ("preview-urls", serde_json::to_string(&urls)?),
        ("deployed", report.succeeded().to_string()),
    ])?;
    if report.succeeded() {
        Ok(0)
    } else {
        runner.command(
            "::error::the preview deploy failed; see the pull request comment and the job summary",
        )?;
        Ok(1)
    }
}

fn github(runner: &Runner<'_>, inputs: &Inputs, retry: RetryPolicy) -> Option<GitHub> {
    let token = inputs.token.as_ref()?;
    let api = runner.env.var("GITHUB_API_URL")?;
    let repo = runner.env.var("GITHUB_REPOSITORY")?;
    GitHub::new(api, token, repo, retry).ok()
}

/// Keeps the preview's sticky comment current. A read-only token (a fork's)
/// cannot comment: the job summary then carries it alone.
async fn post(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    number: u64,
    marker: &str,
    body: &str,
    retry: RetryPolicy,
) -> anyhow::Result<()> {
    if !inputs.comment {
        return Ok(());
    }
    let Some(gh) = github(runner, inputs, retry) else {
        runner.warning(
            "no github-token or GITHUB_API_URL: the preview's status is in the job summary only",
        )?;
        return Ok(());
    };
    if let Err(e) = crate::comment::sync(&gh, number, marker, &[body.to_string()]).await {
        let why = e.explain("cannot comment on the pull request", "pull-requests: write");
        runner.warning(&format!(
            "{why}. The preview's status is in the job summary"
        ))?;
    }
    Ok(())
}

/// On a schedule or a dispatch: removes the previews of closed pull
/// requests, and with `preview-older-than` the stale ones.
async fn collect(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    repo_dir: &Path,
    retry: RetryPolicy,
) -> anyhow::Result<u8> {
    let settings = Snapshot::open(repo_dir, &crate::source::Revision::parse(None))
        .map(|s| crate::config::head_settings(&s))
        .unwrap_or_default();
    let repository = runner
        .env
        .var("GITHUB_REPOSITORY")
        .context("GITHUB_REPOSITORY is not set; the runner sets it")?
        .to_string();
    let gh = github(runner, inputs, retry);
    if gh.is_none() && inputs.preview_older_than.is_none() {
        anyhow::bail!(
            "mode: preview outside pull requests removes the previews of closed pull requests, which needs `github-token`; or set `preview-older-than` to collect by age alone"
        );
    }
    let access = crate::cluster::Access {
        kubeconfig: inputs.kubeconfig.clone(),
        context: inputs.context.clone(),
    };
    let opts = crate::apply::Options {
        rollback: false,
        ..inputs.apply.clone()
    };
    runner.group("Collect previews")?;
    let mut text = Vec::new();
    let ok = preview::collect(
        &settings,
        &access,
        &repository,
        gh.as_ref(),
        inputs.preview_older_than,
        &opts,
        &mut text,
    )
    .await?;
    runner.log.write_all(&text)?;
    runner.end_group()?;
    let log = String::from_utf8_lossy(&text);
    runner.summary(&format!("\n### kdeploy preview gc\n\n```text\n{log}```\n"))?;
    if ok {
        Ok(0)
    } else {
        runner.command("::error::some previews could not be removed; their records were kept, so the next run retries")?;
        Ok(1)
    }
}
