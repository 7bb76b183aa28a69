//! The container Action end to end: real git clones, real event payloads
//! (../shared/fixtures/github/events, with SHAs of the test repository put
//! in), and the fake GitHub API over HTTP.

use std::path::PathBuf;
use std::time::Duration;

use kdeploy::action::{self, ActionEnv};
use kdeploy::github::RetryPolicy;
use serde_json::{Value, json};

use crate::fake_github::{FakeGitHub, Fault, REPO};
use crate::util::{Repo, shallow_clone, shared_event};

const TOKEN: &str = "ghs_CANARYtoken0123456789abcdefABCDEF";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(20),
        max_wait: Duration::from_secs(5),
    }
}

/// A pull request payload for `number` with the given SHAs.
pub(crate) fn pr_payload(action: &str, number: u64, base: &str, head: &str, fork: bool) -> Value {
    let mut p = shared_event("octokit-webhooks/api.github.com/pull_request/opened.payload.json")
        .unwrap_or_else(|| {
            json!({"action": "opened", "number": 2, "pull_request": {
            "number": 2, "state": "open", "merged": false, "merge_commit_sha": null,
            "base": {"ref": "master", "sha": "", "repo": {"full_name": REPO}},
            "head": {"ref": "changes", "sha": "", "repo": {"full_name": REPO}}},
            "repository": {"full_name": REPO}})
        });
    p["action"] = json!(action);
    p["number"] = json!(number);
    p["pull_request"]["number"] = json!(number);
    p["pull_request"]["base"]["sha"] = json!(base);
    p["pull_request"]["head"]["sha"] = json!(head);
    if fork {
        p["pull_request"]["head"]["repo"]["full_name"] = json!("someone/Hello-World");
    }
    p
}

pub(crate) struct Run {
    pub(crate) code: u8,
    pub(crate) log: String,
    pub(crate) summary: String,
    pub(crate) outputs: String,
}

/// A CI job: a shallow clone of the PR head, runner files, the fake API.
pub(crate) struct Job {
    pub(crate) origin: Repo,
    runner: tempfile::TempDir,
    pub(crate) fake: FakeGitHub,
}

impl Job {
    pub(crate) async fn new() -> Job {
        let origin = Repo::with_app();
        origin
            .write("services/web/config.yaml", "image: ghcr.io/example/web\n")
            .write("services/web/version", "1.0.0\n")
            .write("services/web/staging/config.yaml", "");
        origin.commit("base");
        Job {
            origin,
            runner: tempfile::tempdir().expect("temp"),
            fake: FakeGitHub::start().await,
        }
    }

    /// Commits `edit` on the PR branch and runs the action on a
    /// `pull_request` event `action` for PR `number` (same repo, not a fork).
    pub(crate) async fn pr_push(
        &self,
        action: &str,
        number: u64,
        edit: impl FnOnce(&Repo),
        extra: &[(&str, &str)],
    ) -> Run {
        let base = self.base();
        let head = self.pr_commit(edit, "change");
        self.run(
            "pull_request",
            &pr_payload(action, number, &base, &head, false),
            "pr",
            extra,
        )
        .await
    }

    /// Commits on branch `pr` (created from main when missing).
    pub(crate) fn pr_commit(&self, edit: impl FnOnce(&Repo), message: &str) -> String {
        let branches = self.origin.git(&["branch", "--list", "pr"]);
        if branches.trim().is_empty() {
            self.origin.git(&["checkout", "-q", "-b", "pr"]);
        } else {
            self.origin.git(&["checkout", "-q", "pr"]);
        }
        edit(&self.origin);
        let sha = self.origin.commit(message);
        self.origin.git(&["checkout", "-q", "main"]);
        sha
    }

    pub(crate) async fn run(
        &self,
        event: &str,
        payload: &Value,
        branch: &str,
        extra: &[(&str, &str)],
    ) -> Run {
        self.run_until(event, payload, branch, extra, std::future::pending())
            .await
    }

    /// A push deploying to `staging` of `sim`, with `extra` inputs.
    pub(crate) async fn deploy_push(
        &self,
        sim: &crate::k8s_sim::Sim,
        payload: &Value,
        extra: &[(&str, &str)],
    ) -> Run {
        let kubeconfig = sim.kubeconfig();
        let mut inputs = vec![
            ("INPUT_KUBECONFIG", kubeconfig.as_str()),
            ("INPUT_ENVIRONMENTS", "staging"),
        ];
        inputs.extend_from_slice(extra);
        self.run("push", payload, "main", &inputs).await
    }

    /// `run`, cancelled (as by SIGTERM) when `cancel` completes.
    async fn run_until(
        &self,
        event: &str,
        payload: &Value,
        branch: &str,
        extra: &[(&str, &str)],
        cancel: impl std::future::Future<Output = ()>,
    ) -> Run {
        let work = shallow_clone(&self.origin, branch);
        let path = |name: &str| self.runner.path().join(name);
        std::fs::write(path("event.json"), payload.to_string()).expect("write event");
        let _ = std::fs::remove_file(path("summary.md"));
        let _ = std::fs::remove_file(path("output"));
        let mut vars: Vec<(String, String)> = vec![
            ("GITHUB_EVENT_NAME".into(), event.into()),
            (
                "GITHUB_EVENT_PATH".into(),
                path("event.json").display().to_string(),
            ),
            ("GITHUB_WORKSPACE".into(), work.path().display().to_string()),
            ("GITHUB_API_URL".into(), self.fake.url.clone()),
            ("GITHUB_REPOSITORY".into(), REPO.into()),
            ("GITHUB_WORKFLOW".into(), "deploy".into()),
            (
                "GITHUB_STEP_SUMMARY".into(),
                path("summary.md").display().to_string(),
            ),
            ("GITHUB_OUTPUT".into(), path("output").display().to_string()),
            (
                "RUNNER_TEMP".into(),
                self.runner.path().display().to_string(),
            ),
            ("INPUT_GITHUB-TOKEN".into(), TOKEN.into()),
            ("INPUT_MODE".into(), "auto".into()),
            ("INPUT_ENVIRONMENTS".into(), String::new()),
        ];
        for (k, v) in extra {
            vars.push(((*k).into(), (*v).into()));
        }
        let env = ActionEnv::from_vars(vars);
        let mut log = Vec::new();
        let code = match action::run_until(&env, fast_retry(), &mut log, cancel).await {
            Ok(code) => code,
            Err(e) => {
                log.extend(format!("error: {e:#}").into_bytes());
                255
            }
        };
        let read = |name: &str| std::fs::read_to_string(path(name)).unwrap_or_default();
        Run {
            code,
            log: String::from_utf8_lossy(&log).into_owned(),
            summary: read("summary.md"),
            outputs: read("output"),
        }
    }

    /// The base and a PR commit on it that bumps `web` to 1.1.0.
    fn web_bump(&self) -> (String, String) {
        let base = self.base();
        let head = self.pr_commit(
            |r| {
                r.write("services/web/version", "1.1.0\n");
            },
            "bump",
        );
        (base, head)
    }

    pub(crate) fn base(&self) -> String {
        self.origin.git(&["rev-parse", "main"]).trim().to_string()
    }
}

/// A simulated cluster whose controllers roll workloads out.
pub(crate) async fn cluster() -> crate::k8s_sim::Sim {
    let sim = crate::k8s_sim::Sim::start().await;
    sim.run_controllers(Duration::from_millis(20));
    sim
}

/// A push of main from `before` (none: the first push) to `after`.
pub(crate) fn push_payload(before: Option<&str>, after: &str) -> Value {
    json!({"ref": "refs/heads/main", "before": before.unwrap_or("0000000000000000000000000000000000000000"),
        "after": after, "deleted": false})
}

pub(crate) fn output(outputs: &str, name: &str) -> Option<String> {
    let start = outputs.find(&format!("{name}<<"))?;
    let rest = &outputs[start..];
    let (header, body) = rest.split_once('\n')?;
    let delim = header.split_once("<<")?.1;
    Some(body.split_once(&format!("\n{delim}"))?.0.to_string())
}

/// Everything a run printed or wrote, minus the `::add-mask::` command that
/// hands the token to the runner for masking.
fn visible(run: &Run, fake: &FakeGitHub, pr: u64) -> String {
    let log: String = run
        .log
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect::<Vec<_>>()
        .join("\n");
    let comments: String = fake.comments(pr).into_iter().map(|(_, b)| b).collect();
    format!("{log}\n{}\n{}\n{comments}", run.summary, run.outputs)
}

#[tokio::test]
async fn pr_comment_is_created_then_updated_in_place() {
    let job = Job::new().await;
    let base = job.base();
    let head = job.pr_commit(
        |r| {
            r.write("services/api/production/config.yaml", "replicas: 5\n");
        },
        "scale",
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 7, &base, &head, false),
            "pr",
            &[("GITHUB_SERVER_URL", "https://github.com")],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains(&format!("::add-mask::{TOKEN}")),
        "token masked first"
    );
    // Each app's section links its config at the head commit.
    let link = format!(
        "Config: [`services/api/production`](https://github.com/{REPO}/blob/{head}/services/api/production)"
    );
    assert!(job.fake.comments(7)[0].1.contains(&link), "{link}");
    let comments = job.fake.comments(7);
    assert_eq!(comments.len(), 1, "{comments:?}");
    let (id, body) = &comments[0];
    assert!(body.starts_with("<!-- kdeploy-plan:deploy -->"), "{body}");
    assert!(body.contains("+  replicas: 5"), "{body}");
    assert_eq!(output(&run.outputs, "has-changes").as_deref(), Some("true"));
    assert_eq!(output(&run.outputs, "changed").as_deref(), Some("1"));
    assert!(
        output(&run.outputs, "comment-url")
            .is_some_and(|u| u.contains(&format!("issuecomment-{id}")))
    );
    let plan_json = PathBuf::from(output(&run.outputs, "plan-json").unwrap());
    let plan: Value = serde_json::from_slice(&std::fs::read(plan_json).unwrap()).unwrap();
    assert_eq!(plan["summary"]["changed"], 1);
    assert!(run.summary.contains("kdeploy plan") && run.summary.contains("replicas: 5"));
    assert!(run.log.contains("::group::Render and plan") && run.log.contains("::endgroup::"));
    // The API saw the token; nothing else shows it.
    assert!(
        job.fake
            .requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")))
    );
    assert!(!visible(&run, &job.fake, 7).contains(TOKEN));

    // Someone else comments; a new push to the PR updates our comment.
    job.fake.add_comment(7, "LGTM");
    let head2 = job.pr_commit(
        |r| {
            r.write("services/api/production/config.yaml", "replicas: 6\n");
        },
        "more",
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload("synchronize", 7, &base, &head2, false),
            "pr",
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let after = job.fake.comments(7);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].0, *id, "same comment, updated in place");
    assert!(after[0].1.contains("+  replicas: 6") && !after[0].1.contains("replicas: 5\n```"));
    assert_eq!(after[1].1, "LGTM");
    let methods: Vec<String> = job
        .fake
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(
        methods.iter().filter(|m| *m == "PATCH").count(),
        1,
        "{methods:?}"
    );

    // Reverting the change leaves no stale diff behind.
    let head3 = job.pr_commit(
        |r| {
            r.write("services/api/production/config.yaml", "replicas: 3\n");
        },
        "revert",
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload("synchronize", 7, &base, &head3, false),
            "pr",
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(job.fake.comments(7)[0].1.contains("No changes"));
    assert_eq!(
        output(&run.outputs, "has-changes").as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn oversized_plans_are_split_into_parts_and_parts_are_removed_when_not_needed() {
    let job = Job::new().await;
    let base = job.base();
    let head = job.pr_commit(
        |r| {
            for app in 0..12 {
                let mut cfg = String::from("image: ghcr.io/example/big\nenv:\n");
                for i in 0..400 {
                    cfg.push_str(&format!(
                        "  VARIABLE_NUMBER_{i}: a-fairly-long-value-{i}-{app}\n"
                    ));
                }
                r.write(&format!("services/big-{app}/config.yaml"), &cfg)
                    .write(&format!("services/big-{app}/version"), "1\n")
                    .write(&format!("services/big-{app}/staging/config.yaml"), "");
            }
        },
        "big",
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 9, &base, &head, false),
            "pr",
            &[("INPUT_MAX-COMMENT-PARTS", "3")],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let parts = job.fake.comments(9);
    assert_eq!(
        parts.len(),
        3,
        "{:?}",
        parts.iter().map(|p| p.1.len()).collect::<Vec<_>>()
    );
    for (n, (_, body)) in parts.iter().enumerate() {
        assert!(body.chars().count() <= 65_536);
        assert!(body.contains(&format!("(part {}/3)", n + 1)));
        assert_eq!(
            body.matches("```diff").count() * 2,
            body.matches("```").count(),
            "fences close"
        );
    }
    assert!(parts[2].1.contains("left out to fit"), "the rest is named");

    // The next push is small: one part stays, the others go.
    let small = job.pr_commit(
        |r| {
            r.remove("services/big-0").remove("services/big-1");
            for app in 2..12 {
                r.remove(&format!("services/big-{app}"));
            }
            r.write("services/api/version", "2.0.0\n");
        },
        "small",
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload("synchronize", 9, &base, &small, false),
            "pr",
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let parts = job.fake.comments(9);
    assert_eq!(parts.len(), 1);
    // Three comments fill two pages; the second is read from GitHub's
    // `Link` URL verbatim (the /repositories/{id}/ form).
    assert!(
        job.fake
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/repositories/"))
    );
    assert!(job.fake.requests().iter().any(|r| {
        r.method == "PATCH"
            && r.body["body"]
                .as_str()
                .is_some_and(|b| b.contains("api:2.0.0"))
    }));
    assert!(!parts[0].1.contains("part 1/"));
    assert!(run.log.contains("2 deleted"), "{}", run.log);
}

#[tokio::test]
async fn read_only_token_falls_back_to_the_job_summary() {
    let job = Job::new().await;
    job.fake.read_only();
    let run = job
        .pr_push(
            "opened",
            3,
            |r| {
                r.write("services/web/version", "1.1.0\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("::warning::cannot comment on the pull request"),
        "{}",
        run.log
    );
    assert!(
        run.log
            .contains("the token needs `issues: write` or `pull-requests: write`"),
        "{}",
        run.log
    );
    assert!(run.summary.contains("web:1.1.0"), "{}", run.summary);
    assert!(job.fake.comments(3).is_empty());
}

#[tokio::test]
async fn fork_pull_requests_do_not_call_the_comment_api() {
    let job = Job::new().await;
    let (base, head) = job.web_bump();
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 4, &base, &head, true),
            "pr",
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("from a fork"));
    assert!(job.fake.requests().is_empty());
    assert!(run.summary.contains("web:1.1.0"));
}

#[tokio::test]
async fn the_plan_log_is_coloured_in_actions_unless_no_color() {
    let job = Job::new().await;
    let (base, head) = job.web_bump();
    let payload = pr_payload("opened", 6, &base, &head, true);
    let run = job
        .run(
            "pull_request",
            &payload,
            "pr",
            &[("GITHUB_ACTIONS", "true")],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("\u{1b}["), "{}", run.log);
    // The environments the plan changes, for a matrix of deploy jobs
    // (production pins its own web version, so only staging changes).
    let envs: Value =
        serde_json::from_str(&output(&run.outputs, "environments").expect("output")).expect("JSON");
    assert_eq!(envs, json!([{"environment": "staging", "context": null}]));
    let run = job
        .run(
            "pull_request",
            &payload,
            "pr",
            &[("GITHUB_ACTIONS", "true"), ("NO_COLOR", "1")],
        )
        .await;
    assert!(!run.log.contains("\u{1b}["), "{}", run.log);
}

#[tokio::test]
async fn pull_request_target_from_a_fork_is_refused() {
    let job = Job::new().await;
    let (base, head) = job.web_bump();
    let fork = pr_payload("opened", 4, &base, &head, true);
    let run = job.run("pull_request_target", &fork, "pr", &[]).await;
    // An error (255 here): the binary prints it and exits 2.
    assert_eq!(run.code, 255, "{}", run.log);
    assert!(
        run.log.contains(
            "refusing to render a pull request from another repository on `pull_request_target`"
        ),
        "{}",
        run.log
    );
    assert!(
        run.log.contains("allow-pull-request-target: true"),
        "{}",
        run.log
    );
    assert!(job.fake.requests().is_empty(), "nothing was posted");
    assert!(!run.summary.contains("web:1.1.0"), "nothing was rendered");

    // Allowed on purpose: planned, with a warning.
    let run = job
        .run(
            "pull_request_target",
            &fork,
            "pr",
            &[("INPUT_ALLOW-PULL-REQUEST-TARGET", "true")],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("::warning::`pull_request_target` runs with"),
        "{}",
        run.log
    );

    // From the same repository: planned, with the same warning.
    let same = pr_payload("opened", 5, &base, &head, false);
    let run = job.run("pull_request_target", &same, "pr", &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("::warning::`pull_request_target` runs with"),
        "{}",
        run.log
    );
    assert!(run.summary.contains("web:1.1.0"), "{}", run.summary);
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried() {
    let job = Job::new().await;
    job.fake
        .fail_next([Fault::bad_gateway(), Fault::rate_limited(1)]);
    let started = std::time::Instant::now();
    let run = job
        .pr_push(
            "opened",
            5,
            |r| {
                r.write("services/web/version", "1.1.0\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert_eq!(job.fake.comments(5).len(), 1, "{}", run.log);
    // The first call (who the token is) meets the 502 and the 429, then
    // gets GitHub's 403 for an installation token; the list follows.
    let gets: Vec<String> = job
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.split('?').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        gets,
        [
            "/user",
            "/user",
            "/user",
            "/repos/Codertocat/Hello-World/issues/5/comments"
        ],
        "502, 429, then the answers"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry-after honoured"
    );
}

#[tokio::test]
async fn render_errors_are_reported_in_the_comment_and_fail_the_job() {
    let job = Job::new().await;
    let run = job
        .pr_push(
            "opened",
            6,
            |r| {
                r.write("services/web/staging/config.yaml", "replicas: [1\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 2, "{}", run.log);
    assert!(
        run.log
            .contains("::error file=services/web/staging/config.yaml,line="),
        "{}",
        run.log
    );
    let comments = job.fake.comments(6);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].1.contains("Rendering failed")
            && comments[0].1.contains("services/web/staging/config.yaml:")
    );
}

#[tokio::test]
async fn first_push_in_plan_mode_adds_everything() {
    let job = Job::new().await;
    let head = job.base();
    let mut payload = shared_event("octokit-webhooks/api.github.com/push/with-new-branch.payload.json")
        .unwrap_or_else(|| json!({"ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000", "created": true, "deleted": false}));
    payload["after"] = json!(head);
    payload["ref"] = json!("refs/heads/main");
    let run = job
        .run("push", &payload, "main", &[("INPUT_MODE", "plan")])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("first push"));
    assert!(!run.log.contains("::group::Deploy"));
    assert_eq!(
        output(&run.outputs, "added").as_deref(),
        Some("15"),
        "{}",
        run.outputs
    );
    assert!(
        job.fake.requests().is_empty(),
        "a push has no PR to comment on"
    );
}

#[tokio::test]
async fn push_compares_before_and_after_fetching_what_the_shallow_clone_lacks() {
    let job = Job::new().await;
    let before = job.base();
    job.origin.write("services/web/version", "1.2.0\n");
    let after = job.origin.commit("bump web");
    let mut payload = shared_event("octokit-webhooks/api.github.com/push/payload.json")
        .unwrap_or_else(|| json!({"ref": "refs/heads/main", "deleted": false}));
    payload["before"] = json!(before);
    payload["after"] = json!(after);
    payload["deleted"] = json!(false);
    let run = job
        .run("push", &payload, "main", &[("INPUT_MODE", "plan")])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert_eq!(
        output(&run.outputs, "changed").as_deref(),
        Some("1"),
        "{}",
        run.log
    );
}

#[tokio::test]
async fn unhandled_events_and_closed_prs_do_nothing() {
    let job = Job::new().await;
    let run = job
        .run("issues", &json!({"action": "opened"}), "main", &[])
        .await;
    assert_eq!(run.code, 0);
    assert!(
        run.log
            .contains("::notice::kdeploy does nothing on `issues` events")
    );
    let closed = shared_event("octokit-webhooks/api.github.com/pull_request/closed.payload.json")
        .unwrap_or_else(|| pr_payload("closed", 2, "a", "b", false));
    let run = job.run("pull_request", &closed, "main", &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("closed"));
    assert!(job.fake.requests().is_empty());
}

#[tokio::test]
async fn malformed_or_missing_payloads_are_clear_errors() {
    let job = Job::new().await;
    let run = job
        .run(
            "pull_request",
            &json!({"action": "opened", "pull_request": {"number": "x"}}),
            "main",
            &[],
        )
        .await;
    assert_eq!(run.code, 255);
    assert!(
        run.log.contains("malformed pull_request event payload"),
        "{}",
        run.log
    );
    let run = job
        .run(
            "pull_request",
            &json!({}),
            "main",
            &[("GITHUB_EVENT_PATH", "")],
        )
        .await;
    assert!(
        run.log.contains("GITHUB_EVENT_PATH is not set"),
        "{}",
        run.log
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload(
                "opened",
                2,
                "1111111111111111111111111111111111111111",
                &job.base(),
                false,
            ),
            "main",
            &[],
        )
        .await;
    assert_eq!(run.code, 255);
    assert!(run.log.contains("fetch-depth: 0"), "{}", run.log);
}

#[tokio::test]
async fn enterprise_api_url_with_path_prefix_is_respected() {
    let job = Job::new().await;
    job.fake.add_comment(8, "first");
    job.fake.add_comment(8, "second");
    job.fake.add_comment(8, "third");
    let api = format!("{}/api/v3", job.fake.url);
    let run = job
        .pr_push(
            "opened",
            8,
            |r| {
                r.write("services/web/version", "1.3.0\n");
            },
            &[("GITHUB_API_URL", &api)],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert_eq!(job.fake.comments(8).len(), 4, "{}", run.log);
    let paths: Vec<String> = job.fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().all(|p| p.starts_with("/api/v3/")), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("/api/v3/repositories/")),
        "Link followed: {paths:?}"
    );
}

#[tokio::test]
async fn secret_values_and_the_token_appear_nowhere() {
    let job = Job::new().await;
    let secret = |v: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {v}\n  api-key: CANARY-KEY-SAME\n"
        )
    };
    job.origin
        .write("charts/raw/Chart.yaml", "name: raw\nversion: 1.0.0\n")
        .write(
            "charts/raw/templates/secret.yaml",
            &secret("CANARY-PASS-OLD"),
        )
        .write("services/vault/config.yaml", "chart: raw\n")
        .write("services/vault/version", "1\n")
        .write("services/vault/staging/config.yaml", "");
    job.origin.commit("secret");
    let run = job
        .pr_push(
            "opened",
            11,
            |r| {
                r.write(
                    "charts/raw/templates/secret.yaml",
                    &secret("CANARY-PASS-NEW"),
                );
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert_eq!(output(&run.outputs, "changed").as_deref(), Some("1"));
    let plan_json = std::fs::read_to_string(output(&run.outputs, "plan-json").unwrap()).unwrap();
    let everything = format!("{}\n{plan_json}", visible(&run, &job.fake, 11));
    assert!(everything.contains("<redacted> (changed)"), "{everything}");
    for canary in [
        "CANARY-PASS-OLD",
        "CANARY-PASS-NEW",
        "CANARY-KEY-SAME",
        TOKEN,
    ] {
        assert!(!everything.contains(canary), "{canary} leaked");
    }
}

#[tokio::test]
async fn sops_age_key_input_plans_and_deploys_without_printing_values_or_the_key() {
    let Some(keys) = crate::secrets::Keys::new() else {
        return;
    };
    let key = std::fs::read_to_string(keys.file()).unwrap();
    let private = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let job = Job::new().await;
    let sim = cluster().await;
    let secret = keys.encrypt(&format!("DB_PASSWORD: {}\n", crate::secrets::CANARY), &[]);
    let base = job.base();
    let head = job.pr_commit(
        |r| {
            r.write("services/web/secrets.sops.yaml", &secret);
        },
        "secrets",
    );
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 12, &base, &head, false),
            "pr",
            &[("INPUT_SOPS-AGE-KEY", key.as_str())],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains(&format!("::add-mask::{private}")),
        "{}",
        run.log
    );
    let everything = visible(&run, &job.fake, 12);
    assert!(everything.contains("web-secrets"), "{everything}");
    assert!(!everything.contains("not compared"), "{everything}");
    crate::secrets::assert_clean("pull request", &everything);
    assert!(!everything.contains(&private), "the key leaked");

    // Merged: the deploy decrypts with the input and applies the Secret.
    job.origin.git(&["merge", "-q", "--ff-only", "pr"]);
    let payload = push_payload(Some(&base), &head);
    let run = job
        .deploy_push(&sim, &payload, &[("INPUT_SOPS-AGE-KEY", key.as_str())])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let applied = sim
        .get("", "Secret", "web-staging", "web-secrets")
        .expect("applied");
    assert!(applied["data"]["DB_PASSWORD"].is_string());
    let everything = visible(&run, &job.fake, 0);
    crate::secrets::assert_clean("deploy", &everything);
    for run in job.fake.check_runs() {
        crate::secrets::assert_clean("check run", &run.to_string());
    }
    for (deployment, statuses) in job.fake.deployments() {
        crate::secrets::assert_clean("deployment", &format!("{deployment}{statuses:?}"));
    }
}

#[tokio::test]
async fn push_deploys_with_the_kubeconfig_input_and_masks_its_secrets() {
    let job = Job::new().await;
    let sim = cluster().await;
    let before = job.base();
    job.origin.write("services/web/version", "1.2.0\n");
    let after = job.origin.commit("bump web");
    let payload = push_payload(Some(&before), &after);
    let run = job.deploy_push(&sim, &payload, &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains("::add-mask::sim-token-CANARY-KUBE"),
        "{}",
        run.log
    );
    assert!(!visible(&run, &job.fake, 0).contains("CANARY-KUBE"));
    assert!(
        run.log
            .contains("staging: previous state from the base revision"),
        "{}",
        run.log
    );
    assert!(
        run.summary.contains("### kdeploy deploy"),
        "{}",
        run.summary
    );
    assert_eq!(output(&run.outputs, "deployed").as_deref(), Some("true"));
    // No record yet: the base revision is the previous state, so only the
    // changed Deployment is sent, plus its namespace, missing from the cluster.
    assert!(
        run.log.contains(
            "applied  Namespace web-staging\n  applied  apps/Deployment web-staging/web\n"
        ),
        "{}",
        run.log
    );
    assert!(
        sim.get("apps", "Deployment", "web-staging", "web")
            .is_some()
    );
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-staging")
            .is_some(),
        "record written"
    );

    // A cluster that cannot be reached fails the job before any work.
    let bad = sim.kubeconfig().replace(&sim.url, "http://127.0.0.1:9");
    let run = job
        .run("push", &payload, "main", &[("INPUT_KUBECONFIG", &bad)])
        .await;
    assert_eq!(run.code, 255, "{}", run.log);
    assert!(
        run.log.contains("cannot reach the Kubernetes API"),
        "{}",
        run.log
    );
    // Where a person looks: an annotation, the job summary, the outputs.
    assert!(
        run.log
            .contains("::error title=kdeploy (connect)::cannot reach the Kubernetes API"),
        "{}",
        run.log
    );
    assert!(
        run.summary.contains("### kdeploy failed (connect)"),
        "{}",
        run.summary
    );
    assert!(
        run.summary.contains("check the `kubeconfig` input"),
        "{}",
        run.summary
    );
    assert_eq!(output(&run.outputs, "deployed").as_deref(), Some("false"));
    assert_eq!(output(&run.outputs, "error").as_deref(), Some("connect"));

    // A bad kubeconfig and an unknown context are `connect` failures too.
    for extra in [
        vec![("INPUT_KUBECONFIG", "apiVersion: v1\nclusters: [\n")],
        vec![
            ("INPUT_KUBECONFIG", sim.kubeconfig().as_str()),
            ("INPUT_CONTEXT", "nope"),
        ],
    ] {
        let run = job.run("push", &payload, "main", &extra).await;
        assert_eq!(
            output(&run.outputs, "error").as_deref(),
            Some("connect"),
            "{}",
            run.log
        );
        assert!(
            run.log.contains("::error title=kdeploy (connect)::"),
            "{}",
            run.log
        );
    }
}

#[tokio::test]
async fn a_failed_rollout_fails_the_job_with_the_reason_in_the_check_run() {
    let job = Job::new().await;
    let sim = cluster().await;
    sim.behave(
        "Deployment",
        "web-staging",
        "web",
        crate::k8s_sim::Behaviour::CrashLoopOomKilled,
    );
    let after = job.base();
    let payload = push_payload(None, &after);
    let run = job
        .deploy_push(&sim, &payload, &[("INPUT_TIMEOUT", "20s")])
        .await;
    assert_eq!(run.code, 1, "{}", run.log);
    assert_eq!(output(&run.outputs, "deployed").as_deref(), Some("false"));
    let runs = job.fake.check_runs();
    assert_eq!(runs[0]["conclusion"], "failure", "{:#}", runs[0]);
    assert!(
        runs[0]["output"]["title"]
            .as_str()
            .unwrap()
            .contains("Deploy to staging failed")
    );
    assert!(
        runs[0]["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("OOMKilled (exit code 137)")
    );
    let annotations = runs[0]["annotations"].as_array().unwrap();
    assert!(
        annotations
            .iter()
            .any(|a| a["path"] == "services/web/staging/config.yaml"
                && a["annotation_level"] == "failure"),
        "{annotations:#?}"
    );
    let statuses = &job.fake.deployments()[0].1;
    assert_eq!(statuses.last().unwrap()["state"], "failure");
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-staging")
            .is_none(),
        "record not advanced"
    );

    // A rollout that never gets ready times out, and the check run says so.
    let job = Job::new().await;
    let sim = cluster().await;
    sim.behave(
        "Deployment",
        "web-staging",
        "web",
        crate::k8s_sim::Behaviour::NeverReady,
    );
    let payload = push_payload(None, &job.base());
    let run = job
        .deploy_push(&sim, &payload, &[("INPUT_TIMEOUT", "1s")])
        .await;
    assert_eq!(run.code, 1, "{}", run.log);
    let runs = job.fake.check_runs();
    assert_eq!(runs[0]["conclusion"], "timed_out");
    assert!(
        runs[0]["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("waiting for 0/2 replicas available"),
        "{:#}",
        runs[0]
    );
}

#[tokio::test]
async fn check_run_annotations_are_sent_in_batches_of_fifty() {
    use kdeploy::apply::{Failure, PreviousFrom, Report};
    let fake = FakeGitHub::start().await;
    let gh = kdeploy::github::GitHub::new(&fake.url, TOKEN, REPO, fast_retry()).unwrap();
    let mut warnings = Vec::new();
    let feedback = kdeploy::feedback::start(
        &gh,
        "production",
        &"a".repeat(40),
        kdeploy::feedback::Links::default(),
        false,
        &mut warnings,
    )
    .await;
    let report = Report {
        started_at: String::new(),
        ended_at: String::new(),
        environment: "production".into(),
        repository: REPO.into(),
        base: None,
        head: "a".repeat(40),
        previous: PreviousFrom::Nothing,
        dry_run: false,
        applied: vec![],
        deleted: vec![],
        not_attempted: vec![],
        unchanged: 0,
        record_written: false,
        kept: Vec::new(),
        adopted: Vec::new(),
        replaced: Vec::new(),
        retired: false,
        held: Vec::new(),
        consent: None,
        policy_acknowledged: None,
        failed_step: None,
        failed: (0..120)
            .map(|i| Failure {
                id: format!("ConfigMap app-{i}/c"),
                app: format!("app-{i}"),
                source: "x".into(),
                error: "forbidden".into(),
            })
            .collect(),
        tracked: vec![],
        progress: String::new(),
        rollback: None,
        hooks: Vec::new(),
        fidelity: Default::default(),
        other_records: Vec::new(),
    };
    let config = |app: &str| Some(format!("services/{app}/production/config.yaml"));
    feedback
        .finish(&gh, Some(&report), None, false, &config, &mut warnings)
        .await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let runs = fake.check_runs();
    assert_eq!(runs[0]["annotations"].as_array().unwrap().len(), 120);
    assert_eq!(runs[0]["conclusion"], "failure");
    let patches = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 3, "50 + 50 + 20");
}

#[tokio::test]
async fn check_run_403_is_a_warning_and_the_deploy_goes_on() {
    let job = Job::new().await;
    job.fake.read_only();
    let sim = cluster().await;
    let payload = push_payload(None, &job.base());
    let run = job.deploy_push(&sim, &payload, &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains("::warning::no check run for staging"),
        "{}",
        run.log
    );
    assert!(
        run.log.contains("the token needs `checks: write`"),
        "{}",
        run.log
    );
    assert!(
        run.log.contains("the token needs `deployments: write`"),
        "{}",
        run.log
    );
    assert!(
        sim.get("apps", "Deployment", "web-staging", "web")
            .is_some()
    );
}

/// A refusal that is not about permissions (here a 422) is reported as
/// it is, without sending the user to change `permissions:`.
#[tokio::test]
async fn a_check_run_error_that_is_not_a_permission_blames_no_permission() {
    let job = Job::new().await;
    job.fake
        .fail_next_on("/check-runs", [Fault::unprocessable()]);
    let sim = cluster().await;
    let payload = push_payload(None, &job.base());
    let run = job.deploy_push(&sim, &payload, &[]).await;
    assert_eq!(run.code, 0, "{}", run.log);
    let warning = run
        .log
        .lines()
        .find(|l| l.starts_with("::warning::no check run for staging"))
        .unwrap_or_else(|| panic!("{}", run.log));
    assert!(warning.contains("422"), "{warning}");
    assert!(!warning.contains("permissions"), "{warning}");
}

#[tokio::test]
async fn a_cancelled_run_completes_its_check_run_as_cancelled() {
    let job = Job::new().await;
    let sim = cluster().await;
    sim.behave(
        "Deployment",
        "web-staging",
        "web",
        crate::k8s_sim::Behaviour::NeverReady,
    );
    // Cancel once the rollout is being watched.
    let cancel = {
        let sim = sim.clone();
        async move {
            while !sim
                .requests()
                .iter()
                .any(|r| r.query.contains("watch=true"))
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let kubeconfig = sim.kubeconfig();
    let run = job
        .run_until(
            "push",
            &push_payload(None, &job.base()),
            "main",
            &[
                ("INPUT_KUBECONFIG", &kubeconfig),
                ("INPUT_ENVIRONMENTS", "staging"),
            ],
            cancel,
        )
        .await;
    assert_eq!(run.code, 130, "{}", run.log);
    let runs = job.fake.check_runs();
    assert_eq!(runs[0]["conclusion"], "cancelled", "{:#}", runs[0]);
    assert!(
        sim.get("", "ConfigMap", "kdeploy-system", "kdeploy-staging")
            .is_none(),
        "record not written"
    );
}

#[tokio::test]
async fn workflow_dispatch_plans_between_the_base_and_head_inputs() {
    let job = Job::new().await;
    let base = job.base();
    job.origin.write("services/web/version", "1.4.0\n");
    let head = job.origin.commit("web 1.4.0");
    // The real payload has no SHA at all; the revisions come from inputs.
    let payload = shared_event("octokit-webhooks/api.github.com/workflow_dispatch/payload.json")
        .unwrap_or_else(|| json!({"ref": "refs/heads/main", "inputs": {}}));
    let run = job
        .run(
            "workflow_dispatch",
            &payload,
            "main",
            &[("INPUT_BASE", &base), ("INPUT_HEAD", &head)],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains(&format!("base {base}")), "{}", run.log);
    assert_eq!(
        output(&run.outputs, "changed").as_deref(),
        Some("1"),
        "{}",
        run.log
    );
}

/// Time from process start to a posted plan comment, with the real binary
/// (`KDEPLOY_BIN`, default the test build: use a `--profile dist` build for
/// figures), on the benchmark repo of 1,000 apps x 5 environments (5,000
/// releases; `KDEPLOY_MEASURE_ENVS` sets the number of environments), from a
/// depth-1 clone of the PR head as actions/checkout makes it: the base
/// commit is fetched from origin (a local file URL here; add the network's
/// round trips on GitHub).
#[tokio::test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
async fn measure_time_to_a_posted_plan_on_1000_apps() {
    let envs = std::env::var("KDEPLOY_MEASURE_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let repo = kdeploy::bench::generate(1000, envs, false).expect("generate");
    let origin = repo.path.as_path();
    let git = |dir: &std::path::Path, args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {args:?}");
    };
    git(
        origin,
        &["update-ref", "refs/heads/main", &repo.initial.to_string()],
    );
    let runner = tempfile::tempdir().expect("temp");
    let fake = FakeGitHub::start().await;
    let path = |name: &str| runner.path().join(name);
    let bin = std::env::var("KDEPLOY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kdeploy").into());
    for (number, head, what) in [
        (7, repo.one_app, "one app's config changed"),
        (
            8,
            repo.chart_change,
            "the chart changed: every release differs",
        ),
    ] {
        git(origin, &["update-ref", "refs/heads/pr", &head.to_string()]);
        let payload = pr_payload(
            "synchronize",
            number,
            &repo.initial.to_string(),
            &head.to_string(),
            false,
        );
        std::fs::write(path("event.json"), payload.to_string()).expect("event");
        let mut samples = Vec::new();
        for i in 0..3 {
            let work = runner.path().join(format!("work-{number}-{i}"));
            let url = format!("file://{}", origin.display());
            git(
                runner.path(),
                &[
                    "clone",
                    "-q",
                    "--depth=1",
                    "--branch=pr",
                    &url,
                    &work.display().to_string(),
                ],
            );
            let start = std::time::Instant::now();
            let out = tokio::process::Command::new(&bin)
                .arg("action")
                .env("GITHUB_EVENT_NAME", "pull_request")
                .env("GITHUB_EVENT_PATH", path("event.json"))
                .env("GITHUB_WORKSPACE", &work)
                .env("GITHUB_API_URL", &fake.url)
                .env("GITHUB_REPOSITORY", REPO)
                .env("GITHUB_WORKFLOW", "plan")
                .env("GITHUB_STEP_SUMMARY", path("summary.md"))
                .env("GITHUB_OUTPUT", path("output"))
                .env("INPUT_GITHUB-TOKEN", TOKEN)
                .env("INPUT_MODE", "plan")
                .output()
                .await
                .expect("run kdeploy");
            let elapsed = start.elapsed();
            let log = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{log}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!fake.comments(number).is_empty(), "{log}");
            samples.push(elapsed);
        }
        samples.sort();
        eprintln!(
            "1,000 apps x {envs} environments, {what}: time to a posted plan from a depth-1 clone, median of 3: {:.0} ms ({bin})",
            samples[1].as_secs_f64() * 1000.0
        );
    }
}

/// "The same commands run on a laptop": a deploy by the action (which
/// records `GITHUB_REPOSITORY`), then `kdeploy apply` from a clone of the
/// same repository (which knows only its origin's URL), is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptops_deploy_follows_the_actions_record() {
    let job = Job::new().await;
    let sim = cluster().await;
    let run = job
        .deploy_push(&sim, &push_payload(None, &job.base()), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let clone = crate::util::shallow_clone(&job.origin, "main");
    let git = |args: &[&str]| crate::util::git_in(clone.path(), args);
    git(&[
        "remote",
        "set-url",
        "origin",
        &format!("git@github.com:{REPO}.git"),
    ]);
    let (_kc_dir, kc) = sim.kubeconfig_file();
    let dir = clone.path().to_path_buf();
    // Off the runtime's threads: the simulator answers on them.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"))
            .args(["apply", "--env", "staging", "--kubeconfig", &kc])
            .current_dir(dir)
            .env_remove("GITHUB_REPOSITORY")
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1")
            .output()
            .expect("kdeploy runs")
    })
    .await
    .expect("joins");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let record = sim
        .get("", "ConfigMap", "kdeploy-system", "kdeploy-staging")
        .expect("record");
    assert_eq!(record["data"]["repository"], REPO, "{record:#}");
}

/// What people read, held still: the job summary of a pull request's
/// plan, and the check run and job summary of the deploy after it (ids,
/// times and durations normalised).
#[tokio::test]
async fn what_a_reviewer_and_an_on_call_engineer_read() {
    let job = Job::new().await;
    let (base, head) = job.web_bump();
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 3, &base, &head, false),
            "pr",
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let normal = |text: &str| {
        let mut t = text
            .replace(kdeploy::plan::fingerprint::VERSION, "VERSION")
            .replace(&base, "BASE")
            .replace(&head, "HEAD");
        t = t.replace(&base[..12], "BASE").replace(&head[..12], "HEAD");
        durations_as_t(&t)
    };
    insta::assert_snapshot!("pull_request_job_summary", normal(&run.summary));
    let sim = cluster().await;
    let run = job
        .deploy_push(&sim, &push_payload(None, &job.base()), &[])
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let base_now = job.base();
    let runs = job.fake.check_runs();
    let body = format!(
        "{}\n\n{}\n\n{}",
        runs[0]["output"]["title"].as_str().unwrap_or(""),
        runs[0]["output"]["summary"].as_str().unwrap_or(""),
        runs[0]["output"]["text"].as_str().unwrap_or("")
    );
    let normal = |text: &str| {
        durations_as_t(
            &text
                .replace(kdeploy::plan::fingerprint::VERSION, "VERSION")
                .replace(&base_now, "HEAD")
                .replace(&base_now[..12], "HEAD"),
        )
    };
    insta::assert_snapshot!("deploy_check_run", normal(&body));
    insta::assert_snapshot!("deploy_job_summary", normal(&run.summary));
}

/// Durations (`1.2s`, `340ms`, `in 0.4 s`) and clock times as `<t>`.
fn durations_as_t(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
            if rest.starts_with("ms")
                || (rest.starts_with('s') && !rest[1..].starts_with(|c: char| c.is_alphanumeric()))
            {
                out.push_str("<t>");
                continue;
            }
            out.extend(&chars[start..i]);
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The render cache through the action: a push's deploy writes it, its own
/// plan does not read it, and a pull request's plan reads its base from it
/// (the directory as actions/cache would restore it between the jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_writes_the_render_cache_and_a_pull_requests_plan_reads_it() {
    let job = Job::new().await;
    let sim = cluster().await;
    let cache = tempfile::tempdir().expect("temp dir");
    let dir = cache.path().display().to_string();
    let input = [("INPUT_RENDER-CACHE", dir.as_str())];
    let run = job
        .deploy_push(&sim, &push_payload(None, &job.base()), &input)
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains(&format!("note: render cache {dir}: "))
            && run.log.contains(" release(s) written"),
        "{}",
        run.log
    );
    assert!(!run.log.contains("base release(s) read"), "{}", run.log);
    let (base, head) = job.web_bump();
    let run = job
        .run(
            "pull_request",
            &pr_payload("opened", 7, &base, &head, false),
            "pr",
            &input,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let line = run
        .log
        .lines()
        .find(|l| l.starts_with(&format!("render cache {dir}: ")))
        .unwrap_or_else(|| panic!("no render cache line in\n{}", run.log));
    let read: usize = line
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(read >= 1, "{line}");
    assert!(
        !run.log.contains("render cache entry ignored"),
        "{}",
        run.log
    );
}
