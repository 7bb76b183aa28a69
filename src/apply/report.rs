//! What a deploy did: the report `--report` writes as JSON, the check run
//! and the summaries read.

use serde::Serialize;

/// Where the previous state came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PreviousFrom {
    /// The in-cluster deploy record.
    Record,
    /// The base revision.
    Base,
    /// Nothing: a first deploy.
    #[default]
    Nothing,
}

impl std::fmt::Display for PreviousFrom {
    /// Where the previous state came from, in words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PreviousFrom::Record => "deploy record",
            PreviousFrom::Base => "base revision",
            PreviousFrom::Nothing => "none (first deploy)",
        })
    }
}

/// A resource that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `apps/Deployment shop/api`.
    pub id: String,
    /// The app it belongs to (empty when none).
    pub app: String,
    /// The template or file it came from.
    pub source: String,
    /// The API server's message.
    pub error: String,
}

/// A step of a deploy that can fail after the cluster was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Applying or deleting a resource.
    Apply,
    /// Waiting for readiness.
    Wait,
    /// Writing the deploy record.
    Record,
}

/// What an apply did; written as JSON by `--report`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub ended_at: String,
    /// Environment.
    pub environment: String,
    /// Repository identity.
    pub repository: String,
    /// The commit the previous state came from, if any.
    pub base: Option<String>,
    /// The commit deployed.
    pub head: String,
    /// Where the previous state came from.
    pub previous: PreviousFrom,
    /// Whether writes were server-side dry runs.
    pub dry_run: bool,
    /// Applied resources, in order.
    pub applied: Vec<String>,
    /// Deleted resources.
    pub deleted: Vec<String>,
    /// Failed resources with the API server's message.
    pub failed: Vec<Failure>,
    /// Resources not attempted because an earlier group failed.
    pub not_attempted: Vec<String>,
    /// Resources whose content was unchanged and so not sent.
    pub unchanged: usize,
    /// Whether the deploy record was updated.
    pub record_written: bool,
    /// The step that failed, when one did: `apply` (a resource), `wait`
    /// (readiness) or `record` (the deploy record after everything else).
    pub failed_step: Option<Step>,
    /// Resources gone from this environment that were not deleted because
    /// another environment's record on the same cluster lists them.
    pub kept: Vec<String>,
    /// Resources moved from another environment's record (`--adopt-from`).
    pub adopted: Vec<String>,
    /// Resources deleted and created again because an immutable field
    /// changed (`kdeploy.io/update-strategy: replace`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
    /// Readiness of what was applied and deleted (with `wait`).
    pub tracked: Vec<crate::wait::Tracked>,
    /// Progress lines of the tracking, one per change of state.
    #[serde(skip)]
    pub progress: String,
    /// What a rollback did, when one ran.
    pub rollback: Option<Rollback>,
    /// Deploy hooks run, one line each (`pre-deploy batch/Job shop/migrate: complete (2.1s)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// Deletions held for consent, each with why (`Namespace shop (a
    /// Namespace: everything in it is deleted too)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// How consent to deletions was given, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
    /// Policy findings at severity error deployed anyway, and who
    /// acknowledged them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_acknowledged: Option<String>,
    /// The environment is no longer in the config repo: this deploy removed
    /// what its record listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// How exactly the stored objects match what was sent
    /// ([`super::fidelity`]); nothing compared on a dry run.
    #[serde(skip_serializing_if = "is_uncompared")]
    pub fidelity: super::fidelity::Fidelity,
    /// The other environments' records this deploy listed on its cluster
    /// (environment, repository, a preview's): what finding retired
    /// environments needs, so the run lists the records once.
    #[serde(skip)]
    pub other_records: Vec<(String, String, bool)>,
}

fn is_uncompared(f: &super::fidelity::Fidelity) -> bool {
    f.compared == 0
}

/// A rollback after a failed deploy.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// Resources put back to their previous content.
    pub restored: Vec<String>,
    /// Resources the failed deploy created, deleted again.
    pub deleted: Vec<String>,
    /// Failures of the rollback itself.
    pub failed: Vec<Failure>,
    /// Readiness of what the rollback restored.
    pub tracked: Vec<crate::wait::Tracked>,
    /// Why it could not run at all, if so.
    pub skipped: Option<String>,
}

impl Rollback {
    /// True when the previous state is back and ready.
    pub fn succeeded(&self) -> bool {
        self.skipped.is_none()
            && self.failed.is_empty()
            && self.tracked.iter().all(crate::wait::Tracked::ok)
    }
}

impl Report {
    /// True when nothing failed (and, with `wait`, everything is ready).
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty()
            && self.not_attempted.is_empty()
            && self.tracked.iter().all(crate::wait::Tracked::ok)
    }

    /// True when tracking ran out of time (and nothing else failed).
    pub fn timed_out(&self) -> bool {
        self.failed.is_empty() && self.tracked.iter().any(|t| t.timed_out)
    }
}
