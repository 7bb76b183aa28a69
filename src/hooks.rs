//! Deploy hooks: Jobs annotated `kdeploy.io/hook: pre-deploy` or
//! `post-deploy` (Helm's `helm.sh/hook` mapped: `pre-install`/`pre-upgrade`
//! → pre-deploy, `post-install`/`post-upgrade`/`test` → post-deploy) run
//! fresh on every deploy that changes their release: the old Job is
//! deleted, the new one created and waited for. A failed pre-deploy hook
//! stops the deploy before the workloads change; a failed post-deploy hook
//! fails it (and rolls back when enabled). Hooks are recorded, so a change
//! to the hook alone runs it, but never pruned.
//!
//! Argo CD's `argocd.argoproj.io/hook` is mapped too: `PreSync` →
//! pre-deploy; `Sync` and `PostSync` → post-deploy (kdeploy has no moment
//! "while the manifests are applied", so a Sync hook runs once they are
//! written); `SyncFail`, `PostDelete` and `Skip` are not deployed.

use crate::resource::Resource;

/// kdeploy's hook annotation.
pub const HOOK: &str = "kdeploy.io/hook";
/// Helm's.
pub const HELM_HOOK: &str = "helm.sh/hook";
/// Argo CD's.
pub const ARGO_HOOK: &str = "argocd.argoproj.io/hook";

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// After config, Services and the like; before the workloads change.
    PreDeploy,
    /// After the workloads are written (and ready, when waiting).
    PostDeploy,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::PreDeploy => "pre-deploy",
            Phase::PostDeploy => "post-deploy",
        })
    }
}

/// What a resource is to the deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An ordinary resource.
    Resource,
    /// A hook of this phase.
    Hook(Phase),
    /// A Helm hook of an event kdeploy has no moment for (`pre-delete`,
    /// `pre-rollback`, …): not deployed.
    Unused(String),
}

fn annotation<'a>(r: &'a Resource, key: &str) -> Option<&'a str> {
    r.object["metadata"]["annotations"][key].as_str()
}

/// The role of a rendered resource.
pub fn role(r: &Resource) -> Role {
    if let Some(v) = annotation(r, HOOK) {
        return match v.trim() {
            "pre-deploy" => Role::Hook(Phase::PreDeploy),
            "post-deploy" => Role::Hook(Phase::PostDeploy),
            // Refused by validation; treated as a resource meanwhile.
            _ => Role::Resource,
        };
    }
    let Some(v) = annotation(r, HELM_HOOK) else {
        return match annotation(r, ARGO_HOOK) {
            Some(v) => argo_role(v),
            None => Role::Resource,
        };
    };
    let events: Vec<&str> = v.split(',').map(str::trim).collect();
    if events
        .iter()
        .any(|e| matches!(*e, "pre-install" | "pre-upgrade"))
    {
        Role::Hook(Phase::PreDeploy)
    } else if events.iter().any(|e| {
        matches!(
            *e,
            "post-install" | "post-upgrade" | "test" | "test-success"
        )
    }) {
        Role::Hook(Phase::PostDeploy)
    } else {
        Role::Unused(v.to_string())
    }
}

/// The role of a resource Argo CD would treat as a hook (`PreSync`, …; a
/// comma-separated list, the earliest phase winning as in Helm's).
fn argo_role(v: &str) -> Role {
    let phases: Vec<&str> = v.split(',').map(str::trim).collect();
    if phases.contains(&"PreSync") {
        Role::Hook(Phase::PreDeploy)
    } else if phases.iter().any(|p| matches!(*p, "Sync" | "PostSync")) {
        Role::Hook(Phase::PostDeploy)
    } else {
        Role::Unused(format!("{ARGO_HOOK}: {v}"))
    }
}

/// The hook phase of a resource, if it is one.
pub fn phase(r: &Resource) -> Option<Phase> {
    match role(r) {
        Role::Hook(p) => Some(p),
        _ => None,
    }
}

/// What is wrong with a resource's hook annotation, if anything.
pub fn problem(r: &Resource) -> Option<String> {
    if let Some(v) = annotation(r, HOOK)
        && !matches!(v.trim(), "pre-deploy" | "post-deploy")
    {
        return Some(format!(
            "{}: {HOOK} is `{v}`; it must be pre-deploy or post-deploy",
            r.id
        ));
    }
    if phase(r).is_some() && !(r.id.group == "batch" && r.id.kind == "Job") {
        return Some(format!(
            "{} is a deploy hook, but hooks must be Jobs (batch/v1): a Job runs to completion and says whether it succeeded; wrap the Pod's spec in a Job",
            r.id
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(annotations: serde_json::Value) -> Resource {
        Resource::for_tests(
            serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns", "annotations": annotations}}),
        )
    }

    #[test]
    fn helm_hooks_map_to_deploy_phases() {
        let role_of = |v: &str| role(&job(serde_json::json!({HELM_HOOK: v})));
        assert_eq!(
            role_of("pre-install,pre-upgrade"),
            Role::Hook(Phase::PreDeploy)
        );
        assert_eq!(role_of("post-upgrade"), Role::Hook(Phase::PostDeploy));
        assert_eq!(role_of("test"), Role::Hook(Phase::PostDeploy));
        assert_eq!(role_of("pre-delete"), Role::Unused("pre-delete".into()));
        assert_eq!(role(&job(serde_json::json!({}))), Role::Resource);
        assert_eq!(
            role(&job(serde_json::json!({HOOK: "pre-deploy"}))),
            Role::Hook(Phase::PreDeploy)
        );
        assert!(
            problem(&job(serde_json::json!({HOOK: "before"})))
                .is_some_and(|p| p.contains("must be pre-deploy or post-deploy"))
        );
        let argo = |v: &str| role(&job(serde_json::json!({ARGO_HOOK: v})));
        assert_eq!(argo("PreSync"), Role::Hook(Phase::PreDeploy));
        assert_eq!(argo("Sync"), Role::Hook(Phase::PostDeploy));
        assert_eq!(argo("PostSync"), Role::Hook(Phase::PostDeploy));
        assert!(matches!(argo("SyncFail"), Role::Unused(e) if e.contains("SyncFail")));
        let mut pod = job(serde_json::json!({HOOK: "post-deploy"}));
        pod.id.group = String::new();
        pod.id.kind = "Pod".into();
        assert!(problem(&pod).is_some_and(|p| p.contains("hooks must be Jobs")));
    }
}
