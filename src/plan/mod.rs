//! Planning: two rendered states become a [`Plan`] of per-resource changes.
//!
//! Resources are matched per environment by [`ResourceId`] (so a resource
//! moving between apps, or an apiVersion bump, is a change). Both sides are
//! compared in canonical YAML, so key order and formatting never show up.
//! Secret values are replaced by markers here, before any text exists, so
//! no report can leak them.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::render::{Comparison, State};
use crate::resource::{self, HashedId, Origin, Resource, ResourceId};
use crate::yaml;

pub mod fingerprint;
pub mod live;
pub mod summary;
pub mod warnings;

use crate::config::PlanSettings;

pub use warnings::Warning;

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Only in head.
    Added,
    /// In both, with different content.
    Changed,
    /// Only in base.
    Deleted,
}

impl Action {
    /// `+`, `~` or `-`.
    pub fn sign(self) -> char {
        match self {
            Action::Added => '+',
            Action::Changed => '~',
            Action::Deleted => '-',
        }
    }
}

/// One resource's change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Environment.
    pub env: String,
    /// App of the head side (base side for deletions).
    pub app: String,
    /// What happens.
    pub action: Action,
    /// The resource.
    pub id: ResourceId,
    /// Unified diff of the canonical, Secret-redacted YAML.
    pub diff: String,
    /// Where the head (or, for deletions, base) side came from.
    pub origin: Origin,
    /// What the API server will refuse or regret ([`warnings`]).
    pub warnings: Vec<Warning>,
    /// The change in one line ([`summary`]): `image api: 1.4.2 → 2.4.0`.
    pub summary: String,
    /// The content hash of the resulting object (`None` for a deletion),
    /// for the plan's [`fingerprint`]s.
    pub after: Option<String>,
}

/// The stage order of each environment that uses change groups
/// (`kdeploy.io/group`), so a reviewer sees what runs before what.
fn order_notes(stages: &crate::order::ByEnv<'_>) -> Vec<String> {
    stages
        .iter()
        .filter_map(|(env, stages)| {
            let stages = stages.as_ref().ok()?;
            stages.is_used().then(|| {
                format!(
                    "{env} applies in stages (kdeploy.io/group, kdeploy.io/apply-after): {}",
                    stages.describe()
                )
            })
        })
        .collect()
}

/// The changes between two states.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Base revision label (commit id).
    pub base: String,
    /// Head revision label.
    pub head: String,
    /// Changes in apply order per environment: environments sorted; within
    /// one, additions and changes by kind rank, then deletions in reverse.
    pub changes: Vec<Change>,
    /// Resources compared and found equal.
    pub unchanged: usize,
    /// Releases not rendered because their inputs are identical git objects.
    pub unchanged_releases: usize,
    /// Changes left out by `plan.ignoreResources`.
    pub hidden_resources: usize,
    /// Number of ignored field paths that were configured.
    pub ignored_fields: usize,
    /// How the plan was made, when a reader must know (a base rendered
    /// with the head's kdeploy.yaml).
    pub notes: Vec<String>,
    /// Each (env, app)'s directory in the config repo (its services/
    /// directory, or its source's), for links.
    pub dirs: BTreeMap<(String, String), String>,
    /// Where the head's files are browsed: `<server>/<repo>/blob/<sha>`,
    /// when known (the action sets it); the comment then links each app.
    pub browse_url: Option<String>,
    /// The identity of each (env, app)'s changes ([`fingerprint`]).
    pub fingerprints: BTreeMap<(String, String), fingerprint::Fingerprint>,
    /// Policy findings at severity `error` ([`crate::policy`]): the plan
    /// fails.
    pub policy_errors: usize,
    /// What the cluster showed of the plan: live drift the merge sets
    /// back and refusals ([`live`]); by default, not checked.
    pub live: live::Live,
}

impl Plan {
    /// Counts of (added, changed, deleted).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |a| self.changes.iter().filter(|c| c.action == a).count();
        (n(Action::Added), n(Action::Changed), n(Action::Deleted))
    }

    /// True when anything changes.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Number of warnings over all changes.
    pub fn warning_count(&self) -> usize {
        self.changes.iter().map(|c| c.warnings.len()).sum()
    }
}

/// The marker shown instead of a Secret value.
pub const REDACTED: &str = "<redacted>";

/// Replaces the values of a Secret's `data` and `stringData` with markers
/// saying how each key differs from `other` (the other side of the diff).
/// Equal values get equal markers, so they produce no diff line.
pub(crate) fn redact_secret(object: &mut Value, other: Option<&Value>, side_is_head: bool) {
    if object["kind"] != "Secret"
        || !resource::split_api_version(object["apiVersion"].as_str().unwrap_or(""))
            .0
            .is_empty()
    {
        return;
    }
    for field in ["data", "stringData"] {
        let other_map = other.and_then(|o| o[field].as_object());
        if let Some(map) = object.get_mut(field).and_then(Value::as_object_mut) {
            for (key, value) in map.iter_mut() {
                let marker = match other_map.and_then(|m| m.get(key)) {
                    Some(o) if o == value => REDACTED.to_string(),
                    Some(_) if side_is_head => format!("{REDACTED} (changed)"),
                    Some(_) => format!("{REDACTED} (previous value)"),
                    None if side_is_head => format!("{REDACTED} (added)"),
                    None => format!("{REDACTED} (removed)"),
                };
                *value = Value::String(marker);
            }
        }
    }
    // kubectl's last-applied annotation would repeat the data in clear.
    if let Some(ann) = object["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
        && let Some(v) = ann.get_mut("kubectl.kubernetes.io/last-applied-configuration")
    {
        *v = Value::String(REDACTED.into());
    }
}

/// Removes an RFC 6901 pointer's target, if present.
fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    pattern == "*" || pattern == text
}

fn ignored(settings: &PlanSettings, id: &ResourceId) -> bool {
    settings.ignore_resources.iter().any(|p| {
        let parts: Vec<&str> = p.split(':').collect();
        let [g, k, ns, name] = parts.as_slice() else {
            return false;
        };
        glob_match(g, &id.group)
            && glob_match(k, &id.kind)
            && glob_match(ns, id.namespace.as_deref().unwrap_or(""))
            && glob_match(name, &id.name)
    })
}

/// The text compared for one side: ignored fields removed, Secrets redacted.
fn comparable(
    res: &Resource,
    other: Option<&Resource>,
    side_is_head: bool,
    settings: &PlanSettings,
) -> String {
    let is_secret = res.id.group.is_empty() && res.id.kind == "Secret";
    let ignores = settings
        .ignore_fields
        .iter()
        .any(|f| f.kinds.is_empty() || f.kinds.contains(&res.id.kind));
    if !is_secret && !ignores {
        // Nothing to remove or hide: no copy needed.
        return yaml::to_canonical(&res.object);
    }
    let mut object = res.object.clone();
    let mut other_obj = other.map(|o| o.object.clone());
    for f in &settings.ignore_fields {
        if f.kinds.is_empty() || f.kinds.contains(&res.id.kind) {
            remove_pointer(&mut object, &f.path);
            if let Some(o) = other_obj.as_mut() {
                remove_pointer(o, &f.path);
            }
        }
    }
    redact_secret(&mut object, other_obj.as_ref(), side_is_head);
    yaml::to_canonical(&object)
}

fn unified(old: &str, new: &str, id: &ResourceId, context: usize) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let name = id.to_string();
    diff.unified_diff()
        .context_radius(context)
        .header(&name, &name)
        .to_string()
}

/// Every resource of a state, keyed by (env, id), ids hashed in parallel
/// ([`HashedId`]). Its order is arbitrary: changes are sorted afterwards.
fn index(state: &State) -> Index<'_> {
    let releases: Vec<&crate::render::Rendered> = state.releases.iter().collect();
    let ids = crate::render::hashed_ids(&releases);
    releases
        .iter()
        .zip(ids)
        .flat_map(|(r, ids)| {
            r.resources
                .iter()
                .zip(ids)
                .map(|(res, id)| ((r.release.env.as_str(), id), res))
        })
        .collect()
}

type Index<'a> = HashMap<(&'a str, HashedId<'a>), &'a Resource, foldhash::fast::RandomState>;

enum Outcome {
    Unchanged,
    Hidden,
    Change(Box<Change>),
}

/// Plans the changes from `cmp.base` to `cmp.head`.
pub fn plan(cmp: &Comparison, settings: &PlanSettings, context: usize) -> Plan {
    plan_staged(
        cmp,
        &crate::order::stages_by_env(&cmp.head),
        settings,
        context,
    )
}

/// [`plan`] with the head's stages already found (the plan flow finds them
/// once for validation and for the plan's notes).
pub fn plan_staged(
    cmp: &Comparison,
    stages: &crate::order::ByEnv<'_>,
    settings: &PlanSettings,
    context: usize,
) -> Plan {
    let base = index(&cmp.base);
    let head = index(&cmp.head);
    let target = |env: &str| {
        cmp.head
            .settings
            .environments
            .get(env)
            .and_then(|e| e.kubernetes_version)
            .unwrap_or(warnings::NEWEST)
    };
    // Only deletions read it (a Namespace's or CRD's cascade).
    let contents = std::cell::OnceCell::new();
    // Canonical text and diffs dominate when many releases change: compare
    // resources in parallel.
    let head_entries: Vec<_> = head.iter().collect();
    let compared: Vec<Outcome> = head_entries
        .par_iter()
        .map(|(key, new)| {
            let old = base.get(*key).copied();
            // Equal objects give equal text: most resources of a re-rendered
            // release are unchanged, and serializing them was the plan's
            // largest cost. (apiVersion is part of the object: a bump is a change.)
            if old.is_some_and(|o| o.object == new.object) {
                return Outcome::Unchanged;
            }
            let new_text = comparable(new, old, true, settings);
            let (action, old_text) = match old {
                None => (Action::Added, String::new()),
                Some(old) => {
                    let old_text = comparable(old, Some(new), false, settings);
                    if old_text == new_text {
                        return Outcome::Unchanged;
                    }
                    (Action::Changed, old_text)
                }
            };
            if ignored(settings, &new.id) {
                return Outcome::Hidden;
            }
            let mut found = Vec::new();
            if let Some(old) = old {
                found.extend(warnings::immutable_fields(old, new).into_iter().map(|(path, why)| {
                    Warning {
                        code: "immutable-field",
                        message: format!(
                            "`{path}` changes, and {why}: the API server will refuse this apply; set the annotation `kdeploy.io/update-strategy: replace` to delete and re-create the resource, or keep the old value"
                        ),
                        path,
                    }
                }));
            }
            found.extend(warnings::api_version(new, target(key.0)));
            found.extend(warnings::foreign(new));
            Outcome::Change(Box::new(Change {
                env: key.0.to_string(),
                app: new.origin.app.clone(),
                action,
                id: new.id.clone(),
                diff: unified(&old_text, &new_text, &new.id, context),
                origin: new.origin.clone(),
                warnings: found,
                summary: summary::describe(action, old, Some(new)),
                after: Some(resource::content_hash(&new.object)),
            }))
        })
        .collect();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let mut hidden = 0;
    for outcome in compared {
        match outcome {
            Outcome::Unchanged => unchanged += 1,
            Outcome::Hidden => hidden += 1,
            Outcome::Change(c) => changes.push(*c),
        }
    }
    for (key, old) in &base {
        if head.contains_key(key) {
            continue;
        }
        if ignored(settings, &old.id) {
            hidden += 1;
            continue;
        }
        let old_text = comparable(old, None, false, settings);
        changes.push(Change {
            env: key.0.to_string(),
            app: old.origin.app.clone(),
            action: Action::Deleted,
            id: old.id.clone(),
            diff: unified(&old_text, "", &old.id, context),
            origin: old.origin.clone(),
            warnings: contents
                .get_or_init(|| warnings::Contents::of(base.iter().map(|((env, _), r)| (*env, *r))))
                .cascade(key.0, old)
                .into_iter()
                .chain(resource::data_bearing(&old.id.group, &old.id.kind).map(|why| Warning {
                    code: "needs-consent",
                    path: String::new(),
                    message: format!(
                        "deleting {why}: the merge holds this deletion until the pull request has the label `kdeploy/allow-deletions` (or the deploy runs with allow-deletions)"
                    ),
                }))
                .collect(),
            summary: summary::describe(Action::Deleted, Some(old), None),
            after: None,
        });
    }
    changes.sort_by_key(apply_order);
    let fingerprints = fingerprint::of(&changes);
    let mut notes = cmp.notes.clone();
    notes.extend(order_notes(stages));
    Plan {
        base: cmp.base.label.clone(),
        head: cmp.head.label.clone(),
        changes,
        unchanged,
        unchanged_releases: cmp.unchanged.len(),
        hidden_resources: hidden,
        ignored_fields: settings.ignore_fields.len(),
        notes,
        dirs: cmp
            .head
            .releases
            .iter()
            .chain(&cmp.base.releases)
            .map(|r| {
                (
                    (r.release.env.clone(), r.release.app.clone()),
                    r.release.dir.clone(),
                )
            })
            .collect(),
        browse_url: None,
        fingerprints,
        policy_errors: 0,
        live: live::Live::default(),
    }
}

/// Sort key: environment, then applies by kind rank, then deletions in
/// reverse kind rank.
fn apply_order(c: &Change) -> (String, bool, i16, ResourceId) {
    let rank = i16::from(resource::kind_rank(&c.id.group, &c.id.kind));
    let deleting = c.action == Action::Deleted;
    (
        c.env.clone(),
        deleting,
        if deleting { -rank } else { rank },
        c.id.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_values_become_markers_that_say_how_they_differ() {
        let mut head = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"same": "c2VjcmV0", "changed": "bmV3", "added": "eA=="},
            "stringData": {"token": "canary-head"}});
        let base = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"same": "c2VjcmV0", "changed": "b2xk", "removed": "eQ=="},
            "stringData": {"token": "canary-base"}});
        redact_secret(&mut head, Some(&base), true);
        let text = head.to_string();
        assert!(!text.contains("canary") && !text.contains("bmV3") && !text.contains("c2VjcmV0"));
        assert_eq!(head["data"]["same"], REDACTED);
        assert_eq!(head["data"]["changed"], "<redacted> (changed)");
        assert_eq!(head["data"]["added"], "<redacted> (added)");
    }

    #[test]
    fn pointer_removal_and_resource_patterns() {
        let mut v = json!({"metadata": {"annotations": {"checksum/env": "x", "keep": "y"}}});
        remove_pointer(&mut v, "/metadata/annotations/checksum~1env");
        assert_eq!(v, json!({"metadata": {"annotations": {"keep": "y"}}}));
        let id = ResourceId {
            group: String::new(),
            kind: "Secret".into(),
            namespace: Some("shop".into()),
            name: "db".into(),
        };
        let s = |p: &str| PlanSettings {
            ignore_resources: vec![p.into()],
            ..PlanSettings::default()
        };
        assert!(ignored(&s("*:Secret:*:*"), &id));
        assert!(ignored(&s(":Secret:shop:db"), &id));
        assert!(!ignored(&s("apps:*:*:*"), &id));
    }
}
