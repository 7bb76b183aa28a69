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
    let repo = Repo::with_app();
    let base = repo.commit("base");
    repo.write(
        "kdeploy.yaml",
        "plan:\n  ignoreResources: ['policy:PodDisruptionBudget:*:*']\n  ignoreFields:\n    - path: /spec/replicas\n      kinds: [Deployment]\n",
    )
    .write("services/api/production/config.yaml", "replicas: 9\npdb:\n  maxUnavailable: 2\n");
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
