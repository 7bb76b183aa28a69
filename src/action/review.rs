//! The action's side of reviewed = applied ([`crate::review`]): on a push,
//! find the pull request the pushed commit came from, read the plan its
//! kdeploy comment showed, compare, report, and apply the `unreviewed`
//! input before the cluster is touched.

use crate::config::Filter;
use crate::event::Event;
use crate::github::{GitHub, RetryPolicy};
use crate::plan::Plan;
use crate::review::{Reviewed, Unreviewed, Verdict};

use super::inputs::Inputs;
use super::runner::Runner;

/// The check run a merge queue's plan is posted as, on the queued commit:
/// a repository can require it.
pub(super) const QUEUE_CHECK: &str = "kdeploy plan";

/// Posts the plan of a merge group as the completed check run
/// [`QUEUE_CHECK`] on the queued commit; its fingerprints are what the
/// push of that commit is compared with.
pub(super) async fn queue_check(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    plan: &Plan,
    retry: RetryPolicy,
) -> anyhow::Result<()> {
    let Event::MergeGroup { head_sha, .. } = event else {
        return Ok(());
    };
    let (Some(token), Some(api), Some(repo)) = (
        &inputs.token,
        runner.env.var("GITHUB_API_URL"),
        runner.env.var("GITHUB_REPOSITORY"),
    ) else {
        runner.warning("no github-token: the merge queue's plan is in the job summary only, and its push will be reported unreviewed")?;
        return Ok(());
    };
    let gh = GitHub::new(api, token, repo, retry)?;
    let marker = crate::report::comment_marker(&inputs.comment_id);
    let body = serde_json::json!({
        "name": QUEUE_CHECK,
        "head_sha": head_sha,
        "status": "completed",
        "conclusion": if plan.policy_errors > 0 { "failure" } else { "success" },
        "details_url": runner.run_url(),
        "output": {
            "title": crate::report::summary_line(plan),
            "summary": crate::report::markdown(plan, &marker, crate::feedback::OUTPUT_LIMIT),
        },
    });
    if let Err(e) = gh.create_check_run(&body).await {
        runner.warning(&e.explain(
            "no `kdeploy plan` check run on the queued commit",
            "checks: write",
        ))?;
    }
    Ok(())
}

/// The pull request a pushed commit came from: the merged one GitHub
/// associates with it (merge, squash or rebase), else the first.
async fn pull_of(
    gh: &GitHub,
    sha: &str,
) -> Result<Option<(u64, Vec<String>)>, crate::github::Error> {
    let pulls = gh.pulls_for_commit(sha).await?;
    Ok(pulls
        .iter()
        .find(|p| p.merged_at.is_some())
        .or_else(|| pulls.first())
        .map(|p| (p.number, p.labels.iter().map(|l| l.name.clone()).collect())))
}

/// The verdict of a push that deploys `plan` (`None` for other events, or
/// without a token to ask GitHub with).
pub(super) async fn verdict(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    plan: &Plan,
    filter: &Filter,
    retry: RetryPolicy,
) -> anyhow::Result<Option<Verdict>> {
    let Event::Push {
        after: Some(sha), ..
    } = event
    else {
        return Ok(None);
    };
    let selected = |env: &str| filter.matches_env(env);
    let (Some(token), Some(api), Some(repo)) = (
        &inputs.token,
        runner.env.var("GITHUB_API_URL"),
        runner.env.var("GITHUB_REPOSITORY"),
    ) else {
        return Ok(Some(Verdict::without_review(plan, &selected)));
    };
    let gh = GitHub::new(api, token, repo, retry)?;
    let found = async {
        let Some((number, labels)) = pull_of(&gh, sha).await? else {
            return Ok(None);
        };
        // A merge queue checked exactly this commit: that plan is the one
        // to compare; else the plan the pull request's comment showed.
        let queued = gh.check_run_summaries(sha, QUEUE_CHECK).await?;
        if let Some(reviewed) = queued
            .iter()
            .find_map(|s| Reviewed::parse(number, std::slice::from_ref(s)))
        {
            let place = format!("the merge queue's check of {}", &sha[..sha.len().min(12)]);
            return Ok(Some((number, labels, Some(reviewed), Some(place))));
        }
        let parts = crate::comment::read_plans(&gh, number).await?;
        let reviewed = Reviewed::parse(number, &parts);
        Ok::<_, crate::github::Error>(Some((number, labels, reviewed, None)))
    }
    .await;
    let verdict = match found {
        Ok(Some((number, labels, reviewed, place))) => {
            let verdict = match reviewed {
                Some(reviewed) => crate::review::compare(&reviewed, plan, &selected),
                None => Verdict {
                    pull: Some(number),
                    ..Verdict::without_review(plan, &selected)
                },
            };
            Verdict {
                labels,
                place,
                ..verdict
            }
        }
        Ok(None) => Verdict::without_review(plan, &selected),
        Err(e) => {
            runner.warning(&format!(
                "cannot read the pull request of {sha}: {}; the deploy is reported as unreviewed",
                e.explain("review", "pull-requests: read")
            ))?;
            Verdict::without_review(plan, &selected)
        }
    };
    Ok(Some(verdict))
}

/// Consent to held deletions: the input, else the consent label on the
/// pull request the push came from.
pub(super) fn deletion_consent(inputs: &Inputs, verdict: Option<&Verdict>) -> Option<String> {
    if let Some(c) = &inputs.apply.deletion_consent {
        return Some(c.clone());
    }
    let v = verdict?;
    let label = &inputs.deletion_consent_label;
    (v.labels.iter().any(|l| l == label))
        .then(|| format!("label {label} on #{}", v.pull.unwrap_or_default()))
}

/// Reports `verdict` (job summary, log, outputs) and applies the
/// `unreviewed` input: `false` when the deploy must not go on.
pub(super) fn enforce(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    verdict: &Verdict,
) -> anyhow::Result<bool> {
    let ok = verdict.is_reviewed();
    runner.line(&format!("review: {}", verdict.line()))?;
    runner.summary(&format!(
        "\n### kdeploy review\n\n{}",
        verdict.markdown(None)
    ))?;
    runner.outputs(&[("reviewed", ok.to_string()), ("review", verdict.line())])?;
    if ok {
        return Ok(true);
    }
    match inputs.unreviewed {
        Unreviewed::Deploy => Ok(true),
        Unreviewed::Warn => {
            runner.warning(&format!("{}; deploying (unreviewed: warn)", verdict.line()))?;
            Ok(true)
        }
        Unreviewed::Fail => {
            runner.command(&format!(
                "::error title=kdeploy (unreviewed)::{}; nothing was deployed (unreviewed: fail). Plan the change in a pull request and merge it, or re-run with unreviewed: deploy",
                super::runner::escape(&verdict.line())
            ))?;
            runner.outputs(&[
                ("deployed", "false".to_string()),
                ("error", "unreviewed".to_string()),
            ])?;
            Ok(false)
        }
    }
}
