//! Checks before the first write, with reads only: every kind is served
//! (or defined by a CRD of the plan) and every namespace exists (or is
//! created by the plan); and the namespaces and CRDs that writes wait on.

use std::collections::BTreeSet;

use kube::api::{Api, DynamicObject, Patch, PatchParams};

use crate::resource::Resource;

use super::*;

/// A CRD in `head` defining (group, kind)?
pub(super) fn defined_by_crd(head: &[&Resource], group: &str, kind: &str) -> bool {
    head.iter().any(|r| {
        r.id.kind == "CustomResourceDefinition"
            && r.object["spec"]["group"] == group
            && r.object["spec"]["names"]["kind"] == kind
    })
}

/// True when `r`'s namespace is created by this plan.
pub(super) fn namespace_created_by_plan(target: &Target<'_>, r: &Resource) -> bool {
    let Some(ns) = r.id.namespace.as_deref() else {
        return false;
    };
    target
        .head
        .iter()
        .any(|x| x.id.group.is_empty() && x.id.kind == "Namespace" && x.id.name == ns)
}

/// Which of `names` exist: one GET for one namespace, else one LIST
/// whatever their number (an environment whose resources use 200
/// namespaces made 200 requests before).
pub(crate) async fn present_namespaces(
    client: &kube::Client,
    names: &[&str],
    opts: &Options,
) -> Result<BTreeSet<String>, Error> {
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match names {
        [] => Ok(BTreeSet::new()),
        [one] => Ok(with_retry(opts, || ns_api.get_opt(one))
            .await
            .map_err(|error| Error::Api {
                what: format!("reading namespace {one}"),
                error,
            })?
            .map(|_| (*one).to_string())
            .into_iter()
            .collect()),
        _ => {
            let all = kube::api::ListParams::default();
            Ok(with_retry(opts, || ns_api.list(&all))
                .await
                .map_err(|error| Error::Api {
                    what: "listing namespaces".into(),
                    error,
                })?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect())
        }
    }
}

/// Checks, with reads only, that every kind is served (or defined by a CRD
/// of the plan) and every namespace exists (or is created by the plan).
pub(super) async fn preflight(
    client: &kube::Client,
    kinds: &mut Kinds,
    target: &Target<'_>,
    opts: &Options,
) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    // Kinds the cluster serves cluster-wide that the plan put in a
    // namespace: their namespaces are neither read nor created.
    let mut wrong_scope: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &target.head {
        if !seen.insert((r.api_version.clone(), r.id.kind.clone())) {
            continue;
        }
        let found = kinds
            .resolve(&r.api_version, &r.id.kind, opts)
            .await
            .map_err(|error| Error::Api {
                what: format!("discovery of {}", r.api_version),
                error,
            })?;
        if found.is_none() && !defined_by_crd(&target.head, &r.id.group, &r.id.kind) {
            problems.push(format!(
                "kind {} (apiVersion {}) of {} ({}) is not served by the cluster and no CustomResourceDefinition in the plan defines it",
                r.id.kind, r.api_version, r.id, r.origin.file
            ));
        }
        // The scope comes from the API: a kind rendering took for
        // namespaced (its CRD is not in the repository) that the cluster
        // serves cluster-wide must never get a namespace, nor have one
        // created for it.
        if let Some((_, caps)) = &found {
            let key = if r.id.group.is_empty() {
                r.id.kind.clone()
            } else {
                format!("{}/{}", r.id.group, r.id.kind)
            };
            match (&caps.scope, r.id.namespace.as_deref()) {
                (kube::discovery::Scope::Cluster, Some(ns)) => {
                    wrong_scope.insert((r.id.group.clone(), r.id.kind.clone()));
                    problems.push(format!(
                    "{} ({}) was planned in the namespace {ns}, but the cluster serves {} cluster-wide; declare it in kdeploy.yaml (`kinds: {{\"{key}\": Cluster}}`) so that plans and records name it without a namespace",
                    r.id, r.origin.file, r.id.kind
                ))
                }
                (kube::discovery::Scope::Namespaced, None) => problems.push(format!(
                    "{} ({}) was planned cluster-wide, but the cluster serves {} in namespaces; fix `kinds:` in kdeploy.yaml (`\"{key}\": Namespaced`)",
                    r.id, r.origin.file, r.id.kind
                )),
                _ => {}
            }
        }
    }

    let created: BTreeSet<&str> = target
        .head
        .iter()
        .filter(|r| r.id.group.is_empty() && r.id.kind == "Namespace")
        .map(|r| r.id.name.as_str())
        .collect();
    let namespaces: BTreeSet<&str> = target
        .head
        .iter()
        .filter(|r| !wrong_scope.contains(&(r.id.group.clone(), r.id.kind.clone())))
        .filter_map(|r| r.id.namespace.as_deref())
        .collect();
    let wanted: Vec<&str> = namespaces
        .into_iter()
        .filter(|ns| !created.contains(ns))
        .collect();
    let present = present_namespaces(client, &wanted, opts).await?;
    let mut missing: Vec<String> = wanted
        .into_iter()
        .filter(|ns| !present.contains(*ns))
        .map(str::to_string)
        .collect();
    if !opts.create_namespace {
        for ns in &missing {
            let user = target
                .head
                .iter()
                .find(|r| r.id.namespace.as_deref() == Some(ns.as_str()));
            problems.push(format!(
                "namespace {ns} does not exist and the plan does not create it (needed by {}); add a Namespace resource (createNamespace: true in the service chart) or pass --create-namespace",
                user.map(|r| r.id.to_string()).unwrap_or_default()
            ));
        }
        missing.clear();
    }
    if problems.is_empty() {
        Ok(missing)
    } else {
        Err(Error::Preflight {
            env: target.env.clone(),
            problems,
        })
    }
}

pub(super) async fn ensure_namespace(
    client: &kube::Client,
    name: &str,
    opts: &Options,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
    );
    let ns: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .map_err(kube::Error::SerdeError)?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.dry_run = opts.dry_run;
    let patch = Patch::Apply(&ns);
    with_retry(opts, || api.patch(name, &params, &patch))
        .await
        .map(|_| ())
}

/// Polls a CRD until Established (the condition kube-runtime defines).
pub(super) async fn wait_established(
    client: &kube::Client,
    name: &str,
    opts: &Options,
) -> Result<(), String> {
    use kube::runtime::wait::{Condition as _, conditions::is_crd_established};
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let crd = with_retry(opts, || api.get_opt(name))
            .await
            .map_err(|e| api_message(&e))?;
        if is_crd_established().matches_object(crd.as_ref()) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "CustomResourceDefinition {name} not Established after 60s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
