//! The plan flow: render two revisions (only what differs), validate the
//! head, and plan per resource. `kdeploy plan`, `environments`, the action
//! on a pull request and on a push, `promote`, `set-version`'s preview of a
//! change and `bench` all run exactly this.

use crate::config::Filter;
use crate::plan::{self, Plan};
use crate::render::{self, Comparison, GivenSettings, PolicyFrom};
use crate::source::Snapshot;

/// What to plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// The deployed state (an empty snapshot: nothing is deployed).
    pub base: &'a Snapshot,
    /// The state to deploy.
    pub head: &'a Snapshot,
    /// The releases to plan.
    pub filter: &'a Filter,
    /// Settings for both revisions in place of their kdeploy.yaml
    /// (`--config`): the runner's, so also its policy.
    pub settings: Option<&'a GivenSettings>,
    /// Which revision supplies runner policy ([`crate::config::policy`]).
    pub policy_from: PolicyFrom,
    /// Lines of context in diffs.
    pub context: usize,
    /// The runner's severities of the policy checks
    /// (`latest-tag=error,no-pdb=off`, [`crate::policy`]); by default
    /// `KDEPLOY_POLICY`.
    pub checks: Option<&'a str>,
}

impl<'a> PlanRequest<'a> {
    /// A request with the defaults a pull request's plan takes: policy from
    /// the base, no given settings, 3 lines of context.
    pub fn new(base: &'a Snapshot, head: &'a Snapshot, filter: &'a Filter) -> Self {
        PlanRequest {
            base,
            head,
            filter,
            settings: None,
            policy_from: PolicyFrom::Base,
            context: 3,
            checks: None,
        }
    }
}

/// What planning found: the rendered comparison (for outputs that read the
/// head's settings or states) and the plan.
#[derive(Debug)]
pub struct PlanOutcome {
    /// Both revisions as rendered.
    pub comparison: Comparison,
    /// The changes, per resource.
    pub plan: Plan,
    /// Policy findings at severity `error`: the plan fails.
    pub policy_errors: usize,
}

/// Renders, validates and plans.
///
/// # Errors
/// Problems at either revision, and the head's validation problems, as
/// [`render::Error::Invalid`] listing each with its file and line.
pub fn plan(req: PlanRequest<'_>) -> Result<PlanOutcome, render::Error> {
    let comparison = render::compare_with(
        req.base,
        req.head,
        req.filter,
        req.settings,
        req.policy_from,
    )?;
    let from_env = std::env::var("KDEPLOY_POLICY").ok();
    let checks = req.checks.or(from_env.as_deref()).unwrap_or("");
    let severities = crate::policy::severities(checks).map_err(|e| {
        render::Error::Invalid(crate::diag::Diagnostics::from(
            crate::diag::Diagnostic::global(format!("policy checks: {e}"))
                .help("KDEPLOY_POLICY (the action's input `policy`) is `check=off|warning|error`, comma-separated"),
        ))
    })?;
    crate::validate::check_for_plan(&comparison).map_err(render::Error::Invalid)?;
    let mut plan = plan::plan(&comparison, &comparison.head.settings.plan, req.context);
    let policy_errors = crate::policy::annotate(&mut plan, &comparison.head, &severities);
    plan.policy_errors = policy_errors;
    Ok(PlanOutcome {
        comparison,
        plan,
        policy_errors,
    })
}

/// Checks a plan against the cluster of each environment it changes (a
/// three-way plan, [`crate::live_check`]): live drift the merge would set
/// back, and what the API server refuses. Each environment's context is the
/// runner's (`access.context`), else the base revision's
/// `environments.<env>.context` when the base has its own kdeploy.yaml —
/// never the head's.
pub async fn check_cluster(
    outcome: &mut PlanOutcome,
    access: &crate::cluster::Access,
    opts: &crate::apply::Options,
) {
    let cmp = &outcome.comparison;
    let contexts = if cmp.base_settings_own {
        cmp.base
            .settings
            .environments
            .iter()
            .filter_map(|(env, e)| Some((env.clone(), e.context.clone()?)))
            .collect()
    } else {
        Default::default()
    };
    let req = crate::live_check::Request {
        kubeconfig: access.kubeconfig.clone(),
        context: access.context.clone(),
        contexts,
    };
    crate::live_check::check(&mut outcome.plan, cmp, &req, opts).await;
}
