//! `kdeploy init --from-argocd DIR`: Argo CD `Application`s (and
//! `ApplicationSet`s with list generators) under DIR, mapped to releases:
//! a plain directory → a raw source, a Kustomize overlay → a Kustomize
//! source, a Helm chart (of a repository, or under `charts/`) → a service
//! with its values and release name; each with the Application's name as
//! app, its destination as environment and its destination namespace.

use std::path::Path;

use serde_json::{Map, Value};

use super::adopt::{self, ChartRef, Entry, HelmRelease, Mapping, Unmapped};

const ARGO_GROUP: &str = "argoproj.io";

/// Reads the Applications under `dir` (relative to `repo`) and maps them.
pub(crate) fn map(repo: &Path, dir: &str, charts_dir: &str) -> Mapping {
    let mut m = Mapping::default();
    let mut apps: Vec<(String, Value)> = Vec::new();
    for (file, doc) in adopt::documents(repo, &repo.join(dir)) {
        match doc {
            Ok(obj) if adopt::group_of(&obj) == ARGO_GROUP => match obj["kind"].as_str() {
                Some("Application") => apps.push((file, obj)),
                Some("ApplicationSet") => expand_set(&file, &obj, &mut apps, &mut m),
                _ => {}
            },
            Ok(_) => {}
            Err(e) => m.unmapped.push(Unmapped {
                file,
                what: "a document".into(),
                why: format!("{e} (a templated Application, such as an app-of-apps Helm chart's, is read only once rendered: run `helm template` into a directory and point --from-argocd at it)"),
            }),
        }
    }
    for (file, app) in &apps {
        map_application(repo, file, app, charts_dir, &mut m);
    }
    m
}

/// An ApplicationSet's list generators, each element substituted into the
/// template (`{{name}}`, or `{{.name}}` with `goTemplate`).
fn expand_set(file: &str, set: &Value, apps: &mut Vec<(String, Value)>, m: &mut Mapping) {
    let name = set["metadata"]["name"].as_str().unwrap_or("?");
    let generators = set["spec"]["generators"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let template = set["spec"]["template"].to_string();
    for g in &generators {
        let Some(elements) = g["list"]["elements"].as_array() else {
            let kind = g
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            m.unmapped.push(Unmapped {
                file: file.into(),
                what: format!("ApplicationSet {name}"),
                why: format!("its `{kind}` generator needs Argo CD's controller (only list generators are read); write its Applications out and map those"),
            });
            continue;
        };
        for element in elements {
            let mut text = template.clone();
            let mut pairs = Vec::new();
            flatten("", element, &mut pairs);
            for (k, v) in pairs {
                let escaped = Value::String(v).to_string();
                let inner = &escaped[1..escaped.len() - 1];
                for pattern in [
                    format!("{{{{{k}}}}}"),
                    format!("{{{{ {k} }}}}"),
                    format!("{{{{.{k}}}}}"),
                    format!("{{{{ .{k} }}}}"),
                ] {
                    text = text.replace(&pattern, inner);
                }
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(mut app) if !text.contains("{{") => {
                    app["kind"] = "Application".into();
                    apps.push((file.to_string(), app));
                }
                _ => m.unmapped.push(Unmapped {
                    file: file.into(),
                    what: format!("ApplicationSet {name}"),
                    why: "a template placeholder its list elements do not fill (functions and nested generators are Argo CD's)".into(),
                }),
            }
        }
    }
}

/// `{a: {b: 1}}` → `a.b = "1"`.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The environment of a destination: its cluster's name, `in-cluster` for
/// the cluster Argo CD runs in.
fn environment(dest: &Value) -> String {
    if let Some(name) = dest["name"].as_str() {
        return adopt::label(name);
    }
    match dest["server"].as_str() {
        None | Some("https://kubernetes.default.svc") => "in-cluster".into(),
        Some(server) => {
            let host = server
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split([':', '/'])
                .next()
                .unwrap_or(server);
            adopt::label(host)
        }
    }
}

fn map_application(repo: &Path, file: &str, app: &Value, charts_dir: &str, m: &mut Mapping) {
    let name = app["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("Application {name}");
    let mut skip = |why: String| {
        m.unmapped.push(Unmapped {
            file: file.into(),
            what: what.clone(),
            why,
        });
    };
    let spec = &app["spec"];
    if !crate::config::is_dns_label(name) {
        return skip("its name is not a DNS-1123 label, which a kdeploy app is".into());
    }
    if spec["sources"].is_array() {
        return skip(
            "several sources in one Application: map each as an Application of its own".into(),
        );
    }
    let source = &spec["source"];
    let env = environment(&spec["destination"]);
    let namespace = spec["destination"]["namespace"]
        .as_str()
        .map(str::to_string);
    if source["plugin"].is_object() {
        return skip("a config management plugin runs its own programs, which kdeploy never does: commit its output and adopt that as a raw source".into());
    }
    // A chart of a Helm repository or registry.
    if let Some(chart) = source["chart"].as_str() {
        let url = source["repoURL"].as_str().unwrap_or_default();
        let version = source["targetRevision"].as_str().unwrap_or_default();
        let chart_ref = if url.starts_with("http://") || url.starts_with("https://") {
            ChartRef::Repository {
                url: url.to_string(),
                name: chart.to_string(),
            }
        } else {
            ChartRef::Oci(format!(
                "oci://{}/{chart}",
                url.trim_start_matches("oci://").trim_end_matches('/')
            ))
        };
        if adopt::is_range(version) {
            m.notes.push(format!(
                "{file}: {what}: `targetRevision: {version}` is a range; kdeploy pins a remote chart: set `chartVersion` in services/{name}/{env}/config.yaml to the version running now"
            ));
        }
        let mut values = Map::new();
        helm_values(source, &mut values, None, file, &what, m);
        m.helm.push(HelmRelease {
            app: name.into(),
            env,
            chart: chart_ref,
            version: version.to_string(),
            values,
            namespace,
            release_name: release_name(source, name),
            from: format!("{file} ({what})"),
        });
        return;
    }
    let Some(path) = source["path"].as_str() else {
        return skip("no `path` and no `chart`".into());
    };
    let path = path.trim_start_matches("./").trim_end_matches('/');
    let dir = repo.join(path);
    if !adopt::inside(repo, path) || !dir.is_dir() {
        return skip(format!(
            "`path: {path}` is not a directory of this repository (another repository's Application is adopted there)"
        ));
    }
    let has = |f: &str| dir.join(f).is_file();
    if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| has(f))
    {
        if let Some(opts) = source["kustomize"].as_object().filter(|o| !o.is_empty()) {
            let keys: Vec<&str> = opts.keys().map(String::as_str).collect();
            m.notes.push(format!(
                "{file}: {what}: Argo CD's kustomize options ({}) are not read; put them in {path}/kustomization.yaml",
                keys.join(", ")
            ));
        }
        m.kustomize.push(Entry {
            path: path.into(),
            app: name.into(),
            namespace,
            env,
        });
    } else if has("Chart.yaml") {
        let chart_name = path
            .strip_prefix(&format!("{}/", charts_dir.trim_end_matches('/')))
            .filter(|n| !n.contains('/'));
        let Some(chart_name) = chart_name else {
            return skip(format!(
                "a Helm chart at {path}: kdeploy renders the charts under {charts_dir}/; `git mv {path} {charts_dir}/{name}` and run init again"
            ));
        };
        let text = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap_or_default();
        let version = crate::yaml::parse(&text)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_string))
            .unwrap_or_else(|| "0.0.0".into());
        let mut values = Map::new();
        helm_values(source, &mut values, Some(&dir), file, &what, m);
        m.helm.push(HelmRelease {
            app: name.into(),
            env,
            chart: ChartRef::Local(chart_name.into()),
            version,
            values,
            namespace,
            release_name: release_name(source, name),
            from: format!("{file} ({what})"),
        });
    } else if holds_applications(repo, &dir) {
        m.notes.push(format!(
            "{file}: {what} is an app of apps: its Applications are mapped themselves, and kdeploy deploys what they deploy"
        ));
    } else {
        if std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".jsonnet") || n.ends_with(".libsonnet")
            })
        {
            return skip(format!(
                "jsonnet in {path}: kdeploy runs no jsonnet; commit its output and adopt that as a raw source"
            ));
        }
        let directory = &source["directory"];
        if directory["recurse"] != Value::Bool(true)
            && std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().is_dir())
        {
            m.notes.push(format!(
                "{file}: {what}: kdeploy reads the subdirectories of {path} too (Argo CD only with `directory.recurse`); move what is not deployed out, or name it starting with `_`"
            ));
        }
        for key in ["include", "exclude"] {
            if directory[key].is_string() {
                m.notes.push(format!(
                    "{file}: {what}: `directory.{key}` is not read: kdeploy deploys every manifest of {path}"
                ));
            }
        }
        m.raw.push(Entry {
            path: path.into(),
            app: name.into(),
            namespace,
            env,
        });
    }
}

/// Argo CD's Helm release name: `helm.releaseName`, else the Application's.
fn release_name(source: &Value, app: &str) -> String {
    source["helm"]["releaseName"]
        .as_str()
        .unwrap_or(app)
        .to_string()
}

/// The values Argo CD passes to Helm, merged in its order: value files (of
/// a chart in this repository), `values`, `valuesObject`, `parameters`.
fn helm_values(
    source: &Value,
    values: &mut Map<String, Value>,
    chart_dir: Option<&Path>,
    file: &str,
    what: &str,
    m: &mut Mapping,
) {
    let helm = &source["helm"];
    for f in helm["valueFiles"].as_array().into_iter().flatten() {
        let Some(f) = f.as_str() else { continue };
        let read = chart_dir
            .filter(|d| {
                d.join(f)
                    .strip_prefix(d)
                    .is_ok_and(|rel| adopt::inside(d, &rel.to_string_lossy()))
            })
            .and_then(|d| std::fs::read_to_string(d.join(f)).ok())
            .and_then(|t| crate::yaml::parse(&t).ok());
        match read {
            Some(Value::Object(v)) => crate::config::merge_into(values, v),
            Some(_) => {}
            None => m.notes.push(format!(
                "{file}: {what}: value file `{f}` is not read (not a file of the chart in this repository); copy its values into the service's config.yaml"
            )),
        }
    }
    if let Some(text) = helm["values"].as_str()
        && let Ok(Value::Object(v)) = crate::yaml::parse(text)
    {
        crate::config::merge_into(values, v);
    }
    if let Value::Object(v) = &helm["valuesObject"] {
        crate::config::merge_into(values, v.clone());
    }
    for p in helm["parameters"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (p["name"].as_str(), p["value"].as_str()) {
            crate::render::helm::set_path(values, name, Value::String(value.to_string()));
        }
    }
}

/// True when a directory's manifests are Argo CD Applications.
fn holds_applications(repo: &Path, dir: &Path) -> bool {
    adopt::documents(repo, dir).iter().any(|(_, d)| {
        d.as_ref().is_ok_and(|o| {
            adopt::group_of(o) == ARGO_GROUP
                && matches!(o["kind"].as_str(), Some("Application" | "ApplicationSet"))
        })
    })
}
