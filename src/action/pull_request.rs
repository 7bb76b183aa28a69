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

/// The policy gate: findings at severity error fail the plan unless the
/// runner names a label that acknowledges them (`policy-acknowledge-label`)
/// and the pull request has it (on a push, the pull request the review
/// found). `Ok(how)` lets the plan go on, saying how it was acknowledged;
/// `Err(code)` is the exit code of a plan that fails.
pub(super) fn policy_gate(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    plan: &Plan,
    verdict: Option<&crate::review::Verdict>,
) -> anyhow::Result<Result<Option<String>, u8>> {
    if plan.policy_errors == 0 {
        return Ok(Ok(None));
    }
    let (labels, pull): (&[String], Option<u64>) = match (event, verdict) {
        (Event::PullRequest { labels, number, .. }, _) => (labels, Some(*number)),
        (_, Some(v)) => (&v.labels, v.pull),
        _ => (&[], None),
    };
    let label = inputs
        .policy_acknowledge_label
        .as_deref()
        .filter(|l| !l.is_empty());
    if let (Some(label), Some(pull)) = (label, pull)
        && labels.iter().any(|l| l == label)
    {
        let how = format!(
            "{} policy finding(s) at severity error acknowledged by the label {label} on #{pull}",
            plan.policy_errors
        );
        runner.warning(&how)?;
        runner.summary(&format!("\n> [!WARNING]\n> {how}.\n"))?;
        return Ok(Ok(Some(how)));
    }
    let how_to = match label {
        Some(l) => format!("; the runner lets the label {l} on the pull request acknowledge them"),
        None => String::new(),
    };
    runner.command(&format!(
        "::error title=kdeploy (policy)::{} policy check(s) at severity error (inputs `policy`, `policies`); see the `policy/…` warnings in the plan{how_to}. Nothing was deployed",
        plan.policy_errors
    ))?;
    runner.outputs(&[("error", "policy".to_string())])?;
    Ok(Err(1))
}

/// Each policy finding as an annotation (`::error`/`::warning`) at the file
/// that produced the object: the manifest and its line for a raw or
/// Kustomize source, else the app's config of its environment. At most
/// [`ANNOTATIONS`]: GitHub shows few per step.
pub(super) fn annotate_findings(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    plan: &Plan,
) -> anyhow::Result<()> {
    let mut n = 0;
    for c in &plan.changes {
        for (w, fails, message) in c
            .warnings
            .iter()
            .filter_map(|w| crate::policy::finding(w).map(|(fails, m)| (w, fails, m)))
        {
            if n == ANNOTATIONS {
                return Ok(());
            }
            n += 1;
            let level = if fails { "error" } else { "warning" };
            let dir = plan.dirs.get(&(c.env.clone(), c.app.clone()));
            let location = match dir {
                Some(d) if c.origin.file.starts_with(&format!("{d}/")) => {
                    crate::diag::Location::at(&c.origin.file, Some(c.origin.line), None)
                }
                Some(d) => crate::diag::Location::file(format!("{d}/config.yaml")),
                None => crate::diag::Location::file(&c.origin.file),
            };
            let d = crate::diag::Diagnostic::new(
                location,
                format!("{} ({}/{} {}): {message}", w.code, c.env, c.app, c.id),
            );
            runner.command(&super::runner::prefixed_command(
                &d,
                &inputs.working_directory,
                level,
            ))?;
        }
    }
    Ok(())
}

/// Most policy annotations per run.
const ANNOTATIONS: usize = 50;

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
