//! The commands that edit the config repo's work tree: image automation
//! (`images update`, `set-version`), promotion and the image lock.

use std::io::Write;

use super::{
    ImagesUpdateArgs, LockArgs, Outcome, PromoteArgs, PublishArgs, SetVersionArgs, block_on,
};
use crate::report;

/// `kdeploy images update`: one line per version file changed, then notices;
/// with `--pr`/`--push`, one line per pull request or commit.
pub(super) fn update(args: &ImagesUpdateArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let filter = args.selection.filter()?;
    let how = publishing(args.publish, args.dry_run)?;
    let outcome = block_on(crate::edit::images::update(
        &args.selection.repo,
        &filter,
        args.dry_run || how.is_some(),
    ))?;
    for c in &outcome.changes {
        writeln!(out, "{}{c}", verb(args.dry_run, how))?;
    }
    for n in &outcome.notices {
        writeln!(out, "  {n}")?;
    }
    if outcome.changes.is_empty() {
        writeln!(out, "no version changes")?;
        return Ok(Outcome::Clean);
    }
    if let Some(how) = how {
        publish_changes(
            &args.selection.repo,
            how,
            &outcome.changes,
            "version",
            false,
            out,
        )?;
    }
    Ok(Outcome::Clean)
}

/// `--pr`/`--push`, refused together with `--dry-run`.
fn publishing(args: PublishArgs, dry_run: bool) -> anyhow::Result<Option<crate::publish::Publish>> {
    let how = args.how();
    if how.is_some() && dry_run {
        anyhow::bail!("--dry-run writes nothing, so it cannot be combined with --pr or --push");
    }
    Ok(how)
}

fn verb(dry_run: bool, how: Option<crate::publish::Publish>) -> &'static str {
    match (dry_run, how) {
        (true, _) => "would set ",
        (false, Some(_)) => "propose ",
        (false, None) => "set ",
    }
}

/// Stages `changes` as change sets and publishes them: per release for a
/// pull request, in one commit for a push.
fn publish_changes(
    repo: &std::path::Path,
    how: crate::publish::Publish,
    changes: &[crate::edit::images::Change],
    kind: &str,
    show_plan: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use crate::publish;
    let credentials = publish::Credentials::from_env(|k| std::env::var(k).ok())?;
    let github_ref = std::env::var("GITHUB_REF").ok();
    // One runtime for all of it: the API client lives inside it.
    let done = block_on(async {
        let remote = publish::Remote::open(
            repo,
            &credentials,
            github_ref.as_deref(),
            crate::github::RetryPolicy::default(),
        )?;
        publish::changes(&remote, repo, how, changes, kind).await
    })?;
    for (set, outcome) in &done {
        if show_plan {
            writeln!(out)?;
            report::text_with(&set.plan, false, true, out)?;
            writeln!(out)?;
        }
        writeln!(out, "{}: {outcome}", set.title)?;
    }
    Ok(())
}

/// `kdeploy promote`: the versions copied, then the plan they cause.
pub(super) fn promote(
    args: &PromoteArgs,
    color: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let how = publishing(args.publish, args.dry_run)?;
    let request = crate::promote::Request {
        repo: &args.repo,
        from: &args.from,
        to: &args.to,
        apps: args.app.as_deref(),
        keys: &args.keys,
        dry_run: args.dry_run || how.is_some(),
    };
    let changes = match crate::promote::promotion(&request)? {
        crate::promote::Promotion::Branches(b) => return promote_branches(args, b, color, out),
        crate::promote::Promotion::Files { changes, notices } => {
            for n in notices {
                writeln!(out, "  {n}")?;
            }
            changes
        }
    };
    if changes.is_empty() {
        writeln!(
            out,
            "{} already runs what {} runs: nothing to promote",
            args.to, args.from
        )?;
        return Ok(Outcome::Clean);
    }
    for c in &changes {
        writeln!(out, "{}{c}", verb(args.dry_run, how))?;
    }
    if let Some(how) = how {
        let kind = format!(
            "promote/{}-to-{}",
            crate::publish::branch_part(&args.from),
            crate::publish::branch_part(&args.to)
        );
        publish_changes(&args.repo, how, &changes, &kind, true, out)?;
    } else if !args.dry_run {
        // The plan the promotion causes: HEAD against the work tree.
        let filter = crate::config::Filter::new(Some(&args.to), args.app.as_deref())?;
        let plan = crate::publish::plan_work_tree(&args.repo, &filter, 3)?;
        writeln!(out)?;
        report::text_with(&plan, color, true, out)?;
    }
    Ok(Outcome::Clean)
}

/// `kdeploy promote` between environments bound to branches: the plan of
/// the target environment from its branch to the source branch, then a
/// fast-forward (or with `--pr` a pull request between the branches).
fn promote_branches(
    args: &PromoteArgs,
    branches: crate::promote::Branches,
    color: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    use crate::promote::BranchOutcome;
    let credentials = crate::publish::Credentials::from_env(|k| std::env::var(k).ok())?;
    let promotion = block_on(async {
        let gh = crate::github::GitHub::new(
            &credentials.api_url,
            &credentials.token,
            &credentials.repository,
            crate::github::RetryPolicy::default(),
        )?;
        crate::promote::branches(
            &gh,
            &args.repo,
            branches,
            &args.to,
            args.app.as_deref(),
            args.publish.pr,
            args.dry_run,
            None,
        )
        .await
    })?;
    let b = &promotion.branches;
    let short = |s: &str| s[..s.len().min(12)].to_string();
    writeln!(
        out,
        "{} deploys from {} ({}); {} from {} ({})",
        args.to,
        b.to,
        short(&promotion.to_sha),
        args.from,
        b.from,
        short(&promotion.from_sha)
    )?;
    if promotion.from_sha == promotion.to_sha {
        writeln!(out, "{} is already at {}: nothing to promote", b.to, b.from)?;
        return Ok(Outcome::Clean);
    }
    writeln!(out)?;
    report::text_with(&promotion.plan, color, true, out)?;
    writeln!(out)?;
    match &promotion.outcome {
        None => writeln!(
            out,
            "would fast-forward {} to {} (run without --dry-run, or with --pr for a pull request)",
            b.to, b.from
        )?,
        Some(BranchOutcome::FastForwarded) => writeln!(
            out,
            "fast-forwarded {} to {} ({}): the push to {} deploys {}",
            b.to,
            b.from,
            short(&promotion.from_sha),
            b.to,
            args.to
        )?,
        Some(BranchOutcome::PullRequest(o)) => writeln!(out, "{o}")?,
    }
    Ok(Outcome::Clean)
}

/// `kdeploy set-version`.
pub(super) fn set_version(args: &SetVersionArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let how = args.publish.how();
    let change = crate::edit::images::set_version(
        &args.repo,
        &args.app,
        &args.env,
        &args.version,
        how.is_none(),
    )?;
    match change {
        Some(c) => {
            writeln!(out, "{}{c}", verb(false, how))?;
            if let Some(how) = how {
                publish_changes(&args.repo, how, &[c], "version", false, out)?;
            }
        }
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
    let report = block_on(crate::edit::lock::command(
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
