//! `mode: drift`, a scheduled workflow: every environment with a deploy
//! record is compared with its cluster ([`crate::drift`]). The result goes
//! to the log and job summary, to a check run on the checked-out commit,
//! and to one issue per environment: opened when it drifts, kept current
//! while it does, closed (with a comment) once it no longer does.

use std::io::Write as _;
use std::path::Path;

use super::{Inputs, Runner};
use crate::config::Filter;
use crate::drift::{Kind, Report};
use crate::github::{GitHub, RetryPolicy};

fn marker(env: &str) -> String {
    format!("<!-- kdeploy:drift:{env} -->")
}

/// One environment's drift as markdown.
pub(crate) fn markdown(r: &Report) -> String {
    let short = &r.deployed[..r.deployed.len().min(12)];
    let mut out = format!("### kdeploy drift: {}\n\n", r.environment);
    if r.in_sync() {
        out.push_str(&format!(
            "In sync: the {} resources deployed from `{short}` match the cluster.\n",
            r.checked
        ));
        return out;
    }
    let drifted = r
        .findings
        .iter()
        .filter(|f| f.kind != Kind::Unmanaged)
        .count();
    out.push_str(&format!(
        "{drifted} of {} resources deployed from `{short}` differ from the cluster.\n\n| | resource | app | what |\n|---|---|---|---|\n",
        r.checked
    ));
    for f in &r.findings {
        let what = match f.kind {
            Kind::Missing => "deleted from the cluster".to_string(),
            Kind::Changed => {
                let mut w = f
                    .fields
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                if f.fields.len() > 5 {
                    w.push_str(&format!("; … {} more", f.fields.len() - 5));
                }
                if !f.managers.is_empty() {
                    w.push_str(&format!(" (by {})", f.managers.join(", ")));
                }
                w
            }
            Kind::Unmanaged => format!(
                "not deployed by kdeploy{}",
                if f.managers.is_empty() {
                    String::new()
                } else {
                    format!(" (written by {})", f.managers.join(", "))
                }
            ),
        };
        let kind = match f.kind {
            Kind::Missing => "missing",
            Kind::Changed => "changed",
            Kind::Unmanaged => "unmanaged",
        };
        out.push_str(&format!(
            "| {kind} | `{}` | {} | {} |\n",
            f.id,
            f.app.as_deref().unwrap_or(""),
            what.replace('|', "\\|")
        ));
    }
    let diffs: String = r
        .findings
        .iter()
        .filter(|f| !f.diff.is_empty())
        .map(|f| f.diff.clone())
        .collect();
    if !diffs.is_empty() {
        let diffs: String = diffs.chars().take(40_000).collect();
        out.push_str(&format!(
            "\n<details><summary>Diffs (live → deployed)</summary>\n\n```diff\n{diffs}```\n\n</details>\n"
        ));
    }
    if !r.repaired.is_empty() {
        out.push_str(&format!("\nRe-applied: {}.\n", r.repaired.join(", ")));
    } else {
        out.push_str(&format!(
            "\nTo restore what was deployed: `kdeploy drift --repair --env {}` (or this workflow with `drift-repair: true`). To keep a change, make it in the config repo.\n",
            r.environment
        ));
    }
    out
}

/// Runs the drift check; returns the exit code.
///
/// # Errors
/// Connection, record and render failures.
pub(super) async fn run(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    repo_dir: &Path,
    retry: RetryPolicy,
) -> anyhow::Result<u8> {
    let env = runner.env;
    let filter = Filter::new(inputs.environments.as_deref(), inputs.apps.as_deref())?;
    let access = crate::cluster::Access {
        kubeconfig: inputs.kubeconfig.clone(),
        context: inputs.context.clone(),
    };
    let fetch = runner.fetch_auth(inputs.token.as_ref());
    let scope = crate::drift::Scope {
        repo: repo_dir,
        filter: &filter,
        access: &access,
        rev: None,
        fetch: fetch.as_ref(),
    };
    let settings = crate::drift::Settings {
        unmanaged: inputs.drift_unmanaged,
        repair: inputs.drift_repair,
    };
    let opts = crate::apply::Options {
        record_namespace: inputs.apply.record_namespace.clone(),
        ..crate::apply::Options::default()
    };
    runner.group("Drift")?;
    let reports = crate::drift::check(&scope, &settings, &opts).await?;
    for r in &reports {
        let mut text = Vec::new();
        crate::drift::text(r, &mut text)?;
        runner.log.write_all(&text)?;
    }
    runner.end_group()?;
    if reports.is_empty() {
        runner.notice("no deploy record of a selected environment: nothing deployed to compare")?;
    }
    let body: String = reports.iter().map(markdown).collect::<Vec<_>>().join("\n");
    runner.summary(&body)?;
    let drifted: Vec<&str> = reports
        .iter()
        .filter(|r| !r.in_sync())
        .map(|r| r.environment.as_str())
        .collect();
    runner.outputs(&[
        ("has-changes", (!drifted.is_empty()).to_string()),
        ("drifted", serde_json::to_string(&drifted)?),
    ])?;
    for d in &drifted {
        runner.warning(&format!(
            "{d} has drifted from what was deployed: see the job summary"
        ))?;
    }
    let gh = match (
        &inputs.token,
        env.var("GITHUB_API_URL"),
        env.var("GITHUB_REPOSITORY"),
    ) {
        (Some(token), Some(api), Some(repo)) => GitHub::new(api, token, repo, retry).ok(),
        _ => None,
    };
    let Some(gh) = gh else {
        return Ok(0);
    };
    if let Some(sha) = env.var("GITHUB_SHA") {
        let conclusion = if reports
            .iter()
            .any(|r| r.findings.iter().any(|f| f.kind != Kind::Unmanaged))
        {
            "failure"
        } else if drifted.is_empty() {
            "success"
        } else {
            "neutral"
        };
        let title = if drifted.is_empty() {
            "No drift".to_string()
        } else {
            format!("Drift in {}", drifted.join(", "))
        };
        let text: String = body.chars().take(65_000).collect();
        let check = serde_json::json!({
            "name": "kdeploy drift", "head_sha": sha, "status": "completed",
            "conclusion": conclusion,
            "output": {"title": title, "summary": format!("{} environment(s) checked", reports.len()), "text": text},
        });
        if let Err(e) = gh.create_check_run(&check).await {
            runner.warning(&e.explain("no drift check run", "checks: write"))?;
        }
    }
    match sync_issues(runner, &gh, &reports).await {
        Ok(done) => {
            for line in done {
                runner.line(&line)?;
            }
        }
        Err(e) => {
            runner.warning(&e.explain("the drift issues were not updated", "issues: write"))?
        }
    }
    Ok(0)
}

/// One open issue per drifted environment, closed once it is in sync.
async fn sync_issues(
    runner: &Runner<'_>,
    gh: &GitHub,
    reports: &[Report],
) -> Result<Vec<String>, crate::github::Error> {
    let mut done = Vec::new();
    let open = gh.open_issues().await?;
    let run_url = runner
        .run_url()
        .map_or_else(String::new, |url| format!(" ([run]({url}))"));
    for r in reports {
        let mark = marker(&r.environment);
        let existing = open
            .iter()
            .find(|i| i.body.as_deref().is_some_and(|b| b.contains(&mark)));
        if r.in_sync() {
            if let Some(issue) = existing {
                gh.create_comment(
                    issue.number,
                    &format!(
                        "The drift is gone: {} matches what was deployed from `{}`{run_url}.",
                        r.environment,
                        &r.deployed[..r.deployed.len().min(12)]
                    ),
                )
                .await?;
                gh.close_issue(issue.number).await?;
                done.push(format!(
                    "closed issue #{} ({} is in sync)",
                    issue.number, r.environment
                ));
            }
            continue;
        }
        let body = format!(
            "{mark}\n{}\n<sub>Kept current by the scheduled `kdeploy drift` check{run_url}; closed when the drift is gone.</sub>\n",
            markdown(r)
        );
        match existing {
            Some(issue) if issue.body.as_deref() == Some(body.as_str()) => {}
            Some(issue) => {
                gh.update_issue(issue.number, &body).await?;
                done.push(format!("updated issue #{}", issue.number));
            }
            None => {
                let issue = gh
                    .create_issue(&format!("Drift in {}", r.environment), &body)
                    .await?;
                done.push(format!("opened issue #{} {}", issue.number, issue.html_url));
            }
        }
    }
    Ok(done)
}
