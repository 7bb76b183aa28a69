//! Files kdeploy writes into the config repo's work tree (the image lock,
//! version files, promoted config, `init`'s files): written only inside
//! the repo, through no symbolic link at any component of the path.
//!
//! A pull request controls the work tree: `services/shop` can be a link to
//! `/home/runner/.ssh`, and `images.lock.yaml` can sit in such a directory.
//! Checking the file alone is not enough; every directory on the way is
//! checked (and created one at a time, never through a link), and the file
//! is replaced by a rename inside its own directory, which replaces a link
//! rather than writing where it points.

use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};

/// Why a file was not written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path leaves the repo or is not a plain relative path.
    #[error(
        "{path}: kdeploy writes only relative paths inside the config repo (no `..`, no absolute path)"
    )]
    Outside {
        /// The path as given.
        path: String,
    },
    /// A component of the path is a symbolic link or not a directory.
    #[error(
        "{path}: `{component}` is {what}; kdeploy writes files only through plain directories of the repo, so that nothing outside it can be reached"
    )]
    Link {
        /// The path as given.
        path: String,
        /// The offending part of it.
        component: String,
        /// "a symbolic link", "not a directory".
        what: &'static str,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The parts of `rel`, refused unless it is a plain relative path.
fn parts(rel: &str) -> Result<Vec<&std::ffi::OsStr>, Error> {
    let outside = || Error::Outside {
        path: rel.to_string(),
    };
    let path = Path::new(rel);
    if rel.is_empty() {
        return Err(outside());
    }
    path.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(outside()),
        })
        .collect()
}

/// Checks (and creates, when `create`) each directory of `rel` below
/// `root`; returns the file's full path.
fn checked_parent(root: &Path, rel: &str, create: bool) -> Result<PathBuf, Error> {
    let names = parts(rel)?;
    let io = |source| Error::Io {
        path: rel.to_string(),
        source,
    };
    let mut at = root.to_path_buf();
    let Some((file, dirs)) = names.split_last() else {
        return Err(Error::Outside {
            path: rel.to_string(),
        });
    };
    for (i, name) in dirs.iter().enumerate() {
        at.push(name);
        let shown = || {
            dirs[..=i]
                .iter()
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        };
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Link {
                    path: rel.to_string(),
                    component: shown(),
                    what: "a symbolic link",
                });
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::Link {
                    path: rel.to_string(),
                    component: shown(),
                    what: "not a directory",
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                std::fs::create_dir(&at).map_err(io)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Nothing below a missing directory: the file is not there.
                at.push(file);
                return Ok(at);
            }
            Err(e) => return Err(io(e)),
        }
    }
    at.push(file);
    if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Link {
            path: rel.to_string(),
            component: rel.to_string(),
            what: "a symbolic link",
        });
    }
    Ok(at)
}

/// Writes `text` to `rel` inside the repo at `root`, atomically (a
/// temporary file beside it, renamed over it), creating missing
/// directories.
///
/// # Errors
/// A path outside the repo, a link or non-directory on the way, or I/O.
pub fn write(root: &Path, rel: &str, text: &[u8]) -> Result<(), Error> {
    let full = checked_parent(root, rel, true)?;
    let io = |source| Error::Io {
        path: rel.to_string(),
        source,
    };
    let dir = full.parent().unwrap_or(root);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(text).map_err(io)?;
    tmp.persist(&full).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads the file `rel` inside the repo through plain directories only;
/// `None` when it is not there.
///
/// # Errors
/// As [`write()`], and a file that is not UTF-8.
pub fn read(root: &Path, rel: &str) -> Result<Option<String>, Error> {
    let full = checked_parent(root, rel, false)?;
    match std::fs::read_to_string(&full) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            path: rel.to_string(),
            source: e,
        }),
    }
}

/// Removes the file `rel` inside the repo, if it is there.
///
/// # Errors
/// As [`write()`].
pub fn remove(root: &Path, rel: &str) -> Result<(), Error> {
    let full = checked_parent(root, rel, false)?;
    match std::fs::remove_file(&full) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            path: rel.to_string(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_anywhere_on_the_way_is_refused_and_nothing_is_written_outside() {
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), repo.path().join("services")).unwrap();
        std::fs::create_dir_all(repo.path().join(".hidden/deeper")).unwrap();
        std::os::unix::fs::symlink(outside.path(), repo.path().join(".hidden/deeper/x")).unwrap();
        for rel in [
            "services/shop/version",
            ".hidden/deeper/x/images.lock.yaml",
            ".hidden/deeper/x",
            "../escape",
            "/abs",
        ] {
            assert!(write(repo.path(), rel, b"pwned").is_err(), "{rel}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        write(repo.path(), "a/b/c.yaml", b"ok").unwrap();
        assert_eq!(
            std::fs::read(repo.path().join("a/b/c.yaml")).unwrap(),
            b"ok"
        );
    }
}
