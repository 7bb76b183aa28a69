//! `kdeploy check`: the policy stage of a plan, run locally on every
//! resource of one revision (the work tree by default), as a plan from
//! nothing would run it. The revision checked supplies its own policies
//! here: this is the author's laptop, not a pull request's plan.

use std::io::Write;

use super::args::{CheckArgs, Outcome};
use crate::source::{Revision, Snapshot};

/// Runs the checks and prints each finding under its resource.
///
/// # Errors
/// Bad input, policies that do not load, an empty selection.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let head = Snapshot::open(&args.selection.repo, &Revision::parse(args.rev.as_deref()))?;
    let nothing = Snapshot::empty();
    let outcome = crate::pipeline::plan::plan(crate::pipeline::PlanRequest {
        policy_from: crate::render::PolicyFrom::Own,
        checks: args.policy.as_deref(),
        policies: args.policies.as_deref(),
        admission_policies: args.admission_policies.as_deref(),
        ..crate::pipeline::PlanRequest::new(&nothing, &head, &filter)
    })?;
    args.selection.ensure_matches(&[&head])?;
    let plan = outcome.plan;
    let (mut errors, mut warnings) = (0, 0);
    for c in &plan.changes {
        let findings: Vec<(&crate::plan::Warning, bool, &str)> = c
            .warnings
            .iter()
            .filter_map(|w| crate::policy::finding(w).map(|(fails, m)| (w, fails, m)))
            .collect();
        if findings.is_empty() {
            continue;
        }
        writeln!(out, "{}/{} {} ({})", c.env, c.app, c.id, c.origin.file)?;
        for (w, fails, message) in findings {
            if fails {
                errors += 1;
            } else {
                warnings += 1;
            }
            let level = if fails { "error" } else { "warning" };
            writeln!(out, "  {level}[{}] {message}", w.code)?;
        }
    }
    for n in plan
        .notes
        .iter()
        .filter(|n| n.starts_with("policies:") || n.starts_with("admission policies:"))
    {
        writeln!(out, "note: {n}")?;
    }
    writeln!(
        out,
        "{} resources checked: {errors} error(s), {warnings} warning(s)",
        plan.changes.len()
    )?;
    Ok(if errors > 0 {
        Outcome::Exit(1)
    } else {
        Outcome::Clean
    })
}
