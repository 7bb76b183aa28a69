//! What the cluster showed of a plan (a three-way plan): beside the git
//! change, the live drift the merge would revert and what the API server
//! would refuse. Only data here; [`crate::live_check`] asks the cluster.
//!
//! Drift is a field the apply sets whose live value another field manager
//! put there (`kubectl-edit`, `kubectl-scale`, a controller), or a field
//! kdeploy set that someone removed: the merge puts kdeploy's value back.
//! Fields kdeploy does not set (HPA replicas, injected CA bundles,
//! defaults) are never drift: a server-side apply leaves them alone.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::resource::ResourceId;

/// One field the merge sets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `spec.replicas`.
    pub path: String,
    /// Its live value (`(value not shown)` for a Secret's).
    pub live: String,
    /// What the apply sets it to.
    pub planned: String,
    /// The field managers that own the live value (`kubectl-scale
    /// (Update)`); empty when it was removed.
    pub managers: Vec<String>,
}

/// What the cluster showed of one planned create or update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Fields the merge sets back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// Deployed before (the plan changes it), gone from the cluster: the
    /// apply creates it again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// The API server's refusal of a server-side apply dry run of it
    /// (immutable field, admission denial, quota, a kind it does not serve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Finding {
    /// True when there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.drift.is_empty() && !self.missing && self.refused.is_none()
    }
}

/// One environment's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Environment {
    /// The kubeconfig context asked (`(current)` for the default).
    pub context: String,
    /// Resources read and dry-run.
    pub checked: usize,
    /// Why some were not (`Deployment shop/api: its namespace is created by
    /// this deploy`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Set when the environment could not be checked at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// The plan's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Live {
    /// Why the cluster was not asked, when it was not (no access, a fork's
    /// pull request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_checked: Option<String>,
    /// Each environment asked.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, Environment>,
    /// Per planned change (environment, resource): what was found.
    #[serde(skip)]
    pub findings: BTreeMap<(String, ResourceId), Finding>,
}

impl Default for Live {
    fn default() -> Self {
        Live::not_checked("not asked for this plan")
    }
}

impl Live {
    /// A plan made without asking the cluster, and why.
    pub fn not_checked(why: &str) -> Live {
        Live {
            not_checked: Some(why.to_string()),
            environments: BTreeMap::new(),
            findings: BTreeMap::new(),
        }
    }

    /// What was found of a change, if anything.
    pub fn finding(&self, env: &str, id: &ResourceId) -> Option<&Finding> {
        self.findings
            .get(&(env.to_string(), id.clone()))
            .filter(|f| !f.is_empty())
    }

    /// Changes the API server refused.
    pub fn refusals(&self) -> usize {
        self.findings
            .values()
            .filter(|f| f.refused.is_some())
            .count()
    }

    /// (fields of drift, resources with drift, resources missing).
    pub fn drift_counts(&self) -> (usize, usize, usize) {
        let fields = self.findings.values().map(|f| f.drift.len()).sum();
        let resources = self
            .findings
            .values()
            .filter(|f| !f.drift.is_empty())
            .count();
        let missing = self.findings.values().filter(|f| f.missing).count();
        (fields, resources, missing)
    }

    /// One line for a plan's summary: what was checked and found, or why
    /// nothing was.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.not_checked {
            return format!(
                "Live drift and API server refusals not checked: {why} (kdeploy plan --cluster; in the action, the input plan-cluster)."
            );
        }
        let (fields, resources, missing) = self.drift_counts();
        let refused = self.refusals();
        let envs: Vec<String> = self
            .environments
            .iter()
            .map(|(env, e)| match &e.unavailable {
                Some(why) => format!("{env} not checked ({why})"),
                None if e.skipped.is_empty() => format!("{env} (context {})", e.context),
                None => {
                    let skipped: Vec<&str> = e.skipped.iter().take(3).map(String::as_str).collect();
                    let more = e.skipped.len().saturating_sub(3);
                    let more = if more > 0 {
                        format!("; and {more} more")
                    } else {
                        String::new()
                    };
                    format!(
                        "{env} (context {}; skipped: {}{more})",
                        e.context,
                        skipped.join("; ")
                    )
                }
            })
            .collect();
        let mut found = Vec::new();
        if fields > 0 {
            found.push(format!(
                "{fields} live field{} in {resources} resource{} this merge sets back",
                if fields == 1 { "" } else { "s" },
                if resources == 1 { "" } else { "s" }
            ));
        }
        if missing > 0 {
            found.push(format!(
                "{missing} resource{} missing from the cluster",
                if missing == 1 { "" } else { "s" }
            ));
        }
        if refused > 0 {
            found.push(format!(
                "{refused} change{} the API server refuses",
                if refused == 1 { "" } else { "s" }
            ));
        }
        format!(
            "Checked against the cluster: {}: {}.",
            envs.join(", "),
            if found.is_empty() {
                "no live drift, nothing refused".to_string()
            } else {
                found.join(", ")
            }
        )
    }
}
