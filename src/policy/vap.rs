//! ValidatingAdmissionPolicies evaluated offline: what the cluster will
//! enforce, decided before merge. The policies and their bindings are the
//! ones the base revision deploys (what the cluster runs now, never a pull
//! request's own) and any the runner names in a directory; each planned
//! create or update is matched as the API server matches it
//! (`matchConstraints` and the binding's `matchResources`: groups,
//! versions, resources, operations, namespace and object selectors;
//! `matchConditions`), then each validation's CEL expression is evaluated
//! with `object`, `oldObject` (the base's object on an update), `params`
//! (the binding's `paramRef`), `namespaceObject`, `request` and
//! `variables`. CEL is the `cel` crate; what it cannot evaluate (the
//! Kubernetes libraries such as `quantity()`, optional fields `.?`) is
//! said, never decided.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The API group of the policies.
const GROUP: &str = "admissionregistration.k8s.io";

/// One decision about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The binding's `validationActions` include `Deny`: the API server
    /// refuses the request.
    pub deny: bool,
    /// What the API server says: `ValidatingAdmissionPolicy 'p' with
    /// binding 'b' denied request: …`, or why it could not be evaluated.
    pub message: String,
}

struct Validation {
    expression: String,
    program: Result<cel::Program, String>,
    message: Option<String>,
    message_expression: Option<cel::Program>,
}

struct Policy {
    name: String,
    /// Every expression's text, to know which variables they name.
    sources: String,
    constraints: Value,
    param_kind: Option<(String, String)>,
    conditions: Vec<(String, Result<cel::Program, String>)>,
    variables: Vec<(String, Result<cel::Program, String>)>,
    validations: Vec<Validation>,
    fail_closed: bool,
}

struct Binding {
    name: String,
    policy: String,
    param_ref: Value,
    match_resources: Value,
    actions: Vec<String>,
}

/// The admission policies a cluster enforces, with the objects their
/// parameters and namespace selectors read.
#[derive(Default)]
pub struct Admission {
    policies: Vec<Policy>,
    bindings: Vec<Binding>,
    /// Every object that may be a parameter (by apiVersion and kind).
    objects: Vec<Value>,
    /// Namespace labels by name.
    namespaces: BTreeMap<String, Value>,
}

/// The objects of the YAML files of `source` (policies, bindings, their
/// parameters), read as the Rego policies are: from `trusted` for a
/// directory of the config repo, from disk for the runner's. `Ok(None)`
/// when `trusted` has no such directory.
///
/// # Errors
/// Read failures, and YAML that does not parse (naming file and line).
pub fn load(
    source: &super::rego::Source,
    trusted: &crate::source::Snapshot,
) -> Result<Option<(Vec<Value>, String)>, super::rego::Error> {
    let yaml = |p: &str| p.ends_with(".yaml") || p.ends_with(".yml");
    let Some((files, label)) = super::rego::read_files(source, trusted, yaml)? else {
        return Ok(None);
    };
    let mut objects = Vec::new();
    for (file, text) in files {
        for doc in crate::yaml::split_documents(&text) {
            if crate::yaml::is_blank(doc.text) {
                continue;
            }
            let value = crate::yaml::parse(doc.text).map_err(|e| super::rego::Error::Parse {
                file: format!("{file} (document at line {})", doc.first_line),
                detail: format!(" {e}"),
            })?;
            if value.is_object() {
                objects.push(value);
            }
        }
    }
    Ok(Some((objects, label)))
}

fn compile(expr: &str) -> Result<cel::Program, String> {
    cel::Program::compile(expr).map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())
}

impl Admission {
    /// Gathers policies, bindings, parameter candidates and namespaces
    /// from `objects` (rendered resources, or a runner's files).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Admission {
        let objects: Vec<&Value> = objects.into_iter().collect();
        let mut a = Admission::default();
        for o in &objects {
            a.add(o);
        }
        // Only objects of a kind some policy takes as its parameters are
        // kept: a state has thousands of others.
        let kinds: Vec<(String, String)> = a
            .policies
            .iter()
            .filter_map(|p| p.param_kind.clone())
            .collect();
        a.objects = objects
            .into_iter()
            .filter(|o| {
                kinds.iter().any(|(api, kind)| {
                    o["apiVersion"] == api.as_str() && o["kind"] == kind.as_str()
                })
            })
            .cloned()
            .collect();
        a
    }

    /// Adds one policy, binding or namespace.
    fn add(&mut self, o: &Value) {
        let api = o["apiVersion"].as_str().unwrap_or_default();
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let group = api.split_once('/').map_or("", |(g, _)| g);
        match (group, kind) {
            // One object per name, as in a cluster: a later one (the
            // runner's) replaces an earlier one (the state's).
            (GROUP, "ValidatingAdmissionPolicy") => {
                self.policies.retain(|p| p.name != name);
                self.policies.push(policy(name, &o["spec"]));
            }
            (GROUP, "ValidatingAdmissionPolicyBinding") => {
                self.bindings.retain(|b| b.name != name);
                self.bindings.push(binding(name, &o["spec"]));
            }
            ("", "Namespace") => {
                self.namespaces
                    .insert(name, o["metadata"]["labels"].clone());
            }
            _ => {}
        }
    }

    /// True when there is nothing to enforce.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() || self.policies.is_empty()
    }

    /// How many (policy, binding) pairs apply.
    pub fn bound(&self) -> usize {
        self.bindings
            .iter()
            .filter(|b| self.policies.iter().any(|p| p.name == b.policy))
            .count()
    }

    /// The decisions about `object` (its `old` version on an update).
    pub fn evaluate(&self, object: &Value, old: Option<&Value>) -> Vec<Decision> {
        let mut out = Vec::new();
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let ns_object = (!ns.is_empty()).then(|| {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
                "labels": self.namespaces.get(ns).cloned().unwrap_or(Value::Null)}})
        });
        let mut ctx: Option<cel::Context<'_>> = None;
        let mut added: Vec<&str> = Vec::new();
        for b in &self.bindings {
            let Some(p) = self.policies.iter().find(|p| p.name == b.policy) else {
                continue;
            };
            let matched = matches(&p.constraints, object, old, operation, ns_object.as_ref())
                && (b.match_resources.is_null()
                    || matches(
                        &b.match_resources,
                        object,
                        old,
                        operation,
                        ns_object.as_ref(),
                    ));
            if !matched {
                continue;
            }
            let deny = b.actions.iter().any(|a| a == "Deny");
            let warn = b.actions.iter().any(|a| a == "Warn");
            if !deny && !warn {
                continue; // Audit only: the API server lets it through.
            }
            let params = match self.params(p, b, ns) {
                Ok(v) => v,
                Err(why) => {
                    out.push(Decision {
                        deny,
                        message: format!(
                            "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {why}",
                            p.name, b.name
                        ),
                    });
                    continue;
                }
            };
            // Each variable is converted once per object, and only when a
            // policy's expressions name it: converting objects is most of
            // the cost.
            let c = ctx.get_or_insert_with(cel::Context::default);
            for name in ["object", "oldObject", "namespaceObject", "request"] {
                if !p.uses(name) || added.contains(&name) {
                    continue;
                }
                added.push(name);
                let value = match name {
                    "object" => cel::to_value(object),
                    "oldObject" => cel::to_value(old.unwrap_or(&Value::Null)),
                    "namespaceObject" => cel::to_value(ns_object.as_ref().unwrap_or(&Value::Null)),
                    _ => cel::to_value(json!({
                        "operation": operation,
                        "namespace": ns,
                        "name": object["metadata"]["name"],
                        "kind": {"kind": object["kind"]},
                        "userInfo": {"username": "kdeploy"},
                        "dryRun": false,
                    })),
                };
                if let Ok(v) = value {
                    c.add_variable_from_value(name, v);
                }
            }
            let Some(ctx) = ctx.as_mut() else { continue };
            if p.uses("params") {
                match cel::to_value(&params) {
                    Ok(v) => ctx.add_variable_from_value("params", v),
                    Err(_) => continue,
                }
            }
            match decide(p, ctx) {
                Ok(None) => {}
                Ok(Some(message)) => out.push(Decision {
                    deny,
                    message: format!(
                        "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
                        p.name, b.name
                    ),
                }),
                Err(why) => out.push(Decision {
                    // What cannot be evaluated here decides nothing: the
                    // API server's failurePolicy applies there, not here.
                    deny: false,
                    message: format!(
                        "ValidatingAdmissionPolicy '{}' with binding '{}' not evaluated offline: {why}{}",
                        p.name,
                        b.name,
                        if p.fail_closed {
                            " (failurePolicy Fail: the API server refuses the request if it cannot evaluate it either)"
                        } else {
                            ""
                        }
                    ),
                }),
            }
        }
        out
    }

    /// The binding's parameter object, or why the request is refused for
    /// want of one.
    fn params(&self, p: &Policy, b: &Binding, ns: &str) -> Result<Value, String> {
        let Some((api, kind)) = &p.param_kind else {
            return Ok(Value::Null);
        };
        let r = &b.param_ref;
        if r.is_null() {
            return Ok(Value::Null);
        }
        let want_ns = r["namespace"].as_str().unwrap_or(ns);
        let found = self.objects.iter().find(|o| {
            o["apiVersion"] == api.as_str()
                && o["kind"] == kind.as_str()
                && r["name"]
                    .as_str()
                    .is_none_or(|n| o["metadata"]["name"] == n)
                && o["metadata"]["namespace"].as_str().unwrap_or_default() == want_ns
                && (r["selector"].is_null() || selects(&r["selector"], &o["metadata"]["labels"]))
        });
        match found {
            Some(o) => Ok(o.clone()),
            None if r["parameterNotFoundAction"] == "Allow" => Ok(Value::Null),
            None => Err(format!(
                "no params found for policy binding with `Deny` parameterNotFoundAction ({kind} {})",
                r["name"].as_str().unwrap_or("(by selector)")
            )),
        }
    }
}

fn binding(name: String, spec: &Value) -> Binding {
    Binding {
        name,
        policy: spec["policyName"].as_str().unwrap_or_default().to_string(),
        param_ref: spec["paramRef"].clone(),
        match_resources: spec["matchResources"].clone(),
        actions: spec["validationActions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    }
}

impl Policy {
    /// Whether an expression names the variable `name`.
    fn uses(&self, name: &str) -> bool {
        self.sources.contains(name)
    }
}

fn policy(name: String, spec: &Value) -> Policy {
    let list = |key: &str| -> Vec<(String, Result<cel::Program, String>)> {
        spec[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let expr = v["expression"].as_str().unwrap_or_default();
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    compile(expr),
                )
            })
            .collect()
    };
    let mut sources = String::new();
    for key in ["matchConditions", "variables", "validations"] {
        for v in spec[key].as_array().into_iter().flatten() {
            for field in ["expression", "messageExpression"] {
                if let Some(e) = v[field].as_str() {
                    sources.push_str(e);
                    sources.push('\n');
                }
            }
        }
    }
    Policy {
        name,
        sources,
        constraints: spec["matchConstraints"].clone(),
        param_kind: spec["paramKind"].as_object().map(|k| {
            (
                k.get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                k.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        }),
        conditions: list("matchConditions"),
        variables: list("variables"),
        validations: spec["validations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let expression = v["expression"].as_str().unwrap_or_default().to_string();
                Validation {
                    program: compile(&expression),
                    expression,
                    message: v["message"].as_str().map(str::to_string),
                    message_expression: v["messageExpression"]
                        .as_str()
                        .and_then(|e| compile(e).ok()),
                }
            })
            .collect(),
        fail_closed: spec["failurePolicy"].as_str().unwrap_or("Fail") == "Fail",
    }
}

/// `Ok(Some(message))` when a validation fails, `Ok(None)` when all pass
/// (or a match condition excludes the request), `Err` when something
/// cannot be evaluated.
fn decide(p: &Policy, ctx: &mut cel::Context<'_>) -> Result<Option<String>, String> {
    let run = |prog: &Result<cel::Program, String>,
               ctx: &cel::Context<'_>|
     -> Result<cel::Value, String> {
        match prog {
            Ok(prog) => prog.execute(ctx).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    };
    for (name, cond) in &p.conditions {
        match run(cond, ctx)? {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => return Ok(None),
            other => return Err(format!("match condition {name} gave {other:?}, not a bool")),
        }
    }
    let mut variables = serde_json::Map::new();
    for (name, var) in &p.variables {
        let _ = ctx.add_variable("variables", Value::Object(variables.clone()));
        let value = run(var, ctx).map_err(|e| format!("variable {name}: {e}"))?;
        let json = value.json().map_err(|e| format!("variable {name}: {e}"))?;
        variables.insert(name.clone(), json);
    }
    let _ = ctx.add_variable("variables", Value::Object(variables));
    for v in &p.validations {
        match run(&v.program, ctx).map_err(|e| format!("`{}`: {e}", v.expression))? {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => {
                let from_expression = v
                    .message_expression
                    .as_ref()
                    .and_then(|m| m.execute(ctx).ok())
                    .and_then(|m| match m {
                        cel::Value::String(s) => Some(s.to_string()),
                        _ => None,
                    });
                return Ok(Some(
                    from_expression
                        .or_else(|| v.message.clone())
                        .unwrap_or_else(|| format!("failed expression: {}", v.expression)),
                ));
            }
            other => return Err(format!("`{}` gave {other:?}, not a bool", v.expression)),
        }
    }
    Ok(None)
}

/// Whether `object` (at `operation`) falls under `m`, a `matchConstraints`
/// or `matchResources`: its resource rules (minus the excluded), its
/// namespace selector (cluster-scoped objects always match) and object
/// selector (the object's or the old object's labels).
fn matches(
    m: &Value,
    object: &Value,
    old: Option<&Value>,
    operation: &str,
    namespace: Option<&Value>,
) -> bool {
    let api = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api.split_once('/').unwrap_or(("", api));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource =
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, kind))
            .plural;
    let rule_matches = |r: &Value| {
        let has = |key: &str, want: &str| {
            r[key]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
        };
        has("apiGroups", group)
            && has("apiVersions", version)
            && has("resources", &resource)
            && (r["operations"].is_null() || has("operations", operation))
    };
    let rules = m["resourceRules"].as_array();
    // A binding's matchResources without rules narrows by selectors only.
    if let Some(rules) = rules
        && !rules.iter().any(rule_matches)
    {
        return false;
    }
    if m["excludeResourceRules"]
        .as_array()
        .is_some_and(|l| l.iter().any(rule_matches))
    {
        return false;
    }
    if let Some(ns) = namespace
        && !m["namespaceSelector"].is_null()
        && !selects(&m["namespaceSelector"], &ns["metadata"]["labels"])
    {
        return false;
    }
    let sel = &m["objectSelector"];
    sel.is_null()
        || selects(sel, &object["metadata"]["labels"])
        || old.is_some_and(|o| selects(sel, &o["metadata"]["labels"]))
}

/// A LabelSelector (`matchLabels`, `matchExpressions` with In, NotIn,
/// Exists, DoesNotExist) over `labels`; an empty selector selects all.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    by_label
        && selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => label(key).is_some_and(|v| values.contains(&v)),
                    "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                    "Exists" => label(key).is_some(),
                    "DoesNotExist" => label(key).is_none(),
                    _ => false,
                }
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vap(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name}, "spec": spec})
    }

    fn binding(name: &str, policy: &str, extra: Value) -> Value {
        let mut spec = json!({"policyName": policy, "validationActions": ["Deny"]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name}, "spec": spec})
    }

    fn deployments() -> Value {
        json!({"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]})
    }

    fn deployment(ns: &str, replicas: i64, image: &str, labels: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": ns, "labels": labels},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "api", "image": image}]}}}})
    }

    fn denied(a: &Admission, o: &Value, old: Option<&Value>) -> Vec<String> {
        a.evaluate(o, old)
            .into_iter()
            .filter(|d| d.deny)
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn replica_limit_registries_and_labels_as_the_documentation_writes_them() {
        let a = Admission::from_objects(&[
            vap(
                "replica-limit",
                json!({"failurePolicy": "Fail", "matchConstraints": deployments(),
                "validations": [{"expression": "object.spec.replicas <= 5"}]}),
            ),
            binding("replica-limit-binding", "replica-limit", json!({})),
            vap(
                "registries",
                json!({"matchConstraints": deployments(), "validations": [{
                "expression": "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
                "message": "images must come from registry.example.com"}]}),
            ),
            binding("registries", "registries", json!({})),
            vap(
                "team-label",
                json!({"matchConstraints": deployments(),
                "variables": [{"name": "labels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"}],
                "validations": [{"expression": "'team' in variables.labels",
                    "messageExpression": "'Deployment ' + object.metadata.name + ' needs a team label'"}]}),
            ),
            binding(
                "team-label",
                "team-label",
                json!({"validationActions": ["Warn"]}),
            ),
        ]);
        let ok = deployment(
            "shop",
            3,
            "registry.example.com/api:1",
            json!({"team": "a"}),
        );
        assert!(a.evaluate(&ok, None).is_empty());
        let bad = deployment("shop", 7, "docker.io/api:1", json!({}));
        assert_eq!(
            denied(&a, &bad, None),
            [
                "ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-binding' denied request: failed expression: object.spec.replicas <= 5",
                "ValidatingAdmissionPolicy 'registries' with binding 'registries' denied request: images must come from registry.example.com",
            ]
        );
        let warned: Vec<String> = a
            .evaluate(&bad, None)
            .into_iter()
            .filter(|d| !d.deny)
            .map(|d| d.message)
            .collect();
        assert_eq!(
            warned,
            [
                "ValidatingAdmissionPolicy 'team-label' with binding 'team-label' denied request: Deployment api needs a team label"
            ]
        );
        // Other kinds are not matched.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}});
        assert!(a.evaluate(&cm, None).is_empty());
    }

    #[test]
    fn params_old_objects_and_namespace_selectors() {
        let a = Admission::from_objects(&[
            vap(
                "max-replicas",
                json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": deployments(),
                "validations": [{"expression": "object.spec.replicas <= int(params.data.maxReplicas)"}]}),
            ),
            binding(
                "max-replicas-test",
                "max-replicas",
                json!({
                "paramRef": {"name": "replica-limit", "namespace": "default", "parameterNotFoundAction": "Deny"},
                "matchResources": {"namespaceSelector": {"matchLabels": {"environment": "test"}}}}),
            ),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "replica-limit", "namespace": "default"},
                "data": {"maxReplicas": "3"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test-ns", "labels": {"environment": "test"}}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod-ns", "labels": {"environment": "production"}}}),
            vap(
                "no-scale-down",
                json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["deployments"]}]},
                "validations": [{"expression": "object.spec.replicas >= oldObject.spec.replicas", "message": "scaling down goes through the capacity review"}]}),
            ),
            binding("no-scale-down", "no-scale-down", json!({})),
        ]);
        let four_in_test = deployment("test-ns", 4, "x", json!({}));
        assert_eq!(
            denied(&a, &four_in_test, None),
            [
                "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-test' denied request: failed expression: object.spec.replicas <= int(params.data.maxReplicas)"
            ]
        );
        // The binding's namespace selector leaves production alone.
        assert!(denied(&a, &deployment("prod-ns", 4, "x", json!({})), None).is_empty());
        // oldObject: an update from 3 to 2 is refused, a create is not
        // matched by an UPDATE-only rule.
        let old = deployment("prod-ns", 3, "x", json!({}));
        let new = deployment("prod-ns", 2, "x", json!({}));
        assert_eq!(
            denied(&a, &new, Some(&old)),
            [
                "ValidatingAdmissionPolicy 'no-scale-down' with binding 'no-scale-down' denied request: scaling down goes through the capacity review"
            ]
        );
        assert!(denied(&a, &new, None).is_empty());
        // No parameter object: Deny refuses, as the API server does.
        let none = Admission::from_objects(&[
            vap(
                "max-replicas",
                json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": deployments(), "validations": [{"expression": "true"}]}),
            ),
            binding(
                "b",
                "max-replicas",
                json!({"paramRef": {"name": "missing", "namespace": "default", "parameterNotFoundAction": "Deny"}}),
            ),
        ]);
        assert_eq!(
            denied(&none, &four_in_test, None),
            [
                "ValidatingAdmissionPolicy 'max-replicas' with binding 'b' denied request: no params found for policy binding with `Deny` parameterNotFoundAction (ConfigMap missing)"
            ]
        );
    }

    #[test]
    fn what_cel_here_cannot_evaluate_is_said_never_decided() {
        let a = Admission::from_objects(&[
            vap(
                "memory",
                json!({"matchConstraints": deployments(), "validations": [{
                "expression": "quantity('1Gi').isGreaterThan(quantity('1Mi'))"}]}),
            ),
            binding("memory", "memory", json!({})),
        ]);
        let d = a.evaluate(&deployment("shop", 1, "x", json!({})), None);
        assert_eq!(d.len(), 1);
        assert!(!d[0].deny);
        assert!(
            d[0].message.contains("not evaluated offline"),
            "{}",
            d[0].message
        );
        assert!(
            d[0].message.contains("failurePolicy Fail"),
            "{}",
            d[0].message
        );
    }
}
