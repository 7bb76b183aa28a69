//! `kdeploy init`: a new config repo that renders and whose workflows pass
//! actionlint; adopting manifests that the written kdeploy.yaml reproduces;
//! never overwriting, never leaving half a config behind.

use crate::util::{Repo, kdeploy, project_root, tree};

#[test]
fn init_starts_a_repo_that_renders_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let run = kdeploy(&project_root(), &["init", "--repo", repo]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("checked: 2 releases"), "{}", run.stdout);
    let render = kdeploy(dir.path(), &["render", "--stdout"]);
    assert_eq!(render.code, 0, "{}", render.stderr);
    assert!(
        render.stdout.contains("image: ghcr.io/example/hello:1.0.0"),
        "{}",
        render.stdout
    );

    // The workflows it writes load in GitHub: actionlint, when installed.
    let workflows = dir.path().join(".github/workflows");
    let actionlint = std::process::Command::new("actionlint")
        .arg("-no-color")
        .arg(workflows.join("kdeploy-plan.yml"))
        .arg(workflows.join("kdeploy-deploy.yml"))
        .output();
    match actionlint {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => eprintln!("skipped: actionlint is not installed (.ci/run installs it)"),
    }

    std::fs::write(dir.path().join("services/hello/version"), "2.0.0\n").unwrap();
    let before = tree(dir.path());
    let again = kdeploy(&project_root(), &["init", "--repo", repo]);
    assert_eq!(again.code, 2);
    assert!(
        again
            .stderr
            .contains("never overwrites files, and these exist: kdeploy.yaml"),
        "{}",
        again.stderr
    );
    assert_eq!(tree(dir.path()), before, "nothing written");
}

#[test]
fn init_from_raw_adopts_a_committed_gen_tree_and_checks_it() {
    // A `_gen` tree as `kdeploy render` (or `helm template`) writes it.
    let source = Repo::with_app();
    source.commit("chart");
    let state = crate::apply::state(&source, "HEAD");
    let repo = Repo::new();
    for (path, text) in kdeploy::output::files(&state) {
        repo.write(&format!("_gen/{}", path.display()), &text);
    }
    let run = repo.kdeploy(&["init", "--from-raw", "_gen/{env}/{app}"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("the same objects as the manifests"),
        "{}",
        run.stdout
    );
    let settings = std::fs::read_to_string(repo.path().join("kdeploy.yaml")).unwrap();
    assert!(settings.contains("services: null"), "{settings}");
    assert!(
        settings.contains("raw: [\"_gen/{env}/{app}\"]"),
        "{settings}"
    );
    repo.commit("adopt");
    let adopted = crate::apply::state(&repo, "HEAD");
    let ids = |s: &kdeploy::render::State| -> Vec<(String, serde_json::Value)> {
        s.releases
            .iter()
            .flat_map(|r| {
                r.resources
                    .iter()
                    .map(|x| (x.id.to_string(), x.object.clone()))
            })
            .collect()
    };
    assert_eq!(ids(&adopted), ids(&state));
}

#[test]
fn init_from_raw_that_misses_manifests_writes_nothing() {
    let repo = Repo::new();
    repo.write(
        "_gen/prod/shop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .write(
        "_gen/prod/stray.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    );
    let run = repo.kdeploy(&["init", "--from-raw", "_gen/{env}/{app}"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("kdeploy init wrote nothing"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("_gen/prod/stray.yaml"),
        "{}",
        run.stderr
    );
    assert!(!repo.path().join("kdeploy.yaml").exists());

    let bad = repo.kdeploy(&["init", "--from-raw", "_gen/{env}"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("must contain {env} and {app}"),
        "{}",
        bad.stderr
    );
}

/// `kdeploy <args>` in `dir` with the renderers of this machine.
fn kdeploy_with(
    dir: &std::path::Path,
    args: &[&str],
    kubectl: &std::path::Path,
    helm: Option<&std::path::Path>,
) -> crate::util::Run {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    c.args(args)
        .current_dir(dir)
        .env_remove("GITHUB_ACTIONS")
        .env("NO_COLOR", "1")
        .env("KDEPLOY_KUSTOMIZE", kubectl);
    if let Some(h) = helm {
        c.env("KDEPLOY_HELM", h);
    }
    c.output().expect("kdeploy runs").into()
}

/// `kubectl kustomize DIR` in `repo`: the reference a Kustomize source is
/// compared with.
fn kustomize_build(kubectl: &std::path::Path, repo: &Repo, dir: &str) -> String {
    let out = std::process::Command::new(kubectl)
        .args(["kustomize", dir])
        .current_dir(repo.path())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kdeploy render --stdout` of `repo`, which succeeds.
fn render_stdout(repo: &Repo, kubectl: &std::path::Path, helm: Option<&std::path::Path>) -> String {
    let rendered = kdeploy_with(repo.path(), &["render", "--stdout"], kubectl, helm);
    assert_eq!(rendered.code, 0, "{}", rendered.stderr);
    rendered.stdout
}

/// The objects of a YAML stream as (apiVersion, kind, namespace, name) →
/// object, Flux's own objects left out, namespaced objects without a
/// namespace put in `default_ns`.
fn objects(
    text: &str,
    default_ns: &str,
) -> std::collections::BTreeMap<(String, String, String, String), serde_json::Value> {
    let mut out = std::collections::BTreeMap::new();
    for doc in text.split("\n---") {
        let Ok(mut v) = serde_norway::from_str::<serde_json::Value>(doc) else {
            continue;
        };
        if !v.is_object() {
            continue;
        }
        let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
        if api.contains("toolkit.fluxcd.io") {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let cluster = matches!(kind.as_str(), "Namespace" | "ClusterIssuer" | "ClusterRole");
        if !cluster && v["metadata"]["namespace"].is_null() {
            v["metadata"]["namespace"] = default_ns.into();
        }
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.insert((api, kind, ns, name), v);
    }
    out
}

/// A Flux repository in the layout of fluxcd/flux2-kustomize-helm-example
/// (my own files): two clusters, infrastructure controllers and configs (a
/// cert-manager ClusterIssuer, whose CRD is not in the repo), apps from a
/// base with a HelmRelease patched per cluster, a Kustomization with
/// `targetNamespace` and `patches`.
fn flux_repo(chart_repo: &str) -> Repo {
    let repo = Repo::new();
    let ks = |name: &str, path: &str, extra: &str| {
        format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  path: {path}\n  prune: true\n{extra}"
        )
    };
    for cluster in ["staging", "production"] {
        repo.write(
            &format!("clusters/{cluster}/flux-system/gotk-sync.yaml"),
            &format!(
                "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m\n  ref: {{branch: main}}\n  url: ssh://git@github.com/example/fleet\n---\n{}",
                ks("flux-system", &format!("./clusters/{cluster}"), "")
            ),
        )
        .write(
            &format!("clusters/{cluster}/infrastructure.yaml"),
            &format!(
                "{}---\n{}",
                ks("infra-controllers", "./infrastructure/controllers", "  wait: true\n"),
                ks(
                    "infra-configs",
                    "./infrastructure/configs",
                    "  dependsOn:\n    - name: infra-controllers\n"
                )
            ),
        );
    }
    repo.write(
        "clusters/staging/apps.yaml",
        &ks("apps", "./apps/staging", "  dependsOn:\n    - name: infra-configs\n"),
    )
    .write(
        "clusters/production/apps.yaml",
        &ks(
            "apps",
            "./apps/production",
            "  dependsOn:\n    - name: infra-configs\n  targetNamespace: shop\n  patches:\n    - patch: |\n        - op: replace\n          path: /spec/replicas\n          value: 3\n      target:\n        kind: Deployment\n        name: web\n",
        ),
    )
    .write(
        "infrastructure/controllers/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [namespace.yaml, deployment.yaml]\n",
    )
    .write(
        "infrastructure/controllers/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ingress\n",
    )
    .write(
        "infrastructure/controllers/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ingress\n  namespace: ingress\nspec:\n  selector: {matchLabels: {app: ingress}}\n  template:\n    metadata: {labels: {app: ingress}}\n    spec:\n      containers: [{name: ingress, image: \"registry.k8s.io/ingress-nginx/controller:v1.11.0\"}]\n",
    )
    .write(
        "infrastructure/configs/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [cluster-issuers.yaml]\n",
    )
    .write(
        "infrastructure/configs/cluster-issuers.yaml",
        "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: letsencrypt\nspec:\n  acme:\n    server: https://acme-staging-v02.api.letsencrypt.org/directory\n    privateKeySecretRef: {name: letsencrypt}\n    solvers: [{http01: {ingress: {class: nginx}}}]\n",
    )
    .write(
        "apps/base/podinfo/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [namespace.yaml, repository.yaml, release.yaml]\n",
    )
    .write(
        "apps/base/podinfo/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: podinfo\n",
    )
    .write(
        "apps/base/podinfo/repository.yaml",
        &format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: podinfo\nspec:\n  interval: 5m\n  url: {chart_repo}\n"),
    )
    .write(
        "apps/base/podinfo/release.yaml",
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: podinfo\n  namespace: podinfo\nspec:\n  interval: 50m\n  releaseName: podinfo\n  chart:\n    spec:\n      chart: redis\n      version: \"1.0.0\"\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n  values:\n    redis:\n      enabled: true\n",
    )
    .write(
        "apps/base/web/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deployment.yaml]\n",
    )
    .write(
        "apps/base/web/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: \"ghcr.io/example/web:1.0.0\"}]\n",
    )
    .write(
        "apps/staging/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../base/podinfo, ../base/web]\npatches:\n  - path: podinfo-values.yaml\n    target:\n      kind: HelmRelease\n",
    )
    .write(
        "apps/staging/podinfo-values.yaml",
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: podinfo\n  namespace: podinfo\nspec:\n  values:\n    ingress:\n      hosts: [{host: podinfo.staging}]\n",
    )
    .write(
        "apps/production/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../base/web]\n",
    );
    repo.commit("flux fleet");
    repo
}

/// A Flux repository adopts in one step: each cluster an environment, each
/// Kustomization a source that renders what kustomize-controller would
/// apply (object for object against `kubectl kustomize`, with
/// `targetNamespace` and `patches`), each HelmRelease a service with its
/// chart, values (the cluster's patch included) and release name; Flux's
/// own objects are not deployed, the ClusterIssuer is declared cluster
/// scoped, and the adoption PR plans, deleting nothing.
#[test]
fn init_from_flux_adopts_the_fleet_and_its_first_pr_plans() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    let (py, _) = crate::sources::python().expect("python");
    let charts = crate::sources::ChartRepo::start(&py);
    let repo = flux_repo(&charts.url);
    let base = repo.commit("before adoption");
    let path = repo.path().to_str().unwrap();
    let run = kdeploy_with(
        repo.path(),
        &["init", "--repo", path, "--from-flux", "clusters"],
        &kubectl,
        Some(&helm),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for wrote in [
        "wrote kdeploy.yaml",
        "wrote kdeploy/flux/production/apps/kustomization.yaml",
        "wrote services/podinfo/staging/config.yaml",
    ] {
        assert!(run.stdout.contains(wrote), "{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains("is Flux's own sync of clusters/staging"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("HelmRelease podinfo became a service, which is applied in kind order, not after infra-configs"),
        "{}",
        run.stdout
    );
    let settings = std::fs::read_to_string(repo.path().join("kdeploy.yaml")).unwrap();
    assert!(
        settings.contains("cert-manager.io/ClusterIssuer: Cluster"),
        "{settings}"
    );
    assert!(
        settings.contains("  production:\n    context: production"),
        "{settings}"
    );
    let service =
        std::fs::read_to_string(repo.path().join("services/podinfo/staging/config.yaml")).unwrap();
    assert!(service.contains("chartRepository"), "{service}");
    assert!(service.contains("host: podinfo.staging"), "{service}");
    assert!(service.contains("releaseName: \"podinfo\""), "{service}");

    // Render equals what Flux applies, per Kustomization.
    let rendered = render_stdout(&repo, &kubectl, Some(&helm));
    let ours = objects(&rendered, "default");
    let build = |dir: &str| kustomize_build(&kubectl, &repo, dir);
    let key = |kind: &str, ns: &str, name: &str| {
        ours.keys()
            .find(|(_, k, n, m)| k == kind && n == ns && m == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {ns}/{name} in {:?}", ours.keys()))
    };
    // Flux's dependsOn became change groups: the only difference from
    // Flux's build is kdeploy's ordering annotations, in metadata alone.
    let unordered = |obj: &serde_json::Value| {
        let mut obj = obj.clone();
        if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
            a.retain(|k, _| !k.starts_with("kdeploy.io/"));
            if a.is_empty() {
                obj["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("annotations");
            }
        }
        obj
    };
    for (dir, _) in [("infrastructure/controllers", "x"), ("apps/staging", "x")] {
        for ((api, kind, ns, name), obj) in objects(&build(dir), "default") {
            let mine = &ours[&key(&kind, &ns, &name)];
            assert_eq!(unordered(mine), obj, "{api} {kind} {ns}/{name}");
        }
    }
    let annotations = |kind: &str, ns: &str, name: &str| {
        ours[&key(kind, ns, name)]["metadata"]["annotations"].clone()
    };
    assert_eq!(
        annotations("Deployment", "ingress", "ingress"),
        serde_json::json!({"kdeploy.io/group": "infra-controllers", "kdeploy.io/wait": "true"})
    );
    assert_eq!(
        annotations("ClusterIssuer", "", "letsencrypt"),
        serde_json::json!({"kdeploy.io/group": "infra-configs", "kdeploy.io/apply-after": "infra-controllers"})
    );
    let web = &ours[&key("Deployment", "default", "web")];
    assert_eq!(
        web["metadata"]["annotations"]["kdeploy.io/apply-after"],
        "infra-configs"
    );
    assert!(
        web["spec"]["template"]["metadata"]["annotations"].is_null(),
        "the pod template changed: {web}"
    );
    // targetNamespace and the JSON patch of production's apps.
    let web = &ours[&key("Deployment", "shop", "web")];
    assert_eq!(web["spec"]["replicas"], 3);
    // The ClusterIssuer has no namespace; the HelmRelease became a release.
    let _ = key("ClusterIssuer", "", "letsencrypt");
    let _ = key("ConfigMap", "podinfo", "podinfo-redis");
    assert!(
        !rendered.contains("toolkit.fluxcd.io"),
        "Flux's objects deployed"
    );

    // The adoption pull request plans: nothing deleted, everything added.
    let head = repo.commit("adopt with kdeploy");
    let plan = kdeploy_with(
        repo.path(),
        &["plan", "--base", &base, "--head", &head],
        &kubectl,
        Some(&helm),
    );
    assert!(plan.code == 0 || plan.code == 1, "{}", plan.stderr);
    assert!(plan.stdout.contains("podinfo-redis"), "{}", plan.stdout);
    assert!(plan.stdout.contains(", 0 to delete."), "{}", plan.stdout);
    assert!(
        plan.stdout.contains(
            "staging applies in stages (kdeploy.io/group, kdeploy.io/apply-after): (ungrouped), infra-controllers → infra-configs → apps"
        ),
        "{}",
        plan.stdout
    );

    // The next pull request, as a team works: a base manifest changes; the
    // plan names exactly the objects whose Flux build changed, in both
    // clusters (production's in its targetNamespace).
    repo.write(
        "apps/base/web/deployment.yaml",
        &std::fs::read_to_string(repo.path().join("apps/base/web/deployment.yaml"))
            .unwrap()
            .replace("web:1.0.0", "web:1.1.0"),
    );
    let next = repo.commit("web 1.1.0");
    let plan = kdeploy_with(
        repo.path(),
        &["plan", "--base", &head, "--head", &next, "--format", "json"],
        &kubectl,
        Some(&helm),
    );
    let json: serde_json::Value = serde_json::from_str(&plan.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", plan.stdout, plan.stderr));
    let mut changed: Vec<String> = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}/{}",
                c["env"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["namespace"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [
            "production Deployment shop/web",
            "staging Deployment default/web"
        ]
    );
}

/// An Argo CD repository in the layout of argoproj/argocd-example-apps (my
/// own files): an app of apps over Applications of a plain directory, a
/// Kustomize overlay, a chart of the repository with value files and a
/// release name, a chart of a Helm repository, an ApplicationSet with a
/// list generator, and a jsonnet app kdeploy cannot run.
fn argocd_repo(chart_repo: &str) -> Repo {
    let repo = Repo::new();
    let app = |name: &str, source: &str, dest: &str| {
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: {name}\n  namespace: argocd\nspec:\n  project: default\n  source:\n{source}  destination:\n{dest}"
        )
    };
    let in_cluster =
        |ns: &str| format!("    server: https://kubernetes.default.svc\n    namespace: {ns}\n");
    repo.write(
        "argocd/root.yaml",
        &app(
            "root",
            "    repoURL: https://github.com/example/apps.git\n    path: argocd/apps\n",
            &in_cluster("argocd"),
        ),
    )
    .write(
        "argocd/apps/guestbook.yaml",
        &app(
            "guestbook",
            "    repoURL: https://github.com/example/apps.git\n    targetRevision: HEAD\n    path: guestbook\n",
            &in_cluster("guestbook"),
        ),
    )
    .write(
        "argocd/apps/kustomize-guestbook.yaml",
        &app(
            "kustomize-guestbook",
            "    repoURL: https://github.com/example/apps.git\n    path: kustomize-guestbook\n",
            &in_cluster("kg"),
        ),
    )
    .write(
        "argocd/apps/helm-guestbook.yaml",
        &app(
            "helm-guestbook",
            "    repoURL: https://github.com/example/apps.git\n    path: charts/helm-guestbook\n    helm:\n      releaseName: hg\n      valueFiles: [values-production.yaml]\n      parameters:\n        - {name: service.port, value: \"8080\"}\n",
            &in_cluster("hg"),
        ),
    )
    .write(
        "argocd/apps/redis.yaml",
        &app(
            "cache",
            &format!("    repoURL: {chart_repo}\n    chart: redis\n    targetRevision: 1.0.0\n"),
            &in_cluster("cache"),
        ),
    )
    .write(
        "argocd/apps/jsonnet.yaml",
        &app(
            "jsonnet-guestbook",
            "    repoURL: https://github.com/example/apps.git\n    path: jsonnet-guestbook\n",
            &in_cluster("jg"),
        ),
    )
    .write(
        "argocd/appset.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: ApplicationSet\nmetadata:\n  name: guestbook-fleet\nspec:\n  generators:\n    - list:\n        elements:\n          - {cluster: staging, url: https://staging.example:6443}\n          - {cluster: production, url: https://production.example:6443}\n  template:\n    metadata:\n      name: 'fleet-{{cluster}}'\n    spec:\n      project: default\n      source:\n        repoURL: https://github.com/example/apps.git\n        path: guestbook\n      destination:\n        name: '{{cluster}}'\n        namespace: guestbook\n",
    )
    .write(
        "guestbook/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: guestbook-ui\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: guestbook-ui}}\n  template:\n    metadata: {labels: {app: guestbook-ui}}\n    spec:\n      containers: [{name: ui, image: \"gcr.io/heptio-images/ks-guestbook-demo:0.2\"}]\n",
    )
    .write(
        "guestbook/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: guestbook-ui\nspec:\n  selector: {app: guestbook-ui}\n  ports: [{port: 80, targetPort: 80}]\n",
    )
    .write(
        "kustomize-guestbook/kustomization.yaml",
        "namePrefix: kustomize-\nresources: [deployment.yaml]\n",
    )
    .write(
        "kustomize-guestbook/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: guestbook-ui\nspec:\n  selector: {matchLabels: {app: kg}}\n  template:\n    metadata: {labels: {app: kg}}\n    spec:\n      containers: [{name: ui, image: \"gcr.io/heptio-images/ks-guestbook-demo:0.2\"}]\n",
    )
    .write(
        "charts/helm-guestbook/Chart.yaml",
        "apiVersion: v2\nname: helm-guestbook\nversion: 0.1.0\n",
    )
    .write("charts/helm-guestbook/values.yaml", "replicas: 1\nservice:\n  port: 80\n")
    .write("charts/helm-guestbook/values-production.yaml", "replicas: 3\n")
    .write(
        "charts/helm-guestbook/templates/all.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: hg}}\n  template:\n    metadata: {labels: {app: hg}}\n    spec:\n      containers: [{name: hg, image: \"gcr.io/heptio-images/ks-guestbook-demo:0.2\"}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  selector: {app: hg}\n  ports: [{port: {{ .Values.service.port }}}]\n",
    )
    .write("jsonnet-guestbook/guestbook.jsonnet", "{}\n");
    repo.commit("argo apps");
    repo
}

/// An Argo CD repository adopts in one step: each Application a release
/// whose render equals what Argo CD would apply (the directory's manifests
/// and `kubectl kustomize` with the destination namespace; `helm template`
/// with its value files, parameters and release name), the app of apps
/// and jsonnet listed, not dropped; the adoption PR plans.
#[test]
fn init_from_argocd_adopts_the_applications_and_its_first_pr_plans() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    let (py, _) = crate::sources::python().expect("python");
    let charts = crate::sources::ChartRepo::start(&py);
    let repo = argocd_repo(&charts.url);
    let base = repo.commit("before adoption");
    let path = repo.path().to_str().unwrap();
    let run = kdeploy_with(
        repo.path(),
        &["init", "--repo", path, "--from-argocd", "argocd"],
        &kubectl,
        Some(&helm),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Application root is an app of apps"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "argocd/apps/jsonnet.yaml: Application jsonnet-guestbook: jsonnet in jsonnet-guestbook"
        ),
        "{}",
        run.stdout
    );
    let settings = std::fs::read_to_string(repo.path().join("kdeploy.yaml")).unwrap();
    for env in ["in-cluster", "staging", "production"] {
        assert!(
            settings.contains(&format!("  {env}:\n    context: {env}")),
            "{settings}"
        );
    }

    let rendered = render_stdout(&repo, &kubectl, Some(&helm));
    // Every environment's objects, keyed as above (guestbook is deployed to
    // three clusters: in-cluster, staging, production).
    let ours = objects(&rendered, "?");
    let has = |kind: &str, ns: &str, name: &str| {
        ours.iter()
            .find(|((_, k, n, m), _)| k == kind && n == ns && m == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {kind} {ns}/{name} in {:?}", ours.keys()))
    };
    // A plain directory: its manifests with the destination namespace.
    let dir = std::fs::read_to_string(repo.path().join("guestbook/deployment.yaml")).unwrap();
    for ((_, kind, ns, name), obj) in objects(&dir, "guestbook") {
        assert_eq!(has(&kind, &ns, &name), obj);
    }
    // Kustomize: kubectl kustomize, namespaced into the destination.
    for ((_, kind, ns, name), obj) in objects(
        &kustomize_build(&kubectl, &repo, "kustomize-guestbook"),
        "kg",
    ) {
        assert_eq!(has(&kind, &ns, &name), obj);
    }
    // Helm: helm template with the value files, parameters (as one more
    // values file: the SDK's helm takes no --set) and release name.
    let params = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(params.path(), "service:\n  port: \"8080\"\n").unwrap();
    let out = std::process::Command::new(&helm)
        .args([
            "template",
            "hg",
            "charts/helm-guestbook",
            "--namespace",
            "hg",
            "-f",
            "charts/helm-guestbook/values-production.yaml",
            "-f",
        ])
        .arg(params.path())
        .current_dir(repo.path())
        .output()
        .unwrap();
    let reference = objects(&String::from_utf8_lossy(&out.stdout), "hg");
    assert_eq!(
        reference.len(),
        2,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ((_, kind, ns, name), obj) in reference {
        let mine = has(&kind, &ns, &name);
        assert_eq!(mine["spec"], obj["spec"], "{kind} {name}");
    }
    assert_eq!(has("Deployment", "hg", "hg")["spec"]["replicas"], 3);
    let _ = has("ConfigMap", "cache", "cache-redis");

    let head = repo.commit("adopt with kdeploy");
    let plan = kdeploy_with(
        repo.path(),
        &["plan", "--base", &base, "--head", &head],
        &kubectl,
        Some(&helm),
    );
    assert!(plan.code == 0 || plan.code == 1, "{}", plan.stderr);
    // The base is read with the head's settings (it has none), so what
    // Argo CD deployed from directories is there already: only the
    // services kdeploy wrote are new, and nothing is deleted.
    assert!(
        plan.stdout
            .contains("has no kdeploy.yaml: it was rendered with the head's"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("Service hg/hg [helm-guestbook] added"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(", 0 to delete."), "{}", plan.stdout);
}

/// A Kustomize repository with one overlay per environment beside its base
/// (`shop/base`, `shop/staging`, `shop/production`) and no app in the
/// path: `--from-kustomize "shop/{env}"` names the app, excludes the base
/// (the overlays' `../base`), skips a directory without a kustomization,
/// and renders what `kubectl kustomize` builds.
#[test]
fn init_from_kustomize_with_only_env_excludes_the_base() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let repo = Repo::new();
    repo.write("shop/base/kustomization.yaml", "resources: [cm.yaml]\n")
        .write(
            "shop/base/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  mode: base\n",
        )
        .write(
            "shop/staging/kustomization.yaml",
            "resources: [../base]\nnamespace: shop-staging\n",
        )
        .write(
            "shop/production/kustomization.yaml",
            "resources: [../base]\nnamespace: shop-production\nnameSuffix: -prod\n",
        )
        .write("shop/docs/README.md", "# notes\n");
    repo.commit("overlays");
    let path = repo.path().to_str().unwrap();
    let run = kdeploy_with(
        repo.path(),
        &["init", "--repo", path, "--from-kustomize", "shop/{env}"],
        &kubectl,
        None,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("checked: 2 releases (2 environments)"),
        "{}",
        run.stdout
    );
    let settings = std::fs::read_to_string(repo.path().join("kdeploy.yaml")).unwrap();
    assert!(settings.contains("app: shop\n"), "{settings}");
    assert!(settings.contains("exclude: [base]"), "{settings}");
    let rendered = render_stdout(&repo, &kubectl, None);
    let ours = objects(&rendered, "?");
    for env in ["staging", "production"] {
        let reference = objects(
            &kustomize_build(&kubectl, &repo, &format!("shop/{env}")),
            "?",
        );
        assert_eq!(reference.len(), 1);
        for (k, v) in reference {
            assert_eq!(ours.get(&k), Some(&v), "{k:?}");
        }
    }
}

/// A Helm chart deployed per environment with a values file each adopts in
/// one step: a service with a release per environment whose render equals
/// `helm template shop charts/shop -f values-<env>.yaml`, object for object.
#[test]
fn init_from_helm_adopts_a_chart_with_values_per_environment() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    let repo = Repo::new();
    repo.write(
        "charts/shop/Chart.yaml",
        "apiVersion: v2\nname: shop\nversion: 2.3.0\nappVersion: \"1.4.2\"\n",
    )
    .write("charts/shop/values.yaml", "replicas: 1\nimage: ghcr.io/acme/shop:1.4.2\n")
    .write("charts/shop/values-staging.yaml", "replicas: 2\n")
    .write("charts/shop/values-production.yaml", "replicas: 5\nimage: ghcr.io/acme/shop:1.4.1\n")
    .write(
        "charts/shop/templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: shop}}\n  template:\n    metadata: {labels: {app: shop}}\n    spec:\n      containers: [{name: shop, image: {{ .Values.image | quote }}}]\n",
    );
    repo.commit("chart");
    let path = repo.path().to_str().unwrap();
    let run = kdeploy_with(
        repo.path(),
        &["init", "--repo", path, "--from-helm", "charts/shop"],
        &kubectl,
        Some(&helm),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("checked: 2 releases (2 environments)"),
        "{}",
        run.stdout
    );
    let rendered = render_stdout(&repo, &kubectl, Some(&helm));
    let ours = objects(&rendered, "?");
    for env in ["staging", "production"] {
        let out = std::process::Command::new(&helm)
            .args([
                "template",
                "shop",
                "charts/shop",
                "--namespace",
                &format!("shop-{env}"),
                "-f",
                &format!("charts/shop/values-{env}.yaml"),
            ])
            .current_dir(repo.path())
            .output()
            .unwrap();
        let reference = objects(
            &String::from_utf8_lossy(&out.stdout),
            &format!("shop-{env}"),
        );
        assert_eq!(
            reference.len(),
            1,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (k, v) in reference {
            assert_eq!(ours.get(&k).map(|o| &o["spec"]), Some(&v["spec"]), "{k:?}");
        }
    }
    // A chart outside charts/ is named, with what to do; nothing written.
    let other = Repo::new();
    other.write("Chart.yaml", "apiVersion: v2\nname: x\nversion: 1.0.0\n");
    other.commit("root chart");
    let run = kdeploy_with(
        other.path(),
        &[
            "init",
            "--repo",
            other.path().to_str().unwrap(),
            "--from-helm",
            ".",
        ],
        &kubectl,
        Some(&helm),
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("kdeploy renders the charts under charts/"),
        "{}",
        run.stderr
    );
    assert!(!other.path().join("kdeploy.yaml").exists());
}

/// A repository that deploys through kbld keeps its digests: the kbld
/// lock's overrides become kdeploy's image lock, and the render pins them.
#[test]
fn init_maps_kbld_locks_to_the_image_lock() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    let digest = format!("sha256:{}", "ab".repeat(32));
    let repo = Repo::new();
    repo.write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n")
        .write("charts/web/values.yaml", "image: ghcr.io/acme/web:2.0.0\n")
        .write("charts/web/values-production.yaml", "{}\n")
        .write(
            "charts/web/templates/pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: [{name: web, image: {{ .Values.image | quote }}}]\n",
        )
        .write(
            "kbld.lock.yml",
            &format!("apiVersion: kbld.k14s.io/v1alpha1\nkind: Config\nminimumRequiredVersion: 0.30.0\noverrides:\n- image: ghcr.io/acme/web:2.0.0\n  newImage: ghcr.io/acme/web@{digest}\n  preresolved: true\n"),
        );
    repo.commit("kbld");
    let run = kdeploy_with(
        repo.path(),
        &[
            "init",
            "--repo",
            repo.path().to_str().unwrap(),
            "--from-helm",
            "charts/web",
        ],
        &kubectl,
        Some(&helm),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("kbld.lock.yml pinned 1 images by digest: written to images.lock.yaml"),
        "{}",
        run.stdout
    );
    let rendered = render_stdout(&repo, &kubectl, Some(&helm));
    assert!(
        rendered.contains(&format!("ghcr.io/acme/web:2.0.0@{digest}")),
        "{}",
        rendered
    );
}
