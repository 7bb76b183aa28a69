//! `kdeploy init --from-flux DIR`: a Flux cluster repository mapped to
//! kdeploy. Each directory of DIR is a cluster (an environment); each Flux
//! `Kustomization` in it becomes a Kustomize source through an overlay
//! kdeploy writes under `kdeploy/flux/<cluster>/<name>/`, doing what
//! kustomize-controller does: the `path`, `targetNamespace` and `patches`
//! of the Kustomization. Its build's Flux objects are not deployed (no
//! controller runs): each `HelmRelease` becomes a service with its chart
//! (from its `HelmRepository` or `OCIRepository`), version, values,
//! namespace and release name. Its `dependsOn` becomes change groups
//! ([`order`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use super::adopt::{self, ChartRef, Entry, HelmRelease, Mapping, Unmapped};
use crate::resource::Resource;

const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";

/// Flux's API groups: objects of these are the controllers' instructions,
/// not what a cluster runs.
pub(crate) const FLUX_GROUPS: &[&str] = &[
    "helm.toolkit.fluxcd.io",
    "source.toolkit.fluxcd.io",
    "kustomize.toolkit.fluxcd.io",
    "notification.toolkit.fluxcd.io",
    "image.toolkit.fluxcd.io",
];

/// One Flux Kustomization, as read.
#[derive(Debug, Clone)]
pub(crate) struct FluxKustomization {
    /// Its cluster (the environment).
    pub env: String,
    /// Its name (the app).
    pub name: String,
    /// The file it is in.
    pub file: String,
    /// `spec.path`, relative to the repository.
    pub path: String,
    /// The overlay kdeploy writes for it.
    pub overlay: String,
    /// `spec.targetNamespace`.
    pub target_namespace: Option<String>,
    /// `spec.patches`.
    pub patches: Vec<Value>,
    /// `spec.dependsOn`: the Kustomizations of the cluster applied first.
    pub depends_on: Vec<String>,
    /// `spec.wait` or `spec.healthChecks`: Flux calls it Ready (and lets
    /// what depends on it go) only once its objects are healthy.
    pub waits: bool,
    /// How kdeploy orders it ([`order`]).
    pub order: Order,
}

/// A Kustomization's place in its cluster's change groups: Flux's
/// `dependsOn` as `kdeploy.io/group` (its name) and `kdeploy.io/apply-after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Order {
    /// In a group (something depends on it, or it depends on something).
    pub grouped: bool,
    /// The groups applied before it.
    pub after: Vec<String>,
    /// What depends on it waits until its objects are ready.
    pub wait: bool,
}

/// Reads the clusters under `dir`: the first half of the mapping, the
/// overlays without Flux's objects removed yet.
pub(crate) fn read(repo: &Path, dir: &str) -> (Vec<FluxKustomization>, Mapping) {
    let mut m = Mapping::default();
    let mut found = Vec::new();
    let root = repo.join(dir);
    // Read once: each document belongs to the cluster directory it is in,
    // or to one cluster named after `dir` when Kustomizations lie in `dir`
    // itself.
    let docs = adopt::documents(repo, &root);
    let below = |file: &str| {
        Path::new(file)
            .strip_prefix(dir.trim_start_matches("./"))
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let flat = docs.iter().any(|(f, d)| {
        below(f).components().count() == 1 && d.as_ref().is_ok_and(is_flux_kustomization)
    });
    let mut clusters: BTreeMap<String, (String, Vec<(String, Value)>)> = BTreeMap::new();
    for (file, doc) in docs {
        let Ok(doc) = doc else { continue };
        if !is_flux_kustomization(&doc) {
            continue;
        }
        let rel = below(&file);
        let (name, cluster_rel) = if flat {
            let name = Path::new(dir)
                .file_name()
                .map_or_else(|| "default".into(), |n| n.to_string_lossy().into_owned());
            (
                name,
                dir.trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
            )
        } else {
            let Some(first) = rel
                .components()
                .next()
                .filter(|_| rel.components().count() > 1)
            else {
                continue;
            };
            let first = first.as_os_str().to_string_lossy().into_owned();
            let cluster_rel = format!(
                "{}/{first}",
                dir.trim_start_matches("./").trim_end_matches('/')
            );
            (first, cluster_rel)
        };
        clusters
            .entry(adopt::label(&name))
            .or_insert_with(|| (cluster_rel, Vec::new()))
            .1
            .push((file, doc));
    }
    for (env, (cluster_rel, docs)) in clusters {
        for (file, ks) in docs {
            if let Some(k) = kustomization(repo, &env, &cluster_rel, &file, &ks, &mut m) {
                found.push(k);
            }
        }
    }
    (found, m)
}

fn is_flux_kustomization(d: &Value) -> bool {
    adopt::group_of(d) == KUSTOMIZE_GROUP && d["kind"] == "Kustomization"
}

fn kustomization(
    repo: &Path,
    env: &str,
    cluster_rel: &str,
    file: &str,
    ks: &Value,
    m: &mut Mapping,
) -> Option<FluxKustomization> {
    let name = ks["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let what = format!("Kustomization {name}");
    let spec = &ks["spec"];
    let path = spec["path"]
        .as_str()
        .unwrap_or(".")
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string();
    let unmapped = |m: &mut Mapping, why: String| {
        m.unmapped.push(Unmapped {
            file: file.into(),
            what: what.clone(),
            why,
        });
    };
    if name == "flux-system" || path == cluster_rel || cluster_rel.starts_with(&format!("{path}/"))
    {
        m.notes.push(format!(
            "{file}: {what} is Flux's own sync of {cluster_rel}: kdeploy deploys what its Kustomizations deploy, not Flux"
        ));
        return None;
    }
    if !crate::config::is_dns_label(&name) {
        unmapped(
            m,
            "its name is not a DNS-1123 label, which a kdeploy app is".into(),
        );
        return None;
    }
    if spec["sourceRef"]["name"]
        .as_str()
        .is_some_and(|s| s != "flux-system")
    {
        m.notes.push(format!(
            "{file}: {what} reads source {}: mapped as a path of this repository",
            spec["sourceRef"]["name"].as_str().unwrap_or_default()
        ));
    }
    if !adopt::inside(repo, &path) || !repo.join(&path).is_dir() {
        unmapped(
            m,
            format!("`path: {path}` is not a directory of this repository"),
        );
        return None;
    }
    if spec["postBuild"].is_object() {
        unmapped(m, "`postBuild` variable substitution is Flux's: kdeploy renders the manifests as they are; write the values in, or use a Kustomize overlay per environment".into());
        return None;
    }
    for key in [
        "components",
        "images",
        "namePrefix",
        "nameSuffix",
        "commonMetadata",
    ] {
        if !spec[key].is_null() {
            m.notes.push(format!(
                "{file}: {what}: `{key}` is not mapped; put it in the overlay kdeploy/flux/{env}/{name}/kustomization.yaml"
            ));
        }
    }
    let depends_on = spec["dependsOn"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect();
    let has_kustomization = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| repo.join(&path).join(f).is_file());
    if !has_kustomization {
        unmapped(
            m,
            format!(
                "{path} has no kustomization.yaml (Flux generates one): add one listing its manifests, and run init again"
            ),
        );
        return None;
    }
    Some(FluxKustomization {
        env: env.to_string(),
        overlay: format!("kdeploy/flux/{env}/{name}"),
        name,
        file: file.to_string(),
        path,
        target_namespace: spec["targetNamespace"].as_str().map(str::to_string),
        patches: spec["patches"].as_array().cloned().unwrap_or_default(),
        depends_on,
        waits: spec["wait"] == true
            || spec["healthChecks"]
                .as_array()
                .is_some_and(|h| !h.is_empty()),
        order: Order::default(),
    })
}

/// Flux's `dependsOn` as change groups, once the overlays are rendered:
/// a Kustomization is applied after those it depends on (after they are
/// ready when they `wait`), as kustomize-controller reconciles it only once
/// they are Ready. A dependency kdeploy does not deploy (unmapped, or whose
/// build is only Flux's objects) orders nothing, and says so.
pub(crate) fn order(
    ks: &mut [FluxKustomization],
    rendered: &[(String, String, Vec<Resource>)],
    m: &mut Mapping,
) {
    let deploys: BTreeSet<(&str, &str)> = rendered
        .iter()
        .filter(|(_, _, rs)| {
            rs.iter()
                .any(|r| !FLUX_GROUPS.contains(&r.id.group.as_str()))
        })
        .map(|(env, app, _)| (env.as_str(), app.as_str()))
        .collect();
    let mut grouped: BTreeSet<(String, String)> = BTreeSet::new();
    let mut waited: BTreeSet<(String, String)> = BTreeSet::new();
    for k in ks.iter_mut() {
        let mut after = Vec::new();
        for dep in &k.depends_on {
            if deploys.contains(&(k.env.as_str(), dep.as_str())) {
                after.push(dep.clone());
                grouped.insert((k.env.clone(), dep.clone()));
            } else {
                m.notes.push(format!(
                    "{}: Kustomization {} depends on {dep}, which kdeploy deploys no object of in {}: not ordered after it",
                    k.file, k.name, k.env
                ));
            }
        }
        if !after.is_empty() {
            grouped.insert((k.env.clone(), k.name.clone()));
            let releases = rendered
                .iter()
                .filter(|(env, app, _)| *env == k.env && *app == k.name)
                .flat_map(|(_, _, rs)| rs.iter())
                .filter(|r| {
                    r.id.kind == "HelmRelease" && FLUX_GROUPS.contains(&r.id.group.as_str())
                });
            for r in releases {
                m.notes.push(format!(
                    "{}: HelmRelease {} became a service, which is applied in kind order, not after {} as Kustomization {} is",
                    r.origin.file,
                    r.id.name,
                    after.join(", "),
                    k.name
                ));
            }
        }
        k.order.after = after;
    }
    for k in ks.iter() {
        for dep in &k.order.after {
            waited.insert((k.env.clone(), dep.clone()));
        }
    }
    for k in ks.iter_mut() {
        let key = (k.env.clone(), k.name.clone());
        k.order.grouped = grouped.contains(&key);
        k.order.wait = k.waits && waited.contains(&key);
    }
}

/// The overlay of a Flux Kustomization: its path, namespace and patches,
/// and (once known) Flux's own objects deleted from the build.
pub(crate) fn overlay(k: &FluxKustomization, delete_groups: &BTreeSet<String>) -> String {
    let depth = k.overlay.split('/').count();
    let up = "../".repeat(depth);
    let mut doc = Map::new();
    doc.insert(
        "apiVersion".into(),
        "kustomize.config.k8s.io/v1beta1".into(),
    );
    doc.insert("kind".into(), "Kustomization".into());
    doc.insert(
        "resources".into(),
        Value::Array(vec![Value::String(format!("{up}{}", k.path))]),
    );
    if let Some(ns) = &k.target_namespace {
        doc.insert("namespace".into(), Value::String(ns.clone()));
    }
    let mut patches = k.patches.clone();
    if k.order.grouped {
        let mut annotations = Map::new();
        annotations.insert(crate::order::GROUP.into(), k.name.clone().into());
        if !k.order.after.is_empty() {
            annotations.insert(crate::order::AFTER.into(), k.order.after.join(",").into());
        }
        if k.order.wait {
            annotations.insert(crate::order::WAIT.into(), "true".into());
        }
        let patch = serde_json::json!({
            "apiVersion": "any",
            "kind": "Any",
            "metadata": {"name": "any", "annotations": annotations},
        });
        // Every object of the build (`name: .*`), its metadata only: pod
        // templates stay as Flux applies them, so nothing restarts.
        patches.push(serde_json::json!({
            "target": {"name": ".*"},
            "patch": serde_norway::to_string(&patch).unwrap_or_default(),
        }));
    }
    for group in delete_groups {
        patches.push(serde_json::json!({
            "target": {"group": group},
            "patch": "$patch: delete\napiVersion: v1\nkind: FluxObject\nmetadata:\n  name: any\n",
        }));
    }
    if !patches.is_empty() {
        doc.insert("patches".into(), Value::Array(patches));
    }
    format!(
        "# Written by `kdeploy init --from-flux` for the Flux Kustomization {} of cluster {} ({}):\n# what kustomize-controller builds, without Flux's own objects (kdeploy runs no controller).\n{}",
        k.name,
        k.env,
        k.file,
        serde_norway::to_string(&Value::Object(doc)).unwrap_or_default()
    )
}

/// The entries of the overlays.
pub(crate) fn entries(ks: &[FluxKustomization]) -> Vec<Entry> {
    ks.iter()
        .map(|k| Entry {
            path: k.overlay.clone(),
            app: k.name.clone(),
            // Flux puts objects without a namespace in `default`.
            namespace: Some(
                k.target_namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            env: k.env.clone(),
        })
        .collect()
}

/// The second half: from the rendered overlays, the Flux groups to delete
/// and the Helm releases (`HelmRelease` with its chart's source).
pub(crate) fn helm_releases(
    rendered: &[(String, String, Vec<Resource>)],
    charts_dir: &str,
    m: &mut Mapping,
) -> BTreeSet<String> {
    let mut groups = BTreeSet::new();
    // Sources per environment: (kind, namespace, name) → object.
    let mut sources: BTreeMap<(String, String, String, String), Value> = BTreeMap::new();
    let mut releases: Vec<(String, String, Value)> = Vec::new();
    for (env, app, resources) in rendered {
        for r in resources {
            if !FLUX_GROUPS.contains(&r.id.group.as_str()) {
                continue;
            }
            groups.insert(r.id.group.clone());
            let ns = r.id.namespace.clone().unwrap_or_default();
            match (r.id.group.as_str(), r.id.kind.as_str()) {
                ("helm.toolkit.fluxcd.io", "HelmRelease") => {
                    releases.push((env.clone(), r.origin.file.clone(), r.object.clone()));
                }
                ("source.toolkit.fluxcd.io", kind) => {
                    sources.insert(
                        (env.clone(), kind.to_string(), ns, r.id.name.clone()),
                        r.object.clone(),
                    );
                }
                (_, kind) => m.notes.push(format!(
                    "{}: {kind} {} ({env}/{app}) is Flux's and is not deployed",
                    r.origin.file, r.id.name
                )),
            }
        }
    }
    let mut taken: BTreeSet<(String, String)> = m
        .kustomize
        .iter()
        .map(|e| (e.env.clone(), e.app.clone()))
        .collect();
    for (env, file, hr) in releases {
        if let Some(h) = helm_release(&env, &file, &hr, &sources, charts_dir, &mut taken, m) {
            m.helm.push(h);
        }
    }
    groups
}

fn helm_release(
    env: &str,
    file: &str,
    hr: &Value,
    sources: &BTreeMap<(String, String, String, String), Value>,
    charts_dir: &str,
    taken: &mut BTreeSet<(String, String)>,
    m: &mut Mapping,
) -> Option<HelmRelease> {
    let name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or("default");
    let what = format!("HelmRelease {ns}/{name}");
    let spec = &hr["spec"];
    let skip = |m: &mut Mapping, why: String| {
        m.unmapped.push(Unmapped {
            file: file.into(),
            what: what.clone(),
            why,
        });
    };
    if spec["valuesFrom"].is_array() {
        m.notes.push(format!(
            "{file}: {what}: `valuesFrom` (values in ConfigMaps or Secrets of the cluster) is not read; put those values in services/{name}/{env}/config.yaml (secrets as a SOPS file beside it)"
        ));
    }
    let depends: Vec<&str> = spec["dependsOn"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .collect();
    if !depends.is_empty() {
        m.notes.push(format!(
            "{file}: {what} depends on {}: its service is applied in kind order, not after them",
            depends.join(", ")
        ));
    }
    if spec["postRenderers"].is_array() {
        skip(
            m,
            "post-renderers are Flux's: render the chart through a Kustomize overlay instead"
                .into(),
        );
        return None;
    }
    let target_ns = spec["targetNamespace"].as_str();
    let release_name = spec["releaseName"].as_str().map_or_else(
        || match target_ns {
            Some(t) => format!("{t}-{name}"),
            None => name.to_string(),
        },
        str::to_string,
    );
    let (chart, version) = if let Some(chart_ref) = spec["chartRef"].as_object() {
        let kind = chart_ref.get("kind").and_then(Value::as_str).unwrap_or("");
        let src_name = chart_ref.get("name").and_then(Value::as_str).unwrap_or("");
        let src_ns = chart_ref
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(ns);
        let Some(src) = sources.get(&(env.into(), kind.into(), src_ns.into(), src_name.into()))
        else {
            skip(
                m,
                format!(
                    "its chartRef {kind} {src_ns}/{src_name} is not in the cluster's manifests"
                ),
            );
            return None;
        };
        let url = src["spec"]["url"].as_str().unwrap_or_default().to_string();
        let tag = src["spec"]["ref"]["tag"]
            .as_str()
            .or(src["spec"]["ref"]["semver"].as_str())
            .unwrap_or_default()
            .to_string();
        (ChartRef::Oci(url), tag)
    } else {
        let c = &spec["chart"]["spec"];
        let chart = c["chart"].as_str().unwrap_or_default();
        let version = c["version"].as_str().unwrap_or("*").to_string();
        let kind = c["sourceRef"]["kind"].as_str().unwrap_or_default();
        let src_name = c["sourceRef"]["name"].as_str().unwrap_or_default();
        let src_ns = c["sourceRef"]["namespace"].as_str().unwrap_or(ns);
        match kind {
            "HelmRepository" => {
                let Some(src) =
                    sources.get(&(env.into(), kind.into(), src_ns.into(), src_name.into()))
                else {
                    skip(
                        m,
                        format!(
                            "its HelmRepository {src_ns}/{src_name} is not in the cluster's manifests"
                        ),
                    );
                    return None;
                };
                let url = src["spec"]["url"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end_matches('/');
                if src["spec"]["type"] == "oci" || url.starts_with("oci://") {
                    (ChartRef::Oci(format!("{url}/{chart}")), version)
                } else {
                    (
                        ChartRef::Repository {
                            url: url.to_string(),
                            name: chart.to_string(),
                        },
                        version,
                    )
                }
            }
            "GitRepository" => {
                let path = chart.trim_start_matches("./").trim_end_matches('/');
                match path
                    .strip_prefix(&format!("{}/", charts_dir.trim_end_matches('/')))
                    .filter(|n| !n.contains('/'))
                {
                    Some(local) => (ChartRef::Local(local.into()), "0.0.0".into()),
                    None => {
                        skip(
                            m,
                            format!(
                                "its chart is the path {path} of a git repository: kdeploy renders the charts under {charts_dir}/; move it there and run init again"
                            ),
                        );
                        return None;
                    }
                }
            }
            other => {
                skip(m, format!("charts from a {other} are not mapped"));
                return None;
            }
        }
    };
    if adopt::is_range(&version) && !matches!(chart, ChartRef::Local(_)) {
        m.notes.push(format!(
            "{file}: {what}: chart version `{version}` is a range; kdeploy pins a remote chart: set `chartVersion` in services/<app>/{env}/config.yaml to the version running now"
        ));
    }
    let mut app = adopt::label(name);
    if !taken.insert((env.to_string(), app.clone())) {
        app = adopt::label(&format!("{ns}-{name}"));
        taken.insert((env.to_string(), app.clone()));
    }
    Some(HelmRelease {
        app,
        env: env.to_string(),
        chart,
        version,
        values: spec["values"].as_object().cloned().unwrap_or_default(),
        namespace: Some(target_ns.unwrap_or(ns).to_string()),
        release_name,
        from: format!("{file} ({what})"),
    })
}
