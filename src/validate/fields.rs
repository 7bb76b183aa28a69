//! The field rules the API server enforces beyond types: object names,
//! label values, quantities, replica counts, ports and image references.
//!
//! The schemas compiled into kdeploy say that `replicas` is an integer and
//! `cpu` a string; the API server also refuses `replicas: -3`, `cpu: lots`,
//! `metadata.name: Bad_Name` and an image that is not a reference. Those are
//! checked here, offline, so `validate` and `plan` fail where `apply` would.

use serde_json::Value;

use crate::resource::Resource;

/// One broken rule: the field path, what is wrong, and the offending value
/// (used to find the user's line that set it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path in the object.
    pub path: String,
    /// What is wrong, in the API server's terms.
    pub message: String,
    /// The offending scalar as written, when it is one.
    pub value: Option<String>,
}

/// True for a DNS-1123 subdomain: what most objects may be named.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(crate::config::is_dns_label_any_length)
}

/// A label value: at most 63 characters, alphanumerics with `-_.` inside.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// The value of a quantity as a float (`1Gi` = 2^30, `500M` = 5e8), for
/// comparing two sizes; `None` when it is not a quantity.
pub fn quantity_value(s: &str) -> Option<f64> {
    if !is_quantity(s) {
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e => 10f64.powi(e[1..].parse().ok()?),
    };
    Some(n * scale)
}

/// A Kubernetes quantity (`100m`, `1.5Gi`, `2e3`), as `resource.ParseQuantity` takes it.
pub fn is_quantity(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits_end);
    let valid_number = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let valid_suffix = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        e => {
            let exp = e.strip_prefix(['e', 'E']);
            exp.is_some_and(|x| {
                let x = x.strip_prefix(['+', '-']).unwrap_or(x);
                !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit())
            })
        }
    };
    valid_number && valid_suffix
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Kinds named as a DNS-1123 label rather than a subdomain.
const LABEL_NAMED: &[(&str, &str)] = &[("", "Namespace"), ("", "Service")];

/// RBAC kinds, whose names are path segments (`system:controller:x`).
const PATH_SEGMENT_NAMED: &[&str] = &["rbac.authorization.k8s.io"];

/// Checks one resource. `builtin` is false for custom kinds, whose names the
/// API server checks only as path segments and whose fields are the CRD's.
pub fn check(res: &Resource, builtin: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut push = |path: &str, message: String, value: Option<String>| {
        out.push(Problem {
            path: path.to_string(),
            message,
            value,
        });
    };
    let name = res.id.name.as_str();
    let group = res.id.group.as_str();
    let kind = res.id.kind.as_str();
    let path_segment = !builtin || PATH_SEGMENT_NAMED.contains(&group);
    if path_segment {
        if matches!(name, "." | "..") || name.contains(['/', '%']) {
            push(
                "metadata.name",
                format!("`{name}` may not be `.` or `..` or contain `/` or `%`"),
                Some(name.to_string()),
            );
        }
    } else if LABEL_NAMED.contains(&(group, kind)) {
        if !crate::config::is_dns_label(name) {
            push(
                "metadata.name",
                format!(
                    "`{name}` is not a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)"
                ),
                Some(name.to_string()),
            );
        }
    } else if !is_dns_subdomain(name) {
        push(
            "metadata.name",
            format!(
                "`{name}` is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ),
            Some(name.to_string()),
        );
    }
    if let Some(ns) = &res.id.namespace
        && !crate::config::is_dns_label(ns)
    {
        push(
            "metadata.namespace",
            format!("`{ns}` is not a DNS-1123 label"),
            Some(ns.clone()),
        );
    }
    let labels = res.object["metadata"]["labels"].as_object();
    for (key, value) in labels.into_iter().flatten() {
        if let Some(text) = scalar_text(value)
            && !is_label_value(&text)
        {
            push(
                &format!("metadata.labels.{key}"),
                format!(
                    "label value `{text}` must be at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
                ),
                Some(text),
            );
        }
    }
    // A CRD's schema names fields `limits`, `port` or `replicas` with
    // schemas as values: the rules below are for objects, not schemas.
    if builtin && kind != "CustomResourceDefinition" {
        walk(&res.object, &mut String::new(), &mut push);
    }
    out
}

/// Fields checked wherever they appear in a built-in object. `path` is
/// one buffer for the whole walk (extended and cut back per field: most
/// fields need no path at all).
fn walk(v: &Value, path: &mut String, push: &mut impl FnMut(&str, String, Option<String>)) {
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                let parent = path.len();
                if parent > 0 {
                    path.push('.');
                }
                path.push_str(key);
                let p = path.as_str();
                match (key.as_str(), child) {
                    ("replicas" | "minReplicas" | "maxReplicas", Value::Number(n))
                        if n.as_i64().is_some_and(|x| x < 0) =>
                    {
                        push(
                            p,
                            format!("must be 0 or more, found {n}"),
                            Some(n.to_string()),
                        );
                    }
                    ("containerPort" | "hostPort" | "port" | "targetPort", Value::Number(n))
                        if !n.as_i64().is_some_and(|x| (1..=65535).contains(&x)) =>
                    {
                        push(
                            p,
                            format!("must be a port number from 1 to 65535, found {n}"),
                            Some(n.to_string()),
                        );
                    }
                    ("nodePort", Value::Number(n))
                        if !n.as_i64().is_some_and(|x| (0..=65535).contains(&x)) =>
                    {
                        push(
                            p,
                            format!("must be a port number from 1 to 65535, found {n}"),
                            Some(n.to_string()),
                        );
                    }
                    ("requests" | "limits" | "hard" | "capacity", Value::Object(q)) => {
                        for (res_name, amount) in q {
                            let text = scalar_text(amount);
                            let ok = match amount {
                                Value::Number(_) => true,
                                Value::String(s) => is_quantity(s),
                                _ => false,
                            };
                            if !ok {
                                push(
                                    &format!("{p}.{res_name}"),
                                    format!(
                                        "`{}` is not a quantity (e.g. 500m, 1, 256Mi, 2Gi)",
                                        text.clone().unwrap_or_else(|| amount.to_string())
                                    ),
                                    text,
                                );
                            }
                        }
                    }
                    ("sizeLimit" | "storage", Value::String(s)) if !is_quantity(s) => {
                        push(
                            p,
                            format!("`{s}` is not a quantity (e.g. 1Gi)"),
                            Some(s.clone()),
                        );
                    }
                    (
                        "containers" | "initContainers" | "ephemeralContainers",
                        Value::Array(list),
                    ) => {
                        for (i, c) in list.iter().enumerate() {
                            if let Some(image) = c["image"].as_str()
                                && let Err(why) = super::image_ref::check(image)
                            {
                                push(&format!("{p}[{i}].image"), why, Some(image.to_string()));
                            }
                        }
                        walk(child, path, push);
                    }
                    _ => walk(child, path, push),
                }
                path.truncate(parent);
            }
        }
        Value::Array(items) => {
            let parent = path.len();
            for (i, item) in items.iter().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                walk(item, path, push);
                path.truncate(parent);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_value("1Gi"), Some(1_073_741_824.0));
        assert!(quantity_value("1Gi") > quantity_value("1000M"));
        assert_eq!(quantity_value("2e3"), Some(2000.0));
        assert_eq!(quantity_value("1.5Gib"), None);
        for ok in [
            "1", "100m", "1.5Gi", "2e3", "0.5", "+1", "512Mi", ".5", "1E6",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["lots", "", "1.2.3", "1Gb", "Mi", "1 Gi", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn crd_schemas_are_not_read_as_objects() {
        let crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "limits": {"type": "object"}, "port": {"type": "integer"}, "replicas": {"type": "integer", "minimum": -1}}}}}]}});
        let res = Resource {
            id: crate::resource::ResourceId {
                group: "apiextensions.k8s.io".into(),
                kind: "CustomResourceDefinition".into(),
                namespace: None,
                name: "widgets.example.com".into(),
            },
            api_version: "apiextensions.k8s.io/v1".into(),
            object: crd,
            origin: crate::resource::Origin {
                env: "prod".into(),
                app: "a".into(),
                file: "crd.yaml".into(),
                document: 0,
                line: 1,
            },
        };
        assert_eq!(check(&res, true), []);
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Bad_Name"));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("-x"));
    }
}
