//! Fidelity after apply: each object the API server answered an apply with,
//! compared with what kdeploy sent on the fields kdeploy sent. A mutating
//! webhook that rewrote an image, a defaulting that replaced a value, a
//! field the server dropped: each is a mismatch the check run lists, so
//! "N of M resources exactly as planned" is evidence, not a claim.

use serde::Serialize;
use serde_json::Value;

use crate::resource::Resource;

/// How exactly one deploy's writes matched what was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fidelity {
    /// Resources whose stored object has every sent field as sent.
    pub exact: usize,
    /// Resources compared (every applied one of a real deploy).
    pub compared: usize,
    /// Each field that differs: `apps/Deployment shop/api:
    /// spec.template.spec.containers[0].image: sent …, stored …`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
}

impl Fidelity {
    /// Counts one resource with its mismatching fields.
    pub(super) fn add(&mut self, r: &Resource, fields: Vec<String>) {
        self.compared += 1;
        if fields.is_empty() {
            self.exact += 1;
        }
        self.mismatches
            .extend(fields.into_iter().map(|f| format!("{}: {f}", r.id)));
    }

    /// `12 of 12 resources exactly as planned`.
    pub fn line(&self) -> String {
        format!(
            "{} of {} resources exactly as planned",
            self.exact, self.compared
        )
    }
}

/// The fields of `sent` whose value in `stored` differs: `path: sent X,
/// stored Y` (values left out for a Secret). Nulls and empty maps or
/// lists sent are not compared (the server drops them); quantities and
/// numbers compare by value (`1000m` is `1`).
pub(super) fn mismatches(r: &Resource, stored: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(&r.object, stored, String::new(), &mut out);
    let secret = r.id.group.is_empty() && r.id.kind == "Secret";
    out.into_iter()
        .map(|(path, sent, got)| {
            if secret {
                format!("{path}: differs (values not shown)")
            } else {
                format!(
                    "{path}: sent {}, stored {}",
                    crate::yaml::show(&sent),
                    crate::yaml::show(&got)
                )
            }
        })
        .collect()
}

fn walk(sent: &Value, stored: &Value, at: String, out: &mut Vec<(String, Value, Value)>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (sent, stored) {
        (Value::Null, _) => {}
        (Value::Object(x), _) if x.is_empty() => {}
        (Value::Array(x), _) if x.is_empty() => {}
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                walk(v, y.get(k).unwrap_or(&Value::Null), join(k), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(p, q, format!("{at}[{i}]"), out);
            }
        }
        _ if same(sent, stored) => {}
        _ => out.push((at, sent.clone(), stored.clone())),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => {
            match (
                crate::validate::fields::quantity_value(x),
                crate::validate::fields::quantity_value(y),
            ) {
                (Some(p), Some(q)) => (p - q).abs() <= f64::EPSILON * p.abs().max(1.0),
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rewritten_image_is_a_mismatch_and_normalized_values_are_not() {
        let r = Resource::for_tests(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop", "annotations": {}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "api", "image": "api:2", "resources": {"limits": {"cpu": "1000m"}}, "env": null}
            ]}}}
        }));
        let stored = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop", "uid": "u", "managedFields": []},
            "spec": {"replicas": 2.0, "strategy": {"type": "RollingUpdate"}, "template": {"spec": {"containers": [
                {"name": "api", "image": "api:2@sha256:abc", "resources": {"limits": {"cpu": "1"}}}
            ]}}},
            "status": {}
        });
        assert_eq!(
            mismatches(&r, &stored),
            ["spec.template.spec.containers[0].image: sent api:2, stored api:2@sha256:abc"]
        );
        let mut f = Fidelity::default();
        f.add(&r, mismatches(&r, &stored));
        f.add(&r, Vec::new());
        assert_eq!(f.line(), "1 of 2 resources exactly as planned");
    }
}
