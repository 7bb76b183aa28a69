//! Container images in rendered resources and the registries that hold
//! them: where pod specs live in each kind, and resolving a tag to a
//! digest ([`registry`]). Shared by the lock (`kdeploy lock`) and, later,
//! image automation.

pub mod policy;
pub mod registry;

use serde_json::Value;

use crate::config::PodSpecPath;

/// Where built-in kinds keep their pod spec, by (group, kind): what image
/// pinning and the policy checks read.
pub const POD_SPECS: &[(&str, &str, &str)] = &[
    ("", "Pod", "/spec"),
    ("", "PodTemplate", "/template/spec"),
    ("", "ReplicationController", "/spec/template/spec"),
    ("apps", "Deployment", "/spec/template/spec"),
    ("apps", "StatefulSet", "/spec/template/spec"),
    ("apps", "DaemonSet", "/spec/template/spec"),
    ("apps", "ReplicaSet", "/spec/template/spec"),
    ("batch", "Job", "/spec/template/spec"),
    ("batch", "CronJob", "/spec/jobTemplate/spec/template/spec"),
];

/// The container lists of a pod spec.
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// One image field of a resource.
#[derive(Debug)]
pub struct ImageField<'a> {
    /// `containers[0]`, `initContainers[1]`, …
    pub container: String,
    /// The container's name, when it has one.
    pub name: Option<String>,
    /// The reference, to read or replace.
    pub image: &'a mut String,
}

/// Calls `f` with every container image of `object` (a resource of
/// `group`/`kind`), in order; `extra` adds pod specs of custom kinds.
pub fn for_each_image(
    object: &mut Value,
    group: &str,
    kind: &str,
    extra: &[PodSpecPath],
    mut f: impl FnMut(ImageField<'_>),
) {
    let pointers = POD_SPECS
        .iter()
        .filter(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, p)| *p)
        .chain(
            extra
                .iter()
                .filter(|p| p.group == group && p.kind == kind)
                .map(|p| p.pointer.as_str()),
        )
        .collect::<Vec<_>>();
    for pointer in pointers {
        let Some(spec) = object.pointer_mut(pointer) else {
            continue;
        };
        for list in CONTAINER_LISTS {
            let Some(items) = spec.get_mut(*list).and_then(Value::as_array_mut) else {
                continue;
            };
            for (i, c) in items.iter_mut().enumerate() {
                let name = c.get("name").and_then(Value::as_str).map(str::to_string);
                if let Some(Value::String(image)) = c.get_mut("image") {
                    f(ImageField {
                        container: format!("{list}[{i}]"),
                        name,
                        image,
                    });
                }
            }
        }
    }
}

/// True when the reference already names a digest (`…@sha256:…`).
pub fn is_pinned(reference: &str) -> bool {
    reference.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_container_list_of_built_in_and_custom_kinds() {
        let mut cron = serde_json::json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox:1"}],
            "containers": [{"name": "main", "image": "app:1"}, {"name": "side", "image": "side@sha256:00"}]
        }}}}}});
        let mut seen = Vec::new();
        for_each_image(&mut cron, "batch", "CronJob", &[], |f| {
            seen.push((f.container, f.image.clone()))
        });
        assert_eq!(
            seen,
            [
                ("containers[0]".to_string(), "app:1".to_string()),
                ("containers[1]".into(), "side@sha256:00".into()),
                ("initContainers[0]".into(), "busybox:1".into()),
            ]
        );
        let mut rollout =
            serde_json::json!({"spec": {"template": {"spec": {"containers": [{"image": "r:1"}]}}}});
        let extra = [PodSpecPath {
            group: "argoproj.io".into(),
            kind: "Rollout".into(),
            pointer: "/spec/template/spec".into(),
        }];
        let mut n = 0;
        for_each_image(&mut rollout, "argoproj.io", "Rollout", &extra, |f| {
            *f.image = format!("{}@sha256:11", f.image);
            n += 1;
        });
        assert_eq!(n, 1);
        assert_eq!(
            rollout["spec"]["template"]["spec"]["containers"][0]["image"],
            "r:1@sha256:11"
        );
    }
}
