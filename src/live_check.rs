//! A plan checked against the cluster (a three-way plan): for each planned
//! create or update, the live object is read and the head object sent as a
//! server-side apply dry run, as the deploy would send it. What the API
//! server refuses (an immutable field, an admission denial, a quota, a kind
//! it does not serve) becomes the change's refusal; fields the apply would
//! set back from someone else's live value become its drift
//! ([`crate::plan::live`]). Only reads and dry runs: nothing is written.
//!
//! Which cluster an environment's plan reads is the runner's choice (its
//! kubeconfig and `--context`) or the base revision's `environments.<env>.
//! context`, never the pull request's: a head could point its plan at
//! another cluster of the runner's kubeconfig.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::apply::{FIELD_MANAGER, Kinds, Options, api_for, api_message, with_retry};
use crate::plan::live::{Drift, Environment, Finding, Live};
use crate::plan::{Action, Plan};
use crate::render::Comparison;
use crate::resource::{Resource, ResourceId};

/// How to reach each environment's cluster.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The kubeconfig (a path, or its text), else the usual places.
    pub kubeconfig: Option<String>,
    /// The runner's context for every environment (`--context`).
    pub context: Option<String>,
    /// Each environment's context, from settings the runner trusts (the
    /// base revision's kdeploy.yaml).
    pub contexts: BTreeMap<String, String>,
}

impl Request {
    fn context_of(&self, env: &str) -> Option<String> {
        self.context
            .clone()
            .or_else(|| self.contexts.get(env).cloned())
    }
}

/// A planned create or update: its action, head object and base object.
type Planned<'a> = (Action, &'a Resource, Option<&'a Resource>);

/// One planned create or update, ready to be checked.
struct Job<'a> {
    env: &'a str,
    action: Action,
    head: &'a Resource,
    base: Option<&'a Resource>,
    api: Api<DynamicObject>,
}

/// Checks `plan` against the cluster of each environment it changes and
/// records what was found in `plan.live`. An environment that cannot be
/// reached is marked so (with the reason), never an error: the plan stays
/// what it is without the cluster.
pub async fn check(plan: &mut Plan, cmp: &Comparison, req: &Request, opts: &Options) {
    let (heads, bases) = (cmp.head.index(), cmp.base.index());
    let mut by_env: BTreeMap<&str, Vec<Planned<'_>>> = BTreeMap::new();
    for c in plan.changes.iter().filter(|c| c.action != Action::Deleted) {
        let key = (c.env.clone(), c.id.clone());
        if let Some(head) = heads.get(&key) {
            by_env.entry(c.env.as_str()).or_default().push((
                c.action,
                head,
                bases.get(&key).copied(),
            ));
        }
    }
    let mut live = Live {
        not_checked: None,
        environments: BTreeMap::new(),
        findings: BTreeMap::new(),
    };
    let mut clients: BTreeMap<Option<String>, Result<kube::Client, String>> = BTreeMap::new();
    for (env, changes) in by_env {
        let context = req.context_of(env);
        if !clients.contains_key(&context) {
            let access = crate::cluster::Access {
                kubeconfig: req.kubeconfig.clone(),
                context: context.clone(),
            };
            let client = crate::cluster::connect(&access)
                .await
                .map_err(|e| e.to_string());
            clients.insert(context.clone(), client);
        }
        let mut seen = Environment {
            context: context.clone().unwrap_or_else(|| "(current)".into()),
            checked: 0,
            skipped: Vec::new(),
            unavailable: None,
        };
        match &clients[&context] {
            Err(e) => seen.unavailable = Some(e.clone()),
            Ok(client) => {
                let head_env: Vec<&Resource> = cmp
                    .head
                    .releases
                    .iter()
                    .filter(|r| r.release.env == env)
                    .flat_map(|r| r.resources.iter())
                    .collect();
                if let Err(why) = environment(
                    client,
                    env,
                    &changes,
                    &head_env,
                    opts,
                    &mut seen,
                    &mut live.findings,
                )
                .await
                {
                    seen.unavailable = Some(why);
                }
            }
        }
        live.environments.insert(env.to_string(), seen);
    }
    plan.live = live;
}

/// Checks one environment's changes; `Err` when the cluster could not be
/// read at all.
async fn environment(
    client: &kube::Client,
    env: &str,
    changes: &[Planned<'_>],
    head_env: &[&Resource],
    opts: &Options,
    seen: &mut Environment,
    findings: &mut BTreeMap<(String, ResourceId), Finding>,
) -> Result<(), String> {
    let mut kinds = Kinds::new(client.clone());
    let wanted: BTreeSet<&str> = changes
        .iter()
        .filter_map(|(_, r, _)| r.id.namespace.as_deref())
        .collect();
    let wanted: Vec<&str> = wanted.into_iter().collect();
    let present = crate::apply::present_namespaces(client, &wanted, opts)
        .await
        .map_err(|e| e.to_string())?;
    let creates_namespace = |ns: &str| {
        head_env
            .iter()
            .any(|r| r.id.group.is_empty() && r.id.kind == "Namespace" && r.id.name == ns)
    };
    let defines = |r: &Resource| {
        head_env.iter().any(|c| {
            c.id.kind == "CustomResourceDefinition"
                && c.object["spec"]["group"] == r.id.group.as_str()
                && c.object["spec"]["names"]["kind"] == r.id.kind.as_str()
        })
    };
    let mut jobs = Vec::new();
    for (action, head, base) in changes {
        let key = (env.to_string(), head.id.clone());
        let (ar, caps) = match kinds.resolve(&head.api_version, &head.id.kind, opts).await {
            Ok(Some(found)) => found,
            Ok(None) if defines(head) => {
                seen.skipped
                    .push(format!("{}: its CRD is created by this deploy", head.id));
                continue;
            }
            Ok(None) => {
                findings.insert(
                    key,
                    Finding {
                        refused: Some(format!(
                            "the cluster does not serve {} {} (a removed API version, or a CRD that is not installed)",
                            head.api_version, head.id.kind
                        )),
                        ..Finding::default()
                    },
                );
                seen.checked += 1;
                continue;
            }
            Err(e) => return Err(api_message(&e)),
        };
        if let Some(ns) = head.id.namespace.as_deref()
            && !present.contains(ns)
        {
            if creates_namespace(ns) || opts.create_namespace {
                seen.skipped.push(format!(
                    "{}: its namespace {ns} is created by this deploy",
                    head.id
                ));
            } else {
                findings.insert(
                    key,
                    Finding {
                        refused: Some(format!(
                            "namespace {ns} does not exist, and this deploy does not create it"
                        )),
                        ..Finding::default()
                    },
                );
                seen.checked += 1;
            }
            continue;
        }
        jobs.push(Job {
            env,
            action: *action,
            head,
            base: *base,
            api: api_for(client, &ar, &caps, head.id.namespace.as_deref()),
        });
    }
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if opts.force_conflicts {
        params = params.force();
    }
    params.dry_run = true;
    let params = &params;
    type Checked = (String, ResourceId, Result<(Finding, bool), String>);
    let results: Vec<Checked> = futures::stream::iter(jobs)
        .map(|job| async move {
            let found = one(&job, params, opts).await;
            (job.env.to_string(), job.head.id.clone(), found)
        })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut read_only = 0;
    for (env, id, found) in results {
        match found {
            Ok((f, dry_run)) => {
                seen.checked += 1;
                read_only += usize::from(!dry_run);
                findings.insert((env, id), f);
            }
            Err(why) => seen.skipped.push(format!("{id}: {why}")),
        }
    }
    if read_only > 0 {
        seen.skipped.push(format!(
            "{read_only} resource(s) not dry-run: the plan's credentials may not patch them (read-only), so refusals were not checked; drift was read from the live objects"
        ));
    }
    Ok(())
}

/// One change: the live object, the dry run, and what differs.
/// The finding, and false when RBAC refused the dry run itself.
async fn one(
    job: &Job<'_>,
    params: &PatchParams,
    opts: &Options,
) -> Result<(Finding, bool), String> {
    let id = &job.head.id;
    let live = match with_retry(opts, || job.api.get_opt(&id.name)).await {
        Ok(found) => found.map(|l| serde_json::to_value(l).unwrap_or(Value::Null)),
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(format!("could not be read: {}", api_message(&e))),
    };
    let obj: DynamicObject =
        serde_json::from_value(job.head.object.clone()).map_err(|e| e.to_string())?;
    let patch = Patch::Apply(&obj);
    let would = match with_retry(opts, || job.api.patch(&id.name, params, &patch)).await {
        Ok(w) => serde_json::to_value(w).unwrap_or(Value::Null),
        // Read-only credentials: RBAC refuses the dry run itself. Not a
        // refusal of the change; drift from the live object overlaid with
        // the head's (what an apply sets, lists replaced whole).
        Err(kube::Error::Api(s))
            if s.code == 403 && s.message.contains(" cannot patch resource") =>
        {
            let Some(live) = live else {
                return Ok((
                    Finding {
                        missing: job.action == Action::Changed,
                        ..Finding::default()
                    },
                    false,
                ));
            };
            let mut would = live.clone();
            overlay(&mut would, &job.head.object);
            return Ok((
                Finding {
                    drift: drift(&live, &would, job.base.map(|b| &b.object), id),
                    ..Finding::default()
                },
                false,
            ));
        }
        Err(kube::Error::Api(s)) => {
            if s.code == 422
                && s.message.contains("immutable")
                && crate::apply::replace::wants_replace(job.head)
            {
                // The deploy deletes and re-creates it: not a refusal.
                return Ok((Finding::default(), true));
            }
            return Ok((
                Finding {
                    refused: Some(s.message),
                    ..Finding::default()
                },
                true,
            ));
        }
        Err(e) => return Err(format!("dry run failed: {}", api_message(&e))),
    };
    let Some(live) = live else {
        return Ok((
            Finding {
                missing: job.action == Action::Changed,
                ..Finding::default()
            },
            true,
        ));
    };
    Ok((
        Finding {
            drift: drift(&live, &would, job.base.map(|b| &b.object), id),
            ..Finding::default()
        },
        true,
    ))
}

/// The fields the apply sets back: where the live value differs from the
/// dry run's, and is neither what kdeploy set last (`base`: then only the
/// git change moves it) nor unowned (a default, a webhook's mutation of
/// kdeploy's own request) — unless kdeploy set it and it is gone.
fn drift(live: &Value, would: &Value, base: Option<&Value>, id: &ResourceId) -> Vec<Drift> {
    let (a, b) = (
        crate::apply::live::strip(live.clone()),
        crate::apply::live::strip(would.clone()),
    );
    let mut diffs = Vec::new();
    crate::drift::differing(&a, &b, base, String::new(), &mut diffs);
    let secret = id.kind == "Secret" && id.group.is_empty();
    let show = |v: &Value| {
        if secret && !v.is_null() {
            "(value not shown)".to_string()
        } else {
            crate::yaml::show(v)
        }
    };
    diffs
        .into_iter()
        .filter_map(|(path, live_v, would_v, base_v)| {
            if base_v.as_ref() == Some(&live_v) {
                return None;
            }
            let managers = crate::drift::managers_of(live, std::slice::from_ref(&path));
            let removed = live_v.is_null() && base_v.as_ref() == Some(&would_v);
            (!managers.is_empty() || removed).then(|| Drift {
                live: show(&live_v),
                planned: show(&would_v),
                path,
                managers,
            })
        })
        .collect()
}

/// `top` merged into `base`: maps key by key, anything else replaced.
fn overlay(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                overlay(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, t) => *b = t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> ResourceId {
        ResourceId {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "api".into(),
        }
    }

    #[test]
    fn drift_is_another_managers_value_or_a_removed_field_never_the_git_change() {
        let live = json!({
            "metadata": {"name": "api", "labels": {"team": "a"}, "managedFields": [
                {"manager": "kdeploy", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
                {"manager": "kubectl-scale", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            ]},
            "spec": {"replicas": 7, "template": {"image": "api:1", "paused": true}}
        });
        let base = json!({"metadata": {"name": "api", "labels": {"team": "a", "tier": "web"}},
            "spec": {"replicas": 2, "template": {"image": "api:1"}}});
        let would = json!({"metadata": {"name": "api", "labels": {"team": "a", "tier": "web"}},
            "spec": {"replicas": 3, "template": {"image": "api:2", "paused": true}}});
        let found = drift(&live, &would, Some(&base), &id());
        let paths: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|d| (d.path.as_str(), d.live.as_str(), d.planned.as_str()))
            .collect();
        // replicas: kubectl-scale's 7, set back to 3; the label kdeploy
        // set was removed; the image is the git change (live = base).
        assert_eq!(
            paths,
            [
                ("metadata.labels.tier", "(unset)", "web"),
                ("spec.replicas", "7", "3")
            ]
        );
        assert_eq!(found[1].managers, ["kubectl-scale (Update)"]);
    }

    #[test]
    fn a_changed_field_nobody_else_owns_is_not_drift() {
        // A webhook rewrote kdeploy's image, or main moved since the base:
        // kdeploy still owns the field.
        let live = json!({"metadata": {"managedFields": [
            {"manager": "kdeploy", "operation": "Apply", "fieldsV1": {"f:spec": {"f:image": {}}}}]},
            "spec": {"image": "api@sha256:1"}});
        let base = json!({"spec": {"image": "api:1"}});
        let would = json!({"spec": {"image": "api:2"}});
        assert!(drift(&live, &would, Some(&base), &id()).is_empty());
    }
}
