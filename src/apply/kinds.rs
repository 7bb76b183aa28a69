//! The kinds the cluster serves: discovery per group/version (refreshed
//! after CRDs are established) and the API handle for an object.

use std::collections::HashMap;

use kube::api::{Api, DynamicObject};
use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

use super::{Options, with_retry};
use crate::resource;

/// Discovery: every group at once where the server offers aggregated
/// discovery (two requests), else per group/version; a group is asked
/// again after its CRDs are established.
pub(crate) struct Kinds {
    client: kube::Client,
    by_gv: HashMap<(String, String), Vec<(ApiResource, ApiCapabilities)>>,
    aggregated_tried: bool,
}

impl Kinds {
    pub(crate) fn new(client: kube::Client) -> Kinds {
        Kinds {
            client,
            by_gv: HashMap::new(),
            aggregated_tried: false,
        }
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`, Kubernetes 1.30+):
    /// what it lists is known; anything else (an older server answers with
    /// a plain list that holds no groups) is asked per group/version.
    async fn aggregated(&mut self, opts: &Options) {
        self.aggregated_tried = true;
        let client = self.client.clone();
        let found = with_retry(opts, || {
            kube::discovery::Discovery::new(client.clone()).run_aggregated()
        })
        .await;
        let Ok(discovery) = found else { return };
        for group in discovery.groups() {
            for version in group.versions() {
                self.by_gv.insert(
                    (group.name().to_string(), version.to_string()),
                    group.versioned_resources(version),
                );
            }
        }
    }

    pub(crate) async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
        opts: &Options,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, kube::Error> {
        let (group, version) = resource::split_api_version(api_version);
        let key = (group.to_string(), version.to_string());
        if !self.aggregated_tried {
            self.aggregated(opts).await;
        }
        if !self.by_gv.contains_key(&key) {
            let gv = GroupVersion::gv(group, version);
            let client = self.client.clone();
            let found = with_retry(opts, || kube::discovery::pinned_group(&client, &gv)).await;
            let list = match found {
                Ok(g) => g.versioned_resources(version),
                Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                Err(e) => return Err(e),
            };
            self.by_gv.insert(key.clone(), list);
        }
        Ok(self.by_gv[&key]
            .iter()
            .find(|(ar, _)| ar.kind == kind)
            .cloned())
    }

    pub(super) fn forget(&mut self, group: &str) {
        self.by_gv.retain(|(g, _), _| g != group);
    }
}

pub(crate) fn api_for(
    client: &kube::Client,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (&caps.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        _ => Api::all_with(client.clone(), ar),
    }
}
