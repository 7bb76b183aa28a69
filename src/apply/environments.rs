//! Deploying several environments: each to its cluster (one client per
//! kubeconfig context), a summary per environment, and environments that
//! only a deploy record still knows.

use std::collections::{BTreeSet, HashMap};

use crate::resource::Resource;

use super::*;

/// The resources of one environment of a state, of the apps in scope.
fn of_env<'s>(
    state: &'s crate::render::State,
    env: &str,
    in_scope: &dyn Fn(&str) -> bool,
) -> Vec<&'s Resource> {
    state
        .releases
        .iter()
        .filter(|r| r.release.env == env && in_scope(&r.release.app))
        .flat_map(|r| r.resources.iter())
        .collect()
}

/// Deploys every environment of `head` (and of `base`, so an environment
/// whose apps were all removed is pruned), handing each environment's
/// report to `on_report` as it finishes.
///
/// # Errors
/// The first environment that cannot start (see [`Error`]).
#[allow(clippy::too_many_arguments)]
pub async fn apply_states(
    client: &kube::Client,
    head: &crate::render::State,
    base: Option<&crate::render::State>,
    filter: &crate::config::Filter,
    repository: &str,
    head_commit: &str,
    opts: &Options,
    on_report: &mut dyn FnMut(&Report) -> std::io::Result<()>,
) -> anyhow::Result<Vec<Report>> {
    let mut envs: BTreeSet<&str> = head
        .releases
        .iter()
        .map(|r| r.release.env.as_str())
        .collect();
    if let Some(b) = base {
        envs.extend(b.releases.iter().map(|r| r.release.env.as_str()));
    }
    let mut reports = Vec::new();
    for env in envs.into_iter().filter(|e| filter.matches_env(e)) {
        let in_scope = |app: &str| filter.matches(env, app);
        let target = Target {
            env: env.to_string(),
            repository: repository.to_string(),
            head_commit: head_commit.to_string(),
            head: of_env(head, env, &in_scope),
            base: base.map(|b| {
                (
                    b.commit.map_or_else(|| b.label.clone(), |c| c.to_string()),
                    of_env(b, env, &in_scope),
                )
            }),
            in_scope: &in_scope,
            preview: None,
        };
        let report = apply(client, &target, opts).await?;
        on_report(&report)?;
        reports.push(report);
    }
    Ok(reports)
}

/// Deploys every selected environment of `head` (and of `base`) to its
/// cluster: the context of `access`, else the environment's `context` in
/// kdeploy.yaml, else the kubeconfig's current context. One client per
/// distinct context.
///
/// # Errors
/// A cluster that cannot be reached, or an environment that cannot start.
#[allow(clippy::too_many_arguments)]
pub async fn deploy_environments(
    access: &crate::cluster::Access,
    head: &crate::render::State,
    base: Option<&crate::render::State>,
    env_glob: Option<&str>,
    app_glob: Option<&str>,
    repository: &str,
    head_commit: &str,
    opts: &Options,
    on_report: &mut dyn FnMut(&Report) -> std::io::Result<()>,
    reports: &mut Vec<Report>,
) -> anyhow::Result<()> {
    // A record namespace the runner chose is as reserved as the default:
    // checked before anything is sent.
    let reserved = crate::diag::Diagnostics(
        head.releases
            .iter()
            .flat_map(|r| {
                r.resources.iter().filter_map(move |res| {
                    crate::validate::reserved(res, r, &opts.record_namespace)
                })
            })
            .collect(),
    );
    if !reserved.0.is_empty() {
        return Err(reserved.into());
    }
    let selected = crate::config::Filter::new(env_glob, app_glob)?;
    let mut envs: BTreeSet<String> = head
        .releases
        .iter()
        .map(|r| r.release.env.clone())
        .collect();
    if let Some(b) = base {
        envs.extend(b.releases.iter().map(|r| r.release.env.clone()));
    }
    let mut clients: HashMap<Option<String>, kube::Client> = HashMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    // Per cluster, the other environments' records its deploys listed.
    let mut listed: HashMap<Option<String>, Vec<(String, String, bool)>> = HashMap::new();
    let access_to = |context: Option<String>| crate::cluster::Access {
        kubeconfig: access.kubeconfig.clone(),
        context,
    };
    for env in envs.into_iter().filter(|e| selected.matches_env(e)) {
        let context = access.context.clone().or_else(|| {
            head.settings
                .environments
                .get(&env)
                .and_then(|e| e.context.clone())
        });
        let client = match clients.get(&context) {
            Some(c) => c.clone(),
            None => {
                let c = crate::cluster::connect(&access_to(context.clone())).await?;
                clients.insert(context.clone(), c.clone());
                c
            }
        };
        let env_filter = crate::config::Filter::new(Some(&env), app_glob)?;
        let deployed = apply_states(
            &client,
            head,
            base,
            &env_filter,
            repository,
            head_commit,
            opts,
            on_report,
        )
        .await?;
        // Only a deploy that ran listed the records.
        if !deployed.is_empty() {
            let seen = listed.entry(context).or_default();
            for other in deployed.iter().flat_map(|r| &r.other_records) {
                if !seen.contains(other) {
                    seen.push(other.clone());
                }
            }
        }
        reports.extend(deployed);
        done.insert(env);
    }
    // An environment whose last app was removed before any base shows it
    // is known only to its deploy record: prune it too, on the cluster
    // where that record is.
    if clients.is_empty() {
        let c = crate::cluster::connect(&access_to(access.context.clone())).await?;
        clients.insert(access.context.clone(), c);
    }
    for (context, client) in &clients {
        // The records this run's deploys listed on this cluster, else one
        // LIST now.
        let seen: Vec<(String, String, bool)> = match listed.get(context) {
            Some(seen) => seen.clone(),
            None => record::list(client, &opts.record_namespace, opts)
                .await?
                .into_iter()
                .map(|(env, r)| (env, r.repository, r.preview.is_some()))
                .collect(),
        };
        for (env, rec_repository, preview) in seen {
            let ours =
                rec_repository.is_empty() || record::same_repository(&rec_repository, repository);
            // A preview is not in the config repo by name; its pull
            // request's closing removes it (`kdeploy preview`).
            if done.contains(&env) || !ours || !selected.matches_env(&env) || preview {
                continue;
            }
            let in_scope = |app: &str| selected.matches(&env, app);
            let target = Target {
                env: env.clone(),
                repository: repository.to_string(),
                head_commit: head_commit.to_string(),
                head: Vec::new(),
                base: None,
                in_scope: &in_scope,
                preview: None,
            };
            let mut report = apply(client, &target, opts).await?;
            report.retired = true;
            on_report(&report)?;
            // Nothing left to own: the record goes too.
            if report.succeeded() && !opts.dry_run {
                let left = record::read(client, &opts.record_namespace, &env).await?;
                if left.is_some_and(|r| r.entries.is_empty()) {
                    record::delete(client, &opts.record_namespace, &env, opts).await?;
                }
            }
            done.insert(env);
            reports.push(report);
        }
    }
    Ok(())
}
