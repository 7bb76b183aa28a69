//! Reading the config repo at a revision: a git commit, read from git objects
//! with gitoxide, or the working tree on disk.
//!
//! This module owns file access and nothing else: it lists directories and
//! reads files. It never checks anything out or writes to the work tree, so a
//! commit can be rendered while the user has uncommitted edits.

use std::path::{Path, PathBuf};

use gix::ObjectId;

/// Which state of the config repo to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// The files on disk, including uncommitted edits.
    WorkTree,
    /// Anything `git rev-parse` understands: a SHA, branch, tag, `HEAD~1`.
    Commit(String),
}

impl Revision {
    /// `None` or `"."` mean the work tree; anything else is a revision spec.
    pub fn parse(spec: Option<&str>) -> Revision {
        match spec {
            None | Some("") | Some(".") => Revision::WorkTree,
            Some(s) => Revision::Commit(s.to_string()),
        }
    }
}

/// The error returned when a snapshot cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--rev` was given but the directory is not in a git repository.
    #[error("{path} is not inside a git repository, so revision `{rev}` cannot be read")]
    NotARepository {
        /// The config repo directory.
        path: PathBuf,
        /// The revision asked for.
        rev: String,
        /// Why gitoxide could not open it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The revision does not name a commit in the repository.
    #[error(
        "cannot resolve revision `{rev}` in {repo}; fetch it first (git fetch origin {rev}) or check the name"
    )]
    UnknownRevision {
        /// The revision asked for.
        rev: String,
        /// The repository.
        repo: PathBuf,
        /// gitoxide's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The config directory is missing at that commit.
    #[error("{prefix} does not exist at revision `{rev}`")]
    MissingPrefix {
        /// The revision.
        rev: String,
        /// Path of the config repo inside the git repository.
        prefix: String,
    },
    /// A file or directory could not be read.
    #[error("failed to read {path} at {rev}")]
    Read {
        /// Path relative to the config repo.
        path: String,
        /// The revision label.
        rev: String,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A file or directory of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Path relative to the config repo root, `/`-separated ("" for the root).
    pub path: String,
    /// The git object id; `None` in the work tree, where nothing is hashed.
    pub id: Option<ObjectId>,
    /// True for directories (trees).
    pub is_dir: bool,
}

impl Node {
    /// The last path component.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The path of a child of this directory.
    pub fn join(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.path)
        }
    }
}

#[derive(Debug)]
enum Kind {
    Git {
        repo: Box<gix::ThreadSafeRepository>,
        tree: ObjectId,
    },
    Dir {
        root: PathBuf,
    },
    /// Nothing at all: the base of a first deploy.
    Empty,
}

/// The config repo at one revision.
#[derive(Debug)]
pub struct Snapshot {
    kind: Kind,
    label: String,
    commit: Option<ObjectId>,
}

impl Snapshot {
    /// Opens the config repo in `dir` at `rev`. `dir` may be a subdirectory
    /// of a git repository (a monorepo with its config under `deploy/`).
    ///
    /// # Errors
    /// When `dir` is not in a git repository (for a commit), or the revision
    /// cannot be resolved.
    pub fn open(dir: &Path, rev: &Revision) -> Result<Snapshot, Error> {
        let spec = match rev {
            Revision::WorkTree => {
                return Ok(Snapshot {
                    kind: Kind::Dir {
                        root: dir.to_path_buf(),
                    },
                    label: "work tree".into(),
                    commit: None,
                });
            }
            Revision::Commit(spec) => spec,
        };
        let repo = gix::discover(dir).map_err(|e| Error::NotARepository {
            path: dir.to_path_buf(),
            rev: spec.clone(),
            source: Box::new(e),
        })?;
        let commit = resolve_commit(&repo, spec)?;
        Snapshot::at_commit(repo, dir, commit, spec)
    }

    /// Opens the config repo at an already resolved commit.
    ///
    /// # Errors
    /// When the commit or the config directory is missing.
    pub fn at_commit(
        repo: gix::Repository,
        dir: &Path,
        commit: ObjectId,
        spec: &str,
    ) -> Result<Snapshot, Error> {
        let unknown = |e: gix::Error| Error::UnknownRevision {
            rev: spec.to_string(),
            repo: dir.to_path_buf(),
            source: Box::new(e),
        };
        let tree = repo
            .find_object(commit)
            .and_then(|o| o.peel_to_commit())
            .and_then(|c| c.tree_id().map(|id| id.detach()))
            .map_err(unknown)?;
        let prefix = prefix_in_repo(&repo, dir);
        let tree = if prefix.is_empty() {
            tree
        } else {
            let entry = repo
                .find_tree(tree)
                .and_then(|t| t.lookup_entry_by_path(&prefix))
                .map_err(unknown)?;
            match entry {
                Some(e) if e.mode().is_tree() => e.object_id(),
                _ => {
                    return Err(Error::MissingPrefix {
                        rev: spec.to_string(),
                        prefix,
                    });
                }
            }
        };
        let label = commit.to_hex_with_len(12).to_string();
        Ok(Snapshot {
            kind: Kind::Git {
                repo: Box::new(repo.into_sync()),
                tree,
            },
            label,
            commit: Some(commit),
        })
    }

    /// A snapshot with no files: what is deployed before the first deploy.
    pub fn empty() -> Snapshot {
        Snapshot {
            kind: Kind::Empty,
            label: "nothing".into(),
            commit: None,
        }
    }

    /// True for [`Snapshot::empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self.kind, Kind::Empty)
    }

    /// "work tree" or the short commit id, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The commit read, if any.
    pub fn commit(&self) -> Option<ObjectId> {
        self.commit
    }

    /// The root directory.
    pub fn root(&self) -> Node {
        Node {
            path: String::new(),
            id: match &self.kind {
                Kind::Git { tree, .. } => Some(*tree),
                Kind::Dir { .. } | Kind::Empty => None,
            },
            is_dir: true,
        }
    }

    /// A reader for the current thread (gitoxide repositories are per-thread).
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            snapshot: self,
            repo: match &self.kind {
                Kind::Git { repo, .. } => Some(repo.to_thread_local()),
                Kind::Dir { .. } | Kind::Empty => None,
            },
        }
    }
}

/// Resolves a revision spec to a commit id.
///
/// # Errors
/// When it names nothing, or something that is not a commit.
pub fn resolve_commit(repo: &gix::Repository, spec: &str) -> Result<ObjectId, Error> {
    let unknown = |e: gix::Error| Error::UnknownRevision {
        rev: spec.to_string(),
        repo: repo.workdir().unwrap_or(repo.git_dir()).to_path_buf(),
        source: Box::new(e),
    };
    let id = repo.rev_parse_single(spec).map_err(unknown)?;
    let commit = id
        .object()
        .and_then(|o| o.peel_to_commit())
        .map_err(unknown)?;
    Ok(commit.id)
}

/// Path of `dir` relative to the repository's work tree, `/`-separated.
fn prefix_in_repo(repo: &gix::Repository, dir: &Path) -> String {
    let (Some(workdir), Ok(dir)) = (repo.workdir(), dir.canonicalize()) else {
        return String::new();
    };
    let Ok(workdir) = workdir.canonicalize() else {
        return String::new();
    };
    dir.strip_prefix(&workdir)
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// Reads one snapshot from one thread.
pub struct Reader<'a> {
    snapshot: &'a Snapshot,
    repo: Option<gix::Repository>,
}

impl<'a> Reader<'a> {
    /// The snapshot this reader reads, to open readers on other threads.
    pub fn snapshot(&self) -> &'a Snapshot {
        self.snapshot
    }

    fn read_error(&self, path: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Read {
            path: path.to_string(),
            rev: self.snapshot.label.clone(),
            source: Box::new(e),
        }
    }

    /// The entries of a directory, sorted by name. Entries that are neither
    /// files nor directories (submodules) are left out; in the work tree,
    /// names starting with `.` are too.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn list(&self, dir: &Node) -> Result<Vec<Node>, Error> {
        let mut out = Vec::new();
        match (&self.snapshot.kind, &self.repo, dir.id) {
            (Kind::Empty, _, _) => {}
            (Kind::Git { .. }, Some(repo), Some(id)) => {
                let tree = repo
                    .find_tree(id)
                    .map_err(|e| self.read_error(&dir.path, e))?;
                let decoded = tree.decode().map_err(|e| self.read_error(&dir.path, e))?;
                for entry in &decoded.entries {
                    let mode = entry.mode;
                    if !(mode.is_tree() || mode.is_blob()) {
                        continue;
                    }
                    out.push(Node {
                        path: dir.join(&entry.filename.to_string()),
                        id: Some(entry.oid.to_owned()),
                        is_dir: mode.is_tree(),
                    });
                }
            }
            (Kind::Dir { root }, _, _) => {
                let full = root.join(&dir.path);
                let entries =
                    std::fs::read_dir(&full).map_err(|e| self.read_error(&dir.path, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| self.read_error(&dir.path, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let meta = std::fs::metadata(entry.path())
                        .map_err(|e| self.read_error(&dir.join(&name), e))?;
                    if !(meta.is_dir() || meta.is_file()) {
                        continue;
                    }
                    out.push(Node {
                        path: dir.join(&name),
                        id: None,
                        is_dir: meta.is_dir(),
                    });
                }
            }
            _ => {
                return Err(self.read_error(
                    &dir.path,
                    std::io::Error::other("directory has no object id"),
                ));
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The child `name` of a directory, if present.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn child(&self, dir: &Node, name: &str) -> Result<Option<Node>, Error> {
        let path = dir.join(name);
        Ok(self.list(dir)?.into_iter().find(|n| n.path == path))
    }

    /// The file or directory at a `/`-separated path below `dir`.
    ///
    /// # Errors
    /// When a directory on the way cannot be read.
    pub fn find(&self, dir: &Node, path: &str) -> Result<Option<Node>, Error> {
        let mut node = dir.clone();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if !node.is_dir {
                return Ok(None);
            }
            match self.child(&node, part)? {
                Some(child) => node = child,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// The contents of a file.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn read(&self, file: &Node) -> Result<Vec<u8>, Error> {
        match (&self.snapshot.kind, &self.repo, file.id) {
            (Kind::Git { .. }, Some(repo), Some(id)) => {
                let mut blob = repo
                    .find_blob(id)
                    .map_err(|e| self.read_error(&file.path, e))?;
                Ok(blob.take_data())
            }
            (Kind::Dir { root }, _, _) => {
                std::fs::read(root.join(&file.path)).map_err(|e| self.read_error(&file.path, e))
            }
            _ => Err(self.read_error(&file.path, std::io::Error::other("file has no object id"))),
        }
    }

    /// The contents of a file as UTF-8 text.
    ///
    /// # Errors
    /// When it cannot be read or is not UTF-8.
    pub fn read_text(&self, file: &Node) -> Result<String, Error> {
        String::from_utf8(self.read(file)?).map_err(|e| self.read_error(&file.path, e))
    }
}
