//! What the API server will refuse or regret, found at plan time: changes
//! to immutable fields, API versions removed (or deprecated) in the
//! environment's Kubernetes version, and deletions that cascade.
//!
//! The lists follow the API server's validation (`ValidateDeploymentUpdate`,
//! `ValidateStatefulSetUpdate`, `ValidateService`, ...) and Kubernetes'
//! deprecated API migration guide; each entry says what the server says.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::KubeVersion;
use crate::resource::Resource;

/// One warning on a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// `immutable-field`, `removed-api`, `deprecated-api`, `cascade`,
    /// `not-deployed`, `not-honoured` or `needs-consent`.
    pub code: &'static str,
    /// JSON Pointer of the field (`/spec/selector`), or `/apiVersion`, or
    /// empty for the whole resource.
    pub path: String,
    /// What happens and what to do.
    pub message: String,
}

/// Annotations of other tools that change how a resource is deployed, where
/// kdeploy does something else: a hook of an event kdeploy has no moment
/// for is not deployed at all, and Argo CD's sync options are not read.
pub fn foreign(res: &Resource) -> Vec<Warning> {
    let mut out = Vec::new();
    if let crate::hooks::Role::Unused(event) = crate::hooks::role(res) {
        out.push(Warning {
            code: "not-deployed",
            path: "/metadata/annotations".into(),
            message: format!(
                "a hook of `{event}`: kdeploy runs hooks before (pre-deploy) and after (post-deploy) a deploy only, so this one is not deployed; annotate it `kdeploy.io/hook: pre-deploy` or `post-deploy` to run it"
            ),
        });
    }
    if let Some(options) =
        res.object["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].as_str()
    {
        out.push(Warning {
            code: "not-honoured",
            path: "/metadata/annotations/argocd.argoproj.io~1sync-options".into(),
            message: format!(
                "Argo CD sync options `{options}` are not read by kdeploy: it applies server-side and prunes what it deployed and the head no longer has (to keep a resource, keep it in the config; to replace one, `kdeploy.io/update-strategy: replace`)"
            ),
        });
    }
    out
}

/// The newest Kubernetes version whose API kdeploy is compiled against
/// (k8s-openapi's `latest` feature): the target when an environment sets
/// no `kubernetesVersion`.
pub const NEWEST: KubeVersion = KubeVersion {
    major: 1,
    minor: 37,
};

/// An API version that was (or will be) removed.
struct Removal {
    api_version: &'static str,
    kinds: &'static [&'static str],
    deprecated: (u32, u32),
    removed: (u32, u32),
    replacement: &'static str,
}

const fn r(
    api_version: &'static str,
    kinds: &'static [&'static str],
    deprecated: (u32, u32),
    removed: (u32, u32),
    replacement: &'static str,
) -> Removal {
    Removal {
        api_version,
        kinds,
        deprecated,
        removed,
        replacement,
    }
}

/// Kubernetes' deprecated API migration guide, as data. An empty `kinds`
/// means every kind of that group version.
const REMOVALS: &[Removal] = &[
    r(
        "extensions/v1beta1",
        &["Deployment", "DaemonSet", "ReplicaSet"],
        (1, 8),
        (1, 16),
        "apps/v1",
    ),
    r(
        "extensions/v1beta1",
        &["NetworkPolicy"],
        (1, 9),
        (1, 16),
        "networking.k8s.io/v1",
    ),
    r(
        "extensions/v1beta1",
        &["PodSecurityPolicy"],
        (1, 10),
        (1, 16),
        "policy/v1beta1 (itself removed in 1.25: use Pod Security Admission)",
    ),
    r(
        "extensions/v1beta1",
        &["Ingress"],
        (1, 14),
        (1, 22),
        "networking.k8s.io/v1",
    ),
    r("apps/v1beta1", &[], (1, 9), (1, 16), "apps/v1"),
    r("apps/v1beta2", &[], (1, 9), (1, 16), "apps/v1"),
    r(
        "networking.k8s.io/v1beta1",
        &["Ingress", "IngressClass"],
        (1, 19),
        (1, 22),
        "networking.k8s.io/v1",
    ),
    r(
        "rbac.authorization.k8s.io/v1beta1",
        &[],
        (1, 17),
        (1, 22),
        "rbac.authorization.k8s.io/v1",
    ),
    r(
        "apiextensions.k8s.io/v1beta1",
        &[],
        (1, 16),
        (1, 22),
        "apiextensions.k8s.io/v1",
    ),
    r(
        "admissionregistration.k8s.io/v1beta1",
        &[],
        (1, 16),
        (1, 22),
        "admissionregistration.k8s.io/v1",
    ),
    r(
        "apiregistration.k8s.io/v1beta1",
        &[],
        (1, 19),
        (1, 22),
        "apiregistration.k8s.io/v1",
    ),
    r(
        "scheduling.k8s.io/v1beta1",
        &[],
        (1, 14),
        (1, 22),
        "scheduling.k8s.io/v1",
    ),
    r(
        "coordination.k8s.io/v1beta1",
        &[],
        (1, 14),
        (1, 22),
        "coordination.k8s.io/v1",
    ),
    r(
        "certificates.k8s.io/v1beta1",
        &[],
        (1, 19),
        (1, 22),
        "certificates.k8s.io/v1",
    ),
    r(
        "storage.k8s.io/v1beta1",
        &["CSIDriver", "CSINode", "StorageClass", "VolumeAttachment"],
        (1, 19),
        (1, 22),
        "storage.k8s.io/v1",
    ),
    r("batch/v1beta1", &["CronJob"], (1, 21), (1, 25), "batch/v1"),
    r(
        "policy/v1beta1",
        &["PodDisruptionBudget"],
        (1, 21),
        (1, 25),
        "policy/v1",
    ),
    r(
        "policy/v1beta1",
        &["PodSecurityPolicy"],
        (1, 21),
        (1, 25),
        "nothing (use Pod Security Admission)",
    ),
    r(
        "autoscaling/v2beta1",
        &["HorizontalPodAutoscaler"],
        (1, 22),
        (1, 25),
        "autoscaling/v2",
    ),
    r(
        "autoscaling/v2beta2",
        &["HorizontalPodAutoscaler"],
        (1, 23),
        (1, 26),
        "autoscaling/v2",
    ),
    r(
        "discovery.k8s.io/v1beta1",
        &["EndpointSlice"],
        (1, 21),
        (1, 25),
        "discovery.k8s.io/v1",
    ),
    r(
        "events.k8s.io/v1beta1",
        &["Event"],
        (1, 22),
        (1, 25),
        "events.k8s.io/v1",
    ),
    r(
        "node.k8s.io/v1beta1",
        &["RuntimeClass"],
        (1, 22),
        (1, 25),
        "node.k8s.io/v1",
    ),
    r(
        "flowcontrol.apiserver.k8s.io/v1beta1",
        &[],
        (1, 23),
        (1, 26),
        "flowcontrol.apiserver.k8s.io/v1",
    ),
    r(
        "flowcontrol.apiserver.k8s.io/v1beta2",
        &[],
        (1, 26),
        (1, 29),
        "flowcontrol.apiserver.k8s.io/v1",
    ),
    r(
        "flowcontrol.apiserver.k8s.io/v1beta3",
        &[],
        (1, 29),
        (1, 32),
        "flowcontrol.apiserver.k8s.io/v1",
    ),
    r(
        "storage.k8s.io/v1beta1",
        &["CSIStorageCapacity"],
        (1, 24),
        (1, 27),
        "storage.k8s.io/v1",
    ),
    // Deprecated and still served: kept here with a removal far ahead so
    // that they warn as deprecated and never as removed.
    r(
        "v1",
        &["Endpoints"],
        (1, 33),
        (99, 0),
        "discovery.k8s.io/v1 EndpointSlice",
    ),
    r("v1", &["ComponentStatus"], (1, 19), (99, 0), "nothing"),
];

/// `removed-api` or `deprecated-api` for a resource's apiVersion at
/// Kubernetes `target`.
pub fn api_version(res: &Resource, target: KubeVersion) -> Option<Warning> {
    let kind = res.id.kind.as_str();
    let entry = REMOVALS.iter().find(|e| {
        e.api_version == res.api_version && (e.kinds.is_empty() || e.kinds.contains(&kind))
    })?;
    let at = |v: (u32, u32)| KubeVersion {
        major: v.0,
        minor: v.1,
    };
    let to = if entry.replacement.starts_with("nothing") {
        entry.replacement.to_string()
    } else {
        format!("`{}`", entry.replacement)
    };
    if target >= at(entry.removed) {
        Some(Warning {
            code: "removed-api",
            path: "/apiVersion".into(),
            message: format!(
                "`{}` {kind} was removed in Kubernetes {}.{}; the cluster ({target}) will refuse it: use {to}",
                res.api_version, entry.removed.0, entry.removed.1
            ),
        })
    } else if target >= at(entry.deprecated) {
        let removal = if entry.removed.0 == 99 {
            String::new()
        } else {
            format!(", removed in {}.{}", entry.removed.0, entry.removed.1)
        };
        Some(Warning {
            code: "deprecated-api",
            path: "/apiVersion".into(),
            message: format!(
                "`{}` {kind} is deprecated since Kubernetes {}.{}{removal}: move to {to}",
                res.api_version, entry.deprecated.0, entry.deprecated.1
            ),
        })
    } else {
        None
    }
}

/// Top-level fields of a StatefulSet's spec that may change; the API server
/// forbids updates to any other.
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

/// Kinds with fields the API server refuses to update: what apply
/// dry-runs before its first write.
pub fn has_immutable_fields(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "apps",
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet"
        ) | ("batch", "Job")
            | (
                "",
                "Service" | "PersistentVolumeClaim" | "ConfigMap" | "Secret"
            )
            | (
                "rbac.authorization.k8s.io",
                "RoleBinding" | "ClusterRoleBinding"
            )
            | ("storage.k8s.io", "StorageClass")
    )
}

fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|v| !v.is_null())
}

/// Immutable fields that differ between `old` and `new` (same id), as
/// JSON Pointers with the API server's reason. A field set on one side
/// only is not counted when the server defaults it (a Service's clusterIP).
pub fn immutable_fields(old: &Resource, new: &Resource) -> Vec<(String, &'static str)> {
    let (o, n) = (&old.object, &new.object);
    let mut found = Vec::new();
    let mut both_set = |pointer: &str, why: &'static str| {
        if let (Some(a), Some(b)) = (at(o, pointer), at(n, pointer))
            && a != b
        {
            found.push((pointer.to_string(), why));
        }
    };
    let group = new.id.group.as_str();
    match (group, new.id.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            both_set(
                "/spec/selector",
                "the selector of apps/v1 workloads is immutable",
            );
        }
        ("apps", "StatefulSet") => {
            both_set(
                "/spec/selector",
                "the selector of apps/v1 workloads is immutable",
            );
            let keys = |v: &Value| {
                v.pointer("/spec")
                    .and_then(Value::as_object)
                    .map(|m| m.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let mut fields = keys(o);
            fields.extend(keys(n));
            fields.sort();
            fields.dedup();
            for f in fields {
                if f == "selector" || STATEFULSET_MUTABLE.contains(&f.as_str()) {
                    continue;
                }
                let p = format!("/spec/{f}");
                if o.pointer(&p) != n.pointer(&p) {
                    found.push((p, "a StatefulSet's spec may change only in replicas, template, updateStrategy, persistentVolumeClaimRetentionPolicy, minReadySeconds and ordinals"));
                }
            }
        }
        ("batch", "Job") => {
            both_set("/spec/selector", "a Job's selector is immutable");
            both_set("/spec/template", "a Job's pod template is immutable");
            both_set(
                "/spec/completionMode",
                "a Job's completionMode is immutable",
            );
        }
        ("", "Service") => {
            both_set(
                "/spec/clusterIP",
                "a Service's clusterIP cannot be changed once set",
            );
            both_set(
                "/spec/clusterIPs/0",
                "a Service's primary clusterIP cannot be changed once set",
            );
        }
        ("", "PersistentVolumeClaim") => {
            let spec = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = s.as_object_mut() {
                    m.remove("resources");
                    m.remove("volumeAttributesClassName");
                    m.remove("volumeName");
                }
                s
            };
            if spec(o) != spec(n) {
                found.push(("/spec".into(), "a bound claim's spec is immutable except resources.requests (storage may only grow)"));
            }
            let storage = |v: &Value| {
                at(v, "/spec/resources/requests/storage")
                    .and_then(Value::as_str)
                    .and_then(crate::validate::fields::quantity_value)
            };
            if let (Some(a), Some(b)) = (storage(o), storage(n))
                && b < a
            {
                found.push((
                    "/spec/resources/requests/storage".into(),
                    "a claim's storage request can only grow",
                ));
            }
        }
        ("", "ConfigMap" | "Secret") if at(o, "/immutable") == Some(&Value::Bool(true)) => {
            for f in ["/data", "/binaryData", "/stringData", "/immutable"] {
                if o.pointer(f) != n.pointer(f) {
                    found.push((f.to_string(), "the object is marked `immutable: true`"));
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            both_set("/roleRef", "a binding's roleRef is immutable");
        }
        ("storage.k8s.io", "StorageClass") => {
            for f in [
                "/provisioner",
                "/parameters",
                "/reclaimPolicy",
                "/volumeBindingMode",
            ] {
                if o.pointer(f) != n.pointer(f) {
                    found.push((f.to_string(), "a StorageClass's provisioner, parameters, reclaimPolicy and volumeBindingMode are immutable"));
                }
            }
        }
        _ => {}
    }
    if new.id.group.is_empty()
        && new.id.kind == "Secret"
        && let (Some(a), Some(b)) = (at(o, "/type"), at(n, "/type"))
        && a != b
    {
        found.push(("/type".into(), "a Secret's type is immutable"));
    }
    found
}

/// What the base state says a deletion takes with it.
#[derive(Debug, Default)]
pub struct Contents {
    /// Resources per (env, namespace).
    by_namespace: BTreeMap<(String, String), usize>,
    /// Resources per (env, group, kind).
    by_kind: BTreeMap<(String, String, String), usize>,
}

impl Contents {
    /// Counts the resources of the base state.
    pub fn of<'a>(resources: impl Iterator<Item = (&'a str, &'a Resource)>) -> Contents {
        let mut c = Contents::default();
        for (env, r) in resources {
            if let Some(ns) = &r.id.namespace {
                *c.by_namespace
                    .entry((env.to_string(), ns.clone()))
                    .or_default() += 1;
            }
            *c.by_kind
                .entry((env.to_string(), r.id.group.clone(), r.id.kind.clone()))
                .or_default() += 1;
        }
        c
    }

    /// `cascade` for deleting a Namespace or a CustomResourceDefinition.
    pub fn cascade(&self, env: &str, old: &Resource) -> Option<Warning> {
        match (old.id.group.as_str(), old.id.kind.as_str()) {
            ("", "Namespace") => {
                let n = self
                    .by_namespace
                    .get(&(env.to_string(), old.id.name.clone()))
                    .copied()
                    .unwrap_or(0);
                Some(Warning {
                    code: "cascade",
                    path: String::new(),
                    message: format!(
                        "deleting Namespace `{}` deletes everything in it: {n} resource{} the config had there, and whatever else runs in it (Pods, PersistentVolumeClaims and their data, Secrets)",
                        old.id.name,
                        if n == 1 { "" } else { "s" }
                    ),
                })
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                let group = old
                    .object
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let kind = old
                    .object
                    .pointer("/spec/names/kind")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let n = self
                    .by_kind
                    .get(&(env.to_string(), group.to_string(), kind.to_string()))
                    .copied()
                    .unwrap_or(0);
                Some(Warning {
                    code: "cascade",
                    path: String::new(),
                    message: format!(
                        "deleting CustomResourceDefinition `{}` deletes every {kind} in the cluster: {n} in the config, and all others",
                        old.id.name
                    ),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_annotations_kdeploy_does_not_honour_are_named() {
        let hook = Resource::for_tests(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "n", "namespace": "ns", "annotations": {
                "argocd.argoproj.io/hook": "SyncFail",
                "argocd.argoproj.io/sync-options": "Prune=false"}}
        }));
        let found = foreign(&hook);
        let codes: Vec<&str> = found.iter().map(|w| w.code).collect();
        assert_eq!(codes, ["not-deployed", "not-honoured"]);
        assert!(
            found[0]
                .message
                .contains("argocd.argoproj.io/hook: SyncFail")
        );
        assert!(found[1].message.contains("`Prune=false`"));
        let plain = Resource::for_tests(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n", "namespace": "ns"}
        }));
        assert!(foreign(&plain).is_empty());
    }
}
