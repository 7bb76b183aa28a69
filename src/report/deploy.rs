//! What a deploy did, for each place a person reads it: the terminal and
//! job log ([`text`]), the job summary ([`summary`]) and the check run
//! ([`check_run`]). One renderer, so the three say the same.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::apply::{PreviousFrom, Report};

/// How to let held deletions go, whichever face ran the deploy.
pub const HOW_TO_CONSENT: &str = "they need consent: add the label `kdeploy/allow-deletions` to the pull request and re-run the deploy (or set the input `allow-deletions: true`), or run `kdeploy apply --allow-deletions`; until then they stay deployed and in the record";

/// Prints what a deploy of one environment did: the counts, every resource
/// applied, deleted or failed, readiness and any rollback.
///
/// # Errors
/// Writing to `out`.
pub fn text(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let env = &report.environment;
    if report.retired {
        writeln!(
            out,
            "{env}: no longer in the config repo; removing what its deploy record lists"
        )?;
    }
    let from = match report.previous {
        PreviousFrom::Record => format!(
            "the deploy record (commit {})",
            report.base.as_deref().unwrap_or("?")
        ),
        PreviousFrom::Base => format!(
            "the base revision {}",
            report.base.as_deref().unwrap_or("?")
        ),
        PreviousFrom::Nothing => "nothing (first deploy)".to_string(),
    };
    writeln!(
        out,
        "{env}: previous state from {from}; {} applied, {} deleted, {} unchanged{}",
        report.applied.len(),
        report.deleted.len(),
        report.unchanged,
        if report.dry_run {
            " (server-side dry run)"
        } else {
            ""
        }
    )?;
    for id in &report.replaced {
        writeln!(
            out,
            "  replaced {id} (an immutable field changed: deleted, then applied)"
        )?;
    }
    for id in &report.applied {
        writeln!(out, "  applied  {id}")?;
    }
    for id in &report.deleted {
        writeln!(out, "  deleted  {id}")?;
    }
    for id in &report.kept {
        writeln!(out, "  kept     {id}")?;
    }
    for id in &report.held {
        writeln!(out, "  held     {id}")?;
    }
    if !report.held.is_empty() {
        writeln!(
            out,
            "{env}: {} deletions held: {HOW_TO_CONSENT}",
            report.held.len()
        )?;
    }
    if let Some(c) = &report.consent {
        writeln!(out, "{env}: deletions consented to ({c})")?;
    }
    if let Some(a) = &report.policy_acknowledged {
        writeln!(out, "{env}: deployed with {a}")?;
    }
    for id in &report.adopted {
        writeln!(
            out,
            "  adopted  {id} (removed from the record of the environment it came from)"
        )?;
    }
    for h in &report.hooks {
        writeln!(out, "  hook     {h}")?;
    }
    if report.fidelity.compared > 0 {
        writeln!(out, "{env}: {}", report.fidelity.line())?;
        for m in &report.fidelity.mismatches {
            writeln!(out, "  not as planned {m}")?;
        }
    }
    for f in &report.failed {
        writeln!(out, "  FAILED   {} ({}): {}", f.id, f.source, f.error)?;
    }
    for id in &report.not_attempted {
        writeln!(out, "  skipped  {id} (not attempted after the failure)")?;
    }
    if !report.tracked.is_empty() {
        writeln!(out, "{env}: waiting for {} resources", report.tracked.len())?;
        out.write_all(report.progress.as_bytes())?;
        crate::wait::write_table(&report.tracked, out)?;
    }
    if let Some(rb) = &report.rollback {
        match &rb.skipped {
            Some(why) => writeln!(out, "{env}: rollback not possible: {why}")?,
            None => {
                writeln!(
                    out,
                    "{env}: rolled back: {} restored, {} created resources deleted{}",
                    rb.restored.len(),
                    rb.deleted.len(),
                    if rb.succeeded() {
                        "; the previous state is ready"
                    } else {
                        "; the ROLLBACK FAILED too"
                    }
                )?;
                for f in &rb.failed {
                    writeln!(out, "  rollback FAILED {}: {}", f.id, f.error)?;
                }
                for t in rb.tracked.iter().filter(|t| !t.ok()) {
                    writeln!(out, "  rollback not ready {}: {}", t.id, t.state)?;
                }
            }
        }
    }
    if !report.succeeded() {
        writeln!(
            out,
            "{env}: deploy failed; the record was not updated, so the next run retries the same change"
        )?;
    }
    Ok(())
}

/// The job summary of a deploy: a row per environment, then every failure.
pub fn summary(reports: &[Report]) -> String {
    let mut summary = String::from(
        "\n### kdeploy deploy\n\n| environment | previous state | applied | deleted | unchanged | result |\n| --- | --- | ---: | ---: | ---: | --- |\n",
    );
    for r in reports {
        summary.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.environment,
            r.previous,
            r.applied.len(),
            r.deleted.len(),
            r.unchanged,
            if r.succeeded() {
                "deployed"
            } else {
                "**failed**"
            }
        ));
    }
    for r in reports {
        for f in &r.failed {
            summary.push_str(&format!("\n- :x: `{}` ({}): {}", f.id, f.source, f.error));
        }
        if !r.not_attempted.is_empty() {
            summary.push_str(&format!(
                "\n- not attempted after the failure: {}",
                r.not_attempted.join(", ")
            ));
        }
        for id in &r.held {
            summary.push_str(&format!("\n- held for consent: `{id}`"));
        }
        if r.fidelity.compared > 0 {
            summary.push_str(&format!("\n- {}: {}", r.environment, r.fidelity.line()));
            for m in &r.fidelity.mismatches {
                summary.push_str(&format!("\n  - not as planned: `{}`", m.replace('`', "'")));
            }
        }
    }
    summary.push('\n');
    summary
}

/// A check run's output for one environment's deploy, before GitHub's
/// limits are applied ([`crate::feedback::output`] does that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    /// One line: the outcome.
    pub title: String,
    /// Markdown: a row per resource, hooks, rollback.
    pub summary: String,
    /// Markdown: each failure in full.
    pub text: String,
    /// (app, message) of each failure, for annotations at its config.
    pub failing: Vec<(String, String)>,
}

/// The check run of one environment's deploy: `report` when it ran, else
/// `error`, why it could not start.
pub fn check_run(
    env: &str,
    report: Option<&Report>,
    error: Option<&str>,
    run_url: Option<&str>,
) -> CheckRun {
    let mut summary = String::new();
    let mut text = String::new();
    if let Some(url) = run_url {
        let _ = writeln!(summary, "[Workflow run]({url})\n");
    }
    let Some(r) = report else {
        let e = error.unwrap_or("the deploy could not start");
        let _ = writeln!(
            summary,
            "**Nothing was deployed to {env}.**\n\n```\n{e}\n```"
        );
        return CheckRun {
            title: format!("Deploy to {env} failed before any change"),
            summary,
            text,
            failing: Vec::new(),
        };
    };
    let title = match conclusion(Some(r)) {
        "success" if !r.held.is_empty() => format!(
            "Deployed to {env}: {} applied, {} deleted, {} deletions held for consent",
            r.applied.len(),
            r.deleted.len(),
            r.held.len()
        ),
        "success" => format!(
            "Deployed to {env}: {} applied, {} deleted",
            r.applied.len(),
            r.deleted.len()
        ),
        "timed_out" => format!("Deploy to {env} timed out"),
        _ => {
            let bad = r.failed.len() + r.tracked.iter().filter(|t| !t.ok()).count();
            format!("Deploy to {env} failed: {bad} resource(s)")
        }
    };
    let _ = writeln!(
        summary,
        "| app | resource | action | result | time to ready | reason |\n| --- | --- | --- | --- | ---: | --- |"
    );
    let mut failing_apps: Vec<(String, String)> = Vec::new();
    for f in &r.failed {
        let app = f.app.clone();
        let _ = writeln!(
            summary,
            "| {app} | `{}` | apply | **failed** |  | {} |",
            f.id,
            f.error.replace('|', "\\|").replace('\n', " ")
        );
        let _ = writeln!(
            text,
            "### {}\n\nSource: {}\n\n```\n{}\n```\n",
            f.id, f.source, f.error
        );
        failing_apps.push((app, f.error.clone()));
    }
    for t in &r.tracked {
        let (word, reason) = t.outcome();
        let result = if t.ok() {
            word.to_string()
        } else {
            format!("**{word}**")
        };
        let _ = writeln!(
            summary,
            "| {} | `{}` | {} | {result} | {:.1}s | {} |",
            t.app,
            t.id,
            t.action,
            t.seconds,
            reason.replace('|', "\\|")
        );
        if !t.ok() {
            let _ = writeln!(text, "### {} ({})\n\n{reason}\n", t.id, t.app);
            if !t.details.is_empty() {
                let _ = writeln!(text, "```\n{}\n```\n", t.details.join("\n"));
            }
            failing_apps.push((t.app.clone(), format!("{}: {reason}", t.id)));
        }
    }
    for id in &r.replaced {
        let _ = writeln!(
            summary,
            "|  | `{id}` | replaced (immutable field: deleted, then applied) | ok |  |  |"
        );
    }
    for id in &r.applied {
        if !r.tracked.iter().any(|t| &t.id == id) {
            let _ = writeln!(summary, "|  | `{id}` | applied | ok |  |  |");
        }
    }
    for id in &r.deleted {
        if !r.tracked.iter().any(|t| &t.id == id) {
            let _ = writeln!(summary, "|  | `{id}` | deleted | ok |  |  |");
        }
    }
    for id in &r.held {
        let _ = writeln!(summary, "|  | `{id}` | delete | **held** |  |  |");
    }
    if !r.not_attempted.is_empty() {
        let _ = writeln!(
            summary,
            "\nNot attempted after the failure: {}",
            r.not_attempted.join(", ")
        );
    }
    if !r.held.is_empty() {
        let _ = writeln!(
            summary,
            "\n**{} deletions held:** {HOW_TO_CONSENT}.",
            r.held.len()
        );
    }
    if let Some(c) = &r.consent {
        let _ = writeln!(summary, "\nDeletions consented to: {c}.");
    }
    if let Some(a) = &r.policy_acknowledged {
        let _ = writeln!(summary, "\n**Deployed with {a}.**");
    }
    if !r.hooks.is_empty() {
        let _ = writeln!(summary, "\nDeploy hooks:");
        for h in &r.hooks {
            let _ = writeln!(summary, "- {h}");
        }
    }
    if r.fidelity.compared > 0 {
        let _ = writeln!(summary, "\n**Fidelity:** {}.", r.fidelity.line());
        if !r.fidelity.mismatches.is_empty() {
            let _ = writeln!(
                text,
                "### Not exactly as planned\n\nThe API server stored these fields with other values than kdeploy sent (a mutating webhook, a default):\n"
            );
            for m in &r.fidelity.mismatches {
                let _ = writeln!(text, "- `{}`", m.replace('`', "'"));
            }
            text.push('\n');
        }
    }
    let _ = writeln!(
        summary,
        "\n{} resources unchanged. Previous state: {}.",
        r.unchanged, r.previous
    );
    if let Some(rb) = &r.rollback {
        match &rb.skipped {
            Some(why) => {
                let _ = writeln!(summary, "\n**Rollback not possible:** {why}");
            }
            None => {
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "nothing".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                let _ = writeln!(
                    summary,
                    "\n**Rolled back{}:** restored {}; deleted again {}.",
                    if rb.succeeded() {
                        ""
                    } else {
                        " (the rollback failed too)"
                    },
                    list(&rb.restored),
                    list(&rb.deleted)
                );
                for f in &rb.failed {
                    let _ = writeln!(text, "### Rollback of {} failed\n\n{}\n", f.id, f.error);
                }
            }
        }
    }
    CheckRun {
        title,
        summary,
        text,
        failing: failing_apps,
    }
}

/// The check run's conclusion for a report (or a failure before it).
pub fn conclusion(report: Option<&Report>) -> &'static str {
    match report {
        Some(r) if r.succeeded() => "success",
        Some(r) if r.timed_out() => "timed_out",
        _ => "failure",
    }
}
