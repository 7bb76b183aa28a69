//! What the plan job does around a pull request's plan: the sticky
//! comment, and the plan checked against the cluster (a three-way plan)
//! when the runner allows it.

use crate::event::Event;
use crate::github::{GitHub, RetryPolicy};
use crate::pipeline::PlanOutcome;
use crate::plan::Plan;

use super::inputs::Inputs;
use super::runner::Runner;
use crate::comment;

/// Checks the plan against the cluster with the runner's kubeconfig and
/// context when the input `plan-cluster` asks for it; a fork's pull request
/// never gets cluster access (its plan says so).
pub(super) async fn check_cluster(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    outcome: &mut PlanOutcome,
) -> anyhow::Result<()> {
    if !inputs.plan_cluster {
        return Ok(());
    }
    let fork = matches!(
        event,
        Event::PullRequest {
            from_fork: true,
            ..
        }
    );
    if fork {
        outcome.plan.live =
            crate::plan::live::Live::not_checked("a fork's pull request gets no cluster access");
        return Ok(());
    }
    runner.group("Check the plan against the cluster")?;
    let access = crate::cluster::Access {
        kubeconfig: inputs.kubeconfig.clone(),
        context: inputs.context.clone(),
    };
    crate::pipeline::plan::check_cluster(outcome, &access, &inputs.apply).await;
    runner.line(&outcome.plan.live.summary())?;
    runner.end_group()?;
    Ok(())
}

/// Fails the plan when the API server refuses a planned change: the
/// deploy would fail there. True when it did.
pub(super) fn refused(runner: &mut Runner<'_>, plan: &Plan) -> anyhow::Result<bool> {
    let n = plan.live.refusals();
    if n == 0 {
        return Ok(false);
    }
    runner.command(&format!(
        "::error title=kdeploy (cluster)::the API server refuses {n} planned change(s) (server-side apply dry run); see the resources marked refused in the plan. Nothing was deployed"
    ))?;
    runner.outputs(&[("error", "refused".to_string())])?;
    Ok(true)
}

/// Posts or updates the PR comment; never fails the job for GitHub errors.
pub(super) async fn post_comment(
    runner: &mut Runner<'_>,
    event: &Event,
    inputs: &Inputs,
    retry: RetryPolicy,
    marker: &str,
    parts: &[String],
) -> anyhow::Result<Option<String>> {
    let Event::PullRequest {
        number, from_fork, ..
    } = event
    else {
        return Ok(None);
    };
    if !inputs.comment {
        return Ok(None);
    }
    if *from_fork {
        runner.warning("pull request from a fork: its token is read-only, so the plan is in the job summary instead of a comment")?;
        return Ok(None);
    }
    let Some(token) = &inputs.token else {
        runner.warning("no github-token: the plan is in the job summary only")?;
        return Ok(None);
    };
    let (Some(api), Some(repo)) = (
        runner.env.var("GITHUB_API_URL"),
        runner.env.var("GITHUB_REPOSITORY"),
    ) else {
        runner.warning("GITHUB_API_URL or GITHUB_REPOSITORY not set: cannot comment")?;
        return Ok(None);
    };
    let gh = GitHub::new(api, token, repo, retry)?;
    match comment::sync(&gh, *number, marker, parts).await {
        Ok(s) => {
            runner.line(&format!(
                "PR comment: {} created, {} updated, {} unchanged, {} deleted",
                s.created, s.updated, s.unchanged, s.deleted
            ))?;
            Ok(s.url)
        }
        Err(e) => {
            let why = e.explain("cannot comment on the pull request", "pull-requests: write");
            runner.warning(&format!("{why}. The plan is in the job summary"))?;
            Ok(None)
        }
    }
}
