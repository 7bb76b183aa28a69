//! Rendered manifests on disk: `<out>/<env>/<app>/resources.yaml`.
//!
//! The output directory is regenerated as a whole and swapped in with
//! renames, so a failed render or an interrupted write never leaves a mix of
//! old and new files. With `--env`/`--app` only the selected releases are
//! replaced; the others are carried over unchanged.
//!
//! A pull request controls `output:` in kdeploy.yaml, so where kdeploy may
//! write is checked before anything is touched ([`Target::resolve`]): inside
//! the config repo, never the repo itself, `.git` or a directory kdeploy reads
//! from, and only over a directory that is empty or that kdeploy wrote.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Filter;
use crate::render::{Release, Rendered, State};
use crate::yaml;

/// The file name of each release's manifests.
pub const FILE_NAME: &str = "resources.yaml";

/// The file that marks a directory as kdeploy's output, so it may be replaced.
pub const MARKER: &str = ".kdeploy-output";

/// The first words of every file kdeploy renders; an output directory from
/// before the marker existed is recognised by them.
const HEADER: &str = "# Rendered by kdeploy from ";

/// Why an output directory is refused. Nothing has been written when one
/// of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is not strictly inside the config repo.
    #[error(
        "output directory {} is outside the config repo {}; kdeploy writes only inside it: set `output:` in kdeploy.yaml (or --out) to a directory in the repo, e.g. _gen",
        dir.display(), repo.display()
    )]
    Outside {
        /// The directory asked for.
        dir: PathBuf,
        /// The config repo.
        repo: PathBuf,
    },
    /// The directory is, holds or lies inside something kdeploy must not replace.
    #[error(
        "output directory {} would replace {what}; choose a directory of its own, e.g. _gen",
        dir.display()
    )]
    Protected {
        /// The directory asked for.
        dir: PathBuf,
        /// What it collides with ("the config repo", "services/", ...).
        what: String,
    },
    /// The path exists and is not a directory (or is a link).
    #[error(
        "output directory {} exists and is not a directory kdeploy can replace (a file or a symbolic link); remove it or choose another --out",
        dir.display()
    )]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// The directory holds files kdeploy did not write.
    #[error(
        "output directory {} holds {} that kdeploy did not write; kdeploy replaces only an empty directory or its own output: move that away, or choose another --out",
        dir.display(), file.display()
    )]
    NotOurs {
        /// The directory.
        dir: PathBuf,
        /// The first file that is not kdeploy's.
        file: PathBuf,
    },
    /// Reading or writing failed.
    #[error("failed to write {}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// A checked output directory.
#[derive(Debug, Clone)]
pub struct Target {
    dir: PathBuf,
}

impl Target {
    /// Checks `dir` as the output of the config repo at `repo` whose
    /// settings are `settings`.
    ///
    /// # Errors
    /// When `dir` is outside the repo, is the repo, `.git`, the services or
    /// charts directory or a source directory (or contains or lies in one),
    /// or exists as something other than a directory.
    pub fn resolve(
        repo: &Path,
        dir: &Path,
        settings: &crate::config::Settings,
    ) -> Result<Target, Error> {
        let io = |source| Error::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let root = repo.canonicalize().map_err(io)?;
        let full = canonical_target(dir).ok_or_else(|| Error::Outside {
            dir: dir.to_path_buf(),
            repo: repo.to_path_buf(),
        })?;
        let rel = match full.strip_prefix(&root) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
            Ok(_) => {
                return Err(Error::Protected {
                    dir: dir.to_path_buf(),
                    what: "the config repo itself".into(),
                });
            }
            Err(_) if root.starts_with(&full) => {
                return Err(Error::Protected {
                    dir: dir.to_path_buf(),
                    what: "a directory that contains the config repo".into(),
                });
            }
            Err(_) => {
                return Err(Error::Outside {
                    dir: dir.to_path_buf(),
                    repo: repo.to_path_buf(),
                });
            }
        };
        let mut protected: Vec<(String, String)> = vec![
            (".git".into(), ".git".into()),
            (settings.services.clone(), format!("{}/", settings.services)),
            (settings.charts.clone(), format!("{}/", settings.charts)),
        ];
        for pattern in settings
            .sources
            .raw
            .iter()
            .chain(&settings.sources.kustomize)
            .map(|p| p.path())
        {
            // The literal part of a pattern (`manifests/{env}/{app}` -> `manifests`).
            let fixed = pattern.split('{').next().unwrap_or("");
            let fixed = fixed.rsplit_once('/').map_or(fixed, |(d, _)| d);
            let fixed = if pattern.contains('{') {
                fixed
            } else {
                pattern
            };
            if !fixed.trim_matches('/').is_empty() {
                protected.push((fixed.to_string(), format!("the source directory {pattern}")));
            }
        }
        for (path, what) in protected {
            // `services: null` (stored as "") protects nothing.
            if path.trim_matches('/').is_empty() {
                continue;
            }
            let path = Path::new(path.trim_matches('/'));
            if rel.starts_with(path) || path.starts_with(&rel) {
                return Err(Error::Protected {
                    dir: dir.to_path_buf(),
                    what,
                });
            }
        }
        // `.github/workflows`, `.git/hooks`: what runs next is kept in
        // hidden directories; rendered output never goes there.
        if let Some(hidden) = rel.iter().find(|c| c.to_string_lossy().starts_with('.')) {
            return Err(Error::Protected {
                dir: dir.to_path_buf(),
                what: format!("a hidden directory ({})", hidden.to_string_lossy()),
            });
        }
        match fs::symlink_metadata(dir) {
            Ok(m) if !m.is_dir() => Err(Error::NotADirectory {
                dir: dir.to_path_buf(),
            }),
            _ => Ok(Target {
                dir: dir.to_path_buf(),
            }),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `dir` made absolute with links resolved, also when it does not exist yet
/// (its nearest existing parent is resolved); `None` for a `..` below that.
fn canonical_target(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Some(out);
        }
        let name = existing.file_name()?;
        if name == ".." {
            return None;
        }
        rest.push(name.to_os_string());
        existing = existing.parent()?;
    }
}

/// True when `dir` may be replaced: missing, empty, marked, or holding only
/// files kdeploy rendered. Otherwise the first file that is not kdeploy's.
fn foreign_file(dir: &Path) -> io::Result<Option<PathBuf>> {
    if fs::symlink_metadata(dir).is_err() || dir.join(MARKER).is_file() {
        return Ok(None);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            let rendered = kind.is_file()
                && path.file_name().is_some_and(|n| n == FILE_NAME)
                && path
                    .strip_prefix(dir)
                    .is_ok_and(|r| r.components().count() == 3)
                && starts_with_header(&path);
            if !rendered {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

fn starts_with_header(path: &Path) -> bool {
    use std::io::Read as _;
    let mut buf = [0u8; HEADER.len()];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok_and(|()| buf == HEADER.as_bytes())
}

/// The text of one release's manifests: a header, then canonical YAML
/// documents separated by `---`, in apply order.
pub fn release_text(r: &Rendered) -> String {
    let out = format!(
        "# Rendered by kdeploy from {} with chart {}. Do not edit: change the config and run `kdeploy render`.\n",
        r.release.dir, r.release.chart
    );
    // Decrypted SOPS values never reach the output, however short.
    let redacted: Vec<Option<serde_json::Value>> = r
        .resources
        .iter()
        .map(|res| crate::secrets::mask::redact_secret_fields(&res.object))
        .collect();
    let objects = r
        .resources
        .iter()
        .zip(&redacted)
        .map(|(res, red)| red.as_ref().unwrap_or(&res.object));
    let mut bytes = out.into_bytes();
    yaml::to_canonical_documents(objects, &mut bytes);
    // Kept until every release is checked: no growth slack (a third more).
    bytes.shrink_to_fit();
    // The emitter writes UTF-8 from UTF-8 strings.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where a release's text goes, relative to the output directory.
pub fn path_of(release: &Release) -> PathBuf {
    Path::new(&release.env).join(&release.app).join(FILE_NAME)
}

/// Relative path -> content for every release of `state`.
pub fn files(state: &State) -> BTreeMap<PathBuf, String> {
    use rayon::prelude::*;
    // Each release is serialized on its own: in parallel.
    let texts: Vec<(PathBuf, String)> = state
        .releases
        .par_iter()
        .map(|r| (path_of(&r.release), release_text(r)))
        .collect();
    texts.into_iter().collect()
}

/// Every release's text (as [`release_text`]) in order, serialized in
/// parallel: what `kdeploy render --stdout` prints.
pub fn release_texts(state: &State) -> Vec<String> {
    use rayon::prelude::*;
    state.releases.par_iter().map(release_text).collect()
}

/// The files under `dir` named like outputs (`<env>/<app>/resources.yaml`).
///
/// # Errors
/// When `dir` exists but cannot be read.
pub fn existing(dir: &Path) -> io::Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    let envs = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for env in envs {
        let env = env?;
        if !env.file_type()?.is_dir() {
            continue;
        }
        for app in fs::read_dir(env.path())? {
            let app = app?;
            let file = app.path().join(FILE_NAME);
            if file.is_file() {
                let rel = Path::new(&env.file_name())
                    .join(app.file_name())
                    .join(FILE_NAME);
                out.insert(rel, fs::read_to_string(&file)?);
            }
        }
    }
    Ok(out)
}

/// The desired content of `dir`: all rendered files, plus (when filtered)
/// existing files of releases outside the selection.
fn desired(
    mut want: BTreeMap<PathBuf, String>,
    dir: &Path,
    filter: &Filter,
) -> io::Result<BTreeMap<PathBuf, String>> {
    if !filter.is_all() {
        for (path, text) in existing(dir)? {
            let mut parts = path.iter().map(|p| p.to_string_lossy());
            let (Some(env), Some(app)) = (parts.next(), parts.next()) else {
                continue;
            };
            if !filter.matches(&env, &app) {
                want.entry(path).or_insert(text);
            }
        }
    }
    Ok(want)
}

/// A difference between rendered output and a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Rendered but missing on disk.
    Missing(PathBuf),
    /// On disk with other content.
    Differs(PathBuf),
    /// On disk but no longer rendered.
    Extra(PathBuf),
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing(p) => write!(f, "missing   {}", p.display()),
            Drift::Differs(p) => write!(f, "differs   {}", p.display()),
            Drift::Extra(p) => write!(f, "obsolete  {}", p.display()),
        }
    }
}

/// Compares the rendered `files` (as [`files`] makes them) with the files
/// in `dir`.
///
/// # Errors
/// When `dir` cannot be read.
pub fn check(
    files: BTreeMap<PathBuf, String>,
    dir: &Path,
    filter: &Filter,
) -> io::Result<Vec<Drift>> {
    let want = desired(files, dir, filter)?;
    let have = existing(dir)?;
    let mut drift = Vec::new();
    for (path, text) in &want {
        match have.get(path) {
            None => drift.push(Drift::Missing(dir.join(path))),
            Some(t) if t != text => drift.push(Drift::Differs(dir.join(path))),
            Some(_) => {}
        }
    }
    for path in have.keys().filter(|p| !want.contains_key(*p)) {
        drift.push(Drift::Extra(dir.join(path)));
    }
    Ok(drift)
}

/// Writes the rendered `files` (as [`files`] makes them) to `target`,
/// replacing it atomically: the new tree is written beside it and swapped
/// in with renames. Returns the number of files written.
///
/// # Errors
/// When the directory holds files kdeploy did not write, or writing fails;
/// the directory is then left as it was.
pub fn write(
    files: BTreeMap<PathBuf, String>,
    target: &Target,
    filter: &Filter,
) -> Result<usize, Error> {
    let dir = target.dir();
    let io = |source| Error::Io {
        dir: dir.to_path_buf(),
        source,
    };
    if let Some(file) = foreign_file(dir).map_err(io)? {
        return Err(Error::NotOurs {
            dir: dir.to_path_buf(),
            file,
        });
    }
    swap_in(files, dir, filter).map_err(io)
}

fn swap_in(files: BTreeMap<PathBuf, String>, dir: &Path, filter: &Filter) -> io::Result<usize> {
    let want = desired(files, dir, filter)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "_gen".into());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.new-"))
        .tempdir_in(&parent)?;
    fs::write(
        staging.path().join(MARKER),
        "kdeploy writes this directory and replaces it whole: do not keep other files here\n",
    )?;
    for (path, text) in &want {
        let full = staging.path().join(path);
        if let Some(p) = full.parent() {
            fs::create_dir_all(p)?;
        }
        // Decrypted SOPS values become `<sops:FILE#KEY>`: never on disk.
        fs::write(full, crate::secrets::mask::redact(text).as_bytes())?;
    }
    let staged = staging.keep();
    if fs::symlink_metadata(dir).is_ok() {
        let old = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(&parent)?
            .keep();
        fs::remove_dir(&old)?;
        fs::rename(dir, &old)?;
        if let Err(e) = fs::rename(&staged, dir) {
            // Put the old output back so the directory is never missing.
            let _ = fs::rename(&old, dir);
            let _ = fs::remove_dir_all(&staged);
            return Err(e);
        }
        fs::remove_dir_all(&old)?;
    } else {
        fs::rename(&staged, dir)?;
    }
    Ok(want.len())
}
