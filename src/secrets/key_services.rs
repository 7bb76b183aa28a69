//! The key services a sops file's metadata names, and which of them the
//! runner lets sops call.
//!
//! sops decrypts a file's data key with whatever the file's metadata
//! lists: age and PGP keys are local, but a KMS key, a Vault address or an
//! Azure Key Vault is called over the network with the job's credentials
//! (`VAULT_TOKEN`, `AWS_*`, …). A pull request writes that metadata, so a
//! file naming a Vault of its author's choosing would receive the token.
//! Which services may be called is runner policy: the action input
//! `sops-key-services` or `KDEPLOY_SOPS_KEY_SERVICES` (comma-separated
//! Vault addresses, KMS ARNs, GCP KMS resource ids, Azure Key Vault URLs;
//! `*` for any). A file naming another is not given to sops at all.

use std::sync::RwLock;

use serde_json::Value;

/// Allowed services set by the action input (the environment variable is
/// read when this is empty).
static ALLOWED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Sets the services the runner allows (the action input).
pub fn set_allowed(list: &str) {
    if let Ok(mut a) = ALLOWED.write() {
        *a = split(list);
    }
}

fn split(list: &str) -> Vec<String> {
    list.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn allowed() -> Vec<String> {
    let set = ALLOWED.read().map(|a| a.clone()).unwrap_or_default();
    if set.is_empty() {
        std::env::var("KDEPLOY_SOPS_KEY_SERVICES")
            .map(|v| split(&v))
            .unwrap_or_default()
    } else {
        set
    }
}

/// `(kind, address)` of every network key service named in the metadata
/// of `docs` (the top-level lists and those inside `key_groups`).
pub fn named(docs: &[Value]) -> Vec<(&'static str, String)> {
    const SERVICES: &[(&str, &str)] = &[
        ("hc_vault", "vault_address"),
        ("kms", "arn"),
        ("gcp_kms", "resource_id"),
        ("azure_kv", "vault_url"),
    ];
    let mut out = Vec::new();
    let mut collect = |group: &Value| {
        for (kind, field) in SERVICES {
            for entry in group
                .get(*kind)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let address = entry
                    .get(*field)
                    .and_then(Value::as_str)
                    .unwrap_or("(no address)");
                out.push((*kind, address.to_string()));
            }
        }
    };
    for doc in docs {
        let Some(meta) = doc.get("sops") else {
            continue;
        };
        collect(meta);
        for group in meta
            .get("key_groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect(group);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The services of `docs` the runner does not allow, as `kind address`.
pub fn refused(docs: &[Value]) -> Vec<String> {
    let allowed = allowed();
    if allowed.iter().any(|a| a == "*") {
        return Vec::new();
    }
    named(docs)
        .into_iter()
        .filter(|(_, address)| !allowed.contains(address))
        .map(|(kind, address)| format!("{kind} {address}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_services_are_found_in_groups_too() {
        let doc = crate::yaml::parse(
            "a: ENC[x]\nsops:\n  age:\n  - recipient: age1x\n  hc_vault:\n  - vault_address: http://127.0.0.1:8200\n  key_groups:\n  - kms:\n    - arn: arn:aws:kms:eu-west-1:1:key/k\n    pgp:\n    - fp: ABC\n",
        )
        .unwrap();
        assert_eq!(
            named(std::slice::from_ref(&doc)),
            [
                ("hc_vault", "http://127.0.0.1:8200".to_string()),
                ("kms", "arn:aws:kms:eu-west-1:1:key/k".to_string())
            ]
        );
        let local = crate::yaml::parse("a: ENC[x]\nsops:\n  age:\n  - recipient: age1x\n").unwrap();
        assert!(named(&[local]).is_empty());
    }
}
