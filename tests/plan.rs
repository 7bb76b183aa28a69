//! Planning two commits: add/change/delete, identity rules, noise, Secrets.

use kdeploy::config::Filter;
use kdeploy::plan::{self, Action, Plan};
use kdeploy::render;
use kdeploy::report;
use kdeploy::source::{Revision, Snapshot};

use crate::util::Repo;

fn plan_of(repo: &Repo, base: &str, head: &str) -> Plan {
    let open = |rev: &str| Snapshot::open(repo.path(), &Revision::parse(Some(rev))).expect("opens");
    let cmp = render::compare(&open(base), &open(head), &Filter::default()).expect("renders");
    plan::plan(&cmp, &cmp.head.settings.plan, 3)
}

fn summary(p: &Plan) -> Vec<String> {
    p.changes
        .iter()
        .map(|c| format!("{} {} {}", c.action.sign(), c.env, c.id))
        .collect()
}

/// A repo whose chart is a single raw template, so tests control the output.
fn raw_chart_repo(template: &str) -> Repo {
    let repo = Repo::new();
    repo.write("charts/raw/Chart.yaml", "name: raw\nversion: 1.0.0\n")
        .write("charts/raw/templates/objects.yaml", template)
        .write("kdeploy.yaml", "defaultChart: raw\n")
        .write("services/app/config.yaml", "")
        .write("services/app/version", "1\n")
        .write("services/app/prod/config.yaml", "");
    repo
}

#[test]
fn adding_changing_and_removing_apps() {
    let repo = Repo::with_app();
    let base = repo.commit("base");
    repo.write("services/web/config.yaml", "image: x/web\n")
        .write("services/web/version", "1\n")
        .write("services/web/staging/config.yaml", "")
        .write("services/api/production/config.yaml", "replicas: 4\n");
    let head = repo.commit("add web, scale api");
    let p = plan_of(&repo, &base, &head);
    assert_eq!(
        summary(&p),
        [
            "~ production apps/Deployment api-production/api",
            "+ staging Namespace web-staging",
            "+ staging policy/PodDisruptionBudget web-staging/web",
            "+ staging ServiceAccount web-staging/web",
            "+ staging Service web-staging/web",
            "+ staging apps/Deployment web-staging/web",
        ]
    );
    assert!(
        p.changes[0]
            .diff
            .contains("-  replicas: 3\n+  replicas: 4\n"),
        "{}",
        p.changes[0].diff
    );

    repo.remove("services/api");
    let removed = repo.commit("remove api");
    let p = plan_of(&repo, &head, &removed);
    assert!(
        p.changes
            .iter()
            .all(|c| c.action == Action::Deleted && c.app == "api")
    );
    assert_eq!(p.counts(), (0, 0, 10));
    // Deletions run in reverse apply order: workloads before their namespace.
    let prod: Vec<&str> = p
        .changes
        .iter()
        .filter(|c| c.env == "production")
        .map(|c| c.id.kind.as_str())
        .collect();
    assert_eq!(prod.first(), Some(&"Deployment"));
    assert_eq!(prod.last(), Some(&"Namespace"));
}

#[test]
fn renaming_an_app_deletes_and_adds() {
    let repo = Repo::with_app();
    let base = repo.commit("base");
    std::fs::rename(
        repo.path().join("services/api"),
        repo.path().join("services/apiv2"),
    )
    .unwrap();
    let head = repo.commit("rename");
    let (a, c, d) = plan_of(&repo, &base, &head).counts();
    assert_eq!((a, c, d), (10, 0, 10));
}

#[test]
fn api_version_bump_is_a_change_and_formatting_is_not() {
    let repo = raw_chart_repo(
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: a\nspec:\n  maxReplicas: 3\n  minReplicas: 1\n",
    );
    let base = repo.commit("base");
    // Same object: keys reordered, flow style, quoting, comments.
    repo.write(
        "charts/raw/templates/objects.yaml",
        "# reformatted\nkind: HorizontalPodAutoscaler\napiVersion: \"autoscaling/v1\"\nspec: {minReplicas: 1, maxReplicas: 3}\nmetadata: {name: a}\n",
    );
    let fmt = repo.commit("format only");
    let p = plan_of(&repo, &base, &fmt);
    assert!(!p.has_changes(), "{:?}", summary(&p));
    assert_eq!(p.unchanged, 1);

    repo.write(
        "charts/raw/templates/objects.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: a\nspec:\n  maxReplicas: 3\n  minReplicas: 1\n",
    );
    let bump = repo.commit("v2");
    let p = plan_of(&repo, &fmt, &bump);
    assert_eq!(
        summary(&p),
        ["~ prod autoscaling/HorizontalPodAutoscaler app-prod/a"]
    );
    assert!(p.changes[0].diff.contains("+apiVersion: autoscaling/v2"));
}

#[test]
fn secret_values_never_appear_in_any_output() {
    let secret = |user: &str, pass: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{{\"data\":\"{pass}\"}}'\nstringData:\n  user: {user}\n  password: {pass}\n"
        )
    };
    let repo = raw_chart_repo(&secret("CANARY-USER-1", "CANARY-PASS-1"));
    let base = repo.commit("base");
    repo.write(
        "charts/raw/templates/objects.yaml",
        &secret("CANARY-USER-1", "CANARY-PASS-2"),
    );
    let head = repo.commit("rotate");
    let p = plan_of(&repo, &base, &head);
    assert_eq!(p.counts(), (0, 1, 0));
    let diff = &p.changes[0].diff;
    assert!(diff.contains("+  password: <redacted> (changed)"), "{diff}");
    assert!(
        !diff.contains("+  user:") && !diff.contains("-  user:"),
        "an unchanged key gives no diff line:\n{diff}"
    );

    let mut text = Vec::new();
    report::text(&p, false, &mut text).unwrap();
    let outputs = [
        String::from_utf8(text).unwrap(),
        report::markdown(&p, "<!-- m -->", report::COMMENT_LIMIT),
        serde_json::to_string(&report::json(&p)).unwrap(),
        repo.kdeploy(&["plan", "--base", &base, "--head", &head])
            .stdout,
        repo.kdeploy(&["plan", "--base", &base, "--head", &head, "--format", "json"])
            .stdout,
        repo.kdeploy(&[
            "plan", "--base", &base, "--head", &head, "--format", "markdown",
        ])
        .stdout,
    ];
    for out in &outputs {
        assert!(out.contains("redacted"), "{out}");
        assert!(!out.contains("CANARY"), "secret leaked:\n{out}");
    }
    // A deleted Secret is redacted too.
    repo.write(
        "charts/raw/templates/objects.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
    );
    let gone = repo.commit("delete");
    let p = plan_of(&repo, &head, &gone);
    let all: String = p.changes.iter().map(|c| c.diff.clone()).collect();
    assert!(
        !all.contains("CANARY") && all.contains("(removed)"),
        "{all}"
    );
}

#[test]
fn ignored_resources_and_fields_are_hidden_and_said_so() {
    // Noise rules are runner policy: they hide only from the base on.
    let repo = Repo::with_app();
    repo.write(
        "kdeploy.yaml",
        "plan:\n  ignoreResources: ['policy:PodDisruptionBudget:*:*']\n  ignoreFields:\n    - path: /spec/replicas\n      kinds: [Deployment]\n",
    );
    let base = repo.commit("base");
    repo.write(
        "services/api/production/config.yaml",
        "replicas: 9\npdb:\n  maxUnavailable: 2\n",
    );
    let head = repo.commit("noise");
    let p = plan_of(&repo, &base, &head);
    assert!(!p.has_changes(), "{:?}", summary(&p));
    assert_eq!(p.hidden_resources, 1);
    let md = report::markdown(&p, "<!-- m -->", report::COMMENT_LIMIT);
    assert!(md.contains("No changes"));
    let run = repo.kdeploy(&["plan", "--base", &base]);
    assert!(
        run.stdout.contains("hidden by plan.ignoreResources"),
        "{}",
        run.stdout
    );
}

#[test]
fn detailed_exitcode_and_json_schema() {
    let repo = Repo::with_app();
    let base = repo.commit("base");
    let same = repo.kdeploy(&["plan", "--base", &base, "--detailed-exitcode"]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    repo.write("services/api/version", "1.0.1\n");
    let head = repo.commit("bump");
    let changed = repo.kdeploy(&[
        "plan",
        "--base",
        &base,
        "--head",
        &head,
        "--detailed-exitcode",
        "--format",
        "json",
    ]);
    assert_eq!(changed.code, 2, "{}", changed.stderr);
    let v: serde_json::Value = serde_json::from_str(&changed.stdout).unwrap();
    assert_eq!(v["summary"]["changed"], 2, "{v:#}");
    assert_eq!(v["changes"][0]["kind"], "Deployment");
    assert_eq!(v["changes"][0]["action"], "changed");
    for key in ["env", "app", "group", "namespace", "name", "diff"] {
        assert!(v["changes"][0].get(key).is_some(), "missing {key}");
    }
    let broken = repo.kdeploy(&["plan", "--base", "nope", "--detailed-exitcode"]);
    assert_eq!(broken.code, 1);
    assert_eq!(repo.kdeploy(&["plan", "--base", "nope"]).code, 2);
}

#[test]
fn oversized_markdown_leaves_out_whole_resources_and_closes_fences() {
    let repo = Repo::with_app();
    let base = repo.commit("base");
    let mut big = String::from("env:\n");
    for i in 0..4000 {
        big.push_str(&format!("  KEY_{i}: value-{i}\n"));
    }
    repo.write(
        "services/api/config.yaml",
        &format!("image: ghcr.io/example/api\n{big}"),
    );
    let head = repo.commit("big");
    let p = plan_of(&repo, &base, &head);
    let md = report::markdown(&p, "<!-- m -->", report::COMMENT_LIMIT);
    assert!(md.len() <= report::COMMENT_LIMIT, "{}", md.len());
    assert!(
        md.contains("left out to fit"),
        "{}",
        &md[md.len().saturating_sub(500)..]
    );
    assert_eq!(
        md.matches("```diff").count() * 2,
        md.matches("```").count(),
        "fences balanced"
    );
}

/// `kdeploy environments`: what a workflow fans deploy jobs out over.
#[test]
fn environments_lists_what_a_change_touches_with_its_cluster() {
    let repo = crate::util::Repo::with_app();
    repo.write(
        "kdeploy.yaml",
        "environments:\n  staging: {context: staging-cluster}\n  production: {context: prod-cluster}\n",
    );
    let base = repo.commit("two clusters");
    repo.write("services/api/production/config.yaml", "replicas: 5\n");
    repo.commit("scale production");
    let run = repo.kdeploy(&["environments", "--base", &base]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!([{"environment": "production", "context": "prod-cluster"}])
    );
    repo.write("services/api/version", "2.0.0\n");
    repo.commit("new version everywhere");
    let run = repo.kdeploy(&["environments", "--base", &base]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!([
            {"environment": "production", "context": "prod-cluster"},
            {"environment": "staging", "context": "staging-cluster"}
        ])
    );
}

/// A repo of raw manifests under `m/{env}/{app}` (kdeploy.yaml decides).
fn raw_repo(files: &[(&str, &str)]) -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw: [\"m/{env}/{app}\"]\n",
    );
    for (path, text) in files {
        repo.write(path, text);
    }
    repo
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web, team: a}}\n  template:\n    metadata: {labels: {app: web, team: a}}\n    spec: {containers: [{name: web, image: nginx}]}\n";

/// The adoption pull request adds kdeploy.yaml. Its base has none: read
/// with the defaults, it would put the same releases in other namespaces
/// and the plan would delete the live ones. The base is read with the
/// head's settings, and the plan says so.
#[test]
fn a_base_without_kdeploy_yaml_is_read_with_the_heads() {
    let repo = Repo::with_app();
    let base = repo.commit("before kdeploy.yaml");
    repo.write("kdeploy.yaml", "namespace: \"{app}\"\n");
    let head = repo.commit("adopt kdeploy");
    let p = plan_of(&repo, &base, &head);
    assert!(
        p.changes.iter().all(|c| c.action != Action::Deleted),
        "{:?}",
        summary(&p)
    );
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
    assert!(p.notes[0].contains("has no kdeploy.yaml"), "{:?}", p.notes);
    let mut text = Vec::new();
    report::text(&p, false, &mut text).unwrap();
    assert!(String::from_utf8(text).unwrap().contains("Note: the base"));
    let md = report::markdown(&p, "<!-- m -->", 65_536);
    assert!(md.contains("> [!NOTE]"), "{md}");
    let json = serde_json::to_value(report::json(&p)).unwrap();
    assert_eq!(json["notes"][0], serde_json::json!(p.notes[0]));
}

/// `plan` checks the base as `render --rev` does: a base with a resource
/// defined twice is an error that names the base, not an empty state.
#[test]
fn a_base_that_does_not_render_is_an_error_naming_it() {
    let repo = raw_repo(&[
        (
            "m/prod/shop/a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        ),
        (
            "m/prod/shop/b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
        ),
    ]);
    let base = repo.commit("duplicate");
    repo.write(
        "m/prod/shop/b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\n",
    );
    let head = repo.commit("fixed");
    let open = |rev: &str| Snapshot::open(repo.path(), &Revision::parse(Some(rev))).expect("opens");
    let err = render::compare(&open(&base), &open(&head), &Filter::default())
        .expect_err("the base is invalid");
    let text = err.to_string();
    assert!(text.contains("at base revision"), "{text}");
    assert!(
        text.contains("defined") || text.contains("twice") || text.contains("duplicate"),
        "{text}"
    );
}

fn warnings_of(p: &Plan) -> Vec<(String, &'static str, String)> {
    p.changes
        .iter()
        .flat_map(|c| {
            c.warnings
                .iter()
                .map(move |w| (c.id.to_string(), w.code, w.path.clone()))
        })
        .collect()
}

#[test]
fn immutable_field_changes_are_warned_in_every_format() {
    let repo = raw_repo(&[
        ("m/prod/shop/deploy.yaml", DEPLOY),
        (
            "m/prod/shop/svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.0.0.10, ports: [{port: 80}]}\n",
        ),
        (
            "m/prod/shop/sts.yaml",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 1\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres}]}\n  volumeClaimTemplates: [{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]\n",
        ),
        (
            "m/prod/shop/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: \"1\"}\n",
        ),
        (
            "m/prod/shop/pvc.yaml",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: cache}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}\n",
        ),
        (
            "m/prod/shop/rb.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: a}\nsubjects: []\n",
        ),
        (
            "m/prod/shop/job.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec:\n  template:\n    spec: {restartPolicy: Never, containers: [{name: m, image: app:1}]}\n",
        ),
    ]);
    let base = repo.commit("base");
    repo.write("m/prod/shop/deploy.yaml", &DEPLOY.replace("team: a", "team: b"))
        .write(
            "m/prod/shop/svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.0.0.11, ports: [{port: 80}]}\n",
        )
        .write(
            "m/prod/shop/sts.yaml",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres}]}\n  volumeClaimTemplates: [{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 5Gi}}}}]\n",
        )
        .write(
            "m/prod/shop/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: \"2\"}\n",
        )
        .write(
            "m/prod/shop/pvc.yaml",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: cache}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
        )
        .write(
            "m/prod/shop/rb.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: b}\nsubjects: []\n",
        )
        .write(
            "m/prod/shop/job.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec:\n  template:\n    spec: {restartPolicy: Never, containers: [{name: m, image: app:2}]}\n",
        );
    let head = repo.commit("head");
    let p = plan_of(&repo, &base, &head);
    let mut found = warnings_of(&p);
    found.sort();
    let expected = [
        ("ConfigMap shop-prod/frozen", "immutable-field", "/data"),
        (
            "PersistentVolumeClaim shop-prod/cache",
            "immutable-field",
            "/spec/resources/requests/storage",
        ),
        (
            "Service shop-prod/web",
            "immutable-field",
            "/spec/clusterIP",
        ),
        (
            "apps/Deployment shop-prod/web",
            "immutable-field",
            "/spec/selector",
        ),
        (
            "apps/StatefulSet shop-prod/db",
            "immutable-field",
            "/spec/volumeClaimTemplates",
        ),
        (
            "batch/Job shop-prod/migrate",
            "immutable-field",
            "/spec/template",
        ),
        (
            "rbac.authorization.k8s.io/RoleBinding shop-prod/rb",
            "immutable-field",
            "/roleRef",
        ),
    ];
    let expected: Vec<(String, &str, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), *b, c.to_string()))
        .collect();
    assert_eq!(found, expected);

    let mut text = Vec::new();
    report::text(&p, false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("warning[immutable-field] `/spec/selector` changes"),
        "{text}"
    );
    assert!(text.contains("7 warnings: immutable-field (7)."), "{text}");
    let md = report::markdown(&p, "<!-- m -->", 65_536);
    assert!(
        md.contains("> [!WARNING]\n> **immutable-field**: `/spec/selector` changes"),
        "{md}"
    );
    assert!(md.contains("Deployment `shop-prod/web` ⚠️"), "{md}");
    let json = serde_json::to_value(report::json(&p)).unwrap();
    assert_eq!(json["summary"]["warnings"], 7);
    let deploy = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deploy["warnings"][0]["code"], "immutable-field");
    assert_eq!(deploy["warnings"][0]["path"], "/spec/selector");
}

#[test]
fn removed_and_deprecated_apis_follow_the_environments_kubernetes_version() {
    let ingress = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: web}\nspec: {backend: {serviceName: web, servicePort: 80}}\n";
    let hpa = "apiVersion: autoscaling/v2beta2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, minReplicas: 1, maxReplicas: 3}\n";
    let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ext}\nsubsets: []\n";
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw: [\"m/{env}/{app}\"]\nenvironments:\n  old:\n    kubernetesVersion: \"1.21\"\n",
    );
    let base = repo.commit("empty");
    for env in ["old", "prod"] {
        repo.write(&format!("m/{env}/shop/ingress.yaml"), ingress)
            .write(&format!("m/{env}/shop/hpa.yaml"), hpa)
            .write(&format!("m/{env}/shop/endpoints.yaml"), endpoints);
    }
    let head = repo.commit("old APIs");
    let p = plan_of(&repo, &base, &head);
    let mut got: Vec<String> = p
        .changes
        .iter()
        .flat_map(|c| {
            c.warnings
                .iter()
                .map(move |w| format!("{} {} {}", c.env, c.id.kind, w.code))
        })
        .collect();
    got.sort();
    // 1.21 (old): the Ingress is deprecated, not yet removed; v2beta2 is
    // deprecated only from 1.23. The default (newest) refuses both.
    assert_eq!(
        got,
        [
            "old Ingress deprecated-api",
            "prod Endpoints deprecated-api",
            "prod HorizontalPodAutoscaler removed-api",
            "prod Ingress removed-api",
        ]
    );
    let ing = p
        .changes
        .iter()
        .find(|c| c.env == "prod" && c.id.kind == "Ingress")
        .unwrap();
    assert!(
        ing.warnings[0]
            .message
            .contains("removed in Kubernetes 1.22; the cluster (1.37) will refuse it: use `networking.k8s.io/v1`"),
        "{}",
        ing.warnings[0].message
    );
}

#[test]
fn deleting_a_namespace_warns_what_it_takes_with_it() {
    let repo = raw_repo(&[
        (
            "m/prod/shop/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop-prod}\n",
        ),
        ("m/prod/shop/deploy.yaml", DEPLOY),
    ]);
    let base = repo.commit("base");
    std::fs::remove_dir_all(repo.path().join("m/prod/shop")).unwrap();
    repo.write(
        "m/prod/other/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let head = repo.commit("remove shop");
    let p = plan_of(&repo, &base, &head);
    let ns = p
        .changes
        .iter()
        .find(|c| c.id.kind == "Namespace")
        .expect("deleted");
    assert_eq!(ns.action, Action::Deleted);
    assert_eq!(ns.warnings[0].code, "cascade");
    assert!(
        ns.warnings[0]
            .message
            .contains("1 resource the config had there"),
        "{}",
        ns.warnings[0].message
    );
}

#[test]
fn a_kubernetes_version_that_is_not_quoted_is_explained() {
    let (_, problems) = kdeploy::config::parse_settings(
        "environments:\n  prod:\n    kubernetesVersion: 1.30\n",
        "kdeploy.yaml",
    );
    let text = problems[0].to_string();
    assert!(text.contains("kdeploy.yaml:3"), "{text}");
    assert!(text.contains("quoted Kubernetes version"), "{text}");
}

/// Text plans come under one header per environment; `--compact` gives one
/// line per resource; counts agree in number ("1 change").
#[test]
fn text_plans_are_grouped_by_environment_and_compact_on_request() {
    let repo = Repo::with_app();
    let base = repo.commit("base");
    repo.write("services/api/production/config.yaml", "replicas: 4\n")
        .write("services/web/config.yaml", "image: x/web\n")
        .write("services/web/version", "1\n")
        .write("services/web/staging/config.yaml", "");
    let head = repo.commit("scale api, add web");
    let p = plan_of(&repo, &base, &head);
    let mut full = Vec::new();
    report::text_with(&p, false, false, &mut full).unwrap();
    let full = String::from_utf8(full).unwrap();
    let prod = full.find("== production == (1 change)").expect(&full);
    let staging = full.find("== staging == (5 changes)").expect(&full);
    assert!(prod < staging, "{full}");
    assert!(
        full.contains("~ apps/Deployment api-production/api [api] changed"),
        "{full}"
    );
    assert!(full.contains("+  replicas: 4"), "{full}");
    assert!(full.contains("    = replicas 3 → 4\n"), "{full}");
    let md = report::markdown(&p, "<!-- m -->", 65_536);
    assert!(
        md.contains("**Replicas.** **production**: `api` 3 → 4"),
        "{md}"
    );

    let mut compact = Vec::new();
    report::text_with(&p, false, true, &mut compact).unwrap();
    let compact = String::from_utf8(compact).unwrap();
    assert!(
        compact.contains("~ apps/Deployment api-production/api [api] replicas 3 → 4 (+1 -1)\n"),
        "{compact}"
    );
    assert!(!compact.contains("replicas: 4"), "{compact}");
    let added = compact
        .lines()
        .find(|l| l.starts_with("+ apps/Deployment web-staging/web [web] "))
        .expect(&compact);
    assert!(
        added.contains("new: image x/web:1, 2 replicas ("),
        "{added}"
    );
    assert!(added.ends_with(" lines)"), "{added}");
    assert!(
        compact.contains("5 to add, 1 to change, 0 to delete."),
        "{compact}"
    );
}

/// `validate` (and apply) refuse an apiVersion the environment's cluster no
/// longer serves; `plan` shows it as a `removed-api` warning and goes on;
/// still-served versions such as autoscaling/v1 are checked, not skipped.
#[test]
fn removed_apis_fail_validate_and_warn_in_plan_and_served_versions_are_checked() {
    let repo = Repo::new();
    repo.write("kdeploy.yaml", "sources:\n  raw: [\"m/{env}/{app}\"]\n")
        .write(
            "m/prod/shop/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        );
    repo.commit("base");
    repo.write(
        "m/prod/shop/ingress.yaml",
        "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: web}\nspec: {backend: {serviceName: web, servicePort: 80}}\n",
    );
    repo.commit("old ingress");
    let v = repo.kdeploy(&["validate", "--rev", "HEAD"]);
    assert_eq!(v.code, 2, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stderr.contains("m/prod/shop/ingress.yaml")
            && v.stderr
                .contains("`extensions/v1beta1` Ingress was removed in Kubernetes 1.22"),
        "{}",
        v.stderr
    );
    let p = repo.kdeploy(&["plan", "--base", "HEAD~1", "--head", "HEAD"]);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(p.stdout.contains("warning[removed-api]"), "{}", p.stdout);

    // An older cluster still serves it: not an error there.
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"m/{env}/{app}\"]\nenvironments:\n  prod:\n    kubernetesVersion: \"1.20\"\n",
    );
    repo.commit("old cluster");
    let v = repo.kdeploy(&["validate", "--rev", "HEAD"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);

    repo.remove("m/prod/shop/ingress.yaml").write(
        "m/prod/shop/hpa.yaml",
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {scaleTargetRef: {kind: Deployment, name: web}, maxReplicas: 3, targetCPU: 80}\n",
    );
    repo.commit("autoscaling/v1 with a typo");
    let v = repo.kdeploy(&["validate", "--rev", "HEAD"]);
    assert_eq!(v.code, 2, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stderr.contains("spec.targetCPU: unknown field"),
        "{}",
        v.stderr
    );
}

/// `--config FILE` renders both revisions with one kdeploy.yaml: the plan
/// then shows what the services changed, not what the settings moved.
#[test]
fn config_flag_renders_both_revisions_with_one_file() {
    let repo = Repo::with_app();
    repo.write("kdeploy.yaml", "namespace: \"{app}-{env}\"\n");
    repo.commit("base");
    repo.write("kdeploy.yaml", "namespace: \"{env}-{app}\"\n")
        .write("services/api/production/config.yaml", "replicas: 4\n");
    repo.commit("head: other namespaces, api scaled");
    let moved = repo.kdeploy(&["plan", "--base", "HEAD~1", "--compact"]);
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert!(
        moved.stdout.contains("- Namespace api-production"),
        "{}",
        moved.stdout
    );

    std::fs::write(repo.path().join("one.yaml"), "namespace: \"{env}-{app}\"\n").unwrap();
    let p = repo.kdeploy(&[
        "plan",
        "--base",
        "HEAD~1",
        "--compact",
        "--config",
        "one.yaml",
    ]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert!(
        p.stdout.contains("0 to add, 1 to change, 0 to delete"),
        "{}",
        p.stdout
    );
    let bad = repo.kdeploy(&["plan", "--base", "HEAD~1", "--config", "missing.yaml"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("missing.yaml: cannot read it"),
        "{}",
        bad.stderr
    );
}

/// The comment as a reviewer reads it, for a PR on the bundled example that
/// bumps `api`, changes one env var, removes `worker` and adds `search`:
/// one section per (environment, app), each change in words before its
/// folded diff, every `<details>` and fence closed.
#[test]
fn the_comment_has_one_section_per_app_and_each_change_in_words() {
    let repo = crate::apply::example_repo();
    let base = repo.commit("example");
    let staging = std::fs::read_to_string(repo.path().join("services/api/staging/config.yaml"))
        .unwrap()
        .replace("LOG_LEVEL: debug", "LOG_LEVEL: trace");
    repo.write("services/api/version", "2.4.0\n")
        .write("services/api/staging/config.yaml", &staging);
    repo.remove("services/worker");
    repo.write(
        "services/search/config.yaml",
        "image: ghcr.io/example/search\n",
    )
    .write("services/search/version", "0.1.0\n")
    .write("services/search/production/config.yaml", "")
    .write("services/search/staging/config.yaml", "");
    let head = repo.commit("bump api, env var, remove worker, add search");
    let mut p = plan_of(&repo, &base, &head);
    // Commit ids differ per run; the snapshot names them by role.
    p.base = "BASE".into();
    p.head = "HEAD".into();
    let md = report::markdown(&p, "<!-- m -->", 65_536)
        .replace(kdeploy::plan::fingerprint::VERSION, "VERSION");
    insta::assert_snapshot!(md);
    let sections: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("<details><summary><b>"))
        .collect();
    let mut unique = sections.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), sections.len(), "a section repeats:\n{md}");
    assert!(!md.contains("(continued)"), "{md}");
    assert!(md.contains("\nimage api: 1.4.2 → 2.4.0\n"), "{md}");
    assert!(md.contains("\ndata LOG\\_LEVEL: debug → trace\n"), "{md}");
    assert!(
        md.contains("deleted: image ghcr.io/example/shop-worker"),
        "{md}"
    );
    assert!(
        md.contains("new: image ghcr.io/example/search:0.1.0"),
        "{md}"
    );
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count(),
        "{md}"
    );
    assert_eq!(md.matches("```").count() % 2, 0, "{md}");
    assert!(!md.contains(" 1 changes"), "{md}");
    // Highlights before the sections: images per environment, then what a
    // deletion loses.
    let images = md
        .lines()
        .find(|l| l.starts_with("**Images.**"))
        .expect(&md);
    assert!(
        images.contains("**staging**: api: 1.4.2 → 2.4.0"),
        "{images}"
    );
    assert!(
        images.contains("`search` image ghcr.io/example/search:0.1.0"),
        "{images}"
    );
    assert!(
        md.contains("> [!CAUTION]\n> **Deletes** `Namespace worker-production` in production"),
        "{md}"
    );
    assert!(md.find("**Images.**") < md.find("<details><summary><b>"));
    let json = serde_json::to_value(report::json(&p)).unwrap();
    let api = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "Deployment" && c["app"] == "api" && c["env"] == "staging")
        .unwrap();
    assert_eq!(api["summary"], "image api: 1.4.2 → 2.4.0");
}

/// A plan too large for one comment, rendered as GitHub renders markdown
/// (comrak with GitHub's extensions): every part is within the limit, every
/// `<details>` and code block closes, and parts split between apps, so
/// that no app's section appears in two parts when it fits in one.
#[test]
fn a_plan_split_over_comments_renders_with_every_section_once() {
    let repo = Repo::with_app();
    let base = repo.commit("one app");
    for a in 0..12 {
        let app = format!("app{a:02}");
        repo.write(
            &format!("services/{app}/config.yaml"),
            &format!("image: ghcr.io/example/{app}\nenv:\n  A: \"1\"\n"),
        )
        .write(&format!("services/{app}/version"), "1.0.0\n")
        .write(&format!("services/{app}/prod/config.yaml"), "");
    }
    let head = repo.commit("twelve apps");
    let mut p = plan_of(&repo, &base, &head);
    p.base = "BASE".into();
    p.head = "HEAD".into();
    let limit = 10_000;
    let parts = report::markdown_parts(&p, "<!-- m -->", limit, 3);
    assert_eq!(parts.len(), 3);
    let mut sections = Vec::new();
    for body in &parts {
        assert!(body.len() <= limit, "{} > {limit}", body.len());
        let html = crate::gfm::to_html(body);
        assert_eq!(
            html.matches("<details>").count(),
            html.matches("</details>").count(),
            "{html}"
        );
        assert_eq!(html.matches("<pre").count(), html.matches("</pre>").count());
        sections.extend(
            html.lines()
                .filter_map(|l| l.strip_prefix("<details><summary><b>"))
                .map(|l| l.split(':').next().unwrap_or(l).to_string()),
        );
    }
    let mut unique = sections.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), sections.len(), "{sections:#?}");
    assert!(!parts.concat().contains("(continued)"));
    insta::assert_snapshot!(
        parts
            .join("\n<!-- next comment -->\n")
            .replace(kdeploy::plan::fingerprint::VERSION, "VERSION")
    );
}

/// An app too large for one comment is split between its resources, and
/// each piece's section says which piece it is.
#[test]
fn an_app_too_large_for_one_part_says_which_piece_each_section_is() {
    let repo = Repo::new();
    repo.write("kdeploy.yaml", "sources:\n  raw: [\"m/{env}/{app}\"]\n")
        .write(
            "m/prod/big/cm-000.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c-000}\n",
        );
    let base = repo.commit("one");
    for i in 1..80 {
        let data: String = (0..20)
            .map(|k| format!("  key{k}: \"value {i} {k}\"\n"))
            .collect();
        repo.write(
            &format!("m/prod/big/cm-{i:03}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c-{i:03}}}\ndata:\n{data}"
            ),
        );
    }
    let head = repo.commit("eighty");
    let p = plan_of(&repo, &base, &head);
    let parts = report::markdown_parts(&p, "<!-- m -->", 30_000, 3);
    assert!(parts.len() >= 2, "{}", parts.len());
    let n = parts.len();
    for (k, body) in parts.iter().enumerate() {
        let id = &p.fingerprints[&("prod".to_string(), "big".to_string())].id[..8];
        assert!(
            body.contains(&format!(
                "<b>prod</b> / <b>big</b>: 79 changes · plan <code>{id}</code> (part {}/{n} of this app)",
                k + 1
            )),
            "{body}"
        );
    }
}

/// Every resource of each release in `state`, by (env, app).
fn resources_by_release(
    state: &render::State,
) -> std::collections::BTreeMap<(String, String), Vec<(String, serde_json::Value)>> {
    state
        .releases
        .iter()
        .map(|r| {
            (
                (r.release.env.clone(), r.release.app.clone()),
                r.resources
                    .iter()
                    .map(|res| (res.id.to_string(), res.object.clone()))
                    .collect(),
            )
        })
        .collect()
}

/// After a chart change, the head reuses the base's output of the
/// templates that did not change, and gets exactly what rendering it in
/// full gives; a changed partial (which any template may include) reuses
/// nothing.
#[test]
fn a_chart_change_reuses_unchanged_templates_and_matches_a_full_render() {
    let repo = Repo::with_app();
    for (path, text) in render::chart::BUILTIN {
        repo.write(&format!("charts/service/{path}"), text);
    }
    repo.write("services/web/config.yaml", "image: x/web\nport: 9000\n")
        .write("services/web/version", "2.0.0\n")
        .write(
            "services/web/staging/config.yaml",
            "ingress:\n  enabled: true\n  host: web.example.com\n",
        );
    let base = repo.commit("base");
    let deployment = "charts/service/templates/deployment.yaml";
    let text = repo.read(deployment);
    assert!(
        text.contains("revisionHistoryLimit: 5"),
        "the chart changed"
    );
    repo.write(
        deployment,
        &text.replace("revisionHistoryLimit: 5", "revisionHistoryLimit: 3"),
    );
    let head = repo.commit("deployment template");
    let labels = "charts/service/templates/_labels.yaml";
    repo.write(labels, &format!("{}tier: web\n", repo.read(labels)));
    let partial = repo.commit("labels partial");

    let open = |rev: &str| Snapshot::open(repo.path(), &Revision::parse(Some(rev))).expect("opens");
    for (from, to, reuses) in [(&base, &head, true), (&head, &partial, false)] {
        let cmp = render::compare(&open(from), &open(to), &Filter::default()).expect("renders");
        assert_eq!(cmp.head.releases.len(), 3, "every release differs");
        if reuses {
            // Three releases, each with templates besides the Deployment's.
            assert!(cmp.reused_templates >= 6, "{}", cmp.reused_templates);
        } else {
            assert_eq!(cmp.reused_templates, 0);
        }
        let full = render::render(&open(to), &Filter::default()).expect("renders");
        assert_eq!(resources_by_release(&cmp.head), resources_by_release(&full));
        let full_base = render::render(&open(from), &Filter::default()).expect("renders");
        assert_eq!(
            resources_by_release(&cmp.base),
            resources_by_release(&full_base)
        );
    }
    let p = plan_of(&repo, &base, &head);
    assert_eq!(
        summary(&p),
        [
            "~ production apps/Deployment api-production/api",
            "~ staging apps/Deployment api-staging/api",
            "~ staging apps/Deployment web-staging/web",
        ]
    );
}

/// A reused template output is charged what it cost when it rendered: a
/// release whose changed template pushes it over `limits.templateSteps`
/// fails at the head as a full render of the head does.
#[test]
fn reused_template_output_still_counts_against_the_budget() {
    let repo = Repo::new();
    let items: Vec<String> = (0..600).map(|i| i.to_string()).collect();
    let loop_ = "{{#each values.items}}{{/each}}";
    repo.write("charts/c/Chart.yaml", "name: c\nversion: 1.0.0\n")
        .write(
            "charts/c/values.yaml",
            &format!("items: [{}]\n", items.join(",")),
        )
        .write(
            "charts/c/templates/a.yaml",
            &format!("{loop_}\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\n"),
        )
        .write(
            "charts/c/templates/b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .write(
            "kdeploy.yaml",
            "defaultChart: c\nlimits:\n  templateSteps: 1000\n",
        )
        .write("services/app/config.yaml", "")
        .write("services/app/version", "1\n")
        .write("services/app/prod/config.yaml", "");
    let base = repo.commit("base");
    repo.write(
        "charts/c/templates/b.yaml",
        &format!("{loop_}\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b}}\n"),
    );
    let head = repo.commit("head");
    let open = |rev: &str| Snapshot::open(repo.path(), &Revision::parse(Some(rev))).expect("opens");
    render::render(&open(&base), &Filter::default()).expect("the base is within its budget");
    let alone = render::render(&open(&head), &Filter::default())
        .expect_err("the head is over its budget")
        .to_string();
    let compared = render::compare(&open(&base), &open(&head), &Filter::default())
        .expect_err("the head is over its budget")
        .to_string();
    for text in [&alone, &compared] {
        assert!(text.contains("exceeds the limit of 1000 steps"), "{text}");
    }
    assert_eq!(alone, compared);
}

/// A plan of `apps` apps in `envs` environments with `per_app` changes
/// each, whose diffs are `diff_lines` long, with links, notes and a
/// warning on every tenth change: what a chart change does to a large repo.
fn large_plan(apps: usize, envs: usize, per_app: usize, diff_lines: usize) -> kdeploy::plan::Plan {
    use kdeploy::plan::{Change, Warning};
    use kdeploy::resource::{Origin, ResourceId};
    let mut changes = Vec::new();
    let mut dirs = std::collections::BTreeMap::new();
    for e in 0..envs {
        let env = format!("environment-with-a-long-name-{e}");
        for a in 0..apps {
            let app = format!("application-{a:04}-with-a-name-near-the-dns-label-limit-xxxxx");
            dirs.insert((env.clone(), app.clone()), format!("services/{app}/{env}"));
            for r in 0..per_app {
                let mut diff = String::from("--- base\n+++ head\n@@ -1,1 +1,1 @@\n");
                for l in 0..diff_lines {
                    diff.push_str(&format!(
                        "-  key{l}: \"old value ⟨{r}⟩ `tick` | pipe\"\n+  key{l}: new\n"
                    ));
                }
                changes.push(Change {
                    env: env.clone(),
                    app: app.clone(),
                    action: [Action::Added, Action::Changed, Action::Deleted][r % 3],
                    id: ResourceId {
                        group: "apps".into(),
                        kind: "Deployment".into(),
                        namespace: Some(format!("{app}-{e}")),
                        name: format!("{app}-{r}"),
                    },
                    diff,
                    origin: Origin {
                        env: env.clone(),
                        app: app.clone(),
                        file: "charts/service/templates/deployment.yaml".into(),
                        document: 0,
                        line: 1,
                    },
                    warnings: if r % 10 == 0 {
                        vec![Warning {
                            code: "immutable-field",
                            path: "/spec/selector".into(),
                            message: "spec.selector cannot change; the Deployment is replaced"
                                .into(),
                        }]
                    } else {
                        Vec::new()
                    },
                    summary: format!("image {app}: 1.{r}.0 → 2.{r}.0"),
                    after: (r % 3 != 2).then(|| format!("{r:032x}")),
                });
            }
        }
    }
    // Fingerprints too: each section's hidden line counts against the limit.
    let fingerprints = kdeploy::plan::fingerprint::of(&changes);
    // What a cluster showed of each change counts too: drift and refusals.
    let mut live = kdeploy::plan::live::Live::not_checked("x");
    live.not_checked = None;
    for (i, c) in changes.iter().enumerate() {
        live.findings.insert(
            (c.env.clone(), c.id.clone()),
            kdeploy::plan::live::Finding {
                drift: (0..(i % 4))
                    .map(|k| kdeploy::plan::live::Drift {
                        path: format!("spec.template.metadata.annotations.a{k}"),
                        live: "v".repeat(200),
                        planned: "w".repeat(200),
                        managers: vec!["kubectl-edit (Update)".into()],
                    })
                    .collect(),
                missing: i % 5 == 0,
                refused: (i % 7 == 0).then(|| {
                    format!(
                        "admission webhook \"deny.example\" denied the request: {}",
                        "r".repeat(500)
                    )
                }),
            },
        );
    }
    Plan {
        live,
        base: "0123456789abcdef".into(),
        head: "fedcba9876543210".into(),
        fingerprints,
        policy_errors: 0,
        changes,
        unchanged: 0,
        unchanged_releases: 0,
        hidden_resources: 0,
        ignored_fields: 0,
        notes: (0..50).map(|i| format!("note {i}: {}", "n".repeat(300))).collect(),
        dirs,
        browse_url: Some("https://github.com/an-organisation/a-config-repository/blob/0123456789abcdef0123456789abcdef01234567".into()),
    }
}

/// The (environment, app) pairs a comment's part 1 names: its summary
/// table, or the list of every changed release (ranges expanded).
fn named_releases(part: &str) -> std::collections::BTreeSet<(String, String)> {
    let unescape = |s: &str| s.replace('\\', "");
    let mut out = std::collections::BTreeSet::new();
    let listed = part.contains("changed releases (environment: changes per app)");
    for line in part.lines() {
        if listed {
            let Some(rest) = line.strip_prefix("- **") else {
                continue;
            };
            let Some((envs, groups)) = rest.split_once("**: ") else {
                continue;
            };
            for env in unescape(envs).split(", ") {
                for group in unescape(groups).split("; ") {
                    let names = group.split_once(": ").map_or("", |(_, n)| n);
                    for name in names.split(", ") {
                        for app in expand(name) {
                            out.insert((env.to_string(), app));
                        }
                    }
                }
            }
        } else if let Some(row) = line.strip_prefix("| ")
            && !row.starts_with("environment | add")
            && !row.starts_with("---")
        {
            let cells: Vec<&str> = row.trim_end_matches(" |").split(" | ").collect();
            if let [env, _, _, _, apps] = cells[..] {
                for app in apps.split(", ") {
                    out.insert((unescape(env), unescape(app)));
                }
            }
        }
    }
    out
}

/// `a-0001-x…a-0003-x` as the three names; any other name as itself.
fn expand(name: &str) -> Vec<String> {
    let Some((first, last)) = name.split_once('…') else {
        return vec![name.to_string()];
    };
    let digits = |n: &str| {
        let end = n.rfind(|c: char| c.is_ascii_digit()).map_or(0, |i| i + 1);
        let start = n[..end]
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        (start, end)
    };
    let (s, e) = digits(first);
    let (from, to): (u64, u64) = (
        first[s..e].parse().expect("number"),
        last[digits(last).0..digits(last).1]
            .parse()
            .expect("number"),
    );
    (from..=to)
        .map(|n| format!("{}{:0w$}{}", &first[..s], n, &first[e..], w = e - s))
        .collect()
}

#[test]
fn every_comment_part_fits_githubs_limit_at_any_size() {
    for (apps, envs, per_app, lines) in [
        (1, 1, 1, 1),
        (1, 1, 1, 20_000),
        (1_000, 1, 1, 2),
        (500, 2, 10, 3),
        (1_000, 5, 10, 1),
    ] {
        let plan = large_plan(apps, envs, per_app, lines);
        for max_parts in [1, 3, 10] {
            let parts =
                report::markdown_parts(&plan, "<!-- m -->", report::COMMENT_LIMIT, max_parts);
            assert!(!parts.is_empty() && parts.len() <= max_parts);
            for (n, p) in parts.iter().enumerate() {
                let chars = p.chars().count();
                assert!(
                    chars <= report::COMMENT_LIMIT,
                    "{apps} apps × {envs} envs × {per_app}: part {} of {max_parts} has {chars} characters",
                    n + 1
                );
                assert!(p.starts_with("<!-- m -->\n"), "part {}", n + 1);
                if n == 0 {
                    // Part 1 names every changed (environment, app).
                    let named = named_releases(p);
                    let all: std::collections::BTreeSet<(String, String)> = plan
                        .changes
                        .iter()
                        .map(|c| (c.env.clone(), c.app.clone()))
                        .collect();
                    let missing: Vec<_> = all.difference(&named).take(3).collect();
                    assert!(
                        missing.is_empty() && named.len() == all.len(),
                        "{apps} apps × {envs} envs, {max_parts} parts: part 1 names {} of {} releases; missing {missing:?}",
                        named.len(),
                        all.len()
                    );
                }
                if max_parts == 3 {
                    // Valid as GitHub renders it: every fold and block closed.
                    let html = crate::gfm::to_html(p);
                    assert_eq!(
                        html.matches("<details>").count(),
                        html.matches("</details>").count(),
                        "part {}",
                        n + 1
                    );
                    assert_eq!(html.matches("<pre").count(), html.matches("</pre>").count());
                }
            }
        }
    }
}

/// A repository deployed by another tool (raw manifests, no services/):
/// the pull request that adopts kdeploy adds kdeploy.yaml, and its plan
/// reads the base with that file, deleting nothing.
#[test]
fn the_adoption_pull_request_of_a_repo_without_services_plans() {
    let repo = Repo::new();
    repo.write(
        "deploy/production/shop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\n  namespace: shop\ndata:\n  a: b\n",
    );
    let base = repo.commit("deployed by hand");
    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw: [\"deploy/{env}/{app}\"]\n",
    );
    let head = repo.commit("adopt kdeploy");
    let run = repo.kdeploy(&["plan", "--base", &base, "--head", &head]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("has no kdeploy.yaml: it was rendered with the head's"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    // `services: null` renders to disk too.
    let run = repo.kdeploy(&["render"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        repo.path().join("_gen/production/shop").is_dir(),
        "{}",
        run.stdout
    );
}

/// `kdeploy plan` as a terminal shows it, held still (commit ids normalised).
#[test]
fn the_text_plan_reads_the_same_tomorrow() {
    let repo = Repo::with_app();
    let base = repo.commit("base");
    repo.write("services/api/version", "1.1.0\n")
        .write("services/api/production/config.yaml", "replicas: 5\n");
    let head = repo.commit("bump and scale");
    let run = repo.kdeploy(&["plan", "--base", &base, "--head", &head]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run
        .stdout
        .replace(&base[..12], "BASE")
        .replace(&head[..12], "HEAD");
    insta::assert_snapshot!("plan_text", text);
}

/// Policy checks run in every plan on what it creates or changes: the
/// finding shows in text and JSON with its id, reason and fix; the runner
/// (KDEPLOY_POLICY) makes one an error, which fails the plan, or turns it
/// off; a bad setting is named.
#[test]
fn policy_checks_show_in_every_plan_and_the_runner_decides_what_fails() {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw: [\"deploy/{env}/{app}\"]\n",
    );
    repo.write("deploy/prod/tools/.keep", "");
    let base = repo.commit("empty");
    repo.write(
        "deploy/prod/tools/debug.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: debug\n  namespace: tools\nspec:\n  selector: {matchLabels: {app: debug}}\n  template:\n    metadata: {labels: {app: debug}}\n    spec:\n      hostPID: true\n      containers: [{name: shell, image: \"busybox\"}]\n",
    );
    let head = repo.commit("a debug pod");
    let run = |env: &[(&str, &str)], format: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"));
        c.args(["plan", "--base", &base, "--head", &head, "--format", format])
            .current_dir(repo.path())
            .env("NO_COLOR", "1")
            .env_remove("KDEPLOY_POLICY");
        for (k, v) in env {
            c.env(k, v);
        }
        crate::util::Run::from(c.output().expect("runs"))
    };
    // host-namespace is an error by default: the plan fails.
    let text = run(&[], "text");
    assert_eq!(text.code, 1, "{}{}", text.stdout, text.stderr);
    assert!(text.stdout.contains("policy/latest-tag"), "{}", text.stdout);
    assert!(
        text.stdout.contains("image `busybox` is not pinned"),
        "{}",
        text.stdout
    );
    assert!(
        text.stderr.contains("1 policy check(s) at severity error"),
        "{}",
        text.stderr
    );
    let json = run(&[("KDEPLOY_POLICY", "host-namespace=warning")], "json");
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let codes: Vec<&str> = v["changes"][0]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    for code in [
        "policy/host-namespace",
        "policy/latest-tag",
        "policy/no-resources",
        "policy/no-readiness-probe",
        "policy/run-as-root",
    ] {
        assert!(codes.contains(&code), "{code} in {codes:?}");
    }
    assert_eq!(v["summary"]["policy_errors"], 0);
    let off = run(
        &[("KDEPLOY_POLICY", "host-namespace=off,latest-tag=off")],
        "json",
    );
    assert!(!off.stdout.contains("policy/latest-tag"), "{}", off.stdout);
    let bad = run(&[("KDEPLOY_POLICY", "latest=error")], "text");
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("`latest` is not a check; checks: latest-tag"),
        "{}",
        bad.stderr
    );
}
