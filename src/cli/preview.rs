//! `kdeploy preview deploy|delete|gc`: the preview stage
//! ([`crate::preview`]) from a shell, as the action runs it.

use std::io::Write;

use anyhow::Context as _;

use crate::config::Settings;
use crate::preview;
use crate::source::{Revision, Snapshot};

use super::{Outcome, PreviewCommand, PreviewDeployArgs, PreviewGcArgs, PreviewTarget};

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

/// Options of a preview's apply: prune, wait, no rollback (the preview is
/// the pull request's; a failure is reported, not undone).
pub fn apply_options(
    record_namespace: &str,
    wait: Option<std::time::Duration>,
) -> crate::apply::Options {
    crate::apply::Options {
        record_namespace: record_namespace.to_string(),
        wait: wait.map(|timeout| crate::wait::Options {
            timeout,
            ..crate::wait::Options::default()
        }),
        ..crate::apply::Options::default()
    }
}

/// The template to use: the one named, else the only one there is.
///
/// # Errors
/// No template, or several and none named.
pub fn template(settings: &Settings, named: Option<&str>) -> anyhow::Result<String> {
    if let Some(t) = named {
        return Ok(t.to_string());
    }
    let all: Vec<&str> = crate::config::preview::templates(settings)
        .map(|(n, _)| n)
        .collect();
    match all.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => anyhow::bail!(
            "kdeploy.yaml declares no preview template: add one, e.g. `environments: {{preview: {{from: staging, namespace: \"pr-{{pr}}\"}}}}`"
        ),
        many => anyhow::bail!(
            "kdeploy.yaml declares several preview templates ({}): name one with --template",
            many.join(", ")
        ),
    }
}

/// The kubeconfig context of a template's previews: the flag's, else the
/// template's `context`, else its `from` environment's.
pub fn context(settings: &Settings, template: &str, given: Option<&str>) -> Option<String> {
    if let Some(c) = given {
        return Some(c.to_string());
    }
    let t = settings.environments.get(template)?;
    t.context.clone().or_else(|| {
        let from = t.from.as_deref()?;
        settings.environments.get(from)?.context.clone()
    })
}

fn access(settings: &Settings, template: &str, t: &PreviewTarget) -> crate::cluster::Access {
    crate::cluster::Access {
        kubeconfig: t.cluster.kubeconfig.clone(),
        context: context(settings, template, t.cluster.context.as_deref()),
    }
}

async fn deploy(args: &PreviewDeployArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let t = &args.target;
    let snapshot = Snapshot::open(&t.repo, &Revision::parse(Some(&args.rev)))?;
    let settings = crate::config::head_settings(&snapshot);
    let template = template(&settings, t.template.as_deref())?;
    let preview = preview::render(&snapshot, &template, t.pr, args.app.as_deref())?;
    for note in &preview.notes {
        writeln!(out, "note: {note}")?;
    }
    let client = crate::cluster::connect(&access(&settings, &template, t)).await?;
    let repository = super::repository_of(t.repository.as_deref(), &t.repo);
    let head = preview
        .state
        .commit
        .map_or_else(|| preview.state.label.clone(), |c| c.to_string());
    let opts = apply_options(&t.record_namespace, (!args.no_wait).then_some(t.timeout));
    let report = preview::deploy(&client, &preview, &repository, &head, &opts).await?;
    crate::apply::describe(&report, out)?;
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
    let settings = settings_of(&t.repo);
    let template = template(&settings, t.template.as_deref())?;
    let client = crate::cluster::connect(&access(&settings, &template, t)).await?;
    let repository = super::repository_of(t.repository.as_deref(), &t.repo);
    let env = crate::config::preview::env_name(&template, t.pr);
    let opts = apply_options(&t.record_namespace, Some(t.timeout));
    let removed = preview::remove(&client, &env, &repository, &opts).await?;
    describe_removed(&removed, out)?;
    Ok(if removed.succeeded() {
        Outcome::Clean
    } else {
        Outcome::DeployFailed
    })
}

/// Prints what removing a preview did.
///
/// # Errors
/// Writing to `out`.
pub fn describe_removed(removed: &preview::Removed, out: &mut dyn Write) -> std::io::Result<()> {
    match &removed.report {
        None => writeln!(out, "{}: no deploy record; nothing to remove", removed.env),
        Some(r) => {
            for id in &r.deleted {
                writeln!(out, "  deleted  {id}")?;
            }
            for f in &r.failed {
                writeln!(out, "  FAILED   {}: {}", f.id, f.error)?;
            }
            for t in r.tracked.iter().filter(|t| !t.ok()) {
                writeln!(out, "  not gone {}: {:?}", t.id, t.state)?;
            }
            if r.succeeded() {
                writeln!(
                    out,
                    "{}: removed ({} deleted and gone; record deleted)",
                    removed.env,
                    r.deleted.len()
                )
            } else {
                writeln!(
                    out,
                    "{}: removal failed; the record was kept, so running it again retries",
                    removed.env
                )
            }
        }
    }
}

/// The work tree's settings, or the defaults where there is none.
fn settings_of(repo: &std::path::Path) -> Settings {
    Snapshot::open(repo, &Revision::parse(None))
        .map(|s| crate::config::head_settings(&s))
        .unwrap_or_default()
}

async fn gc(args: &PreviewGcArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let settings = settings_of(&args.repo);
    let repository = super::repository_of(args.repository.as_deref(), &args.repo);
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
    // One pass per cluster the templates deploy to.
    let mut contexts: Vec<Option<String>> = crate::config::preview::templates(&settings)
        .map(|(t, _)| context(&settings, t, args.cluster.context.as_deref()))
        .collect();
    if contexts.is_empty() {
        contexts.push(args.cluster.context.clone());
    }
    contexts.sort();
    contexts.dedup();
    let opts = crate::apply::Options {
        dry_run: args.dry_run,
        ..apply_options(&args.record_namespace, Some(args.timeout))
    };
    let ask = |n: u64| -> futures::future::BoxFuture<'_, anyhow::Result<Option<String>>> {
        let gh = gh.as_ref();
        Box::pin(async move {
            let Some(gh) = gh else {
                return Ok(Some("open".to_string()));
            };
            Ok(gh
                .pull(n)
                .await
                .with_context(|| format!("cannot read pull request #{n}"))?
                .map(|p| p.state))
        })
    };
    let mut failed = false;
    for context in contexts {
        let access = crate::cluster::Access {
            kubeconfig: args.cluster.kubeconfig.clone(),
            context,
        };
        let client = crate::cluster::connect(&access).await?;
        let found = preview::gc(
            &client,
            &repository,
            gh.is_some().then_some(&ask as preview::PullState<'_>),
            args.older_than,
            &opts,
        )
        .await?;
        for c in &found {
            match (&c.reason, &c.removed) {
                (None, _) => writeln!(out, "{}: kept", c.env)?,
                (Some(why), None) => writeln!(out, "{}: would remove ({why})", c.env)?,
                (Some(why), Some(removed)) => {
                    writeln!(out, "{}: removing ({why})", c.env)?;
                    describe_removed(removed, out)?;
                    failed |= !removed.succeeded();
                }
            }
        }
        if found.is_empty() {
            writeln!(out, "no previews of {repository} in this cluster")?;
        }
    }
    Ok(if failed {
        Outcome::DeployFailed
    } else {
        Outcome::Clean
    })
}
