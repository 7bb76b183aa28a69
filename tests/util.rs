//! Test helpers: temporary git repositories made with the `git` CLI (as a
//! user's would be), with pinned dates so commit ids are stable, and a
//! runner for the built `kdeploy` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary git repository.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// An empty repository on branch `main`.
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    /// A repository holding a minimal valid config: one app, two envs.
    pub fn with_app() -> Repo {
        let repo = Repo::new();
        repo.write("services/api/config.yaml", "image: ghcr.io/example/api\n")
            .write("services/api/version", "1.0.0\n")
            .write("services/api/staging/config.yaml", "")
            .write("services/api/production/config.yaml", "replicas: 3\n");
        repo
    }

    /// The repository's work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating directories).
    pub fn write(&self, path: &str, text: &str) -> &Repo {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
        self
    }

    /// Removes a file or directory.
    pub fn remove(&self, path: &str) -> &Repo {
        let full = self.path().join(path);
        if full.is_dir() {
            std::fs::remove_dir_all(full).expect("rm -r");
        } else {
            std::fs::remove_file(full).expect("rm");
        }
        self
    }

    /// Reads a file of the work tree.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path().join(path)).expect("read")
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Runs git in the repository and returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=kdeploy tests",
                "-c",
                "user.email=tests@kdeploy.invalid",
            ])
            .args(["-c", "commit.gpgsign=false", "-c", "core.autocrlf=false"])
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the kdeploy binary with `--repo` pointing here.
    pub fn kdeploy(&self, args: &[&str]) -> Run {
        kdeploy(self.path(), args)
    }
}

/// The result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `kdeploy <args>` in `dir`.
pub fn kdeploy(dir: &Path, args: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(args)
        .current_dir(dir)
        .env_remove("GITHUB_ACTIONS")
        .env("NO_COLOR", "1")
        .output()
        .expect("kdeploy runs")
        .into()
}

/// The project root (the bundled example config repo).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shallow clone of `origin` at `branch`, as actions/checkout makes it
/// (fetch-depth 1).
pub fn shallow_clone(origin: &Repo, branch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", origin.path().display());
    let out = Command::new("git")
        .args(["clone", "-q", "--depth", "1", "--branch", branch, &url])
        .arg(dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git clone runs");
    assert!(
        out.status.success(),
        "clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Runs git in `dir` (a clone, not a [`Repo`]) without the user's or the
/// system's config, asserting it succeeds.
pub fn git_in(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

/// A real GitHub payload from ../shared/fixtures/github/events, if present.
pub fn shared_event(path: &str) -> Option<serde_json::Value> {
    let full = project_root()
        .join("../shared/fixtures/github/events")
        .join(path);
    match std::fs::read(&full) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("fixture is JSON")),
        Err(_) => {
            eprintln!(
                "note: {} is absent; using the project's own payload of the same shape",
                full.display()
            );
            None
        }
    }
}

/// Every file below `dir` (`.git` objects included) with its content.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let kind = e.file_type().expect("file type");
            let rel = path.strip_prefix(dir).expect("below").to_path_buf();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).expect("link");
                out.insert(rel, target.to_string_lossy().as_bytes().to_vec());
            } else if kind.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}
