//! The render cache end to end, through the CLI and the Kubernetes API
//! simulator: a deploy writes it, a plan reads its base from it and prints
//! the same plan, a corrupt entry is ignored with a note, Secrets never
//! reach it, and a deploy never reads it.

use std::path::{Path, PathBuf};

use crate::k8s_sim::Sim;
use crate::util::{Repo, Run};

const CANARY: &str = "cache-canary-9f2c1e";

const TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{release.app}}\ndata:\n  size: \"{{values.size}}\"\n";

/// Two apps of a repo chart in two environments, and a raw source holding
/// a Secret.
fn repo() -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write("charts/mini/Chart.yaml", "name: mini\nversion: 0.1.0\n")
    .write("charts/mini/values.yaml", "size: 1\n")
    .write("charts/mini/templates/cm.yaml", TEMPLATE)
    .write(
        "manifests/staging/db/secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY}\n"),
    );
    for app in ["api", "web"] {
        repo.write(&format!("services/{app}/config.yaml"), "chart: mini\n")
            .write(&format!("services/{app}/version"), "1.0.0\n")
            .write(&format!("services/{app}/staging/config.yaml"), "")
            .write(
                &format!("services/{app}/production/config.yaml"),
                "size: 3\n",
            );
    }
    repo
}

async fn kdeploy(repo: &Repo, args: &[&str]) -> Run {
    let (dir, args): (PathBuf, Vec<String>) = (
        repo.path().to_path_buf(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::util::kdeploy(&dir, &args)
    })
    .await
    .expect("runs")
}

/// `kdeploy apply` to the simulator of `kc`, writing the render cache.
async fn apply(repo: &Repo, kc: &str, cache: &str, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "--kubeconfig", kc, "--render-cache", cache];
    args.extend_from_slice(extra);
    kdeploy(repo, &args).await
}

/// `kdeploy plan --format json` from `base`, reading `cache` when given.
async fn plan(repo: &Repo, base: &str, cache: Option<&str>) -> Run {
    let mut args = vec!["plan", "--base", base, "--format", "json"];
    if let Some(dir) = cache {
        args.extend(["--render-cache", dir]);
    }
    kdeploy(repo, &args).await
}

/// Every entry file of the cache.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read cache dir").flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_writes_the_cache_and_a_plan_reads_its_base_from_it() {
    let sim = Sim::start().await;
    let (_kc_dir, kc) = sim.kubeconfig_file();
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = cache_dir.path().display().to_string();
    let repo = repo();
    let base = repo.commit("two apps and a secret");

    let run = apply(&repo, &kc, &cache, &["--create-namespace"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("note: render cache {cache}: 4 release(s) written, 0 already there, 1 never cached (they read SOPS files or render Secrets)")),
        "{}",
        run.stdout
    );
    let files = entries(cache_dir.path());
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).expect("entry");
        assert!(!text.contains(CANARY), "{} holds the Secret", f.display());
    }

    // A shared chart change: every release of the chart differs.
    repo.write(
        "charts/mini/templates/cm.yaml",
        &format!("{TEMPLATE}  owner: platform\n"),
    );
    repo.commit("chart: an owner key");
    let plain = plan(&repo, &base, None).await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(
        plain.stdout.matches("+  owner: platform").count(),
        4,
        "{}",
        plain.stdout
    );
    let cached = plan(&repo, &base, Some(&cache)).await;
    assert_eq!(cached.code, 0, "{}", cached.stderr);
    assert_eq!(cached.stdout, plain.stdout, "the same plan");
    assert!(
        cached.stderr.contains(&format!(
            "note: render cache {cache}: 4 of 4 base release(s) read from it"
        )),
        "{}",
        cached.stderr
    );
    assert!(!plain.stderr.contains("render cache"), "{}", plain.stderr);

    // A corrupt entry is ignored, said so, and rendered instead.
    let first = &files[0];
    let bytes = std::fs::read(first).expect("entry");
    std::fs::write(first, &bytes[..bytes.len() / 2]).expect("truncate");
    let run = plan(&repo, &base, Some(&cache)).await;
    assert_eq!(run.stdout, plain.stdout, "the same plan");
    assert!(
        run.stderr.contains("3 of 4 base release(s) read from it, the rest rendered; 1 entry ignored and rendered instead (first: ")
            && run.stderr.contains("its checksum does not match (corrupt or truncated)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_never_reads_the_cache_and_replaces_an_entry_it_does_not_recognise() {
    let sim = Sim::start().await;
    let (_kc_dir, kc) = sim.kubeconfig_file();
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = cache_dir.path().display().to_string();
    let repo = repo();
    repo.commit("two apps and a secret");
    let run = apply(&repo, &kc, &cache, &["--create-namespace"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // Tamper with the entries: a deploy must neither apply nor prune
    // from them.
    for f in entries(cache_dir.path()) {
        let text = std::fs::read_to_string(&f).expect("entry");
        std::fs::write(&f, text.replace("\"size\":\"3\"", "\"size\":\"99\"")).expect("tamper");
    }
    sim.get("", "ConfigMap", "api-production", "api")
        .expect("deployed");
    let run = apply(&repo, &kc, &cache, &["--sync"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let cm = sim
        .get("", "ConfigMap", "api-production", "api")
        .expect("deployed");
    assert_eq!(cm["data"]["size"], "3", "{cm}");
    // The two production entries were changed, so they are rewritten.
    assert!(
        run.stdout.contains(&format!(
            "note: render cache {cache}: 2 release(s) written, 2 already there"
        )),
        "{}",
        run.stdout
    );
    for f in entries(cache_dir.path()) {
        let text = std::fs::read_to_string(&f).expect("entry");
        assert!(!text.contains("\"size\":\"99\""), "{}", f.display());
    }
}

/// The cache where rendering costs most: Kustomize sources, one `kubectl
/// kustomize` each, all built on one shared base that changes. Prints the
/// plan's time without and with the cache (medians of 3) and the deploy's
/// time to write it. `KDEPLOY_MEASURE_APPS` sets the number of apps (100).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn measure_a_plan_after_a_shared_kustomize_base_changes() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let apps: usize = std::env::var("KDEPLOY_MEASURE_APPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let sim = Sim::start().await;
    let (_kc_dir, kc) = sim.kubeconfig_file();
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = cache_dir.path().display().to_string();
    let repo = Repo::new();
    let deployment = |tag: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n        - name: web\n          image: example/web:{tag}\n"
        )
    };
    repo.write(
        "kdeploy.yaml",
        &format!(
            "sources:\n  kustomize: [\"apps/{{app}}/overlays/{{env}}\"]\n  kustomizeCommand: {}\n",
            kubectl.display()
        ),
    )
    .write(
        "bases/web/kustomization.yaml",
        "resources: [deployment.yaml]\nconfigMapGenerator:\n  - name: web\n    literals: [MODE=base]\n",
    )
    .write("bases/web/deployment.yaml", &deployment("1.0.0"));
    for i in 0..apps {
        repo.write(
            &format!("apps/app-{i:03}/overlays/staging/kustomization.yaml"),
            &format!("resources: [../../../../bases/web]\nnamespace: app-{i:03}\nnamePrefix: app-{i:03}-\n"),
        );
    }
    let base = repo.commit("kustomize apps");
    let start = std::time::Instant::now();
    let run = apply(&repo, &kc, &cache, &["--create-namespace"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    println!(
        "deploy of {apps} Kustomize apps, writing the cache: {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    repo.write("bases/web/deployment.yaml", &deployment("1.1.0"));
    repo.commit("the shared base: 1.1.0");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut plain = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..3 {
        for (with, samples) in [(false, &mut plain), (true, &mut cached)] {
            let start = std::time::Instant::now();
            let run = plan(&repo, &base, with.then_some(cache.as_str())).await;
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(run.code, 0, "{}", run.stderr);
            if with {
                assert!(
                    run.stderr
                        .contains(&format!("{apps} of {apps} base release(s)")),
                    "{}",
                    run.stderr
                );
            }
        }
    }
    let (p, c) = (median(plain), median(cached));
    println!(
        "plan after the shared base changed ({apps} releases differ): {p:.0} ms without the cache, {c:.0} ms with it ({:.2}x)",
        p / c
    );
}
