//! Command-line interface: dispatch of the parsed arguments ([`args`]).
//!
//! Each command calls into the pipeline stages and writes to the given
//! output, so commands are testable without a process.

use std::io::Write;

use anyhow::Context as _;

use crate::source::{Revision, Snapshot};
use crate::{bench, output, render, report};

mod args;
mod check;
mod images;
mod preview;

pub use args::*;

/// Runs a parsed command.
///
/// # Errors
/// Bad input ([`crate::diag::Diagnostics`] inside the chain) or I/O failures.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let color = cli.color.for_stdout();
    match cli.command {
        Command::Render(args) => run_render(&args, out),
        Command::Plan(args) => run_plan(&args, color, out),
        Command::Environments(args) => {
            let (cmp, plan) = args.change.plan(0, None)?;
            let envs = report::environments(&plan, &cmp.head.settings);
            writeln!(out, "{envs}")?;
            Ok(Outcome::Clean)
        }
        Command::Validate(args) => {
            let filter = args.selection.filter()?;
            let snapshot =
                Snapshot::open(&args.selection.repo, &Revision::parse(args.rev.as_deref()))?;
            let emitted = crate::emit::emit(&snapshot, &filter, crate::emit::Texts::Skip)?;
            args.selection.ensure_matches(&[&snapshot])?;
            let summary = emitted.summary;
            writeln!(out, "{} resources valid", summary.checked)?;
            if !summary.skipped.is_empty() {
                writeln!(
                    out,
                    "not checked (no schema in kdeploy and no CRD in the repo): {}",
                    summary
                        .skipped
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
            Ok(Outcome::Clean)
        }
        Command::Check(args) => check::run(&args, out),
        Command::Diff(args) => block_on(run_diff(&args, out)),
        Command::Drift(args) => block_on(run_drift(&args, out)),
        Command::Wait(args) => block_on(run_wait(&args, out)),
        Command::Apply(args) => block_on(run_apply(&args, out)),
        Command::Action => {
            let env = crate::action::ActionEnv::from_env();
            let retry = crate::github::RetryPolicy::default();
            let code = block_on(crate::action::run(&env, retry, out))?;
            Ok(if code == 0 {
                Outcome::Clean
            } else {
                Outcome::Exit(code)
            })
        }
        Command::Images(ImagesCommand::Update(args)) => images::update(&args, out),
        Command::Preview(cmd) => block_on(preview::run(&cmd, out)),
        Command::Promote(args) => images::promote(&args, color, out),
        Command::SetVersion(args) => images::set_version(&args, out),
        Command::Lock(args) => images::lock(&args, out),
        Command::Bench(args) => {
            bench::run(&args, out)?;
            Ok(Outcome::Clean)
        }
        Command::Init(args) => {
            use crate::init::Start;
            let start = match (
                args.from_raw,
                args.from_kustomize,
                args.from_argocd,
                args.from_flux,
                args.from_helm,
            ) {
                (Some(p), ..) => Start::Raw(p),
                (_, Some(p), ..) => Start::Kustomize(p),
                (_, _, Some(d), ..) => Start::ArgoCd(d),
                (_, _, _, Some(d), _) => Start::Flux(d),
                (.., Some(d)) => Start::Helm(d),
                _ => Start::New,
            };
            crate::init::run(&args.repo, &start, out)?;
            Ok(Outcome::Clean)
        }
        Command::Schema {
            what: SchemaKind::Values,
        } => {
            let text = crate::render::chart::BUILTIN
                .iter()
                .find(|(p, _)| *p == "values.schema.json")
                .map_or("", |(_, t)| t);
            out.write_all(text.as_bytes())?;
            Ok(Outcome::Clean)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            // Into a buffer: clap_complete panics on a failed write (a
            // closed pipe); ours is an error like any other.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kdeploy", &mut script);
            out.write_all(&script)?;
            Ok(Outcome::Clean)
        }
    }
}

fn run_plan(args: &PlanArgs, color: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let access = crate::cluster::Access {
        kubeconfig: args.kubeconfig.clone(),
        context: args.cluster_context.clone(),
    };
    let (cmp, plan) = args
        .change
        .plan(args.context, args.cluster.then_some(&access))?;
    // Both revisions' objects are freed on another thread while the plan is
    // written: one by one they cost a tenth of a plan after a chart change,
    // and the process may well end first.
    std::thread::spawn(move || drop(cmp));
    // The text is written line by line and the JSON token by token:
    // buffered, the masking writer and stdout see whole blocks (a plan
    // after a chart change made 36,000 writes to stdout).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    match args.format {
        Format::Text => report::text_with(&plan, color, args.compact, &mut out)?,
        Format::Markdown => {
            let body =
                report::markdown(&plan, &report::comment_marker("cli"), report::COMMENT_LIMIT);
            out.write_all(body.as_bytes())?;
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report::json(&plan))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let refused = plan.live.refusals();
    if refused > 0 {
        eprintln!(
            "error: the API server refuses {refused} planned change(s) (server-side apply dry run); see `refused` in the plan"
        );
    }
    if plan.policy_errors > 0 {
        eprintln!(
            "error: {} policy check(s) at severity error (KDEPLOY_POLICY); see the `policy/…` warnings of the plan",
            plan.policy_errors
        );
        return Ok(Outcome::Exit(1));
    }
    if refused > 0 {
        return Ok(Outcome::Exit(1));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        Outcome::Changes
    } else {
        Outcome::Clean
    })
}

/// Runs the async commands (the ones that talk to a cluster or GitHub).
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

async fn run_diff(args: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let head = render::render(
        &Snapshot::open(&args.selection.repo, &Revision::parse(Some(&args.head)))?,
        &filter,
    )?;
    let client = crate::cluster::connect(&args.cluster.access()).await?;
    let resources: Vec<&crate::resource::Resource> = head
        .releases
        .iter()
        .flat_map(|r| r.resources.iter())
        .collect();
    let diffs = crate::apply::live::diff(&client, &resources, &crate::apply::Options::default())
        .await
        .map_err(|errors| {
            anyhow::anyhow!(
                "cannot compare with the cluster:\n  {}",
                errors.join("\n  ")
            )
        })?;
    for d in &diffs {
        out.write_all(d.diff.as_bytes())?;
    }
    let new = diffs.iter().filter(|d| d.new).count();
    writeln!(
        out,
        "{} of {} resources differ from the cluster ({new} new)",
        diffs.len(),
        resources.len()
    )?;
    Ok(if diffs.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Differences
    })
}

async fn run_drift(args: &DriftArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let access = args.cluster.access();
    let scope = crate::drift::Scope {
        repo: &args.selection.repo,
        filter: &filter,
        access: &access,
        rev: args.rev.as_deref(),
        fetch: None,
    };
    let settings = crate::drift::Settings {
        unmanaged: args.unmanaged,
        repair: args.repair,
    };
    let opts = crate::apply::Options {
        record_namespace: args.record_namespace.clone(),
        ..crate::apply::Options::default()
    };
    let reports = crate::drift::check(&scope, &settings, &opts).await?;
    if reports.is_empty() {
        writeln!(
            out,
            "no deploy record of a selected environment in {}: nothing deployed to compare",
            args.record_namespace
        )?;
        return Ok(Outcome::Clean);
    }
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        crate::drift::text(r, out)?;
    }
    if let Some(path) = &args.json {
        let mut json = serde_json::to_value(&reports)?;
        crate::secrets::mask::redact_value(&mut json);
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Repaired drift is drift that was there: the run still says so.
    Ok(if reports.iter().all(crate::drift::Report::in_sync) {
        Outcome::Clean
    } else {
        Outcome::Changes
    })
}

async fn run_wait(args: &WaitArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.report)
        .with_context(|| format!("cannot read the report {}", args.report.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a kdeploy apply report", args.report.display()))?;
    let client = crate::cluster::connect(&args.cluster.access()).await?;
    let opts = crate::wait::Options {
        timeout: args.timeout,
        ..crate::wait::Options::default()
    };
    let mut all_ok = true;
    for report in json["reports"].as_array().into_iter().flatten() {
        let env = report["environment"].as_str().unwrap_or("?");
        let ids = |field: &str, deleted: bool| -> Vec<(String, bool)> {
            report[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(|s| (s.to_string(), deleted)))
                .collect()
        };
        let targets = crate::wait::targets_from_ids(
            &client,
            ids("applied", false)
                .into_iter()
                .chain(ids("deleted", true)),
            &opts,
        )
        .await
        .context("cannot resolve the report's resources through discovery")?;
        writeln!(out, "{env}: waiting for {} resources", targets.len())?;
        let tracked = crate::wait::track(&client, targets, &opts, out).await;
        crate::wait::write_table(&tracked, out)?;
        all_ok &= tracked.iter().all(crate::wait::Tracked::ok);
    }
    Ok(if all_ok {
        Outcome::Clean
    } else {
        Outcome::DeployFailed
    })
}

/// The repository identity kept in deploy records.
fn repository_identity(args: &ApplyArgs) -> String {
    repository_of(args.repository.as_deref(), &args.selection.repo)
}

/// The repository identity records carry: the flag's, else
/// GITHUB_REPOSITORY, else the origin remote's `owner/name`, else the directory.
fn repository_of(given: Option<&str>, repo: &std::path::Path) -> String {
    if let Some(r) = given {
        return r.to_string();
    }
    if let Ok(r) = std::env::var("GITHUB_REPOSITORY")
        && !r.is_empty()
    {
        return r;
    }
    if let Ok(git) = crate::source::discover(repo)
        && let Some(url) = git.config_snapshot().string("remote.origin.url")
    {
        // The action writes `owner/name`: so does the CLI, so that a deploy
        // from a laptop follows one from CI.
        return crate::apply::record::identity(&url.to_string());
    }
    std::fs::canonicalize(repo)
        .unwrap_or_else(|_| repo.to_path_buf())
        .display()
        .to_string()
}

async fn run_apply(args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let head_snap = Snapshot::open(&args.selection.repo, &Revision::parse(Some(&args.head)))?;
    let base_snap = match &args.base {
        Some(b) => Some(Snapshot::open(
            &args.selection.repo,
            &Revision::parse(Some(b)),
        )?),
        None => None,
    };
    let cache = args
        .render_cache
        .as_deref()
        .map(crate::render::cache::RenderCache::at);
    let request = crate::pipeline::DeployRequest {
        head: &head_snap,
        base: base_snap.as_ref(),
        filter: &filter,
        environments: args.selection.env.as_deref(),
        apps: args.selection.app.as_deref(),
        render_cache: cache.as_ref(),
    };
    let deploy = crate::pipeline::Deploy::prepare(request)?;
    let opts = crate::apply::Options {
        dry_run: args.dry_run.is_some(),
        sync: args.sync,
        prune: !args.no_prune,
        create_namespace: args.create_namespace,
        force_conflicts: !args.no_force_conflicts,
        concurrency: args.concurrency.max(1),
        record_namespace: args.record_namespace.clone(),
        force_record: args.force_record,
        lease: crate::apply::lease::Options {
            wait: std::time::Duration::from_secs(args.lease_wait),
            ..crate::apply::lease::Options::default()
        },
        wait: args.wait.then(|| crate::wait::Options {
            timeout: args.timeout,
            load_balancers: args.wait_for_load_balancers,
            ready_condition_kinds: args.wait_for_ready.clone(),
            ..crate::wait::Options::default()
        }),
        rollback: args.rollback_on_failure,
        repo_dir: Some(args.selection.repo.clone()),
        delete_first: args.delete_first,
        adopt_from: args.adopt_from.clone(),
        deletion_consent: args
            .allow_deletions
            .then(|| "--allow-deletions".to_string()),
        deletion_budget: args.deletion_budget,
        propagation: match args.propagation.as_str() {
            "foreground" => kube::api::PropagationPolicy::Foreground,
            "orphan" => kube::api::PropagationPolicy::Orphan,
            _ => kube::api::PropagationPolicy::Background,
        },
        ..crate::apply::Options::default()
    };
    let repository = repository_identity(args);
    let access = args.cluster.access();
    let mut reports = Vec::new();
    let result = deploy
        .run(request, &access, &repository, &opts, out, &mut reports)
        .await;
    // The report is written whatever happened: an environment may have been
    // deployed before another one failed to start.
    if let Some(path) = &args.report {
        let mut json = serde_json::json!({ "reports": reports });
        if let Err(e) = &result {
            json["error"] = serde_json::json!({
                "step": crate::apply::error_step(e),
                "message": format!("{e:#}"),
            });
        }
        crate::secrets::mask::redact_value(&mut json);
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    result?;
    Ok(if reports.iter().all(crate::apply::Report::succeeded) {
        Outcome::Clean
    } else {
        Outcome::DeployFailed
    })
}

fn run_render(args: &RenderArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let rev = Revision::parse(args.rev.as_deref());
    let snapshot = Snapshot::open(&args.selection.repo, &rev)?;
    // Checked as plan checks, before anything is printed or written.
    let mut emitted = crate::emit::emit(&snapshot, &filter, crate::emit::Texts::Keep)?;
    args.selection.ensure_matches(&[&snapshot])?;
    if args.stdout {
        for (i, text) in emitted.texts.iter().enumerate() {
            if i > 0 {
                writeln!(out, "---")?;
            }
            out.write_all(text.as_bytes())?;
        }
        // The process ends here: freeing every value one by one would
        // cost a twentieth of the command for nothing.
        std::mem::forget(emitted);
        return Ok(Outcome::Clean);
    }
    let settings = &emitted.state.settings;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| args.selection.repo.join(&settings.output));
    let target = output::Target::resolve(&args.selection.repo, &dir, settings)?;
    let releases = emitted.state.releases.len();
    if args.check {
        let drift = output::check(emitted.take_files(), &dir, &filter)
            .with_context(|| format!("failed to read {}", dir.display()))?;
        if drift.is_empty() {
            writeln!(out, "{} is up to date ({releases} releases)", dir.display())?;
            return Ok(Outcome::Clean);
        }
        writeln!(
            out,
            "{} is out of date; run `kdeploy render`:",
            dir.display()
        )?;
        for d in &drift {
            writeln!(out, "  {d}")?;
        }
        return Ok(Outcome::Differences);
    }
    let n = output::write(emitted.take_files(), &target, &filter)?;
    let state = &emitted.state;
    writeln!(
        out,
        "rendered {releases} releases ({} resources) at {} into {} ({n} files)",
        state.resource_count(),
        state.label,
        dir.display()
    )?;
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser as _};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn colour_follows_the_flag_no_color_and_actions() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Color::Auto.enabled(env(&[]), true));
        assert!(!Color::Auto.enabled(env(&[]), false), "piped");
        assert!(
            Color::Auto.enabled(env(&[("GITHUB_ACTIONS", "true")]), false),
            "Actions renders ANSI"
        );
        assert!(!Color::Auto.enabled(env(&[("GITHUB_ACTIONS", "true"), ("NO_COLOR", "1")]), false));
        assert!(!Color::Auto.enabled(env(&[("NO_COLOR", "1")]), true));
        assert!(Color::Always.enabled(env(&[("NO_COLOR", "1")]), false));
        assert!(!Color::Never.enabled(env(&[("GITHUB_ACTIONS", "true")]), true));
        let cli =
            Cli::try_parse_from(["kdeploy", "plan", "--base", "HEAD", "--color", "never"]).unwrap();
        assert_eq!(cli.color, Color::Never);
    }

    #[test]
    fn check_and_stdout_conflict() {
        assert!(Cli::try_parse_from(["kdeploy", "render", "--check", "--stdout"]).is_err());
        let cli = Cli::try_parse_from(["kdeploy", "render", "--rev", "HEAD~1", "--env", "prod*"])
            .unwrap();
        let Command::Render(r) = cli.command else {
            unreachable!("parsed render")
        };
        assert_eq!(r.rev.as_deref(), Some("HEAD~1"));
        assert_eq!(r.selection.env.as_deref(), Some("prod*"));
    }
}
