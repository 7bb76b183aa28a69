//! The command line as clap derive types: commands, their arguments and
//! what a run ends in ([`Outcome`]).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Filter;
use crate::source::{Revision, Snapshot};
use crate::{plan, render};

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

pub use crate::term::Color;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render releases into Kubernetes manifests (`<out>/<env>/<app>/resources.yaml`).
    Render(RenderArgs),
    /// Show what changes between two revisions, resource by resource.
    Plan(PlanArgs),
    /// Check rendered resources against the Kubernetes API schemas (and CRDs in the repo).
    Validate(ValidateArgs),
    /// Run the policy checks of a plan on every resource of a revision: the
    /// built-in checks (KDEPLOY_POLICY) and the Rego policies (--policies).
    Check(CheckArgs),
    /// Deploy: server-side apply what changed since the last deploy, delete what is gone.
    Apply(Box<ApplyArgs>),
    /// Show how the cluster differs from the head revision (live vs server-side dry run).
    Diff(DiffArgs),
    /// Drift: compare every resource in each environment's deploy record with
    /// the cluster (fields changed by other managers, deleted resources, with
    /// --unmanaged objects kdeploy did not create). Exit 0 in sync, 2 drift, 1 error.
    Drift(DriftArgs),
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
    /// Preview environments: deploy a pull request's head to a namespace of
    /// its own (`environments.<template>.from` in kdeploy.yaml), remove it,
    /// or remove the previews of closed pull requests.
    #[command(subcommand)]
    Preview(PreviewCommand),
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

/// `kdeploy preview …`.
#[derive(Debug, Clone, Subcommand)]
pub enum PreviewCommand {
    /// Render the preview of a pull request at a revision and deploy it
    /// (record `kdeploy-<template>-pr-<n>`), waiting for readiness.
    Deploy(PreviewDeployArgs),
    /// Delete everything a pull request's preview deployed, its namespace
    /// last, and wait until it is gone.
    Delete(PreviewTarget),
    /// Remove the previews whose pull request is closed (asks GitHub with
    /// GITHUB_TOKEN) or that were not deployed for longer than --older-than.
    Gc(PreviewGcArgs),
}

/// Where previews live: the config repo, the cluster, the records.
#[derive(Debug, Clone, Args)]
pub struct PreviewPlace {
    /// The config repo directory.
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
    /// Which cluster (default: the template's `context`, else its `from` environment's).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Namespace of the deploy records.
    #[arg(long, default_value = "kdeploy-system", value_name = "NS")]
    pub record_namespace: String,
    /// Repository identity of the records, and whose pull requests `gc`
    /// asks about (default: GITHUB_REPOSITORY, else the origin URL).
    #[arg(long, value_name = "OWNER/NAME")]
    pub repository: Option<String>,
    /// Deadline for readiness (deploy) or deletion (delete, gc).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// Which preview, and where.
#[derive(Debug, Clone, Args)]
pub struct PreviewTarget {
    /// The pull request number.
    #[arg(long, value_name = "N")]
    pub pr: u64,
    /// The template in kdeploy.yaml's `environments` (default: the only one).
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Where.
    #[command(flatten)]
    pub place: PreviewPlace,
}

/// `kdeploy preview deploy`.
#[derive(Debug, Clone, Args)]
pub struct PreviewDeployArgs {
    /// Which preview.
    #[command(flatten)]
    pub target: PreviewTarget,
    /// The revision to deploy (the pull request's head).
    #[arg(long, default_value = "HEAD", value_name = "REV")]
    pub rev: String,
    /// Only apps matching this glob.
    #[arg(long, value_name = "GLOB")]
    pub app: Option<String>,
    /// Do not wait for readiness.
    #[arg(long)]
    pub no_wait: bool,
    /// Write the pull request comment's markdown to this file as well.
    #[arg(long, value_name = "PATH")]
    pub comment: Option<PathBuf>,
}

/// `kdeploy preview gc`.
#[derive(Debug, Clone, Args)]
pub struct PreviewGcArgs {
    /// Also remove previews not deployed for this long (e.g. 7d, 36h).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where (the cluster: default every template's context).
    #[command(flatten)]
    pub place: PreviewPlace,
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
    /// Where the change goes.
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// `--pr` / `--push`: publish a change through the GitHub API instead of
/// leaving it in the work tree.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PublishArgs {
    /// Commit the change on a branch `kdeploy/…` and open (or update) a pull
    /// request with the plan as its body, one per release; needs
    /// GITHUB_TOKEN and GITHUB_REPOSITORY. The work tree is left as it was.
    #[arg(long, conflicts_with = "push")]
    pub pr: bool,
    /// Commit the change onto the checked-out branch through the GitHub API
    /// (only as a fast-forward); for environments that deploy every new tag.
    #[arg(long)]
    pub push: bool,
}

impl PublishArgs {
    /// The chosen way, if any.
    pub fn how(&self) -> Option<crate::publish::Publish> {
        if self.pr {
            Some(crate::publish::Publish::PullRequest)
        } else if self.push {
            Some(crate::publish::Publish::Push)
        } else {
            None
        }
    }
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
    /// Also copy these config keys (dotted, comma-separated: image.tag,replicas)
    /// from the source environment's effective config into the target's
    /// config.yaml, keeping its comments.
    #[arg(long, value_name = "KEYS", value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The config repo directory.
    #[arg(long, default_value = ".", value_name = "PATH")]
    pub repo: PathBuf,
    /// Where the change goes.
    #[command(flatten)]
    pub publish: PublishArgs,
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
    /// Where the change goes.
    #[command(flatten)]
    pub publish: PublishArgs,
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
    #[arg(long, value_name = "PATTERN", conflicts_with_all = ["from_argocd", "from_flux"])]
    pub from_kustomize: Option<String>,
    /// Adopt an Argo CD repository: the Applications (and list
    /// ApplicationSets) under DIR become releases.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["from_raw", "from_flux"])]
    pub from_argocd: Option<String>,
    /// Adopt a Flux repository: each cluster directory under DIR
    /// (`clusters/`) is an environment, its Kustomizations and HelmReleases
    /// releases.
    #[arg(long, value_name = "DIR", conflicts_with = "from_raw")]
    pub from_flux: Option<String>,
    /// Adopt a Helm chart deployed per environment with a values file each
    /// (`charts/shop` with `values-staging.yaml`, `values-production.yaml`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["from_raw", "from_kustomize", "from_argocd", "from_flux"])]
    pub from_helm: Option<String>,
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
    /// The organisation's Rego policies (conftest's `deny`/`warn`/
    /// `violation` rules): a directory of the config repo, read from the
    /// base revision, or an absolute path on this machine. Default:
    /// KDEPLOY_POLICIES.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<String>,
    /// ValidatingAdmissionPolicies, bindings and their parameters (YAML)
    /// to evaluate offline beside those the base deploys: a directory of
    /// the config repo (read from the base) or an absolute path. Default:
    /// KDEPLOY_ADMISSION_POLICIES.
    #[arg(long, value_name = "DIR")]
    pub admission_policies: Option<String>,
    /// A render cache `kdeploy apply --render-cache` wrote: the base's
    /// releases are read from it where it holds them, not rendered (the
    /// head always is). A note on stderr says how many.
    #[arg(long, value_name = "DIR")]
    pub render_cache: Option<PathBuf>,
}

impl ChangeArgs {
    /// Renders both revisions, checks the selection matches and the head is
    /// valid, and plans: what `plan` prints and `environments` fans out.
    ///
    /// # Errors
    /// Bad revisions, bad input at either revision, an empty selection.
    pub fn plan(
        &self,
        context: usize,
        cluster: Option<&crate::cluster::Access>,
    ) -> anyhow::Result<(render::Comparison, plan::Plan)> {
        let filter = self.selection.filter()?;
        let open = |rev: &str| Snapshot::open(&self.selection.repo, &Revision::parse(Some(rev)));
        let (base, head) = (open(&self.base)?, open(&self.head)?);
        let given = match &self.config {
            Some(path) => Some(render::GivenSettings::read(path)?),
            None => None,
        };
        let cache = self
            .render_cache
            .as_deref()
            .map(render::cache::RenderCache::at);
        let mut outcome = crate::pipeline::plan::plan(crate::pipeline::PlanRequest {
            settings: given.as_ref(),
            context,
            policies: self.policies.as_deref(),
            admission_policies: self.admission_policies.as_deref(),
            render_cache: cache.as_ref(),
            ..crate::pipeline::PlanRequest::new(&base, &head, &filter)
        })?;
        if let Some(used) = &outcome.comparison.cache {
            eprintln!("note: {}", used.line());
        }
        self.selection.ensure_matches(&[&head, &base])?;
        if let Some(access) = cluster {
            let opts = crate::apply::Options::default();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(crate::pipeline::plan::check_cluster(
                    &mut outcome,
                    access,
                    &opts,
                ));
        }
        Ok((outcome.comparison, outcome.plan))
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
    /// Also check the plan against the cluster (reads and dry runs only):
    /// live drift the merge would set back, and what the API server
    /// refuses. Each environment's context is `--cluster-context`, else the base
    /// revision's `environments.<env>.context`.
    #[arg(long)]
    pub cluster: bool,
    /// Kubeconfig file for `--cluster` (default: KUBECONFIG,
    /// ~/.kube/config, in-cluster).
    #[arg(long, value_name = "PATH", requires = "cluster")]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context for `--cluster` (`--context` is the diff's lines
    /// of context here).
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub cluster_context: Option<String>,
}

/// `kdeploy check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Repository and releases.
    #[command(flatten)]
    pub selection: Selection,
    /// Revision to check; default: the work tree.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Rego policies: a directory of the config repo (read from the
    /// revision checked) or an absolute path. Default: KDEPLOY_POLICIES.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<String>,
    /// ValidatingAdmissionPolicies to evaluate beside those the revision
    /// deploys (YAML). Default: KDEPLOY_ADMISSION_POLICIES.
    #[arg(long, value_name = "DIR")]
    pub admission_policies: Option<String>,
    /// Severities of the built-in checks (`latest-tag=error,no-pdb=off`).
    /// Default: KDEPLOY_POLICY.
    #[arg(long, value_name = "CHECK=SEVERITY,...")]
    pub policy: Option<String>,
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
    /// Write the releases this deploy renders to this render cache, for
    /// plans to read (`kdeploy plan --render-cache`). Never read here.
    #[arg(long, value_name = "DIR")]
    pub render_cache: Option<PathBuf>,
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
    /// Consent to deletions that need it: data-bearing kinds (Namespace,
    /// PersistentVolumeClaim, PersistentVolume, CustomResourceDefinition,
    /// StatefulSet), apps or environments gone from the config, and more
    /// deletions than `--deletion-budget`. Without it they are held.
    #[arg(long)]
    pub allow_deletions: bool,
    /// Deletions beyond this share (percent) of an environment's recorded
    /// resources, and more than 10, need consent.
    #[arg(long, default_value_t = crate::apply::consent::DEFAULT_BUDGET, value_name = "PERCENT")]
    pub deletion_budget: u32,
    /// Write a JSON report of what was applied, deleted and failed.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Writes in flight at once within one ordering group.
    #[arg(long, default_value_t = crate::apply::DEFAULT_CONCURRENCY, value_name = "N")]
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

/// `kdeploy drift`.
#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    /// Repository and environments.
    #[command(flatten)]
    pub selection: Selection,
    /// Compare with this revision instead of the commit each record says was deployed.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Also report objects in the managed namespaces that kdeploy did not create.
    #[arg(long)]
    pub unmanaged: bool,
    /// Re-apply what drifted (missing or changed resources; never deletes).
    #[arg(long)]
    pub repair: bool,
    /// Namespace of the deploy records.
    #[arg(long, default_value = "kdeploy-system", value_name = "NS")]
    pub record_namespace: String,
    /// Also write the reports as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
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

pub use crate::bench::BenchArgs;

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
            Command::Drift(_) => 1,
            _ => 2,
        }
    }
}
