//! Plan identity: a fingerprint per (environment, app) of what a plan would
//! create, change (the resulting object) and delete, so a merge can tell
//! whether it applies the plan a pull request showed ([`crate::review`]).
//!
//! A fingerprint hashes, in id order, each change's action, resource id and
//! the content hash of the resulting object (nothing for a deletion): the
//! same objects give the same fingerprint whatever the diff text, the
//! ignored fields or the comment's layout. Secret values count (as hashes),
//! though no text shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{Action, Change};

/// kdeploy's version as fingerprints record it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("KDEPLOY_COMMIT"));

/// The identity of one (environment, app)'s planned changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// 16 hexadecimal digits over every change of the section.
    pub id: String,
    /// Per resource (`apps/Deployment shop/api`): its action and the first
    /// 8 digits of the resulting object's hash, so a differing section can
    /// say which resources differ. Left out of large sections.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, String>,
}

/// Resources per section whose digests a fingerprint carries.
pub const RESOURCES_KEPT: usize = 100;

/// The hidden line a plan comment's first part starts its summary with:
/// the kdeploy version and revisions of the plan, for a merge to compare.
pub fn review_marker(plan: &super::Plan) -> String {
    let v = serde_json::json!({"version": VERSION, "base": plan.base, "head": plan.head});
    format!("<!-- {REVIEW_MARKER} {v} -->\n")
}

/// The hidden line before each (env, app) section: its fingerprint.
pub fn section_marker(key: &(String, String), f: &Fingerprint) -> String {
    let v = serde_json::json!({"env": key.0, "app": key.1, "fingerprint": f});
    format!("<!-- {SECTION_MARKER} {v} -->\n")
}

/// The words that open the hidden lines.
pub const REVIEW_MARKER: &str = "kdeploy-review";
/// See [`section_marker`].
pub const SECTION_MARKER: &str = "kdeploy-fingerprint";

/// One change's contribution: its sign and the whole hash of the object
/// it leaves (`+ab12cd34…`, `~…`, `-`); a fingerprint shows the first
/// 8 digits.
fn digest(c: &Change) -> String {
    let sign = c.action.sign();
    match (&c.after, c.action) {
        (_, Action::Deleted) | (None, _) => sign.to_string(),
        (Some(h), _) => format!("{sign}{h}"),
    }
}

/// The fingerprints of `changes`, per (environment, app).
pub fn of(changes: &[Change]) -> BTreeMap<(String, String), Fingerprint> {
    let mut sections: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for c in changes {
        sections
            .entry((c.env.clone(), c.app.clone()))
            .or_default()
            .insert(c.id.to_string(), digest(c));
    }
    sections
        .into_iter()
        .map(|(key, resources)| {
            let mut h = sha2::Sha256::new();
            for (id, d) in &resources {
                h.update(id.as_bytes());
                h.update(b"\0");
                h.update(d.as_bytes());
                h.update(b"\n");
            }
            let id: String = h
                .finalize()
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect();
            let kept = if resources.len() <= RESOURCES_KEPT {
                resources
                    .into_iter()
                    .map(|(k, v)| (k, v.chars().take(9).collect()))
                    .collect()
            } else {
                BTreeMap::new()
            };
            (
                key,
                Fingerprint {
                    id,
                    resources: kept,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;

    fn change(name: &str, action: Action, after: Option<&str>) -> Change {
        let r = Resource::for_tests(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}
        }));
        Change {
            env: "staging".into(),
            app: "app".into(),
            action,
            id: r.id.clone(),
            diff: String::new(),
            origin: r.origin.clone(),
            warnings: Vec::new(),
            summary: String::new(),
            after: after.map(str::to_string),
        }
    }

    #[test]
    fn same_objects_same_fingerprint_any_difference_shows() {
        let a = [
            change("a", Action::Added, Some("00112233445566778899aabbccddeeff")),
            change("b", Action::Deleted, None),
        ];
        let f = of(&a);
        let key = ("staging".to_string(), "app".to_string());
        assert_eq!(f[&key].id.len(), 16);
        assert_eq!(f[&key].resources["ConfigMap ns/a"], "+00112233");
        assert_eq!(f[&key].resources["ConfigMap ns/b"], "-");
        // Order does not matter; one byte of a resulting object does.
        let mut b = a.clone();
        b.reverse();
        assert_eq!(of(&b), f);
        b[1].after = Some("00112233445566778899aabbccddeefe".into());
        assert_ne!(of(&b)[&key].id, f[&key].id);
    }
}
