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
    /// The runner's Rego policy directory ([`crate::policy::rego::Source`]);
    /// by default `KDEPLOY_POLICIES`.
    pub policies: Option<&'a str>,
    /// The runner's directory of ValidatingAdmissionPolicies, bindings and
    /// their parameters (YAML), beside those the base state deploys; by
    /// default `KDEPLOY_ADMISSION_POLICIES`.
    pub admission_policies: Option<&'a str>,
    /// The runner's render cache, read for the base's releases
    /// ([`render::cache`]); never for anything that is applied.
    pub render_cache: Option<&'a render::cache::RenderCache>,
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
            policies: None,
            admission_policies: None,
            render_cache: None,
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
        req.render_cache,
    )?;
    let from_env = std::env::var("KDEPLOY_POLICY").ok();
    let checks = req.checks.or(from_env.as_deref()).unwrap_or("");
    let severities = crate::policy::severities(checks).map_err(|e| {
        render::Error::Invalid(crate::diag::Diagnostics::from(
            crate::diag::Diagnostic::global(format!("policy checks: {e}"))
                .help("KDEPLOY_POLICY (the action's input `policy`) is `check=off|warning|error`, comma-separated"),
        ))
    })?;
    // Validation and the plan's notes both read the head's stages.
    let stages = crate::order::stages_by_env(&comparison.head);
    crate::validate::check_for_plan(&comparison, &stages).map_err(render::Error::Invalid)?;
    let mut plan = plan::plan_staged(
        &comparison,
        &stages,
        &comparison.head.settings.plan,
        req.context,
    );
    drop(stages);
    let mut policy_errors = crate::policy::annotate(&mut plan, &comparison.head, &severities);
    // The runner's policies: its directories, read from the revision that
    // supplies runner policy when they are the config repo's.
    let (trusted, trusted_state) = match req.policy_from {
        PolicyFrom::Base => (req.base, &comparison.base),
        PolicyFrom::Own => (req.head, &comparison.head),
    };
    if let Some(dir) = runner_dir(req.policies, "KDEPLOY_POLICIES") {
        policy_errors += rego(&mut plan, &comparison.head, &dir, trusted)?;
    }
    let admission_dir = runner_dir(req.admission_policies, "KDEPLOY_ADMISSION_POLICIES");
    policy_errors += admission(
        &mut plan,
        &comparison,
        admission_dir.as_deref(),
        (trusted, trusted_state),
    )?;
    plan.policy_errors = policy_errors;
    Ok(PlanOutcome {
        comparison,
        plan,
        policy_errors,
    })
}

/// A directory the runner names: `given`, else the environment variable
/// `var`; none when empty.
fn runner_dir(given: Option<&str>, var: &str) -> Option<String> {
    given
        .map(str::to_string)
        .or_else(|| std::env::var(var).ok())
        .filter(|d| !d.is_empty())
}

/// A policy directory that does not load stops the plan, saying what to do.
fn policy_error(e: &crate::policy::rego::Error, help: &str) -> render::Error {
    render::Error::Invalid(crate::diag::Diagnostics::from(
        crate::diag::Diagnostic::global(e.to_string()).help(help),
    ))
}

/// Runs the Rego policies of `dir` over the plan's changes: read from
/// `trusted` (the revision that supplies runner policy) when `dir` is the
/// config repo's, from disk when it is the runner's. Returns the findings
/// that fail the plan.
fn rego(
    plan: &mut Plan,
    head: &render::State,
    dir: &str,
    trusted: &Snapshot,
) -> Result<usize, render::Error> {
    use crate::policy::rego::{Policies, Source};
    let invalid = |e: crate::policy::rego::Error| {
        policy_error(
            &e,
            "fix the policy (conftest's `deny`/`warn`/`violation` rules over `input`, one object), or point KDEPLOY_POLICIES (the action's input `policies`) elsewhere",
        )
    };
    let loaded = Policies::load(&Source::parse(dir), trusted).map_err(invalid)?;
    let Some(policies) = loaded else {
        plan.notes.push(format!(
            "policies: {dir} is not in {}: no Rego policies ran (a pull request's own policies apply once merged)",
            trusted.label()
        ));
        return Ok(0);
    };
    let failing = crate::policy::annotate_rego(plan, head, &policies).map_err(invalid)?;
    plan.notes.push(format!(
        "policies: {} Rego file(s) from {} ran on each resource this plan creates or changes",
        policies.files, policies.label
    ));
    Ok(failing)
}

/// Evaluates the ValidatingAdmissionPolicies of the base state and of the
/// runner's `dir` offline ([`crate::policy::vap`]); returns the denials.
fn admission(
    plan: &mut Plan,
    cmp: &Comparison,
    dir: Option<&str>,
    (trusted, state): (&Snapshot, &render::State),
) -> Result<usize, render::Error> {
    let mut extra = Vec::new();
    let mut from = format!("the state at {}", trusted.label());
    if let Some(dir) = dir {
        let source = crate::policy::rego::Source::parse(dir);
        let loaded = crate::policy::vap::load(&source, trusted).map_err(|e| {
            policy_error(
                &e,
                "fix the file, or point KDEPLOY_ADMISSION_POLICIES (the action's input `admission-policies`) elsewhere",
            )
        })?;
        match loaded {
            Some((objects, label)) => {
                extra = objects;
                from = format!("{from} and {label}");
            }
            None => plan.notes.push(format!(
                "admission policies: {dir} is not in {}: only those the base state deploys were evaluated",
                trusted.label()
            )),
        }
    }
    let (denials, bound) = crate::policy::annotate_admission(plan, cmp, state, &extra);
    if bound > 0 {
        plan.notes.push(format!(
            "admission policies: {bound} ValidatingAdmissionPolicy binding(s) from {from} evaluated offline on each resource this plan creates or changes"
        ));
    }
    Ok(denials)
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
