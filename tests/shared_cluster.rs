//! Environments that share a cluster (staging and production in one, as
//! small teams run them), against the Kubernetes API simulator: neither can
//! overwrite or delete the other's resources.

use kdeploy::apply::{self, Options, record};
use kdeploy::config::Filter;

use crate::apply::{deploy, fast, state};
use crate::k8s_sim::Sim;
use crate::util::Repo;

/// One app in staging and production.
fn two_envs(kdeploy_yaml: &str) -> Repo {
    let repo = Repo::new();
    repo.write("kdeploy.yaml", kdeploy_yaml)
        .write("services/shop/config.yaml", "image: ghcr.io/example/shop\n")
        .write("services/shop/production/version", "2.0.0\n")
        .write("services/shop/staging/version", "1.0.0\n")
        .write("services/shop/production/config.yaml", "")
        .write("services/shop/staging/config.yaml", "");
    repo.commit("shop in two environments");
    repo
}

fn env(name: &str) -> Filter {
    Filter::new(Some(name), None).expect("filter")
}

fn image(sim: &Sim, namespace: &str) -> String {
    sim.get("apps", "Deployment", namespace, "shop")
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].to_string())
        .unwrap_or_default()
}

/// The old default (`namespace: "{app}"`) with both environments named
/// separate clusters in kdeploy.yaml, while both contexts reach one
/// cluster: only the deploy records can tell.
const SAME_NAMESPACE_TWO_CONTEXTS: &str =
    "namespace: \"{app}\"\nenvironments:\n  staging: {context: a}\n  production: {context: b}\n";

#[tokio::test]
async fn default_namespaces_keep_environments_apart_on_one_cluster() {
    let sim = Sim::start().await;
    let client = sim.client().await;
    let repo = two_envs("");
    let head = state(&repo, "HEAD");
    let (reports, out) = deploy(&client, &head, None, &Filter::default(), &fast()).await;
    assert!(reports.iter().all(apply::Report::succeeded), "{out}");
    assert_eq!(
        image(&sim, "shop-production"),
        "\"ghcr.io/example/shop:2.0.0\""
    );
    assert_eq!(
        image(&sim, "shop-staging"),
        "\"ghcr.io/example/shop:1.0.0\""
    );

    // Removing the app from staging deletes staging's Deployment only.
    repo.remove("services/shop/staging");
    repo.commit("shop leaves staging");
    let consent = apply::Options {
        deletion_consent: Some("test".into()),
        ..fast()
    };
    let (reports, out) = deploy(
        &client,
        &state(&repo, "HEAD"),
        Some(&head),
        &Filter::default(),
        &consent,
    )
    .await;
    assert!(reports.iter().all(apply::Report::succeeded), "{out}");
    assert!(
        sim.get("apps", "Deployment", "shop-staging", "shop")
            .is_none(),
        "{out}"
    );
    assert_eq!(
        image(&sim, "shop-production"),
        "\"ghcr.io/example/shop:2.0.0\""
    );
}

#[test]
fn a_collision_on_one_cluster_is_refused_at_plan_time() {
    let repo = two_envs("namespace: \"{app}\"\n");
    let base = repo.git(&["rev-parse", "HEAD"]);
    repo.write("services/shop/staging/version", "1.1.0\n");
    repo.commit("staging 1.1.0");
    let run = repo.kdeploy(&["plan", "--base", base.trim()]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "apps/Deployment shop/shop is produced by environments production (services/shop/production) and staging (services/shop/staging), which deploy to the same cluster (kdeploy.yaml sets no `context` for either)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("namespace: \"{app}-{env}\""),
        "{}",
        run.stderr
    );
    // Contexts that name different clusters make it fine.
    repo.write(
        "kdeploy.yaml",
        "namespace: \"{app}\"\nenvironments:\n  staging: {context: a}\n  production: {context: b}\n",
    );
    let run = repo.kdeploy(&["render", "--stdout"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[tokio::test]
async fn another_environments_resources_are_refused_kept_and_adopted_on_purpose() {
    let sim = Sim::start().await;
    let client = sim.client().await;
    let repo = two_envs(SAME_NAMESPACE_TWO_CONTEXTS);
    let head = state(&repo, "HEAD");
    let (reports, out) = deploy(&client, &head, None, &env("production"), &fast()).await;
    assert!(reports.iter().all(apply::Report::succeeded), "{out}");

    // Staging would overwrite production's objects: refused, nothing written.
    sim.clear_requests();
    let mut log = Vec::new();
    let err = apply::apply_states(
        &client,
        &head,
        None,
        &env("staging"),
        "example/config",
        "c1",
        &fast(),
        &mut |r| kdeploy::report::deploy::text(r, &mut log),
    )
    .await
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("environment staging would take over resources that another environment on the same cluster deployed; nothing was applied"),
        "{err}"
    );
    assert!(
        err.contains("apps/Deployment shop/shop (in the deploy record of production)"),
        "{err}"
    );
    assert!(err.contains("--adopt-from <env>"), "{err}");
    let writes: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert_eq!(image(&sim, "shop"), "\"ghcr.io/example/shop:2.0.0\"");

    // A staging record that lists production's objects too (written by an
    // older kdeploy): removing the app from staging keeps them.
    let production = record::read(&client, "kdeploy-system", "production")
        .await
        .expect("read")
        .expect("production record");
    let legacy = record::Record {
        resource_version: None,
        ..production.clone()
    };
    record::write(&client, "kdeploy-system", "staging", &legacy, None)
        .await
        .expect("legacy staging record");
    repo.remove("services/shop/staging");
    repo.commit("shop leaves staging");
    let (reports, out) = deploy(
        &client,
        &state(&repo, "HEAD"),
        None,
        &env("staging"),
        &fast(),
    )
    .await;
    // Nothing of staging is left in head, so `apply_states` only knows it
    // through `deploy_environments`; here the record comes from a base.
    assert!(reports.is_empty(), "{out}");
    let (reports, out) = deploy(
        &client,
        &state(&repo, "HEAD"),
        Some(&head),
        &env("staging"),
        &fast(),
    )
    .await;
    assert!(reports.iter().all(apply::Report::succeeded), "{out}");
    assert!(reports[0].deleted.is_empty(), "{out}");
    assert!(
        reports[0].kept.contains(
            &"apps/Deployment shop/shop (also in the deploy record of production)".to_string()
        ),
        "{:?}",
        reports[0].kept
    );
    assert!(out.contains("kept     apps/Deployment shop/shop"), "{out}");
    assert_eq!(image(&sim, "shop"), "\"ghcr.io/example/shop:2.0.0\"");

    // --adopt-from moves ownership: staging takes the objects, production's
    // record no longer lists them.
    let repo = two_envs(SAME_NAMESPACE_TWO_CONTEXTS);
    let head = state(&repo, "HEAD");
    let opts = Options {
        adopt_from: Some("production".into()),
        ..fast()
    };
    let (reports, out) = deploy(&client, &head, None, &env("staging"), &opts).await;
    assert!(reports.iter().all(apply::Report::succeeded), "{out}");
    assert!(
        reports[0]
            .adopted
            .contains(&"apps/Deployment shop/shop".to_string()),
        "{out}"
    );
    let production = record::read(&client, "kdeploy-system", "production")
        .await
        .expect("read")
        .expect("record");
    let staging = record::read(&client, "kdeploy-system", "staging")
        .await
        .expect("read")
        .expect("record");
    let id = |r: &record::Record| {
        r.entries
            .keys()
            .any(|k| k.kind == "Deployment" && k.name == "shop")
    };
    assert!(!id(&production) && id(&staging));
    assert_eq!(image(&sim, "shop"), "\"ghcr.io/example/shop:1.0.0\"");
}

#[tokio::test]
async fn an_environment_gone_from_the_repo_is_pruned_from_its_record() {
    let sim = Sim::start().await;
    let repo = two_envs("");
    let (_dir, kc) = sim.kubeconfig_file();
    let apply = |repo: std::path::PathBuf, kc: String| {
        tokio::task::spawn_blocking(move || {
            crate::util::kdeploy(&repo, &["apply", "--kubeconfig", &kc, "--allow-deletions"])
        })
    };
    let without_consent = |repo: std::path::PathBuf, kc: String| {
        tokio::task::spawn_blocking(move || {
            crate::util::kdeploy(&repo, &["apply", "--kubeconfig", &kc])
        })
    };
    sim.clear_requests();
    let run = apply(repo.path().to_path_buf(), kc.clone())
        .await
        .expect("runs");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        sim.get("apps", "Deployment", "shop-staging", "shop")
            .is_some()
    );
    // The records are listed once per environment deployed (its owners),
    // and that list also finds retired environments: no LIST more.
    let lists = sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/namespaces/kdeploy-system/configmaps")
        .count();
    assert_eq!(lists, 2, "{:#?}", sim.requests());

    // Staging's last app goes; `apply --head` alone (no base) still prunes it.
    repo.remove("services/shop/staging");
    repo.commit("no more staging");
    // Without consent a whole environment is never read as "delete
    // everything": held, and the record keeps it.
    let run = without_consent(repo.path().to_path_buf(), kc.clone())
        .await
        .expect("runs");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("(the environment has nothing left in the config"),
        "{}",
        run.stdout
    );
    assert!(
        sim.get("apps", "Deployment", "shop-staging", "shop")
            .is_some()
    );
    let run = apply(repo.path().to_path_buf(), kc).await.expect("runs");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "staging: no longer in the config repo; removing what its deploy record lists"
        ),
        "{}",
        run.stdout
    );
    assert!(
        sim.get("apps", "Deployment", "shop-staging", "shop")
            .is_none()
    );
    assert_eq!(
        sim.get("", "Namespace", "", "shop-staging")
            .map(|n| n["status"]["phase"].clone()),
        Some(serde_json::json!("Terminating"))
    );
    assert!(
        sim.get("apps", "Deployment", "shop-production", "shop")
            .is_some()
    );
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-staging")
            .is_none(),
        "an emptied record is removed"
    );
}
