//! Reading the config repo at a revision: a git commit, read from git objects
//! with gitoxide, or the working tree on disk.
//!
//! This module owns file access and nothing else: it lists directories and
//! reads files. It never checks anything out or writes to the work tree, so a
//! commit can be rendered while the user has uncommitted edits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gix::ObjectId;

mod loose;

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
    /// The repository has no commit at all.
    #[error("{} has no commits yet, so revision `{rev}` cannot be read; commit the config first", repo.display())]
    NoCommits {
        /// The revision asked for.
        rev: String,
        /// The repository.
        repo: PathBuf,
    },
    /// The revision names an object that is not a commit.
    #[error("revision `{rev}` names a {kind}, not a commit; pass a commit SHA, a branch or a tag")]
    NotACommit {
        /// The revision asked for.
        rev: String,
        /// What it names (tree, blob, tag).
        kind: String,
    },
    /// The config directory is missing at that commit.
    #[error("{prefix} does not exist at revision `{rev}`")]
    MissingPrefix {
        /// The revision.
        rev: String,
        /// Path of the config repo inside the git repository.
        prefix: String,
    },
    /// The work-tree directory given as the config repo does not exist.
    #[error("{} is not a directory; pass the config repo with --repo (or run in it)", path.display())]
    NoSuchDirectory {
        /// The directory asked for.
        path: PathBuf,
    },
    /// A symbolic link leads outside the config repo, nowhere, or into a loop.
    #[error("{path}: symbolic link to `{target}` {why} (at {rev})")]
    Link {
        /// Path of the link relative to the config repo.
        path: String,
        /// What the link points at, as written in the link.
        target: String,
        /// Why it is refused, with what to do.
        why: &'static str,
        /// The revision label.
        rev: String,
    },
    /// A file is larger than `limits.fileBytes`.
    #[error(
        "{path}: file is {size} bytes, over the limit of {limit} bytes (at {rev}); split it, or raise `limits.fileBytes` in kdeploy.yaml"
    )]
    TooLarge {
        /// Path relative to the config repo.
        path: String,
        /// Its size.
        size: u64,
        /// The limit in force.
        limit: u64,
        /// The revision label.
        rev: String,
    },
    /// A file or directory could not be read.
    #[error("failed to read {} at {rev}", display_path(path))]
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

/// `.` for the config repo root, so no message shows an empty path.
fn display_path(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

/// Why a link is refused: it leaves the repo.
const OUTSIDE: &str = "points outside the config repo; kdeploy reads only files inside it: copy the file into the repo or point the link at a path inside it";
/// Why a link is refused: nothing is there.
const DANGLING: &str = "points at nothing; fix or remove the link";
/// Why a link is refused: it leads to one of its own parents.
const LOOP: &str = "points at a directory that contains it (a loop); remove the link";
/// Why a link is refused: too many links in a row.
const CHAIN: &str = "starts a chain of more than 8 links; link to the file directly";

/// How many links in a row are followed (git mode; the OS bounds the work tree).
const MAX_LINK_HOPS: usize = 8;

/// Default for `limits.fileBytes`: larger than any hand-written config or a
/// big CRD bundle, small enough that parsing it takes well under a second.
pub const DEFAULT_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// `dir/target` with `.` and `..` resolved on the text, as git stores links;
/// `None` when it climbs above the root or is absolute.
fn join_link(dir: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// True when `ancestor` is `path` or one of its parent directories.
fn is_ancestor(ancestor: &str, path: &str) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
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
        /// Its loose objects, read without gix ([`loose`]).
        loose: loose::Dirs,
    },
    Dir {
        root: PathBuf,
        /// `root` with every link resolved: what links must stay inside.
        canonical: PathBuf,
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
    /// `limits.fileBytes`, set once `kdeploy.yaml` is read.
    file_limit: std::sync::atomic::AtomicU64,
    /// Objects any reader has decoded, for every reader.
    objects: Objects,
}

/// Trees and blobs decoded once for all reader threads.
///
/// Releases read the same objects over and over: the root and `services`
/// trees on every lookup, an app's tree and its `config.yaml` once per
/// environment, on whichever thread renders that environment. Loose objects
/// (a repo right after `git commit`) cost an open, a map and an inflate per
/// read, and a per-thread cache only catches repeats on the same thread.
/// Config repos are small (the 3,000-release bench repo is 0.6 MB of
/// objects), so this keeps all of them up to a bound.
#[derive(Debug, Default)]
struct Objects {
    map: Mutex<HashMap<ObjectId, Arc<[u8]>>>,
    bytes: AtomicUsize,
}

/// Bytes of decoded objects [`Objects`] keeps; past it, objects are read
/// from git each time.
const SHARED_OBJECT_BYTES: usize = 16 << 20;

impl Objects {
    fn get(&self, id: &ObjectId) -> Option<Arc<[u8]>> {
        let map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(id).cloned()
    }

    fn keep(&self, id: ObjectId, data: Vec<u8>) -> Arc<[u8]> {
        let data: Arc<[u8]> = data.into();
        if self.bytes.load(Ordering::Relaxed) + data.len() <= SHARED_OBJECT_BYTES {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.insert(id, Arc::clone(&data)).is_none() {
                self.bytes.fetch_add(data.len(), Ordering::Relaxed);
            }
        }
        data
    }
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
                let canonical = match dir.canonicalize() {
                    Ok(c) if c.is_dir() => c,
                    _ => {
                        return Err(Error::NoSuchDirectory {
                            path: dir.to_path_buf(),
                        });
                    }
                };
                return Ok(Snapshot::new(
                    Kind::Dir {
                        root: dir.to_path_buf(),
                        canonical,
                    },
                    "work tree".into(),
                    None,
                ));
            }
            Revision::Commit(spec) => spec,
        };
        let repo = discover(dir).map_err(|e| Error::NotARepository {
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
        Ok(Snapshot::new(
            Kind::Git {
                loose: loose::Dirs::of(&repo),
                repo: Box::new(repo.into_sync()),
                tree,
            },
            label,
            Some(commit),
        ))
    }

    fn new(kind: Kind, label: String, commit: Option<ObjectId>) -> Snapshot {
        Snapshot {
            kind,
            label,
            commit,
            file_limit: std::sync::atomic::AtomicU64::new(DEFAULT_FILE_LIMIT),
            objects: Objects::default(),
        }
    }

    /// A snapshot with no files: what is deployed before the first deploy.
    pub fn empty() -> Snapshot {
        Snapshot::new(Kind::Empty, "nothing".into(), None)
    }

    /// Sets the largest file [`Reader::read`] accepts (`limits.fileBytes`).
    pub fn set_file_limit(&self, bytes: u64) {
        self.file_limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
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
        let (repo, loose) = match &self.kind {
            Kind::Git { repo, loose, .. } => (Some(repo.to_thread_local()), Some(loose)),
            Kind::Dir { .. } | Kind::Empty => (None, None),
        };
        Reader {
            snapshot: self,
            repo,
            loose,
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
    let workdir = repo.workdir().unwrap_or(repo.git_dir()).to_path_buf();
    let id = match repo.rev_parse_single(spec) {
        Ok(id) => id,
        Err(_)
            if repo.head_id().is_err()
                && repo
                    .references()
                    .is_ok_and(|r| r.all().is_ok_and(|mut a| a.next().is_none())) =>
        {
            return Err(Error::NoCommits {
                rev: spec.to_string(),
                repo: workdir,
            });
        }
        Err(e) => return Err(unknown(e)),
    };
    let object = id.object().map_err(&unknown)?;
    let kind = object.kind;
    object
        .peel_to_commit()
        .map(|c| c.id)
        .map_err(|e| match kind {
            gix::object::Kind::Commit | gix::object::Kind::Tag => unknown(e),
            other => Error::NotACommit {
                rev: spec.to_string(),
                kind: other.to_string(),
            },
        })
}

/// Path of `dir` relative to the repository's work tree, `/`-separated.
pub fn prefix_in_repo(repo: &gix::Repository, dir: &Path) -> String {
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
    /// The repository's loose objects, read without gix ([`loose`]).
    loose: Option<&'a loose::Dirs>,
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

    fn link_error(&self, path: &str, target: &str, why: &'static str) -> Error {
        Error::Link {
            path: path.to_string(),
            target: target.escape_debug().to_string(),
            why,
            rev: self.snapshot.label.clone(),
        }
    }

    /// The entries of a directory, sorted by name. Entries that are neither
    /// files nor directories (submodules) are left out; in the work tree,
    /// names starting with `.` are too.
    ///
    /// A symbolic link is followed only when its target stays inside the
    /// config repo, the same way in git objects and in the work tree; the
    /// entry keeps the link's path and takes the target's content.
    ///
    /// # Errors
    /// When the directory cannot be read, or holds a link that leaves the
    /// repo, points at nothing, or at a directory that contains it.
    pub fn list(&self, dir: &Node) -> Result<Vec<Node>, Error> {
        let mut out = Vec::new();
        match (&self.snapshot.kind, &self.repo, dir.id) {
            (Kind::Empty, _, _) => {}
            (Kind::Git { .. }, Some(_), Some(id)) => {
                let data = self.tree_data(&dir.path, id)?;
                let decoded = self.decode_tree(&dir.path, &data)?;
                for entry in &decoded.entries {
                    let mode = entry.mode;
                    let path = dir.join(&entry.filename.to_string());
                    if mode.is_link() {
                        // Hidden links are skipped, as the work tree skips
                        // every hidden name.
                        if entry.filename.starts_with(b".") {
                            continue;
                        }
                        out.push(self.git_link(dir, path, entry.oid.to_owned())?);
                        continue;
                    }
                    if !(mode.is_tree() || mode.is_blob()) {
                        continue;
                    }
                    out.push(Node {
                        path,
                        id: Some(entry.oid.to_owned()),
                        is_dir: mode.is_tree(),
                    });
                }
            }
            (Kind::Dir { root, canonical }, _, _) => {
                let full = root.join(&dir.path);
                let entries =
                    std::fs::read_dir(&full).map_err(|e| self.read_error(&dir.path, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| self.read_error(&dir.path, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let path = dir.join(&name);
                    let kind = entry.file_type().map_err(|e| self.read_error(&path, e))?;
                    let meta = if kind.is_symlink() {
                        self.dir_link(canonical, &entry.path(), &path)?
                    } else {
                        entry.metadata().map_err(|e| self.read_error(&path, e))?
                    };
                    if !(meta.is_dir() || meta.is_file()) {
                        continue;
                    }
                    out.push(Node {
                        path,
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

    /// A tree's raw entries, from the shared objects or from git.
    fn tree_data(&self, path: &str, id: ObjectId) -> Result<Arc<[u8]>, Error> {
        let objects = &self.snapshot.objects;
        if let Some(data) = objects.get(&id) {
            return Ok(data);
        }
        if let Some(loose::Loose::Data(data)) = self.loose(id, gix::objs::Kind::Tree, u64::MAX) {
            return Ok(objects.keep(id, data));
        }
        let Some(repo) = &self.repo else {
            return Err(self.read_error(path, std::io::Error::other("no repository")));
        };
        let mut tree = repo.find_tree(id).map_err(|e| self.read_error(path, e))?;
        Ok(objects.keep(id, std::mem::take(&mut tree.data)))
    }

    /// The object from the loose object directory, when it is read there.
    fn loose(&self, id: ObjectId, kind: gix::objs::Kind, limit: u64) -> Option<loose::Loose> {
        self.loose?.read(id, kind, limit)
    }

    fn decode_tree<'d>(&self, path: &str, data: &'d [u8]) -> Result<gix::objs::TreeRef<'d>, Error> {
        let hash = self
            .repo
            .as_ref()
            .map_or(gix::hash::Kind::Sha1, gix::Repository::object_hash);
        gix::objs::TreeRef::from_bytes(data, hash).map_err(|e| self.read_error(path, e))
    }

    /// A link in git objects: its blob is the target path, resolved on the
    /// text against the link's directory (git has no file system to ask).
    fn git_link(&self, dir: &Node, path: String, blob: ObjectId) -> Result<Node, Error> {
        let target = self.link_target(&path, blob)?;
        let refuse = |why| self.link_error(&path, &target, why);
        let Some(joined) = join_link(&dir.path, &target) else {
            return Err(refuse(OUTSIDE));
        };
        let Some((id, is_dir)) = self.git_resolve(&joined, 0).map_err(refuse)? else {
            return Err(refuse(DANGLING));
        };
        if is_dir && is_ancestor(&joined, &path) {
            return Err(refuse(LOOP));
        }
        Ok(Node {
            path,
            id: Some(id),
            is_dir,
        })
    }

    fn link_target(&self, path: &str, blob: ObjectId) -> Result<String, Error> {
        let raw = self.read_blob(path, blob)?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    /// The object at a repo-relative path, following links on the way
    /// (each must stay inside); `Err` names why a link on the way is refused.
    fn git_resolve(
        &self,
        path: &str,
        hops: usize,
    ) -> Result<Option<(ObjectId, bool)>, &'static str> {
        let (Some(_), Some(root)) = (&self.repo, self.snapshot.root().id) else {
            return Ok(None);
        };
        if hops >= MAX_LINK_HOPS {
            return Err(CHAIN);
        }
        let mut current = (root, true);
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !current.1 {
                return Ok(None);
            }
            let Ok(data) = self.tree_data(&walked, current.0) else {
                return Ok(None);
            };
            let Ok(decoded) = self.decode_tree(&walked, &data) else {
                return Ok(None);
            };
            let Some(entry) = decoded.entries.iter().find(|e| e.filename == part) else {
                return Ok(None);
            };
            let dir = walked.clone();
            walked = if walked.is_empty() {
                part.to_string()
            } else {
                format!("{walked}/{part}")
            };
            current = if entry.mode.is_link() {
                let Ok(target) = self.link_target(&walked, entry.oid.to_owned()) else {
                    return Ok(None);
                };
                let joined = join_link(&dir, &target).ok_or(OUTSIDE)?;
                match self.git_resolve(&joined, hops + 1)? {
                    Some(found) => found,
                    None => return Ok(None),
                }
            } else if entry.mode.is_tree() || entry.mode.is_blob() {
                (entry.oid.to_owned(), entry.mode.is_tree())
            } else {
                return Ok(None);
            };
        }
        Ok(Some(current))
    }

    /// A link in the work tree: followed by the OS, accepted only when where
    /// it ends stays inside the config repo.
    fn dir_link(
        &self,
        canonical_root: &Path,
        link: &Path,
        path: &str,
    ) -> Result<std::fs::Metadata, Error> {
        let target = std::fs::read_link(link)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(resolved) = link.canonicalize() else {
            return Err(self.link_error(path, &target, DANGLING));
        };
        if !resolved.starts_with(canonical_root) {
            return Err(self.link_error(path, &target, OUTSIDE));
        }
        let meta = std::fs::metadata(&resolved).map_err(|e| self.read_error(path, e))?;
        let parent = link
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .unwrap_or_default();
        if meta.is_dir() && parent.starts_with(&resolved) {
            return Err(self.link_error(path, &target, LOOP));
        }
        Ok(meta)
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
            let want = node.join(part);
            match self.list(&node)?.into_iter().find(|n| n.path == want) {
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
        let limit = self
            .snapshot
            .file_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        let too_large = |size| Error::TooLarge {
            path: file.path.clone(),
            size,
            limit,
            rev: self.snapshot.label.clone(),
        };
        match (&self.snapshot.kind, &self.repo, file.id) {
            // The object header gives the size without inflating the blob.
            (Kind::Git { .. }, Some(repo), Some(id)) => {
                if let Some(data) = self.snapshot.objects.get(&id) {
                    if data.len() as u64 > limit {
                        return Err(too_large(data.len() as u64));
                    }
                    return Ok(data.to_vec());
                }
                match self.loose(id, gix::objs::Kind::Blob, limit) {
                    Some(loose::Loose::Data(data)) => {
                        return Ok(self.snapshot.objects.keep(id, data).to_vec());
                    }
                    Some(loose::Loose::TooLarge(size)) => return Err(too_large(size)),
                    None => {}
                }
                let size = repo
                    .find_header(id)
                    .map_err(|e| self.read_error(&file.path, e))?
                    .size();
                if size > limit {
                    return Err(too_large(size));
                }
                self.gix_blob(repo, &file.path, id)
            }
            // One open, reading at most one byte past the limit.
            (Kind::Dir { root, .. }, _, _) => {
                use std::io::Read as _;
                let f = std::fs::File::open(root.join(&file.path))
                    .map_err(|e| self.read_error(&file.path, e))?;
                let mut bytes = Vec::new();
                (&f).take(limit + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.read_error(&file.path, e))?;
                if bytes.len() as u64 > limit {
                    let size = f.metadata().map_or(limit + 1, |m| m.len());
                    return Err(too_large(size));
                }
                Ok(bytes)
            }
            _ => Err(self.read_error(&file.path, std::io::Error::other("file has no object id"))),
        }
    }

    /// A blob's content, whatever its size (link targets, and files whose
    /// size [`Reader::read`] checked).
    fn read_blob(&self, path: &str, id: ObjectId) -> Result<Vec<u8>, Error> {
        let Some(repo) = &self.repo else {
            return Err(self.read_error(path, std::io::Error::other("no repository")));
        };
        if let Some(data) = self.snapshot.objects.get(&id) {
            return Ok(data.to_vec());
        }
        if let Some(loose::Loose::Data(data)) = self.loose(id, gix::objs::Kind::Blob, u64::MAX) {
            return Ok(self.snapshot.objects.keep(id, data).to_vec());
        }
        self.gix_blob(repo, path, id)
    }

    /// A blob read by gix, once the shared objects and the loose directory
    /// have been asked, and kept for the other threads.
    fn gix_blob(&self, repo: &gix::Repository, path: &str, id: ObjectId) -> Result<Vec<u8>, Error> {
        let mut blob = repo.find_blob(id).map_err(|e| self.read_error(path, e))?;
        Ok(self.snapshot.objects.keep(id, blob.take_data()).to_vec())
    }

    /// The contents of a file as UTF-8 text.
    ///
    /// # Errors
    /// When it cannot be read or is not UTF-8.
    pub fn read_text(&self, file: &Node) -> Result<String, Error> {
        String::from_utf8(self.read(file)?).map_err(|e| self.read_error(&file.path, e))
    }
}
/// Why [`discover`] found no repository to use.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// gitoxide found none.
    #[error(transparent)]
    Git(#[from] Box<gix::Error>),
    /// What looks like a repository is a directory inside a checkout.
    #[error(
        "{} looks like a git repository inside the checkout at {}: kdeploy reads the checkout's own .git, never one committed inside it (its config could run programs); point at the checkout",
        found.display(),
        checkout.display()
    )]
    Planted {
        /// The directory that looks like a bare repository.
        found: PathBuf,
        /// The checkout around it.
        checkout: PathBuf,
    },
}

/// The git repository of the checkout holding `dir`, as git finds it, but
/// never a bare repository lying inside another checkout: a pull request
/// can commit `HEAD`, `config` and `objects/` into a directory, and the
/// `config` of such a repository (`core.sshCommand`, `core.fsmonitor`)
/// would run programs of its choosing.
///
/// # Errors
/// No repository, or a planted one.
pub fn discover(dir: &Path) -> Result<gix::Repository, DiscoverError> {
    let repo = gix::discover(dir).map_err(Box::new)?;
    if repo.workdir().is_none() {
        let found =
            std::fs::canonicalize(repo.git_dir()).unwrap_or_else(|_| repo.git_dir().to_path_buf());
        if let Some(checkout) = found.ancestors().skip(1).find(|a| a.join(".git").exists()) {
            return Err(DiscoverError::Planted {
                found: found.clone(),
                checkout: checkout.to_path_buf(),
            });
        }
    }
    Ok(repo)
}
