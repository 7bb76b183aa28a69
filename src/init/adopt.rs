//! What an adoption from another tool (Argo CD, Flux) maps to: source
//! entries, Helm releases under `services/`, generated overlays, and every
//! thing that could not be mapped, with why. Written as kdeploy.yaml and
//! files; the caller renders the result to check it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

/// One source entry of kdeploy.yaml.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    /// The directory, relative to the config repo.
    pub path: String,
    /// The app.
    pub app: String,
    /// The namespace of objects that name none.
    pub namespace: Option<String>,
    /// The environment.
    pub env: String,
}

/// Where a Helm release's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChartRef {
    /// An HTTP chart repository and the chart's name in it.
    Repository {
        /// `https://…`.
        url: String,
        /// The chart.
        name: String,
    },
    /// `oci://registry/path/chart`.
    Oci(String),
    /// A chart of the repository, under `charts/`.
    Local(String),
}

/// One Helm release, written as `services/<app>/<env>/config.yaml`.
#[derive(Debug, Clone)]
pub(crate) struct HelmRelease {
    /// App (the service directory).
    pub app: String,
    /// Environment.
    pub env: String,
    /// The chart.
    pub chart: ChartRef,
    /// The chart's version (a remote chart is pinned).
    pub version: String,
    /// Values, as the other tool passed them.
    pub values: Map<String, Value>,
    /// The namespace it installs into.
    pub namespace: Option<String>,
    /// Helm's release name.
    pub release_name: String,
    /// The file the release was read from.
    pub from: String,
}

/// Something the other tool does that kdeploy's files do not say.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Unmapped {
    /// Where it was read (`argocd/apps/jsonnet.yaml`).
    pub file: String,
    /// What (`Application jsonnet-guestbook`).
    pub what: String,
    /// Why, and what to do.
    pub why: String,
}

/// An adoption's result before it is written.
#[derive(Debug, Default)]
pub(crate) struct Mapping {
    /// `sources.kustomize` entries.
    pub kustomize: Vec<Entry>,
    /// `sources.raw` entries.
    pub raw: Vec<Entry>,
    /// Helm releases.
    pub helm: Vec<HelmRelease>,
    /// Custom kinds to declare cluster-scoped (`group/Kind`).
    pub cluster_kinds: BTreeSet<String>,
    /// What was not mapped.
    pub unmapped: Vec<Unmapped>,
    /// What was mapped with a difference worth knowing.
    pub notes: Vec<String>,
}

/// Custom kinds that are cluster-scoped in the projects that define them,
/// for objects whose CRD is not in the repository.
pub(crate) const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("cert-manager.io", "ClusterIssuer"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("kyverno.io", "ClusterPolicy"),
    ("external-secrets.io", "ClusterSecretStore"),
    ("external-secrets.io", "ClusterExternalSecret"),
    ("templates.gatekeeper.sh", "ConstraintTemplate"),
    ("karpenter.sh", "NodePool"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
    ("metallb.io", "IPAddressPool"),
    ("traefik.io", "TLSStore"),
];

/// True when `version` is not one exact version (a SemVer range, `*`,
/// empty): a remote chart must be pinned.
pub(crate) fn is_range(version: &str) -> bool {
    version.is_empty()
        || version.chars().any(|c| {
            matches!(
                c,
                '*' | '^' | '~' | '>' | '<' | '=' | '|' | ',' | ' ' | 'x' | 'X'
            )
        })
}

/// `value` as a YAML scalar or flow value on one line (JSON is YAML).
fn flow(value: &str) -> String {
    Value::String(value.to_string()).to_string()
}

/// A DNS-1123 label made of `name` (`In Cluster` → `in-cluster`).
pub(crate) fn label(name: &str) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

impl Mapping {
    /// Every environment the mapping deploys to.
    pub fn environments(&self) -> BTreeSet<String> {
        self.kustomize
            .iter()
            .chain(&self.raw)
            .map(|e| e.env.clone())
            .chain(self.helm.iter().map(|h| h.env.clone()))
            .collect()
    }

    /// kdeploy.yaml's text: a comment naming the origin, then only what is
    /// needed.
    pub fn settings(&self, origin: &str, has_services: bool) -> String {
        let mut out = format!(
            "# Written by `kdeploy init {origin}`: what it deploys, as kdeploy's sources.\n"
        );
        if !has_services && self.helm.is_empty() {
            out.push_str("services: null        # releases come from sources only\n");
        }
        if !self.helm.is_empty() && !has_services {
            out.push_str("helm:\n  versionKey: \"\"      # charts get their values as the other tool passed them\n");
        }
        out.push_str("environments:\n");
        for env in self.environments() {
            out.push_str(&format!(
                "  {env}:\n    context: {env}      # the kubeconfig context of this cluster: check it\n"
            ));
        }
        if !self.cluster_kinds.is_empty() {
            out.push_str("kinds:                 # custom kinds whose CRD the cluster has\n");
            for k in &self.cluster_kinds {
                out.push_str(&format!("  {k}: Cluster\n"));
            }
        }
        if self.kustomize.is_empty() && self.raw.is_empty() {
            return out;
        }
        out.push_str("sources:\n");
        for (key, entries) in [("kustomize", &self.kustomize), ("raw", &self.raw)] {
            if entries.is_empty() {
                continue;
            }
            out.push_str(&format!("  {key}:\n"));
            // One entry per directory, app and namespace, with its environments.
            let mut grouped: BTreeMap<(&str, &str, Option<&str>), Vec<&str>> = BTreeMap::new();
            for e in entries {
                grouped
                    .entry((&e.path, &e.app, e.namespace.as_deref()))
                    .or_default()
                    .push(&e.env);
            }
            for ((path, app, ns), mut envs) in grouped {
                envs.sort_unstable();
                out.push_str(&format!("    - path: {}\n      app: {app}\n", flow(path)));
                out.push_str(&format!("      environments: [{}]\n", envs.join(", ")));
                if let Some(ns) = ns {
                    out.push_str(&format!("      namespace: {ns}\n"));
                }
            }
        }
        out
    }

    /// The files of the Helm releases: `services/<app>/<env>/config.yaml`
    /// and `version`.
    pub fn service_files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let apps: BTreeSet<&str> = self.helm.iter().map(|h| h.app.as_str()).collect();
        for app in apps {
            out.push((
                format!("services/{app}/config.yaml"),
                "# Values every environment of this app shares (each environment's own are beside).
"
                .to_string(),
            ));
        }
        for h in &self.helm {
            let dir = format!("services/{}/{}", h.app, h.env);
            let mut text = format!("# From {}.\n", h.from);
            match &h.chart {
                ChartRef::Repository { url, name } => text.push_str(&format!(
                    "chart: {}\nchartRepository: {}\nchartVersion: {}\n",
                    flow(name),
                    flow(url),
                    flow(&h.version)
                )),
                ChartRef::Oci(url) => text.push_str(&format!(
                    "chart: {}\nchartVersion: {}\n",
                    flow(url),
                    flow(&h.version)
                )),
                ChartRef::Local(name) => text.push_str(&format!("chart: {}\n", flow(name))),
            }
            text.push_str(&format!("releaseName: {}\n", flow(&h.release_name)));
            if let Some(ns) = &h.namespace {
                text.push_str(&format!("namespace: {ns}\n"));
            }
            if !h.values.is_empty() {
                let values =
                    serde_norway::to_string(&Value::Object(h.values.clone())).unwrap_or_default();
                text.push_str("# values:\n");
                text.push_str(&values);
            }
            out.push((format!("{dir}/config.yaml"), text));
            out.push((format!("{dir}/version"), format!("{}\n", h.version)));
        }
        out
    }

    /// What the caller prints after writing: the notes and what was not
    /// mapped.
    pub fn report(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        for n in &self.notes {
            writeln!(out, "note: {n}")?;
        }
        let mut unmapped = self.unmapped.clone();
        unmapped.sort();
        unmapped.dedup();
        if !unmapped.is_empty() {
            writeln!(out, "not mapped ({}):", unmapped.len())?;
            for u in &unmapped {
                writeln!(out, "  {}: {}: {}", u.file, u.what, u.why)?;
            }
        }
        Ok(())
    }
}

/// Every YAML document of the files below `dir` (recursively, hidden
/// directories left out), with its file relative to `repo`. Documents that
/// do not parse are returned as errors with their file.
pub(crate) fn documents(repo: &Path, dir: &Path) -> Vec<(String, Result<Value, String>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(repo)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        let Ok(text) = std::fs::read_to_string(&f) else {
            out.push((rel, Err("not UTF-8 text".to_string())));
            continue;
        };
        for doc in crate::yaml::split_documents(&text) {
            if crate::yaml::is_blank(doc.text) {
                continue;
            }
            let parsed = crate::yaml::parse(doc.text)
                .map_err(|e| format!("document at line {}: {}", doc.first_line, e.message));
            out.push((rel.clone(), parsed));
        }
    }
    out
}

/// True when `rel` names a place inside `repo`: relative, no `..`, and
/// (links resolved) still below it. Adoption reads nothing else.
pub(crate) fn inside(repo: &Path, rel: &str) -> bool {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return false;
    }
    match (repo.join(p).canonicalize(), repo.canonicalize()) {
        (Ok(full), Ok(root)) => full.starts_with(root),
        _ => false,
    }
}

/// The group of an `apiVersion` (`""` for the core group).
pub(crate) fn group_of(object: &Value) -> &str {
    let v = object["apiVersion"].as_str().unwrap_or_default();
    v.rsplit_once('/').map_or("", |(g, _)| g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_labels_and_settings() {
        assert!(is_range(">=6.0.0"));
        assert!(is_range("6.5.*"));
        assert!(is_range(""));
        assert!(!is_range("6.5.4"));
        assert_eq!(label("https://Kube.Example"), "https---kube-example");
        let mut m = Mapping::default();
        m.kustomize.push(Entry {
            path: "apps/staging".into(),
            app: "apps".into(),
            namespace: None,
            env: "staging".into(),
        });
        m.kustomize.push(Entry {
            path: "apps/staging".into(),
            app: "apps".into(),
            namespace: None,
            env: "prod".into(),
        });
        let text = m.settings("--from-flux clusters", false);
        assert!(text.contains("services: null"), "{text}");
        assert!(
            text.contains("    - path: \"apps/staging\"\n      app: apps\n      environments: [prod, staging]\n"),
            "{text}"
        );
        let parsed: Value = crate::yaml::parse(&text).expect("valid YAML");
        assert_eq!(parsed["environments"]["prod"]["context"], "prod");
    }

    #[test]
    fn adoption_reads_only_inside_the_repository() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("apps")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", repo.join("link")).expect("link");
        assert!(inside(&repo, "apps"));
        assert!(inside(&repo, "./apps"));
        assert!(!inside(&repo, "../repo/apps"));
        assert!(!inside(&repo, "/etc"));
        assert!(!inside(&repo, "link"));
        assert!(!inside(&repo, "missing"));
    }
}
