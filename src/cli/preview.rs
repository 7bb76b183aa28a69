//! `kdeploy preview deploy|delete|gc`: the preview stage
//! ([`crate::preview`]) from a shell, as the action runs it.

use std::io::Write;

use anyhow::Context as _;

use crate::config::Settings;
use crate::preview;
use crate::source::{Revision, Snapshot};

use super::{
    Outcome, PreviewCommand, PreviewDeployArgs, PreviewGcArgs, PreviewPlace, PreviewTarget,
};

/// Runs a `kdeploy preview` subcommand.
///
/// # Errors
/// Bad input, cluster and GitHub failures.
pub async fn run(cmd: &PreviewCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match cmd {
        PreviewCommand::Deploy(args) => deploy(args, out).await,
        PreviewCommand::Delete(args) => delete(args, out).await,
        PreviewCommand::Gc(args) => gc(args, out).await,
    }
}

fn access(settings: &Settings, template: &str, t: &PreviewPlace) -> crate::cluster::Access {
    crate::cluster::Access {
        kubeconfig: t.cluster.kubeconfig.clone(),
        context: preview::context(settings, template, t.cluster.context.as_deref()),
    }
}

async fn deploy(args: &PreviewDeployArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let t = &args.target;
    let snapshot = Snapshot::open(&t.place.repo, &Revision::parse(Some(&args.rev)))?;
    let settings = crate::render::settings(&snapshot)?;
    let template = preview::template(&settings, t.template.as_deref())?;
    let preview = preview::render(&snapshot, &template, t.pr, args.app.as_deref(), None)?;
    for note in &preview.notes {
        writeln!(out, "note: {note}")?;
    }
    let client = crate::cluster::connect(&access(&settings, &template, &t.place)).await?;
    let repository = super::repository_of(t.place.repository.as_deref(), &t.place.repo);
    let head = preview
        .state
        .commit
        .map_or_else(|| preview.state.label.clone(), |c| c.to_string());
    let opts = preview::apply_options(
        &t.place.record_namespace,
        (!args.no_wait).then_some(t.place.timeout),
    );
    let report = preview::deploy(&client, &preview, &repository, &head, &opts).await?;
    crate::report::deploy::text(&report, out)?;
    for r in &preview.state.releases {
        for url in preview::comment::urls(&preview, &r.release.app) {
            writeln!(out, "{}: {}: {url}", preview.overlay.env, r.release.app)?;
        }
    }
    if let Some(path) = &args.comment {
        std::fs::write(path, preview::comment::deployed(&preview, &report, None))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.succeeded() {
        Outcome::Clean
    } else {
        Outcome::DeployFailed
    })
}

async fn delete(t: &PreviewTarget, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let settings = settings_of(&t.place.repo);
    let template = preview::template(&settings, t.template.as_deref())?;
    let client = crate::cluster::connect(&access(&settings, &template, &t.place)).await?;
    let repository = super::repository_of(t.place.repository.as_deref(), &t.place.repo);
    let of = crate::apply::record::PreviewOf {
        template,
        pull_request: t.pr,
    };
    let opts = preview::apply_options(&t.place.record_namespace, Some(t.place.timeout));
    let removed = preview::remove(&client, &of, &repository, &opts).await?;
    preview::describe_removed(&removed, out)?;
    Ok(if removed.succeeded() {
        Outcome::Clean
    } else {
        Outcome::DeployFailed
    })
}

/// The work tree's settings, or the defaults where there is none.
fn settings_of(repo: &std::path::Path) -> Settings {
    Snapshot::open(repo, &Revision::parse(None))
        .map(|s| crate::config::head_settings(&s))
        .unwrap_or_default()
}

async fn gc(args: &PreviewGcArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let place = &args.place;
    let settings = settings_of(&place.repo);
    let repository = super::repository_of(place.repository.as_deref(), &place.repo);
    let token = ["GITHUB_TOKEN", "GH_TOKEN"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|t| !t.is_empty()));
    let gh = match token {
        Some(token) => {
            if repository.split('/').count() != 2 || repository.contains(':') {
                anyhow::bail!(
                    "preview gc asks GitHub about the pull requests of `{repository}`, which is not owner/name: pass --repository OWNER/NAME (or set GITHUB_REPOSITORY)"
                );
            }
            let api =
                std::env::var("GITHUB_API_URL").unwrap_or_else(|_| "https://api.github.com".into());
            Some(crate::github::GitHub::new(
                &api,
                &token,
                &repository,
                crate::github::RetryPolicy::default(),
            )?)
        }
        None if args.older_than.is_some() => {
            writeln!(
                out,
                "no GITHUB_TOKEN: pull request states are not checked, only --older-than"
            )?;
            None
        }
        None => anyhow::bail!(
            "preview gc asks GitHub which pull requests are closed: set GITHUB_TOKEN (a workflow's `github.token` with `pull-requests: read`), or pass --older-than to collect by age alone"
        ),
    };
    let opts = crate::apply::Options {
        dry_run: args.dry_run,
        ..preview::apply_options(&place.record_namespace, Some(place.timeout))
    };
    let failed = !preview::collect(
        &settings,
        &place.cluster.access(),
        &repository,
        gh.as_ref(),
        args.older_than,
        &opts,
        out,
    )
    .await?;
    Ok(if failed {
        Outcome::DeployFailed
    } else {
        Outcome::Clean
    })
}
