//! A directory of rendered releases kept between CI runs, so that a plan
//! after a shared chart change does not render its base again.
//!
//! An entry is one release as a deploy rendered it (images pinned, scopes
//! applied), filed under a digest of everything its output depends on: the
//! git ids of its service files, its chart tree (or the built-in chart's
//! files, or a remote chart's reference), kdeploy.yaml, the image lock, the
//! runner policy and renderer programs in force, its environment and app,
//! and kdeploy's version. Equal digests mean equal output, so an entry can
//! stand in for rendering the base of a plan.
//!
//! Trust runs one way. Deploys on the protected branch write the cache;
//! pull requests only read it, and only for the base of a plan, which is
//! shown to a reviewer and never applied. Nothing that writes to a cluster
//! reads it: a poisoned directory can mislead a review, never change an
//! apply or a prune. Entries carry a checksum and their own key; one that
//! is corrupt, truncated or written by another kdeploy is ignored, with a
//! notice, and the release is rendered instead.
//!
//! Decrypted values never leave the job: a release that read a SOPS file
//! or renders a Secret is not written (and such an entry is refused).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{Release, ReleaseKey, Rendered, State};
use crate::config::Layout;
use crate::config::policy::RunnerPolicy;
use crate::resource::Resource;

/// The entry format; a new one is a new directory, so old entries are
/// simply never read.
const FORMAT: &str = "kdeploy-render-cache/1";

/// Entries not written or kept for this long are removed by a writer.
const KEEP_DAYS: u64 = 14;

/// Renderer programs the runner may choose: their output is part of a key.
const RUNNER_PROGRAMS: &[&str] = &["KDEPLOY_HELM", "KDEPLOY_KUSTOMIZE"];

/// A render cache directory (the runner's: `--render-cache`, the action's
/// input `render-cache`).
#[derive(Debug, Clone)]
pub struct RenderCache {
    dir: PathBuf,
}

/// What every release of one revision reads besides its own files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope([u8; 32]);

impl Scope {
    /// The scope of releases rendered with `layout`: `None` in the work
    /// tree, where nothing has a git id.
    pub fn of(layout: &Layout, from_git: bool) -> Option<Scope> {
        if !from_git {
            return None;
        }
        let mut h = sha2::Sha256::new();
        h.update(FORMAT);
        h.update([0]);
        h.update(env!("CARGO_PKG_VERSION"));
        for id in [layout.settings_id, layout.lock_id] {
            h.update([0]);
            h.update(id.map(|i| i.to_string()).unwrap_or_default());
        }
        h.update([0]);
        h.update(format!("{:?}", RunnerPolicy::of(&layout.settings)));
        for var in RUNNER_PROGRAMS {
            h.update([0]);
            h.update(std::env::var(var).unwrap_or_default());
        }
        Some(Scope(h.finalize().into()))
    }
}

/// How a cache was used by one comparison: what a log line reports.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The directory.
    pub dir: String,
    /// Base releases read from it.
    pub hits: usize,
    /// Base releases rendered because no entry was found.
    pub misses: usize,
    /// Entries found but not used, each `file: why`.
    pub ignored: Vec<String>,
}

impl Summary {
    /// One line for a log: `render cache: 2,997 of 3,000 …`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "render cache {}: {} of {} base release(s) read from it",
            self.dir,
            self.hits,
            self.hits + self.misses
        );
        if self.misses > 0 {
            s.push_str(", the rest rendered");
        }
        if !self.ignored.is_empty() {
            s.push_str(&format!(
                "; {} entr{} ignored and rendered instead (first: {})",
                self.ignored.len(),
                if self.ignored.len() == 1 { "y" } else { "ies" },
                self.ignored[0]
            ));
        }
        s
    }
}

/// What a writer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// New entries.
    pub written: usize,
    /// Entries already there and equal to this render (their time
    /// renewed); any other entry for the same key is replaced.
    pub kept: usize,
    /// Releases never cached: they read a SOPS file or render a Secret.
    pub secret: usize,
    /// Releases without a key (the work tree).
    pub unkeyed: usize,
    /// Old entries removed.
    pub pruned: usize,
}

/// Lookups of one comparison's base, counted.
pub struct Reads<'a> {
    cache: &'a RenderCache,
    scope: Scope,
    hits: AtomicUsize,
    misses: AtomicUsize,
    ignored: Mutex<Vec<String>>,
}

/// The payload of an entry.
#[derive(Serialize, Deserialize)]
struct Entry {
    release: Release,
    resources: Vec<Resource>,
    inputs: Vec<(String, String)>,
}

impl RenderCache {
    /// The cache at `dir` (created by the first write).
    pub fn at(dir: impl Into<PathBuf>) -> RenderCache {
        RenderCache { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lookups for releases rendered under `scope`.
    pub fn reads(&self, scope: Scope) -> Reads<'_> {
        Reads {
            cache: self,
            scope,
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            ignored: Mutex::default(),
        }
    }

    fn entries(&self) -> PathBuf {
        self.dir.join(FORMAT.replace('/', "-"))
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.entries()
            .join(&digest[..2])
            .join(format!("{digest}.json"))
    }

    /// Writes an entry for every release of `state` that may be cached,
    /// then removes entries neither written nor kept for [`KEEP_DAYS`].
    ///
    /// # Errors
    /// When the directory cannot be written.
    pub fn store(&self, state: &State) -> std::io::Result<Stored> {
        let mut stored = Stored::default();
        let Some(scope) = state.cache_scope else {
            stored.unkeyed = state.releases.len();
            return Ok(stored);
        };
        std::fs::create_dir_all(self.entries())?;
        let outcomes: Vec<std::io::Result<Outcome>> = state
            .releases
            .par_iter()
            .map(|r| self.store_one(scope, r))
            .collect();
        for outcome in outcomes {
            match outcome? {
                Outcome::Written => stored.written += 1,
                Outcome::Kept => stored.kept += 1,
                Outcome::Secret => stored.secret += 1,
                Outcome::Unkeyed => stored.unkeyed += 1,
            }
        }
        stored.pruned = prune(&self.entries(), KEEP_DAYS)?;
        Ok(stored)
    }
}

/// What became of one release in [`RenderCache::store`].
enum Outcome {
    Written,
    Kept,
    Secret,
    Unkeyed,
}

impl RenderCache {
    fn store_one(&self, scope: Scope, r: &Rendered) -> std::io::Result<Outcome> {
        let Some(key) = &r.key else {
            return Ok(Outcome::Unkeyed);
        };
        if holds_secret(r) {
            return Ok(Outcome::Secret);
        }
        let digest = digest(scope, &r.release.env, &r.release.app, key);
        let path = self.path(&digest);
        let payload = serde_json::to_vec(&Entry {
            release: r.release.clone(),
            resources: r.resources.clone(),
            inputs: r.inputs.clone(),
        })
        .map_err(std::io::Error::other)?;
        let sum = format!("{:x}", sha2::Sha256::digest(&payload));
        let mut bytes =
            format!("{FORMAT} {} {digest} {sum}\n", env!("CARGO_PKG_VERSION")).into_bytes();
        bytes.extend(payload);
        // An entry already there is kept only when it is exactly what this
        // deploy rendered: a corrupt or tampered one is replaced.
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            // Renewed, so that pruning keeps what deploys still use.
            std::fs::File::options()
                .append(true)
                .open(&path)?
                .set_modified(std::time::SystemTime::now())?;
            return Ok(Outcome::Kept);
        }
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent)?;
        // Written aside and renamed: a reader never sees half an entry.
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(Outcome::Written)
    }
}

impl Reads<'_> {
    /// The cached release `env`/`app` keyed `key`, when a sound entry is
    /// there.
    pub fn get(&self, env: &str, app: &str, key: &ReleaseKey) -> Option<Rendered> {
        let digest = digest(self.scope, env, app, key);
        let path = self.cache.path(&digest);
        let found = match std::fs::read(&path) {
            Ok(bytes) => read_entry(&bytes, &digest, env, app),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(None),
            Err(e) => Err(Some(format!("cannot read it: {e}"))),
        };
        match found {
            Ok(entry) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Rendered {
                    release: entry.release,
                    resources: entry.resources,
                    key: Some(key.clone()),
                    inputs: entry.inputs,
                    sealed: Vec::new(),
                })
            }
            Err(why) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                if let Some(why) = why
                    && let Ok(mut ignored) = self.ignored.lock()
                {
                    ignored.push(format!("{}: {why}", path.display()));
                }
                None
            }
        }
    }

    /// Counts a release that had no key to look up (rendered).
    pub fn unkeyed(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// What the lookups found.
    pub fn summary(self) -> Summary {
        let mut ignored = self.ignored.into_inner().unwrap_or_default();
        ignored.sort();
        Summary {
            dir: self.cache.dir.display().to_string(),
            hits: self.hits.into_inner(),
            misses: self.misses.into_inner(),
            ignored,
        }
    }
}

/// An entry's payload, checked: `Err(Some(why))` when it must be ignored.
fn read_entry(bytes: &[u8], digest: &str, env: &str, app: &str) -> Result<Entry, Option<String>> {
    let split = bytes.iter().position(|b| *b == b'\n');
    let (header, payload) = match split {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => return Err(Some("not a kdeploy render cache entry".into())),
    };
    let header = std::str::from_utf8(header).unwrap_or_default();
    let fields: Vec<&str> = header.split(' ').collect();
    let [format, version, key, sum] = fields[..] else {
        return Err(Some("not a kdeploy render cache entry".into()));
    };
    if format != FORMAT {
        return Err(Some(format!("format `{format}`, not {FORMAT}")));
    }
    if version != env!("CARGO_PKG_VERSION") {
        return Err(Some(format!(
            "written by kdeploy {version}, this is {}",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if key != digest {
        return Err(Some("its key is another release's".into()));
    }
    if format!("{:x}", sha2::Sha256::digest(payload)) != sum {
        return Err(Some(
            "its checksum does not match (corrupt or truncated)".into(),
        ));
    }
    let entry: Entry =
        serde_json::from_slice(payload).map_err(|e| Some(format!("unreadable: {e}")))?;
    if entry.release.env != env || entry.release.app != app {
        return Err(Some(format!(
            "it holds {}/{}, not {env}/{app}",
            entry.release.env, entry.release.app
        )));
    }
    if entry.resources.iter().any(is_secret) {
        return Err(Some("it holds a Secret, which a cache never does".into()));
    }
    Ok(entry)
}

/// Whether a release must stay out of the cache: decrypted values and
/// Secrets never leave the job.
fn holds_secret(r: &Rendered) -> bool {
    !r.sealed.is_empty() || r.resources.iter().any(is_secret)
}

fn is_secret(r: &Resource) -> bool {
    r.id.group.is_empty() && r.id.kind == "Secret"
}

/// The file name of a release's entry.
fn digest(scope: Scope, env: &str, app: &str, key: &ReleaseKey) -> String {
    let mut h = sha2::Sha256::new();
    h.update(scope.0);
    for part in [env, app] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    key.feed(&mut h);
    format!("{:x}", h.finalize())
}

/// Removes entry files under `dir` last modified more than `days` ago.
fn prune(dir: &Path, days: u64) -> std::io::Result<usize> {
    let cutoff = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_secs(days * 24 * 3600))
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = 0;
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(sub.path())? {
            let file = file?;
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old {
                std::fs::remove_file(file.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(env: &str, app: &str, objects: Vec<serde_json::Value>) -> Rendered {
        let id = gix::ObjectId::from_hex(b"0123456789012345678901234567890123456789").ok();
        Rendered {
            release: Release {
                env: env.into(),
                app: app.into(),
                chart: "service".into(),
                version: "1.0.0".into(),
                namespace: format!("{app}-{env}"),
                dir: format!("services/{app}/{env}"),
            },
            resources: objects.into_iter().map(Resource::for_tests).collect(),
            key: Some(ReleaseKey {
                service: [id, None, id, None, None, None],
                settings: None,
                chart: "builtin:abc".into(),
            }),
            inputs: vec![("services/api/config.yaml".into(), "image: x\n".into())],
            sealed: Vec::new(),
        }
    }

    fn state(releases: Vec<Rendered>) -> State {
        State {
            label: "abc1234".into(),
            commit: None,
            settings: crate::config::Settings::default(),
            releases,
            cache_scope: Some(Scope([7; 32])),
        }
    }

    fn config_map(value: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "api", "namespace": "api-staging"}, "data": {"k": value}})
    }

    fn only_entry(dir: &Path) -> PathBuf {
        let mut files = Vec::new();
        for sub in std::fs::read_dir(dir.join("kdeploy-render-cache-1")).unwrap() {
            for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        assert_eq!(files.len(), 1, "{files:?}");
        files.remove(0)
    }

    #[test]
    fn an_entry_stands_in_for_the_release_it_was_written_for() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RenderCache::at(dir.path());
        let r = release("staging", "api", vec![config_map("one")]);
        let key = r.key.clone().unwrap();
        let stored = cache.store(&state(vec![r.clone()])).unwrap();
        assert_eq!((stored.written, stored.kept), (1, 0));
        let reads = cache.reads(Scope([7; 32]));
        let got = reads.get("staging", "api", &key).expect("a hit");
        assert_eq!(got.resources, r.resources);
        assert_eq!(got.release, r.release);
        // Another environment, another scope: not this entry.
        assert!(reads.get("production", "api", &key).is_none());
        assert!(
            cache
                .reads(Scope([8; 32]))
                .get("staging", "api", &key)
                .is_none()
        );
        let s = reads.summary();
        assert_eq!((s.hits, s.misses, s.ignored.len()), (1, 1, 0));
        // A second deploy of the same render keeps the entry.
        let again = cache.store(&state(vec![r])).unwrap();
        assert_eq!((again.written, again.kept), (0, 1));
    }

    #[test]
    fn corrupt_and_foreign_entries_are_ignored_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RenderCache::at(dir.path());
        let r = release("staging", "api", vec![config_map("one")]);
        let key = r.key.clone().unwrap();
        cache.store(&state(vec![r.clone()])).unwrap();
        let path = only_entry(dir.path());
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 5].to_vec(), "checksum does not match"),
            (
                String::from_utf8(good.clone())
                    .unwrap()
                    .replacen(env!("CARGO_PKG_VERSION"), "0.0.0-other", 1)
                    .into_bytes(),
                "written by kdeploy 0.0.0-other",
            ),
            (b"garbage".to_vec(), "not a kdeploy render cache entry"),
        ];
        for (bytes, why) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let reads = cache.reads(Scope([7; 32]));
            assert!(reads.get("staging", "api", &key).is_none());
            let s = reads.summary();
            assert_eq!(s.ignored.len(), 1);
            assert!(s.ignored[0].contains(why), "{}", s.ignored[0]);
            assert!(s.line().contains("1 entry ignored"), "{}", s.line());
        }
        // The next deploy replaces what it does not recognise.
        let stored = cache.store(&state(vec![r])).unwrap();
        assert_eq!((stored.written, stored.kept), (1, 0));
        assert_eq!(std::fs::read(&path).unwrap(), good);
    }

    #[test]
    fn secrets_never_enter_the_cache_and_a_forged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RenderCache::at(dir.path());
        let canary = "s3cr3t-canary-value";
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "api-staging"}, "stringData": {"password": canary}});
        let r = release("staging", "api", vec![config_map("one"), secret]);
        let stored = cache.store(&state(vec![r.clone()])).unwrap();
        assert_eq!((stored.written, stored.secret), (0, 1));
        // A forged entry holding a Secret, with a sound checksum.
        let mut plain = r.clone();
        plain.resources.truncate(1);
        cache.store(&state(vec![plain])).unwrap();
        let path = only_entry(dir.path());
        let payload = serde_json::to_vec(&Entry {
            release: r.release.clone(),
            resources: r.resources.clone(),
            inputs: Vec::new(),
        })
        .unwrap();
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
        let mut forged = format!(
            "{} {} {} {:x}\n",
            header[0],
            header[1],
            header[2],
            sha2::Sha256::digest(&payload)
        )
        .into_bytes();
        forged.extend(payload);
        std::fs::write(&path, forged).unwrap();
        let reads = cache.reads(Scope([7; 32]));
        assert!(
            reads
                .get("staging", "api", r.key.as_ref().unwrap())
                .is_none()
        );
        assert!(reads.summary().ignored[0].contains("holds a Secret"));
    }
}
