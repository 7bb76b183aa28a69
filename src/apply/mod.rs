//! Applying: the head state of an environment goes to the cluster with
//! server-side apply; what kdeploy deployed before and is gone now is deleted.
//!
//! The previous state is the in-cluster [`record`] when there is one (so a
//! failed deploy is retried by the next run), else the base revision, else
//! nothing. Only resources whose content hash differs are applied, in
//! dependency order (Namespaces and CRDs first; custom resources once their
//! CRD is Established); deletions follow in reverse order. Every kind and
//! namespace is checked before the first write. Nothing outside the record
//! is ever deleted, and kdeploy adds no labels to the user's objects.

mod changes;
pub mod consent;
mod environments;
mod error;
pub mod fidelity;
mod hooks;
mod kinds;
pub mod lease;
pub mod live;
pub mod owners;
mod preflight;
mod prune;
pub mod record;
mod recording;
pub mod replace;
mod report;
mod rollback;
mod write;

pub use environments::{apply_states, deploy_environments};
pub use error::{Error, error_step};
pub(crate) use kinds::{Kinds, api_for};
pub(crate) use preflight::present_namespaces;
use preflight::{ensure_namespace, preflight};
use prune::delete_entries;
use recording::{Deployed, record_deploy};
pub use report::{Failure, PreviousFrom, Report, Rollback, Step};
use rollback::{rollback, secret_values};

use std::time::Duration;

use futures::StreamExt as _;
use kube::api::PropagationPolicy;
use kube::discovery::{ApiResource, Scope};

use crate::hooks::Phase;
use crate::resource::Resource;
use record::Entry;

/// The field manager kdeploy applies as.
pub const FIELD_MANAGER: &str = "kdeploy";

/// Writes in flight by default. A write waits on a round trip, not on CPU;
/// Argo CD's sync runs up to 20 at once (`--kubectl-parallelism-limit`),
/// and the API server's fair queuing shares a priority level among clients,
/// so 16 from one deploy neither crowds out controllers nor idles on latency.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How to apply.
#[derive(Debug, Clone)]
pub struct Options {
    /// Send every write with `dryRun=All`; take no lease, write no record.
    pub dry_run: bool,
    /// Apply every resource of the head state, changed or not (drift repair).
    pub sync: bool,
    /// Delete resources that were deployed before and are gone now.
    pub prune: bool,
    /// Create namespaces that are missing and not part of the plan.
    pub create_namespace: bool,
    /// Take over fields owned by other managers (as kahoy does).
    pub force_conflicts: bool,
    /// Writes in flight at once within one ordering group.
    pub concurrency: usize,
    /// Namespace of the deploy record and the lease.
    pub record_namespace: String,
    /// Accept a record written from another repository.
    pub force_record: bool,
    /// Deletion propagation.
    pub propagation: PropagationPolicy,
    /// Lease settings.
    pub lease: lease::Options,
    /// Attempts per API call on 429/5xx/connection errors.
    pub attempts: u32,
    /// First retry delay, doubled each time, with jitter.
    pub backoff: Duration,
    /// Wait for workloads to be ready (and deletions to finish) before the
    /// deploy counts as done.
    pub wait: Option<crate::wait::Options>,
    /// When the deploy fails, put back the previous state of what it changed
    /// (rendered from the record's commit in `repo_dir`, or the base) and
    /// delete what it created.
    pub rollback: bool,
    /// The config repo, to render the previous state for a rollback.
    pub repo_dir: Option<std::path::PathBuf>,
    /// Delete removed resources before applying (default: after).
    pub delete_first: bool,
    /// The environment whose resources this deploy may take over
    /// (`--adopt-from`): they move to this environment's record.
    pub adopt_from: Option<String>,
    /// Consent to deletions that need it ([`consent`]): how it was given
    /// (`--allow-deletions`, `label kdeploy/allow-deletions on #12`), or
    /// `None`, and they are held.
    pub deletion_consent: Option<String>,
    /// Policy findings at severity error that the deploy goes ahead with,
    /// and how they were acknowledged (a pull request's label), for the
    /// report.
    pub policy_acknowledged: Option<String>,
    /// Deletions beyond this share of an environment's recorded resources
    /// (percent; and more than [`consent::SMALL`]) need consent.
    pub deletion_budget: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            sync: false,
            prune: true,
            create_namespace: false,
            force_conflicts: true,
            concurrency: DEFAULT_CONCURRENCY,
            record_namespace: crate::config::RECORD_NAMESPACE.into(),
            force_record: false,
            propagation: PropagationPolicy::Background,
            lease: lease::Options::default(),
            attempts: 5,
            backoff: Duration::from_millis(200),
            wait: None,
            rollback: false,
            repo_dir: None,
            delete_first: false,
            adopt_from: None,
            deletion_consent: None,
            policy_acknowledged: None,
            deletion_budget: consent::DEFAULT_BUDGET,
        }
    }
}

/// One environment to deploy.
pub struct Target<'a> {
    /// Environment name.
    pub env: String,
    /// Repository identity, stored in the record.
    pub repository: String,
    /// Commit being deployed.
    pub head_commit: String,
    /// Resources of the head state in this environment (already filtered).
    pub head: Vec<&'a Resource>,
    /// The base revision's resources, used when there is no record.
    pub base: Option<(String, Vec<&'a Resource>)>,
    /// Which apps are in scope (`--app`); others in the record are kept.
    pub in_scope: &'a (dyn Fn(&str) -> bool + Sync),
    /// The pull request, when this is a preview (written into the record).
    pub preview: Option<record::PreviewOf>,
}

/// True for failures the client's retry layer cannot see: a connection that
/// broke while the response body was being read. Statuses (429, 5xx) and
/// failed connections are retried by the client itself
/// ([`crate::cluster::retry`]); retrying a write here is safe for the same
/// reasons (server-side apply is idempotent).
fn retryable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// Runs `f` again with jittered exponential backoff after a broken
/// response body.
pub(crate) async fn with_retry<T, F, Fut>(opts: &Options, mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(e) if retryable(&e) && attempt < opts.attempts.max(1) => {
                let base = opts.backoff.saturating_mul(1 << (attempt - 1).min(6));
                tokio::time::sleep(base + base.mul_f64(fastrand::f64() * 0.5)).await;
            }
            other => return other,
        }
    }
}

pub use crate::cluster::api_message;

/// Deploys one environment.
///
/// # Errors
/// Failures before the first write ([`Error`]); failures after it are in
/// the returned [`Report`], whose `succeeded()` is then false.
pub async fn apply(
    client: &kube::Client,
    target: &Target<'_>,
    opts: &Options,
) -> Result<Report, Error> {
    let started_at = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut kinds = Kinds::new(client.clone());
    let missing_namespaces = preflight(client, &mut kinds, target, opts).await?;
    // Environments sharing this cluster: nothing another one owns is
    // written or deleted, unless moved on purpose.
    let owners = owners::Owners::read(client, &opts.record_namespace, &target.env, opts).await?;
    let conflicts = owners.conflicts(
        target.head.iter().map(|r| &r.id),
        opts.adopt_from.as_deref(),
    );
    if !conflicts.is_empty() {
        return Err(Error::Owned {
            env: target.env.clone(),
            conflicts,
        });
    }

    let held = if opts.dry_run {
        None
    } else {
        let acquire = || lease::acquire(client, &opts.record_namespace, &target.env, &opts.lease);
        match acquire().await {
            // kdeploy's own namespace is created once, when the lease
            // finds it missing, not checked on every run.
            Err(lease::Error::Api {
                error: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {
                ensure_namespace(client, &opts.record_namespace, opts)
                    .await
                    .map_err(|error| Error::Api {
                        what: format!("creating namespace {}", opts.record_namespace),
                        error,
                    })?;
                Some(acquire().await?)
            }
            held => Some(held?),
        }
    };
    let result = apply_held(
        client,
        &mut kinds,
        target,
        opts,
        missing_namespaces,
        started_at,
        &owners,
    )
    .await;
    if let Some(h) = held {
        h.release().await;
    }
    result.map(|mut report| {
        report.other_records = owners
            .records
            .iter()
            .map(|(env, r)| (env.clone(), r.repository.clone(), r.preview.is_some()))
            .collect();
        report
    })
}

async fn apply_held(
    client: &kube::Client,
    kinds: &mut Kinds,
    target: &Target<'_>,
    opts: &Options,
    missing_namespaces: Vec<String>,
    started_at: String,
    owners: &owners::Owners,
) -> Result<Report, Error> {
    let (plain, hooks) = changes::split_hooks(target);
    let target = &plain;
    let changes::Changes {
        existing,
        previous,
        previous_from,
        base_commit,
        head_entries,
        to_apply,
        unchanged,
        to_replace,
        to_delete,
        kept,
        held,
        pre,
        post,
    } = changes::decide(client, kinds, target, &hooks, opts, owners).await?;
    let to_delete: Vec<&Entry> = to_delete.iter().collect();
    let mut report = Report {
        started_at,
        ended_at: String::new(),
        environment: target.env.clone(),
        repository: target.repository.clone(),
        base: base_commit,
        head: target.head_commit.clone(),
        previous: previous_from,
        dry_run: opts.dry_run,
        unchanged,
        kept,
        held: held
            .iter()
            .map(|(e, why)| format!("{} ({why})", e.id()))
            .collect(),
        consent: opts
            .deletion_consent
            .clone()
            .filter(|_| !to_delete.is_empty()),
        policy_acknowledged: opts.policy_acknowledged.clone(),
        ..Report::default()
    };
    let pre_done = pre.is_empty();
    let mut to_track: Vec<crate::wait::Target> = Vec::new();
    let global_timeout = opts.wait.as_ref().map(|w| w.timeout).unwrap_or_default();

    before_writes(
        client,
        kinds,
        &missing_namespaces,
        &to_replace,
        opts,
        &mut report,
    )
    .await;

    if opts.delete_first {
        delete_entries(
            client,
            kinds,
            to_delete.clone(),
            opts,
            &mut report,
            &mut to_track,
            global_timeout,
        )
        .await;
    }
    let writes = write::Writes {
        client,
        target,
        opts,
        pre: &pre,
        global_timeout,
    };
    // Always written; the pre-deploy hooks may have run in between.
    let ran_pre = write::stages(&writes, kinds, to_apply, &mut report, &mut to_track).await;
    let pre_done = pre_done || ran_pre;
    // No workload in this deploy: pre-deploy hooks run after the rest.
    if !pre_done && report.failed.is_empty() {
        hooks::run(
            client,
            kinds,
            &pre,
            Phase::PreDeploy,
            opts,
            secret_values(&target.head),
            &mut report,
        )
        .await;
    }
    if report.failed.is_empty() && !opts.delete_first {
        delete_entries(
            client,
            kinds,
            to_delete,
            opts,
            &mut report,
            &mut to_track,
            global_timeout,
        )
        .await;
    }

    // Failed writes already decided the outcome; otherwise wait for readiness.
    if let Some(w) = &opts.wait
        && report.failed.is_empty()
        && !opts.dry_run
    {
        wait_for_ready(client, target, w, to_track, &mut report).await;
    }
    // Post-deploy hooks (integration tests, cache warm-up) once the rest
    // is written and, when waiting, ready; a failure fails the deploy.
    if report.succeeded() {
        hooks::run(
            client,
            kinds,
            &post,
            Phase::PostDeploy,
            opts,
            secret_values(&target.head),
            &mut report,
        )
        .await;
    } else {
        report
            .not_attempted
            .extend(post.iter().map(|h| h.id.to_string()));
    }

    if !report.succeeded()
        && opts.rollback
        && !opts.dry_run
        && (!report.applied.is_empty() || !report.deleted.is_empty())
    {
        report.rollback = Some(
            rollback(
                client,
                kinds,
                target,
                opts,
                &report,
                &previous,
                report.base.clone(),
            )
            .await,
        );
    }

    if report.succeeded() && !opts.dry_run {
        let previous = (previous_from == PreviousFrom::Record).then_some(previous);
        record_deploy(
            client,
            target,
            opts,
            owners,
            Deployed {
                previous,
                head: head_entries,
                hooks: &hooks,
                held: held.into_iter().map(|(e, _)| e).collect(),
                existing: existing.as_ref(),
            },
            &mut report,
        )
        .await;
    }
    if report.failed_step.is_none() && !report.succeeded() {
        report.failed_step = Some(
            if report.failed.is_empty() && report.not_attempted.is_empty() {
                Step::Wait
            } else {
                Step::Apply
            },
        );
    }
    report.ended_at = k8s_openapi::jiff::Timestamp::now().to_string();
    Ok(report)
}

/// What goes before the writes: namespaces `--create-namespace` creates,
/// and resources replaced for an immutable field, deleted until gone.
async fn before_writes(
    client: &kube::Client,
    kinds: &mut Kinds,
    missing_namespaces: &[String],
    to_replace: &[&Resource],
    opts: &Options,
    report: &mut Report,
) {
    let global_timeout = opts.wait.as_ref().map(|w| w.timeout).unwrap_or_default();
    for ns in missing_namespaces {
        match ensure_namespace(client, ns, opts).await {
            Ok(()) => report
                .applied
                .push(format!("Namespace {ns} (--create-namespace)")),
            Err(e) => report.failed.push(Failure {
                app: String::new(),
                id: format!("Namespace {ns}"),
                source: "--create-namespace".into(),
                error: api_message(&e),
            }),
        }
    }

    let replace_timeout = if global_timeout.is_zero() {
        Duration::from_secs(300)
    } else {
        global_timeout
    };
    for r in to_replace {
        match replace::delete_for_replace(client, kinds, r, opts, replace_timeout).await {
            Ok(()) => report.replaced.push(r.id.to_string()),
            Err(error) => report.failed.push(Failure {
                app: r.origin.app.clone(),
                id: r.id.to_string(),
                source: r.origin.file.clone(),
                error,
            }),
        }
    }
}

/// Waits for what this deploy wrote to be ready (or gone), adding what it
/// tracked and its progress lines to the report.
async fn wait_for_ready(
    client: &kube::Client,
    target: &Target<'_>,
    w: &crate::wait::Options,
    mut to_track: Vec<crate::wait::Target>,
    report: &mut Report,
) {
    // Only resources whose write went through are tracked, and stages
    // already waited for are not tracked twice.
    to_track.retain(|t| {
        let id = t.id.to_string();
        (report.applied.contains(&id) || report.deleted.contains(&id))
            && !report.tracked.iter().any(|d| d.id == id)
    });
    let mut progress = Vec::new();
    let w = crate::wait::Options {
        redact: secret_values(&target.head),
        ..w.clone()
    };
    let tracked = crate::wait::track(client, to_track, &w, &mut progress).await;
    report.tracked.extend(tracked);
    report
        .progress
        .push_str(&String::from_utf8_lossy(&progress));
}
