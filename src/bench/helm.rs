//! The Helm side-by-side figure of `kdeploy bench`: the same releases
//! rendered by Helm's Go SDK in one process (helm-python-sdk, which ships
//! the SDK as a shared library), with the built-in chart ported to Go
//! templates (`helm_chart/`). Helm gets each release's merged values, as
//! kdeploy's chart does; its output is compared object by object with
//! kdeploy's, so the figure is known to measure the same work.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::{self, Filter, Layout};
use crate::render::{State, chart};
use crate::source::Snapshot;

/// The chart's files, relative to its directory.
const CHART: &[(&str, &str)] = &[
    ("Chart.yaml", include_str!("helm_chart/Chart.yaml")),
    (
        "templates/_helpers.tpl",
        include_str!("helm_chart/templates/_helpers.tpl"),
    ),
    (
        "templates/configmap.yaml",
        include_str!("helm_chart/templates/configmap.yaml"),
    ),
    (
        "templates/deployment.yaml",
        include_str!("helm_chart/templates/deployment.yaml"),
    ),
    (
        "templates/hpa.yaml",
        include_str!("helm_chart/templates/hpa.yaml"),
    ),
    (
        "templates/ingress.yaml",
        include_str!("helm_chart/templates/ingress.yaml"),
    ),
    (
        "templates/namespace.yaml",
        include_str!("helm_chart/templates/namespace.yaml"),
    ),
    (
        "templates/pdb.yaml",
        include_str!("helm_chart/templates/pdb.yaml"),
    ),
    (
        "templates/secret.yaml",
        include_str!("helm_chart/templates/secret.yaml"),
    ),
    (
        "templates/service.yaml",
        include_str!("helm_chart/templates/service.yaml"),
    ),
    (
        "templates/serviceaccount.yaml",
        include_str!("helm_chart/templates/serviceaccount.yaml"),
    ),
    (
        "templates/servicemonitor.yaml",
        include_str!("helm_chart/templates/servicemonitor.yaml"),
    ),
];

/// The Python side: loads the chart once, renders every release, times
/// the loop.
const DRIVER: &str = include_str!("helm_side.py");

/// What Helm did with the releases of a state.
#[derive(Debug)]
pub struct Figure {
    /// Time of Helm's render loop, in ms, the median of `runs` loops (the
    /// process start and the transfer of values and output are not counted).
    pub ms: f64,
    /// Loops timed.
    pub runs: usize,
    /// Releases rendered.
    pub releases: usize,
    /// Objects kdeploy rendered for them.
    pub objects: usize,
    /// Of those, how many Helm rendered equal (namespace aside: kdeploy
    /// sets it, `helm template` leaves it to the client).
    pub equal: usize,
}

/// Renders `state`'s releases (rendered by kdeploy from `snapshot` with the
/// built-in chart) with Helm's SDK `runs` times and compares the output.
///
/// # Errors
/// When python3 or helm-python-sdk is missing, or Helm fails: the reason.
pub fn side_by_side(snapshot: &Snapshot, state: &State, runs: usize) -> anyhow::Result<Figure> {
    let reader = snapshot.reader();
    let layout = Layout::load(&reader, &snapshot.root(), &Filter::default())?;
    let defaults = chart::Chart::builtin()
        .map_err(|d| anyhow::anyhow!("{d}"))?
        .defaults;
    let rendered: HashMap<(&str, &str), usize> = state
        .releases
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.release.env.as_str(), r.release.app.as_str()), i))
        .collect();
    let mut order = Vec::new();
    let mut releases = Vec::new();
    for spec in &layout.releases {
        let Some(&at) = rendered.get(&(spec.env.as_str(), spec.app.as_str())) else {
            continue;
        };
        let release = &state.releases[at].release;
        let sv = config::load_service(&reader, spec, &layout.settings)?;
        let mut values = defaults.clone();
        config::merge_into(&mut values, sv.values);
        values.insert(
            "_release".into(),
            json!({
                "app": release.app, "env": release.env, "name": release.app,
                "namespace": release.namespace, "version": release.version,
                "secretsRevision": "",
            }),
        );
        releases.push(json!({
            "name": release.app, "namespace": release.namespace, "values": values,
        }));
        order.push(at);
    }
    let dir = tempfile::tempdir()?;
    for (path, text) in CHART {
        let file = dir.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, text)?;
    }
    let runs = runs.max(1);
    let request = json!({"chart": dir.path(), "releases": releases, "runs": runs});
    let mut child = Command::new("python3")
        .args(["-c", DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 is not available")?;
    // Written from a thread: the child answers only once it has read all.
    let mut stdin = child.stdin.take().context("no stdin")?;
    let body = serde_json::to_vec(&request)?;
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to python3 failed"))??;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        ms: f64,
        texts: Vec<String>,
    }
    let answer: Answer =
        serde_json::from_slice(&out.stdout).context("unreadable answer from helm_side.py")?;
    let mut figure = Figure {
        ms: answer.ms,
        runs,
        releases: order.len(),
        objects: 0,
        equal: 0,
    };
    for (&at, text) in order.iter().zip(&answer.texts) {
        let helm: HashMap<(String, String), Value> = crate::yaml::split_documents(text)
            .into_iter()
            .filter(|d| !crate::yaml::is_blank(d.text))
            .filter_map(|d| crate::yaml::parse(d.text).ok())
            .map(|v| {
                let key = (
                    v["kind"].as_str().unwrap_or_default().to_string(),
                    v["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                (key, v)
            })
            .collect();
        for res in &state.releases[at].resources {
            figure.objects += 1;
            let Some(theirs) = helm.get(&(res.id.kind.clone(), res.id.name.clone())) else {
                continue;
            };
            let mut ours = res.object.clone();
            if theirs["metadata"].get("namespace").is_none()
                && let Some(meta) = ours.get_mut("metadata").and_then(Value::as_object_mut)
            {
                meta.remove("namespace");
            }
            if &ours == theirs {
                figure.equal += 1;
            }
        }
    }
    Ok(figure)
}
