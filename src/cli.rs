//! Command-line interface: argument types (clap derive) and dispatch.
//!
//! Parsing and validation live here; each command calls into the pipeline
//! stages and writes to the given output, so commands are testable without
//! a process.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Filter;
use crate::source::{Revision, Snapshot};
use crate::{bench, output, plan, render, report};

/// `kdeploy --version`: the release, the commit it was built from and the
/// Kubernetes API its schemas and plan warnings know.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KDEPLOY_COMMIT"),
    ", Kubernetes API 1.37)"
);

/// Deploy Kubernetes applications from a git config repository.
#[derive(Debug, Parser)]
#[command(name = "kdeploy", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Colour: `auto` colours a terminal, and GitHub Actions logs (which
    /// render ANSI colour though output is piped), unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// A terminal or GitHub Actions, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Color {
    /// Whether to colour, given the environment and whether stdout is a terminal.
    pub fn enabled(self, var: impl Fn(&str) -> Option<String>, terminal: bool) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                var("NO_COLOR").is_none_or(|v| v.is_empty())
                    && (terminal || var("GITHUB_ACTIONS").as_deref() == Some("true"))
            }
        }
    }

    /// [`Color::enabled`] for this process's stdout.
    pub fn for_stdout(self) -> bool {
        use std::io::IsTerminal as _;
        self.enabled(|k| std::env::var(k).ok(), std::io::stdout().is_terminal())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render releases into Kubernetes manifests (`<out>/<env>/<app>/resources.yaml`).
    Render(RenderArgs),
    /// Show what changes between two revisions, resource by resource.
    Plan(PlanArgs),
    /// Check rendered resources against the Kubernetes API schemas (and CRDs in the repo).
    Validate(ValidateArgs),
    /// Deploy: server-side apply what changed since the last deploy, delete what is gone.
    Apply(Box<ApplyArgs>),
    /// Show how the cluster differs from the head revision (live vs server-side dry run).
    Diff(DiffArgs),
    /// Wait for what an earlier `apply --report` applied and deleted to be ready or gone.
    Wait(WaitArgs),
    /// Print the environments a change touches, with their kubeconfig contexts, as
    /// JSON: a workflow's matrix of deploy jobs (one per environment and cluster).
    Environments(EnvironmentsArgs),
    /// Resolve every image the work tree renders to a digest and write the
    /// image lock (images.lock.yaml); rendering then deploys those digests.
    Lock(LockArgs),
    /// Image automation: `images update` writes the versions the image
    /// policies of kdeploy.yaml choose from the registries' tags.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Write one release's version file (`services/APP/ENV/version`), checked
    /// against the app's image policy pattern: the step an app's CI runs after
    /// pushing an image.
    SetVersion(SetVersionArgs),
    /// Promote: copy each app's version from one environment to another in
    /// the work tree, then show the plan it causes.
    Promote(PromoteArgs),
    /// Run as the GitHub Action (reads GITHUB_EVENT_PATH and INPUT_* variables).
    Action,
    /// Measure rendering on a generated config repo of N apps x E environments.
    Bench(BenchArgs),
    /// Start a config repo (kdeploy.yaml, one service, plan and deploy
    /// workflows), or adopt existing manifests; never overwrites a file.
    Init(InitArgs),
    /// Print a schema: `values` is the JSON Schema of the built-in chart's
    /// values (for editors: see the README).
    Schema {
        /// Which schema.
        #[arg(value_enum)]
        what: SchemaKind,
    },
    /// Print a shell completion script: `source <(kdeploy completions bash)`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `kdeploy images …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ImagesCommand {
    /// Evaluate the image policies and write the chosen tags into the
    /// version files of the work tree, one line per change.
    Update(ImagesUpdateArgs),
}

/// `kdeploy images update`.
#[derive(Debug, Clone, Args)]
pub struct ImagesUpdateArgs {
    /// Which apps and environments.
    #[command(flatten)]
    pub selection: Selection,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `kdeploy promote`.
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The environment whose versions are copied.
    #[arg(long, value_name = "ENV")]
    pub from: String,
    /// The environment that receives them.
    #[arg(long, value_name = "ENV")]
    pub to: String,
    /// Only apps matching this glob.
    #[arg(long, value_name = "GLOB")]
    pub app: Option<String>,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The config repo directory.
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
}

/// `kdeploy set-version`.
#[derive(Debug, Clone, Args)]
pub struct SetVersionArgs {
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// The version (an image tag).
    pub version: String,
    /// The config repo directory.
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
}

/// `kdeploy lock`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Which releases' images (the others' entries are kept).
    #[command(flatten)]
    pub selection: Selection,
    /// Only check that the lock has every rendered image and nothing else
    /// (no network); exit 1 when it does not.
    #[arg(long)]
    pub check: bool,
}

/// `kdeploy init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The repository directory.
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
    /// Adopt plain manifests: a directory pattern with {env} and {app},
    /// e.g. `_gen/{env}/{app}` (a committed `helm template` output).
    #[arg(long, value_name = "PATTERN", conflicts_with = "from_kustomize")]
    pub from_raw: Option<String>,
    /// Adopt Kustomize overlays: e.g. `apps/{app}/overlays/{env}`.
    #[arg(long, value_name = "PATTERN")]
    pub from_kustomize: Option<String>,
}

/// `kdeploy schema` subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// The values of the built-in `service` chart (config.yaml files).
    Values,
}

/// Which config repo and which releases.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// The config repo directory (may be a subdirectory of a git repository).
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
    /// Only environments matching this glob (e.g. `prod*`).
    #[arg(long, value_name = "GLOB")]
    pub env: Option<String>,
    /// Only apps matching this glob.
    #[arg(long, value_name = "GLOB")]
    pub app: Option<String>,
}

impl Selection {
    /// Fails when `--env`/`--app` select no release in any of `snapshots`.
    ///
    /// # Errors
    /// The globs and what exists, as a diagnostic; or a read failure.
    pub fn ensure_matches(&self, snapshots: &[&Snapshot]) -> anyhow::Result<()> {
        let mut first = None;
        for snapshot in snapshots {
            match crate::config::unmatched(snapshot, self.env.as_deref(), self.app.as_deref())
                .map_err(render::Error::from)?
            {
                None => return Ok(()),
                Some(d) => {
                    first.get_or_insert(d);
                }
            }
        }
        match first {
            Some(d) => Err(crate::diag::Diagnostics::from(d).into()),
            None => Ok(()),
        }
    }

    /// The release filter for these flags.
    ///
    /// # Errors
    /// When a glob is malformed.
    pub fn filter(&self) -> anyhow::Result<Filter> {
        Filter::new(self.env.as_deref(), self.app.as_deref()).context("invalid --env/--app glob")
    }
}

/// Which cluster: the kubeconfig and its context.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context (default: the environment's context in kdeploy.yaml, else current-context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// The cluster access these flags describe.
    pub fn access(&self) -> crate::cluster::Access {
        crate::cluster::Access {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

/// `kdeploy render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Repository and releases.
    #[command(flatten)]
    pub selection: Selection,
    /// Revision to render (SHA, branch, tag, `HEAD~1`); default: the work tree with uncommitted edits.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Output directory (default: `output` of kdeploy.yaml, `_gen`, inside the repo).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Render in memory and list the files that differ from the output directory; exit 1 if any.
    #[arg(long, conflicts_with = "stdout")]
    pub check: bool,
    /// Print the manifests instead of writing them.
    #[arg(long)]
    pub stdout: bool,
}

/// A change: the releases selected, compared between two revisions
/// (`kdeploy plan`, `kdeploy environments`).
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    /// Repository and releases.
    #[command(flatten)]
    pub selection: Selection,
    /// The revision deployed now (e.g. `main`, a SHA).
    #[arg(long, value_name = "REV")]
    pub base: String,
    /// The revision to deploy; `.` means the work tree.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub head: String,
    /// Settings for both revisions instead of each one's kdeploy.yaml (a
    /// file of the work tree): compare two revisions under one config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ChangeArgs {
    /// Renders both revisions, checks the selection matches and the head is
    /// valid, and plans: what `plan` prints and `environments` fans out.
    ///
    /// # Errors
    /// Bad revisions, bad input at either revision, an empty selection.
    pub fn plan(&self, context: usize) -> anyhow::Result<(render::Comparison, plan::Plan)> {
        let filter = self.selection.filter()?;
        let open = |rev: &str| Snapshot::open(&self.selection.repo, &Revision::parse(Some(rev)));
        let (base, head) = (open(&self.base)?, open(&self.head)?);
        let given = match &self.config {
            Some(path) => Some(render::GivenSettings::read(path)?),
            None => None,
        };
        let cmp = render::compare_with(&base, &head, &filter, given.as_ref())?;
        self.selection.ensure_matches(&[&head, &base])?;
        crate::validate::check_for_plan(&cmp.head)?;
        let plan = plan::plan(&cmp, &cmp.head.settings.plan, context);
        Ok((cmp, plan))
    }
}

/// `kdeploy environments`.
#[derive(Debug, Clone, Args)]
pub struct EnvironmentsArgs {
    /// Revisions and releases.
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// Output formats of `kdeploy plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Diffs for a terminal (coloured as `--color` says).
    Text,
    /// The PR comment / job summary body.
    Markdown,
    /// Machine-readable (schema in the README).
    Json,
}

/// `kdeploy plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Revisions and releases.
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 0 without changes, 2 with changes, 1 on error (as `terraform plan`).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Lines of context around each change.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub context: usize,
    /// Text format: one line per resource (with its number of changed
    /// lines), no diffs.
    #[arg(long)]
    pub compact: bool,
}

/// `kdeploy validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Repository and releases.
    #[command(flatten)]
    pub selection: Selection,
    /// Revision to validate; default: the work tree.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
}

/// `kdeploy apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Repository and releases.
    #[command(flatten)]
    pub selection: Selection,
    /// Previous state when the cluster has no deploy record yet (else: nothing, everything is applied).
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// The revision to deploy; `.` means the work tree.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub head: String,
    /// Which cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// `server`: send every write with dryRun=All; nothing changes, no record is written.
    #[arg(long, value_name = "MODE", value_parser = ["server"])]
    pub dry_run: Option<String>,
    /// Apply every resource, changed or not (drift repair).
    #[arg(long)]
    pub sync: bool,
    /// Do not delete resources that were removed from the config.
    #[arg(long)]
    pub no_prune: bool,
    /// Delete removed resources before applying the rest (default: after).
    #[arg(long)]
    pub delete_first: bool,
    /// Deletion propagation: background, foreground or orphan.
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan"])]
    pub propagation: String,
    /// Create namespaces that do not exist and that the plan does not create.
    #[arg(long)]
    pub create_namespace: bool,
    /// Do not take over fields another field manager owns (fail on conflicts instead).
    #[arg(long)]
    pub no_force_conflicts: bool,
    /// Deploy over a record written by another repository.
    #[arg(long)]
    pub force_record: bool,
    /// Take over resources that environment ENV on the same cluster deployed:
    /// they move from its deploy record to this one's.
    #[arg(long, value_name = "ENV")]
    pub adopt_from: Option<String>,
    /// Write a JSON report of what was applied, deleted and failed.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Writes in flight at once within one ordering group.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,
    /// Namespace of the deploy records and leases.
    #[arg(long, default_value = "kdeploy-system", value_name = "NS")]
    pub record_namespace: String,
    /// Seconds to wait for another run's deploy of the same environment (0: fail at once).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub lease_wait: u64,
    /// Repository identity stored in the record (default: GITHUB_REPOSITORY, the origin URL, or the directory).
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// Wait until workloads are ready and deletions finished; fail fast on broken rollouts.
    #[arg(long)]
    pub wait: bool,
    /// When the deploy fails, restore the previous content of what it changed and delete what it created.
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// With --wait: wait for LoadBalancer Services to get an address.
    #[arg(long)]
    pub wait_for_load_balancers: bool,
    /// With --wait: custom kinds (group/Kind, or `*`) that must reach Ready=True; repeatable.
    #[arg(long, value_name = "GROUP/KIND")]
    pub wait_for_ready: Vec<String>,
    /// Deadline for --wait (e.g. 10m, 90s); a resource may set its own with the annotation kdeploy.io/timeout.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `kdeploy diff --live`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// Repository and releases.
    #[command(flatten)]
    pub selection: Selection,
    /// Compare with the live cluster (the only mode; `kdeploy plan` compares revisions).
    #[arg(long, required = true)]
    pub live: bool,
    /// The revision to compare; `.` means the work tree.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    pub head: String,
    /// Which cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `kdeploy wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The JSON report written by `kdeploy apply --report`.
    #[arg(long, value_name = "PATH")]
    pub report: PathBuf,
    /// Which cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Deadline (e.g. 10m, 90s).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `kdeploy bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Number of apps in the generated repo.
    #[arg(long, default_value_t = 1000)]
    pub apps: usize,
    /// Number of environments per app.
    #[arg(long, default_value_t = 3)]
    pub envs: usize,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Services set only their image (five documents per release) instead of
    /// also using env vars, ingresses, monitoring and autoscaling.
    #[arg(long)]
    pub lean: bool,
}

/// How a successful command ended, mapped to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Clean,
    /// Exit 1: differences found (`render --check`).
    Differences,
    /// Exit 2: the plan has changes (`plan --detailed-exitcode`).
    Changes,
    /// The action's own exit code, its cause already reported (2 render
    /// errors, 1 deploy failed, 130 cancelled).
    Exit(u8),
    /// Exit 1: the deploy failed (details in its report).
    DeployFailed,
}

impl Cli {
    /// Parses the process arguments; `kdeploy action --help` lists the
    /// action's inputs from [`crate::action::INPUTS`].
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Cli::command().mut_subcommand("action", |c| {
            c.after_long_help(crate::action::inputs_help())
        });
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The exit code for errors: 1 with `plan --detailed-exitcode` (where
    /// 2 means changes), 2 otherwise.
    pub fn error_code(&self) -> u8 {
        match &self.command {
            Command::Plan(p) if p.detailed_exitcode => 1,
            _ => 2,
        }
    }
}

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
            let (cmp, plan) = args.change.plan(0)?;
            let envs = report::environments(&plan, &cmp.head.settings);
            writeln!(out, "{envs}")?;
            Ok(Outcome::Clean)
        }
        Command::Validate(args) => {
            let filter = args.selection.filter()?;
            let snapshot =
                Snapshot::open(&args.selection.repo, &Revision::parse(args.rev.as_deref()))?;
            let state = render::render(&snapshot, &filter)?;
            args.selection.ensure_matches(&[&snapshot])?;
            let summary = crate::validate::check(&state)?;
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
        Command::Diff(args) => block_on(run_diff(&args, out)),
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
        Command::Images(ImagesCommand::Update(args)) => {
            let filter = args.selection.filter()?;
            let outcome = block_on(crate::images::update::update(
                &args.selection.repo,
                &filter,
                args.dry_run,
            ))?;
            for c in &outcome.changes {
                writeln!(
                    out,
                    "{}{c}",
                    if args.dry_run { "would set " } else { "set " }
                )?;
            }
            for n in &outcome.notices {
                writeln!(out, "  {n}")?;
            }
            if outcome.changes.is_empty() {
                writeln!(out, "no version changes")?;
            }
            Ok(Outcome::Clean)
        }
        Command::Promote(args) => {
            let filter = crate::config::Filter::new(None, args.app.as_deref())?;
            let changes =
                crate::promote::versions(&args.repo, &args.from, &args.to, &filter, args.dry_run)?;
            if changes.is_empty() {
                writeln!(
                    out,
                    "{} already runs what {} runs: nothing to promote",
                    args.to, args.from
                )?;
                return Ok(Outcome::Clean);
            }
            for c in &changes {
                writeln!(
                    out,
                    "{}{c}",
                    if args.dry_run { "would set " } else { "set " }
                )?;
            }
            if !args.dry_run {
                // The plan the promotion causes: HEAD against the work tree.
                let change = ChangeArgs {
                    selection: Selection {
                        repo: args.repo.clone(),
                        env: Some(args.to.clone()),
                        app: args.app.clone(),
                    },
                    base: "HEAD".into(),
                    head: ".".into(),
                    config: None,
                };
                let (_, plan) = change.plan(3)?;
                writeln!(out)?;
                report::text_with(&plan, color, true, out)?;
            }
            Ok(Outcome::Clean)
        }
        Command::SetVersion(args) => {
            match crate::images::update::set_version(
                &args.repo,
                &args.app,
                &args.env,
                &args.version,
            )? {
                Some(c) => writeln!(out, "set {c}")?,
                None => writeln!(
                    out,
                    "{}/{} is already at {}",
                    args.app, args.env, args.version
                )?,
            }
            Ok(Outcome::Clean)
        }
        Command::Lock(args) => {
            let filter = args.selection.filter()?;
            let report = block_on(crate::lock::command(
                &args.selection.repo,
                &filter,
                args.check,
            ))?;
            for line in &report.lines {
                writeln!(out, "{line}")?;
            }
            if report.failed > 0 {
                anyhow::bail!(
                    "{} image(s) did not resolve; the lock was not changed",
                    report.failed
                );
            }
            if args.check && report.out_of_date {
                writeln!(out, "the image lock is out of date: run `kdeploy lock`")?;
                return Ok(Outcome::Differences);
            }
            Ok(Outcome::Clean)
        }
        Command::Bench(args) => {
            bench::run(&args, out)?;
            Ok(Outcome::Clean)
        }
        Command::Init(args) => {
            let start = match (args.from_raw, args.from_kustomize) {
                (Some(p), _) => crate::init::Start::Raw(p),
                (None, Some(p)) => crate::init::Start::Kustomize(p),
                (None, None) => crate::init::Start::New,
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
    let (_, plan) = args.change.plan(args.context)?;
    match args.format {
        Format::Text => report::text_with(&plan, color, args.compact, out)?,
        Format::Markdown => {
            let body =
                report::markdown(&plan, &report::comment_marker("cli"), report::COMMENT_LIMIT);
            out.write_all(body.as_bytes())?;
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &report::json(&plan))?;
            writeln!(out)?;
        }
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
    if let Some(r) = &args.repository {
        return r.clone();
    }
    if let Ok(r) = std::env::var("GITHUB_REPOSITORY")
        && !r.is_empty()
    {
        return r;
    }
    if let Ok(repo) = gix::discover(&args.selection.repo)
        && let Some(url) = repo.config_snapshot().string("remote.origin.url")
    {
        return url.to_string();
    }
    std::fs::canonicalize(&args.selection.repo)
        .unwrap_or_else(|_| args.selection.repo.clone())
        .display()
        .to_string()
}

async fn run_apply(args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let head_snap = Snapshot::open(&args.selection.repo, &Revision::parse(Some(&args.head)))?;
    let head = render::render(&head_snap, &filter)?;
    crate::validate::check(&head)?;
    let base = match &args.base {
        Some(b) => Some(render::render(
            &Snapshot::open(&args.selection.repo, &Revision::parse(Some(b)))?,
            &filter,
        )?),
        None => None,
    };
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
        propagation: match args.propagation.as_str() {
            "foreground" => kube::api::PropagationPolicy::Foreground,
            "orphan" => kube::api::PropagationPolicy::Orphan,
            _ => kube::api::PropagationPolicy::Background,
        },
        ..crate::apply::Options::default()
    };
    let repository = repository_identity(args);
    let head_commit = head
        .commit
        .map_or_else(|| head.label.clone(), |c| c.to_string());
    let access = args.cluster.access();
    let mut reports = Vec::new();
    let result = crate::apply::deploy_environments(
        &access,
        &head,
        base.as_ref(),
        args.selection.env.as_deref(),
        args.selection.app.as_deref(),
        &repository,
        &head_commit,
        &opts,
        out,
        &mut reports,
    )
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
    let state = render::render(&snapshot, &filter)?;
    args.selection.ensure_matches(&[&snapshot])?;
    // The same checks as plan, before anything is printed or written.
    crate::validate::check(&state)?;
    if args.stdout {
        for (i, r) in state.releases.iter().enumerate() {
            if i > 0 {
                writeln!(out, "---")?;
            }
            out.write_all(output::release_text(r).as_bytes())?;
        }
        return Ok(Outcome::Clean);
    }
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| args.selection.repo.join(&state.settings.output));
    let target = output::Target::resolve(&args.selection.repo, &dir, &state.settings)?;
    if args.check {
        let drift = output::check(&state, &dir, &filter)
            .with_context(|| format!("failed to read {}", dir.display()))?;
        if drift.is_empty() {
            writeln!(
                out,
                "{} is up to date ({} releases)",
                dir.display(),
                state.releases.len()
            )?;
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
    let n = output::write(&state, &target, &filter)?;
    writeln!(
        out,
        "rendered {} releases ({} resources) at {} into {} ({n} files)",
        state.releases.len(),
        state.resource_count(),
        state.label,
        dir.display()
    )?;
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
