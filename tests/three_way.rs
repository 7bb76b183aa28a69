//! Three-way plans against the Kubernetes simulator: beside the git change,
//! live drift the merge sets back (attributed to its field manager, never a
//! field kdeploy does not set), resources missing from the cluster, and
//! what the API server refuses (an admission webhook's denial), with
//! nothing written; without access, the plan says drift was not checked.

use std::sync::Arc;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::k8s_sim::{Admit, Sim, Webhook};
use crate::util::{Repo, Run};

async fn kdeploy(repo: &Repo, args: &[&str]) -> Run {
    let path = repo.path().to_path_buf();
    let all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::util::kdeploy(&path, &refs)
    })
    .await
    .expect("joins")
}

/// `kdeploy plan --base --head --env staging --cluster --kubeconfig kc`
/// and `extra` arguments.
async fn plan_staging(repo: &Repo, base: &str, head: &str, kc: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "plan",
        "--base",
        base,
        "--head",
        head,
        "--env",
        "staging",
        "--cluster",
        "--kubeconfig",
        kc,
    ];
    args.extend_from_slice(extra);
    kdeploy(repo, &args).await
}

fn resource(group: &str, kind: &str, plural: &str) -> kube::discovery::ApiResource {
    let api_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    kube::discovery::ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// A forced server-side apply by `manager`, as `kubectl apply
/// --server-side --force-conflicts` or a controller would make it.
async fn apply_as(client: &kube::Client, manager: &str, patch: Value) {
    let ar = resource("apps", "Deployment", "deployments");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "api-staging", &ar);
    api.patch(
        "api",
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_with_cluster_access_shows_drift_missing_resources_and_refusals() {
    let sim = Sim::start().await;
    let (dir, kc) = sim.kubeconfig_file();
    let repo = Repo::with_app();
    repo.write("services/api/staging/config.yaml", "env: {MODE: a}\n");
    repo.commit("apps");
    let deploy = kdeploy(&repo, &["apply", "--env", "staging", "--kubeconfig", &kc]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    let base = repo.git(&["rev-parse", "HEAD"]).trim().to_string();

    // Live changes: someone scales by hand; a controller annotates the
    // Deployment (a field kdeploy does not set); someone deletes the
    // ConfigMap; a webhook refuses Service port 81.
    let client = sim.client().await;
    apply_as(
        &client,
        "kubectl",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"replicas": 7}}),
    )
    .await;
    apply_as(
        &client,
        "kube-controller-manager",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "annotations": {"deployment.kubernetes.io/revision": "4"}}}),
    )
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "api-staging");
    cms.delete("api-env", &Default::default())
        .await
        .expect("deleted");
    sim.webhook(Webhook {
        name: "ports.policy.example".into(),
        kind: "Service".into(),
        admit: Admit::Validate(Arc::new(|svc: &Value| {
            svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["port"] == 81)
                .then(|| "port 81 is reserved for the mesh".to_string())
        })),
    });

    // The pull request: a new version, a new env value, a new port.
    repo.write("services/api/version", "2.0.0\n").write(
        "services/api/staging/config.yaml",
        "env: {MODE: b}\nservicePort: 81\n",
    );
    let head = repo.commit("api 2.0.0 on port 81");
    let before = sim.requests().len();
    let plan = plan_staging(&repo, &base, &head, &kc, &[]).await;
    let out = &plan.stdout;
    assert_eq!(
        plan.code, 1,
        "a refusal fails the plan\n{out}\n{}",
        plan.stderr
    );
    assert!(
        plan.stderr
            .contains("the API server refuses 1 planned change(s)"),
        "{}",
        plan.stderr
    );
    assert!(
        out.contains(
            "live drift this merge sets back: spec.replicas: 7 → 2 (set by kubectl (Apply))"
        ),
        "{out}"
    );
    assert!(
        out.contains("live: missing from the cluster: this merge creates it again"),
        "{out}"
    );
    assert!(
        out.contains("refused by the API server: admission webhook \"ports.policy.example\" denied the request: port 81 is reserved for the mesh"),
        "{out}"
    );
    // The git change is not drift; a field kdeploy does not set never is.
    assert!(!out.contains("deployment.kubernetes.io/revision"), "{out}");
    assert!(
        !out.contains("drift this merge sets back: spec.template"),
        "{out}"
    );
    assert!(
        out.contains("Checked against the cluster: staging (context (current)): 1 live field in 1 resource this merge sets back, 1 resource missing from the cluster, 1 change the API server refuses."),
        "{out}"
    );
    // Reads and dry runs only: the cluster is as it was.
    let writes: Vec<_> = sim.requests()[before..]
        .iter()
        .filter(|r| !matches!(r.method.as_str(), "GET"))
        .filter(|r| !r.query.contains("dryRun=All"))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let live = sim
        .get("apps", "Deployment", "api-staging", "api")
        .expect("deployment");
    assert_eq!(live["spec"]["replicas"], 7);
    assert!(sim.get("", "ConfigMap", "api-staging", "api-env").is_none());

    // JSON and markdown carry the same three categories.
    let json_run = plan_staging(&repo, &base, &head, &kc, &["--format", "json"]).await;
    let j: Value = serde_json::from_str(&json_run.stdout).expect("json");
    assert_eq!(j["schema"], 2);
    assert_eq!(j["summary"]["refused"], 1);
    assert_eq!(j["summary"]["drift_fields"], 1);
    assert_eq!(j["summary"]["missing"], 1);
    assert_eq!(j["live"]["environments"]["staging"]["context"], "(current)");
    let deployment = j["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(deployment["live"]["drift"][0]["path"], "spec.replicas");
    assert_eq!(
        deployment["live"]["drift"][0]["managers"][0],
        "kubectl (Apply)"
    );
    let md = plan_staging(&repo, &base, &head, &kc, &["--format", "markdown"]).await;
    assert!(
        md.stdout.contains("**Live drift this merge sets back**"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains("**The API server refuses 1 planned change.**"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("#### ~ Service `api-staging/api` ⛔"),
        "{}",
        md.stdout
    );

    // Read-only credentials: RBAC refuses the Deployment's dry run. That is
    // no refusal of the change; drift is still read from the live object.
    sim.fault(crate::k8s_sim::Fault {
        method: Some("PATCH"),
        path: "/deployments/".into(),
        status: 403,
        times: 100,
    });
    let ro = plan_staging(&repo, &base, &head, &kc, &[]).await;
    sim.clear_faults();
    assert!(
        ro.stdout.contains(
            "live drift this merge sets back: spec.replicas: 7 → 2 (set by kubectl (Apply))"
        ),
        "{}",
        ro.stdout
    );
    assert!(
        ro.stdout.contains(
            "1 resource(s) not dry-run: the plan's credentials may not patch them (read-only)"
        ),
        "{}",
        ro.stdout
    );
    assert!(
        ro.stdout.contains("1 change the API server refuses"),
        "{}",
        ro.stdout
    );

    // Without access the plan says so; an unreachable cluster is named,
    // and the plan still stands.
    let blind = kdeploy(
        &repo,
        &["plan", "--base", &base, "--head", &head, "--env", "staging"],
    )
    .await;
    assert_eq!(blind.code, 0, "{}", blind.stderr);
    assert!(
        blind
            .stdout
            .contains("Live drift and API server refusals not checked: not asked for this plan"),
        "{}",
        blind.stdout
    );
    let bad = dir.path().join("down");
    std::fs::write(
        &bad,
        sim.kubeconfig().replace(&sim.url, "http://127.0.0.1:9"),
    )
    .expect("write");
    let down = plan_staging(&repo, &base, &head, &bad.display().to_string(), &[]).await;
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert!(
        down.stdout.contains(
            "Checked against the cluster: staging not checked (cannot reach the Kubernetes API"
        ),
        "{}",
        down.stdout
    );
}

/// Every deploy states its fidelity: a mutating webhook that pins images
/// by digest makes the Deployment a mismatch, named with both values; the
/// other resources are exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_reports_how_exactly_the_cluster_stored_what_was_sent() {
    let sim = Sim::start().await;
    let (_dir, kc) = sim.kubeconfig_file();
    sim.webhook(Webhook {
        name: "digests.example".into(),
        kind: "Deployment".into(),
        admit: Admit::Mutate(Arc::new(|d: &mut Value| {
            if let Some(cs) = d["spec"]["template"]["spec"]["containers"].as_array_mut() {
                for c in cs {
                    if let Some(image) = c["image"].as_str().filter(|i| !i.contains('@')) {
                        c["image"] = json!(format!("{image}@sha256:{}", "ab".repeat(32)));
                    }
                }
            }
        })),
    });
    let repo = Repo::with_app();
    repo.commit("apps");
    let deploy = kdeploy(&repo, &["apply", "--env", "staging", "--kubeconfig", &kc]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    let out = &deploy.stdout;
    let applied = out.lines().filter(|l| l.starts_with("  applied  ")).count();
    assert!(applied >= 4, "{out}");
    assert!(
        out.contains(&format!(
            "staging: {} of {applied} resources exactly as planned",
            applied - 1
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  not as planned apps/Deployment api-staging/api: spec.template.spec.containers[0].image: sent ghcr.io/example/api:1.0.0, stored ghcr.io/example/api:1.0.0@sha256:{}",
            "ab".repeat(32)
        )),
        "{out}"
    );
}

/// The action with `plan-cluster`: a pull request's sticky comment shows
/// the live drift its merge sets back, by whom; a fork's pull request is
/// never given cluster access, and its plan says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_comments_live_drift_and_never_reads_the_cluster_for_a_fork() {
    use crate::action::{Job, output, pr_payload, push_payload};
    let job = Job::new().await;
    let sim = crate::action::cluster().await;
    let before = job.base();
    job.origin.write("services/web/version", "1.2.0\n");
    let after = job.origin.commit("bump web");
    let deploy = job
        .deploy_push(&sim, &push_payload(Some(&before), &after), &[])
        .await;
    assert_eq!(deploy.code, 0, "{}", deploy.log);
    let client = sim.client().await;
    let ar = resource("apps", "Deployment", "deployments");
    let api: Api<DynamicObject> = Api::namespaced_with(client, "web-staging", &ar);
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    api.patch(
        "web",
        &PatchParams::apply("kubectl-scale").force(),
        &Patch::Apply(&scale),
    )
    .await
    .expect("scaled");

    let kubeconfig = sim.kubeconfig();
    let inputs = [
        ("INPUT_KUBECONFIG", kubeconfig.as_str()),
        ("INPUT_PLAN-CLUSTER", "true"),
        ("INPUT_ENVIRONMENTS", "staging"),
    ];
    let base = job.base();
    let head = job.pr_commit(
        |r| {
            r.write("services/web/version", "1.3.0\n");
        },
        "web 1.3.0",
    );
    let before_requests = sim.requests().len();
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 7, &base, &head, false),
            "pr",
            &inputs,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(7);
    let body = &comments.last().expect("a comment").1;
    assert!(
        body.contains("**Live drift this merge sets back**"),
        "{body}"
    );
    assert!(
        body.contains("spec.replicas: 5 → 2 (set by kubectl-scale (Apply))"),
        "{body}"
    );
    assert!(
        body.contains("_Checked against the cluster: staging"),
        "{body}"
    );
    assert_eq!(output(&run.outputs, "error"), None);
    let writes = sim.requests()[before_requests..]
        .iter()
        .filter(|r| r.method != "GET" && !r.query.contains("dryRun=All"))
        .count();
    assert_eq!(writes, 0, "a plan writes nothing");

    // A fork's pull request: no request reaches the cluster.
    let before_requests = sim.requests().len();
    let fork = job
        .run(
            "pull_request",
            &pr_payload("opened", 8, &base, &head, true),
            "pr",
            &inputs,
        )
        .await;
    assert_eq!(fork.code, 0, "{}", fork.log);
    assert_eq!(
        sim.requests().len(),
        before_requests,
        "the cluster was read"
    );
    assert!(
        fork.summary
            .contains("not checked: a fork's pull request gets no cluster access"),
        "{}",
        fork.summary
    );
}

/// An immutable field is refused before merge, with the server's message;
/// a resource that asks to be replaced is not (the deploy re-creates it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_field_is_a_refusal_unless_the_resource_is_replaced() {
    let sim = Sim::start().await;
    let (_dir, kc) = sim.kubeconfig_file();
    let job = |name: &str, image: &str, replace: bool| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: jobs\n{}spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: run, image: \"{image}\"}}]\n",
            if replace {
                "  annotations: {kdeploy.io/update-strategy: replace}\n"
            } else {
                ""
            }
        )
    };
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write(
        "manifests/staging/jobs/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: jobs\n",
    )
    .write(
        "manifests/staging/jobs/migrate.yaml",
        &job("migrate", "ghcr.io/example/migrate:1", false),
    )
    .write(
        "manifests/staging/jobs/seed.yaml",
        &job("seed", "ghcr.io/example/seed:1", true),
    );
    let base = repo.commit("jobs");
    let deploy = kdeploy(&repo, &["apply", "--env", "staging", "--kubeconfig", &kc]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    repo.write(
        "manifests/staging/jobs/migrate.yaml",
        &job("migrate", "ghcr.io/example/migrate:2", false),
    )
    .write(
        "manifests/staging/jobs/seed.yaml",
        &job("seed", "ghcr.io/example/seed:2", true),
    );
    let head = repo.commit("new job images");
    let plan = kdeploy(
        &repo,
        &[
            "plan",
            "--base",
            &base,
            "--head",
            &head,
            "--cluster",
            "--kubeconfig",
            &kc,
        ],
    )
    .await;
    assert_eq!(plan.code, 1, "{}{}", plan.stdout, plan.stderr);
    let refusals: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.contains("refused by the API server:"))
        .collect();
    assert_eq!(refusals.len(), 1, "{}", plan.stdout);
    assert!(
        refusals[0].contains("Job.batch \"migrate\" is invalid: spec.template: Invalid value:")
            && refusals[0].contains("field is immutable"),
        "{}",
        plan.stdout
    );
}
