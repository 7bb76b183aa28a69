//! The values every stage shares: [`ResourceId`], [`Resource`] and where a
//! resource came from ([`Origin`]).
//!
//! Identity follows Kubernetes: group, kind, namespace and name. The API
//! version is not part of it, so `apps/v1beta2` -> `apps/v1` is a change.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The identity of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceId {
    /// API group, empty for the core group.
    pub group: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ResourceId {
    /// `apps/Deployment shop/api`, `Service shop/api`, `Namespace shop`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.group.is_empty() {
            write!(f, "{}/", self.group)?;
        }
        write!(f, "{} ", self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// A resource id with its hash, computed once. Checks across releases and
/// the plan look up every id of every release; hashing an id's four strings,
/// read cold from memory, on each lookup, insert and table growth was most of
/// their time. Ids are compared only when their hashes are equal.
#[derive(Debug, Clone, Copy)]
pub struct HashedId<'a> {
    hash: u64,
    /// The id.
    pub id: &'a ResourceId,
}

impl<'a> HashedId<'a> {
    /// `id` and its hash (a fixed hasher: equal ids, equal hashes).
    pub fn new(id: &'a ResourceId) -> HashedId<'a> {
        use std::hash::BuildHasher as _;
        let state = foldhash::fast::FixedState::with_seed(0x006b_6465_706c_6f79);
        HashedId {
            hash: state.hash_one(id),
            id,
        }
    }
}

impl std::hash::Hash for HashedId<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for HashedId<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for HashedId<'_> {}

/// Where a resource was produced, so errors and annotations can point at it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Environment of the release.
    pub env: String,
    /// App of the release.
    pub app: String,
    /// The template (or manifest file) path, relative to the config repo.
    pub file: String,
    /// 0-based index of the document in that file's output.
    pub document: usize,
    /// 1-based line of the document in that file's output.
    pub line: usize,
}

/// One rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Its identity.
    pub id: ResourceId,
    /// `apiVersion`, kept apart from the id.
    pub api_version: String,
    /// The whole object, with `metadata.namespace` filled in for namespaced kinds.
    pub object: Value,
    /// Where it came from.
    pub origin: Origin,
}

/// Why deleting an object of this kind loses data, if it does: what a
/// deploy deletes only with consent ([`crate::apply::consent`]) and a plan
/// warns about.
pub fn data_bearing(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "Namespace") => Some("a Namespace: everything in it is deleted too"),
        ("", "PersistentVolumeClaim") => Some("a PersistentVolumeClaim: its volume's data"),
        ("", "PersistentVolume") => Some("a PersistentVolume: its data"),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            Some("a CustomResourceDefinition: every custom resource of it is deleted too")
        }
        ("apps", "StatefulSet") => Some("a StatefulSet: its volume claims may hold data"),
        _ => None,
    }
}

/// SHA-256 of the object's canonical JSON (sorted keys), shortened: what
/// deploy records and plan fingerprints compare.
pub fn content_hash(object: &Value) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(object.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
impl Resource {
    /// A resource of `object` as unit tests need one: identity read from
    /// its apiVersion, kind and metadata, rendered by `x.yaml` for staging/app.
    pub(crate) fn for_tests(object: Value) -> Resource {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let api_version = text(&object["apiVersion"]);
        Resource {
            id: ResourceId {
                group: split_api_version(&api_version).0.to_string(),
                kind: text(&object["kind"]),
                namespace: object["metadata"]["namespace"].as_str().map(str::to_string),
                name: text(&object["metadata"]["name"]),
            },
            api_version,
            object,
            origin: Origin {
                env: "staging".into(),
                app: "app".into(),
                file: "x.yaml".into(),
                document: 0,
                line: 1,
            },
        }
    }
}

/// Built-in kinds that live outside namespaces, by (group, kind).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

/// True for built-in cluster-scoped kinds. Custom kinds are namespaced unless
/// a CRD in the same state says otherwise (see [`crd_scopes`]).
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

/// (group, kind) of custom kinds that CRDs in `objects` declare cluster-scoped.
pub fn crd_scopes<'a>(objects: impl Iterator<Item = &'a Value>) -> Vec<(String, String)> {
    objects
        .filter(|o| o["kind"] == "CustomResourceDefinition" && o["spec"]["scope"] == "Cluster")
        .filter_map(|o| {
            Some((
                o["spec"]["group"].as_str()?.to_string(),
                o["spec"]["names"]["kind"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Apply order rank of a kind: what others depend on goes first.
/// Deletions use the reverse order.
pub fn kind_rank(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("", "Namespace") => 0,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
        ("", "ResourceQuota" | "LimitRange") | ("networking.k8s.io", "NetworkPolicy") => 2,
        ("policy", "PodDisruptionBudget") | ("scheduling.k8s.io", "PriorityClass") => 3,
        ("", "ServiceAccount") => 4,
        ("rbac.authorization.k8s.io", "ClusterRole" | "Role") => 5,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding" | "RoleBinding") => 6,
        ("", "ConfigMap" | "Secret") => 7,
        ("storage.k8s.io", _) | ("", "PersistentVolume" | "PersistentVolumeClaim") => 8,
        ("", "Service") => 9,
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job" | "CronJob")
        | ("", "Pod" | "ReplicationController") => 10,
        ("autoscaling", "HorizontalPodAutoscaler") => 11,
        ("networking.k8s.io", "Ingress" | "IngressClass") => 12,
        ("admissionregistration.k8s.io", _) => 13,
        _ => 14,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_ids_are_equal_only_when_the_ids_are() {
        let id = |ns: Option<&str>, name: &str| ResourceId {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        };
        let (a, a2, b, c) = (
            id(Some("shop"), "api"),
            id(Some("shop"), "api"),
            id(Some("shop"), "web"),
            id(None, "api"),
        );
        assert_eq!(HashedId::new(&a), HashedId::new(&a2));
        assert_ne!(HashedId::new(&a), HashedId::new(&b));
        assert_ne!(HashedId::new(&a), HashedId::new(&c));
        // Two ids whose hashes collide are still two ids.
        let (x, y) = (HashedId { hash: 7, id: &a }, HashedId { hash: 7, id: &b });
        assert_ne!(x, y);
        let map: std::collections::HashMap<_, _> = [(x, 1), (y, 2)].into_iter().collect();
        assert_eq!(
            (map.len(), map.get(&x), map.get(&y)),
            (2, Some(&1), Some(&2))
        );
    }

    #[test]
    fn display_names_group_kind_namespace_name() {
        let id = ResourceId {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "api".into(),
        };
        assert_eq!(id.to_string(), "apps/Deployment shop/api");
        let ns = ResourceId {
            group: String::new(),
            kind: "Namespace".into(),
            namespace: None,
            name: "shop".into(),
        };
        assert_eq!(ns.to_string(), "Namespace shop");
    }

    #[test]
    fn order_puts_namespaces_and_crds_before_workloads() {
        assert!(
            kind_rank("", "Namespace")
                < kind_rank("apiextensions.k8s.io", "CustomResourceDefinition")
        );
        assert!(kind_rank("", "ConfigMap") < kind_rank("apps", "Deployment"));
        assert!(kind_rank("apps", "Deployment") < kind_rank("networking.k8s.io", "Ingress"));
        assert!(
            kind_rank("networking.k8s.io", "Ingress")
                < kind_rank("monitoring.coreos.com", "ServiceMonitor")
        );
    }

    #[test]
    fn scope() {
        assert!(is_cluster_scoped("", "Namespace"));
        assert!(!is_cluster_scoped("apps", "Deployment"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
    }
}
