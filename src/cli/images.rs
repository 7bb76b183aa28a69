//! The commands that edit the config repo's work tree: image automation
//! (`images update`, `set-version`), promotion and the image lock.

use std::io::Write;

use super::{
    ChangeArgs, ImagesUpdateArgs, LockArgs, Outcome, PromoteArgs, Selection, SetVersionArgs,
    block_on,
};
use crate::report;

/// `kdeploy images update`: one line per version file changed, then notices.
pub(super) fn update(args: &ImagesUpdateArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let outcome = block_on(crate::images::update::update(
        &args.selection.repo,
        &filter,
        args.dry_run,
    ))?;
    for c in &outcome.changes {
        writeln!(
            out,
            "{}{c}",
            if args.dry_run { "would set " } else { "set " }
        )?;
    }
    for n in &outcome.notices {
        writeln!(out, "  {n}")?;
    }
    if outcome.changes.is_empty() {
        writeln!(out, "no version changes")?;
    }
    Ok(Outcome::Clean)
}

/// `kdeploy promote`: the versions copied, then the plan they cause.
pub(super) fn promote(
    args: &PromoteArgs,
    color: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let filter = crate::config::Filter::new(None, args.app.as_deref())?;
    let changes =
        crate::promote::versions(&args.repo, &args.from, &args.to, &filter, args.dry_run)?;
    if changes.is_empty() {
        writeln!(
            out,
            "{} already runs what {} runs: nothing to promote",
            args.to, args.from
        )?;
        return Ok(Outcome::Clean);
    }
    for c in &changes {
        writeln!(
            out,
            "{}{c}",
            if args.dry_run { "would set " } else { "set " }
        )?;
    }
    if !args.dry_run {
        // The plan the promotion causes: HEAD against the work tree.
        let change = ChangeArgs {
            selection: Selection {
                repo: args.repo.clone(),
                env: Some(args.to.clone()),
                app: args.app.clone(),
            },
            base: "HEAD".into(),
            head: ".".into(),
            config: None,
        };
        let (_, plan) = change.plan(3)?;
        writeln!(out)?;
        report::text_with(&plan, color, true, out)?;
    }
    Ok(Outcome::Clean)
}

/// `kdeploy set-version`.
pub(super) fn set_version(args: &SetVersionArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match crate::images::update::set_version(&args.repo, &args.app, &args.env, &args.version)? {
        Some(c) => writeln!(out, "set {c}")?,
        None => writeln!(
            out,
            "{}/{} is already at {}",
            args.app, args.env, args.version
        )?,
    }
    Ok(Outcome::Clean)
}

/// `kdeploy lock`: one line per image; `--check` exits 1 when out of date.
pub(super) fn lock(args: &LockArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let report = block_on(crate::lock::command(
        &args.selection.repo,
        &filter,
        args.check,
    ))?;
    for line in &report.lines {
        writeln!(out, "{line}")?;
    }
    if report.failed > 0 {
        anyhow::bail!(
            "{} image(s) did not resolve; the lock was not changed",
            report.failed
        );
    }
    if args.check && report.out_of_date {
        writeln!(out, "the image lock is out of date: run `kdeploy lock`")?;
        return Ok(Outcome::Differences);
    }
    Ok(Outcome::Clean)
}
