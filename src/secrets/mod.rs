//! SOPS-encrypted files in the config repo: `secrets.sops.yaml` beside a
//! service's `config.yaml` (values under `secrets`) and encrypted manifests
//! in raw and Kustomize sources.
//!
//! Decryption is done by the real `sops` ([`sops`]); plaintext lives only in
//! memory and every value is registered with [`mask`] as it arrives, so no
//! output (logs, plan, comment, summary, check run, `_gen`) can carry it.
//! A plan job without a key (a fork's pull request) still plans: values it
//! cannot open become placeholders derived from their ciphertext, and the
//! plan says which files could not be compared. Applying always needs keys.

pub mod key_services;
pub mod mask;
pub mod sops;

use serde_json::{Map, Value};
use sha2::Digest as _;

use crate::diag::{Diagnostic, Location};
use crate::yaml;

pub use crate::config::VALUES_FILE;

/// Whether a file that cannot be decrypted stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Applying, validating: every file must decrypt.
    Required,
    /// Planning, rendering for review: with no usable key (or no sops), the
    /// values become placeholders and the file is reported as not compared.
    Optional,
}

/// A file that was not decrypted (no key in this job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Path in the config repo.
    pub path: String,
    /// Hash of its encrypted text: equal at base and head means unchanged.
    pub digest: String,
    /// Why it was not decrypted, for the plan's note.
    pub why: String,
}

/// A decrypted tree, or its placeholder form.
#[derive(Debug)]
pub struct Opened {
    /// The values (without the `sops` metadata).
    pub value: Value,
    /// Set when the values are placeholders.
    pub sealed: Option<Sealed>,
}

/// True for `*.sops.yaml`, `*.sops.yml`, `*.sops.json`: files that must be
/// encrypted.
pub fn is_sops_name(name: &str) -> bool {
    [".sops.yaml", ".sops.yml", ".sops.json"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// True when a parsed document carries sops metadata.
pub fn has_metadata(doc: &Value) -> bool {
    doc.get("sops")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("mac") || m.contains_key("lastmodified"))
}

/// A quick test on the text before parsing it: a top-level `sops:` key.
pub fn may_have_metadata(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("sops:") || l.starts_with("\"sops\":"))
        || (text.trim_start().starts_with('{') && text.contains("\"sops\""))
}

fn format_of(path: &str) -> &'static str {
    if path.ends_with(".json") {
        "json"
    } else {
        "yaml"
    }
}

/// Opens a service's `secrets.sops.yaml`: a map of values.
///
/// # Errors
/// A diagnostic naming the file: not encrypted, no key (when required),
/// failed integrity check, sops missing (when required). Never plaintext.
pub fn open_values(path: &str, text: &str, need: Need) -> Result<Opened, Diagnostic> {
    let encrypted = yaml::parse(text).map_err(|e| e.diagnostic(path, "invalid YAML"))?;
    if !has_metadata(&encrypted) {
        return Err(not_encrypted(path));
    }
    let (mut opened, sealed) = open_docs(path, text, vec![encrypted], need)?;
    let value = opened.pop().unwrap_or(Value::Null);
    match value {
        Value::Object(_) => Ok(Opened { value, sealed }),
        Value::Null => Ok(Opened {
            value: Value::Object(Map::new()),
            sealed,
        }),
        other => Err(Diagnostic::new(
            Location::file(path),
            format!(
                "{VALUES_FILE} must hold a map of values, found {}",
                crate::config::type_name(&other)
            ),
        )
        .help("write `KEY: value` pairs before encrypting, e.g. `DB_PASSWORD: …`")),
    }
}

/// Opens an encrypted manifest file of a raw or Kustomize source. `None`
/// when the file is not a sops file (neither named nor marked as one).
///
/// # Errors
/// As [`open_values`].
pub fn open_manifests(
    path: &str,
    text: &str,
    need: Need,
) -> Result<Option<(String, Option<Sealed>)>, Diagnostic> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if !is_sops_name(name) && !may_have_metadata(text) {
        return Ok(None);
    }
    let mut docs = Vec::new();
    for doc in yaml::split_documents(text) {
        if yaml::is_blank(doc.text) {
            continue;
        }
        match yaml::parse(doc.text) {
            Ok(v) => docs.push(v),
            Err(e) => {
                let e = yaml::ParseError {
                    line: e.line.map(|l| l + doc.first_line - 1),
                    ..e
                };
                return Err(e.diagnostic(path, "invalid YAML"));
            }
        }
    }
    if !docs.iter().any(has_metadata) {
        return if is_sops_name(name) {
            Err(not_encrypted(path))
        } else {
            Ok(None)
        };
    }
    let (opened, sealed) = open_docs(path, text, docs, need)?;
    let text = opened
        .iter()
        .map(yaml::to_canonical)
        .collect::<Vec<_>>()
        .join("---\n");
    Ok(Some((text, sealed)))
}

/// Decrypts (or, when allowed, seals) the documents of one file; the file
/// is reported as [`Sealed`] when its values are placeholders.
fn open_docs(
    path: &str,
    text: &str,
    encrypted: Vec<Value>,
    need: Need,
) -> Result<(Vec<Value>, Option<Sealed>), Diagnostic> {
    // A file whose metadata names a key service the runner does not allow
    // never reaches sops: sops would call it with the job's credentials.
    let refused = key_services::refused(&encrypted);
    let result = if refused.is_empty() {
        sops::decrypt(text, format_of(path))
    } else {
        Err(sops::Failure::KeyService(refused.join(", ")))
    };
    match result {
        Ok(plain) => {
            let decrypted = parse_plain(path, &plain)?;
            for (i, (enc, dec)) in encrypted.iter().zip(&decrypted).enumerate() {
                let prefix = if encrypted.len() > 1 {
                    format!("{path}#{i}")
                } else {
                    format!("{path}#")
                };
                register(enc, dec, &prefix);
            }
            if need == Need::Required {
                return Ok((decrypted, None));
            }
            // Planning: templates (the pull request's) never see plaintext,
            // whatever they do to it; they get a value that changes exactly
            // when the plaintext does, so the plan still names changed keys.
            let planned = encrypted
                .into_iter()
                .zip(&decrypted)
                .enumerate()
                .map(|(i, (enc, dec))| keyed_placeholders(enc, dec, &format!("{path}#{i}")))
                .collect();
            Ok((planned, None))
        }
        Err(failure) => {
            let why = match (&failure, need) {
                (sops::Failure::NoKey(_), Need::Optional) => "no key in this job opens it".into(),
                (sops::Failure::Missing(_), Need::Optional) => "sops is not installed here".into(),
                (sops::Failure::KeyService(services), Need::Optional) => format!(
                    "its metadata names key services this runner does not allow ({services}; the runner allows them with the input `sops-key-services` or KDEPLOY_SOPS_KEY_SERVICES)"
                ),
                _ => return Err(explain(path, failure)),
            };
            let sealed = Sealed {
                path: path.to_string(),
                digest: short_hash(text),
                why,
            };
            Ok((
                encrypted.into_iter().map(placeholders).collect(),
                Some(sealed),
            ))
        }
    }
}

const PLACEHOLDER_PREFIX: &str = "sopsNotDecrypted";

/// A value that was not decrypted: derived from its ciphertext (so an
/// unchanged value gives the same placeholder at base and head), and valid
/// base64 (so it passes where Secret `data` is expected).
fn placeholder(ciphertext: &str) -> String {
    format!("{PLACEHOLDER_PREFIX}{}", short_hash(ciphertext))
}

fn short_hash(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

const PLANNED_PREFIX: &str = "sopsPlan";

/// The secret of this process that planned placeholders are keyed with:
/// 128 bits from the OS (through std's `RandomState`), never printed, so a
/// placeholder in a public plan cannot be matched against guessed values.
fn run_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        use std::hash::BuildHasher as _;
        let state = std::collections::hash_map::RandomState::new();
        let mut key = [0u8; 32];
        for (i, chunk) in key.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&state.hash_one(i).to_le_bytes());
        }
        key
    })
}

/// The value a template sees for a decrypted leaf while planning: keyed by
/// the run's secret, the leaf's place and its plaintext, so the base and
/// the head of one plan agree exactly where the values do. Valid base64,
/// as the ciphertext placeholder.
fn planned_placeholder(at: &str, plaintext: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(run_key());
    h.update(at.as_bytes());
    h.update([0]);
    h.update(plaintext.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{PLANNED_PREFIX}{hex}")
}

/// The decrypted tree with every leaf that was encrypted replaced by its
/// [`planned_placeholder`]; the metadata dropped.
fn keyed_placeholders(enc: Value, dec: &Value, at: &str) -> Value {
    match (enc, dec) {
        (Value::String(e), plain) if e.starts_with("ENC[") => {
            let text = match plain {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Value::String(planned_placeholder(at, &text))
        }
        (Value::Object(e), Value::Object(d)) => Value::Object(
            e.into_iter()
                .filter(|(k, _)| k != "sops")
                .map(|(k, ev)| {
                    let v = match d.get(&k) {
                        Some(dv) => keyed_placeholders(ev, dv, &format!("{at}.{k}")),
                        None => ev,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (Value::Array(e), Value::Array(d)) => Value::Array(
            e.into_iter()
                .zip(d)
                .enumerate()
                .map(|(i, (ev, dv))| keyed_placeholders(ev, dv, &format!("{at}[{i}]")))
                .collect(),
        ),
        (enc, _) => enc,
    }
}

/// The encrypted tree without its metadata, `ENC[…]` leaves replaced.
fn placeholders(mut doc: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) if s.starts_with("ENC[") => *s = placeholder(s),
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(m) => m.values_mut().for_each(walk),
            _ => {}
        }
    }
    if let Value::Object(m) = &mut doc {
        m.remove("sops");
    }
    walk(&mut doc);
    doc
}

/// Registers every decrypted leaf that was encrypted, named by its path.
fn register(enc: &Value, dec: &Value, at: &str) {
    match (enc, dec) {
        (Value::String(e), plain) if e.starts_with("ENC[") => {
            let text = match plain {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            mask::register(&text, at);
            // Secret `data` in an encrypted manifest is base64: its decoded
            // form is the secret too.
            if let Ok(bytes) =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.as_bytes())
                && let Ok(decoded) = String::from_utf8(bytes)
            {
                mask::register(&decoded, at);
            }
        }
        (Value::Object(e), Value::Object(d)) => {
            for (k, ev) in e {
                if k == "sops" {
                    continue;
                }
                if let Some(dv) = d.get(k) {
                    let sep = if at.ends_with('#') { "" } else { "." };
                    register(ev, dv, &format!("{at}{sep}{k}"));
                }
            }
        }
        (Value::Array(e), Value::Array(d)) => {
            for (i, (ev, dv)) in e.iter().zip(d).enumerate() {
                register(ev, dv, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Parses sops's plaintext output. Errors never quote it.
fn parse_plain(path: &str, plain: &str) -> Result<Vec<Value>, Diagnostic> {
    let mut docs = Vec::new();
    for doc in yaml::split_documents(plain) {
        if yaml::is_blank(doc.text) {
            continue;
        }
        let v = yaml::parse(doc.text).map_err(|_| {
            Diagnostic::new(
                Location::file(path),
                "sops decrypted it, but the plaintext is not valid YAML (not shown: it is secret)",
            )
            .help(format!(
                "check the plaintext with `sops decrypt {path}` on a machine with the key"
            ))
        })?;
        docs.push(v);
    }
    Ok(docs)
}

fn not_encrypted(path: &str) -> Diagnostic {
    Diagnostic::new(
        Location::file(path),
        "is named as a SOPS file but is not encrypted (no `sops` metadata)",
    )
    .help(format!(
        "encrypt it in place with `sops encrypt -i {path}` (recipients from .sops.yaml or --age), and check that its plaintext was never committed; or rename it if it holds nothing secret"
    ))
}

/// The error for a file sops would not open. Never holds plaintext: sops
/// prints none on failure, and what it prints is masked on output anyway.
fn explain(path: &str, failure: sops::Failure) -> Diagnostic {
    let at = Location::file(path);
    match failure {
        sops::Failure::NoKey(detail) => Diagnostic::new(
            at,
            format!("cannot decrypt it: no key available here opens it\n{detail}"),
        )
        .help("give kdeploy a key of one of its recipients: SOPS_AGE_KEY or SOPS_AGE_KEY_FILE (the action input `sops-age-key`), a PGP key in GNUPGHOME, or the credentials of its KMS/Vault key; `kdeploy plan` without keys still plans and marks these values as not compared"),
        sops::Failure::Tampered => Diagnostic::new(
            at,
            "fails sops's integrity check: a value or the MAC does not match (it was edited without sops, or tampered with)",
        )
        .help(format!("edit it only with `sops edit {path}`; if this change is not yours, restore the file from the last good commit")),
        sops::Failure::NotEncrypted => not_encrypted(path),
        sops::Failure::Missing(detail) => Diagnostic::new(
            at,
            format!("cannot decrypt it: {detail}"),
        )
        .help("install sops 3.x (https://github.com/getsops/sops/releases) or set KDEPLOY_SOPS to its path; the kdeploy image ships it"),
        sops::Failure::KeyService(services) => Diagnostic::new(
            at,
            format!("not decrypted: its metadata names key services this runner does not allow: {services}"),
        )
        .help("sops would call them with this job's credentials: if they are yours, list them in the action input `sops-key-services` (or KDEPLOY_SOPS_KEY_SERVICES), comma-separated; otherwise the file's metadata was changed to point elsewhere"),
        sops::Failure::Other(detail) => Diagnostic::new(at, format!("sops failed: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_ciphertext_and_drop_metadata() {
        let doc = yaml::parse(
            "A: ENC[AES256_GCM,data:abc,iv:x,tag:y,type:str]\nB_unencrypted: plain\nsops:\n  mac: m\n",
        )
        .unwrap();
        let p = placeholders(doc.clone());
        assert!(p.get("sops").is_none());
        assert_eq!(p["B_unencrypted"], "plain");
        let a = p["A"].as_str().unwrap();
        assert!(a.starts_with(PLACEHOLDER_PREFIX));
        assert_eq!(a.len() % 4, 0, "valid base64 length: {a}");
        assert_eq!(placeholders(doc)["A"], p["A"]);
    }

    #[test]
    fn planned_placeholders_change_exactly_where_the_plaintext_does() {
        let enc = yaml::parse("A: ENC[x]\nB: ENC[y]\nC: plain\nsops:\n  mac: m\n").unwrap();
        let one = yaml::parse("A: s3cret\nB: other\nC: plain\n").unwrap();
        let two = yaml::parse("A: s3cret\nB: rotated\nC: plain\n").unwrap();
        let p1 = keyed_placeholders(enc.clone(), &one, "f#0");
        let p2 = keyed_placeholders(enc, &two, "f#0");
        assert_eq!(p1["A"], p2["A"]);
        assert_ne!(p1["B"], p2["B"]);
        assert_eq!(p1["C"], "plain");
        assert!(p1.get("sops").is_none());
        let a = p1["A"].as_str().unwrap();
        assert!(a.starts_with(PLANNED_PREFIX) && !a.contains("s3cret"));
        assert_eq!(a.len() % 4, 0, "valid base64 length: {a}");
    }

    #[test]
    fn names_and_markers() {
        assert!(is_sops_name("db.sops.yaml") && !is_sops_name("db.yaml"));
        assert!(may_have_metadata("a: 1\nsops:\n  mac: x\n"));
        assert!(!may_have_metadata("a:\n  sops: 1\n"));
    }
}
