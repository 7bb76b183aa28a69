//! The scope the repository declares for custom kinds (`kinds:` in
//! kdeploy.yaml), applied to each rendered release.
//!
//! A custom kind is namespaced unless its CustomResourceDefinition (in the
//! same release) says otherwise, and rendering gives a namespaced object
//! without a namespace its release's. For a kind whose CRD lives in the
//! cluster only (a cert-manager `ClusterIssuer`, a Gateway API
//! `GatewayClass`), `kinds:` says `Cluster`, and the namespace rendering
//! gave it is taken back: a cluster-scoped object never carries one. What
//! the repository does not declare is checked against the cluster's
//! discovery before a deploy writes anything (`apply::preflight`).

use crate::config::{KindScope, Settings};
use crate::diag::{Diagnostic, Diagnostics, Location};

use super::Rendered;

/// Applies `settings.kinds` to `r`'s resources.
///
/// # Errors
/// A kind declared cluster-scoped whose object names another namespace
/// than its release's, or declared namespaced where a CRD of the release
/// says cluster.
pub fn apply_declared(r: &mut Rendered, settings: &Settings) -> Result<(), Diagnostics> {
    if settings.kinds.is_empty() {
        return Ok(());
    }
    let mut problems = Diagnostics::default();
    for res in &mut r.resources {
        let declared = settings.declared_scope(&res.id.group, &res.id.kind);
        match (declared, res.id.namespace.as_deref()) {
            (Some(KindScope::Cluster), Some(ns)) if ns == r.release.namespace => {
                res.id.namespace = None;
                if let Some(meta) = res.object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    meta.remove("namespace");
                }
            }
            (Some(KindScope::Cluster), Some(ns)) => problems.push(
                Diagnostic::new(
                    Location::file(&res.origin.file),
                    format!(
                        "{} in {}/{}: `kinds` declares {} cluster-scoped, but the object names the namespace `{ns}`",
                        res.id, r.release.env, r.release.app, res.id.kind
                    ),
                )
                .help("remove metadata.namespace, or fix the scope under `kinds:` in kdeploy.yaml"),
            ),
            (Some(KindScope::Namespaced), None) => problems.push(
                Diagnostic::new(
                    Location::file(&res.origin.file),
                    format!(
                        "{} in {}/{}: `kinds` declares {} namespaced, but a CustomResourceDefinition of the release says Cluster",
                        res.id, r.release.env, r.release.app, res.id.kind
                    ),
                )
                .help("remove the kind from `kinds:`: the CRD decides"),
            ),
            _ => {}
        }
    }
    problems.into_result(())
}
