//! Helm charts and chart dependencies that live in chart repositories
//! (HTTP `index.yaml` repositories and `oci://` registries): dependencies
//! not vendored in a chart's `charts/` are fetched by helm itself (`helm
//! dependency build`, which honours `Chart.lock`), charts a service names
//! directly by `helm pull` at their pinned version; both are kept in a cache
//! directory (keyed by the lock, or by reference and version) so later runs
//! (and CI with `actions/cache`) need no network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::diag::{Diagnostic, Location};

/// One `dependencies:` entry of Chart.yaml.
#[derive(Debug, Clone, Deserialize)]
struct Dependency {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    repository: String,
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

/// The cache directory: `KDEPLOY_CACHE_DIR`, else `$XDG_CACHE_HOME/kdeploy`,
/// else `~/.cache/kdeploy` (what to keep with `actions/cache`).
pub fn cache_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KDEPLOY_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("kdeploy"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kdeploy"))
}

/// True when `charts/` already holds the dependency (packed or unpacked).
fn vendored(root: &Path, dep: &Dependency) -> bool {
    root.join("charts")
        .join(format!("{}-{}.tgz", dep.name, dep.version))
        .is_file()
        || root
            .join("charts")
            .join(&dep.name)
            .join("Chart.yaml")
            .is_file()
}

/// Makes sure every dependency of the chart copied at `root` (shown as
/// `dir`, its path in the config repo) is in its `charts/` directory.
///
/// # Errors
/// A diagnostic naming the chart, the dependency and what to do: no
/// Chart.lock, a lock out of sync with Chart.yaml, a repository that cannot
/// be reached with nothing cached, a dependency kdeploy will not fetch.
pub fn ensure(
    root: &Path,
    dir: &str,
    helm: &str,
    timeout: Duration,
    plain_http: &dyn Fn(&str) -> bool,
) -> Result<(), Diagnostic> {
    let chart_yaml = format!("{dir}/Chart.yaml");
    let Ok(text) = std::fs::read_to_string(root.join("Chart.yaml")) else {
        return Ok(());
    };
    let meta: Meta = crate::yaml::parse_as(&text)
        .map_err(|e| e.diagnostic(&chart_yaml, "invalid Chart.yaml"))?;
    let missing: Vec<&Dependency> = meta
        .dependencies
        .iter()
        .filter(|d| !vendored(root, d))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for dep in &missing {
        let r = dep.repository.as_str();
        let remote =
            r.starts_with("https://") || r.starts_with("http://") || r.starts_with("oci://");
        if !remote {
            let why = if r.is_empty() {
                "has no repository and is not in charts/".to_string()
            } else if r.starts_with("file://") {
                format!("comes from `{r}`, outside what kdeploy copies of the chart")
            } else {
                format!("names the repository `{r}`, an alias of a local helm configuration")
            };
            return Err(Diagnostic::new(
                Location::file(&chart_yaml),
                format!("dependency `{}` {why}", dep.name),
            )
            .help(format!(
                "vendor it: `helm dependency build {dir}` and commit {dir}/charts/, or give its repository as an https:// or oci:// URL"
            )));
        }
    }
    let lock_path = root.join("Chart.lock");
    let Ok(lock) = std::fs::read_to_string(&lock_path) else {
        return Err(Diagnostic::new(
            Location::file(&chart_yaml),
            format!(
                "the chart has remote dependencies ({}) but no Chart.lock",
                names(&missing)
            ),
        )
        .help(format!(
            "run `helm dependency update {dir}` and commit {dir}/Chart.lock: it pins the versions every render uses"
        )));
    };
    let cache = cache_root().map(|c| c.join("helm-dependencies").join(key(&lock)));
    if let Some(cache) = &cache
        && restore(cache, &root.join("charts"))
    {
        return Ok(());
    }
    let root_text = root.to_string_lossy().into_owned();
    let mut args = vec!["dependency", "build"];
    if missing.iter().any(|d| plain_http(&d.repository)) {
        args.push("--plain-http");
    }
    args.extend(["--", root_text.as_str()]);
    let work = root.parent().unwrap_or(root);
    if let Err(e) = super::sources::run_renderer(helm, &args, work, timeout, 1 << 20, None) {
        let e = e.replace(&root_text, dir);
        if e.contains("out of sync") {
            return Err(Diagnostic::new(
                Location::file(format!("{dir}/Chart.lock")),
                "Chart.lock does not match the dependencies in Chart.yaml",
            )
            .help(format!(
                "run `helm dependency update {dir}` and commit Chart.lock (helm said: {})",
                e.lines().last().unwrap_or_default().trim()
            )));
        }
        let cached = cache.as_ref().map_or_else(
            || "no cache directory (set KDEPLOY_CACHE_DIR)".to_string(),
            |c| format!("nothing cached in {}", c.display()),
        );
        return Err(Diagnostic::new(
            Location::file(&chart_yaml),
            format!(
                "cannot fetch the chart's dependencies {} ({cached}): {e}",
                missing
                    .iter()
                    .map(|d| format!("{} {} from {}", d.name, d.version, d.repository))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .help(format!(
            "check that the repository is reachable; to render offline, vendor them (`helm dependency build {dir}`, commit {dir}/charts/*.tgz) or keep the cache directory between runs (actions/cache)"
        )));
    }
    if let Some(cache) = &cache {
        // Best effort: a cache that cannot be written costs the next run a fetch.
        let _ = store(&root.join("charts"), cache);
    }
    Ok(())
}

fn names(deps: &[&Dependency]) -> String {
    deps.iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cache key: a hash of Chart.lock (versions and the digest of the
/// dependency list), so a changed lock never reads an old cache.
fn key(lock: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(lock.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies the cached archives into `charts`; false when nothing is cached.
fn restore(cache: &Path, charts: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return false;
    };
    let archives: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    if archives.is_empty() || std::fs::create_dir_all(charts).is_err() {
        return false;
    }
    archives.iter().all(|a| {
        a.file_name()
            .is_some_and(|n| std::fs::copy(a, charts.join(n)).is_ok())
    })
}

/// Stores the fetched archives under `cache`, whole or not at all.
fn store(charts: &Path, cache: &Path) -> std::io::Result<()> {
    let parent = cache.parent().unwrap_or(cache);
    std::fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)?;
    for entry in std::fs::read_dir(charts)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "tgz")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, staging.path().join(name))?;
        }
    }
    let staged = staging.keep();
    if std::fs::rename(&staged, cache).is_err() {
        // Another run stored it first.
        let _ = std::fs::remove_dir_all(&staged);
    }
    Ok(())
}

/// Pulls a remote chart (or finds it cached); returns its directory.
///
/// # Errors
/// A diagnostic naming the chart when it cannot be pulled and is not cached.
pub fn pull(
    remote: &crate::config::RemoteChart,
    helm: &str,
    timeout: Duration,
    plain_http: &dyn Fn(&str) -> bool,
) -> Result<PathBuf, Diagnostic> {
    let display = remote.key();
    let Some(cache) = cache_root().map(|c| c.join("helm-charts").join(key(&display))) else {
        return Err(Diagnostic::global(format!(
            "remote chart {display}: no cache directory to pull it into"
        ))
        .help("set KDEPLOY_CACHE_DIR (or HOME)"));
    };
    if let Some(dir) = chart_in(&cache) {
        return Ok(dir);
    }
    let parent = cache.parent().unwrap_or(&cache).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| {
        Diagnostic::global(format!("cannot create the cache {}: {e}", parent.display()))
    })?;
    let staging = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(&parent)
        .map_err(|e| Diagnostic::global(format!("cannot write to {}: {e}", parent.display())))?;
    let untar = staging.path().to_string_lossy().into_owned();
    // Values from the repository are joined to their options (`--version=…`)
    // and the reference comes after `--`: none can be read as an option.
    let version = format!("--version={}", remote.version);
    let repo = remote.repository.as_ref().map(|r| format!("--repo={r}"));
    let mut args = vec![
        "pull",
        version.as_str(),
        "--untar",
        "--untar-dir",
        untar.as_str(),
    ];
    if let Some(r) = &repo {
        args.push(r.as_str());
    }
    if plain_http(&remote.reference) {
        args.push("--plain-http");
    }
    args.extend(["--", remote.reference.as_str()]);
    if let Err(e) =
        super::sources::run_renderer(helm, &args, staging.path(), timeout, 64 * 1024, None)
    {
        return Err(Diagnostic::global(format!(
            "cannot pull the chart {} version {}{} (nothing cached in {}): {e}",
            remote.reference,
            remote.version,
            remote
                .repository
                .as_ref()
                .map(|r| format!(" from {r}"))
                .unwrap_or_default(),
            cache.display()
        ))
        .help("check the reference, version and that the registry is reachable; to render offline, copy the chart into charts/ of the repo and name it by directory, or keep the cache directory between runs (actions/cache)"));
    }
    if chart_in(staging.path()).is_none() {
        return Err(Diagnostic::global(format!(
            "helm pulled {display}, but no chart (Chart.yaml) came out of it"
        )));
    }
    let staged = staging.keep();
    if std::fs::rename(&staged, &cache).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    chart_in(&cache)
        .ok_or_else(|| Diagnostic::global(format!("the cache {} holds no chart", cache.display())))
}

/// The one chart directory under `dir` (`helm pull --untar` makes `<name>/`).
fn chart_in(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("Chart.yaml").is_file())
}
