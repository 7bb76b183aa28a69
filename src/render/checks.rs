//! Checks across releases: one environment, or environments sharing a
//! cluster, must not produce the same object twice.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::{Release, Rendered};
use crate::config;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::resource::{HashedId, Resource};

/// A map keyed by ids hashed once ([`HashedId`]).
type ById<'a, V> = HashMap<HashedId<'a>, V, foldhash::fast::RandomState>;

/// The hashed ids of each release's resources, in order, hashed in parallel
/// (the plan's index uses them too).
pub fn hashed_ids<'a>(releases: &[&'a Rendered]) -> Vec<Vec<HashedId<'a>>> {
    releases
        .par_iter()
        .map(|r| {
            r.resources
                .iter()
                .map(|res| HashedId::new(&res.id))
                .collect()
        })
        .collect()
}

/// Two releases of one environment must not produce the same object.
///
/// `releases` are sorted by environment; each environment is checked on its
/// own, in parallel.
pub(super) fn check_duplicates(releases: &[Rendered]) -> Result<(), Diagnostics> {
    let ids = hashed_ids(&releases.iter().collect::<Vec<_>>());
    let mut envs = Vec::new();
    let mut start = 0;
    for chunk in releases.chunk_by(|a, b| a.release.env == b.release.env) {
        envs.push(start..start + chunk.len());
        start += chunk.len();
    }
    let problems: Vec<Diagnostic> = envs
        .into_par_iter()
        .flat_map_iter(|range| duplicates_in_env(&releases[range.clone()], &ids[range]))
        .collect();
    Diagnostics(problems).into_result(())
}

/// Environments that deploy to the same cluster must not produce the same
/// object: the later deploy would overwrite the earlier one, and removing it
/// from one environment would delete the other's. Environments share a
/// cluster when kdeploy.yaml gives them the same `context`, or none.
pub(super) fn check_shared_clusters<'a>(
    releases: impl IntoIterator<Item = &'a Rendered>,
    settings: &config::Settings,
) -> Result<(), Diagnostics> {
    let context = |env: &str| {
        settings
            .environments
            .get(env)
            .and_then(|e| e.context.as_deref())
    };
    let releases: Vec<&Rendered> = releases.into_iter().collect();
    // cluster -> env -> releases (by index)
    let mut groups: BTreeMap<Option<&str>, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
    for (i, r) in releases.iter().enumerate() {
        groups
            .entry(context(&r.release.env))
            .or_default()
            .entry(&r.release.env)
            .or_default()
            .push(i);
    }
    if groups.values().all(|envs| envs.len() < 2) {
        return Ok(());
    }
    let ids = hashed_ids(&releases);
    let mut problems = Diagnostics::default();
    for (cluster, envs) in groups.into_iter().filter(|(_, e)| e.len() > 1) {
        let mut seen: ById<'_, &Release> = HashMap::default();
        for env in envs.values() {
            let mut first_in_env: ById<'_, &Release> = HashMap::default();
            for &i in env {
                let r = releases[i];
                for (res, key) in r.resources.iter().zip(&ids[i]) {
                    match seen.get(key) {
                        Some(other) if other.env != r.release.env => {
                            let why = match cluster {
                                Some(c) => format!("both use the kubeconfig context `{c}`"),
                                None => "kdeploy.yaml sets no `context` for either".to_string(),
                            };
                            problems.push(
                                Diagnostic::new(
                                    Location::file(&r.release.dir),
                                    format!(
                                        "{} is produced by environments {} ({}) and {} ({}), which deploy to the same cluster ({why}): one would overwrite the other, and removing it from one would delete it from both",
                                        res.id, other.env, other.dir, r.release.env, r.release.dir
                                    ),
                                )
                                .help("give each environment its own namespaces: `namespace: \"{app}-{env}\"` in kdeploy.yaml (the default), or another `namespace:` per environment; if they are separate clusters, set `environments.<env>.context` for each"),
                            );
                        }
                        _ => {
                            first_in_env.entry(*key).or_insert(&r.release);
                        }
                    }
                }
            }
            seen.extend(first_in_env);
        }
    }
    problems.into_result(())
}

/// The duplicate resources among the releases of one environment.
fn duplicates_in_env<'a>(releases: &'a [Rendered], ids: &[Vec<HashedId<'a>>]) -> Vec<Diagnostic> {
    let count = releases.iter().map(|r| r.resources.len()).sum();
    let mut seen: ById<'a, (&Release, &Resource)> =
        HashMap::with_capacity_and_hasher(count, Default::default());
    let mut problems = Vec::new();
    for (r, keys) in releases.iter().zip(ids) {
        for (res, key) in r.resources.iter().zip(keys) {
            if let Some((first, first_res)) = seen.get(key) {
                problems.push(
                    Diagnostic::new(
                        Location::file(&r.release.dir),
                        format!(
                            "{} in environment {} is produced twice: by {} ({}) and by {} ({})",
                            res.id,
                            r.release.env,
                            first.dir,
                            first_res.origin.file,
                            r.release.dir,
                            res.origin.file
                        ),
                    )
                    .help("give one of them another name or namespace"),
                );
            } else {
                seen.insert(*key, (&r.release, res));
            }
        }
    }
    problems
}
