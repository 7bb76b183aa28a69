//! GitHub as it really answers: a renamed repository's redirects on every
//! kind of call, dispatch payloads whose fields have other JSON types, and
//! pull requests closed with or without a merge.

use serde_json::json;

use crate::action::{Job, pr_payload, push_payload};
use crate::fake_github::FakeGitHub;
use crate::util::{Repo, shared_event};

/// The calls of `fake` as `METHOD path` without the query.
fn calls(fake: &FakeGitHub) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.split('?').next().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn a_renamed_repository_is_followed_on_reads_and_writes_of_the_comment() {
    let job = Job::new().await;
    job.fake.rename_repository();
    let run = job
        .pr_push(
            "opened",
            5,
            |r| {
                r.write(
                    "services/web/version",
                    "1.1.0
",
                );
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert_eq!(job.fake.comments(5).len(), 1, "{}", run.log);
    let calls = calls(&job.fake);
    // Each call went to the old path, was redirected, and was repeated
    // with the same method at the repository's id.
    for call in [
        "GET /repos/Codertocat/Hello-World/issues/5/comments",
        "GET /repositories/186853002/issues/5/comments",
        "POST /repos/Codertocat/Hello-World/issues/5/comments",
        "POST /repositories/186853002/issues/5/comments",
    ] {
        assert!(calls.iter().any(|c| c == call), "{call} not in {calls:#?}");
    }
    // A second run edits the comment through the redirect too.
    let run = job
        .pr_push(
            "synchronize",
            5,
            |r| {
                r.write("services/web/version", "1.2.0\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(5);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].1.contains("1.2.0"), "{comments:?}");
    assert!(calls_of(
        &job.fake,
        "PATCH /repositories/186853002/issues/comments/"
    ));
}

fn calls_of(fake: &FakeGitHub, prefix: &str) -> bool {
    calls(fake).iter().any(|c| c.starts_with(prefix))
}

#[tokio::test]
async fn a_renamed_repositorys_check_run_and_deployment_statuses_complete() {
    let job = Job::new().await;
    let sim = crate::action::cluster().await;
    job.fake.rename_repository();
    let payload = push_payload(None, &job.base());
    let run = job.deploy_push(&sim, &payload, &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    let runs = job.fake.check_runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "completed", "{:#}", runs[0]);
    assert_eq!(runs[0]["conclusion"], "success", "{:#}", runs[0]);
    let deployments = job.fake.deployments();
    assert_eq!(deployments.len(), 1);
    assert_eq!(
        deployments[0].1.last().expect("statuses")["state"],
        "success"
    );
    assert!(calls_of(
        &job.fake,
        "PATCH /repositories/186853002/check-runs/"
    ));
    assert!(calls_of(
        &job.fake,
        "POST /repositories/186853002/deployments/"
    ));
}

#[tokio::test]
async fn a_redirect_to_another_host_fails_loudly_and_keeps_the_token() {
    let job = Job::new().await;
    job.fake.redirect_elsewhere("https://elsewhere.example");
    let run = job
        .pr_push(
            "opened",
            5,
            |r| {
                r.write(
                    "services/web/version",
                    "1.1.0
",
                );
            },
            &[],
        )
        .await;
    assert!(
        run.log.contains("was redirected (301) to https://elsewhere.example/repositories/186853002/issues/5/comments")
            && run.log.contains("the token is sent only to the API"),
        "{}",
        run.log
    );
    assert!(job.fake.comments(5).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_data_calls_of_a_renamed_repository_complete_at_the_new_location() {
    let gh = FakeGitHub::start().await;
    let repo = Repo::with_app();
    repo.commit("apps");
    let main = gh.push_branch(repo.path(), "main");
    gh.rename_repository();
    let run = crate::publish::kdeploy(
        &gh,
        repo.path(),
        &["set-version", "api", "staging", "1.1.0", "--push"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let tip = gh.branch("main").expect("main");
    assert_ne!(tip, main, "the ref was not updated");
    assert!(
        run.stdout.contains(&format!("pushed {tip} to main")),
        "{}",
        run.stdout
    );
    assert!(
        calls_of(&gh, "PATCH /repositories/186853002/git/refs/"),
        "{:#?}",
        calls(&gh)
    );
    let pr = crate::publish::kdeploy(
        &gh,
        repo.path(),
        &["set-version", "api", "production", "1.1.0", "--pr"],
    )
    .await;
    assert_eq!(pr.code, 0, "{}{}", pr.stdout, pr.stderr);
    assert_eq!(gh.pulls().len(), 1);
}

#[test]
fn dispatch_fields_that_are_not_strings_are_refused_by_name() {
    use kdeploy::event::Event;
    for (value, found) in [
        (json!(1.10), "a number"),
        (json!(2), "a number"),
        (json!(true), "true"),
        (json!(null), "null"),
        (json!(["1.2"]), "a list"),
        (json!({"tag": "1.2"}), "a map"),
    ] {
        for field in ["app", "env", "version", "from", "to"] {
            let mut client_payload = json!({"app": "api", "env": "staging", "version": "1.4.2"});
            client_payload[field] = value.clone();
            let payload = json!({"action": "set-version", "client_payload": client_payload});
            let err = Event::parse("repository_dispatch", payload.to_string().as_bytes())
                .expect_err("refused");
            assert!(
                err.to_string().contains(&format!(
                    "`client_payload.{field}` is {found}, not a string"
                )),
                "{err}"
            );
        }
        let payload = json!({"ref": "refs/heads/main", "inputs": {"head": value.clone()}});
        let err =
            Event::parse("workflow_dispatch", payload.to_string().as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("`inputs.head` is"), "{err}");
    }
    // Strings pass as written: 1.10 stays 1.10; other fields keep their text.
    let payload = json!({"action": "set-version", "client_payload": {"app": "api", "env": "staging", "version": "1.10", "unit": false}});
    let Ok(Event::RepositoryDispatch { payload, .. }) =
        Event::parse("repository_dispatch", payload.to_string().as_bytes())
    else {
        panic!("parses")
    };
    assert_eq!(payload["version"], "1.10");
    assert_eq!(payload["unit"], "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_version_opens_no_pull_request() {
    let gh = FakeGitHub::start().await;
    let origin = Repo::with_app();
    origin.commit("apps");
    gh.push_branch(origin.path(), "main");
    let payload = json!({
        "action": "set-version", "branch": "main",
        "client_payload": {"app": "api", "env": "staging", "version": 1.10},
        "repository": {"full_name": crate::fake_github::REPO},
    });
    let (code, log, _, _) = crate::publish::action_on(
        &gh,
        &origin,
        "main",
        "repository_dispatch",
        &payload,
        &[("INPUT_MODE", "images")],
    )
    .await;
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("`client_payload.version` is a number, not a string"),
        "{log}"
    );
    assert!(gh.pulls().is_empty());
}

#[tokio::test]
async fn closed_pull_requests_say_whether_they_were_merged() {
    let job = Job::new().await;
    let base = job.base();
    let head = job.pr_commit(
        |r| {
            r.write("services/web/version", "1.1.0\n");
        },
        "bump",
    );
    // GitHub's own closed payload: `merge_commit_sha` is set although it
    // was not merged; only `merged` says.
    let mut closed =
        shared_event("octokit-webhooks/api.github.com/pull_request/closed.payload.json")
            .unwrap_or_else(|| pr_payload("closed", 5, &base, &head, false));
    closed["action"] = json!("closed");
    closed["pull_request"]["base"]["sha"] = json!(base);
    closed["pull_request"]["head"]["sha"] = json!(head);
    closed["pull_request"]["merged"] = json!(false);
    let run = job.run("pull_request", &closed, "pr", &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains(
            "::notice::the pull request was closed without merging; nothing to plan or deploy"
        ),
        "{}",
        run.log
    );
    closed["pull_request"]["merged"] = json!(true);
    let run = job.run("pull_request", &closed, "pr", &[]).await;
    assert!(
        run.log.contains("::notice::the pull request was merged; nothing to plan here: the push to the base branch deploys it"),
        "{}",
        run.log
    );
    assert!(job.fake.comments(5).is_empty());
}
