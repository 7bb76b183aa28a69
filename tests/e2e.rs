//! The apply scenarios against a real cluster. Opt-in: they run with
//! `KDEPLOY_E2E=1` and a `KUBECONFIG` (the project's e2e workflow uses kind):
//! `KDEPLOY_E2E=1 cargo test --test tests e2e -- --ignored`.
//! They create and delete the namespaces `<app>-production`, `<app>-staging`,
//! shop, shop-staging, shop-production, pr-77 and kdeploy-system and the
//! ServiceMonitor CRD: never point them at a cluster that matters.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kdeploy::apply::Report;
use kdeploy::cluster::{self, Access};
use kube::Api;

use crate::apply::{deploy_head, example_repo, fast, production};

async fn real_cluster() -> Option<kube::Client> {
    if std::env::var("KDEPLOY_E2E").as_deref() != Ok("1") {
        eprintln!("skipped: set KDEPLOY_E2E=1 and KUBECONFIG to run against a real cluster");
        return None;
    }
    Some(
        cluster::connect(&Access::default())
            .await
            .expect("KUBECONFIG points at a reachable cluster"),
    )
}

/// Runs the kdeploy binary in `repo`, off the runtime's threads.
async fn kdeploy_in(repo: &crate::util::Repo, args: &'static [&'static str]) -> crate::util::Run {
    let dir = repo.path().to_path_buf();
    tokio::task::spawn_blocking(move || crate::util::kdeploy(&dir, args))
        .await
        .expect("joins")
}

/// Runs `kubectl` on the cluster of `KUBECONFIG`, as a person would.
fn kubectl(args: &[&str]) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn cleanup(client: &kube::Client) {
    let ns: Api<Namespace> = Api::all(client.clone());
    for name in [
        "api-production",
        "web-production",
        "worker-production",
        "shop",
        "shop-staging",
        "shop-production",
        "kdeploy-system",
        "api-staging",
        "pr-77",
    ] {
        let _ = ns.delete(name, &Default::default()).await;
    }
}

#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn first_deploy_change_and_removal_on_a_real_cluster() {
    let Some(client) = real_cluster().await else {
        return;
    };
    cleanup(&client).await;
    let repo = example_repo();
    let prod = production();

    let (reports, out) = deploy_head(&client, &repo, &prod, &fast()).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    let web: Api<Deployment> = Api::namespaced(client.clone(), "web-production");
    assert_eq!(web.get("web").await.unwrap().spec.replicas, Some(4));

    repo.write(
        "services/web/production/config.yaml",
        "replicas: 5\ningress:\n  host: shop.example.com\n  tls: true\n",
    );
    repo.commit("scale web");
    let (reports, out) = deploy_head(&client, &repo, &prod, &fast()).await;
    assert_eq!(
        reports[0].applied,
        ["apps/Deployment web-production/web"],
        "{out}"
    );
    assert_eq!(web.get("web").await.unwrap().spec.replicas, Some(5));

    repo.remove("services/worker");
    repo.commit("remove worker");
    // An app gone from the config needs consent: held first, then deleted.
    let (reports, out) = deploy_head(&client, &repo, &prod, &fast()).await;
    assert!(
        reports[0].deleted.is_empty() && !reports[0].held.is_empty(),
        "{out}"
    );
    let consent = kdeploy::apply::Options {
        deletion_consent: Some("test".into()),
        ..fast()
    };
    let (reports, out) = deploy_head(&client, &repo, &prod, &consent).await;
    assert!(
        reports[0]
            .deleted
            .iter()
            .any(|d| d == "apps/Deployment worker-production/worker"),
        "{out}"
    );
    let worker: Api<Deployment> = Api::namespaced(client.clone(), "worker-production");
    assert!(
        worker
            .get_opt("worker")
            .await
            .map(|d| d.is_none_or(|d| d.metadata.deletion_timestamp.is_some()))
            .unwrap_or(true)
    );

    let dry = kdeploy::apply::Options {
        dry_run: true,
        sync: true,
        ..fast()
    };
    let (reports, out) = deploy_head(&client, &repo, &prod, &dry).await;
    assert!(reports[0].succeeded(), "{out}");
    cleanup(&client).await;
}

/// Staging and production on one real cluster: the scenario of the shared
/// cluster tests (`shared_cluster.rs`) against a real API server.
#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn environments_sharing_a_real_cluster_never_touch_each_other() {
    use kdeploy::config::Filter;
    let Some(client) = real_cluster().await else {
        return;
    };
    cleanup(&client).await;
    let repo = crate::util::Repo::new();
    repo.write(
        "kdeploy.yaml",
        "namespace: \"{app}\"\nenvironments:\n  staging: {context: a}\n  production: {context: b}\n",
    )
    .write("services/shop/config.yaml", "image: registry.k8s.io/pause:3.10\nport: 8080\nprobes: {liveness: null, readiness: null}\n")
    .write("services/shop/version", "3.10\n")
    .write("services/shop/production/config.yaml", "")
    .write("services/shop/staging/config.yaml", "");
    repo.commit("shop in two environments, one namespace");
    let head = crate::apply::state(&repo, "HEAD");
    let only = |env: &str| Filter::new(Some(env), None).unwrap();
    let (reports, out) =
        crate::apply::deploy(&client, &head, None, &only("production"), &fast()).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    let mut log = Vec::new();
    let err = kdeploy::apply::apply_states(
        &client,
        &head,
        None,
        &only("staging"),
        "example/config",
        "c",
        &fast(),
        &mut |r| kdeploy::report::deploy::text(r, &mut log),
    )
    .await
    .expect_err("staging may not take production's objects")
    .to_string();
    assert!(err.contains("in the deploy record of production"), "{err}");
    let opts = kdeploy::apply::Options {
        adopt_from: Some("production".into()),
        ..fast()
    };
    let (reports, out) = crate::apply::deploy(&client, &head, None, &only("staging"), &opts).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    assert!(!reports[0].adopted.is_empty(), "{out}");
    cleanup(&client).await;
}

/// An immutable selector change against a real API server: refused before
/// any write without the annotation, replaced (deleted, waited for,
/// created again) with `kdeploy.io/update-strategy: replace`.
#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn an_immutable_selector_change_on_a_real_cluster() {
    let Some(client) = real_cluster().await else {
        return;
    };
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    // Its own record namespace: the other scenarios' records and cleanups
    // never meet this one.
    let opts = kdeploy::apply::Options {
        record_namespace: "kdeploy-e2e-immut".into(),
        ..fast()
    };
    let deploy = |team: &str, annotations: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: {{{annotations}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web, team: {team}}}}}\n  template:\n    metadata: {{labels: {{app: web, team: {team}}}}}\n    spec: {{containers: [{{name: web, image: registry.k8s.io/pause:3.10}}]}}\n"
        )
    };
    let repo = crate::util::Repo::new();
    repo.write("kdeploy.yaml", "sources:\n  raw: [\"m/{env}/{app}\"]\n")
        .write(
            "m/production/immut/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: immut-production}\n",
        )
        .write("m/production/immut/deploy.yaml", &deploy("a", ""));
    repo.commit("team a");
    let prod = production();
    let (reports, out) = deploy_head(&client, &repo, &prod, &opts).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");

    repo.write("m/production/immut/deploy.yaml", &deploy("b", ""));
    repo.commit("team b");
    let head = crate::apply::state(&repo, "HEAD");
    let mut log = Vec::new();
    let err = kdeploy::apply::apply_states(
        &client,
        &head,
        None,
        &prod,
        "example/config",
        "c",
        &opts,
        &mut |r| kdeploy::report::deploy::text(r, &mut log),
    )
    .await
    .expect_err("the API server refuses the selector change")
    .to_string();
    assert!(err.contains("field is immutable"), "{err}");

    repo.write(
        "m/production/immut/deploy.yaml",
        &deploy("b", "kdeploy.io/update-strategy: replace"),
    );
    repo.commit("team b, replaced");
    let (reports, out) = deploy_head(&client, &repo, &prod, &opts).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    assert_eq!(
        reports[0].replaced,
        ["apps/Deployment immut-production/web"],
        "{out}"
    );
    let web: Api<Deployment> = Api::namespaced(client.clone(), "immut-production");
    let live = web.get("web").await.unwrap();
    let labels = live.spec.selector.match_labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("b"));
    let _ = namespaces
        .delete("immut-production", &Default::default())
        .await;
    let _ = namespaces
        .delete("kdeploy-e2e-immut", &Default::default())
        .await;
}

#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn sops_secrets_reach_a_real_cluster_decrypted() {
    let Some(client) = real_cluster().await else {
        return;
    };
    let Some(keys) = crate::secrets::Keys::new() else {
        return;
    };
    cleanup(&client).await;
    let repo = crate::util::Repo::with_app();
    repo.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(&format!("DB_PASSWORD: {}\n", crate::secrets::CANARY), &[]),
    );
    repo.commit("secrets");
    let key = std::fs::read_to_string(keys.file()).unwrap();
    kdeploy::secrets::sops::set_age_key(key);
    let staging = kdeploy::config::Filter::new(Some("staging"), None).unwrap();
    let (reports, out) = deploy_head(&client, &repo, &staging, &fast()).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    crate::secrets::assert_clean("apply output", &out);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "api-staging");
    let secret = secrets.get("api-secrets").await.expect("the Secret exists");
    let data = secret.data.expect("data");
    assert_eq!(data["DB_PASSWORD"].0, crate::secrets::CANARY.as_bytes());
    cleanup(&client).await;
}

#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn drift_on_a_real_cluster_is_attributed_and_repaired() {
    let Some(client) = real_cluster().await else {
        return;
    };
    cleanup(&client).await;
    let repo = crate::util::Repo::with_app();
    repo.commit("apps");
    let run = |args: &'static [&'static str]| kdeploy_in(&repo, args);
    let deploy = run(&["apply", "--env", "staging"]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    assert_eq!(run(&["drift", "--env", "staging"]).await.code, 0);
    // `kubectl scale` writes through the scale subresource as manager
    // "kubectl" (an Update): the API server's own managedFields.
    kubectl(&[
        "-n",
        "api-staging",
        "scale",
        "deployment/api",
        "--replicas=5",
    ]);
    let drift = run(&["drift", "--env", "staging"]).await;
    assert_eq!(drift.code, 2, "{}{}", drift.stdout, drift.stderr);
    assert!(
        drift
            .stdout
            .contains("changed    apps/Deployment api-staging/api [api] by kubectl"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("spec.replicas: 2 → 5"),
        "{}",
        drift.stdout
    );
    let repair = run(&["drift", "--env", "staging", "--repair"]).await;
    assert!(
        repair
            .stdout
            .contains("repaired   apps/Deployment api-staging/api"),
        "{}",
        repair.stdout
    );
    assert_eq!(run(&["drift", "--env", "staging"]).await.code, 0);
    cleanup(&client).await;
}

#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn hooks_and_change_groups_on_a_real_cluster() {
    let Some(client) = real_cluster().await else {
        return;
    };
    cleanup(&client).await;
    let job = |name: &str, annotations: &str, command: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations:\n{annotations}spec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: {name}\n          image: busybox:1.36\n          command: [\"sh\", \"-c\", \"{command}\"]\n"
        )
    };
    let repo = crate::util::Repo::new();
    repo.write("kdeploy.yaml", "sources:\n  raw: [\"manifests/{env}/{app}\"]\n")
        .write(
            "manifests/staging/shop/namespace.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
        )
        .write(
            "manifests/staging/shop/migrate.yaml",
            &job("migrate", "    kdeploy.io/hook: pre-deploy\n", "echo migrated"),
        )
        .write(
            "manifests/staging/shop/seed.yaml",
            &job("seed", "    kdeploy.io/group: seed\n    kdeploy.io/wait: \"true\"\n", "true"),
        )
        .write(
            "manifests/staging/shop/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-seed\n  namespace: shop\n  annotations:\n    kdeploy.io/apply-after: seed\ndata:\n  ready: \"yes\"\n",
        );
    repo.commit("shop");
    let opts = kdeploy::apply::Options {
        wait: Some(kdeploy::wait::Options {
            timeout: std::time::Duration::from_secs(180),
            ..Default::default()
        }),
        ..fast()
    };
    let all = kdeploy::config::Filter::default();
    let (reports, out) = deploy_head(&client, &repo, &all, &opts).await;
    assert!(reports.iter().all(Report::succeeded), "{out}");
    assert!(
        out.contains("hook     pre-deploy batch/Job shop/migrate: complete"),
        "{out}"
    );
    // A failing pre-deploy hook fails the deploy; the record stays.
    repo.write(
        "manifests/staging/shop/migrate.yaml",
        &job("migrate", "    kdeploy.io/hook: pre-deploy\n", "exit 3"),
    )
    .write(
        "manifests/staging/shop/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-seed\n  namespace: shop\n  annotations:\n    kdeploy.io/apply-after: seed\ndata:\n  ready: \"again\"\n",
    );
    repo.commit("failing migration");
    let (reports, out) = deploy_head(&client, &repo, &all, &opts).await;
    assert!(!reports[0].succeeded(), "{out}");
    assert!(
        out.contains("the workloads were not changed") || out.contains("pre-deploy hook"),
        "{out}"
    );
    cleanup(&client).await;
}

#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn a_preview_on_a_real_cluster_is_deployed_and_removed_with_its_namespace() {
    let Some(client) = real_cluster().await else {
        return;
    };
    cleanup(&client).await;
    let repo = crate::util::Repo::with_app();
    repo.write(
        "kdeploy.yaml",
        "environments:\n  preview:\n    from: staging\n    namespace: \"pr-{pr}\"\n",
    );
    repo.commit("apps and a preview template");
    let run = |args: &'static [&'static str]| kdeploy_in(&repo, args);
    // The example image is not pullable on kind: no readiness wait.
    let deploy = run(&["preview", "deploy", "--pr", "77", "--no-wait"]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "pr-77");
    assert!(api.get("api").await.is_ok(), "{}", deploy.stdout);
    let ns: Api<Namespace> = Api::all(client.clone());
    let preview_ns = ns.get("pr-77").await.expect("namespace");
    assert_eq!(
        preview_ns
            .metadata
            .annotations
            .unwrap_or_default()
            .get("kdeploy.io/preview")
            .map(String::as_str),
        Some("preview/77")
    );
    // Removal waits for the API server's namespace finalization.
    let delete = run(&["preview", "delete", "--pr", "77"]).await;
    assert_eq!(delete.code, 0, "{}{}", delete.stdout, delete.stderr);
    assert!(
        ns.get_opt("pr-77").await.expect("reads").is_none(),
        "{}",
        delete.stdout
    );
    cleanup(&client).await;
}

#[tokio::test]
#[ignore = "needs a cluster: KDEPLOY_E2E=1 KUBECONFIG=... cargo test --test tests e2e -- --ignored"]
async fn a_three_way_plan_on_a_real_cluster_names_drift_by_kubectl_and_what_is_missing() {
    let Some(client) = real_cluster().await else {
        return;
    };
    cleanup(&client).await;
    let repo = crate::util::Repo::with_app();
    let base = repo.commit("apps");
    let deploy = kdeploy_in(&repo, &["apply", "--env", "staging"]).await;
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    // Drift made as people make it: `kubectl scale` (an Update through the
    // scale subresource) and `kubectl delete`.
    kubectl(&[
        "-n",
        "api-staging",
        "scale",
        "deployment/api",
        "--replicas=5",
    ]);
    kubectl(&["-n", "api-staging", "delete", "service/api"]);
    repo.write("services/api/version", "2.0.0\n")
        .write("services/api/staging/config.yaml", "servicePort: 81\n");
    let head = repo.commit("api 2.0.0 on port 81");
    let dir = repo.path().to_path_buf();
    let plan = tokio::task::spawn_blocking(move || {
        crate::util::kdeploy(
            &dir,
            &[
                "plan",
                "--base",
                &base,
                "--head",
                &head,
                "--env",
                "staging",
                "--cluster",
            ],
        )
    })
    .await
    .expect("joins");
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .contains("live drift this merge sets back: spec.replicas: 5 → 2 (set by kubectl"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("live: missing from the cluster: this merge creates it again"),
        "{}",
        plan.stdout
    );
    // Fields kdeploy does not set (the Deployment controller's revision
    // annotation, defaults) are never drift.
    assert!(
        !plan.stdout.contains("deployment.kubernetes.io/revision"),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains("progressDeadlineSeconds"),
        "{}",
        plan.stdout
    );
    cleanup(&client).await;
}
