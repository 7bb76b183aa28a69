//! Rendered manifests on disk: `<out>/<env>/<app>/resources.yaml`.
//!
//! The output directory is regenerated as a whole and swapped in with
//! renames, so a failed render or an interrupted write never leaves a mix of
//! old and new files. With `--env`/`--app` only the selected releases are
//! replaced; the others are carried over unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Filter;
use crate::render::{Rendered, State};
use crate::yaml;

/// The file name of each release's manifests.
pub const FILE_NAME: &str = "resources.yaml";

/// The text of one release's manifests: a header, then canonical YAML
/// documents separated by `---`, in apply order.
pub fn release_text(r: &Rendered) -> String {
    let mut out = format!(
        "# Rendered by kdeploy from {} with chart {}. Do not edit: change the config and run `kdeploy render`.\n",
        r.release.dir, r.release.chart
    );
    for (i, res) in r.resources.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&yaml::to_canonical(&res.object));
    }
    out
}

/// Relative path -> content for every release of `state`.
pub fn files(state: &State) -> BTreeMap<PathBuf, String> {
    state
        .releases
        .iter()
        .map(|r| {
            (
                Path::new(&r.release.env)
                    .join(&r.release.app)
                    .join(FILE_NAME),
                release_text(r),
            )
        })
        .collect()
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
fn desired(state: &State, dir: &Path, filter: &Filter) -> io::Result<BTreeMap<PathBuf, String>> {
    let mut want = files(state);
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

/// Compares the rendered state with the files in `dir`.
///
/// # Errors
/// When `dir` cannot be read.
pub fn check(state: &State, dir: &Path, filter: &Filter) -> io::Result<Vec<Drift>> {
    let want = desired(state, dir, filter)?;
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

/// Writes the rendered state to `dir`, replacing it atomically: the new tree
/// is written beside it and swapped in with renames. Returns the number of
/// files written.
///
/// # Errors
/// When writing fails; `dir` is then left as it was.
pub fn write(state: &State, dir: &Path, filter: &Filter) -> io::Result<usize> {
    let want = desired(state, dir, filter)?;
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
    for (path, text) in &want {
        let full = staging.path().join(path);
        if let Some(p) = full.parent() {
            fs::create_dir_all(p)?;
        }
        fs::write(full, text)?;
    }
    let staged = staging.keep();
    if dir.exists() {
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
