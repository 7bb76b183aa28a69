//! Helm charts as a chart engine: a chart whose `Chart.yaml` says
//! `apiVersion: v2` (or `v1`) is a Helm chart, rendered by the `helm`
//! executable (`helm template`) instead of the embedded handlebars engine.
//!
//! The chart is written from git objects into a temporary directory once
//! (vendored dependencies in `charts/` included); each release gets its merged
//! service values as one values file, with its version at `helm.versionKey`.
//! The process runs with a clean environment (no tokens, no kubeconfig) and a
//! timeout; its stderr is shown when it fails.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::ServiceValues;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::source::{Node, Reader};

use crate::config::HelmSettings;

use super::{Release, ReleaseKey, Rendered};

impl HelmSettings {
    /// The helm program: the runner's `KDEPLOY_HELM` (an absolute path is
    /// allowed there), else `helm.binary` (a name on PATH), else `helm`.
    fn binary(&self) -> String {
        std::env::var("KDEPLOY_HELM")
            .ok()
            .filter(|b| !b.is_empty())
            .or_else(|| self.binary.clone())
            .unwrap_or_else(|| "helm".into())
    }
}

/// True when a Chart.yaml text declares a Helm chart.
pub fn is_helm_chart(chart_yaml: &str) -> bool {
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "apiVersion")]
        api_version: Option<String>,
    }
    crate::yaml::parse_as::<Meta>(chart_yaml)
        .ok()
        .and_then(|m| m.api_version)
        .is_some_and(|v| v == "v2" || v == "v1")
}

/// A Helm chart written out to a temporary directory.
#[derive(Debug)]
pub struct HelmChart {
    /// Chart name (directory name).
    pub name: String,
    /// Directory in the config repo.
    pub dir: String,
    /// Content identity (git tree id).
    pub key: Option<String>,
    /// `values.schema.json` (checked by kdeploy first, so that problems
    /// name the user's line), with the chart's `values.yaml` it applies over.
    schema: Option<(
        Result<super::schema::ValuesSchema, Diagnostic>,
        Map<String, Value>,
    )>,
    tmp: tempfile::TempDir,
}

impl HelmChart {
    /// Writes the chart directory (recursively) from the snapshot, then
    /// fetches its remote dependencies ([`super::helm_deps`]) unless they
    /// are vendored or cached.
    ///
    /// # Errors
    /// Read or write failures; dependencies that cannot be had, as a
    /// diagnostic naming the chart.
    pub fn load(
        reader: &Reader<'_>,
        node: &Node,
        settings: &HelmSettings,
        insecure: &[String],
    ) -> Result<HelmChart, super::Error> {
        let tmp = tempfile::tempdir().map_err(|e| super::sources::io_err(&node.path, e))?;
        for f in super::sources::files(reader, node)? {
            let rel = f
                .path
                .strip_prefix(&node.path)
                .unwrap_or(&f.path)
                .trim_start_matches('/');
            let target = tmp.path().join(node.name()).join(rel);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(|e| super::sources::io_err(&f.path, e))?;
            }
            std::fs::write(&target, reader.read(&f)?)
                .map_err(|e| super::sources::io_err(&f.path, e))?;
        }
        HelmChart::finish(
            tmp,
            node.name(),
            &node.path,
            node.id.map(|id| format!("helm:{id}")),
            settings,
            insecure,
        )
    }

    /// A chart pulled from a registry or chart repository (cached), copied
    /// into a directory of its own.
    ///
    /// # Errors
    /// The pull failed and nothing is cached, as a diagnostic.
    pub fn remote(
        remote: &crate::config::RemoteChart,
        settings: &HelmSettings,
        insecure: &[String],
    ) -> Result<HelmChart, super::Error> {
        let timeout = std::time::Duration::from_secs(settings.timeout_seconds.unwrap_or(120));
        let pulled = super::helm_deps::pull(remote, &settings.binary(), timeout, &|r| {
            plain_http(r, insecure)
        })
        .map_err(|d| super::Error::Invalid(d.into()))?;
        let name = pulled
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::tempdir().map_err(|e| super::sources::io_err(&remote.key(), e))?;
        copy_dir(&pulled, &tmp.path().join(&name))
            .map_err(|e| super::sources::io_err(&remote.key(), e))?;
        HelmChart::finish(
            tmp,
            &name,
            &remote.key(),
            Some(format!("helm-remote:{}", remote.key())),
            settings,
            insecure,
        )
    }

    /// Fetches dependencies and reads the schema of a chart at `tmp/name`.
    fn finish(
        tmp: tempfile::TempDir,
        name: &str,
        dir: &str,
        key: Option<String>,
        settings: &HelmSettings,
        insecure: &[String],
    ) -> Result<HelmChart, super::Error> {
        let root = tmp.path().join(name);
        let timeout = std::time::Duration::from_secs(settings.timeout_seconds.unwrap_or(120));
        if let Err(d) = super::helm_deps::ensure(&root, dir, &settings.binary(), timeout, &|r| {
            plain_http(r, insecure)
        }) {
            return Err(super::Error::Invalid(d.into()));
        }
        // Helm follows a schema's `$ref` to any URL or file while it
        // validates values: no plan may make it reach beyond the chart.
        let reaches = super::helm_schemas::reaches(&root);
        if !reaches.is_empty() {
            let problems = reaches.into_iter().map(|r| {
                Diagnostic::new(
                    Location::file(format!("{dir}/{}", r.schema)),
                    format!(
                        "`{}` `{}` reaches outside the chart: Helm would fetch or read it while validating values",
                        r.keyword, r.target
                    ),
                )
                .help("keep values schemas self-contained: copy the definitions under `$defs` and refer to them as `#/$defs/…`; `$schema` may name only a published JSON Schema draft")
            });
            return Err(super::Error::Invalid(Diagnostics(problems.collect())));
        }
        let schema = std::fs::read_to_string(root.join("values.schema.json"))
            .ok()
            .map(|text| {
                let path = format!("{dir}/values.schema.json");
                let defaults = std::fs::read_to_string(root.join("values.yaml"))
                    .ok()
                    .and_then(|t| crate::yaml::parse(&t).ok())
                    .and_then(|v| match v {
                        Value::Object(m) => Some(m),
                        _ => None,
                    })
                    .unwrap_or_default();
                (super::schema::ValuesSchema::compile(&text, &path), defaults)
            });
        Ok(HelmChart {
            name: name.to_string(),
            dir: dir.to_string(),
            key,
            schema,
            tmp,
        })
    }

    fn chart_path(&self) -> PathBuf {
        self.tmp.path().join(&self.name)
    }
}

/// True for an `oci://` repository on a registry of `images.insecureRegistries`.
fn plain_http(repository: &str, insecure: &[String]) -> bool {
    repository.strip_prefix("oci://").is_some_and(|r| {
        let host = r.split('/').next().unwrap_or(r);
        insecure.iter().any(|i| i == host)
    })
}

/// Copies a directory tree (a pulled chart; no links are followed).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Checks once per process that `binary` is Helm 3 or newer.
fn check_version(binary: &str, timeout: std::time::Duration) -> Result<(), String> {
    static CHECKED: OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Result<(), String>>>,
    > = OnceLock::new();
    let cache = CHECKED.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(binary.to_string())
        .or_insert_with(|| {
            let dir = std::env::temp_dir();
            let out = super::sources::run_renderer(binary, &["version", "--short"], &dir, timeout, 64 * 1024, None)
                .map_err(|e| format!("{e}\nkdeploy renders Helm charts with the `helm` executable (3.x or 4.x); install it, or name another program on PATH with helm.binary in kdeploy.yaml"))?;
            let v = out.trim().trim_start_matches('v');
            match v.split('.').next().and_then(|m| m.parse::<u32>().ok()) {
                Some(major) if major >= 3 => Ok(()),
                _ => Err(format!("`{binary} version` says `{}`; kdeploy needs Helm 3 or newer", out.trim())),
            }
        })
        .clone()
}

/// Sets a dotted path in a map.
/// Sets `value` at the dotted `path` of `map` (Helm's `--set name=value`,
/// without list indexes), making the maps on the way.
pub(crate) fn set_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = map;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), value);
            return;
        }
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Some(next) = entry.as_object_mut() else {
            return;
        };
        cur = next;
    }
}

/// Renders one release with `helm template`; helm may print at most
/// `release_bytes` (the release limit, as a handlebars chart's output).
pub fn render(
    spec: &crate::config::ReleaseSpec,
    sv: ServiceValues,
    chart: &HelmChart,
    settings: &HelmSettings,
    settings_id: Option<gix::ObjectId>,
    release_bytes: u64,
) -> Result<Rendered, Diagnostics> {
    let mut values = sv.values;
    let inputs = sv.inputs;
    values.remove("chart");
    let namespace = super::release_namespace(&values, spec, &sv.default_namespace)?;
    let timeout = std::time::Duration::from_secs(settings.timeout_seconds.unwrap_or(120));
    let fail = |msg: String| Diagnostics::from(Diagnostic::new(Location::file(&chart.dir), msg));
    check_version(&settings.binary(), timeout).map_err(fail)?;
    // `versionKey: ""`: charts that take no version value (a chart from a
    // repository, adopted as it was deployed).
    let key = settings.version_key.as_deref().unwrap_or("tag");
    if !key.is_empty() {
        set_path(&mut values, key, Value::String(sv.version.clone()));
    }
    // A release's own name (`releaseName:` in its config, as Argo CD's
    // `helm.releaseName` or a Flux HelmRelease's), else the pattern.
    let own = match values.remove("releaseName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(Diagnostics::from(Diagnostic::new(
                Location::file(&spec.env_config.path),
                format!("`releaseName` must be a string, found {other}"),
            )));
        }
    };
    let named_by = if own.is_some() {
        "`releaseName`"
    } else {
        "`helm.releaseName`"
    };
    let name = own.unwrap_or_else(|| {
        settings
            .release_name
            .as_deref()
            .unwrap_or("{app}-{env}")
            .replace("{app}", &spec.app)
            .replace("{env}", &spec.env)
    });
    // The name reaches helm's command line: a name such as
    // `--post-renderer=./x` must never be read as an option.
    if !crate::config::is_dns_subdomain(&name) || name.len() > 53 {
        return Err(fail(format!(
            "{named_by} gives `{name}` for {}/{}, which is not a Helm release name (lowercase letters, digits, `-` and `.`, at most 53 characters, starting and ending with a letter or digit)",
            spec.env, spec.app
        )));
    }
    for (path, template) in &settings.set {
        let value = template
            .replace("{app}", &spec.app)
            .replace("{env}", &spec.env)
            .replace("{version}", &sv.version)
            .replace("{namespace}", &namespace)
            .replace("{release}", &name);
        set_path(&mut values, path, Value::String(value));
    }
    // Helm validates the coalesced values against the chart's schema too,
    // but its message names no file of the config repo.
    if let Some((schema, defaults)) = &chart.schema {
        let schema = schema.as_ref().map_err(|d| Diagnostics::from(d.clone()))?;
        let mut merged = defaults.clone();
        crate::config::merge_into(&mut merged, values.clone());
        let found = schema.check(
            &Value::Object(merged),
            &inputs,
            &format!("{}/values.yaml", chart.dir),
            &chart.name,
        );
        if !found.is_empty() {
            return Err(Diagnostics(found));
        }
    }
    // The values (decrypted secrets, when deploying) reach helm on stdin,
    // never in a file.
    let values = crate::yaml::to_canonical(&Value::Object(values));
    let work = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let chart_path = chart.chart_path();
    // Options first, then `--`: what follows is never read as an option.
    let args = [
        "template",
        "--namespace",
        namespace.as_str(),
        "-f",
        "-",
        "--include-crds",
        "--",
        name.as_str(),
        chart_path.to_str().unwrap_or_default(),
    ];
    let output = super::sources::run_renderer(
        &settings.binary(),
        &args,
        work.path(),
        timeout,
        release_bytes,
        Some(values.into_bytes()),
    )
    .map_err(|e| {
        fail(format!(
            "helm could not render {} for {}/{}: {e}",
            chart.dir, spec.env, spec.app
        ))
    })?;
    let release = Release::of(spec, &chart.name, sv.version, namespace);
    let mut problems = Diagnostics::default();
    let mut objects = Vec::new();
    for doc in crate::yaml::split_documents(&output) {
        // `# Source: <chart>/templates/x.yaml` names the template.
        let source = doc
            .text
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .map(|s| {
                let rel = s.trim().split_once('/').map_or(s.trim(), |(_, r)| r);
                format!("{}/{rel}", chart.dir)
            })
            .unwrap_or_else(|| chart.dir.clone());
        super::parse_documents(doc.text, &source, &release, &mut objects, &mut problems);
    }
    let resources = super::resources_of(objects, &release.namespace, &mut problems);
    let key = ReleaseKey::of(spec, settings_id, chart.key.as_deref());
    problems.into_result(Rendered {
        release,
        resources,
        key,
        inputs,
        sealed: Vec::new(),
    })
}
