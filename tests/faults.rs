//! API faults against the Kubernetes API simulator: every call kdeploy
//! makes (the Lease and the deploy record included) is retried the same way,
//! `Retry-After` is honoured, a report says which step failed, and a killed
//! run's Lease is taken over within its duration.

use std::time::{Duration, Instant};

use kdeploy::apply::{Report, Step};

use crate::apply::{deploy_head, example_cluster, fast, production};
use crate::k8s_sim::{Fault, Sim};

fn fault(method: &'static str, path: &str, status: u16, times: usize) -> Fault {
    Fault {
        method: Some(method),
        path: path.into(),
        status,
        times,
    }
}

#[tokio::test]
async fn lease_and_record_calls_are_retried_like_every_other_call() {
    let (sim, client, repo) = example_cluster().await;
    sim.fault(fault("POST", "/leases", 503, 1));
    sim.fault(fault("GET", "/leases/kdeploy-production", 500, 1));
    sim.fault(fault(
        "POST",
        "/namespaces/kdeploy-system/configmaps",
        503,
        1,
    ));
    sim.fault(fault("POST", "/namespaces/kdeploy-system/configmaps", 0, 1));
    let (reports, out) = deploy_head(&client, &repo, &production(), &fast()).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    assert!(reports[0].record_written, "{out}");
    let posts = |part: &str| {
        sim.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains(part))
            .count()
    };
    // One 503 (retried), one 404 (a first deploy: kdeploy-system does not
    // exist yet, so it is created then), then the lease.
    assert_eq!(posts("/leases"), 3, "503, 404, then the lease");
    assert!(sim.get("", "Namespace", "", "kdeploy-system").is_some());
    assert!(posts("/namespaces/kdeploy-system/configmaps") >= 2);
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-production")
            .is_some()
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_every_request_says_it_is_kdeploy() {
    let (sim, client, repo) = example_cluster().await;
    sim.fault(fault("PATCH", "/deployments/web", 429, 1));
    let (reports, out) = deploy_head(&client, &repo, &production(), &fast()).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    let requests = sim.requests();
    let patches: Vec<Instant> = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/web"))
        .map(|r| r.at)
        .collect();
    assert_eq!(patches.len(), 2);
    let waited = patches[1] - patches[0];
    // The simulator answers `Retry-After: 1`; the client's own backoff is 10 ms.
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.user_agent == kdeploy::cluster::USER_AGENT),
        "{:?}",
        requests.iter().map(|r| &r.user_agent).collect::<Vec<_>>()
    );
    assert!(kdeploy::cluster::USER_AGENT.starts_with("kdeploy/"));
}

#[tokio::test]
async fn a_record_that_cannot_be_written_is_a_failed_step_in_the_report() {
    let (sim, client, repo) = example_cluster().await;
    sim.fault(fault(
        "POST",
        "/namespaces/kdeploy-system/configmaps",
        403,
        100,
    ));
    let (reports, out) = deploy_head(&client, &repo, &production(), &fast()).await;
    let report = &reports[0];
    assert!(!report.succeeded(), "{out}");
    assert_eq!(report.failed_step, Some(Step::Record));
    assert!(!report.record_written);
    assert!(!report.applied.is_empty(), "the cluster did change");
    let failure = &report.failed[0];
    assert_eq!(
        failure.id,
        "deploy record kdeploy-system/kdeploy-production"
    );
    assert!(failure.error.contains("is forbidden"), "{}", failure.error);
    assert_eq!(
        failure.error.matches("is forbidden").count(),
        1,
        "the API message once: {}",
        failure.error
    );
    assert!(!failure.error.contains("Status {"), "{}", failure.error);
}

/// Runs `kdeploy apply` against the simulator with a report file.
async fn cli_apply(sim: &Sim, repo: &crate::util::Repo) -> (crate::util::Run, serde_json::Value) {
    let (dir, kc) = sim.kubeconfig_file();
    let report = dir.path().join("report.json");
    let (rp, path) = (report.display().to_string(), repo.path().to_path_buf());
    let run = tokio::task::spawn_blocking(move || {
        crate::util::kdeploy(
            &path,
            &[
                "apply",
                "--kubeconfig",
                &kc,
                "--env",
                "production",
                "--report",
                &rp,
                "--lease-wait",
                "0",
            ],
        )
    })
    .await
    .expect("runs");
    let json = std::fs::read(&report)
        .map(|b| serde_json::from_slice(&b).expect("report is JSON"))
        .unwrap_or(serde_json::Value::Null);
    (run, json)
}

#[tokio::test]
async fn every_failure_after_the_first_write_leaves_a_report_saying_where() {
    // The record.
    let (sim, _client, repo) = example_cluster().await;
    sim.fault(fault(
        "POST",
        "/namespaces/kdeploy-system/configmaps",
        403,
        100,
    ));
    let (run, json) = cli_apply(&sim, &repo).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(json["reports"][0]["failed_step"], "record", "{json:#}");

    // A resource.
    let (sim, _client, repo) = example_cluster().await;
    sim.fault(fault("PATCH", "/deployments/web", 422, 100));
    let (run, json) = cli_apply(&sim, &repo).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(json["reports"][0]["failed_step"], "apply", "{json:#}");

    // The Lease: refused by the API server, said once and in words.
    let (sim, _client, repo) = example_cluster().await;
    sim.fault(fault("POST", "/leases", 403, 100));
    let (run, json) = cli_apply(&sim, &repo).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(json["error"]["step"], "lease", "{json:#}");
    assert_eq!(
        run.stderr.matches("is forbidden").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Status {"), "{}", run.stderr);

    // Preflight: nothing written, and the report says so too.
    let (sim, _client, repo) = example_cluster().await;
    repo.write(
        "services/web/production/config.yaml",
        "ingress:\n  host: shop.example.com\ncreateNamespace: false\nnamespace: nowhere\n",
    );
    repo.commit("namespace that does not exist");
    let (run, json) = cli_apply(&sim, &repo).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        json["error"]["step"], "preflight",
        "{json:#} {}",
        run.stderr
    );
}

#[tokio::test]
async fn a_killed_runs_lease_is_taken_over_within_its_duration() {
    let (sim, client, repo) = example_cluster().await;
    // What a run killed mid-deploy leaves: a lease renewed just now.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    sim.insert(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kdeploy-production", "namespace": "kdeploy-system"},
        "spec": {"holderIdentity": "https://github.com/org/config/actions/runs/1/attempts/1 (dead)",
                 "leaseDurationSeconds": 2, "acquireTime": now, "renewTime": now}
    }));
    let started = Instant::now();
    let (reports, out) = deploy_head(&client, &repo, &production(), &fast()).await;
    let took = started.elapsed();
    assert!(reports.iter().all(Report::succeeded), "{out}");
    assert!(
        took >= Duration::from_secs(2),
        "waited for the holder: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took over within its duration: {took:?}"
    );
}

#[test]
fn the_default_lease_expires_fast_and_names_its_holder() {
    let opts = kdeploy::apply::lease::Options::default();
    assert_eq!(opts.duration, Duration::from_secs(15));
    assert!(!opts.holder.is_empty());
}

/// Figures for the closing note: how long a run killed right after renewing
/// its default (15 s) lease blocks the next one.
#[tokio::test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn takeover_time_of_the_default_lease() {
    let (sim, client, repo) = example_cluster().await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let duration = kdeploy::apply::lease::Options::default().duration.as_secs();
    sim.insert(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kdeploy-production", "namespace": "kdeploy-system"},
        "spec": {"holderIdentity": "killed", "leaseDurationSeconds": duration,
                 "acquireTime": now, "renewTime": now}
    }));
    let started = Instant::now();
    let (reports, out) = deploy_head(&client, &repo, &production(), &fast()).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    println!(
        "takeover of a {duration} s lease after {:?}",
        started.elapsed()
    );
}
