//! `kdeploy action`: the container Action's entry point.
//!
//! Reads the event and the `INPUT_*` variables the runner sets (hyphens
//! kept: `INPUT_GITHUB-TOKEN`), resolves the two commits, renders and plans,
//! then reports through the channels GitHub Actions offers: the sticky PR
//! comment, the job summary, step outputs, log groups and annotations. The
//! token is masked before anything else is printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::Filter;
use crate::diag::Diagnostics;
use crate::event::{self, Event};
use crate::github::{GitHub, RetryPolicy};
use crate::source::Snapshot;
use crate::{render, report};

mod automation;
mod drift;
mod inputs;
mod preview;
mod pull_request;
mod review;
mod runner;

use pull_request::post_comment;
use runner::{
    Runner, describe_scope, error_markdown, mask_kubeconfig, prefixed_annotation, report_failure,
    summarize,
};

pub use inputs::{ActionEnv, INPUTS, Input, Inputs, Mode, inputs_help};

/// GitHub's cap on a step's job summary.
pub const SUMMARY_LIMIT: usize = 1024 * 1024;

/// Workflow commands and files of the runner.
/// Runs the action; returns the process exit code.
///
/// # Errors
/// Setup problems (no event, bad inputs, revisions that cannot be fetched).
/// Render errors are reported (comment, summary, annotations) and give
/// exit code 2 rather than an error.
pub async fn run(env: &ActionEnv, retry: RetryPolicy, log: &mut dyn Write) -> anyhow::Result<u8> {
    run_until(env, retry, log, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM: how the runner cancels a job.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// [`run`], stopping the deploy when `cancel` resolves: the check runs are
/// then completed as `cancelled` and the exit code is 130.
///
/// # Errors
/// As [`run`].
pub async fn run_until(
    env: &ActionEnv,
    retry: RetryPolicy,
    log: &mut dyn Write,
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u8> {
    // The log passes the mask of decrypted SOPS values, whoever calls this.
    let mut log = crate::secrets::mask::MaskingWriter::new(log);
    let result = run_steps(env, retry, &mut log, cancel).await;
    if let Err(e) = &result {
        report_failure(env, &mut log, e)?;
    }
    result
}

async fn run_steps(
    env: &ActionEnv,
    retry: RetryPolicy,
    log: &mut dyn Write,
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u8> {
    let inputs = Inputs::read(env)?;
    let mut runner = Runner::new(env, log);
    if let Some(token) = &inputs.token {
        runner.command(&format!("::add-mask::{token}"))?;
    }
    if let Some(k) = &inputs.kubeconfig {
        mask_kubeconfig(&mut runner, k)?;
    }
    if let Some(key) = &inputs.sops_age_key {
        // Masked in the runner's log first, then in everything kdeploy
        // prints; sops gets it as SOPS_AGE_KEY, no other process does.
        for line in key.lines().map(str::trim).filter(|l| !l.is_empty()) {
            runner.command(&format!("::add-mask::{line}"))?;
            crate::secrets::mask::register(line, "sops-age-key");
        }
        crate::secrets::sops::set_age_key(key.trim().to_string());
    }
    if let Some(services) = &inputs.sops_key_services {
        crate::secrets::key_services::set_allowed(services);
    }
    let name = env
        .var("GITHUB_EVENT_NAME")
        .context("GITHUB_EVENT_NAME is not set; `kdeploy action` runs inside GitHub Actions (use `kdeploy plan` locally)")?;
    let path = env
        .var("GITHUB_EVENT_PATH")
        .context("GITHUB_EVENT_PATH is not set; the runner writes the event payload there")?;
    let mut event = Event::read(name, Path::new(path))?;
    // The action's own `base`/`head` inputs win over workflow inputs of
    // the same names in the payload.
    if let Event::WorkflowDispatch { base, head, .. } = &mut event {
        for (value, input) in [(base, "base"), (head, "head")] {
            if let Some(v) = env.input(input) {
                *value = Some(v.to_string());
            }
        }
    }
    // `pull_request_target` runs with the base repository's token and
    // secrets; rendering a fork's charts there hands them to its author.
    if let Event::PullRequest {
        target: true,
        from_fork,
        ..
    } = &event
    {
        if *from_fork && !inputs.allow_pull_request_target {
            let d = crate::diag::Diagnostic::global(
                "refusing to render a pull request from another repository on `pull_request_target`: that event runs with this repository's token and secrets, and rendering the pull request's charts and config there would hand them to its author",
            )
            .help("run kdeploy on `pull_request` (forks get a read-only token; the plan goes to the job summary); set the input `allow-pull-request-target: true` only if you have reviewed what that exposes");
            return Err(Diagnostics::from(d).into());
        }
        runner.warning("`pull_request_target` runs with this repository's token and secrets; kdeploy renders the pull request's files, so use it only for pull requests from this repository (prefer `pull_request`)")?;
    }
    let workspace = PathBuf::from(env.var("GITHUB_WORKSPACE").unwrap_or("."));
    let repo_dir = workspace.join(&inputs.working_directory);
    if env.var("GITHUB_ACTIONS") == Some("true") {
        // The container runs as another user than the one owning the checkout.
        let _ = std::process::Command::new("git")
            .args(["config", "--global", "--add", "safe.directory"])
            .arg(&workspace)
            .status();
    }
    if let Some(mode @ (Mode::Images | Mode::Promote)) = inputs.mode {
        return automation::run(&mut runner, &inputs, &event, mode, &repo_dir, retry).await;
    }
    if inputs.mode == Some(Mode::Drift) {
        return drift::run(&mut runner, &inputs, &repo_dir, retry).await;
    }
    if inputs.mode == Some(Mode::Preview) {
        return preview::run(&mut runner, &inputs, &event, &repo_dir, retry).await;
    }
    let mode = match (&event, inputs.mode) {
        (Event::Unsupported(name), _) => {
            runner.notice(&format!("kdeploy does nothing on `{name}` events (it handles pull_request, merge_group, push and workflow_dispatch; `mode: images` and `mode: promote` run on any)"))?;
            return Ok(0);
        }
        (Event::RepositoryDispatch { event_type, .. }, _) => {
            runner.notice(&format!("repository_dispatch `{event_type}`: set `mode: images` to turn a dispatched {{app, env, version}} into a version change"))?;
            return Ok(0);
        }
        (Event::PullRequest { action, merged, .. }, _) if action == "closed" => {
            runner.notice(if *merged {
                "the pull request was merged; nothing to plan here: the push to the base branch deploys it"
            } else {
                "the pull request was closed without merging; nothing to plan or deploy"
            })?;
            return Ok(0);
        }
        (Event::Push { after: None, .. }, _) => {
            runner.notice("the push deleted a ref; nothing to deploy")?;
            return Ok(0);
        }
        (Event::MergeGroup { .. }, Some(Mode::Apply)) => {
            runner.notice("a merge group's commit is not on the branch yet: it is planned (the check run `kdeploy plan`), and deployed by the push that follows")?;
            Mode::Plan
        }
        (_, Some(mode)) => mode,
        (Event::Push { .. }, None) => Mode::Apply,
        (_, None) => Mode::Plan,
    };

    plan_then_deploy(&mut runner, &inputs, &event, mode, &repo_dir, retry, cancel).await
}

/// Resolves the two commits, plans (the comment, the job summary, the
/// outputs) and, in mode apply, deploys.
async fn plan_then_deploy(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    event: &Event,
    mode: Mode,
    repo_dir: &Path,
    retry: RetryPolicy,
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u8> {
    let env = runner.env;
    runner.group("Resolve revisions")?;
    let auth = runner.fetch_auth(inputs.token.as_ref());
    let revs = event::resolve(event, repo_dir, env.var("GITHUB_SHA"), auth.as_ref())?;
    match revs.base {
        Some(base) if base == revs.head => runner.line(&format!(
            "base and head are the same commit {base}: nothing can differ"
        ))?,
        Some(base) => runner.line(&format!("base {base}\nhead {}", revs.head))?,
        None => runner.line(&format!(
            "no base (first push): everything at {} is new",
            revs.head
        ))?,
    }
    runner.end_group()?;

    runner.group("Render and plan")?;
    let filter = Filter::new(inputs.environments.as_deref(), inputs.apps.as_deref())
        .context("invalid `environments`/`apps` glob")?;
    let open = |id| -> anyhow::Result<Snapshot> {
        Ok(Snapshot::at_commit(
            crate::source::discover(repo_dir)?,
            repo_dir,
            id,
            &id.to_string(),
        )?)
    };
    let base = match revs.base {
        Some(id) => open(id)?,
        None => Snapshot::empty(),
    };
    let head = open(revs.head)?;
    // Environments bound to a branch deploy from that branch only.
    let scope = crate::config::head_settings(&head).branch_scope(event.branch());
    describe_scope(runner, &scope, event.branch())?;
    let filter = filter.scoped(scope);
    let marker = report::comment_marker(&inputs.comment_id);
    // A pull request's head is the author's; a pushed branch was merged.
    let policy_from = match event {
        Event::Push { .. } => render::PolicyFrom::Own,
        _ => render::PolicyFrom::Base,
    };
    // Only a pull request's plan reads the render cache: a push's plan
    // goes on to deploy, and nothing that applies trusts a cached render.
    let cache = inputs
        .render_cache
        .as_deref()
        .filter(|_| matches!(event, Event::PullRequest { .. }))
        .map(render::cache::RenderCache::at);
    let mut outcome = crate::pipeline::plan::plan(crate::pipeline::PlanRequest {
        policy_from,
        context: inputs.context_lines,
        checks: inputs.policy.as_deref(),
        policies: inputs.policies.as_deref(),
        admission_policies: inputs.admission_policies.as_deref(),
        render_cache: cache.as_ref(),
        ..crate::pipeline::PlanRequest::new(&base, &head, &filter)
    });
    if let Ok(o) = &outcome
        && let Some(used) = &o.comparison.cache
    {
        runner.line(&used.line())?;
        for why in used.ignored.iter().take(10) {
            runner.notice(&format!("render cache entry ignored: {why}"))?;
        }
    }
    if let Ok(o) = &mut outcome {
        pull_request::check_cluster(runner, inputs, event, o).await?;
    }
    runner.end_group()?;
    let (cmp, mut plan) = match outcome {
        Ok(o) => (o.comparison, o.plan),
        Err(render::Error::Invalid(problems)) => {
            for p in &problems.0 {
                runner.command(&prefixed_annotation(p, &inputs.working_directory))?;
            }
            let body = error_markdown(&marker, head.label(), &problems);
            runner.summary(&body)?;
            runner.outputs(&[
                ("has-changes", "false".into()),
                ("error", "render failed".into()),
            ])?;
            post_comment(runner, event, inputs, retry, &marker, &[body]).await?;
            runner.command(&format!(
                "::error::rendering failed with {} problem(s); see the annotations",
                problems.0.len()
            ))?;
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some(server), Some(repo)) = (env.var("GITHUB_SERVER_URL"), env.var("GITHUB_REPOSITORY"))
    {
        // Links to the head's files, relative to the checkout's root.
        let dir = inputs.working_directory.to_string_lossy();
        let sub = dir.trim_start_matches("./").trim_matches('/');
        let sub = if sub.is_empty() || sub == "." {
            String::new()
        } else {
            format!("/{sub}")
        };
        plan.browse_url = Some(format!("{server}/{repo}/blob/{}{sub}", revs.head));
    }

    runner.group("Plan")?;
    let mut text = Vec::new();
    // The Actions log renders ANSI colour (NO_COLOR turns it off).
    let color = crate::term::Color::Auto.enabled(|k| env.var(k).map(str::to_string), false);
    report::text(&plan, color, &mut text)?;
    runner.log.write_all(&text)?;
    runner.end_group()?;

    let json_path = env
        .var("RUNNER_TEMP")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("kdeploy-plan.json");
    let mut json = serde_json::to_value(report::json(&plan))?;
    crate::secrets::mask::redact_value(&mut json);
    std::fs::write(&json_path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    runner.summary(&report::markdown(&plan, &marker, SUMMARY_LIMIT))?;
    let parts = report::markdown_parts(
        &plan,
        &marker,
        report::COMMENT_LIMIT,
        inputs.max_comment_parts,
    );
    let url = post_comment(runner, event, inputs, retry, &marker, &parts).await?;
    let (added, changed, deleted) = plan.counts();
    runner.outputs(&[
        ("has-changes", plan.has_changes().to_string()),
        ("added", added.to_string()),
        ("changed", changed.to_string()),
        ("deleted", deleted.to_string()),
        ("plan-json", json_path.display().to_string()),
        (
            "fingerprints",
            serde_json::to_string(&report::fingerprints(&plan))?,
        ),
        ("comment-url", url.unwrap_or_default()),
        (
            "environments",
            report::environments(&plan, &cmp.head.settings).to_string(),
        ),
    ])?;
    summarize(runner, &plan)?;
    review::queue_check(runner, inputs, event, &plan, retry).await?;
    pull_request::annotate_findings(runner, inputs, &plan)?;
    // A push learns its pull request's labels with the review, below.
    let early = mode == Mode::Plan || !matches!(event, Event::Push { .. });
    let mut policy_acknowledged = None;
    if early {
        match pull_request::policy_gate(runner, inputs, event, &plan, None)? {
            Ok(a) => policy_acknowledged = a,
            Err(code) => return Ok(code),
        }
    }
    if pull_request::refused(runner, &plan)? {
        return Ok(1);
    }
    if mode == Mode::Plan {
        return Ok(0);
    }
    // Reviewed = applied: decided before the cluster is touched.
    let verdict = review::verdict(runner, inputs, event, &plan, &filter, retry).await?;
    if let Some(v) = &verdict
        && !review::enforce(runner, inputs, v)?
    {
        return Ok(1);
    }
    if !early {
        match pull_request::policy_gate(runner, inputs, event, &plan, verdict.as_ref())? {
            Ok(a) => policy_acknowledged = a,
            Err(code) => return Ok(code),
        }
    }
    let what = Deploying {
        base: &base,
        head: &head,
        filter: &filter,
        repo_dir,
        review: verdict.as_ref(),
        deletion_consent: review::deletion_consent(inputs, verdict.as_ref()),
        policy_acknowledged,
    };
    deploy(runner, inputs, what, retry, cancel).await
}

/// What a deploy of the action deploys.
struct Deploying<'a> {
    base: &'a Snapshot,
    head: &'a Snapshot,
    filter: &'a Filter,
    repo_dir: &'a Path,
    /// The push's review, shown in each check run.
    review: Option<&'a crate::review::Verdict>,
    /// Consent to deletions that need it, and how it was given.
    deletion_consent: Option<String>,
    /// Policy errors acknowledged, and how.
    policy_acknowledged: Option<String>,
}

/// Mode apply: renders the head state in full and deploys it.
async fn deploy(
    runner: &mut Runner<'_>,
    inputs: &Inputs,
    what: Deploying<'_>,
    retry: RetryPolicy,
    cancel: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u8> {
    let Deploying {
        base,
        head,
        filter,
        repo_dir,
        review,
        deletion_consent,
        policy_acknowledged,
    } = what;
    runner.group("Deploy")?;
    let apply_options = crate::apply::Options {
        repo_dir: Some(repo_dir.to_path_buf()),
        deletion_consent,
        policy_acknowledged,
        ..inputs.apply.clone()
    };
    let cache = inputs
        .render_cache
        .as_deref()
        .map(render::cache::RenderCache::at);
    let request = crate::pipeline::DeployRequest {
        head,
        base: Some(base),
        filter,
        environments: inputs.environments.as_deref(),
        apps: inputs.apps.as_deref(),
        render_cache: cache.as_ref(),
    };
    let prepared = match crate::pipeline::Deploy::prepare(request) {
        Ok(d) => d,
        Err(render::Error::Invalid(problems)) => {
            for p in &problems.0 {
                runner.command(&prefixed_annotation(p, &inputs.working_directory))?;
            }
            runner.end_group()?;
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    };
    let (head_state, base_state) = (&prepared.head, &prepared.base);
    let access = crate::cluster::Access {
        kubeconfig: inputs.kubeconfig.clone(),
        context: inputs.context.clone(),
    };
    let repository = runner
        .env
        .var("GITHUB_REPOSITORY")
        .unwrap_or("unknown")
        .to_string();
    let head_commit = prepared.head_commit.clone();
    // Feedback on GitHub: a check run and a deployment per environment,
    // started before anything changes in the cluster.
    let envs = prepared.environments(filter);
    let gh = match (&inputs.token, runner.env.var("GITHUB_API_URL")) {
        (Some(token), Some(api)) if head_state.commit.is_some() => {
            GitHub::new(api, token, &repository, retry).ok()
        }
        _ => None,
    };
    let run_url = runner.run_url();
    let mut warnings = Vec::new();
    let mut started = Vec::new();
    if let Some(gh) = &gh {
        for env in &envs {
            let url = inputs
                .environment_url
                .as_ref()
                .map(|u| u.replace("{env}", env));
            started.push(
                crate::feedback::start(
                    gh,
                    env,
                    &head_commit,
                    crate::feedback::Links {
                        run_url: run_url.clone(),
                        environment_url: url,
                        review: review.map(|v| v.markdown(Some(env))),
                    },
                    inputs.github_deployments,
                    &mut warnings,
                )
                .await,
            );
        }
    }
    let mut text = Vec::new();
    let mut deployed = Vec::new();
    let deploying = prepared.run(
        request,
        &access,
        &repository,
        &apply_options,
        &mut text,
        &mut deployed,
    );
    let mut cancelled = false;
    let result = tokio::select! {
        r = deploying => r,
        () = cancel => {
            cancelled = true;
            Err(anyhow::anyhow!("the workflow run was cancelled during the deploy; the record was not updated and the lease expires by itself"))
        }
    };
    let result = result.map(|()| deployed);
    runner.log.write_all(&text)?;
    runner.end_group()?;
    let config_of = |env: &str, app: &str| {
        head_state
            .releases
            .iter()
            .chain(base_state.iter().flat_map(|b| b.releases.iter()))
            .find(|r| r.release.env == env && r.release.app == app)
            .map(|r| {
                let path = format!("{}/config.yaml", r.release.dir);
                if inputs.working_directory == Path::new(".") {
                    path
                } else {
                    inputs.working_directory.join(path).display().to_string()
                }
            })
    };
    if let Some(gh) = &gh {
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        for (feedback, env) in started.into_iter().zip(&envs) {
            let report = result
                .as_ref()
                .ok()
                .and_then(|rs| rs.iter().find(|r| &r.environment == env));
            let config = |app: &str| config_of(env, app);
            feedback
                .finish(
                    gh,
                    report,
                    error.as_deref(),
                    cancelled,
                    &config,
                    &mut warnings,
                )
                .await;
        }
    }
    for w in &warnings {
        runner.warning(w)?;
    }
    if cancelled {
        runner.command("::error::cancelled during the deploy; what was applied so far stays, the next run finishes the change")?;
        return Ok(130);
    }
    let reports = result?;
    let report_path = runner
        .env
        .var("RUNNER_TEMP")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("kdeploy-report.json");
    let mut json = serde_json::json!({ "reports": reports });
    crate::secrets::mask::redact_value(&mut json);
    std::fs::write(&report_path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    runner.summary(&crate::report::deploy::summary(&reports))?;
    let ok = reports.iter().all(crate::apply::Report::succeeded);
    runner.outputs(&[
        ("deployed", ok.to_string()),
        ("report-json", report_path.display().to_string()),
    ])?;
    if ok {
        Ok(0)
    } else {
        runner.command("::error::deploy failed; see the job summary. The deploy record was not updated, so a re-run retries the change")?;
        Ok(1)
    }
}
