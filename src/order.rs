//! Ordering beyond kinds, as kapp's change groups do it: a resource
//! annotated `kdeploy.io/group: db-migrations` belongs to that group; one
//! annotated `kdeploy.io/apply-after: db-migrations[,…]` is applied only
//! after every resource of those groups (and, when one of them carries
//! `kdeploy.io/wait: "true"`, after they are ready). Groups order stages;
//! within a stage the built-in kind order still holds. Namespaces and CRDs
//! always come first. Cycles and unknown groups are errors at plan time.

use std::collections::{BTreeMap, BTreeSet};

use crate::resource::{Resource, ResourceId};

/// The annotation naming a resource's group.
pub const GROUP: &str = "kdeploy.io/group";
/// The annotation naming the groups a resource waits for.
pub const AFTER: &str = "kdeploy.io/apply-after";
/// The annotation asking the next stages to wait until this is ready.
pub const WAIT: &str = "kdeploy.io/wait";
/// Argo CD's sync wave (an integer, default 0): within an app, lower waves
/// are applied first. Read as groups `<app> wave <n>`, each after the
/// app's lower waves; a resource's own `kdeploy.io/group` wins.
pub const ARGO_WAVE: &str = "argocd.argoproj.io/sync-wave";

fn annotation<'a>(r: &'a Resource, key: &str) -> Option<&'a str> {
    r.object["metadata"]["annotations"][key]
        .as_str()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// What ordering reads of an object: its ordering annotations, in an
/// otherwise empty object. [`crate::emit`] keeps this of each object once
/// it is checked and serialized.
pub fn outline(object: &serde_json::Value) -> serde_json::Value {
    // Hooks' annotations too: a hook is in no sync wave.
    let kept: serde_json::Map<String, serde_json::Value> = [
        GROUP,
        AFTER,
        WAIT,
        ARGO_WAVE,
        crate::hooks::HOOK,
        crate::hooks::HELM_HOOK,
        crate::hooks::ARGO_HOOK,
    ]
    .into_iter()
    .filter_map(|k| {
        let v = object["metadata"]["annotations"].get(k)?;
        Some((k.to_string(), v.clone()))
    })
    .collect();
    if kept.is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    serde_json::json!({"metadata": {"annotations": kept}})
}

/// The groups a resource waits for.
fn after(r: &Resource) -> Vec<String> {
    annotation(r, AFTER)
        .map(|v| {
            v.split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// How a stage names its resources that are in no group.
const UNGROUPED: &str = "(ungrouped)";

/// True when the resource asks later stages to wait for its readiness.
pub fn waits(r: &Resource) -> bool {
    annotation(r, WAIT) == Some("true")
}

/// A problem with the ordering annotations of one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file that rendered the resource.
    pub file: String,
    /// What is wrong, in words.
    pub message: String,
    /// True for cycles, which resources of other releases cannot undo; an
    /// unknown group might be declared by a release a plan did not render.
    pub certain: bool,
}

/// The stage of every resource of one environment (0 first), and the
/// groups of each stage for the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stages {
    by_id: BTreeMap<ResourceId, usize>,
    used: bool,
    /// Group names per stage, for a reader (`db-migrations → api`).
    pub groups: Vec<BTreeSet<String>>,
}

impl Stages {
    /// The stage of a resource; 0 when it has none.
    pub fn of(&self, id: &ResourceId) -> usize {
        self.by_id.get(id).copied().unwrap_or(0)
    }

    /// True when any resource uses ordering annotations.
    pub fn is_used(&self) -> bool {
        self.used
    }

    /// The apply order key: Namespaces and CRDs first, then by stage and
    /// the built-in kind order.
    pub fn key(&self, r: &Resource) -> (usize, u8) {
        let rank = crate::resource::kind_rank(&r.id.group, &r.id.kind);
        if rank <= 1 {
            (0, rank)
        } else {
            (self.of(&r.id) + 1, rank)
        }
    }

    /// `db-migrations → api, worker`: the stages, for the plan.
    pub fn describe(&self) -> String {
        self.groups
            .iter()
            .filter(|g| !g.is_empty())
            .map(|g| g.iter().cloned().collect::<Vec<_>>().join(", "))
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

/// Each environment's stages, or the problems that prevent them.
pub type ByEnv<'a> = Vec<(&'a str, Result<Stages, Vec<Problem>>)>;

/// Each environment of a state ordered by its groups (groups are per
/// environment): environments in name order, ordered in parallel.
pub fn stages_by_env(state: &crate::render::State) -> ByEnv<'_> {
    use rayon::prelude::*;
    let mut envs: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for r in &state.releases {
        envs.entry(r.release.env.as_str())
            .or_default()
            .extend(r.resources.iter());
    }
    let envs: Vec<(&str, Vec<&Resource>)> = envs.into_iter().collect();
    envs.par_iter()
        .map(|(env, resources)| (*env, stages(resources)))
        .collect()
}

/// Argo CD sync waves as groups: in each app with a wave other than 0,
/// every resource without a group of its own (hooks aside: they run apart)
/// joins `<app> wave <n>`, after the app's lower waves.
fn sync_waves(
    resources: &[&Resource],
    marks: &mut [(Option<String>, Vec<String>)],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut waves: Vec<Option<i64>> = Vec::with_capacity(resources.len());
    let mut apps: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for (r, (group, _)) in resources.iter().zip(marks.iter()) {
        let joins = group.is_none() && crate::hooks::phase(r).is_none();
        let wave = match annotation(r, ARGO_WAVE) {
            None => 0,
            Some(v) => match v.parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    problems.push(Problem {
                        file: r.origin.file.clone(),
                        message: format!("{}: {ARGO_WAVE} is `{v}`, not an integer", r.id),
                        certain: true,
                    });
                    0
                }
            },
        };
        waves.push(joins.then_some(wave));
        if joins {
            apps.entry(r.origin.app.as_str()).or_default().insert(wave);
        }
    }
    apps.retain(|_, w| w.iter().any(|n| *n != 0));
    for ((r, mark), wave) in resources.iter().zip(marks.iter_mut()).zip(waves) {
        let (Some(wave), Some(all)) = (wave, apps.get(r.origin.app.as_str())) else {
            continue;
        };
        let app = &r.origin.app;
        mark.0 = Some(format!("{app} wave {wave}"));
        mark.1
            .extend(all.range(..wave).map(|w| format!("{app} wave {w}")));
    }
    problems
}

/// Orders one environment's resources by their groups.
///
/// # Errors
/// Every group named in `apply-after` that no resource declares, and every
/// cycle, naming the resources and files involved.
pub fn stages(resources: &[&Resource]) -> Result<Stages, Vec<Problem>> {
    // Each object's annotations are read once: the objects are many and
    // cold in memory, and each read walks three maps.
    let mut marks: Vec<(Option<String>, Vec<String>)> = resources
        .iter()
        .map(|r| (annotation(r, GROUP).map(str::to_string), after(r)))
        .collect();
    let mut problems = sync_waves(resources, &mut marks);
    let mut members: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for (r, (group, _)) in resources.iter().zip(&marks) {
        if let Some(g) = group {
            members.entry(g.clone()).or_default().push(r);
        }
    }
    let mut deps: BTreeMap<String, BTreeSet<String>> = members
        .keys()
        .map(|g| (g.clone(), BTreeSet::new()))
        .collect();
    for (r, (group, after)) in resources.iter().zip(&marks) {
        for dep in after {
            if !members.contains_key(dep) {
                let known: Vec<&str> = members.keys().map(String::as_str).collect();
                problems.push(Problem {
                    file: r.origin.file.clone(),
                    message: format!(
                        "{} waits for group `{dep}` ({AFTER}), but no resource of this environment is in it ({GROUP}: {dep}); groups: {}",
                        r.id,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                    certain: false,
                });
                continue;
            }
            if let Some(g) = group.as_deref() {
                if g == dep {
                    problems.push(Problem {
                        file: r.origin.file.clone(),
                        message: format!(
                            "{} is in group `{g}` and waits for it: a group cannot follow itself",
                            r.id
                        ),
                        certain: true,
                    });
                    continue;
                }
                deps.entry(g.to_string()).or_default().insert(dep.clone());
            }
        }
    }
    // Stages of groups by depth, finding cycles on the way.
    let mut stage: BTreeMap<String, usize> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    fn visit(
        g: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        stage: &mut BTreeMap<String, usize>,
        path: &mut Vec<String>,
    ) -> Result<usize, Vec<String>> {
        if let Some(s) = stage.get(g) {
            return Ok(*s);
        }
        if let Some(i) = path.iter().position(|p| p == g) {
            let mut cycle = path[i..].to_vec();
            cycle.push(g.to_string());
            return Err(cycle);
        }
        path.push(g.to_string());
        let mut s = 0;
        for d in deps.get(g).into_iter().flatten() {
            s = s.max(visit(d, deps, stage, path)? + 1);
        }
        path.pop();
        stage.insert(g.to_string(), s);
        Ok(s)
    }
    for g in deps.keys() {
        if let Err(cycle) = visit(g, &deps, &mut stage, &mut Vec::new()) {
            let key: BTreeSet<String> = cycle.iter().cloned().collect();
            if reported.insert(key) {
                let file = members
                    .get(&cycle[0])
                    .and_then(|m| m.first())
                    .map(|r| r.origin.file.clone())
                    .unwrap_or_default();
                problems.push(Problem {
                    file,
                    message: format!(
                        "the groups wait for each other in a cycle: {} ({AFTER}); no order can satisfy it",
                        cycle.join(" → ")
                    ),
                    certain: true,
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut out = Stages::default();
    for (r, (group, after)) in resources.iter().zip(&marks) {
        let group = group.as_deref();
        let s = match group {
            Some(g) => stage.get(g).copied().unwrap_or(0),
            // An ungrouped resource with apply-after comes after its groups.
            None => after
                .iter()
                .filter_map(|d| stage.get(d))
                .map(|s| s + 1)
                .max()
                .unwrap_or(0),
        };
        out.used |= group.is_some() || !after.is_empty();
        // `of` answers 0 for a resource not kept: most are in stage 0.
        if s > 0 {
            out.by_id.insert(r.id.clone(), s);
        }
        if out.groups.len() <= s {
            out.groups.resize(s + 1, BTreeSet::new());
        }
        // Namespaces and CRDs always go first: not a stage of their own.
        let first = crate::resource::kind_rank(&r.id.group, &r.id.kind) <= 1;
        let name = match group {
            Some(g) => g,
            None if !first => UNGROUPED,
            None => continue,
        };
        if !out.groups[s].contains(name) {
            out.groups[s].insert(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, kind: &str, annotations: serde_json::Value) -> Resource {
        Resource::for_tests(
            serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "ns", "annotations": annotations}}),
        )
    }

    #[test]
    fn argo_cd_sync_waves_order_an_apps_resources() {
        let wave = |name: &str, w: Option<&str>| {
            res(
                name,
                "ConfigMap",
                match w {
                    Some(w) => serde_json::json!({ARGO_WAVE: w}),
                    None => serde_json::json!({}),
                },
            )
        };
        let early = wave("early", Some("-1"));
        let plain = wave("plain", None);
        let late = wave("late", Some("5"));
        let mut other = wave("other", Some("2"));
        other.origin.app = "other".into();
        let stages = stages(&[&late, &plain, &early, &other]).expect("orders");
        assert!(stages.of(&early.id) < stages.of(&plain.id));
        assert!(stages.of(&plain.id) < stages.of(&late.id));
        // Waves are per app: another app's only wave waits for nothing.
        assert_eq!(stages.of(&other.id), 0);
        assert!(
            stages.describe().contains("app wave -1"),
            "{}",
            stages.describe()
        );
        // An explicit group wins; a hook is in no wave.
        let grouped = res(
            "g",
            "ConfigMap",
            serde_json::json!({ARGO_WAVE: "-3", GROUP: "db"}),
        );
        let stages = stages_of(&[&grouped, &plain, &late]);
        assert_eq!(stages.of(&grouped.id), 0);
        let bad = wave("bad", Some("soon"));
        let err = super::stages(&[&bad]).expect_err("not an integer");
        assert!(err[0].message.contains("`soon`, not an integer"), "{err:?}");
    }

    fn stages_of(resources: &[&Resource]) -> Stages {
        stages(resources).expect("orders")
    }

    #[test]
    fn groups_make_stages_across_the_kind_order() {
        let migrate = res("migrate", "Pod", serde_json::json!({GROUP: "db"}));
        let config = res("config", "ConfigMap", serde_json::json!({AFTER: "db"}));
        let plain = res("plain", "Service", serde_json::json!({}));
        let all = [&migrate, &config, &plain];
        let stages = stages(&all).unwrap();
        assert!(stages.is_used());
        // A ConfigMap (rank 7) after a Pod (rank 10) because of its group.
        assert!(stages.key(&config) > stages.key(&migrate));
        assert!(stages.key(&plain) < stages.key(&migrate));
        assert_eq!(stages.describe(), "(ungrouped), db → (ungrouped)");
    }

    #[test]
    fn cycles_and_unknown_groups_are_named() {
        let a = res("a", "Pod", serde_json::json!({GROUP: "a", AFTER: "b"}));
        let b = res("b", "Pod", serde_json::json!({GROUP: "b", AFTER: "a"}));
        let c = res("c", "Pod", serde_json::json!({AFTER: "nope"}));
        let problems = stages(&[&a, &b, &c]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| !p.certain && p.message.contains("waits for group `nope`"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.certain && p.message.contains("a → b → a"))
        );
        let own = res("own", "Pod", serde_json::json!({GROUP: "x", AFTER: "x"}));
        assert!(
            stages(&[&own]).unwrap_err()[0]
                .message
                .contains("cannot follow itself")
        );
    }
}
