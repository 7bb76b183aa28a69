//! The event parser against GitHub's real payloads (../shared/fixtures),
//! which carry the nulls, missing keys and Enterprise URLs of the wire.

use kdeploy::event::Event;

use crate::util::project_root;

fn fixture(path: &str) -> Option<Vec<u8>> {
    let full = project_root()
        .join("../shared/fixtures/github/events")
        .join(path);
    match std::fs::read(&full) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!(
                "skipped: {} is absent (shared fixtures are not in this checkout)",
                full.display()
            );
            None
        }
    }
}

#[test]
fn pull_request_payloads() {
    for (file, action) in [
        (
            "octokit-webhooks/api.github.com/pull_request/opened.payload.json",
            "opened",
        ),
        (
            "octokit-webhooks/api.github.com/pull_request/opened.with-null-body.json",
            "opened",
        ),
        (
            "octokit-webhooks/api.github.com/pull_request/synchronize.payload.json",
            "synchronize",
        ),
        (
            "octokit-webhooks/api.github.com/pull_request/reopened.payload.json",
            "reopened",
        ),
        (
            "octokit-webhooks/api.github.com/pull_request/closed.payload.json",
            "closed",
        ),
        (
            "octokit-webhooks/ghes-35/pull_request/opened.json",
            "opened",
        ),
    ] {
        let Some(bytes) = fixture(file) else { return };
        let e = Event::parse("pull_request", &bytes).unwrap_or_else(|err| panic!("{file}: {err}"));
        let Event::PullRequest {
            number,
            action: a,
            base_sha,
            head_sha,
            from_fork,
            merged,
            target,
            base_ref,
            labels,
        } = e
        else {
            panic!("{file}: not a pull request");
        };
        // Labels by name, as a policy acknowledgment reads them.
        let want: &[&str] = if file.contains("ghes-35") {
            &[]
        } else {
            &["bug"]
        };
        assert_eq!(labels, want, "{file}");
        // The branch the PR merges into, for branch-bound environments.
        assert_eq!(base_ref.as_deref(), Some("master"), "{file}");
        assert!(!target, "{file}: a pull_request event");
        assert_eq!(number, 2, "{file}");
        assert_eq!(a, action, "{file}");
        assert_eq!(base_sha.len(), 40, "{file}");
        assert_eq!(head_sha.len(), 40, "{file}");
        assert_ne!(base_sha, head_sha);
        assert!(!from_fork, "{file}: same-repo PR");
        // closed.payload.json has a merge_commit_sha but merged: false.
        assert!(!merged, "{file}");
    }
}

#[test]
fn push_payloads() {
    let cases = [
        // deletes a tag: after is all zeros
        (
            "octokit-webhooks/api.github.com/push/payload.json",
            true,
            false,
        ),
        // creates a branch: before is all zeros
        (
            "octokit-webhooks/api.github.com/push/with-new-branch.payload.json",
            false,
            true,
        ),
        ("octokit-webhooks/ghes-35/push/payload.json", false, true),
        ("octocrab/push_webhook_event.json", false, false),
        ("probot/push.json", false, false),
        ("drone-go-scm/push_branch_create.json", false, true),
    ];
    for (file, deleted, created) in cases {
        let Some(bytes) = fixture(file) else { return };
        let e = Event::parse("push", &bytes).unwrap_or_else(|err| panic!("{file}: {err}"));
        let Event::Push {
            before,
            after,
            git_ref,
        } = e
        else {
            panic!("{file}")
        };
        assert!(git_ref.starts_with("refs/"), "{file}");
        assert_eq!(after.is_none(), deleted, "{file}: after {after:?}");
        if created {
            assert!(before.is_none(), "{file}: before {before:?}");
        }
    }
}

#[test]
fn workflow_dispatch_has_no_sha() {
    let Some(bytes) = fixture("octokit-webhooks/api.github.com/workflow_dispatch/payload.json")
    else {
        return;
    };
    let e = Event::parse("workflow_dispatch", &bytes).unwrap();
    assert!(
        matches!(
            e,
            Event::WorkflowDispatch {
                base: None,
                head: None,
                ..
            }
        ),
        "{e:?}"
    );
    // The inputs come along for `mode: images` (app, env, version).
    let Event::WorkflowDispatch { inputs, .. } = e else {
        unreachable!()
    };
    assert_eq!(
        inputs.get("name").map(String::as_str),
        Some("Mona the Octocat")
    );
}

#[test]
fn repository_dispatch_carries_its_client_payload() {
    // The shape GitHub documents for the Actions event: `action` is the
    // sender's event_type; nested values are not inputs.
    let e = Event::parse(
        "repository_dispatch",
        br#"{"action":"set-version","branch":"main","client_payload":{"app":"api","env":"staging","version":"1.4.2","unit":false,"nested":{"x":1}},"repository":{"full_name":"o/r"}}"#,
    )
    .unwrap();
    let Event::RepositoryDispatch {
        event_type,
        payload,
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(event_type, "set-version");
    assert_eq!(payload.get("version").map(String::as_str), Some("1.4.2"));
    assert_eq!(payload.get("unit").map(String::as_str), Some("false"));
    assert!(!payload.contains_key("nested"));
}

#[test]
fn drone_pull_request_payload() {
    let Some(bytes) = fixture("drone-go-scm/pr_opened.json") else {
        return;
    };
    assert!(matches!(
        Event::parse("pull_request", &bytes),
        Ok(Event::PullRequest {
            from_fork: false,
            ..
        })
    ));
}
