//! Preview environments against the Kubernetes simulator (with its
//! controllers running: rollouts, and the namespace controller that empties
//! a Terminating namespace before it goes): `kdeploy preview deploy`, a
//! second push, `delete`, `gc` asking the fake GitHub, and the refusals.

use serde_json::json;

use crate::apply::example_repo;
use crate::fake_github::FakeGitHub;
use crate::k8s_sim::Sim;
use crate::util::{Repo, Run};

const TEMPLATE: &str = "environments:
  preview:
    from: staging
    namespace: \"pr-{pr}\"
    values:
      ingress:
        host: \"{app}-pr-{pr}.preview.example.com\"
";

async fn kdeploy(repo: &Repo, kubeconfig: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let path = repo.path().to_path_buf();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--kubeconfig".to_string(), kubeconfig.to_string()]);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"));
        cmd.current_dir(&path)
            .args(&all)
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            .env_remove("GITHUB_REPOSITORY")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("kdeploy runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("joins")
}

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// The example repo with a preview template, and a simulated cluster whose
/// controllers run.
async fn setup() -> (Sim, tempfile::TempDir, String, Repo) {
    let sim = Sim::start().await;
    sim.run_controllers(std::time::Duration::from_millis(20));
    let (dir, kc) = sim.kubeconfig_file();
    let repo = example_repo();
    repo.write("kdeploy.yaml", TEMPLATE);
    repo.commit("preview template");
    (sim, dir, kc, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_is_deployed_updated_and_removed() {
    let (sim, _dir, kc, repo) = setup().await;
    ok(&kdeploy(&repo, &kc, &["apply", "--env", "staging"], &[]).await);
    sim.clear_requests();

    let comment = repo.path().join("comment.md");
    let comment_arg = comment.display().to_string();
    let run = kdeploy(
        &repo,
        &kc,
        &["preview", "deploy", "--pr", "42", "--comment", &comment_arg],
        &[],
    )
    .await;
    ok(&run);
    // Every release of staging, in the preview's namespace.
    for app in ["api", "web", "worker"] {
        let d = sim.get("apps", "Deployment", "pr-42", app);
        assert!(d.is_some(), "{app} in pr-42: {}", run.stdout);
    }
    let ns = sim.get("", "Namespace", "", "pr-42").expect("namespace");
    assert_eq!(
        ns["metadata"]["annotations"]["kdeploy.io/preview"],
        "preview/42"
    );
    assert!(
        sim.get("", "Namespace", "", "api-staging").is_some(),
        "staging's namespace is not the preview's"
    );
    let ingress = sim
        .get("networking.k8s.io", "Ingress", "pr-42", "api")
        .expect("ingress");
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        "api-pr-42.preview.example.com"
    );
    // The record names the pull request.
    let record = sim
        .get("", "ConfigMap", "kdeploy-system", "kdeploy-preview-pr-42")
        .expect("record");
    assert_eq!(record["data"]["preview"], "preview");
    assert_eq!(record["data"]["pullRequest"], "42");
    assert!(
        run.stdout
            .contains("preview-pr-42: api: https://api-pr-42.preview.example.com"),
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(&comment).expect("comment written");
    assert!(
        text.starts_with("<!-- kdeploy-preview:preview -->"),
        "{text}"
    );
    assert!(
        text.contains("### kdeploy preview `preview-pr-42`: ready"),
        "{text}"
    );
    assert!(
        text.contains("| api | `pr-42` | <https://api-pr-42.preview.example.com> |"),
        "{text}"
    );

    // The pull request's next push: worker leaves staging, api scales.
    repo.remove("services/worker/staging");
    repo.write(
        "services/api/staging/config.yaml",
        &repo
            .read("services/api/staging/config.yaml")
            .replace("replicas: 1", "replicas: 2"),
    );
    repo.commit("next push");
    let run = kdeploy(&repo, &kc, &["preview", "deploy", "--pr", "42"], &[]).await;
    ok(&run);
    assert!(
        sim.get("apps", "Deployment", "pr-42", "worker").is_none(),
        "{}",
        run.stdout
    );
    assert_eq!(
        sim.get("apps", "Deployment", "pr-42", "api").expect("api")["spec"]["replicas"],
        2
    );
    // Staging was not written to by either.
    let writes: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.contains("-staging"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // A deploy of the config repo does not take the preview for a removed
    // environment.
    let all = kdeploy(&repo, &kc, &["apply"], &[]).await;
    ok(&all);
    assert!(!all.stdout.contains("preview-pr-42"), "{}", all.stdout);
    assert!(sim.get("apps", "Deployment", "pr-42", "api").is_some());

    // Closed: everything goes, the namespace last, and is waited for.
    let run = kdeploy(&repo, &kc, &["preview", "delete", "--pr", "42"], &[]).await;
    ok(&run);
    assert!(
        run.stdout.contains("preview-pr-42: removed ("),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("deleted  Namespace pr-42"),
        "{}",
        run.stdout
    );
    assert!(
        sim.get("", "Namespace", "", "pr-42").is_none(),
        "namespace gone"
    );
    assert!(sim.get("apps", "Deployment", "pr-42", "api").is_none());
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-preview-pr-42")
            .is_none(),
        "record gone"
    );
    assert!(
        sim.get("apps", "Deployment", "api-staging", "api")
            .is_some()
    );
    // Again: nothing left, nothing to do.
    let again = kdeploy(&repo, &kc, &["preview", "delete", "--pr", "42"], &[]).await;
    ok(&again);
    assert!(
        again.stdout.contains("nothing to remove"),
        "{}",
        again.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_refuses_cluster_scoped_objects_and_namespaces_not_its_own() {
    let (sim, _dir, kc, repo) = setup().await;
    // Production has the platform app's CRD: cluster-wide.
    repo.write(
        "kdeploy.yaml",
        &TEMPLATE.replace("from: staging", "from: production"),
    );
    repo.commit("preview of production");
    sim.clear_requests();
    let run = kdeploy(&repo, &kc, &["preview", "deploy", "--pr", "5"], &[]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("services/platform/production")
            && run
                .stderr
                .contains("CustomResourceDefinition servicemonitors.monitoring.coreos.com")
            && run.stderr.contains("is cluster-scoped")
            && run
                .stderr
                .contains("environments.preview.clusterScoped: true"),
        "{}",
        run.stderr
    );
    assert!(
        sim.requests().is_empty(),
        "nothing reaches the cluster before the preview is rendered and checked"
    );

    // A namespace that exists but is not the preview's is never taken over
    // (the preview deletes its namespace when it goes).
    repo.write("kdeploy.yaml", TEMPLATE);
    repo.commit("back to staging");
    sim.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pr-7"}}));
    let run = kdeploy(&repo, &kc, &["preview", "deploy", "--pr", "7"], &[]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("note:"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("namespace pr-7 exists and is not preview preview-pr-7's"),
        "{}",
        run.stderr
    );
    assert_eq!(sim.count("apps", "Deployment"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_the_previews_of_closed_pull_requests() {
    let (sim, _dir, kc, repo) = setup().await;
    let gh = FakeGitHub::start().await;
    let ours = [("GITHUB_REPOSITORY", "Codertocat/Hello-World")];
    for pr in ["1", "2", "3"] {
        let deploy = ["preview", "deploy", "--pr", pr, "--app", "web"];
        ok(&kdeploy(&repo, &kc, &deploy, &ours).await);
    }
    gh.add_pull(1, "feature-1", "closed", true);
    gh.add_pull(2, "feature-2", "open", false);
    // #3 does not exist (a deleted repository's, say).
    let env = [
        ("GITHUB_TOKEN", "ghs_previewgc"),
        ("GITHUB_REPOSITORY", "Codertocat/Hello-World"),
        ("GITHUB_API_URL", gh.url.as_str()),
    ];
    let dry = kdeploy(&repo, &kc, &["preview", "gc", "--dry-run"], &env).await;
    ok(&dry);
    assert!(
        dry.stdout
            .contains("preview-pr-1: would remove (pull request #1 is closed)"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("preview-pr-2: kept"), "{}", dry.stdout);
    assert!(sim.get("", "Namespace", "", "pr-1").is_some());

    let run = kdeploy(&repo, &kc, &["preview", "gc"], &env).await;
    ok(&run);
    assert!(
        sim.get("", "Namespace", "", "pr-1").is_none(),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("preview-pr-3: removing (pull request #3 does not exist)"),
        "{}",
        run.stdout
    );
    assert!(sim.get("", "Namespace", "", "pr-3").is_none());
    assert!(sim.get("apps", "Deployment", "pr-2", "web").is_some());
    assert!(!run.stdout.contains("ghs_previewgc") && !run.stderr.contains("ghs_previewgc"));

    // Without a token only age counts; without --older-than, nothing does.
    let refused = kdeploy(&repo, &kc, &["preview", "gc"], &ours).await;
    assert_eq!(refused.code, 2, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("set GITHUB_TOKEN"),
        "{}",
        refused.stderr
    );
    let stale = kdeploy(
        &repo,
        &kc,
        &["preview", "gc", "--older-than", "0s", "--dry-run"],
        &ours,
    )
    .await;
    ok(&stale);
    assert!(
        stale
            .stdout
            .contains("preview-pr-2: would remove (last deployed"),
        "{}",
        stale.stdout
    );
}

/// The action on a pull request's life: opened (deployed, commented),
/// synchronize (redeployed, the same comment updated), closed (removed);
/// and a fork's pull request, which gets no preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_deploys_a_preview_per_pull_request_and_removes_it_on_close() {
    use crate::action::{Job, cluster, output, pr_payload};
    let job = Job::new().await;
    job.origin.write(
        "kdeploy.yaml",
        "environments:\n  preview:\n    from: staging\n    namespace: \"pr-{pr}\"\n    url: \"https://{app}-pr-{pr}.preview.example.com\"\n",
    );
    job.origin.commit("preview template");
    let sim = cluster().await;
    let kubeconfig = sim.kubeconfig();
    let inputs = [
        ("INPUT_MODE", "preview"),
        ("INPUT_KUBECONFIG", kubeconfig.as_str()),
    ];
    let base = job.base();
    // The pull request also tries to move its preview elsewhere and allow
    // cluster-scoped objects: the template is read from the base branch.
    let head = job.pr_commit(
        |r| {
            r.write("services/web/version", "1.1.0\n").write(
                "kdeploy.yaml",
                "environments:\n  preview:\n    from: staging\n    namespace: \"kube-system-{pr}\"\n    clusterScoped: true\n",
            );
        },
        "bump web",
    );
    let event = |action: &'static str, n: u64, sha: &str, fork: bool| {
        let payload = pr_payload(action, n, &base, sha, fork);
        let job = &job;
        let inputs = &inputs;
        async move { job.run("pull_request", &payload, "pr", inputs).await }
    };
    let run = event("opened", 7, &head, false).await;
    assert_eq!(run.code, 0, "{}", run.log);
    let web = sim
        .get("apps", "Deployment", "pr-7", "web")
        .expect("web in pr-7");
    assert!(
        web["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":1.1.0")),
        "{web}"
    );
    assert!(sim.get("", "Namespace", "", "kube-system-7").is_none());
    assert_eq!(
        output(&run.outputs, "preview-environment").as_deref(),
        Some("preview-pr-7")
    );
    assert!(
        output(&run.outputs, "preview-urls")
            .is_some_and(|u| u.contains("https://web-pr-7.preview.example.com")),
        "{}",
        run.outputs
    );
    let comments = job.fake.comments(7);
    assert_eq!(comments.len(), 1, "{comments:?}");
    let (id, body) = &comments[0];
    assert!(
        body.contains("### kdeploy preview `preview-pr-7`: ready"),
        "{body}"
    );
    assert!(
        body.contains("<https://web-pr-7.preview.example.com>"),
        "{body}"
    );
    assert!(body.contains(&head[..12]), "{body}");

    // The next push redeploys and updates the same comment.
    let next = job.pr_commit(
        |r| {
            r.write("services/web/version", "1.2.0\n");
        },
        "web 1.2.0",
    );
    let run = event("synchronize", 7, &next, false).await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(7);
    assert_eq!(comments.len(), 1);
    assert_eq!(&comments[0].0, id);
    assert!(comments[0].1.contains(&next[..12]), "{}", comments[0].1);

    // Closed: everything goes, namespace included, and the comment says so.
    let run = event("closed", 7, &next, false).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        sim.get("", "Namespace", "", "pr-7").is_none(),
        "{}",
        run.log
    );
    assert!(sim.get("apps", "Deployment", "pr-7", "web").is_none());
    let comments = job.fake.comments(7);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .1
            .contains("### kdeploy preview `preview-pr-7`: removed")
            && comments[0].1.contains("namespace `pr-7` included"),
        "{}",
        comments[0].1
    );

    // A fork's pull request: no preview, and it says why.
    let fork = job.pr_commit(
        |r| {
            r.write("services/web/version", "9.9.9\n");
        },
        "fork change",
    );
    let run = event("opened", 8, &fork, true).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(sim.get("", "Namespace", "", "pr-8").is_none());
    assert!(
        run.summary.contains("comes from the fork"),
        "{}",
        run.summary
    );
    assert!(run.log.contains("no preview"), "{}", run.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_preview_says_what_failed_in_its_comment() {
    let (sim, _dir, kc, repo) = setup().await;
    sim.behave(
        "Deployment",
        "pr-9",
        "api",
        crate::k8s_sim::Behaviour::CrashLoopOomKilled,
    );
    let comment = repo.path().join("comment.md");
    let comment_arg = comment.display().to_string();
    let api_9 = ["preview", "deploy", "--pr", "9", "--app", "api"];
    let with = |more: &[&'static str]| -> Vec<String> {
        api_9.iter().chain(more).map(|a| a.to_string()).collect()
    };
    let args = with(&["--comment"]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push(&comment_arg);
    let run = kdeploy(&repo, &kc, &args, &[]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let text = std::fs::read_to_string(&comment).expect("comment written");
    assert!(
        text.contains("### kdeploy preview `preview-pr-9`: **failed**"),
        "{text}"
    );
    assert!(text.contains("| api | `pr-9` |"), "{text}");
    assert!(text.contains(":x: 1 not ready"), "{text}");
    assert!(
        text.contains("- :x: `apps/Deployment pr-9/api`: "),
        "{text}"
    );
    assert!(text.contains("OOMKilled"), "{text}");
    // The record was not written: the next push retries the whole preview.
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-preview-pr-9")
            .is_none()
    );
    // It may: the namespace is this preview's, if unrecorded.
    let args = with(&["--timeout", "2s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = kdeploy(&repo, &kc, &args, &[]).await;
    assert!(!again.stderr.contains("is not preview"), "{}", again.stderr);
    // Closing the pull request removes the namespace all the same.
    let run = kdeploy(&repo, &kc, &["preview", "delete", "--pr", "9"], &[]).await;
    ok(&run);
    assert!(
        run.stdout
            .contains("no deploy finished); deleted its namespace(s) pr-9"),
        "{}",
        run.stdout
    );
    assert!(sim.get("", "Namespace", "", "pr-9").is_none());
    assert!(sim.get("apps", "Deployment", "pr-9", "api").is_none());
}

/// A custom cluster-scoped kind (a policy engine's `ClusterPolicy`, its
/// CRD installed in the cluster, not in the repo) is refused by a preview
/// before any request, and applied cluster-wide by a normal deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_refuses_a_custom_cluster_scoped_kind() {
    let (sim, _dir, kc, repo) = setup().await;
    sim.serve_kind(
        "kyverno.io",
        "v1",
        "ClusterPolicy",
        "clusterpolicies",
        false,
    );
    repo.write(
        "kdeploy.yaml",
        &format!(
            "{TEMPLATE}sources:\n  raw: [\"policies/{{env}}/{{app}}\"]\nkinds:\n  kyverno.io/ClusterPolicy: Cluster\n"
        ),
    )
    .write(
        "policies/staging/guard/policy.yaml",
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: require-labels\nspec:\n  rules: []\n",
    );
    repo.commit("a cluster policy");
    sim.clear_requests();
    let run = kdeploy(&repo, &kc, &["preview", "deploy", "--pr", "8"], &[]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("kyverno.io/ClusterPolicy require-labels")
            && run.stderr.contains("is cluster-scoped"),
        "{}",
        run.stderr
    );
    assert!(
        sim.requests().is_empty(),
        "requests before the refusal: {:#?}",
        sim.requests()
    );
    let run = kdeploy(
        &repo,
        &kc,
        &["apply", "--env", "staging", "--app", "guard"],
        &[],
    )
    .await;
    ok(&run);
    assert!(
        sim.get("kyverno.io", "ClusterPolicy", "", "require-labels")
            .is_some()
    );
}
