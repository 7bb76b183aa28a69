//! Schema validation of rendered resources, before anything is planned or
//! applied, as kubeconform does it but offline.
//!
//! Built-in kinds are checked against the Kubernetes API types compiled into
//! kdeploy (k8s-openapi, Kubernetes 1.37): a value of the wrong type fails
//! deserialization (the field path comes from `serde_path_to_error`), and a
//! field the type does not know is one `serde_ignored` reports; an object
//! shaped like one already found clean skips the types ([`shape`]). Custom
//! resources are checked against the `openAPIV3Schema` of a
//! CustomResourceDefinition in the same state; kinds with no schema at hand
//! are skipped and listed. [`fields`] adds the rules the API server enforces
//! beyond types (names, quantities, ports, images).
//!
//! A problem in a rendered field is reported at the user's line when the
//! offending value was written in the release's `config.yaml` or `version`,
//! and at the template otherwise.

pub mod fields;
mod image_ref;
mod shape;

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;

use std::collections::HashMap;

use crate::config::Settings;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::render::{Rendered, State};
use crate::resource::Resource;

/// What a validation run covered.
#[derive(Debug, Default)]
pub struct Summary {
    /// Resources checked against a schema.
    pub checked: usize,
    /// `group/Kind` of resources without a schema (not checked).
    pub skipped: BTreeSet<String>,
}

/// A path serde_ignored reports, as kdeploy writes field paths
/// (`spec.containers[0].foo`).
fn field_path(path: &serde_ignored::Path<'_>, out: &mut String) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            field_path(parent, out);
            out.push_str(&format!("[{index}]"));
        }
        Path::Map { parent, key } => {
            field_path(parent, out);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => {
            field_path(parent, out);
        }
    }
}

/// The value at a serde_ignored path of `object`.
fn value_of<'a>(object: &'a Value, path: &serde_ignored::Path<'_>) -> Option<&'a Value> {
    use serde_ignored::Path;
    match path {
        Path::Root => Some(object),
        Path::Seq { parent, index } => value_of(object, parent)?.get(*index),
        Path::Map { parent, key } => value_of(object, parent)?.get(key.as_str()),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => value_of(object, parent),
    }
}

/// Deserializes `object` into the kind's type, reporting type errors and
/// the fields the type does not have (nulls are not fields). Reads the
/// value in place: no copy, no round trip.
fn check_typed<T: DeserializeOwned>(object: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut seen = |path: serde_ignored::Path<'_>| {
        if value_of(object, &path).is_some_and(|v| !v.is_null()) {
            let mut p = String::new();
            field_path(&path, &mut p);
            unknown.push(format!("{p}: unknown field"));
        }
    };
    if T::deserialize(serde_ignored::Deserializer::new(object, &mut seen)).is_ok() {
        return unknown;
    }
    // Again with the path tracked, which only the message needs: most
    // objects are valid and pay for one pass without it.
    match serde_path_to_error::deserialize::<_, T>(object) {
        Err(e) => vec![format!(
            "{}: {}",
            e.path(),
            user_words(&e.inner().to_string())
        )],
        Ok(_) => unknown,
    }
}

/// The problems of a built-in kind, or `None` when no type is compiled in.
#[cfg(test)]
fn check_builtin(api_version: &str, kind: &str, object: &Value) -> Option<Vec<String>> {
    builtin_checker(api_version, kind).map(|check| check(object))
}

/// Whether kdeploy checks this kind against a compiled-in type (else a
/// CRD's schema, when the environment has one).
pub fn is_builtin(api_version: &str, kind: &str) -> bool {
    builtin_checker(api_version, kind).is_some()
}

/// The check of a built-in kind's objects.
type Checker = fn(&Value) -> Vec<String>;

fn builtin_checker(api_version: &str, kind: &str) -> Option<Checker> {
    use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy, rbac};
    Some(match (api_version, kind) {
        ("v1", "Namespace") => check_typed::<core::v1::Namespace>,
        ("v1", "ConfigMap") => check_typed::<core::v1::ConfigMap>,
        ("v1", "Secret") => check_typed::<core::v1::Secret>,
        ("v1", "Service") => check_typed::<core::v1::Service>,
        ("v1", "ServiceAccount") => check_typed::<core::v1::ServiceAccount>,
        ("v1", "PersistentVolumeClaim") => check_typed::<core::v1::PersistentVolumeClaim>,
        ("v1", "Pod") => check_typed::<core::v1::Pod>,
        ("v1", "ResourceQuota") => check_typed::<core::v1::ResourceQuota>,
        ("v1", "LimitRange") => check_typed::<core::v1::LimitRange>,
        ("apps/v1", "Deployment") => check_typed::<apps::v1::Deployment>,
        ("apps/v1", "StatefulSet") => check_typed::<apps::v1::StatefulSet>,
        ("apps/v1", "DaemonSet") => check_typed::<apps::v1::DaemonSet>,
        ("batch/v1", "Job") => check_typed::<batch::v1::Job>,
        ("batch/v1", "CronJob") => check_typed::<batch::v1::CronJob>,
        ("autoscaling/v2", "HorizontalPodAutoscaler") => check_typed::<autoscaling::v2::HorizontalPodAutoscaler>,
        // Still served, and still common in charts.
        ("autoscaling/v1", "HorizontalPodAutoscaler") => check_typed::<autoscaling::v1::HorizontalPodAutoscaler>,
        ("apps/v1", "ReplicaSet") => check_typed::<apps::v1::ReplicaSet>,
        ("v1", "Endpoints") => check_typed::<core::v1::Endpoints>,
        ("v1", "PersistentVolume") => check_typed::<core::v1::PersistentVolume>,
        ("v1", "ReplicationController") => check_typed::<core::v1::ReplicationController>,
        ("discovery.k8s.io/v1", "EndpointSlice") => check_typed::<k8s_openapi::api::discovery::v1::EndpointSlice>,
        ("networking.k8s.io/v1", "IngressClass") => check_typed::<networking::v1::IngressClass>,
        ("storage.k8s.io/v1", "StorageClass") => check_typed::<k8s_openapi::api::storage::v1::StorageClass>,
        ("scheduling.k8s.io/v1", "PriorityClass") => check_typed::<k8s_openapi::api::scheduling::v1::PriorityClass>,
        ("coordination.k8s.io/v1", "Lease") => check_typed::<k8s_openapi::api::coordination::v1::Lease>,
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => check_typed::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>,
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => check_typed::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>,
        ("networking.k8s.io/v1", "Ingress") => check_typed::<networking::v1::Ingress>,
        ("networking.k8s.io/v1", "NetworkPolicy") => check_typed::<networking::v1::NetworkPolicy>,
        ("policy/v1", "PodDisruptionBudget") => check_typed::<policy::v1::PodDisruptionBudget>,
        ("rbac.authorization.k8s.io/v1", "Role") => check_typed::<rbac::v1::Role>,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => check_typed::<rbac::v1::RoleBinding>,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => check_typed::<rbac::v1::ClusterRole>,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => check_typed::<rbac::v1::ClusterRoleBinding>,
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            check_typed::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
        }
        _ => return None,
    })
}

/// serde's type names as the Kubernetes API reference says them.
fn user_words(message: &str) -> String {
    let mut out = message.replace("invalid type: ", "found ");
    for (rust, api) in [
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected u32", "expected an integer"),
        ("expected a sequence", "expected a list"),
        ("expected a borrowed string", "expected a string"),
    ] {
        out = out.replace(rust, api);
    }
    out
}

/// The scalar at a dotted path with `[i]` indices, as text.
fn value_at(object: &Value, path: &str) -> Option<String> {
    let mut v = object;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            v = v.get(index.parse::<usize>().ok()?)?;
        }
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Where the user wrote `value`: a config.yaml scalar equal to it; else
/// the part of it the user wrote (an image is `image:` plus the version):
/// the version file when the version is no valid tag, else the longest
/// config scalar inside it, else the version file.
fn user_line(inputs: &[(String, String)], value: &str) -> Option<Location> {
    let mut inside: Option<(usize, Location)> = None;
    let mut version = None;
    for (path, text) in inputs {
        if path.ends_with("/version") {
            if !text.is_empty() && value.contains(text.as_str()) {
                let strong = !is_tag(text);
                version = Some((strong, Location::at(path, Some(1), Some(1))));
            }
            continue;
        }
        let Ok(index) = crate::yaml::index(text) else {
            continue;
        };
        for at in &index {
            let Some(v) = at.value.as_deref() else {
                continue;
            };
            let here = || Location::at(path, Some(at.line), Some(at.column));
            if v == value {
                return Some(here());
            }
            if v.len() >= 3
                && value.contains(v)
                && inside.as_ref().is_none_or(|(n, _)| v.len() > *n)
            {
                inside = Some((v.len(), here()));
            }
        }
    }
    match (version, inside) {
        (Some((true, v)), _) => Some(v),
        (_, Some((_, c))) => Some(c),
        (Some((false, v)), None) => Some(v),
        (None, None) => None,
    }
}

/// An image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Checks `value` against an OpenAPI v3 (structural) schema.
fn check_schema(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => {
            value.is_string() || (schema["x-kubernetes-int-or-string"] == true && value.is_i64())
        }
        Some("integer") => {
            value.is_i64()
                || value.is_u64()
                || (schema["x-kubernetes-int-or-string"] == true && value.is_string())
        }
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        out.push(format!(
            "{}: expected {}, found {value}",
            path.trim_start_matches('.'),
            schema["type"].as_str().unwrap_or("?")
        ));
        return;
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(r) {
                out.push(format!(
                    "{}.{r}: required field missing",
                    path.trim_start_matches('.')
                ));
            }
        }
        let props = schema["properties"].as_object();
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (k, v) in obj {
            let p = format!("{path}.{k}");
            match props.and_then(|m| m.get(k)) {
                Some(s) => check_schema(v, s, &p, out),
                None if schema["additionalProperties"].is_object() => {
                    check_schema(v, &schema["additionalProperties"], &p, out)
                }
                None if props.is_some() && !preserve && !path.is_empty() => {
                    out.push(format!("{}: unknown field", p.trim_start_matches('.')))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_schema(v, items, &format!("{path}[{i}]"), out);
        }
    }
}

/// The schema of (group, version, kind) from the CRDs among `resources`.
fn crd_schema<'a>(crds: &[&'a Resource], api_version: &str, kind: &str) -> Option<&'a Value> {
    let (group, version) = crate::resource::split_api_version(api_version);
    crds.iter().find_map(|r| {
        let spec = &r.object["spec"];
        (r.id.kind == "CustomResourceDefinition"
            && spec["group"] == group
            && spec["names"]["kind"] == kind)
            .then(|| {
                spec["versions"]
                    .as_array()?
                    .iter()
                    .find(|v| v["name"] == version)
                    .map(|v| &v["schema"]["openAPIV3Schema"])
            })
            .flatten()
            .filter(|s| s.is_object())
    })
}

/// Forgets the shapes found clean ([`shape`]), so that a benchmark's
/// every run starts as the command's process does.
pub fn forget_shapes() {
    shape::forget();
}

/// Validates every resource of `state`. Problems name the release, the
/// resource, the source file and the field path.
pub fn validate(state: &State) -> (Diagnostics, Summary) {
    validate_with(state, true)
}

/// Which of a release's checks to run. [`crate::emit`] checks each release
/// as it renders, when the CRDs of other releases are not known yet, and
/// custom kinds once every release has rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Every check.
    All,
    /// Every check but the schemas of custom kinds.
    Release,
    /// Only the schemas (and field rules) of custom kinds.
    Custom,
}

/// The CRDs of each environment of `state`: only custom kinds need them.
fn crds_by_env(state: &State) -> HashMap<&str, Vec<&Resource>> {
    let mut crds: HashMap<&str, Vec<&Resource>> = HashMap::new();
    for r in &state.releases {
        crds.entry(r.release.env.as_str()).or_default().extend(
            r.resources
                .iter()
                .filter(|x| x.id.kind == "CustomResourceDefinition"),
        );
    }
    crds
}

/// [`validate`]; `removed_api_errors: false` leaves API versions the
/// cluster no longer serves to the plan, which shows them as `removed-api`
/// warnings (apply and `kdeploy validate` refuse them).
pub fn validate_with(state: &State, removed_api_errors: bool) -> (Diagnostics, Summary) {
    validate_pass(state, removed_api_errors, Pass::All)
}

/// [`validate_with`], one [`Pass`] of it.
pub fn validate_pass(
    state: &State,
    removed_api_errors: bool,
    pass: Pass,
) -> (Diagnostics, Summary) {
    let crds = crds_by_env(state);
    // Releases are checked in parallel, their problems kept in order.
    use rayon::prelude::*;
    let per_release: Vec<(Diagnostics, Summary)> = state
        .releases
        .par_iter()
        .map(|release| {
            let env_crds = crds
                .get(release.release.env.as_str())
                .map_or(&[][..], Vec::as_slice);
            validate_release(release, &state.settings, env_crds, removed_api_errors, pass)
        })
        .collect();
    let mut problems = Diagnostics::default();
    let mut summary = Summary::default();
    for (p, s) in per_release {
        problems.extend(p.0);
        summary.add(s);
    }
    (problems, summary)
}

impl Summary {
    /// Adds what another run covered.
    pub fn add(&mut self, other: Summary) {
        self.checked += other.checked;
        self.skipped.extend(other.skipped);
    }
}

/// Validates one release; custom kinds against `env_crds`, the CRDs of its
/// environment.
pub fn validate_release(
    release: &Rendered,
    settings: &Settings,
    env_crds: &[&Resource],
    removed_api_errors: bool,
    pass: Pass,
) -> (Diagnostics, Summary) {
    let mut problems = Diagnostics::default();
    let mut summary = Summary::default();
    let target = settings
        .environments
        .get(&release.release.env)
        .and_then(|e| e.kubernetes_version)
        .unwrap_or(crate::plan::warnings::NEWEST);
    for res in &release.resources {
        if pass != Pass::Custom
            && let Some(d) = reserved(res, release, crate::config::RECORD_NAMESPACE)
        {
            problems.push(d);
            continue;
        }
        let checker = builtin_checker(&res.api_version, &res.id.kind);
        let builtin = checker.is_some();
        if pass == Pass::Custom && builtin {
            continue;
        }
        // An apiVersion the cluster no longer serves has no schema to
        // check against: it is refused outright.
        if let Some(w) = crate::plan::warnings::api_version(res, target)
            && w.code == "removed-api"
        {
            if pass == Pass::Custom {
                continue; // reported by the release's pass
            }
            if !removed_api_errors {
                summary
                    .skipped
                    .insert(format!("{} ({}, removed)", res.id.kind, res.api_version));
                continue;
            }
            problems.push(
                Diagnostic::new(
                    Location::file(&res.origin.file),
                    format!(
                        "{} in {}/{}: {}",
                        res.id, release.release.env, release.release.app, w.message
                    ),
                )
                .help("set `environments.<env>.kubernetesVersion` in kdeploy.yaml if the cluster is older"),
            );
            continue;
        }
        if pass != Pass::Custom
            && let Some(p) = crate::hooks::problem(res)
        {
            problems.push(
                Diagnostic::new(
                    Location::file(&res.origin.file),
                    format!("{p} ({}/{})", release.release.env, release.release.app),
                )
                .help("see README, Deploy hooks"),
            );
        }
        if pass == Pass::Release && !builtin {
            continue; // once every CRD is known
        }
        let found = match checker {
            Some(check) => Some(shape::checked(
                &res.api_version,
                &res.id.kind,
                &res.object,
                check,
            )),
            None => crd_schema(env_crds, &res.api_version, &res.id.kind).map(|schema| {
                let mut out = Vec::new();
                // metadata is the API server's, not the CRD's.
                let mut object = res.object.clone();
                if let Some(o) = object.as_object_mut() {
                    o.remove("metadata");
                    o.remove("apiVersion");
                    o.remove("kind");
                }
                check_schema(&object, schema, "", &mut out);
                out
            }),
        };
        let mut errors: Vec<(String, Option<String>)> = Vec::new();
        match found {
            None => {
                summary
                    .skipped
                    .insert(format!("{} ({})", res.id.kind, res.api_version));
            }
            Some(found) => {
                summary.checked += 1;
                for e in found {
                    let value = e
                        .split_once(':')
                        .and_then(|(path, _)| value_at(&res.object, path));
                    errors.push((e, value));
                }
            }
        }
        for p in fields::check(res, builtin) {
            errors.push((format!("{}: {}", p.path, p.message), p.value));
        }
        for (e, value) in errors {
            let at_user = value.as_deref().and_then(|v| user_line(&release.inputs, v));
            let (location, from) = match at_user {
                Some(loc) => (loc, format!(" (rendered by {})", res.origin.file)),
                None => (Location::file(&res.origin.file), String::new()),
            };
            problems.push(
                Diagnostic::new(
                    location,
                    format!(
                        "{} in {}/{} is invalid: {e}{from}",
                        res.id, release.release.env, release.release.app
                    ),
                )
                .help("fix the value in the service config or the chart; `kdeploy validate` checks without planning"),
            );
        }
    }
    (problems, summary)
}

/// [`validate`] as a result: the problems, or what was covered.
///
/// # Errors
/// Every schema problem found.
pub fn check(state: &State) -> Result<Summary, Diagnostics> {
    let (mut problems, summary) = validate(state);
    problems.extend(ordering(state, &|_| true).0);
    problems.into_result(summary)
}

/// The ordering annotations of each environment (`kdeploy.io/group`,
/// `kdeploy.io/apply-after`): cycles always, groups nobody declares where
/// `complete(env)` says every release of it was rendered.
pub fn ordering(state: &State, complete: &dyn Fn(&str) -> bool) -> Diagnostics {
    ordering_of(&crate::order::stages_by_env(state), complete)
}

/// [`ordering`] of stages already found.
fn ordering_of(stages: &crate::order::ByEnv<'_>, complete: &dyn Fn(&str) -> bool) -> Diagnostics {
    let mut problems = Diagnostics::default();
    for (env, stages) in stages {
        let Err(found) = stages else {
            continue;
        };
        for p in found {
            if !complete(env) && !p.certain {
                continue;
            }
            problems.push(
                Diagnostic::new(Location::file(&p.file), format!("{env}: {}", p.message))
                    .help("name groups declared with kdeploy.io/group in the same environment, without cycles"),
            );
        }
    }
    problems
}

/// [`check`] for a plan: removed API versions become plan warnings.
/// `stages` are the head's ([`crate::order::stages_by_env`]), found once
/// for this check and the plan's notes.
///
/// # Errors
/// Every other schema problem found.
pub fn check_for_plan(
    cmp: &crate::render::Comparison,
    stages: &crate::order::ByEnv<'_>,
) -> Result<Summary, Diagnostics> {
    let (mut problems, summary) = validate_with(&cmp.head, false);
    // Environments with unchanged (unrendered) releases may declare groups
    // this plan cannot see: only their cycles are certain.
    let partial: std::collections::BTreeSet<&str> =
        cmp.unchanged.iter().map(|(env, _)| env.as_str()).collect();
    problems.extend(ordering_of(stages, &|env| !partial.contains(env)).0);
    problems.into_result(summary)
}

/// A resource in (or being) the namespace of kdeploy's deploy records:
/// the next deploy's prune reads the records there, so a release that
/// could write one could make it delete another environment's objects.
pub fn reserved(res: &Resource, release: &Rendered, record_namespace: &str) -> Option<Diagnostic> {
    let inside = res.id.namespace.as_deref() == Some(record_namespace)
        || (res.id.group.is_empty()
            && res.id.kind == "Namespace"
            && res.id.name == record_namespace);
    inside.then(|| {
        Diagnostic::new(
            Location::file(&res.origin.file),
            format!(
                "{} in {}/{}: the namespace `{record_namespace}` holds kdeploy's deploy records and leases; no release may write there",
                res.id, release.release.env, release.release.app
            ),
        )
        .help("deploy it to a namespace of its own; the record namespace is the runner's (the input `record-namespace`)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_and_unknown_fields_have_paths() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "creationTimestamp": null},
            "spec": {"replicas": "two", "selector": {}, "template": {}}});
        let errs = check_builtin("apps/v1", "Deployment", &d).unwrap();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("spec.replicas:"), "{errs:?}");
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [{"name": "a", "imagePullPolicy": "Always", "imagePolicy": "x"}]}}}});
        let errs = check_builtin("apps/v1", "Deployment", &d).unwrap();
        assert_eq!(
            errs,
            ["spec.template.spec.containers[0].imagePolicy: unknown field"]
        );
        let cpu = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": 1}}}]}});
        assert!(
            check_builtin("v1", "Pod", &cpu).unwrap().is_empty(),
            "numeric quantities are fine"
        );
    }

    #[test]
    fn crd_schemas() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer"}}}}});
        let mut out = Vec::new();
        check_schema(
            &json!({"spec": {"size": "big", "colour": 1}}),
            &schema,
            "",
            &mut out,
        );
        assert_eq!(
            out,
            [
                "spec.colour: unknown field",
                "spec.size: expected integer, found \"big\""
            ]
        );
        let mut out = Vec::new();
        check_schema(&json!({"spec": {}}), &schema, "", &mut out);
        assert_eq!(out, ["spec.size: required field missing"]);
    }
}
