//! `kdeploy diff --live`: per resource, the live object against what the
//! API server would make of the head state (a server-side apply dry run),
//! like `kubectl diff`. Server-managed fields (status, resourceVersion,
//! managedFields, ...) are left out of both sides so only real changes show.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::{FIELD_MANAGER, Kinds, Options, api_for, api_message, with_retry};
use crate::resource::Resource;
use crate::yaml;

/// One resource whose live state differs from the desired one.
#[derive(Debug, Clone)]
pub struct LiveDiff {
    /// `apps/Deployment shop/api`.
    pub id: String,
    /// Unified diff, live -> desired.
    pub diff: String,
    /// The resource does not exist yet (or its namespace does not).
    pub new: bool,
}

/// Fields the server owns; comparing them would show noise.
pub(crate) fn strip(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
        if meta
            .get("annotations")
            .is_some_and(|a| a.as_object().is_some_and(|o| o.is_empty()))
        {
            meta.remove("annotations");
        }
    }
    v
}

/// Diffs every resource against the cluster. Secrets are compared but
/// their values never printed.
///
/// # Errors
/// A message per resource that could not be compared.
pub async fn diff(
    client: &kube::Client,
    resources: &[&Resource],
    opts: &Options,
) -> Result<Vec<LiveDiff>, Vec<String>> {
    let mut kinds = Kinds::new(client.clone());
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = true;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for r in resources {
        let resolved = match kinds.resolve(&r.api_version, &r.id.kind, opts).await {
            Ok(Some(x)) => Some(x),
            Ok(None) => None,
            Err(e) => {
                errors.push(format!("{}: {}", r.id, api_message(&e)));
                continue;
            }
        };
        let (live, desired, new) = match resolved {
            // A kind not served yet (its CRD is in the plan): all new.
            None => (Value::Null, r.object.clone(), true),
            Some((ar, caps)) => {
                let api: Api<DynamicObject> =
                    api_for(client, &ar, &caps, r.id.namespace.as_deref());
                let live = match with_retry(opts, || api.get_opt(&r.id.name)).await {
                    Ok(l) => l,
                    // The namespace does not exist yet: new, not an error.
                    Err(kube::Error::Api(s)) if s.code == 404 => None,
                    Err(e) => {
                        errors.push(format!("{}: {}", r.id, api_message(&e)));
                        continue;
                    }
                };
                let obj: DynamicObject = match serde_json::from_value(r.object.clone()) {
                    Ok(o) => o,
                    Err(e) => {
                        errors.push(format!("{}: {e}", r.id));
                        continue;
                    }
                };
                let patch = Patch::Apply(&obj);
                let desired = match with_retry(opts, || api.patch(&r.id.name, &params, &patch))
                    .await
                {
                    Ok(d) => serde_json::to_value(d).unwrap_or(Value::Null),
                    Err(kube::Error::Api(s)) if s.code == 404 => r.object.clone(),
                    Err(e) => {
                        errors.push(format!("{} ({}): {}", r.id, r.origin.file, api_message(&e)));
                        continue;
                    }
                };
                let new = live.is_none();
                (
                    live.map(|l| serde_json::to_value(l).unwrap_or(Value::Null))
                        .unwrap_or(Value::Null),
                    desired,
                    new,
                )
            }
        };
        let (live, desired) = (strip(live), strip(desired));
        let (mut a, mut b) = (live.clone(), desired.clone());
        if !a.is_null() {
            crate::plan::redact_secret(&mut a, Some(&desired), false);
        }
        crate::plan::redact_secret(&mut b, (!live.is_null()).then_some(&live), true);
        if a == b {
            continue;
        }
        let old = if a.is_null() {
            String::new()
        } else {
            yaml::to_canonical(&a)
        };
        let text = similar::TextDiff::from_lines(&old, yaml::to_canonical(&b))
            .unified_diff()
            .context_radius(3)
            .header(&format!("live {}", r.id), &format!("desired {}", r.id))
            .to_string();
        out.push(LiveDiff {
            id: r.id.to_string(),
            diff: text,
            new,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
