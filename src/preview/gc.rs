//! Collecting previews: those whose pull request is closed (GitHub says)
//! or that were not deployed for too long, found by their records and by
//! their namespaces' annotations (a preview whose first deploy never
//! finished has no record).

use std::time::Duration;

use anyhow::Context as _;

use crate::apply::Options;
use crate::apply::record::{self, PreviewOf};

use super::{Removed, context, describe_removed, preview_namespaces, remove};

/// Why `gc` removes a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Its pull request is closed (or gone).
    Closed(String),
    /// Not deployed for longer than `--older-than`.
    Stale(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Closed(s) | Reason::Stale(s) => f.write_str(s),
        }
    }
}

/// One preview `gc` looked at.
#[derive(Debug)]
pub struct Collected {
    /// The preview's environment.
    pub env: String,
    /// Why it goes; `None` when it stays.
    pub reason: Option<Reason>,
    /// What removing it did (not set with `dry_run` or when it stays).
    pub removed: Option<Removed>,
}

/// Removes the previews of this repository whose pull request is closed
/// (when `gh` is given, GitHub is asked) or that were last deployed longer than
/// `older_than` ago; `dry_run` only says which.
///
/// # Errors
/// API failures listing records or asking GitHub.
pub async fn gc(
    client: &kube::Client,
    repository: &str,
    gh: Option<&crate::github::GitHub>,
    older_than: Option<Duration>,
    opts: &Options,
) -> anyhow::Result<Vec<Collected>> {
    let now = k8s_openapi::jiff::Timestamp::now();
    // (environment, pull request, when deployed): the records of previews,
    // then namespaces of previews whose first deploy never finished.
    let mut found: Vec<(String, PreviewOf, Option<String>)> = Vec::new();
    for (env, rec) in record::list(client, &opts.record_namespace, opts).await? {
        let Some(of) = rec.preview else { continue };
        if rec.repository.is_empty() || rec.repository == repository {
            found.push((env, of, rec.deployed_at));
        }
    }
    for (_, mark, created) in preview_namespaces(client, repository).await? {
        let Some((template, pr)) = mark.rsplit_once('/') else {
            continue;
        };
        let Ok(pull_request) = pr.parse() else {
            continue;
        };
        let env = crate::config::preview::env_name(template, pull_request);
        if !found.iter().any(|(e, _, _)| *e == env) {
            let of = PreviewOf {
                template: template.to_string(),
                pull_request,
            };
            found.push((env, of, created));
        }
    }
    let mut out = Vec::new();
    for (env, of, deployed_at) in found {
        let of = &of;
        let mut reason = None;
        if let Some(gh) = gh {
            let pull = gh
                .pull(of.pull_request)
                .await
                .with_context(|| format!("cannot read pull request #{}", of.pull_request))?;
            match pull.map(|p| p.state) {
                Some(state) if state == "open" => {}
                Some(state) => {
                    reason = Some(Reason::Closed(format!(
                        "pull request #{} is {state}",
                        of.pull_request
                    )));
                }
                None => {
                    reason = Some(Reason::Closed(format!(
                        "pull request #{} does not exist",
                        of.pull_request
                    )));
                }
            }
        }
        if reason.is_none()
            && let Some(limit) = older_than
        {
            let at: Option<k8s_openapi::jiff::Timestamp> =
                deployed_at.as_deref().and_then(|t| t.parse().ok());
            let age: Option<Duration> = at.and_then(|t| now.duration_since(t).try_into().ok());
            match age {
                Some(age) if age > limit => {
                    reason = Some(Reason::Stale(format!(
                        "last deployed {} ago (--older-than {})",
                        humanize(age.as_secs()),
                        humanize(limit.as_secs())
                    )));
                }
                Some(_) => {}
                None => {
                    reason = Some(Reason::Stale(
                        "its record says not when it was deployed".into(),
                    ));
                }
            }
        }
        let removed = match (&reason, opts.dry_run) {
            (Some(_), false) => Some(remove(client, of, repository, opts).await?),
            _ => None,
        };
        out.push(Collected {
            env,
            reason,
            removed,
        });
    }
    Ok(out)
}

/// [`gc`] on every cluster the templates deploy to (the context given,
/// else each template's), printing what it does; true when every removal
/// succeeded. With `gh`, pull requests are asked about; without, only age
/// counts.
///
/// # Errors
/// Connection, API and GitHub failures.
pub async fn collect(
    settings: &crate::config::Settings,
    access: &crate::cluster::Access,
    repository: &str,
    gh: Option<&crate::github::GitHub>,
    older_than: Option<Duration>,
    opts: &Options,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<bool> {
    let mut contexts: Vec<Option<String>> = crate::config::preview::templates(settings)
        .map(|(t, _)| context(settings, t, access.context.as_deref()))
        .collect();
    if contexts.is_empty() {
        contexts.push(access.context.clone());
    }
    contexts.sort();
    contexts.dedup();
    let mut all_ok = true;
    for context in contexts {
        let access = crate::cluster::Access {
            kubeconfig: access.kubeconfig.clone(),
            context,
        };
        let client = crate::cluster::connect(&access).await?;
        let found = gc(&client, repository, gh, older_than, opts).await?;
        for c in &found {
            match (&c.reason, &c.removed) {
                (None, _) => writeln!(out, "{}: kept", c.env)?,
                (Some(why), None) => writeln!(out, "{}: would remove ({why})", c.env)?,
                (Some(why), Some(removed)) => {
                    writeln!(out, "{}: removing ({why})", c.env)?;
                    describe_removed(removed, out)?;
                    all_ok &= removed.succeeded();
                }
            }
        }
        if found.is_empty() {
            writeln!(out, "no previews of {repository} in this cluster")?;
        }
    }
    Ok(all_ok)
}

fn humanize(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
