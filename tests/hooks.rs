//! Deploy hooks against the simulator (whose Job controller runs Jobs to
//! completion or failure): a pre-deploy migration runs fresh before the
//! workloads change, only when its release changes; a failed one stops the
//! deploy before the workloads; a failed post-deploy hook fails the deploy.

use std::time::Duration;

use kdeploy::config::Filter;

use crate::apply::deploy_head;
use crate::k8s_sim::{Behaviour, Sim};
use crate::order::waiting;
use crate::util::Repo;

fn job(name: &str, hook: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: shop
  annotations:
    kdeploy.io/hook: {hook}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: {name}
          image: ghcr.io/acme/shop:2.0.0
"
    )
}

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {{app: shop}}
  template:
    metadata:
      labels: {{app: shop}}
    spec:
      containers:
        - name: shop
          image: ghcr.io/acme/shop:{image}
"
    )
}

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write(
        "manifests/staging/shop/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    )
    .write(
        "manifests/staging/shop/migrate.yaml",
        &job("migrate", "pre-deploy"),
    )
    .write(
        "manifests/staging/shop/deployment.yaml",
        &deployment("2.0.0"),
    );
    repo.commit("shop");
    repo
}

#[tokio::test]
async fn a_pre_deploy_hook_runs_fresh_before_the_workloads_and_only_on_change() {
    let sim = Sim::start().await;
    sim.run_controllers(Duration::from_millis(20));
    let client = sim.client().await;
    let repo = repo();
    let all = Filter::default();

    let (reports, out) = deploy_head(&client, &repo, &all, &waiting()).await;
    let r = &reports[0];
    assert!(r.succeeded(), "{out}");
    assert!(
        r.hooks
            .iter()
            .any(|h| h.starts_with("pre-deploy batch/Job shop/migrate: complete")),
        "{:?}",
        r.hooks
    );
    assert!(
        out.contains("hook     pre-deploy batch/Job shop/migrate: complete"),
        "{out}"
    );
    let requests = sim.requests();
    let at = |method: &str, path: &str| {
        requests
            .iter()
            .position(|q| q.method == method && q.path.contains(path))
            .unwrap_or_else(|| panic!("no {method} {path}: {out}"))
    };
    assert!(
        at("PATCH", "/jobs/migrate") < at("PATCH", "/deployments/shop"),
        "{out}"
    );
    // The hook is recorded (so a change to it alone runs it) but is not a resource to prune.
    let record = sim
        .get("", "ConfigMap", "kdeploy-system", "kdeploy-staging")
        .expect("record");
    assert!(
        record["data"]["resources"]
            .as_str()
            .unwrap_or("")
            .contains(r#""hook":true"#),
        "{record}"
    );

    // Nothing changed: the hook does not run.
    sim.clear_requests();
    let (reports, out) = deploy_head(&client, &repo, &all, &waiting()).await;
    assert!(reports[0].succeeded(), "{out}");
    assert!(reports[0].hooks.is_empty(), "{:?}", reports[0].hooks);
    assert!(
        !sim.requests()
            .iter()
            .any(|q| q.path.contains("/jobs/migrate") && q.method != "GET")
    );

    // A new image: the previous Job is deleted and the hook runs again.
    repo.write(
        "manifests/staging/shop/deployment.yaml",
        &deployment("2.1.0"),
    );
    repo.commit("2.1.0");
    sim.clear_requests();
    let (reports, out) = deploy_head(&client, &repo, &all, &waiting()).await;
    assert!(reports[0].succeeded(), "{out}");
    assert_eq!(reports[0].hooks.len(), 1, "{out}");
    let requests = sim.requests();
    let delete = requests
        .iter()
        .position(|q| q.method == "DELETE" && q.path.contains("/jobs/migrate"));
    let create = requests
        .iter()
        .position(|q| q.method == "PATCH" && q.path.contains("/jobs/migrate"));
    assert!(delete.is_some() && delete < create, "{out}");

    // Removing the hook from the config never deletes its Job.
    repo.remove("manifests/staging/shop/migrate.yaml");
    repo.commit("no hook");
    let (reports, out) = deploy_head(&client, &repo, &all, &waiting()).await;
    assert!(reports[0].succeeded(), "{out}");
    assert!(
        !reports[0].deleted.iter().any(|d| d.contains("migrate")),
        "{out}"
    );
}

#[tokio::test]
async fn a_failed_pre_deploy_hook_stops_the_deploy_before_the_workloads() {
    let sim = Sim::start().await;
    sim.behave("Job", "shop", "migrate", Behaviour::JobFails);
    sim.run_controllers(Duration::from_millis(20));
    let client = sim.client().await;
    let repo = repo();
    let (reports, out) = deploy_head(&client, &repo, &Filter::default(), &waiting()).await;
    let r = &reports[0];
    assert!(!r.succeeded(), "{out}");
    let failure = r
        .failed
        .iter()
        .find(|f| f.id == "batch/Job shop/migrate")
        .expect("the hook failed");
    assert!(
        failure
            .source
            .starts_with("pre-deploy hook (manifests/staging/shop/migrate.yaml)"),
        "{failure:?}"
    );
    assert!(
        failure.error.contains("the workloads were not changed"),
        "{}",
        failure.error
    );
    assert!(
        r.not_attempted
            .contains(&"apps/Deployment shop/shop".to_string()),
        "{out}"
    );
    assert!(sim.get("apps", "Deployment", "shop", "shop").is_none());
    assert!(!r.record_written);
}

#[tokio::test]
async fn a_failed_post_deploy_hook_fails_the_deploy() {
    let sim = Sim::start().await;
    sim.behave("Job", "shop", "smoke", Behaviour::JobFails);
    sim.run_controllers(Duration::from_millis(20));
    let client = sim.client().await;
    let repo = repo();
    repo.write(
        "manifests/staging/shop/smoke.yaml",
        &job("smoke", "post-deploy"),
    );
    repo.commit("smoke test");
    let (reports, out) = deploy_head(&client, &repo, &Filter::default(), &waiting()).await;
    let r = &reports[0];
    assert!(!r.succeeded(), "{out}");
    assert!(
        r.failed
            .iter()
            .any(|f| f.id == "batch/Job shop/smoke" && f.source.starts_with("post-deploy hook")),
        "{out}"
    );
    // It ran after the workloads were written and ready.
    assert!(sim.get("apps", "Deployment", "shop", "shop").is_some());
    assert!(
        r.hooks
            .iter()
            .any(|h| h.starts_with("pre-deploy batch/Job shop/migrate: complete")),
        "{:?}",
        r.hooks
    );
    assert!(!r.record_written);

    // A Pod as a hook is refused before anything is applied.
    repo.write(
        "manifests/staging/shop/smoke.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: smoke\n  namespace: shop\n  annotations:\n    kdeploy.io/hook: post-deploy\nspec:\n  containers:\n    - name: s\n      image: busybox\n",
    );
    repo.commit("pod hook");
    let run = repo.kdeploy(&["validate"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("Pod shop/smoke is a deploy hook, but hooks must be Jobs"),
        "{}",
        run.stderr
    );
}

/// An Argo CD app as written for Argo CD: a `PreSync` Job with only
/// `generateName`, a `PostSync` one, a `SyncFail` one, and sync waves. The
/// PreSync Job runs before the workloads under a stable name, the wave -1
/// ConfigMap is written before wave 0, and the SyncFail hook is not
/// deployed (the plan says so).
#[tokio::test]
async fn argo_cd_hooks_and_sync_waves_keep_their_meaning() {
    let sim = Sim::start().await;
    sim.run_controllers(Duration::from_millis(20));
    let client = sim.client().await;
    let argo_job = |generate: &str, hook: &str| {
        job("x", "pre-deploy")
            .replace("  name: x\n", &format!("  generateName: {generate}\n"))
            .replace(
                "kdeploy.io/hook: pre-deploy",
                &format!("argocd.argoproj.io/hook: {hook}"),
            )
    };
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write(
        "manifests/staging/shop/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    )
    .write(
        "manifests/staging/shop/migrate.yaml",
        &argo_job("migrate-", "PreSync"),
    )
    .write(
        "manifests/staging/shop/smoke.yaml",
        &argo_job("smoke-", "PostSync"),
    )
    .write(
        "manifests/staging/shop/notify.yaml",
        &argo_job("notify-", "SyncFail"),
    )
    .write(
        "manifests/staging/shop/settings.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: settings\n  namespace: shop\n  annotations:\n    argocd.argoproj.io/sync-wave: \"-1\"\nstringData:\n  a: b\n",
    )
    .write(
        "manifests/staging/shop/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: shop\n  namespace: shop\n  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  selector: {app: shop}\n  ports: [{port: 80}]\n",
    )
    .write(
        "manifests/staging/shop/deployment.yaml",
        &deployment("2.0.0"),
    );
    repo.commit("argo app");
    let all = Filter::default();
    let (reports, out) = deploy_head(&client, &repo, &all, &waiting()).await;
    let r = &reports[0];
    assert!(r.succeeded(), "{out}");
    let migrate = r
        .hooks
        .iter()
        .find(|h| h.starts_with("pre-deploy batch/Job shop/migrate-"))
        .unwrap_or_else(|| panic!("{:?}", r.hooks));
    assert!(
        r.hooks
            .iter()
            .any(|h| h.starts_with("post-deploy batch/Job shop/smoke-")),
        "{:?}",
        r.hooks
    );
    assert!(!out.contains("notify-"), "{out}");
    let requests = sim.requests();
    let at = |method: &str, path: &str| {
        requests
            .iter()
            .position(|q| q.method == method && q.path.contains(path))
            .unwrap_or_else(|| panic!("no {method} {path}: {out}"))
    };
    assert!(
        at("PATCH", "/jobs/migrate-") < at("PATCH", "/deployments/shop"),
        "{out}"
    );
    // Waves before kinds: the wave 1 Service after the wave 0 Deployment,
    // although kdeploy's kind order puts Services first.
    assert!(
        at("PATCH", "/secrets/settings") < at("PATCH", "/deployments/shop"),
        "{out}"
    );
    assert!(
        at("PATCH", "/deployments/shop") < at("PATCH", "/services/shop"),
        "{out}"
    );
    // The same name on the next render: a change re-runs the same Job.
    let state = crate::apply::state(&repo, "HEAD");
    let names: Vec<&str> = state
        .releases
        .iter()
        .flat_map(|r| r.resources.iter())
        .map(|r| r.id.name.as_str())
        .filter(|n| n.starts_with("migrate-"))
        .collect();
    assert_eq!(names.len(), 1);
    assert!(migrate.contains(names[0]), "{migrate} vs {names:?}");
    assert_eq!(names[0].len(), "migrate-".len() + 5);
}
