//! The deciding half of a deploy: from the target, the record and the
//! cluster, what is applied, replaced, deleted and kept, and which hooks
//! run. Nothing here writes; [`super::apply_held`] carries the decision out
//! in order.

use std::collections::{BTreeMap, BTreeSet};

use super::owners::Owners;
use super::record::{self, Entry, Record};
use super::{Error, Kinds, Options, PreviousFrom, Target, replace};
use crate::hooks::{Phase, Role, role};
use crate::resource::{Resource, ResourceId};

/// What a deploy of one environment does, decided before its first write.
pub(super) struct Changes<'a> {
    /// The record read under the lease.
    pub existing: Option<Record>,
    /// What was deployed before, per resource.
    pub previous: BTreeMap<ResourceId, Entry>,
    /// Where `previous` came from.
    pub previous_from: PreviousFrom,
    /// The commit of `previous`.
    pub base_commit: Option<String>,
    /// The head state, as record entries.
    pub head_entries: BTreeMap<ResourceId, Entry>,
    /// Resources to write (changed, new, or a namespace the cluster lacks).
    pub to_apply: Vec<&'a Resource>,
    /// Resources left as they are.
    pub unchanged: usize,
    /// Updates to immutable fields, deleted and created again.
    pub to_replace: Vec<&'a Resource>,
    /// Recorded resources gone from the head, to delete.
    pub to_delete: Vec<Entry>,
    /// Gone from the head but in another environment's record: kept.
    pub kept: Vec<String>,
    /// Deletions that need consent and have none ([`super::consent`]),
    /// with why: not deleted, kept in the record.
    pub held: Vec<(Entry, String)>,
    /// Pre-deploy hooks of changed releases.
    pub pre: Vec<&'a Resource>,
    /// Post-deploy hooks of changed releases.
    pub post: Vec<&'a Resource>,
}

/// The target without its hooks, and the hooks: hooks are run, not applied
/// with the rest; Helm hooks of events kdeploy has no moment for
/// (pre-delete, …) are left out.
pub(super) fn split_hooks<'a>(target: &Target<'a>) -> (Target<'a>, Vec<&'a Resource>) {
    let hooks = target
        .head
        .iter()
        .copied()
        .filter(|r| matches!(role(r), Role::Hook(_)))
        .collect();
    let resources = |rs: &[&'a Resource]| -> Vec<&'a Resource> {
        rs.iter()
            .copied()
            .filter(|r| role(r) == Role::Resource)
            .collect()
    };
    let plain = Target {
        env: target.env.clone(),
        repository: target.repository.clone(),
        head_commit: target.head_commit.clone(),
        head: resources(&target.head),
        base: target.base.as_ref().map(|(c, b)| (c.clone(), resources(b))),
        in_scope: target.in_scope,
        preview: target.preview.clone(),
    };
    (plain, hooks)
}

/// Reads the record (refusing another repository's) and decides the deploy.
///
/// # Errors
/// A foreign or unreadable record, a failed namespace read, an immutable
/// field change that may not be replaced.
pub(super) async fn decide<'a>(
    client: &kube::Client,
    kinds: &mut Kinds,
    target: &Target<'a>,
    hooks: &[&'a Resource],
    opts: &Options,
    owners: &Owners,
) -> Result<Changes<'a>, Error> {
    // Read the record under the lease: it is what the last run finished.
    let existing = record::read(client, &opts.record_namespace, &target.env).await?;
    if let Some(r) = &existing
        && !r.repository.is_empty()
        && !record::same_repository(&r.repository, &target.repository)
        && !opts.force_record
    {
        return Err(Error::ForeignRecord {
            env: target.env.clone(),
            namespace: opts.record_namespace.clone(),
            name: record::name(&target.env),
            theirs: r.repository.clone(),
            ours: target.repository.clone(),
        });
    }
    let (previous, previous_from, base_commit) = match (&existing, &target.base) {
        (Some(r), _) => (
            r.entries.clone(),
            PreviousFrom::Record,
            Some(r.commit.clone()),
        ),
        (None, Some((commit, base))) => (
            base.iter().map(|r| (r.id.clone(), Entry::of(r))).collect(),
            PreviousFrom::Base,
            Some(commit.clone()),
        ),
        (None, None) => (BTreeMap::new(), PreviousFrom::Nothing, None),
    };
    let head_entries: BTreeMap<ResourceId, Entry> = target
        .head
        .iter()
        .map(|r| (r.id.clone(), Entry::of(r)))
        .collect();
    let mut to_apply: Vec<&'a Resource> = Vec::new();
    let mut unchanged = 0;
    for r in &target.head {
        let same = previous
            .get(&r.id)
            .is_some_and(|p| p.hash == head_entries[&r.id].hash);
        if same && !opts.sync {
            unchanged += 1;
        } else {
            to_apply.push(r);
        }
    }
    for r in missing_namespaces(client, target, &to_apply, opts).await? {
        to_apply.push(r);
        unchanged -= 1;
    }
    // Immutable fields: refused before any write, unless replaced.
    let to_replace = if opts.dry_run {
        Vec::new()
    } else {
        // Only updates: what kdeploy never deployed has no old value.
        let updates: Vec<&Resource> = to_apply
            .iter()
            .filter(|r| previous.contains_key(&r.id))
            .copied()
            .collect();
        replace::immutable_changes(client, kinds, target, &updates, opts).await?
    };
    let (to_delete, kept) = deletions(target, &previous, &head_entries, opts, owners);
    let in_scope: Vec<&Entry> = previous
        .values()
        .filter(|e| (target.in_scope)(&e.app))
        .collect();
    let head_apps: BTreeSet<&str> = target.head.iter().map(|r| r.origin.app.as_str()).collect();
    let (to_delete, held) = super::consent::split(
        to_delete,
        &in_scope,
        &head_apps,
        opts.deletion_budget,
        opts.deletion_consent.is_some(),
    );
    let (pre, post) = hooks_to_run(hooks, &to_apply, &to_delete, &previous, opts);
    Ok(Changes {
        existing,
        previous,
        previous_from,
        base_commit,
        head_entries,
        to_apply,
        unchanged,
        to_replace,
        to_delete,
        kept,
        held,
        pre,
        post,
    })
}

/// Unchanged Namespaces of the head that the cluster lacks (a record-less
/// first deploy from a base revision, or a hand deletion): everything in
/// them would fail, so they are applied again. One LIST instead of one GET
/// per namespace (an environment of 200 apps made 200 requests for a
/// one-app change).
async fn missing_namespaces<'a>(
    client: &kube::Client,
    target: &Target<'a>,
    to_apply: &[&'a Resource],
    opts: &Options,
) -> Result<Vec<&'a Resource>, Error> {
    let kept_namespaces: Vec<&'a Resource> = target
        .head
        .iter()
        .copied()
        .filter(|r| r.id.group.is_empty() && r.id.kind == "Namespace")
        .filter(|r| !to_apply.iter().any(|x| x.id == r.id))
        .collect();
    let names: Vec<&str> = kept_namespaces.iter().map(|r| r.id.name.as_str()).collect();
    let present = super::preflight::present_namespaces(client, &names, opts).await?;
    Ok(kept_namespaces
        .into_iter()
        .filter(|r| !present.contains(&r.id.name))
        .collect())
}

/// Recorded resources of apps in scope that the head no longer has; those
/// also in another environment's record are kept, and listed.
fn deletions(
    target: &Target<'_>,
    previous: &BTreeMap<ResourceId, Entry>,
    head: &BTreeMap<ResourceId, Entry>,
    opts: &Options,
    owners: &Owners,
) -> (Vec<Entry>, Vec<String>) {
    let mut kept = Vec::new();
    if !opts.prune {
        return (Vec::new(), kept);
    }
    let to_delete = previous
        .values()
        .filter(|e| !e.hook && (target.in_scope)(&e.app) && !head.contains_key(&e.id()))
        .filter(|e| match owners.owner(&e.id()) {
            Some(other) => {
                kept.push(format!("{} (also in the deploy record of {other})", e.id()));
                false
            }
            None => true,
        })
        .cloned()
        .collect();
    (to_delete, kept)
}

/// The hooks that run, before and after the rest: a hook runs when its
/// release changes (any of its resources), or the hook itself does (it is
/// recorded for that).
fn hooks_to_run<'a>(
    hooks: &[&'a Resource],
    to_apply: &[&'a Resource],
    to_delete: &[Entry],
    previous: &BTreeMap<ResourceId, Entry>,
    opts: &Options,
) -> (Vec<&'a Resource>, Vec<&'a Resource>) {
    let mut changed_apps: BTreeSet<&str> = to_apply
        .iter()
        .map(|r| r.origin.app.as_str())
        .chain(to_delete.iter().map(|e| e.app.as_str()))
        .collect();
    for h in hooks {
        if opts.sync
            || previous
                .get(&h.id)
                .is_none_or(|p| p.hash != Entry::of(h).hash)
        {
            changed_apps.insert(h.origin.app.as_str());
        }
    }
    hooks
        .iter()
        .copied()
        .filter(|h| changed_apps.contains(h.origin.app.as_str()))
        .partition(|h| crate::hooks::phase(h) == Some(Phase::PreDeploy))
}
