//! The action's inputs and environment: one table of every input
//! ([`INPUTS`]), the runner's variables, and their validation into
//! [`Inputs`] with every bad input reported at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::diag::Diagnostics;

/// The environment a run sees (a copy, so tests can supply their own).
#[derive(Debug, Clone, Default)]
pub struct ActionEnv(BTreeMap<String, String>);

impl ActionEnv {
    /// The process environment.
    pub fn from_env() -> ActionEnv {
        ActionEnv(std::env::vars().collect())
    }

    /// Given variables.
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> ActionEnv {
        ActionEnv(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A variable, when set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// An action input, as the runner names it: `INPUT_` + upper case,
    /// spaces as `_`, hyphens kept.
    pub fn input(&self, name: &str) -> Option<&str> {
        debug_assert!(
            INPUTS.iter().any(|i| i.name == name),
            "input `{name}` is not in INPUTS (and so not in action.yml)"
        );
        self.var(&format!("INPUT_{}", name.to_uppercase().replace(' ', "_")))
    }
}

/// One input of `action.yml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// The name (`with:` key).
    pub name: &'static str,
    /// The default `action.yml` gives it.
    pub default: &'static str,
    /// What it does, as `action.yml` says.
    pub description: &'static str,
}

/// Every input the action reads: one table for `kdeploy action --help`, for
/// [`ActionEnv::input`] (which reads no other) and for the test that
/// compares it with `action.yml`, so the three cannot drift apart.
pub const INPUTS: &[Input] = &[
    Input {
        name: "github-token",
        default: "${{ github.token }}",
        description: "Token for the PR comment (needs `pull-requests: write`). Masked in logs.",
    },
    Input {
        name: "mode",
        default: "auto",
        description: "auto (plan on pull_request and workflow_dispatch, apply on push), plan, apply, images (version bumps: `images update`, or `set-version` from a dispatch's app/env/version), promote (`promote-from` to `promote-to`), drift (compare each deployed environment with its cluster; a check run and an issue per drifted environment), or preview (on pull_request: deploy the head to its own namespace, remove it on close; on a schedule: remove the previews of closed pull requests).",
    },
    Input {
        name: "working-directory",
        default: ".",
        description: "The config repo directory inside the checkout (charts/, services/, kdeploy.yaml).",
    },
    Input {
        name: "environments",
        default: "",
        description: "Only environments matching this glob (e.g. `prod*`); all when empty.",
    },
    Input {
        name: "apps",
        default: "",
        description: "Only apps matching this glob; all when empty.",
    },
    Input {
        name: "comment",
        default: "true",
        description: "Post the plan as a PR comment (true/false).",
    },
    Input {
        name: "comment-id",
        default: "",
        description: "Identifies kdeploy's comment on a PR so it is updated in place; default is the workflow name (plus the environments glob).",
    },
    Input {
        name: "policy-acknowledge-label",
        default: "",
        description: "A pull request label that acknowledges policy findings at severity error (e.g. kdeploy/accept-policy): with it on the pull request, the plan and the merge's deploy go ahead, and the deploy report and check run record the acknowledgment. Empty (the default): nothing can acknowledge them.",
    },
    Input {
        name: "render-cache",
        default: "",
        description: "A directory to keep between runs with actions/cache (relative to the workspace, e.g. .kdeploy-render-cache, or absolute): a deploy writes the releases it rendered there; a pull request's plan reads its base's from it instead of rendering them. Nothing that applies ever reads it. Empty (the default): no cache.",
    },
    Input {
        name: "admission-policies",
        default: "",
        description: "ValidatingAdmissionPolicies, their bindings and parameter objects (YAML) to evaluate offline beside those the base revision deploys: a directory of the config repo (read from the pull request's base) or an absolute path on the runner (e.g. exported from the cluster). A denial fails the plan.",
    },
    Input {
        name: "policies",
        default: "",
        description: "The organisation's Rego policies (conftest's deny/warn/violation rules over each object): a directory of the config repo, read from the pull request's base (a pull request cannot change the checks its plan runs), or an absolute path on the runner (a checkout of a policy repository). deny and violation fail the plan.",
    },
    Input {
        name: "policy",
        default: "",
        description: "Severities of the built-in policy checks, check=off|warning|error, comma-separated (latest-tag=error,no-pdb=off); an error fails the plan and stops the deploy. Runner policy: the repository cannot change it.",
    },
    Input {
        name: "unreviewed",
        default: "warn",
        description: "On a push that does not apply the plan its pull request showed (changed since review, or no pull request): deploy (say so), warn (say so with a warning annotation) or fail (deploy nothing).",
    },
    Input {
        name: "max-comment-parts",
        default: "3",
        description: "Split a large plan over at most this many comments before leaving resources out.",
    },
    Input {
        name: "context-lines",
        default: "3",
        description: "Lines of context around each change in diffs.",
    },
    Input {
        name: "publish",
        default: "pr",
        description: "Images and promote: `pr` opens or updates a pull request per change (needs `contents: write` and `pull-requests: write`), `push` commits onto the checked-out branch (`contents: write`).",
    },
    Input {
        name: "promote-from",
        default: "",
        description: "Promote: the environment whose versions are copied (else the dispatch's `from`).",
    },
    Input {
        name: "promote-to",
        default: "",
        description: "Promote: the environment that receives them (else the dispatch's `to`).",
    },
    Input {
        name: "promote-keys",
        default: "",
        description: "Promote: config keys (dotted, comma-separated, e.g. `image.tag,replicas`) also copied into the target environment's config.yaml.",
    },
    Input {
        name: "drift-unmanaged",
        default: "false",
        description: "Drift: also report objects in the managed namespaces that kdeploy did not create.",
    },
    Input {
        name: "drift-repair",
        default: "false",
        description: "Drift: re-apply what drifted (missing or changed resources; nothing is deleted).",
    },
    Input {
        name: "preview-template",
        default: "",
        description: "Preview: the template in kdeploy.yaml's `environments` (one with `from:`), read from the base branch; default: the only one.",
    },
    Input {
        name: "preview-older-than",
        default: "",
        description: "Preview, on a schedule or dispatch (garbage collection): also remove previews not deployed for this long (e.g. `7d`); previews of closed pull requests always go.",
    },
    Input {
        name: "kubeconfig",
        default: "",
        description: "Apply: kubeconfig file path or content (e.g. a secret). Default: KUBECONFIG, ~/.kube/config, in-cluster. Secret values are masked.",
    },
    Input {
        name: "sops-age-key",
        default: "",
        description: "age private key(s) (AGE-SECRET-KEY-…, one per line) that decrypt the repository's SOPS files; masked, passed only to sops. Without it, plans mark encrypted values as not compared and deploys of them fail.",
    },
    Input {
        name: "sops-key-services",
        default: "",
        description: "Network key services sops may call with this job's credentials (comma-separated Vault addresses, KMS ARNs, GCP KMS resource ids, Azure Key Vault URLs; `*` for any). A SOPS file whose metadata names another is not decrypted: plans mark it not compared, deploys of it fail.",
    },
    Input {
        name: "context",
        default: "",
        description: "Apply: kubeconfig context (default: current-context).",
    },
    Input {
        name: "prune",
        default: "true",
        description: "Apply: delete resources removed from the config (only ones kdeploy deployed).",
    },
    Input {
        name: "sync",
        default: "false",
        description: "Apply: apply every resource, changed or not (drift repair).",
    },
    Input {
        name: "create-namespace",
        default: "false",
        description: "Apply: create namespaces that are missing and not in the plan.",
    },
    Input {
        name: "force-conflicts",
        default: "true",
        description: "Apply: take over fields owned by other field managers.",
    },
    Input {
        name: "record-namespace",
        default: "kdeploy-system",
        description: "Apply: namespace of kdeploy's deploy records and leases.",
    },
    Input {
        name: "timeout",
        default: "10m",
        description: "Apply: wait this long (e.g. 10m) for workloads to be ready; 0 does not wait. A resource may set its own with the annotation kdeploy.io/timeout.",
    },
    Input {
        name: "allow-deletions",
        default: "false",
        description: "Consent to deletions that need it (data-bearing kinds, apps or environments gone from the config, more than deletion-budget); without it, or the pull request's deletion-consent-label, they are held.",
    },
    Input {
        name: "deletion-budget",
        default: "25",
        description: "Deletions beyond this share (percent) of an environment's recorded resources, and more than 10, need consent.",
    },
    Input {
        name: "deletion-consent-label",
        default: "kdeploy/allow-deletions",
        description: "A label on the merged pull request that consents to its deletions.",
    },
    Input {
        name: "rollback-on-failure",
        default: "false",
        description: "Apply: when the deploy fails, restore the previous content of what it changed and delete what it created (the record is not advanced either way).",
    },
    Input {
        name: "wait-for-load-balancers",
        default: "false",
        description: "Apply: also wait for LoadBalancer Services to get an address.",
    },
    Input {
        name: "wait-for-ready",
        default: "",
        description: "Apply: comma-separated custom kinds (group/Kind, or *) that must reach a Ready=True condition, e.g. cert-manager.io/Certificate.",
    },
    Input {
        name: "github-deployments",
        default: "true",
        description: "Apply: create a GitHub deployment per environment with in_progress/success/failure statuses.",
    },
    Input {
        name: "plan-cluster",
        default: "false",
        description: "Plan: also check the plan against the cluster of the kubeconfig input (reads and server-side dry runs only): live drift the merge would set back, by whom, and what the API server refuses (a refusal fails the plan). Never for a fork's pull request.",
    },
    Input {
        name: "allow-pull-request-target",
        default: "false",
        description: "Plan pull_request_target events from forks too (they run with this repository's token and secrets: refused by default).",
    },
    Input {
        name: "environment-url",
        default: "",
        description: "Apply: URL of the deployed environment for the deployment status; `{env}` is replaced by the environment name.",
    },
    Input {
        name: "base",
        default: "",
        description: "workflow_dispatch only - the revision deployed now (default - none, everything is new).",
    },
    Input {
        name: "head",
        default: "",
        description: "workflow_dispatch only - the revision to plan (default - GITHUB_SHA).",
    },
];

/// `kdeploy action --help`: the inputs and the environment variables read.
pub fn inputs_help() -> String {
    let mut out =
        String::from("Inputs (with: in the workflow; read from INPUT_<NAME>, hyphens kept):\n");
    for i in INPUTS {
        let default = if i.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", i.default)
        };
        out.push_str(&format!("  {}{default}\n      {}\n", i.name, i.description));
    }
    out.push_str("\nEnvironment (set by the runner): GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_WORKSPACE, GITHUB_REPOSITORY, GITHUB_SHA, GITHUB_API_URL, GITHUB_SERVER_URL, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_WORKFLOW, GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, GITHUB_ACTIONS, RUNNER_TEMP; NO_COLOR turns colour off.\n");
    out
}

/// What the run should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan and report (pull requests).
    Plan,
    /// Deploy (pushes).
    Apply,
    /// Version bumps: image policies, or one version from a dispatch.
    Images,
    /// Copy versions from one environment to another.
    Promote,
    /// Compare deployed environments with their clusters.
    Drift,
    /// Preview environments per pull request.
    Preview,
}

/// The action's inputs, validated.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub(crate) token: Option<String>,
    pub(crate) mode: Option<Mode>,
    pub(crate) working_directory: PathBuf,
    pub(crate) environments: Option<String>,
    pub(crate) apps: Option<String>,
    pub(crate) comment: bool,
    pub(crate) comment_id: String,
    pub(crate) max_comment_parts: usize,
    pub(crate) context_lines: usize,
    pub(crate) kubeconfig: Option<String>,
    pub(crate) sops_age_key: Option<String>,
    pub(crate) sops_key_services: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) apply: crate::apply::Options,
    pub(crate) github_deployments: bool,
    pub(crate) environment_url: Option<String>,
    /// Plan `pull_request_target` events whose head is another repository.
    pub(crate) allow_pull_request_target: bool,
    /// Check the plan against the cluster (three-way plan).
    pub(crate) plan_cluster: bool,
    /// How `images` and `promote` publish.
    pub(crate) publish: crate::publish::Publish,
    pub(crate) promote_from: Option<String>,
    /// What a push that does not apply a reviewed plan does.
    pub(crate) unreviewed: crate::review::Unreviewed,
    /// The policy checks' severities (`latest-tag=error`).
    pub(crate) policy: Option<String>,
    /// The Rego policy directory.
    pub(crate) policies: Option<String>,
    /// The runner's admission policy directory.
    pub(crate) admission_policies: Option<String>,
    /// `render-cache` under the workspace: written by deploys, read by pull
    /// requests' plans.
    pub(crate) render_cache: Option<PathBuf>,
    /// The label that acknowledges policy errors, if the runner allows one.
    pub(crate) policy_acknowledge_label: Option<String>,
    /// The label on the merged pull request that consents to deletions.
    pub(crate) deletion_consent_label: String,
    pub(crate) promote_to: Option<String>,
    pub(crate) promote_keys: Vec<String>,
    pub(crate) drift_unmanaged: bool,
    pub(crate) drift_repair: bool,
    pub(crate) preview_template: Option<String>,
    pub(crate) preview_older_than: Option<std::time::Duration>,
}

/// The value of a parsed input, or its default with the problem recorded.
fn take<T>(problems: &mut Diagnostics, r: anyhow::Result<T>, default: T) -> T {
    r.unwrap_or_else(|e| {
        problems.push(
            crate::diag::Diagnostic::global(format!("{e:#}"))
                .help("fix the `with:` inputs of the kdeploy step (see action.yml)"),
        );
        default
    })
}

/// `working-directory`: a directory of the checkout, never above or
/// beside it (kdeploy reads and writes inside the checkout only).
fn parse_working_directory(v: Option<&str>) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(v.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("."));
    let inside = dir.components().all(|c| {
        matches!(
            c,
            std::path::Component::CurDir | std::path::Component::Normal(_)
        )
    });
    if !inside {
        bail!(
            "input `working-directory` is `{}`: it must be a relative path inside the checkout, without `..`",
            dir.display()
        );
    }
    Ok(dir)
}

/// `render-cache`: a directory of the workspace (where actions/cache
/// restores and saves paths), never above it; or an absolute path the
/// runner chose.
fn parse_render_cache(v: Option<&str>) -> anyhow::Result<Option<PathBuf>> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(v);
    let inside = dir.is_absolute()
        || dir.components().all(|c| {
            matches!(
                c,
                std::path::Component::CurDir | std::path::Component::Normal(_)
            )
        });
    if !inside {
        bail!(
            "input `render-cache` is `{v}`: a relative path must stay inside the workspace (as actions/cache's `path`), without `..`"
        );
    }
    Ok(Some(dir))
}

fn parse_bool(name: &str, v: Option<&str>, default: bool) -> anyhow::Result<bool> {
    match v.map(str::trim) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => bail!("input `{name}` must be true or false, got `{other}`"),
    }
}

/// `timeout`: a duration (`10m`, `90s`); `0` turns waiting off.
fn parse_timeout(v: Option<&str>) -> anyhow::Result<Option<crate::wait::Options>> {
    let d = match v.map(str::trim) {
        None => std::time::Duration::from_secs(600),
        Some("0") => return Ok(None),
        Some(t) => humantime::parse_duration(t).with_context(|| {
            format!("input `timeout` must be a duration like 10m or 90s, got `{t}`")
        })?,
    };
    Ok(Some(crate::wait::Options {
        timeout: d,
        ..crate::wait::Options::default()
    }))
}

/// A comma-separated input, trimmed, empty items dropped.
fn comma_list(v: Option<&str>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn parse_number(name: &str, v: Option<&str>, default: usize) -> anyhow::Result<usize> {
    v.map_or(Ok(default), |v| {
        v.trim()
            .parse()
            .with_context(|| format!("input `{name}` must be a number, got `{v}`"))
    })
}

impl Inputs {
    /// Reads and validates the inputs.
    ///
    /// # Errors
    /// An input with a value it cannot have.
    pub fn read(env: &ActionEnv) -> anyhow::Result<Inputs> {
        // Every bad input is reported at once, each with its default kept
        // meanwhile so the others can still be read.
        let mut problems = Diagnostics::default();
        let p = &mut problems;
        let mode = match env.input("mode") {
            None | Some("auto") => None,
            Some("plan") => Some(Mode::Plan),
            Some("apply") => Some(Mode::Apply),
            Some("images") => Some(Mode::Images),
            Some("promote") => Some(Mode::Promote),
            Some("drift") => Some(Mode::Drift),
            Some("preview") => Some(Mode::Preview),
            Some(other) => take(
                p,
                Err(anyhow::anyhow!(
                    "input `mode` must be auto, plan, apply, images, promote, drift or preview, got `{other}`"
                )),
                None,
            ),
        };
        let publish = match env.input("publish").map(str::trim) {
            None | Some("pr") => crate::publish::Publish::PullRequest,
            Some("push") => crate::publish::Publish::Push,
            Some(other) => take(
                p,
                Err(anyhow::anyhow!(
                    "input `publish` must be pr or push, got `{other}`"
                )),
                crate::publish::Publish::PullRequest,
            ),
        };
        let workflow = env.var("GITHUB_WORKFLOW").unwrap_or("kdeploy");
        let environments = env.input("environments").map(str::to_string);
        let default_id = match &environments {
            Some(e) => format!("{workflow}:{e}"),
            None => workflow.to_string(),
        };
        let mut flag = |name: &str, default: bool| {
            take(p, parse_bool(name, env.input(name), default), default)
        };
        let comment = flag("comment", true);
        let prune = flag("prune", true);
        let sync = flag("sync", false);
        let create_namespace = flag("create-namespace", false);
        let force_conflicts = flag("force-conflicts", true);
        let load_balancers = flag("wait-for-load-balancers", false);
        let rollback = flag("rollback-on-failure", false);
        let allow_deletions = flag("allow-deletions", false);
        let github_deployments = flag("github-deployments", true);
        let allow_pull_request_target = flag("allow-pull-request-target", false);
        let plan_cluster = flag("plan-cluster", false);
        let drift_unmanaged = flag("drift-unmanaged", false);
        let drift_repair = flag("drift-repair", false);
        let preview_older_than = take(
            p,
            env.input("preview-older-than")
                .map(|v| {
                    humantime::parse_duration(v.trim()).map_err(|e| {
                        anyhow::anyhow!("input `preview-older-than`: `{v}` is not a duration ({e}); use e.g. 7d or 36h")
                    })
                })
                .transpose(),
            None,
        );
        let deletion_budget = u32::try_from(
            take(
                p,
                parse_number("deletion-budget", env.input("deletion-budget"), 25),
                25,
            )
            .min(100),
        )
        .unwrap_or(25);
        let max_comment_parts = take(
            p,
            parse_number("max-comment-parts", env.input("max-comment-parts"), 3),
            3,
        )
        .max(1);
        let context_lines = take(
            p,
            parse_number("context-lines", env.input("context-lines"), 3),
            3,
        );
        let wait = take(p, parse_timeout(env.input("timeout")), None);
        let unreviewed = take(
            p,
            env.input("unreviewed")
                .unwrap_or("")
                .parse()
                .map_err(|e: String| anyhow::anyhow!("input {e}")),
            crate::review::Unreviewed::Warn,
        );
        let inputs = Inputs {
            token: env.input("github-token").map(str::to_string),
            mode,
            working_directory: take(
                p,
                parse_working_directory(env.input("working-directory")),
                PathBuf::from("."),
            ),
            environments,
            apps: env.input("apps").map(str::to_string),
            comment,
            comment_id: env.input("comment-id").map_or(default_id, str::to_string),
            max_comment_parts,
            context_lines,
            kubeconfig: env.input("kubeconfig").map(str::to_string),
            sops_age_key: env.input("sops-age-key").map(str::to_string),
            sops_key_services: env.input("sops-key-services").map(str::to_string),
            context: env.input("context").map(str::to_string),
            apply: crate::apply::Options {
                prune,
                sync,
                create_namespace,
                force_conflicts,
                record_namespace: env
                    .input("record-namespace")
                    .unwrap_or("kdeploy-system")
                    .to_string(),
                wait: wait.map(|w| crate::wait::Options {
                    load_balancers,
                    ready_condition_kinds: comma_list(env.input("wait-for-ready")),
                    ..w
                }),
                rollback,
                deletion_consent: allow_deletions.then(|| "the input allow-deletions".to_string()),
                deletion_budget,
                ..crate::apply::Options::default()
            },
            github_deployments,
            environment_url: env.input("environment-url").map(str::to_string),
            allow_pull_request_target,
            plan_cluster,
            publish,
            promote_from: env.input("promote-from").map(str::to_string),
            unreviewed,
            policy: env.input("policy").map(str::to_string),
            policies: env.input("policies").map(str::to_string),
            admission_policies: env.input("admission-policies").map(str::to_string),
            render_cache: take(p, parse_render_cache(env.input("render-cache")), None).map(|dir| {
                // Where actions/cache restores it: under the workspace.
                PathBuf::from(env.var("GITHUB_WORKSPACE").unwrap_or(".")).join(dir)
            }),
            policy_acknowledge_label: env.input("policy-acknowledge-label").map(str::to_string),
            deletion_consent_label: env
                .input("deletion-consent-label")
                .unwrap_or("kdeploy/allow-deletions")
                .to_string(),
            promote_to: env.input("promote-to").map(str::to_string),
            drift_unmanaged,
            drift_repair,
            preview_template: env.input("preview-template").map(|t| t.trim().to_string()),
            preview_older_than,
            promote_keys: comma_list(env.input("promote-keys")),
        };
        problems.into_result(inputs).map_err(anyhow::Error::from)
    }
}
