//! Running the real `sops` binary: the file goes in on stdin, the plaintext
//! comes back on stdout into memory, and sops's exit code says what went
//! wrong. Writing our own SOPS decryption would mean re-implementing every
//! key service sops supports (age, PGP, cloud KMS, Vault) and its MAC; the
//! binary is pinned and checksum-verified in the image instead.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Exit codes of sops (`cmd/sops/codes`) that kdeploy explains.
const CODE_DECRYPTING_TREE: i32 = 25;
const CODE_MAC_MISMATCH: i32 = 51;
const CODE_MAC_NOT_FOUND: i32 = 52;
const CODE_COULD_NOT_RETRIEVE_KEY: i32 = 128;

/// How long one decryption may take: `KDEPLOY_SOPS_TIMEOUT` seconds (the
/// runner's setting, as `KDEPLOY_SOPS`), else 60.
fn timeout() -> std::time::Duration {
    let secs = std::env::var("KDEPLOY_SOPS_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// The age key given to the action (`sops-age-key`), passed to sops as
/// `SOPS_AGE_KEY` without being put in the process environment.
static AGE_KEY: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Sets the age key(s) sops gets as `SOPS_AGE_KEY` (the action input).
pub fn set_age_key(key: String) {
    if let Ok(mut k) = AGE_KEY.write() {
        *k = Some(key);
    }
}

/// Why sops did not return plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No key available to this process opens the file's data key.
    NoKey(String),
    /// The file was changed without sops (MAC or value authentication failed).
    Tampered,
    /// The file has no sops metadata.
    NotEncrypted,
    /// sops could not be started.
    Missing(String),
    /// The file names key services the runner does not allow
    /// ([`super::key_services`]); sops was not run.
    KeyService(String),
    /// Anything else, with sops's message.
    Other(String),
}

/// The sops program: `KDEPLOY_SOPS` (set by whoever runs kdeploy, never by
/// the config repo, which a pull request controls), else `sops` on PATH.
fn program() -> OsString {
    std::env::var_os("KDEPLOY_SOPS").unwrap_or_else(|| "sops".into())
}

/// Variables sops reads for its key services; nothing else of the job's
/// environment (tokens, kubeconfigs) reaches it.
fn passed(name: &str) -> bool {
    const EXACT: &[&str] = &["PATH", "HOME", "GNUPGHOME", "XDG_CONFIG_HOME", "TMPDIR"];
    const PREFIXES: &[&str] = &["SOPS_", "AWS_", "AZURE_", "GOOGLE_", "VAULT_"];
    EXACT.contains(&name) || (PREFIXES.iter().any(|p| name.starts_with(p)) && name != "SOPS_EDITOR")
}

/// Decrypted files by the hash of their encrypted text: the base and the
/// head of a plan usually hold the same file.
type Cache = Mutex<std::collections::HashMap<[u8; 32], Result<String, Failure>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Decrypts `text` (`yaml` or `json`, as `format`) to the same format.
pub fn decrypt(text: &str, format: &str) -> Result<String, Failure> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(format.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    if let Some(hit) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return hit;
    }
    let started = std::time::Instant::now();
    let result = run(text, format);
    crate::process_time::charge(started.elapsed());
    if let Ok(mut c) = cache().lock() {
        c.insert(key, result.clone());
    }
    result
}

fn run(text: &str, format: &str) -> Result<String, Failure> {
    // The run's total for renderer processes bounds this one too.
    let limit = crate::process_time::timeout(timeout()).map_err(Failure::Other)?;
    let mut command = Command::new(program());
    command
        .args(["decrypt", "--input-type", format, "--output-type", format])
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(passed)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = AGE_KEY.read().ok().and_then(|k| k.clone()) {
        command.env("SOPS_AGE_KEY", key);
    }
    let mut child = command.spawn().map_err(|e| {
        Failure::Missing(format!("cannot run `{}`: {e}", program().to_string_lossy()))
    })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or(Failure::Other("no stdin".into()))?;
    let input = text.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child
        .stdout
        .take()
        .ok_or(Failure::Other("no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or(Failure::Other("no stderr".into()))?;
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut stderr).take(16 * 1024).read_to_string(&mut s);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        s
    });
    let out_thread = std::thread::spawn(move || {
        let mut out = String::new();
        let read = stdout.read_to_string(&mut out);
        read.map(|_| out)
    });
    // A file's metadata names its key services (a KMS, a Vault address):
    // one that does not answer must not hold the run.
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Other(format!(
                    "sops did not finish within {}s (a key service named in the file's metadata did not answer) and was stopped",
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => return Err(Failure::Other(format!("waiting for sops: {e}"))),
        }
    };
    let _ = writer.join();
    let read = out_thread.join().unwrap_or_else(|_| Ok(String::new()));
    let err = err_thread.join().unwrap_or_default();
    if status.success() {
        return read.map_err(|_| Failure::Other("sops printed text that is not UTF-8".into()));
    }
    let out = read.unwrap_or_default();
    // Plaintext never leaves this function on failure.
    drop(out);
    Err(match status.code() {
        Some(CODE_COULD_NOT_RETRIEVE_KEY) => Failure::NoKey(key_failures(&err)),
        Some(CODE_MAC_MISMATCH | CODE_MAC_NOT_FOUND | CODE_DECRYPTING_TREE) => Failure::Tampered,
        _ if err.contains("sops metadata not found") => Failure::NotEncrypted,
        code => Failure::Other(format!(
            "sops exited with {}: {}",
            code.map_or("a signal".to_string(), |c| format!("code {c}")),
            first_lines(&err, 6)
        )),
    })
}

/// The per-key lines of sops's "could not retrieve the data key" message:
/// recipients and why each failed (public information, no plaintext).
fn key_failures(err: &str) -> String {
    let lines: Vec<String> = err
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("- |")
                .trim_start_matches('|')
                .trim()
        })
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !l.starts_with("Failed to get the data key") && !l.starts_with("Recovery failed")
        })
        .filter(|l| !l.starts_with("order for SOPS") && !l.starts_with("but none were"))
        .map(str::to_string)
        .collect();
    first_lines(&lines.join("\n"), 12)
}

fn first_lines(text: &str, n: usize) -> String {
    let mut out: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect();
    if text.lines().filter(|l| !l.trim().is_empty()).count() > n {
        out.push("…");
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_service_variables_reach_sops() {
        for name in [
            "SOPS_AGE_KEY",
            "SOPS_AGE_KEY_FILE",
            "AWS_PROFILE",
            "VAULT_ADDR",
            "PATH",
        ] {
            assert!(passed(name), "{name}");
        }
        for name in [
            "GITHUB_TOKEN",
            "KUBECONFIG",
            "INPUT_GITHUB-TOKEN",
            "SOPS_EDITOR",
            "ACTIONS_RUNTIME_TOKEN",
        ] {
            assert!(!passed(name), "{name}");
        }
    }
}
