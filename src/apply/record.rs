//! The deploy record: what kdeploy last deployed to an environment.
//!
//! One ConfigMap per environment (`kdeploy-<env>` in the record namespace)
//! holds the repository it came from, the commit, and for every resource its
//! id, app and a content hash: never the content, which may hold Secret
//! data. It is written only after a successful apply, with a resourceVersion
//! precondition so two writers cannot both win.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

use crate::resource::{Resource, ResourceId};

/// One deployed resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `apiVersion` it was applied with (needed to delete it later).
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty for cluster-scoped kinds.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The app that produced it.
    pub app: String,
    /// Content hash of the applied object.
    pub hash: String,
    /// A deploy hook: recorded so that a change to it runs it, never pruned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hook: bool,
}

impl Entry {
    /// The resource's identity.
    pub fn id(&self) -> ResourceId {
        ResourceId {
            group: crate::resource::split_api_version(&self.api_version)
                .0
                .to_string(),
            kind: self.kind.clone(),
            namespace: (!self.namespace.is_empty()).then(|| self.namespace.clone()),
            name: self.name.clone(),
        }
    }

    /// The entry for a rendered resource.
    pub fn of(r: &Resource) -> Entry {
        Entry {
            api_version: r.api_version.clone(),
            kind: r.id.kind.clone(),
            namespace: r.id.namespace.clone().unwrap_or_default(),
            name: r.id.name.clone(),
            app: r.origin.app.clone(),
            hash: content_hash(&r.object),
            hook: crate::hooks::phase(r).is_some(),
        }
    }
}

pub use crate::resource::content_hash;

/// What was deployed to one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The repository identity (e.g. `owner/name`).
    pub repository: String,
    /// The commit deployed.
    pub commit: String,
    /// Deployed resources by id.
    pub entries: BTreeMap<ResourceId, Entry>,
    /// The ConfigMap's resourceVersion, for the write precondition.
    pub resource_version: Option<String>,
    /// Set for a pull request's preview: such records are torn down when the
    /// pull request closes, never pruned by a deploy of the config repo.
    pub preview: Option<PreviewOf>,
    /// When the record was last written (RFC 3339), if it says.
    pub deployed_at: Option<String>,
}

/// The pull request a preview's record belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewOf {
    /// The template in `environments:`.
    pub template: String,
    /// The pull request number.
    pub pull_request: u64,
}

impl PreviewOf {
    /// `<template>/<n>`: how its namespace's annotation names it.
    pub fn mark(&self) -> String {
        format!("{}/{}", self.template, self.pull_request)
    }
}

/// The record's ConfigMap name for an environment.
pub fn name(env: &str) -> String {
    format!("kdeploy-{env}")
}

/// The error returned when the record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API call failed (after the client's retries).
    #[error("deploy record {namespace}/{name}: {}", super::api_message(error))]
    Api {
        /// Record namespace.
        namespace: String,
        /// Record name.
        name: String,
        /// kube's error; its message is in ours, so it is not a cause.
        error: kube::Error,
    },
    /// The ConfigMap is not a kdeploy record.
    #[error(
        "deploy record {namespace}/{name} is malformed ({detail}); delete it to redeploy everything"
    )]
    Malformed {
        /// Record namespace.
        namespace: String,
        /// Record name.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

/// Reads the record of `env`, if there is one.
///
/// # Errors
/// API failures other than 404, or a malformed record.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    env: &str,
) -> Result<Option<Record>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = name(env);
    let cm = match api.get_opt(&name).await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Ok(None),
        // The namespace itself may not exist yet.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(error) => {
            return Err(Error::Api {
                namespace: namespace.into(),
                name,
                error,
            });
        }
    };
    parse(cm, namespace, &name).map(Some)
}

/// The record a ConfigMap holds.
fn parse(cm: ConfigMap, namespace: &str, name: &str) -> Result<Record, Error> {
    let data = cm.data.unwrap_or_default();
    let malformed = |detail: String| Error::Malformed {
        namespace: namespace.into(),
        name: name.to_string(),
        detail,
    };
    let mut entries = BTreeMap::new();
    for line in data
        .get("resources")
        .map(String::as_str)
        .unwrap_or("")
        .lines()
    {
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
        entries.insert(e.id(), e);
    }
    let preview = match (data.get("preview"), data.get("pullRequest")) {
        (Some(template), Some(n)) => Some(PreviewOf {
            template: template.clone(),
            pull_request: n
                .parse()
                .map_err(|_| malformed(format!("pullRequest `{n}` is not a number")))?,
        }),
        _ => None,
    };
    Ok(Record {
        preview,
        deployed_at: data.get("deployedAt").cloned(),
        repository: data.get("repository").cloned().unwrap_or_default(),
        commit: data
            .get("commit")
            .cloned()
            .ok_or_else(|| malformed("no commit".into()))?,
        entries,
        resource_version: cm.metadata.resource_version,
    })
}

/// Every environment's record in `namespace`, by environment: what the
/// environments sharing this cluster have deployed.
///
/// # Errors
/// API failures other than a missing namespace, or a malformed record.
pub async fn list(
    client: &kube::Client,
    namespace: &str,
    opts: &super::Options,
) -> Result<Vec<(String, Record)>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::ListParams::default().labels(MANAGED_BY);
    let list = match super::with_retry(opts, || api.list(&params)).await {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
        Err(error) => {
            return Err(Error::Api {
                namespace: namespace.into(),
                name: "(list)".into(),
                error,
            });
        }
    };
    let mut out = Vec::new();
    for cm in list.items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let env = cm
            .data
            .as_ref()
            .and_then(|d| d.get("environment").cloned())
            .or_else(|| name.strip_prefix("kdeploy-").map(str::to_string));
        if let Some(env) = env {
            out.push((env, parse(cm, namespace, &name)?));
        }
    }
    Ok(out)
}

/// Deletes the record of `env` (an environment gone from the config repo,
/// whose resources were all removed). A missing record is fine.
///
/// # Errors
/// API failures other than 404.
pub async fn delete(
    client: &kube::Client,
    namespace: &str,
    env: &str,
    opts: &super::Options,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = name(env);
    let params = kube::api::DeleteParams::default();
    match super::with_retry(opts, || api.delete(&name, &params)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => Err(Error::Api {
            namespace: namespace.into(),
            name,
            error,
        }),
    }
}

/// The label selector of records (and the label they carry).
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=kdeploy";

/// Writes the record: creates it, or replaces it only if nobody changed it
/// since it was read (`resource_version` of `previous`).
///
/// # Errors
/// API failures, including a 409 when another run wrote it meanwhile.
pub async fn write(
    client: &kube::Client,
    namespace: &str,
    env: &str,
    record: &Record,
    previous: Option<&Record>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = name(env);
    let mut data = BTreeMap::new();
    data.insert("repository".to_string(), record.repository.clone());
    data.insert("commit".to_string(), record.commit.clone());
    data.insert("environment".to_string(), env.to_string());
    data.insert(
        "deployedAt".to_string(),
        k8s_openapi::jiff::Timestamp::now().to_string(),
    );
    if let Some(p) = &record.preview {
        data.insert("preview".to_string(), p.template.clone());
        data.insert("pullRequest".to_string(), p.pull_request.to_string());
    }
    let lines: Vec<String> = record
        .entries
        .values()
        .filter_map(|e| serde_json::to_string(e).ok())
        .collect();
    data.insert("resources".to_string(), lines.join("\n"));
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "kdeploy".to_string(),
    );
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            resource_version: previous.and_then(|p| p.resource_version.clone()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    let result = match previous.and_then(|p| p.resource_version.as_ref()) {
        Some(_) => api.replace(&name, &PostParams::default(), &cm).await,
        None => api.create(&PostParams::default(), &cm).await,
    };
    result.map(|_| ()).map_err(|error| Error::Api {
        namespace: namespace.into(),
        name,
        error,
    })
}
/// The one identity of a repository in deploy records: `owner/name`, as
/// `GITHUB_REPOSITORY` says it, whether it was given so (the action) or as
/// the origin's URL (the CLI: `https://github.com/org/config.git`,
/// `git@github.com:org/config.git`, `ssh://git@host/org/config`). Anything
/// else (a local path) is kept as it is.
pub fn identity(repository: &str) -> String {
    let r = repository.trim().trim_end_matches('/');
    let r = r.strip_suffix(".git").unwrap_or(r);
    let path = if let Some((_, rest)) = r.split_once("://") {
        // scheme://[user@]host[:port]/owner/name
        rest.split_once('/').map(|(_, p)| p)
    } else if let Some((host, rest)) = r.split_once(':')
        && host.contains('@')
        && !host.contains('/')
    {
        // git@host:owner/name
        Some(rest)
    } else if !r.starts_with('/') && r.matches('/').count() == 1 {
        Some(r)
    } else {
        None
    };
    let parts: Vec<&str> = path
        .map(|p| p.split('/').filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    match parts.as_slice() {
        [.., owner, name] => format!("{owner}/{name}"),
        _ => repository.to_string(),
    }
}

/// Whether two records' repositories are the same repository (GitHub's
/// names are not case-sensitive; records written by an older CLI hold the
/// origin's URL).
pub fn same_repository(a: &str, b: &str) -> bool {
    identity(a).eq_ignore_ascii_case(&identity(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_whichever_face_wrote_the_record() {
        for r in [
            "org/config",
            "https://github.com/org/config.git",
            "https://github.com/org/config",
            "git@github.com:org/config.git",
            "ssh://git@github.com/org/config.git",
            "https://x-access-token@ghe.example:8443/org/config/",
            "Org/Config",
        ] {
            assert!(same_repository(r, "org/config"), "{r}");
        }
        assert!(!same_repository("org/other", "org/config"));
        assert_eq!(identity("/home/me/config"), "/home/me/config");
    }
}
