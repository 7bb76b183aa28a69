//! Deploy feedback on GitHub: a check run `kdeploy / <env>` on the deployed
//! commit and a GitHub deployment with statuses, both started before the
//! apply and completed with the result per resource.
//!
//! GitHub errors never fail a deploy: they become warnings (a fork's or a
//! read-only token gets 403 here). Output respects GitHub's limits: 65,535
//! characters for summary and text, 50 annotations per request.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::apply::Report;
use crate::github::GitHub;

/// GitHub's limit on a check run's summary and text.
pub const OUTPUT_LIMIT: usize = 65_535;
/// GitHub's limit on annotations per check run request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

/// Where the deploy is reported.
pub struct Feedback {
    env: String,
    check_run: Option<u64>,
    deployment: Option<u64>,
    run_url: Option<String>,
    environment_url: Option<String>,
    review: Option<String>,
}

/// What a deploy's feedback links to and says besides the report.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The workflow run.
    pub run_url: Option<String>,
    /// The environment's URL (GitHub deployments).
    pub environment_url: Option<String>,
    /// Markdown: whether this deploy applies the reviewed plan.
    pub review: Option<String>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(|_| String::new(), |t| t.to_string())
}

fn truncate(mut s: String, limit: usize) -> String {
    if s.len() > limit {
        let note = "\n\n… (truncated: the full report is in the job log and the report JSON)";
        let mut cut = limit.saturating_sub(note.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(note);
    }
    s
}

/// Starts the check run and the deployment of `env` at `sha`.
pub async fn start(
    gh: &GitHub,
    env: &str,
    sha: &str,
    links: Links,
    deployments: bool,
    warnings: &mut Vec<String>,
) -> Feedback {
    let Links {
        run_url,
        environment_url,
        review,
    } = links;
    let mut summary = format!("Deploying `{}` to **{env}**.", &sha[..sha.len().min(12)]);
    if let Some(url) = &run_url {
        let _ = write!(summary, " [Workflow run]({url})");
    }
    if let Some(r) = &review {
        let _ = write!(summary, "\n\n{r}");
    }
    let check = json!({
        "name": format!("kdeploy / {env}"),
        "head_sha": sha,
        "status": "in_progress",
        "started_at": now(),
        "details_url": run_url,
        "output": {"title": format!("Deploying to {env}"), "summary": summary},
    });
    let check_run = match gh.create_check_run(&check).await {
        Ok(id) => Some(id),
        Err(e) => {
            warnings.push(e.explain(&format!("no check run for {env}"), "checks: write"));
            None
        }
    };
    let deployment = if deployments {
        let body = json!({
            "ref": sha, "environment": env, "auto_merge": false, "required_contexts": [],
            "description": format!("kdeploy to {env}"), "production_environment": env == "production",
            "transient_environment": false,
        });
        match gh.create_deployment(&body).await {
            Ok(id) => {
                let status =
                    json!({"state": "in_progress", "log_url": run_url, "description": "deploying"});
                if let Err(e) = gh.create_deployment_status(id, &status).await {
                    warnings.push(format!("deployment status for {env}: {e}"));
                }
                Some(id)
            }
            Err(e) => {
                warnings.push(e.explain(
                    &format!("no GitHub deployment for {env}"),
                    "deployments: write",
                ));
                None
            }
        }
    } else {
        None
    };
    Feedback {
        env: env.to_string(),
        check_run,
        deployment,
        run_url,
        environment_url,
        review,
    }
}

pub use crate::report::deploy::conclusion;

/// Title, summary, text and annotations of a finished deploy, within
/// GitHub's limits. `config_of` gives the config file of an app's release
/// (for annotations).
pub fn output(
    env: &str,
    report: Option<&Report>,
    error: Option<&str>,
    run_url: Option<&str>,
    config_of: &dyn Fn(&str) -> Option<String>,
) -> (String, String, String, Vec<Value>) {
    let body = crate::report::deploy::check_run(env, report, error, run_url);
    let annotations = body
        .failing
        .into_iter()
        .filter_map(|(app, message)| {
            let path = config_of(&app)?;
            Some(json!({
                "path": path, "start_line": 1, "end_line": 1, "annotation_level": "failure",
                "title": format!("kdeploy: {app} failed in {env}"), "message": truncate(message, 64_000),
            }))
        })
        .collect();
    (
        body.title,
        truncate(body.summary, OUTPUT_LIMIT),
        truncate(body.text, OUTPUT_LIMIT),
        annotations,
    )
}

impl Feedback {
    /// Completes the check run and the deployment.
    pub async fn finish(
        self,
        gh: &GitHub,
        report: Option<&Report>,
        error: Option<&str>,
        cancelled: bool,
        config_of: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<String>,
    ) {
        let conclusion = if cancelled {
            "cancelled"
        } else {
            conclusion(report)
        };
        let (title, mut summary, text, annotations) =
            output(&self.env, report, error, self.run_url.as_deref(), config_of);
        if let Some(r) = &self.review {
            summary = truncate(format!("{r}\n{summary}"), OUTPUT_LIMIT);
        }
        if let Some(id) = self.check_run {
            let mut batches: Vec<&[Value]> = annotations.chunks(ANNOTATIONS_PER_REQUEST).collect();
            if batches.is_empty() {
                batches.push(&[]);
            }
            let last = batches.len() - 1;
            for (i, batch) in batches.into_iter().enumerate() {
                let mut body = json!({"output": {"title": title, "summary": summary, "text": text, "annotations": batch}});
                if i == last {
                    body["status"] = json!("completed");
                    body["conclusion"] = json!(conclusion);
                    body["completed_at"] = json!(now());
                }
                if let Err(e) = gh.update_check_run(id, &body).await {
                    warnings.push(format!("check run for {}: {e}", self.env));
                    break;
                }
            }
        }
        if let Some(id) = self.deployment {
            let state = if conclusion == "success" {
                "success"
            } else {
                "failure"
            };
            let body = json!({
                "state": state, "log_url": self.run_url, "environment_url": self.environment_url,
                "description": truncate(title, 140),
            });
            if let Err(e) = gh.create_deployment_status(id, &body).await {
                warnings.push(format!("deployment status for {}: {e}", self.env));
            }
        }
    }
}
