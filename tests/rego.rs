//! The organisation's Rego policies in every plan: conftest-style rules
//! over each object a plan creates or changes, from the base revision's
//! policy directory (a pull request cannot weaken its own checks) or a
//! directory of the runner; `kdeploy check` runs the same on a work tree.

use crate::util::{Repo, Run};

const NON_ROOT: &str = r#"package main
import rego.v1

deny contains msg if {
  input.kind == "Deployment"
  not input.spec.template.spec.securityContext.runAsNonRoot
  msg := sprintf("Deployment %s must set runAsNonRoot", [input.metadata.name])
}

warn contains {"msg": msg} if {
  not input.metadata.labels.team
  msg := sprintf("%s %s has no team label", [input.kind, input.metadata.name])
}
"#;

fn deployment(name: &str, non_root: bool) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: tools\n  labels: {{team: tools}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      securityContext: {{runAsNonRoot: {non_root}}}\n      containers: [{{name: c, image: \"ghcr.io/example/{name}:1.0.0\"}}]\n"
    )
}

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw: [\"deploy/{env}/{app}\"]\n",
    )
    .write("deploy/prod/tools/.keep", "")
    .write("policy/main.rego", NON_ROOT)
    .write(
        "policy/main_test.rego",
        "package main\nthis is not rego but a test file conftest skips\n",
    );
    repo
}

fn kdeploy(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    c.args(args)
        .current_dir(repo.path())
        .env("NO_COLOR", "1")
        .env_remove("KDEPLOY_POLICY")
        .env_remove("KDEPLOY_POLICIES");
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().expect("runs"))
}

/// `kdeploy plan --base --head` and `extra` arguments.
fn plan_of(repo: &Repo, base: &str, head: &str, extra: &[&str]) -> Run {
    let mut args = vec!["plan", "--base", base, "--head", head];
    args.extend_from_slice(extra);
    kdeploy(repo, &args, &[])
}

#[test]
fn the_base_revisions_policies_judge_a_pull_request_that_edits_them() {
    let repo = repo();
    let base = repo.commit("policies");
    // The pull request adds a root Deployment and deletes the rule that
    // would stop it.
    repo.write("deploy/prod/tools/root.yaml", &deployment("root", false))
        .write("deploy/prod/tools/ok.yaml", &deployment("ok", true))
        .write("policy/main.rego", "package main\n");
    let head = repo.commit("a root deployment, and no more rule");
    let plan = plan_of(&repo, &base, &head, &["--policies", "policy"]);
    assert_eq!(plan.code, 1, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("warning[policy/rego] (error) [main.deny] Deployment root must set runAsNonRoot (policies policy/ (at "),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains("Deployment ok must"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("policies: 1 Rego file(s) from policy/ (at "),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stderr.contains("1 policy check(s) at severity error"),
        "{}",
        plan.stderr
    );
    // JSON counts it; the environment variable names the directory too.
    let json = kdeploy(
        &repo,
        &["plan", "--base", &base, "--head", &head, "--format", "json"],
        &[("KDEPLOY_POLICIES", "policy")],
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["summary"]["policy_errors"], 1, "{}", json.stdout);

    // A base without the directory: the pull request's own policies do not
    // run before they are merged, and the plan says so.
    let fresh = Repo::new();
    fresh
        .write(
            "kdeploy.yaml",
            "services: null\nsources:\n  raw: [\"deploy/{env}/{app}\"]\n",
        )
        .write("deploy/prod/tools/.keep", "");
    let base = fresh.commit("no policies");
    fresh
        .write(
            "policy/main.rego",
            "package main\ndeny contains \"always\" if { true }\n",
        )
        .write("deploy/prod/tools/ok.yaml", &deployment("ok", true));
    let head = fresh.commit("policies arrive");
    let plan = plan_of(&fresh, &base, &head, &["--policies", "policy"]);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("policies: policy is not in "),
        "{}",
        plan.stdout
    );
}

#[test]
fn a_runner_directory_and_kdeploy_check_and_bad_rego() {
    let repo = repo();
    repo.write("deploy/prod/tools/root.yaml", &deployment("root", false));
    repo.commit("root");
    // The runner's own directory (absolute), outside the config repo.
    let org = tempfile::tempdir().expect("temp");
    std::fs::write(
        org.path().join("org.rego"),
        NON_ROOT.replace("package main", "package org.k8s"),
    )
    .expect("write");
    let dir = org.path().display().to_string();
    let check = kdeploy(&repo, &["check", "--policies", &dir], &[]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(
        check
            .stdout
            .contains("prod/tools apps/Deployment tools/root (deploy/prod/tools/root.yaml)"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("  error[policy/rego] [org.k8s.deny] Deployment root must set runAsNonRoot"),
        "{}",
        check.stdout
    );
    // The built-in checks run beside the Rego ones.
    assert!(
        check.stdout.contains("  warning[policy/run-as-root]"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("resources checked: 1 error(s), "),
        "{}",
        check.stdout
    );
    // kdeploy check reads the work tree's own policies.
    let own = kdeploy(&repo, &["check", "--policies", "policy"], &[]);
    assert_eq!(own.code, 1, "{}", own.stdout);
    assert!(own.stdout.contains("[main.deny]"), "{}", own.stdout);

    // A policy that is not Rego: the file and line, and what to do.
    std::fs::write(
        org.path().join("bad.rego"),
        "package org.bad\ndeny contains m if {\n  input.x ==\n}\n",
    )
    .expect("write");
    let bad = kdeploy(&repo, &["check", "--policies", &dir], &[]);
    assert_eq!(bad.code, 2, "{}{}", bad.stdout, bad.stderr);
    assert!(
        bad.stderr.contains("bad.rego is not valid Rego"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("bad.rego:4:"), "{}", bad.stderr);
}

/// In the action: each finding is an annotation at the config it came
/// from; an error fails the plan unless the runner names a label that
/// acknowledges it and the pull request has it; the merge's deploy then
/// goes ahead and its report and check run say who acknowledged what.
#[tokio::test(flavor = "multi_thread")]
async fn a_label_the_runner_names_acknowledges_policy_errors_and_the_deploy_records_it() {
    use crate::action::{Job, cluster, output, pr_payload, push_payload};
    let job = Job::new().await;
    let org = tempfile::tempdir().expect("temp");
    std::fs::write(
        org.path().join("owners.rego"),
        "package org\nimport rego.v1\n\ndeny contains msg if {\n  input.kind == \"Deployment\"\n  input.metadata.name == \"web\"\n  msg := \"web has no owner on call\"\n}\n",
    )
    .expect("write");
    let dir = org.path().display().to_string();
    let label = "kdeploy/accept-policy";
    let base = job.base();
    let head = job.pr_commit(
        |r| {
            r.write("services/web/version", "1.1.0\n");
        },
        "web 1.1.0",
    );
    let labelled = |labels: &[&str]| {
        let mut p = pr_payload("opened", 21, &base, &head, false);
        p["pull_request"]["labels"] = labels
            .iter()
            .map(|l| serde_json::json!({"name": l}))
            .collect();
        p
    };
    let policies = [("INPUT_POLICIES", dir.as_str())];
    let run = job
        .run("pull_request", &labelled(&[]), "pr", &policies)
        .await;
    assert_eq!(run.code, 1, "{}", run.log);
    assert_eq!(output(&run.outputs, "error").as_deref(), Some("policy"));
    assert!(
        run.log.contains("::error file=services/web/staging/config.yaml::policy/rego (staging/web apps/Deployment web-staging/web): [org.deny] web has no owner on call"),
        "{}",
        run.log
    );
    // The label alone is nothing: the runner has not named it.
    let run = job
        .run("pull_request", &labelled(&[label]), "pr", &policies)
        .await;
    assert_eq!(run.code, 1, "{}", run.log);
    let runner_allows = [
        ("INPUT_POLICIES", dir.as_str()),
        ("INPUT_POLICY-ACKNOWLEDGE-LABEL", label),
    ];
    let run = job
        .run("pull_request", &labelled(&[]), "pr", &runner_allows)
        .await;
    assert_eq!(run.code, 1, "{}", run.log);
    assert!(
        run.log.contains(
            "the runner lets the label kdeploy/accept-policy on the pull request acknowledge them"
        ),
        "{}",
        run.log
    );
    let run = job
        .run("pull_request", &labelled(&[label]), "pr", &runner_allows)
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(
        run.log.contains("1 policy finding(s) at severity error acknowledged by the label kdeploy/accept-policy on #21"),
        "{}",
        run.log
    );

    // The merge: the push's deploy finds the pull request and its label.
    job.fake.add_pull(21, "pr", "closed", true);
    job.origin.git(&["checkout", "-q", "main"]);
    job.origin.git(&["merge", "-q", "--ff-only", &head]);
    job.fake.pull_commits(21, &head, Some(&head));
    job.fake.label_pull(21, label);
    let sim = cluster().await;
    let deploy = job
        .deploy_push(&sim, &push_payload(Some(&base), &head), &runner_allows)
        .await;
    assert_eq!(deploy.code, 0, "{}", deploy.log);
    assert!(
        deploy.log.contains("staging: deployed with 1 policy finding(s) at severity error acknowledged by the label kdeploy/accept-policy on #21"),
        "{}",
        deploy.log
    );
    let runs = job.fake.check_runs();
    let summary = runs.last().expect("a check run")["output"]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains("**Deployed with 1 policy finding(s)"),
        "{summary}"
    );
}

/// ValidatingAdmissionPolicies evaluated offline: the base revision's
/// (a pull request that deletes the policy is still judged by it), with
/// parameters from a ConfigMap and a binding for one environment's
/// namespaces; a change within the limit passes, and the plan says which
/// bindings it evaluated.
#[test]
fn admission_policies_of_the_base_judge_a_pull_request_offline() {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        "services: null\nsources:\n  raw: [\"deploy/{env}/{app}\"]\n",
    )
    .write(
        "deploy/prod/platform/replica-limit.yaml",
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-limit
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
      - apiGroups: [apps]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [deployments]
  validations:
    - expression: "object.spec.replicas <= int(params.data.maxReplicas)"
      messageExpression: "'replicas must be at most ' + params.data.maxReplicas"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-prod
spec:
  policyName: replica-limit
  validationActions: [Deny]
  paramRef: {name: replica-limit, namespace: kube-system, parameterNotFoundAction: Deny}
  matchResources:
    namespaceSelector:
      matchLabels: {environment: prod}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: replica-limit
  namespace: kube-system
data:
  maxReplicas: "5"
"#,
    )
    .write(
        "deploy/prod/shop/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {environment: prod}\n",
    )
    .write(
        "deploy/prod/shop/api.yaml",
        &deployment("api", true).replace("namespace: tools", "namespace: shop"),
    );
    let base = repo.commit("platform and shop");
    let scaled = |n: u32| {
        deployment("api", true)
            .replace("namespace: tools", "namespace: shop")
            .replace(
                "spec:\n  selector",
                &format!("spec:\n  replicas: {n}\n  selector"),
            )
    };
    repo.write("deploy/prod/shop/api.yaml", &scaled(7))
        .remove("deploy/prod/platform/replica-limit.yaml")
        .write("deploy/prod/platform/.keep", "");
    let head = repo.commit("seven replicas, and no more limit");
    let run = |head: &str| {
        plan_of(
            &repo,
            &base,
            head,
            &["--admission-policies", "deploy/prod/platform"],
        )
    };
    let plan = run(&head);
    assert_eq!(plan.code, 1, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("warning[policy/admission] (error) ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-prod' denied request: replicas must be at most 5"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("admission policies: 1 ValidatingAdmissionPolicy binding(s) from "),
        "{}",
        plan.stdout
    );
    // Within the limit: nothing to say but that it was evaluated.
    repo.git(&["checkout", "-q", &base]);
    repo.write("deploy/prod/shop/api.yaml", &scaled(4));
    let within = repo.commit("four replicas");
    let plan = run(&within);
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(!plan.stdout.contains("policy/admission"), "{}", plan.stdout);
}
