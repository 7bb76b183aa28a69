//! Reviewed = applied, on the fake GitHub and the simulator: a pull
//! request is planned (its comment carries fingerprints), then merged, and
//! the push's deploy says whether it applies that plan.

use crate::action::{Job, cluster, output, pr_payload, push_payload};

/// Plans PR #`number` from main to a commit that makes `edit`, as the
/// action does on `pull_request`; the PR's head.
async fn planned_pr(job: &Job, number: u64, edit: impl FnOnce(&crate::util::Repo)) -> String {
    let base = job.base();
    let head = job.pr_commit(edit, "change");
    job.fake.add_pull(number, "pr", "open", false);
    job.fake.pull_commits(number, &head, None);
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", number, &base, &head, false),
            "pr",
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(number);
    assert!(
        comments
            .iter()
            .any(|(_, b)| b.contains("<!-- kdeploy-fingerprint ")),
        "{comments:?}"
    );
    head
}

/// Fast-forwards main to `sha` (a rebase merge, or a merge commit made
/// elsewhere) and records it as PR `number`'s merge.
fn merge(job: &Job, number: u64, head: &str, merged: &str) {
    job.origin.git(&["checkout", "-q", "main"]);
    job.origin.git(&["merge", "-q", "--ff-only", merged]);
    job.fake.pull_commits(number, head, Some(merged));
}

/// Main moves (`path` gets `text`) after PR `number` was planned, then the
/// PR's web bump is squashed onto it: (main before the squash, the squash).
fn squash_onto_moved_main(
    job: &Job,
    number: u64,
    head: &str,
    (path, text): (&str, &str),
) -> (String, String) {
    job.origin.write(path, text);
    let before = job.origin.commit("meanwhile on main");
    job.origin.write("services/web/version", "1.1.0\n");
    let squashed = job.origin.commit(&format!("bump (#{number})"));
    job.fake.pull_commits(number, head, Some(&squashed));
    (before, squashed)
}

/// The deploy job of a push from `before` to `after`, which succeeds.
async fn deploy(job: &Job, before: &str, after: &str) -> crate::action::Run {
    let sim = cluster().await;
    let run = job
        .deploy_push(&sim, &push_payload(Some(before), after), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_merge_applies_the_reviewed_plan() {
    let job = Job::new().await;
    let head = planned_pr(&job, 5, |r| {
        r.write("services/web/version", "1.1.0\n");
    })
    .await;
    let before = job.base();
    merge(&job, 5, &head, &head);
    let sim = cluster().await;
    let run = job
        .deploy_push(&sim, &push_payload(Some(&before), &head), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains("review: applies the plan reviewed in #5"),
        "{}",
        run.log
    );
    assert_eq!(output(&run.outputs, "reviewed").as_deref(), Some("true"));
    let runs = job.fake.check_runs();
    let summary = runs[0]["output"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("applies the plan reviewed in #5"),
        "{summary}"
    );
    assert!(!run.log.contains("::warning::"), "{}", run.log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_squash_merge_onto_a_moved_base_names_what_changed_since_review() {
    let job = Job::new().await;
    // The PR bumps web; meanwhile main changes web's config too.
    let head = planned_pr(&job, 6, |r| {
        r.write("services/web/version", "1.1.0\n");
    })
    .await;
    let (before, squashed) = squash_onto_moved_main(
        &job,
        6,
        &head,
        ("services/web/staging/config.yaml", "replicas: 4\n"),
    );
    let run = deploy(&job, &before, &squashed).await;
    assert!(
        run.log.contains("review: changed since review in #6"),
        "{}",
        run.log
    );
    assert!(
        run.log.contains("::warning::changed since review in #6"),
        "{}",
        run.log
    );
    assert_eq!(output(&run.outputs, "reviewed").as_deref(), Some("false"));
    assert!(
        run.summary
            .contains("| staging / web | **changed**: apps/Deployment web-staging/web: reviewed ~"),
        "{}",
        run.summary
    );
    assert!(
        run.summary.contains("likely cause: the base moved"),
        "{}",
        run.summary
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_push_is_unreviewed_and_fail_deploys_nothing() {
    let job = Job::new().await;
    let before = job.base();
    job.origin.write("services/web/version", "1.2.0\n");
    let after = job.origin.commit("straight to main");
    let sim = cluster().await;
    let run = job
        .deploy_push(
            &sim,
            &push_payload(Some(&before), &after),
            &[("INPUT_UNREVIEWED", "fail")],
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.log);
    assert!(
        run.log.contains("::error title=kdeploy (unreviewed)::unreviewed: this push came from no pull request; nothing was deployed"),
        "{}",
        run.log
    );
    assert_eq!(output(&run.outputs, "error").as_deref(), Some("unreviewed"));
    assert!(
        sim.requests().iter().all(|r| r.method == "GET"),
        "the cluster was written to"
    );
    // The same push with the default (warn) deploys, and says so.
    let run = job
        .deploy_push(&sim, &push_payload(Some(&before), &after), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("::warning::unreviewed: this push came from no pull request"),
        "{}",
        run.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_from_another_kdeploy_version_is_named_as_the_cause() {
    let job = Job::new().await;
    let head = planned_pr(&job, 8, |r| {
        r.write("services/web/version", "1.1.0\n");
    })
    .await;
    // The comment as an older kdeploy wrote it, with another plan of web.
    for (id, body) in job.fake.comments(8) {
        let older = body
            .replace(kdeploy::plan::fingerprint::VERSION, "0.0.9+000000000000")
            .replacen("\"id\":\"", "\"id\":\"0", 1);
        job.fake.edit_comment(id, &older);
    }
    let before = job.base();
    merge(&job, 8, &head, &head);
    let sim = cluster().await;
    let run = job
        .deploy_push(&sim, &push_payload(Some(&before), &head), &[])
        .await;
    assert!(
        run.log.contains("changed since review in #8"),
        "{}",
        run.log
    );
    assert!(
        run.summary
            .contains("likely cause: kdeploy changed: the plan was made by 0.0.9+000000000000"),
        "{}",
        run.summary
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_that_moved_elsewhere_still_applies_the_reviewed_plan() {
    let job = Job::new().await;
    let head = planned_pr(&job, 9, |r| {
        r.write("services/web/version", "1.1.0\n");
    })
    .await;
    // Main moves, but not where the pull request changes anything.
    let (before, squashed) = squash_onto_moved_main(
        &job,
        9,
        &head,
        ("services/api/staging/config.yaml", "replicas: 4\n"),
    );
    let run = deploy(&job, &before, &squashed).await;
    assert!(
        run.log.contains("review: applies the plan reviewed in #9"),
        "{}",
        run.log
    );
}

/// A merged pull request that removes an app: its deletions are held (the
/// rest deploys, the check run says how to consent); the consent label on
/// the pull request and a re-run complete them.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_removed_by_a_merge_is_deleted_only_with_the_consent_label() {
    let job = Job::new().await;
    let sim = cluster().await;
    let first = job.base();
    let run = job
        .deploy_push(&sim, &push_payload(None, &first), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        sim.get("apps", "Deployment", "web-staging", "web")
            .is_some()
    );

    let head = planned_pr(&job, 11, |r| {
        r.remove("services/web");
    })
    .await;
    merge(&job, 11, &head, &head);
    let run = job
        .deploy_push(&sim, &push_payload(Some(&first), &head), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        sim.get("apps", "Deployment", "web-staging", "web")
            .is_some(),
        "held"
    );
    let runs = job.fake.check_runs();
    let last = runs.last().expect("a check run");
    let title = last["output"]["title"].as_str().unwrap_or_default();
    assert!(title.contains("deletions held for consent"), "{title}");
    let summary = last["output"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("add the label `kdeploy/allow-deletions`"),
        "{summary}"
    );

    job.fake.label_pull(11, "kdeploy/allow-deletions");
    let run = job
        .deploy_push(&sim, &push_payload(Some(&first), &head), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("deletions consented to (label kdeploy/allow-deletions on #11)"),
        "{}",
        run.log
    );
    let web = sim.get("apps", "Deployment", "web-staging", "web");
    assert!(
        web.is_none_or(|d| !d["metadata"]["deletionTimestamp"].is_null()),
        "deleted"
    );
}

/// A merge queue: the `merge_group` event plans the queued commit against
/// the queue's base and posts the check run `kdeploy plan` on it (never a
/// deploy); the push of that commit is compared with that plan, whatever
/// the pull request's older comment says.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_queue_check_is_the_plan_the_push_applies() {
    let job = Job::new().await;
    let head = planned_pr(&job, 12, |r| {
        r.write("services/web/version", "1.1.0\n");
    })
    .await;
    // The PR's comment is stale (another plan); the queue's check is not.
    for (id, body) in job.fake.comments(12) {
        job.fake
            .edit_comment(id, &body.replacen("\"id\":\"", "\"id\":\"0", 1));
    }
    let base = job.base();
    let payload = serde_json::json!({
        "action": "checks_requested",
        "merge_group": {
            "head_sha": head, "base_sha": base, "base_ref": "refs/heads/main",
            "head_ref": format!("refs/heads/gh-readonly-queue/main/pr-12-{head}"),
            "head_commit": {"id": head, "message": "bump"}
        }
    });
    let run = job
        .run("merge_group", &payload, "main", &[("INPUT_MODE", "apply")])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("is planned (the check run `kdeploy plan`)"),
        "{}",
        run.log
    );
    let runs = job.fake.check_runs();
    let check = runs
        .iter()
        .find(|r| r["name"] == "kdeploy plan")
        .unwrap_or_else(|| panic!("{runs:?}"));
    assert_eq!(check["head_sha"], head.as_str());
    assert_eq!(check["conclusion"], "success");
    assert!(
        check["output"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("<!-- kdeploy-fingerprint "),
        "{check}"
    );

    merge(&job, 12, &head, &head);
    let sim = cluster().await;
    let run = job
        .deploy_push(&sim, &push_payload(Some(&base), &head), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains(&format!(
            "review: applies the plan checked in the merge queue's check of {} (#12)",
            &head[..12]
        )),
        "{}",
        run.log
    );
}

/// Only kdeploy's own plan comment counts as the review: a copy of a real
/// plan posted by someone else on an unplanned pull request is not read.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_comment_someone_else_posted_is_not_a_review() {
    let job = Job::new().await;
    let head = planned_pr(&job, 13, |r| {
        r.write("services/web/version", "1.1.0\n");
    })
    .await;
    let genuine = job.fake.comments(13)[0].1.clone();
    job.fake.add_pull(14, "pr", "open", false);
    job.fake.add_comment_by(14, &genuine, "mallory", "User");
    let before = job.base();
    merge(&job, 14, &head, &head);
    let run = deploy(&job, &before, &head).await;
    assert!(
        run.log
            .contains("review: unreviewed: pull request #14 has no kdeploy plan comment"),
        "{}",
        run.log
    );
}
