//! Writing the deploy record of a successful deploy, and moving adopted
//! resources out of the record they came from.

use std::collections::BTreeMap;

use super::record::{self, Entry, Record};
use super::{Failure, Options, Report, Step, Target, owners};
use crate::resource::{Resource, ResourceId};

/// What a successful deploy leaves: the record's new entries come from these.
pub(super) struct Deployed<'r> {
    /// The previous record's entries; `None` when the previous state was
    /// not a record (it is not carried over).
    pub(super) previous: Option<BTreeMap<ResourceId, Entry>>,
    /// The head state.
    pub(super) head: BTreeMap<ResourceId, Entry>,
    /// Hooks: recorded (a change to one runs it) but never pruned.
    pub(super) hooks: &'r [&'r Resource],
    /// Deletions held for consent: still deployed, so still recorded.
    pub(super) held: Vec<Entry>,
    /// The record read under the lease.
    pub(super) existing: Option<&'r Record>,
}

/// Writes the record of a successful deploy. The cluster has changed by
/// now: a failure here is part of the report (the next run applies the same
/// change again), not an error that would lose it.
pub(super) async fn record_deploy(
    client: &kube::Client,
    target: &Target<'_>,
    opts: &Options,
    owners: &owners::Owners,
    deployed: Deployed<'_>,
    report: &mut Report,
) {
    // Apps out of scope (`--app`) keep their entries.
    let mut entries: BTreeMap<ResourceId, Entry> = deployed
        .previous
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, e)| !(target.in_scope)(&e.app))
        .collect();
    entries.extend(deployed.head);
    entries.extend(deployed.hooks.iter().map(|h| (h.id.clone(), Entry::of(h))));
    entries.extend(deployed.held.into_iter().map(|e| (e.id(), e)));
    let new = Record {
        repository: target.repository.clone(),
        commit: target.head_commit.clone(),
        entries,
        resource_version: None,
        preview: target.preview.clone(),
        deployed_at: None,
    };
    if let Err(e) = write_records(
        client,
        target,
        opts,
        owners,
        &new,
        deployed.existing,
        report,
    )
    .await
    {
        report.failed.push(Failure {
            id: format!(
                "deploy record {}/{}",
                opts.record_namespace,
                record::name(&target.env)
            ),
            app: String::new(),
            source: "kdeploy".into(),
            error: e.to_string(),
        });
        report.failed_step = Some(Step::Record);
    }
}

/// Writes this environment's record, then moves adopted resources out of
/// the record of the environment they came from, so exactly one
/// environment owns each.
async fn write_records(
    client: &kube::Client,
    target: &Target<'_>,
    opts: &Options,
    owners: &owners::Owners,
    new: &Record,
    existing: Option<&Record>,
    report: &mut Report,
) -> Result<(), record::Error> {
    record::write(client, &opts.record_namespace, &target.env, new, existing).await?;
    report.record_written = true;
    let Some(from) = &opts.adopt_from else {
        return Ok(());
    };
    let Some(theirs) = owners.records.get(from) else {
        return Ok(());
    };
    let moved: Vec<ResourceId> = target
        .head
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| theirs.entries.contains_key(id))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let mut updated = theirs.clone();
    for id in &moved {
        updated.entries.remove(id);
    }
    record::write(client, &opts.record_namespace, from, &updated, Some(theirs)).await?;
    report.adopted = moved.iter().map(ToString::to_string).collect();
    Ok(())
}
