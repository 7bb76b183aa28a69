//! Change groups (`kdeploy.io/group`, `kdeploy.io/apply-after`,
//! `kdeploy.io/wait`): the plan shows the stages, cycles and unknown groups
//! are errors before anything is applied, and against the simulator a
//! migration Job runs to completion before the Deployment that waits for
//! it is written (and a failed one stops it).

use std::time::Duration;

use kdeploy::config::Filter;

use crate::apply::{deploy_head, fast};
use crate::k8s_sim::{Behaviour, Sim};
use crate::util::Repo;

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  namespace: shop
  annotations:
    kdeploy.io/group: db-migrations
    kdeploy.io/wait: \"true\"
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: ghcr.io/acme/shop:2.0.0
          args: [migrate]
";

fn deployment(after: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: shop
  annotations:
    kdeploy.io/apply-after: {after}
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
          image: ghcr.io/acme/shop:2.0.0
"
    )
}

fn repo(after: &str) -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write(
        "manifests/staging/shop/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    )
    .write("manifests/staging/shop/job.yaml", JOB)
    .write("manifests/staging/shop/deployment.yaml", &deployment(after));
    repo.commit("shop");
    repo
}

#[test]
fn the_plan_shows_the_stages_and_refuses_cycles_and_unknown_groups() {
    let ok = repo("db-migrations").kdeploy(&["validate"]);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);

    let unknown = repo("db-migration");
    let run = unknown.kdeploy(&["validate"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("manifests/staging/shop/deployment.yaml: staging: apps/Deployment shop/shop waits for group `db-migration` (kdeploy.io/apply-after), but no resource of this environment is in it (kdeploy.io/group: db-migration); groups: db-migrations"),
        "{}",
        run.stderr
    );

    let cyclic = repo("db-migrations");
    cyclic.write(
        "manifests/staging/shop/job.yaml",
        &JOB.replace(
            "    kdeploy.io/wait: \"true\"\n",
            "    kdeploy.io/wait: \"true\"\n    kdeploy.io/apply-after: app\n",
        ),
    );
    cyclic.write(
        "manifests/staging/shop/deployment.yaml",
        &deployment("db-migrations").replace(
            "  annotations:\n",
            "  annotations:\n    kdeploy.io/group: app\n",
        ),
    );
    let base = cyclic.git(&["rev-parse", "HEAD"]).trim().to_string();
    cyclic.commit("cycle");
    let run = cyclic.kdeploy(&["plan", "--base", &base, "--head", "HEAD"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("the groups wait for each other in a cycle: app → db-migrations → app"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plan_names_the_stage_order() {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    );
    let base = repo.commit("empty");
    repo.write(
        "manifests/staging/shop/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    )
    .write("manifests/staging/shop/job.yaml", JOB)
    .write(
        "manifests/staging/shop/deployment.yaml",
        &deployment("db-migrations"),
    );
    repo.commit("shop");
    let run = repo.kdeploy(&["plan", "--base", &base, "--head", "HEAD"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("staging applies in stages (kdeploy.io/group, kdeploy.io/apply-after): db-migrations → (ungrouped)"),
        "{}",
        run.stdout
    );
}

/// Apply options that wait (briefly) for readiness, as hooks and
/// `kdeploy.io/wait` stages do.
pub fn waiting() -> kdeploy::apply::Options {
    kdeploy::apply::Options {
        wait: Some(kdeploy::wait::Options {
            timeout: Duration::from_secs(20),
            failure_threshold: 2,
            pod_check: Duration::from_millis(40),
            ..Default::default()
        }),
        ..fast()
    }
}

#[tokio::test]
async fn the_migration_completes_before_the_deployment_is_written() {
    let sim = Sim::start().await;
    sim.run_controllers(Duration::from_millis(20));
    let client = sim.client().await;
    let repo = repo("db-migrations");
    let (reports, out) = deploy_head(&client, &repo, &Filter::default(), &waiting()).await;
    assert!(reports[0].succeeded(), "{out}");
    // The Job was complete when the Deployment was first written.
    let requests = sim.requests();
    let written = |path: &str| {
        requests
            .iter()
            .position(|r| r.method == "PATCH" && r.path.contains(path))
            .unwrap_or_else(|| panic!("{path} not written: {out}"))
    };
    let job = written("/jobs/migrate");
    let deploy = written("/deployments/shop");
    assert!(job < deploy, "{out}");
    assert!(
        requests[job..deploy]
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/jobs")),
        "the Job was watched before the Deployment was written: {out}"
    );
    assert!(
        out.contains("batch/Job shop/migrate: complete") || out.contains("batch/Job shop/migrate"),
        "{out}"
    );
}

#[tokio::test]
async fn a_failed_migration_stops_the_stages_after_it() {
    let sim = Sim::start().await;
    sim.behave("Job", "shop", "migrate", Behaviour::JobFails);
    sim.run_controllers(Duration::from_millis(20));
    let client = sim.client().await;
    let repo = repo("db-migrations");
    let (reports, out) = deploy_head(&client, &repo, &Filter::default(), &waiting()).await;
    let r = &reports[0];
    assert!(!r.succeeded(), "{out}");
    assert!(
        r.failed.iter().any(|f| f.id == "batch/Job shop/migrate"
            && f.error.contains("the stages after it were not applied")),
        "{:?}",
        r.failed
    );
    assert!(
        r.not_attempted
            .contains(&"apps/Deployment shop/shop".to_string()),
        "{:?}",
        r.not_attempted
    );
    assert!(sim.get("apps", "Deployment", "shop", "shop").is_none());
    assert!(!r.record_written);
}
