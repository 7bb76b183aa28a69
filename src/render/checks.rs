//! Checks across releases: one environment, or environments sharing a
//! cluster, must not produce the same object twice.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::{Release, Rendered};
use crate::config;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::resource::{Resource, ResourceId};

/// Two releases of one environment must not produce the same object.
///
/// `releases` are sorted by environment; each environment is checked on its
/// own, in parallel.
pub(super) fn check_duplicates(releases: &[Rendered]) -> Result<(), Diagnostics> {
    let problems: Vec<Diagnostic> = releases
        .chunk_by(|a, b| a.release.env == b.release.env)
        .collect::<Vec<_>>()
        .into_par_iter()
        .flat_map_iter(duplicates_in_env)
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
    // cluster -> env -> releases
    let mut groups: BTreeMap<Option<&str>, BTreeMap<&str, Vec<&Rendered>>> = BTreeMap::new();
    for r in releases {
        groups
            .entry(context(&r.release.env))
            .or_default()
            .entry(&r.release.env)
            .or_default()
            .push(r);
    }
    let mut problems = Diagnostics::default();
    for (cluster, envs) in groups.into_iter().filter(|(_, e)| e.len() > 1) {
        let mut seen: HashMap<&ResourceId, &Release, foldhash::fast::RandomState> =
            HashMap::default();
        for env in envs.values() {
            let mut first_in_env: HashMap<&ResourceId, &Release, foldhash::fast::RandomState> =
                HashMap::default();
            for r in env {
                for res in &r.resources {
                    match seen.get(&res.id) {
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
                            first_in_env.entry(&res.id).or_insert(&r.release);
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
fn duplicates_in_env(releases: &[Rendered]) -> Vec<Diagnostic> {
    let count = releases.iter().map(|r| r.resources.len()).sum();
    let mut seen: HashMap<&ResourceId, (&Release, &Resource), foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(count, Default::default());
    let mut problems = Vec::new();
    for r in releases {
        for res in &r.resources {
            if let Some((first, first_res)) = seen.get(&res.id) {
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
                seen.insert(&res.id, (&r.release, res));
            }
        }
    }
    problems
}
