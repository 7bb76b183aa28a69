//! `kdeploy init --from-helm charts/NAME`: a Helm chart deployed once per
//! environment with a values file each (`values-<env>.yaml` or
//! `values.<env>.yaml` beside its `values.yaml`, as `helm upgrade --install
//! NAME charts/NAME -f values-<env>.yaml` runs it) becomes one service with
//! a release per environment: the chart, its release name (the chart's
//! name) and the environment's values.

use std::path::Path;

use serde_json::Value;

use super::adopt::{ChartRef, HelmRelease, Mapping, Unmapped};

/// Maps the chart at `dir` (relative to `repo`).
pub(crate) fn map(repo: &Path, dir: &str, charts_dir: &str) -> Mapping {
    let mut m = Mapping::default();
    let dir = dir.trim_start_matches("./").trim_end_matches('/');
    let unmapped = |m: &mut Mapping, why: String| {
        m.unmapped.push(Unmapped {
            file: dir.to_string(),
            what: "the chart".into(),
            why,
        });
    };
    let chart_yaml = repo.join(dir).join("Chart.yaml");
    if !super::adopt::inside(repo, dir) || !chart_yaml.is_file() {
        unmapped(
            &mut m,
            format!("{dir} holds no Chart.yaml of this repository"),
        );
        return m;
    }
    let Some(name) = dir
        .strip_prefix(&format!("{}/", charts_dir.trim_end_matches('/')))
        .filter(|n| !n.contains('/'))
    else {
        unmapped(
            &mut m,
            format!(
                "kdeploy renders the charts under {charts_dir}/: `git mv {dir} {charts_dir}/<name>` and run init again"
            ),
        );
        return m;
    };
    let meta = std::fs::read_to_string(&chart_yaml)
        .ok()
        .and_then(|t| crate::yaml::parse(&t).ok())
        .unwrap_or(Value::Null);
    let version = meta["version"].as_str().unwrap_or("0.0.0").to_string();
    let mut envs: Vec<(String, String)> = std::fs::read_dir(repo.join(dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let env = file
                .strip_prefix("values-")
                .or_else(|| file.strip_prefix("values."))?
                .strip_suffix(".yaml")?
                .to_string();
            (crate::config::is_dns_label(&env) && e.path().is_file()).then_some((env, file))
        })
        .collect();
    envs.sort();
    if envs.is_empty() {
        unmapped(
            &mut m,
            format!(
                "no values file per environment in {dir} (values-<env>.yaml or values.<env>.yaml)"
            ),
        );
        return m;
    }
    for (env, file) in envs {
        let path = format!("{dir}/{file}");
        let values = match std::fs::read_to_string(repo.join(&path))
            .ok()
            .map(|t| crate::yaml::parse(&t))
        {
            Some(Ok(Value::Object(v))) => v,
            Some(Ok(Value::Null)) => serde_json::Map::new(),
            _ => {
                unmapped(&mut m, format!("{path} is not a map of values"));
                continue;
            }
        };
        m.helm.push(HelmRelease {
            app: name.to_string(),
            env,
            chart: ChartRef::Local(name.to_string()),
            version: version.clone(),
            values,
            namespace: None,
            release_name: name.to_string(),
            from: path,
        });
    }
    m.notes.push(format!(
        "each environment's release is named `{name}` (as `helm upgrade --install {name}` names it) in the namespace `{name}-<env>` (kdeploy.yaml's `namespace`); set `releaseName`/`namespace` in services/{name}/<env>/config.yaml where the running release differs"
    ));
    m
}
