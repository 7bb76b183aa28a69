//! Environments that share a cluster: which environment's deploy record
//! owns each resource, so that one environment never overwrites or deletes
//! another's.
//!
//! Every environment keeps its own record (`kdeploy-<env>` in the record
//! namespace). Before the first write, the records of the *other*
//! environments on the same cluster are read: a resource the deploy would
//! write that another record lists is refused unless `--adopt-from <env>`
//! moves it deliberately, and prune never deletes what another record lists.

use std::collections::BTreeMap;

use crate::resource::ResourceId;

use super::record::{self, Record};

/// The other environments' records on one cluster.
#[derive(Debug, Default)]
pub struct Owners {
    /// Environment -> its record, for every environment but the one deploying.
    pub records: BTreeMap<String, Record>,
}

/// A resource the deploy would write that another environment owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The resource.
    pub id: ResourceId,
    /// The environment whose record lists it.
    pub owner: String,
}

impl Owners {
    /// Reads the records of every environment but `env` from `namespace`.
    ///
    /// # Errors
    /// API failures other than a missing namespace.
    pub async fn read(
        client: &kube::Client,
        namespace: &str,
        env: &str,
        opts: &super::Options,
    ) -> Result<Owners, record::Error> {
        let records = record::list(client, namespace, opts).await?;
        Ok(Owners {
            records: records.into_iter().filter(|(e, _)| e != env).collect(),
        })
    }

    /// The environment whose record lists `id`, if another one does.
    pub fn owner(&self, id: &ResourceId) -> Option<&str> {
        self.records
            .iter()
            .find(|(_, r)| r.entries.contains_key(id))
            .map(|(env, _)| env.as_str())
    }

    /// The resources among `ids` another environment owns, except those
    /// `adopt_from` gives up.
    pub fn conflicts<'a>(
        &self,
        ids: impl Iterator<Item = &'a ResourceId>,
        adopt_from: Option<&str>,
    ) -> Vec<Conflict> {
        ids.filter_map(|id| {
            let owner = self.owner(id)?;
            (Some(owner) != adopt_from).then(|| Conflict {
                id: id.clone(),
                owner: owner.to_string(),
            })
        })
        .collect()
    }
}
