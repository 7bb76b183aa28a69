//! Policy checks in every plan: built-in best practices of the kube-score
//! and Polaris class, run on each resource a plan creates or changes, with
//! what the rest of its environment has (a Service's pods, a workload's
//! PodDisruptionBudget). Each finding has an id, the reason and the fix;
//! it becomes a warning of the change (`policy/<id>`), so every plan format
//! shows it.
//!
//! Severity is runner policy, never the repository's: `KDEPLOY_POLICY`
//! (the action's input `policy`) turns a check `off`, or makes it an
//! `error`, which fails the plan. A pull request cannot turn its own
//! checks off.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resource::Resource;

pub mod rego;
pub mod vap;

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Not checked.
    Off,
    /// Shown in the plan.
    Warning,
    /// Shown, and fails the plan.
    Error,
}

/// One built-in check.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// `latest-tag`.
    pub id: &'static str,
    /// The plan warning's code: `policy/latest-tag`.
    pub code: &'static str,
    /// Its weight when the runner says nothing.
    pub default: Severity,
    /// What to do about it.
    pub fix: &'static str,
}

/// Every built-in check.
pub const CHECKS: &[Check] = &[
    Check {
        id: "latest-tag",
        code: "policy/latest-tag",
        default: Severity::Warning,
        fix: "pin the image to a version tag or a digest (`kdeploy lock`)",
    },
    Check {
        id: "no-resources",
        code: "policy/no-resources",
        default: Severity::Warning,
        fix: "set resources.requests (cpu, memory) and resources.limits.memory on each container",
    },
    Check {
        id: "no-readiness-probe",
        code: "policy/no-readiness-probe",
        default: Severity::Warning,
        fix: "add a readinessProbe so traffic waits until the container can serve",
    },
    Check {
        id: "privileged",
        code: "policy/privileged",
        default: Severity::Error,
        fix: "drop securityContext.privileged (and allowPrivilegeEscalation); grant only the capabilities needed",
    },
    Check {
        id: "run-as-root",
        code: "policy/run-as-root",
        default: Severity::Warning,
        fix: "run as a non-root user: securityContext.runAsNonRoot: true and a runAsUser other than 0",
    },
    Check {
        id: "host-namespace",
        code: "policy/host-namespace",
        default: Severity::Error,
        fix: "remove hostNetwork, hostPID and hostIPC",
    },
    Check {
        id: "host-path",
        code: "policy/host-path",
        default: Severity::Warning,
        fix: "use a PersistentVolumeClaim, a ConfigMap or an emptyDir instead of a hostPath volume",
    },
    Check {
        id: "no-pdb",
        code: "policy/no-pdb",
        default: Severity::Warning,
        fix: "add a PodDisruptionBudget selecting the workload's pods, so node drains keep some of them",
    },
    Check {
        id: "service-selects-nothing",
        code: "policy/service-selects-nothing",
        default: Severity::Warning,
        fix: "make the Service's selector match the labels of a pod template in its namespace",
    },
];

/// The runner's severities: `latest-tag=error,no-pdb=off`.
///
/// # Errors
/// An unknown check or severity, named.
pub fn severities(text: &str) -> Result<BTreeMap<&'static str, Severity>, String> {
    let mut out: BTreeMap<&'static str, Severity> =
        CHECKS.iter().map(|c| (c.id, c.default)).collect();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, level) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not check=off|warning|error"))?;
        let check = CHECKS.iter().find(|c| c.id == id.trim()).ok_or_else(|| {
            format!(
                "`{}` is not a check; checks: {}",
                id.trim(),
                CHECKS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
            )
        })?;
        let level = match level.trim() {
            "off" => Severity::Off,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            other => {
                return Err(format!(
                    "`{other}` is not off, warning or error (check {})",
                    check.id
                ));
            }
        };
        out.insert(check.id, level);
    }
    Ok(out)
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check.
    pub id: &'static str,
    /// Its weight.
    pub severity: Severity,
    /// What is wrong, with where (`containers[0] api`).
    pub message: String,
}

/// What the checks see of an environment besides the resource: its pod
/// templates' labels and its PodDisruptionBudgets' selectors, per namespace.
#[derive(Debug, Default)]
pub struct Environment<'a> {
    templates: BTreeMap<&'a str, Vec<&'a serde_json::Map<String, Value>>>,
    budgets: BTreeMap<&'a str, Vec<&'a serde_json::Map<String, Value>>>,
}

impl<'a> Environment<'a> {
    /// Indexes `resources` (one environment's).
    pub fn of(resources: impl IntoIterator<Item = &'a Resource>) -> Environment<'a> {
        let mut env = Environment::default();
        for r in resources {
            let ns = r.id.namespace.as_deref().unwrap_or_default();
            if let Some(p) = pod_spec_pointer(r) {
                let labels_at = p.trim_end_matches("/spec").to_string() + "/metadata/labels";
                if let Some(Value::Object(l)) = r.object.pointer(&labels_at) {
                    env.templates.entry(ns).or_default().push(l);
                }
            }
            if r.id.group == "policy"
                && r.id.kind == "PodDisruptionBudget"
                && let Some(Value::Object(m)) = r.object.pointer("/spec/selector/matchLabels")
            {
                env.budgets.entry(ns).or_default().push(m);
            }
        }
        env
    }
}

fn pod_spec_pointer(r: &Resource) -> Option<&'static str> {
    crate::images::POD_SPECS
        .iter()
        .find(|(g, k, _)| *g == r.id.group && *k == r.id.kind)
        .map(|(_, _, p)| *p)
}

fn matches(
    selector: &serde_json::Map<String, Value>,
    labels: &serde_json::Map<String, Value>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The findings of one resource, at the runner's `severities`.
pub fn check(
    r: &Resource,
    env: &Environment<'_>,
    severities: &BTreeMap<&'static str, Severity>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |id: &'static str, message: String| {
        let severity = severities.get(id).copied().unwrap_or(Severity::Warning);
        if severity != Severity::Off {
            out.push(Finding {
                id,
                severity,
                message,
            });
        }
    };
    let ns = r.id.namespace.as_deref().unwrap_or_default();
    if let Some(pointer) = pod_spec_pointer(r)
        && let Some(spec) = r.object.pointer(pointer)
    {
        pod_checks(r, spec, &mut add);
        let replicas = r.object["spec"]["replicas"].as_u64().unwrap_or(1);
        let labels_at = pointer.trim_end_matches("/spec").to_string() + "/metadata/labels";
        if matches!(r.id.kind.as_str(), "Deployment" | "StatefulSet")
            && replicas > 1
            && let Some(Value::Object(labels)) = r.object.pointer(&labels_at)
            && !env
                .budgets
                .get(ns)
                .is_some_and(|b| b.iter().any(|s| matches(s, labels)))
        {
            add(
                "no-pdb",
                format!(
                    "{replicas} replicas and no PodDisruptionBudget in {ns} selects their pods"
                ),
            );
        }
    }
    if r.id.group.is_empty()
        && r.id.kind == "Service"
        && r.object["spec"]["type"] != "ExternalName"
        && let Some(Value::Object(selector)) = r.object.pointer("/spec/selector")
        && !selector.is_empty()
        && !env
            .templates
            .get(ns)
            .is_some_and(|t| t.iter().any(|l| matches(selector, l)))
    {
        add(
            "service-selects-nothing",
            format!(
                "its selector {} matches no pod template in {ns}",
                Value::Object(selector.clone())
            ),
        );
    }
    out
}

fn pod_checks(r: &Resource, spec: &Value, add: &mut impl FnMut(&'static str, String)) {
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[key] == true {
            add("host-namespace", format!("{key}: true"));
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if v["hostPath"].is_object() {
            add(
                "host-path",
                format!(
                    "volume {} mounts hostPath {}",
                    v["name"].as_str().unwrap_or("?"),
                    v["hostPath"]["path"].as_str().unwrap_or("?")
                ),
            );
        }
    }
    let pod_non_root = spec["securityContext"]["runAsNonRoot"] == true;
    let pod_user = spec["securityContext"]["runAsUser"].as_i64();
    let serves = matches!(
        r.id.kind.as_str(),
        "Deployment" | "StatefulSet" | "DaemonSet"
    );
    for (list, probes) in [("containers", true), ("initContainers", false)] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("{list}[{i}] {}", c["name"].as_str().unwrap_or("?"));
            let image = c["image"].as_str().unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or(image);
            if !image.contains('@') && (!last.contains(':') || last.ends_with(":latest")) {
                add(
                    "latest-tag",
                    format!("{at}: image `{image}` is not pinned (no tag, or `latest`)"),
                );
            }
            let res = &c["resources"];
            let missing: Vec<&str> = [
                ("requests.cpu", &res["requests"]["cpu"]),
                ("requests.memory", &res["requests"]["memory"]),
                ("limits.memory", &res["limits"]["memory"]),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k)
            .collect();
            if !missing.is_empty() {
                add(
                    "no-resources",
                    format!("{at}: no resources.{}", missing.join(", resources.")),
                );
            }
            if probes && serves && c["readinessProbe"].is_null() {
                add("no-readiness-probe", format!("{at}: no readinessProbe"));
            }
            let sc = &c["securityContext"];
            if sc["privileged"] == true || sc["allowPrivilegeEscalation"] == true {
                add(
                    "privileged",
                    format!("{at}: privileged or allowPrivilegeEscalation"),
                );
            }
            let user = sc["runAsUser"].as_i64().or(pod_user);
            let said = sc["runAsNonRoot"]
                .as_bool()
                .or_else(|| spec["securityContext"]["runAsNonRoot"].as_bool());
            let non_root = said.unwrap_or(pod_non_root);
            if user == Some(0) {
                add("run-as-root", format!("{at}: runs as root (runAsUser: 0)"));
            } else if !non_root && user.is_none() {
                let why = match said {
                    Some(false) => "runAsNonRoot: false, no runAsUser",
                    _ => "no runAsNonRoot, no runAsUser",
                };
                add("run-as-root", format!("{at}: may run as root ({why})"));
            }
        }
    }
}

/// Adds each finding on a resource the plan creates or changes to that
/// change's warnings (`policy/<id>`, the reason and the fix) and returns
/// how many are errors.
pub fn annotate(
    plan: &mut crate::plan::Plan,
    head: &crate::render::State,
    severities: &BTreeMap<&'static str, Severity>,
) -> usize {
    use std::collections::{BTreeSet, HashMap};
    let changed: BTreeSet<&str> = plan
        .changes
        .iter()
        .filter(|c| c.action != crate::plan::Action::Deleted)
        .map(|c| c.env.as_str())
        .collect();
    let mut by_env: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for r in head
        .releases
        .iter()
        .filter(|r| changed.contains(r.release.env.as_str()))
    {
        by_env
            .entry(r.release.env.as_str())
            .or_default()
            .extend(r.resources.iter());
    }
    let envs: BTreeMap<&str, Environment<'_>> = by_env
        .iter()
        .map(|(e, rs)| (*e, Environment::of(rs.iter().copied())))
        .collect();
    let index: HashMap<(&str, &crate::resource::ResourceId), &Resource> = by_env
        .iter()
        .flat_map(|(e, rs)| rs.iter().map(move |r| ((*e, &r.id), *r)))
        .collect();
    let mut errors = 0;
    let mut findings = Vec::new();
    for (i, c) in plan.changes.iter().enumerate() {
        if c.action == crate::plan::Action::Deleted {
            continue;
        }
        let (Some(r), Some(env)) = (
            index.get(&(c.env.as_str(), &c.id)),
            envs.get(c.env.as_str()),
        ) else {
            continue;
        };
        for f in check(r, env, severities) {
            errors += usize::from(f.severity == Severity::Error);
            findings.push((i, f));
        }
    }
    for (i, f) in findings {
        let check = CHECKS.iter().find(|c| c.id == f.id);
        plan.changes[i].warnings.push(crate::plan::Warning {
            code: check.map_or("policy", |c| c.code),
            path: String::new(),
            message: finding_text(
                f.severity == Severity::Error,
                &format!("{}; {}", f.message, fix(f.id)),
            ),
        });
    }
    errors
}

/// Adds the Rego policies' findings on each resource the plan creates or
/// changes to that change's warnings (`policy/rego`: the rule, its message
/// and where the policies came from) and returns how many fail the plan
/// (`deny`, `violation`).
///
/// # Errors
/// A rule that fails to evaluate.
pub fn annotate_rego(
    plan: &mut crate::plan::Plan,
    head: &crate::render::State,
    policies: &rego::Policies,
) -> Result<usize, rego::Error> {
    use rayon::prelude::*;
    let index = head.index();
    // In parallel, an engine per thread: an engine holds its input.
    let per_change: Vec<(usize, Vec<rego::Finding>)> = plan
        .changes
        .par_iter()
        .enumerate()
        .filter(|(_, c)| c.action != crate::plan::Action::Deleted)
        .map_init(
            || policies.clone(),
            |engine, (i, c)| match index.get(&(c.env.clone(), c.id.clone())) {
                Some(r) => engine
                    .evaluate(&r.id.to_string(), &r.object)
                    .map(|f| (i, f)),
                None => Ok((i, Vec::new())),
            },
        )
        .collect::<Result<_, _>>()?;
    let found: Vec<(usize, rego::Finding)> = per_change
        .into_iter()
        .flat_map(|(i, fs)| fs.into_iter().map(move |f| (i, f)))
        .collect();
    let errors = found.iter().filter(|(_, f)| f.fails).count();
    for (i, f) in found {
        plan.changes[i].warnings.push(crate::plan::Warning {
            code: "policy/rego",
            path: String::new(),
            message: finding_text(
                f.fails,
                &format!("[{}] {} (policies {})", f.rule, f.message, policies.label),
            ),
        });
    }
    Ok(errors)
}

/// Adds what the ValidatingAdmissionPolicies would decide of each resource
/// the plan creates or changes ([`vap`]) to that change's warnings
/// (`policy/admission`): the policies `deployed` (the state whose policies
/// the runner trusts, the base's on a pull request) has in its
/// environment, and `extra` (the runner's). Returns the denials (the API
/// server refuses them, so they fail the plan) and the most bindings one
/// environment had.
pub fn annotate_admission(
    plan: &mut crate::plan::Plan,
    cmp: &crate::render::Comparison,
    trusted: &crate::render::State,
    extra: &[Value],
) -> (usize, usize) {
    use std::collections::HashMap;
    let is_binding = |o: &Value| {
        o["kind"] == "ValidatingAdmissionPolicyBinding"
            && o["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("admissionregistration.k8s.io/"))
    };
    let deployed = |env: &str| {
        let env = env.to_string();
        trusted
            .releases
            .iter()
            .filter(move |r| r.release.env == env)
            .flat_map(|r| r.resources.iter().map(|x| &x.object))
    };
    // Most plans meet no policy at all: then nothing is indexed.
    let mut admissions: HashMap<&str, vap::Admission> = HashMap::new();
    for c in &plan.changes {
        if c.action != crate::plan::Action::Deleted && !admissions.contains_key(c.env.as_str()) {
            let has = extra.iter().any(is_binding) || deployed(&c.env).any(is_binding);
            let a = if has {
                vap::Admission::from_objects(deployed(&c.env).chain(extra))
            } else {
                vap::Admission::default()
            };
            admissions.insert(c.env.as_str(), a);
        }
    }
    if admissions.values().all(vap::Admission::is_empty) {
        return (0, 0);
    }
    let bound = admissions
        .values()
        .map(vap::Admission::bound)
        .max()
        .unwrap_or(0);
    let (base, head) = (cmp.base.index(), cmp.head.index());
    // In parallel: after a chart change every object is evaluated, and
    // converting each into CEL's values is most of the cost.
    use rayon::prelude::*;
    let found: Vec<(usize, vap::Decision)> = plan
        .changes
        .par_iter()
        .enumerate()
        .filter(|(_, c)| c.action != crate::plan::Action::Deleted)
        .flat_map_iter(|(i, c)| {
            let key = (c.env.clone(), c.id.clone());
            let decisions = match (
                admissions.get(c.env.as_str()).filter(|a| !a.is_empty()),
                head.get(&key),
            ) {
                (Some(a), Some(new)) => a.evaluate(&new.object, base.get(&key).map(|r| &r.object)),
                _ => Vec::new(),
            };
            decisions.into_iter().map(move |d| (i, d))
        })
        .collect();
    let errors = found.iter().filter(|(_, d)| d.deny).count();
    for (i, d) in found {
        plan.changes[i].warnings.push(crate::plan::Warning {
            code: "policy/admission",
            path: String::new(),
            message: finding_text(d.deny, &d.message),
        });
    }
    (errors, bound)
}

/// What marks a finding that fails the plan at the start of its
/// warning's message.
const ERROR_MARK: &str = "(error) ";

/// A finding's warning message: marked when it fails the plan.
fn finding_text(fails: bool, text: &str) -> String {
    if fails {
        format!("{ERROR_MARK}{text}")
    } else {
        text.to_string()
    }
}

/// A policy warning as a face reports it: whether it fails the plan, and
/// its message without the mark. `None` for a warning of another stage.
pub fn finding(w: &crate::plan::Warning) -> Option<(bool, &str)> {
    if !w.code.starts_with("policy") {
        return None;
    }
    Some(match w.message.strip_prefix(ERROR_MARK) {
        Some(m) => (true, m),
        None => (false, w.message.as_str()),
    })
}

/// The check's fix, for messages.
pub fn fix(id: &str) -> &'static str {
    CHECKS.iter().find(|c| c.id == id).map_or("", |c| c.fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(v: Value) -> Resource {
        Resource::for_tests(v)
    }

    #[test]
    fn good_and_bad_workloads() {
        let sev = severities("").expect("defaults");
        let bad = res(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                "hostNetwork": true,
                "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}],
                "containers": [{"name": "api", "image": "ghcr.io/acme/api", "securityContext": {"privileged": true}}]
            }}}
        }));
        let env = Environment::of([&bad]);
        let ids: Vec<&str> = check(&bad, &env, &sev).iter().map(|f| f.id).collect();
        for id in [
            "host-namespace",
            "host-path",
            "latest-tag",
            "no-resources",
            "no-readiness-probe",
            "privileged",
            "run-as-root",
            "no-pdb",
        ] {
            assert!(ids.contains(&id), "{id} in {ids:?}");
        }
        let good = res(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                "securityContext": {"runAsNonRoot": true},
                "containers": [{"name": "api", "image": "ghcr.io/acme/api:1.4.2",
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]
            }}}
        }));
        let pdb = res(serde_json::json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}}
        }));
        let svc = res(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}
        }));
        let orphan = res(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "old", "namespace": "shop"},
            "spec": {"selector": {"app": "gone"}, "ports": [{"port": 80}]}
        }));
        let env = Environment::of([&good, &pdb, &svc, &orphan]);
        assert!(
            check(&good, &env, &sev).is_empty(),
            "{:?}",
            check(&good, &env, &sev)
        );
        assert!(check(&svc, &env, &sev).is_empty());
        assert_eq!(check(&orphan, &env, &sev)[0].id, "service-selects-nothing");
        // The runner's severities: off and error.
        let sev = severities("latest-tag=off, no-pdb=error").expect("valid");
        let env = Environment::of([&bad]);
        let found = check(&bad, &env, &sev);
        assert!(!found.iter().any(|f| f.id == "latest-tag"));
        assert!(
            found
                .iter()
                .any(|f| f.id == "no-pdb" && f.severity == Severity::Error)
        );
        assert!(
            severities("nope=off")
                .unwrap_err()
                .contains("`nope` is not a check")
        );
        assert!(
            severities("latest-tag=loud")
                .unwrap_err()
                .contains("`loud` is not off")
        );
    }

    #[test]
    fn run_as_root_says_which_setting_makes_it() {
        let sev = severities("").expect("defaults");
        let said = |pod: Value, container: Value| -> Vec<String> {
            let d = res(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
                "spec": {"template": {"spec": {"securityContext": pod,
                    "containers": [{"name": "api", "image": "a:1", "securityContext": container}]}}}
            }));
            let env = Environment::of([&d]);
            check(&d, &env, &sev)
                .into_iter()
                .filter(|f| f.id == "run-as-root")
                .map(|f| f.message)
                .collect()
        };
        assert_eq!(
            said(serde_json::json!({}), serde_json::json!({})),
            ["containers[0] api: may run as root (no runAsNonRoot, no runAsUser)"]
        );
        assert_eq!(
            said(
                serde_json::json!({"runAsNonRoot": false}),
                serde_json::json!({})
            ),
            ["containers[0] api: may run as root (runAsNonRoot: false, no runAsUser)"]
        );
        assert_eq!(
            said(
                serde_json::json!({"runAsNonRoot": true}),
                serde_json::json!({"runAsUser": 0})
            ),
            ["containers[0] api: runs as root (runAsUser: 0)"]
        );
        assert!(
            said(
                serde_json::json!({"runAsNonRoot": true}),
                serde_json::json!({})
            )
            .is_empty()
        );
    }
}
