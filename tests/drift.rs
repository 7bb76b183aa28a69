//! `kdeploy drift` against the Kubernetes simulator: a deploy, then a field
//! changed by another field manager, a deleted resource, an object kdeploy
//! did not create, repair, and the exit codes (0 in sync, 2 drift, 1 error).

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

use crate::k8s_sim::Sim;
use crate::util::{Repo, Run};

async fn kdeploy(repo: &Repo, kubeconfig: &str, args: &[&str]) -> Run {
    let path = repo.path().to_path_buf();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--kubeconfig".to_string(), kubeconfig.to_string()]);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::util::kdeploy(&path, &refs)
    })
    .await
    .expect("joins")
}

fn deployments() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        plural: "deployments".into(),
    }
}

/// Someone scales api-staging's Deployment by hand, as
/// `kubectl apply --server-side --force-conflicts` would: the field now
/// belongs to the manager "kubectl".
async fn scale_by_hand(client: &kube::Client, replicas: i64) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "api-staging", &deployments());
    let patch = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"replicas": replicas}});
    api.patch(
        "api",
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("scaled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_found_attributed_and_repaired() {
    let sim = Sim::start().await;
    let (dir, kc) = sim.kubeconfig_file();
    let repo = Repo::with_app();
    repo.commit("apps");
    let deploy = kdeploy(&repo, &kc, &["apply", "--env", "staging"]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);

    let clean = kdeploy(&repo, &kc, &["drift"]).await;
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(
        clean.stdout.contains("staging: in sync ("),
        "{}",
        clean.stdout
    );

    // Someone scales by hand with a forced server-side apply: the field
    // now belongs to that manager.
    let client = sim.client().await;
    scale_by_hand(&client, 7).await;
    // And deletes the Service; and adds a ConfigMap of their own.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "api-staging");
    services
        .delete("api", &Default::default())
        .await
        .expect("deleted");
    sim.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "debug-flags", "namespace": "api-staging"}, "data": {"x": "1"}}));

    let drift = kdeploy(
        &repo,
        &kc,
        &[
            "drift",
            "--unmanaged",
            "--json",
            &dir.path().join("drift.json").display().to_string(),
        ],
    )
    .await;
    assert_eq!(drift.code, 2, "{}{}", drift.stdout, drift.stderr);
    let out = &drift.stdout;
    assert!(out.contains("staging: drift in 2 of "), "{out}");
    assert!(
        out.contains("  changed    apps/Deployment api-staging/api [api] by kubectl (Apply)"),
        "{out}"
    );
    assert!(out.contains("spec.replicas: 2 → 7"), "{out}");
    assert!(
        out.contains("  missing    Service api-staging/api [api]: deleted from the cluster"),
        "{out}"
    );
    assert!(
        out.contains("  unmanaged  ConfigMap api-staging/debug-flags: not deployed by kdeploy"),
        "{out}"
    );
    assert!(out.contains("-  replicas: 7\n+  replicas: 2"), "{out}");
    assert!(!out.contains("kube-root-ca.crt"), "{out}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("drift.json")).expect("json"))
            .expect("parses");
    assert_eq!(json[0]["environment"], "staging");
    assert_eq!(json[0]["findings"][1]["kind"], "changed");
    assert_eq!(json[0]["findings"][1]["managers"][0], "kubectl (Apply)");

    // Repair re-applies what drifted; the unmanaged object stays.
    let repair = kdeploy(&repo, &kc, &["drift", "--repair"]).await;
    assert_eq!(repair.code, 2, "{}{}", repair.stdout, repair.stderr);
    assert!(
        repair
            .stdout
            .contains("  repaired   apps/Deployment api-staging/api"),
        "{}",
        repair.stdout
    );
    assert!(
        repair
            .stdout
            .contains("  repaired   Service api-staging/api"),
        "{}",
        repair.stdout
    );
    let after = kdeploy(&repo, &kc, &["drift"]).await;
    assert_eq!(after.code, 0, "{}{}", after.stdout, after.stderr);
    assert!(
        sim.get("", "ConfigMap", "api-staging", "debug-flags")
            .is_some()
    );
    let replicas = sim
        .get("apps", "Deployment", "api-staging", "api")
        .expect("deployment")["spec"]["replicas"]
        .clone();
    assert_eq!(replicas, json!(2));

    // An environment never deployed has nothing to compare; a cluster that
    // cannot be reached is an error (exit 1).
    let none = kdeploy(&repo, &kc, &["drift", "--env", "production"]).await;
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert!(
        none.stdout
            .contains("no deploy record of a selected environment"),
        "{}",
        none.stdout
    );
    let bad = dir.path().join("bad");
    std::fs::write(
        &bad,
        sim.kubeconfig().replace(&sim.url, "http://127.0.0.1:9"),
    )
    .expect("write");
    let down = kdeploy(&repo, &bad.display().to_string(), &["drift"]).await;
    assert_eq!(down.code, 1, "{}{}", down.stdout, down.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_action_keeps_a_check_run_and_one_issue_per_environment() {
    let sim = Sim::start().await;
    let (_dir, kc) = sim.kubeconfig_file();
    let gh = crate::fake_github::FakeGitHub::start().await;
    let repo = Repo::with_app();
    let head = repo.commit("apps");
    let deploy = kdeploy(&repo, &kc, &["apply", "--env", "staging"]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    let kubeconfig = sim.kubeconfig();
    let inputs = [
        ("INPUT_MODE", "drift"),
        ("INPUT_KUBECONFIG", kubeconfig.as_str()),
        ("GITHUB_SHA", head.as_str()),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_RUN_ID", "42"),
    ];
    let event = json!({"schedule": "17 * * * *"});
    let run = || crate::publish::action_on(&gh, &repo, "main", "schedule", &event, &inputs);

    let (code, log, summary, outputs) = run().await;
    assert_eq!(code, 0, "{log}");
    assert!(
        summary.contains("In sync: the 5 resources deployed from"),
        "{summary}"
    );
    assert!(outputs.contains("[]"), "{outputs}");
    let checks = gh.check_runs();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["name"], "kdeploy drift");
    assert_eq!(checks[0]["conclusion"], "success");
    assert!(gh.issues().is_empty());

    // Someone scales by hand: a failed check, and an issue saying what.
    scale_by_hand(&sim.client().await, 7).await;
    let (code, log, summary, outputs) = run().await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("::warning::staging has drifted"), "{log}");
    assert!(outputs.contains(r#"["staging"]"#), "{outputs}");
    assert!(
        summary.contains("| changed | `apps/Deployment api-staging/api` | api | spec.replicas: 2 → 7 (by kubectl (Apply)) |"),
        "{summary}"
    );
    let check = gh.check_runs().pop().expect("check run");
    assert_eq!(
        (
            check["conclusion"].as_str(),
            check["output"]["title"].as_str()
        ),
        (Some("failure"), Some("Drift in staging"))
    );
    let issues = gh.issues();
    assert_eq!(issues.len(), 1, "{log}");
    assert_eq!(
        (issues[0].title.as_str(), issues[0].state.as_str()),
        ("Drift in staging", "open")
    );
    assert!(
        issues[0].body.contains("spec.replicas: 2 → 7"),
        "{}",
        issues[0].body
    );
    // Still drifted on the next run: the same issue, no second one.
    let (_, log, ..) = run().await;
    assert!(!log.contains("opened issue"), "{log}");
    assert_eq!(gh.issues().len(), 1);

    // Repaired: the next run closes the issue with a comment.
    let mut repair = inputs.to_vec();
    repair.push(("INPUT_DRIFT-REPAIR", "true"));
    let (code, log, ..) =
        crate::publish::action_on(&gh, &repo, "main", "schedule", &event, &repair).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("repaired   apps/Deployment api-staging/api"),
        "{log}"
    );
    let (_, log, ..) = run().await;
    assert!(log.contains("is in sync"), "{log}");
    let issues = gh.issues();
    assert_eq!(issues[0].state, "closed", "{log}");
    let comments = gh.comments(issues[0].number);
    assert!(
        comments[0]
            .1
            .starts_with("The drift is gone: staging matches what was deployed"),
        "{comments:?}"
    );
}

/// Drift detection of 1,000 recorded resources against the simulator (on
/// loopback, no added latency). Run by hand:
/// `cargo test --release --test tests measure_drift -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn measure_drift_of_1000_recorded_resources() {
    let sim = Sim::start().await;
    let client = sim.client().await;
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    );
    for app in 0..100 {
        let mut text = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app{app}\n");
        for i in 0..9 {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{i}\n  namespace: app{app}\ndata:\n  key: value-{i}\n"
            ));
        }
        repo.write(&format!("manifests/staging/app{app}/all.yaml"), &text);
    }
    repo.commit("1,000 resources");
    let (reports, out) = crate::apply::deploy_head(
        &client,
        &repo,
        &kdeploy::config::Filter::default(),
        &crate::apply::fast(),
    )
    .await;
    assert!(reports[0].succeeded(), "{out}");
    let filter = kdeploy::config::Filter::default();
    let access = kdeploy::cluster::Access {
        kubeconfig: Some(sim.kubeconfig()),
        context: None,
    };
    let scope = kdeploy::drift::Scope {
        repo: repo.path(),
        filter: &filter,
        access: &access,
        rev: None,
        fetch: None,
    };
    let opts = kdeploy::apply::Options::default();
    for unmanaged in [false, true] {
        sim.clear_requests();
        let started = std::time::Instant::now();
        let found = kdeploy::drift::check(
            &scope,
            &kdeploy::drift::Settings {
                unmanaged,
                repair: false,
            },
            &opts,
        )
        .await
        .expect("checks");
        eprintln!(
            "drift of {} recorded resources (unmanaged: {unmanaged}): {:?}, {} requests, in sync: {}",
            found[0].checked,
            started.elapsed(),
            sim.requests().len(),
            found[0].in_sync()
        );
    }
}
