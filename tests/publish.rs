//! Publishing version changes through the GitHub API (`--pr`, `--push`)
//! against the fake GitHub's git data and pull request endpoints: one
//! branch and PR per release, idempotent re-runs, fast-forward-only pushes,
//! and tokens that lack a permission.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fake_github::{FakeGitHub, REPO};
use crate::util::{Repo, Run};

/// Runs the binary in `dir` against the fake, off the runtime's threads.
async fn kdeploy(gh: &FakeGitHub, dir: &Path, args: &[&str]) -> Run {
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
