//! Rendering: commits, the work tree, inheritance, `_gen`, bad input.

use kdeploy::config::Filter;
use kdeploy::render::{self, State};
use kdeploy::source::{Revision, Snapshot};

use crate::util::Repo;

fn render_at(repo: &Repo, rev: Option<&str>) -> Result<State, render::Error> {
    let snap = Snapshot::open(repo.path(), &Revision::parse(rev)).expect("snapshot opens");
    render::render(&snap, &Filter::default())
}

fn object<'a>(state: &'a State, env: &str, kind: &str) -> &'a serde_json::Value {
    &state
        .releases
        .iter()
        .find(|r| r.release.env == env)
        .and_then(|r| r.resources.iter().find(|x| x.id.kind == kind))
        .unwrap_or_else(|| panic!("no {kind} in {env}"))
        .object
}

fn image(state: &State, env: &str) -> String {
    object(state, env, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .to_string()
}

#[test]
fn renders_each_commit_and_the_work_tree_without_touching_it() {
    let repo = Repo::with_app();
    let first = repo.commit("first");
    repo.write("services/api/version", "1.1.0\n");
    repo.commit("bump");
    repo.write("services/api/version", "2.0.0-dirty\n");

    let at_first = render_at(&repo, Some(&first)).unwrap();
    let at_parent = render_at(&repo, Some("HEAD~1")).unwrap();
    let at_head = render_at(&repo, Some("main")).unwrap();
    let work = render_at(&repo, None).unwrap();
    assert_eq!(image(&at_first, "staging"), "ghcr.io/example/api:1.0.0");
    assert_eq!(image(&at_parent, "staging"), "ghcr.io/example/api:1.0.0");
    assert_eq!(image(&at_head, "staging"), "ghcr.io/example/api:1.1.0");
    assert_eq!(image(&work, "staging"), "ghcr.io/example/api:2.0.0-dirty");
    // Rendering commits read git objects only: the edit is still there.
    assert_eq!(repo.read("services/api/version"), "2.0.0-dirty\n");
    assert!(
        repo.git(&["status", "--porcelain"])
            .contains("services/api/version")
    );
}

#[test]
fn env_level_inherits_and_overrides_app_level() {
    let repo = Repo::new();
    repo.write(
        "services/api/config.yaml",
        "image: ghcr.io/example/api\nargs: [a, b]\nenv:\n  A: app\n  B: app\nresources:\n  requests:\n    cpu: 1\n",
    )
    .write("services/api/version", "1.0.0\n")
    .write("services/api/staging/config.yaml", "env:\n  B: env\nargs: [c]\n")
    .write(
        "services/api/production/config.yaml",
        "probes:\n  liveness: null\nresources:\n  requests:\n    memory: 1Gi\n",
    )
    .write("services/api/production/version", "0.9.0\n");
    repo.commit("c");
    let state = render_at(&repo, Some("HEAD")).unwrap();

    // env beats app for `version`; staging inherits the app's.
    assert_eq!(image(&state, "staging"), "ghcr.io/example/api:1.0.0");
    assert_eq!(image(&state, "production"), "ghcr.io/example/api:0.9.0");
    // maps merge recursively
    let cm = object(&state, "staging", "ConfigMap");
    assert_eq!(cm["data"], serde_json::json!({"A": "app", "B": "env"}));
    // lists are replaced, not appended
    let c = &object(&state, "staging", "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["c"]));
    // nested maps merge over chart defaults too; null removes a default
    let p =
        &object(&state, "production", "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        p["resources"]["requests"],
        serde_json::json!({"cpu": 1, "memory": "1Gi"})
    );
    assert!(p.get("livenessProbe").is_none());
    assert!(p.get("readinessProbe").is_some());
}

#[test]
fn three_lines_of_config_give_a_complete_service() {
    let repo = Repo::new();
    repo.write("services/shop/config.yaml", "image: ghcr.io/example/shop\n")
        .write("services/shop/version", "3.1.4\n")
        .write("services/shop/prod/config.yaml", "");
    let state = render_at(&repo, None).unwrap();
    let kinds: Vec<String> = state.releases[0]
        .resources
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace shop-prod",
            "policy/PodDisruptionBudget shop-prod/shop",
            "ServiceAccount shop-prod/shop",
            "Service shop-prod/shop",
            "apps/Deployment shop-prod/shop",
        ]
    );
    insta::assert_snapshot!(kdeploy::output::release_text(&state.releases[0]));
}

#[test]
fn render_writes_gen_and_removes_deleted_apps() {
    let repo = Repo::with_app();
    repo.write("services/web/config.yaml", "image: ghcr.io/example/web\n")
        .write("services/web/version", "1\n")
        .write("services/web/staging/config.yaml", "");
    let run = repo.kdeploy(&["render"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        repo.path()
            .join("_gen/staging/web/resources.yaml")
            .is_file()
    );
    assert!(
        repo.path()
            .join("_gen/production/api/resources.yaml")
            .is_file()
    );
    assert!(
        repo.read("_gen/staging/web/resources.yaml")
            .contains("image: ghcr.io/example/web:1")
    );

    repo.remove("services/web");
    let run = repo.kdeploy(&["render"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!repo.path().join("_gen/staging/web").exists());
    assert!(
        repo.path()
            .join("_gen/staging/api/resources.yaml")
            .is_file()
    );
    // no staging directories left behind
    let leftovers: Vec<_> = std::fs::read_dir(repo.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("._gen"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_filter_matching_nothing_names_the_first_apps_of_a_large_repo() {
    let repo = Repo::new();
    for i in 0..25 {
        repo.write(&format!("services/app-{i:02}/config.yaml"), "image: x\n")
            .write(&format!("services/app-{i:02}/version"), "1.0\n")
            .write(&format!("services/app-{i:02}/staging/config.yaml"), "");
    }
    let run = repo.kdeploy(&["validate", "--app", "api"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("apps: app-00, app-01,") && run.stderr.contains("app-19 and 5 more"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("app-24"), "{}", run.stderr);
}

#[test]
fn render_with_filter_keeps_other_outputs() {
    let repo = Repo::with_app();
    assert_eq!(repo.kdeploy(&["render"]).code, 0);
    repo.write("services/api/version", "9.9.9\n");
    let run = repo.kdeploy(&["render", "--env", "staging"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        repo.read("_gen/staging/api/resources.yaml")
            .contains(":9.9.9")
    );
    assert!(
        repo.read("_gen/production/api/resources.yaml")
            .contains(":1.0.0")
    );
}

#[test]
fn render_check_reports_drift_with_exit_1() {
    let repo = Repo::with_app();
    assert_eq!(repo.kdeploy(&["render"]).code, 0);
    let clean = repo.kdeploy(&["render", "--check"]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);

    repo.write("services/api/production/config.yaml", "replicas: 5\n");
    repo.write("_gen/qa/old/resources.yaml", "stale");
    let before = repo.read("_gen/production/api/resources.yaml");
    let drift = repo.kdeploy(&["render", "--check"]);
    assert_eq!(drift.code, 1);
    assert!(
        drift.stdout.contains("differs") && drift.stdout.contains("production/api/resources.yaml"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("obsolete") && drift.stdout.contains("qa/old"),
        "{}",
        drift.stdout
    );
    // --check never writes
    assert_eq!(repo.read("_gen/production/api/resources.yaml"), before);
}

#[test]
fn render_stdout_prints_documents() {
    let repo = Repo::with_app();
    let run = repo.kdeploy(&["render", "--stdout", "--env", "production"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("replicas: 3"));
    assert!(!run.stdout.contains("kdeploy.io/environment: staging"));
    assert!(!repo.path().join("_gen").exists());
}

#[test]
fn config_repo_may_be_a_subdirectory_of_the_git_repository() {
    let repo = Repo::new();
    repo.write("deploy/services/api/config.yaml", "image: x/api\n")
        .write("deploy/services/api/version", "1\n")
        .write("deploy/services/api/prod/config.yaml", "");
    repo.commit("c");
    let snap = Snapshot::open(&repo.path().join("deploy"), &Revision::parse(Some("HEAD"))).unwrap();
    let state = render::render(&snap, &Filter::default()).unwrap();
    assert_eq!(state.releases.len(), 1);
}

#[test]
fn compare_rerenders_only_what_changed() {
    let repo = Repo::with_app();
    repo.write("services/web/config.yaml", "image: ghcr.io/example/web\n")
        .write("services/web/version", "1\n")
        .write("services/web/staging/config.yaml", "");
    let base = repo.commit("base");
    repo.write("services/web/staging/config.yaml", "replicas: 4\n");
    let head = repo.commit("web change");
    let open = |rev: &str| Snapshot::open(repo.path(), &Revision::parse(Some(rev))).unwrap();
    let cmp = render::compare(&open(&base), &open(&head), &Filter::default()).unwrap();
    let rendered: Vec<_> = cmp
        .head
        .releases
        .iter()
        .map(|r| format!("{}/{}", r.release.env, r.release.app))
        .collect();
    assert_eq!(rendered, ["staging/web"]);
    assert_eq!(cmp.unchanged.len(), 2);

    // A chart change re-renders every release using that chart.
    repo.write(
        "charts/service/Chart.yaml",
        "name: service\nversion: 2.0.0\n",
    );
    for (path, text) in kdeploy::render::chart::BUILTIN.iter().skip(1) {
        repo.write(&format!("charts/service/{path}"), text);
    }
    let chart = repo.commit("vendor chart");
    let cmp = render::compare(&open(&head), &open(&chart), &Filter::default()).unwrap();
    assert_eq!(cmp.head.releases.len(), 3);
    assert!(cmp.unchanged.is_empty());
}

mod bad_input {
    //! Each bad input: exit code 2, the file (and line) named, nothing written.

    use crate::util::Repo;

    /// Renders with the binary and checks the failure contract.
    fn fails(repo: &Repo, expected: &[&str]) -> String {
        let before = std::fs::read_dir(repo.path().join("_gen")).is_ok();
        let run = repo.kdeploy(&["render"]);
        assert_eq!(
            run.code, 2,
            "stdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        for e in expected {
            assert!(run.stderr.contains(e), "expected {e:?} in:\n{}", run.stderr);
        }
        assert_eq!(
            before,
            std::fs::read_dir(repo.path().join("_gen")).is_ok(),
            "nothing written"
        );
        run.stderr
    }

    #[test]
    fn invalid_yaml_names_file_and_line() {
        let repo = Repo::with_app();
        repo.write(
            "services/api/staging/config.yaml",
            "replicas: 2\nenv:\n  A: [1\n  B: 2\n",
        );
        fails(
            &repo,
            &["services/api/staging/config.yaml:4:", "invalid YAML"],
        );
    }

    #[test]
    fn config_that_is_not_a_map() {
        let repo = Repo::with_app();
        repo.write("services/api/config.yaml", "- image: x\n");
        fails(
            &repo,
            &[
                "services/api/config.yaml:1:1",
                "must be a map",
                "found a list",
            ],
        );
    }

    #[test]
    fn missing_app_level_config() {
        let repo = Repo::with_app();
        repo.remove("services/api/config.yaml");
        fails(
            &repo,
            &["services/api/config.yaml", "missing app-level config.yaml"],
        );
    }

    #[test]
    fn missing_env_level_config() {
        let repo = Repo::with_app();
        repo.write("services/api/qa/version", "1.0.0\n");
        fails(
            &repo,
            &["services/api/qa/config.yaml", "has no config.yaml"],
        );
    }

    #[test]
    fn no_version_anywhere_names_the_paths_looked_at() {
        let repo = Repo::with_app();
        repo.remove("services/api/version");
        fails(
            &repo,
            &[
                "has no version",
                "services/api/staging/version",
                "services/api/version",
            ],
        );
    }

    #[test]
    fn unknown_chart() {
        let repo = Repo::with_app();
        repo.write("services/api/staging/config.yaml", "chart: nope\n");
        fails(
            &repo,
            &["services/api/staging/config.yaml", "unknown chart `nope`"],
        );
    }

    fn custom_chart(repo: &Repo, template: &str) {
        repo.write("charts/mini/Chart.yaml", "name: mini\nversion: 0.1.0\n")
            .write("charts/mini/values.yaml", "size: 1\n")
            .write("charts/mini/templates/cm.yaml", template)
            .write("services/api/config.yaml", "chart: mini\n");
    }

    #[test]
    fn template_referencing_a_missing_value() {
        let repo = Repo::with_app();
        custom_chart(
            &repo,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{values.nothere}}\n",
        );
        fails(
            &repo,
            &[
                "charts/mini/templates/cm.yaml:6:",
                "missing value `values.nothere`",
            ],
        );
    }

    #[test]
    fn missing_value_inside_an_included_partial_names_the_partial() {
        for call in ["{{nindent 4 (include \"labels\")}}", "\n    {{> labels}}"] {
            let repo = Repo::with_app();
            custom_chart(
                &repo,
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels:{call}\n"
                ),
            );
            repo.write(
                "charts/mini/templates/_labels.yaml",
                "app: {{release.app}}\nteam: {{values.team}}\n",
            );
            fails(
                &repo,
                &[
                    "charts/mini/templates/_labels.yaml:2:",
                    "missing value `values.team`",
                ],
            );
        }
    }

    #[test]
    fn include_of_an_unknown_or_recursive_partial() {
        let repo = Repo::with_app();
        custom_chart(
            &repo,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels:{{nindent 4 (include \"lables\")}}\n",
        );
        repo.write("charts/mini/templates/_labels.yaml", "a: b\n");
        fails(
            &repo,
            &[
                "charts/mini/templates/cm.yaml:5:",
                "no partial `lables`",
                "this chart has: labels",
            ],
        );
        repo.write(
            "charts/mini/templates/_labels.yaml",
            "a: {{include \"labels\"}}\n",
        );
        repo.write(
            "charts/mini/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels:{{nindent 4 (include \"labels\")}}\n",
        );
        fails(&repo, &["does a partial include itself?"]);
    }

    #[test]
    fn template_producing_invalid_yaml() {
        let repo = Repo::with_app();
        custom_chart(
            &repo,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: {{values.size}}\n",
        );
        fails(
            &repo,
            &[
                "charts/mini/templates/cm.yaml",
                "not valid YAML",
                "line 5 of the output",
            ],
        );
    }

    #[test]
    fn document_without_identity() {
        let repo = Repo::with_app();
        custom_chart(&repo, "apiVersion: v1\nmetadata:\n  labels: {}\n");
        fails(
            &repo,
            &[
                "charts/mini/templates/cm.yaml",
                "has no kind, metadata.name",
            ],
        );
    }

    #[test]
    fn two_releases_producing_the_same_resource_names_both() {
        let repo = Repo::with_app();
        repo.write(
            "services/web/config.yaml",
            "image: x/web\nnamespace: api-staging\ncreateNamespace: false\n",
        )
        .write("services/web/version", "1\n")
        .write("services/web/staging/config.yaml", "");
        // Both render a PodDisruptionBudget... only if names collide: give web the api name.
        repo.write(
            "charts/service/Chart.yaml",
            "name: service\nversion: 1.0.0\n",
        );
        for (path, text) in kdeploy::render::chart::BUILTIN.iter().skip(1) {
            repo.write(
                &format!("charts/service/{path}"),
                &text.replace("{{release.name}}", "shared"),
            );
        }
        fails(
            &repo,
            &[
                "is produced twice",
                "services/api/staging",
                "services/web/staging",
            ],
        );
    }

    #[test]
    fn names_that_are_not_dns_labels() {
        let repo = Repo::with_app();
        repo.write("services/api/Prod_1/config.yaml", "");
        repo.write("services/My_App/config.yaml", "image: x\n");
        fails(
            &repo,
            &[
                "environment name `Prod_1`",
                "app name `My_App`",
                "2 problems found",
            ],
        );
    }

    #[test]
    fn version_file_blank_or_several_lines() {
        let repo = Repo::with_app();
        repo.write("services/api/version", "  \n\n");
        fails(&repo, &["services/api/version", "version file is empty"]);
        repo.write("services/api/version", "1.0.0\n1.0.1\n");
        fails(&repo, &["services/api/version:2", "exactly one version"]);
    }

    #[test]
    fn a_failed_render_keeps_the_previous_output() {
        let repo = Repo::with_app();
        assert_eq!(repo.kdeploy(&["render"]).code, 0);
        let before = repo.read("_gen/staging/api/resources.yaml");
        repo.write("services/api/staging/config.yaml", ": : :\n");
        fails(&repo, &["services/api/staging/config.yaml"]);
        assert_eq!(repo.read("_gen/staging/api/resources.yaml"), before);
    }

    #[test]
    fn unknown_revision_is_a_clear_error() {
        let repo = Repo::with_app();
        repo.commit("c");
        let run = repo.kdeploy(&["render", "--rev", "no-such-branch", "--stdout"]);
        assert_eq!(run.code, 2);
        assert!(
            run.stderr
                .contains("cannot resolve revision `no-such-branch`"),
            "{}",
            run.stderr
        );
    }
}

/// The built-in chart's values schema: of a real repo's keys, what the
/// chart does not know is an error at the user's line, with the nearest
/// known key when it looks like a typo; nothing is silently dropped.
#[test]
fn values_the_chart_does_not_know_are_errors_at_their_line() {
    let repo = Repo::new();
    repo.write("services/shop/config.yaml", "image: ghcr.io/example/shop\nreplcas: 5\n")
        .write("services/shop/version", "1.0.0\n")
        .write(
            "services/shop/production/config.yaml",
            "scalability:\n  replicas: 3\nresources:\n  memoryMiB: 512\nprobes:\n  liveness:\n    path: /healthz\n    port: 8081\n",
        );
    repo.commit("foreign keys");
    let err = render_at(&repo, None).unwrap_err().to_string();
    for expected in [
        "services/shop/config.yaml:2:1: `replcas` is not a value of chart `service`",
        "did you mean `replicas`?",
        "services/shop/production/config.yaml:1:1: `scalability` is not a value of chart `service`",
        "services/shop/production/config.yaml:4:3: `resources.memoryMiB` is not a value of chart `service`",
        "known here: `limits`, `requests`",
        "services/shop/production/config.yaml:8:5: `probes.liveness.port` is not a value",
        "4 problems found",
    ] {
        assert!(err.contains(expected), "{expected:?} in:\n{err}");
    }
}

#[test]
fn a_missing_image_is_required_by_the_schema() {
    let repo = Repo::new();
    repo.write("services/shop/config.yaml", "port: 9000\n")
        .write("services/shop/version", "1.0.0\n")
        .write("services/shop/production/config.yaml", "");
    repo.commit("no image");
    let err = render_at(&repo, None).unwrap_err().to_string();
    assert!(
        err.contains("`image` is required by chart `service`"),
        "{err}"
    );
}

/// A repo chart with its own `values.schema.json` is checked the same way;
/// a broken schema is an error naming it.
#[test]
fn a_repo_charts_values_schema_is_used_and_checked() {
    let repo = Repo::new();
    repo.write("charts/c/Chart.yaml", "name: c\nversion: 1.0.0\n")
        .write(
            "charts/c/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  level: {{quote values.level}}\n",
        )
        .write(
            "charts/c/values.schema.json",
            r#"{"type": "object", "additionalProperties": false, "properties": {"chart": {"type": "string"}, "level": {"enum": ["info", "debug"]}}}"#,
        )
        .write("services/shop/config.yaml", "chart: c\n")
        .write("services/shop/version", "1\n")
        .write("services/shop/production/config.yaml", "level: loud\n");
    repo.commit("enum");
    let err = render_at(&repo, None).unwrap_err().to_string();
    assert!(
        err.contains("services/shop/production/config.yaml:1:8: `level`:"),
        "{err}"
    );
    assert!(err.contains("charts/c/values.schema.json"), "{err}");
    repo.write("services/shop/production/config.yaml", "level: debug\n");
    repo.commit("fixed");
    assert!(render_at(&repo, None).is_ok());
    repo.write("charts/c/values.schema.json", "{\"type\": 12}");
    repo.commit("broken schema");
    let err = render_at(&repo, None).unwrap_err().to_string();
    assert!(
        err.contains("charts/c/values.schema.json: invalid values schema"),
        "{err}"
    );
}
