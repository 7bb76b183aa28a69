//! Why a deploy could not start, and the step each failure belongs to.

use super::{api_message, lease, owners, record};

/// The step an error that stopped a deploy belongs to, for reports:
/// `connect`, `preflight`, `ownership`, `lease`, `record`, else `other`.
pub fn error_step(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::Preflight { .. } | Error::Api { .. } => "preflight",
                Error::Owned { .. } => "ownership",
                Error::ForeignRecord { .. } | Error::Record(_) => "record",
                Error::Lease(_) => "lease",
            };
        }
        if cause.downcast_ref::<crate::cluster::Error>().is_some() {
            return "connect";
        }
    }
    "other"
}

/// The error returned when an apply cannot start. Once writes began,
/// failures are in the [`Report`] instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kinds or namespaces the cluster cannot take; nothing was written.
    #[error("preflight failed for environment {env}; nothing was applied:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Preflight {
        /// Environment.
        env: String,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The record belongs to another repository.
    #[error(
        "the deploy record of {env} ({namespace}/{name}) was written by repository `{theirs}`, not `{ours}`; refusing to deploy over it (pass --force-record to take it over)"
    )]
    ForeignRecord {
        /// Environment.
        env: String,
        /// Record namespace.
        namespace: String,
        /// Record name.
        name: String,
        /// Repository in the record.
        theirs: String,
        /// Our repository.
        ours: String,
    },
    /// Resources another environment on the same cluster owns.
    #[error(
        "environment {env} would take over resources that another environment on the same cluster deployed; nothing was applied:\n{}\n  help: give each environment its own namespaces (`namespace: \"{{app}}-{{env}}\"` in kdeploy.yaml, the default), or move them on purpose with --adopt-from <env>",
        conflicts.iter().map(|c| format!("  - {} (in the deploy record of {})", c.id, c.owner)).collect::<Vec<_>>().join("\n")
    )]
    Owned {
        /// Environment deploying.
        env: String,
        /// What it would take over, and from whom.
        conflicts: Vec<owners::Conflict>,
    },
    /// Record read/write failure.
    #[error(transparent)]
    Record(#[from] record::Error),
    /// Lease failure.
    #[error(transparent)]
    Lease(#[from] lease::Error),
    /// A cluster call before any write failed.
    #[error("{what}: {}", api_message(error))]
    Api {
        /// What was being done.
        what: String,
        /// kube's error; its message is in ours, so it is not a cause.
        error: kube::Error,
    },
}
