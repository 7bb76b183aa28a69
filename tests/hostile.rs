//! The bad-input corpus: broken and hostile config repos, flags, action
//! inputs, payloads and kubeconfigs, as a careless user or an attacker
//! opening a pull request would write them.
//!
//! Every case runs the real binary and asserts its exit code, the words of
//! the message (file:line and what to do), that the work tree is exactly as
//! it was (nothing written, nothing deleted), that a canary secret placed in
//! the environment and in files outside the repo appears in no output, and
//! that it finishes within 10 s (bombs included).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Repo, Run, tree};

/// Put in the environment, in a kubeconfig and in files outside the repo.
const CANARY: &str = "CANARY-7f3a9c-SECRET";

/// A file outside the repo holding the canary, as a kubeconfig would.
fn outside_secret() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secret.yaml");
    std::fs::write(&file, format!("token: {CANARY}\nimage: {CANARY}\n")).expect("write");
    (dir, file)
}

/// Runs kdeploy in `dir` with the canary in its environment.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("GITHUB_ACTIONS")
        .env("NO_COLOR", "1")
        .env("KDEPLOY_TEST_CANARY", CANARY)
        .env("GITHUB_TOKEN", CANARY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run: Run = cmd.output().expect("kdeploy runs").into();
    (run, started.elapsed())
}

/// One case: the repo as set up, the command, and what it must print.
struct Case<'a> {
    name: &'a str,
    repo: &'a Repo,
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    code: i32,
    says: &'a [&'a str],
}

impl Case<'_> {
    fn check(&self) {
        let before = tree(self.repo.path());
        let (out, took) = run(self.repo.path(), self.args, self.env);
        let after = tree(self.repo.path());
        // `::add-mask::` lines are how the action hides a token: the runner
        // takes them and never shows them.
        let all: String = format!("{}{}", out.stdout, out.stderr)
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            out.code, self.code,
            "{}: exit code\nstdout: {}\nstderr: {}",
            self.name, out.stdout, out.stderr
        );
        for words in self.says {
            assert!(
                all.contains(words),
                "{}: expected {words:?} in:\n{all}",
                self.name
            );
        }
        assert!(
            !all.contains(CANARY),
            "{}: canary printed:\n{all}",
            self.name
        );
        assert!(
            !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
            "{}: crashed:\n{all}",
            self.name
        );
        assert!(
            took < Duration::from_secs(10),
            "{}: took {took:?}",
            self.name
        );
        if before != after {
            let changed: Vec<_> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            panic!("{}: the work tree changed: {changed:?}", self.name);
        }
    }
}

/// A repo with one valid app (`shop`, env `production`) committed, then
/// `files` written on top (and committed when `commit`).
fn repo_with(files: &[(&str, &[u8])], commit: bool) -> Repo {
    let repo = Repo::new();
    repo.write("services/shop/config.yaml", "image: ghcr.io/example/shop\n")
        .write("services/shop/version", "1.0.0\n")
        .write("services/shop/production/config.yaml", "");
    repo.commit("valid");
    for (path, bytes) in files {
        let full = repo.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, bytes).expect("write");
    }
    if commit {
        repo.commit("bad input");
    }
    repo
}

/// Like [`repo_with`] with one env config.
fn env_config(text: &str) -> Repo {
    repo_with(
        &[("services/shop/production/config.yaml", text.as_bytes())],
        false,
    )
}

fn render_fails(name: &str, repo: &Repo, says: &[&str]) {
    Case {
        name,
        repo,
        args: &["render"],
        env: &[],
        code: 2,
        says,
    }
    .check();
}

const CFG: &str = "services/shop/production/config.yaml";

#[test]
fn yaml_mistakes_name_the_line_and_the_cause() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "tab indentation",
            "resources:\n\trequests: {}\n",
            &[&format!("{CFG}:2:"), "indent with spaces"],
        ),
        (
            "unquoted colon",
            "command: echo a: b\n",
            &[&format!("{CFG}:1:"), "must be quoted"],
        ),
        (
            "bad indentation",
            "env:\n  A: 1\n B: 2\n",
            &[&format!("{CFG}:3:"), "indentation"],
        ),
        (
            "duplicate key",
            "replicas: 2\nport: 80\nreplicas: 3\n",
            &[
                &format!("{CFG}:3:"),
                "duplicate key `replicas` (first on line 1, again on line 3)",
            ],
        ),
        (
            "nested duplicate key",
            "env:\n  A: 1\n  A: 2\n",
            &["duplicate key `A` (first on line 2, again on line 3)"],
        ),
        (
            "duplicate key beside an anchor",
            "env: &e\n  A: 1\nx: *e\nenv: {}\n",
            &["duplicate key `env`"],
        ),
        (
            "a list, not a map",
            "- replicas: 2\n",
            &[
                &format!("{CFG}:1:1"),
                "must be a map of values, found a list",
            ],
        ),
        (
            "unclosed flow list",
            "args: [a, b\n",
            &[&format!("{CFG}:"), "invalid YAML"],
        ),
        (
            "wrong quoting",
            "command: \"abc\n",
            &[&format!("{CFG}:"), "invalid YAML"],
        ),
        (
            // libyaml-safer panicked on it; the process died with 101.
            "a tag before a comma in a flow list",
            "env:\n  A: \"1\"\nargs: [!x,b]\n",
            &[&format!("{CFG}:3:"), "invalid YAML"],
        ),
    ];
    for (name, text, says) in cases {
        render_fails(name, &env_config(text), says);
    }
}

#[test]
fn bombs_stop_early_with_the_limit_named() {
    let deep_flow = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    render_fails(
        "deep flow nesting",
        &env_config(&deep_flow),
        &[&format!("{CFG}:1:"), "nesting deeper than 100 levels"],
    );
    let mut deep_block = String::new();
    for i in 0..300 {
        deep_block.push_str(&format!("{}k{i}:\n", " ".repeat(2 * i)));
    }
    render_fails(
        "deep block nesting",
        &env_config(&deep_block),
        &[CFG, "nesting deeper than 100 levels"],
    );
    let huge = format!("a: {}\n", "x".repeat(5 << 20));
    render_fails(
        "5 MiB config.yaml",
        &env_config(&huge),
        &[CFG, "over the limit of 4194304 bytes", "limits.fileBytes"],
    );
    let anchors = "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    render_fails(
        "billion laughs",
        &env_config(anchors),
        &[CFG, "invalid YAML"],
    );
}

/// A repo whose `shop` release uses chart `c` with these templates.
fn chart_repo(values: &str, templates: &[(&str, &str)]) -> Repo {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "charts/c/Chart.yaml".into(),
            b"name: c\nversion: 1.0.0\n".to_vec(),
        ),
        ("charts/c/values.yaml".into(), values.as_bytes().to_vec()),
        (CFG.into(), b"chart: c\n".to_vec()),
    ];
    for (name, text) in templates {
        files.push((
            format!("charts/c/templates/{name}"),
            text.as_bytes().to_vec(),
        ));
    }
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    repo_with(&borrowed, false)
}

#[test]
fn template_bombs_stop_within_their_budget() {
    let items = format!(
        "items: [{}]\n",
        (0..300)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let nested = "{{#each values.items}}{{#each ../values.items}}{{#each ../../values.items}}x{{/each}}{{/each}}{{/each}}\n";
    render_fails(
        "three nested loops over 300 items",
        &chart_repo(&items, &[("a.yaml", nested)]),
        &[
            "charts/c/templates/a.yaml:1:",
            "exceeds the limit of 1000000 steps",
            "limits.templateSteps",
        ],
    );
    let silent = "{{#each values.items}}{{#each ../values.items}}{{#each ../../values.items}}{{#each ../../../values.items}}{{/each}}{{/each}}{{/each}}{{/each}}\n";
    render_fails(
        "four nested loops that print nothing",
        &chart_repo(&items, &[("a.yaml", silent)]),
        &["exceeds the limit of 1000000 steps"],
    );
    let mut doubling: Vec<(String, String)> = (1..27)
        .map(|i| {
            (
                format!("_p{i}.yaml"),
                format!("{{{{> p{0}}}}}{{{{> p{0}}}}}\n", i + 1),
            )
        })
        .collect();
    doubling.push(("_p27.yaml".into(), "x\n".into()));
    doubling.push(("a.yaml".into(), "{{> p1}}\n".into()));
    let t: Vec<(&str, &str)> = doubling
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    render_fails(
        "partials that include the next twice",
        &chart_repo("", &t),
        &[
            "charts/c/templates/a.yaml",
            "expands 134217728 partials, more than 10000",
        ],
    );
    let includes: Vec<(String, String)> = (1..27)
        .map(|i| {
            (
                format!("_p{i}.yaml"),
                format!("{{{{include \"p{0}\"}}}}{{{{include \"p{0}\"}}}}\n", i + 1),
            )
        })
        .chain([
            ("_p27.yaml".to_string(), "x\n".to_string()),
            ("a.yaml".to_string(), "{{include \"p1\"}}\n".to_string()),
        ])
        .collect();
    let t: Vec<(&str, &str)> = includes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    render_fails(
        "includes that double",
        &chart_repo("", &t),
        &["charts/c/templates/a.yaml", "exceeds the limit of"],
    );
    render_fails(
        "a partial that includes itself",
        &chart_repo(
            "",
            &[("_loop.yaml", "{{> loop}}\n"), ("a.yaml", "{{> loop}}\n")],
        ),
        &["partial `loop` includes itself"],
    );
    render_fails(
        "a huge indent",
        &chart_repo("", &[("a.yaml", "a:{{nindent 100000000 \"x\"}}\n")]),
        &["charts/c/templates/a.yaml:1:", "at most 1024"],
    );
    let replace_bomb = format!("a: {}\nb: {}\n", "a".repeat(100_000), "b".repeat(100_000));
    render_fails(
        "replace that multiplies",
        &chart_repo(
            &replace_bomb,
            &[("a.yaml", "x: {{replace \"a\" values.b values.a}}\n")],
        ),
        &["exceeds the limit of 8388608 bytes", "limits.releaseBytes"],
    );
    let limited = chart_repo(
        "",
        &[(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  a: \"{{values.pad}}\"\n",
        )],
    );
    limited.write("kdeploy.yaml", "limits:\n  releaseBytes: 100\n");
    limited.write(
        "charts/c/values.yaml",
        &format!("pad: {}\n", "p".repeat(200)),
    );
    render_fails(
        "a release over a lowered releaseBytes",
        &limited,
        &["exceeds the limit of 100 bytes"],
    );
}

#[test]
fn template_mistakes_point_at_the_template() {
    render_fails(
        "missing value",
        &chart_repo("", &[("a.yaml", "x: {{values.nope}}\n")]),
        &[
            "charts/c/templates/a.yaml:1:",
            "missing value `values.nope`",
        ],
    );
    render_fails(
        "template syntax",
        &chart_repo("", &[("a.yaml", "{{#if values.x}}\n")]),
        &["charts/c/templates/a.yaml", "template syntax error"],
    );
    render_fails(
        "rendered output is not YAML",
        &chart_repo("", &[("a.yaml", "a: [\n")]),
        &["charts/c/templates/a.yaml", "not valid YAML"],
    );
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: {{values.password}}\n";
    let leaky = chart_repo("", &[("a.yaml", secret)]);
    leaky.write(CFG, &format!("chart: c\npassword: \"{CANARY}: [x\"\n"));
    render_fails(
        "a Secret value that breaks the YAML",
        &leaky,
        &[
            "charts/c/templates/a.yaml",
            "not valid YAML",
            "password: <value hidden>",
        ],
    );
    render_fails(
        "a document without kind",
        &chart_repo("", &[("a.yaml", "apiVersion: v1\nmetadata:\n  name: x\n")]),
        &["charts/c/templates/a.yaml", "has no kind"],
    );
    render_fails(
        "unknown chart",
        &env_config("chart: nope\n"),
        &[CFG, "unknown chart `nope`"],
    );
    render_fails(
        "chart is not a string",
        &env_config("chart: 5\n"),
        &[CFG, "`chart` must be a chart name"],
    );
}

#[test]
fn rendered_fields_the_api_server_refuses_point_at_the_users_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "replicas as words",
            "port: 8080\nreplicas: \"three\"\n",
            &[
                &format!("{CFG}:2:11"),
                "`replicas`: \"three\" is not of type \"integer\"",
            ],
        ),
        (
            "negative replicas",
            "replicas: -3\n",
            &[&format!("{CFG}:1:11"), "-3 is less than the minimum of 0"],
        ),
        (
            "cpu that is no quantity",
            "resources:\n  requests:\n    cpu: lots\n",
            &[&format!("{CFG}:3:10"), "\"lots\" is not a quantity"],
        ),
        (
            "memory in the wrong unit",
            "resources:\n  limits:\n    memory: 1Gb\n",
            &[&format!("{CFG}:3:13"), "\"1Gb\" is not a quantity"],
        ),
        (
            "port out of range",
            "port: 70000\n",
            &[
                &format!("{CFG}:1:7"),
                "70000 is greater than the maximum of 65535",
            ],
        ),
        (
            "namespace that is no label",
            "namespace: Not_A_Label\n",
            &[CFG, "`namespace` must be a DNS-1123 label"],
        ),
        (
            "image that is no reference",
            "image: \"ghcr.io/Example/Shop\"\n",
            &[&format!("{CFG}:1:8"), "is not an image reference"],
        ),
    ];
    for (name, text, says) in cases {
        render_fails(name, &env_config(text), says);
    }
    // A chart without a values schema: the rendered field is checked and
    // traced back to the user's line.
    render_fails(
        "replicas as words through a chart without a schema",
        &repo_with(
            &[
                ("charts/c/Chart.yaml", b"name: c\nversion: 1.0.0\n"),
                (
                    "charts/c/templates/d.yaml",
                    b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: {{values.replicas}}\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
                ),
                (CFG, b"chart: c\nreplicas: \"three\"\n"),
            ],
            false,
        ),
        &[
            &format!("{CFG}:2:11"),
            "spec.replicas",
            "expected an integer",
            "charts/c/templates/d.yaml",
        ],
    );
    render_fails(
        "version that breaks the image",
        &repo_with(&[("services/shop/version", b"1.0:{a}\"x\n")], false),
        &["services/shop/version:1:1", "is not an image reference"],
    );
    let object =
        |meta: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n{meta}data: {{}}\n");
    render_fails(
        "object name that is no subdomain",
        &chart_repo("", &[("a.yaml", &object("  name: Bad_Name\n"))]),
        &[
            "charts/c/templates/a.yaml",
            "`Bad_Name` is not a DNS-1123 subdomain",
        ],
    );
    render_fails(
        "namespace with a slash",
        &chart_repo(
            "",
            &[("a.yaml", &object("  name: ok\n  namespace: Not/Valid\n"))],
        ),
        &["`Not/Valid` is not a DNS-1123 label"],
    );
    render_fails(
        "namespace on a cluster-scoped kind",
        &chart_repo(
            "",
            &[(
                "a.yaml",
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r\n  namespace: shop\nrules: []\n",
            )],
        ),
        &["ClusterRole r is cluster-scoped but sets metadata.namespace `shop`"],
    );
    render_fails(
        "service name longer than a label",
        &chart_repo(
            "",
            &[(
                "a.yaml",
                &format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\nspec:\n  ports: [{{port: 80}}]\n",
                    "s".repeat(70)
                ),
            )],
        ),
        &["is not a DNS-1123 label"],
    );
    render_fails(
        "label value with spaces",
        &chart_repo(
            "",
            &[("a.yaml", &object("  name: ok\n  labels:\n    team: a b\n"))],
        ),
        &["label value `a b`"],
    );
    render_fails(
        "two apps make the same object",
        &repo_with(
            &[
                (
                    "services/cart/config.yaml",
                    b"image: ghcr.io/example/cart\nnamespace: shop-production\n",
                ),
                ("services/cart/version", b"1.0.0\n"),
                (
                    "services/cart/production/config.yaml",
                    b"createNamespace: true\n",
                ),
            ],
            false,
        ),
        &["Namespace shop-production in environment production is produced twice"],
    );
}

#[test]
fn versions_and_names_are_checked_as_text() {
    type Files<'a> = &'a [(&'a str, &'a [u8])];
    let cases: &[(&str, Files<'_>, &[&str])] = &[
        (
            "empty version",
            &[("services/shop/version", b"\n")],
            &["services/shop/version", "version file is empty"],
        ),
        (
            "two versions",
            &[("services/shop/version", b"1.0\n2.0\n")],
            &["services/shop/version", "exactly one version"],
        ),
        (
            "control character",
            &[("services/shop/version", b"1.0\x1b[31m\n")],
            &["services/shop/version:1", "control character"],
        ),
        (
            "not UTF-8",
            &[("services/shop/version", b"1.0\xff\n")],
            &["services/shop/version", "not UTF-8"],
        ),
        (
            "config not UTF-8",
            &[(CFG, b"a: \xff\n")],
            &[CFG, "not UTF-8"],
        ),
        (
            "app name with capitals",
            &[
                ("services/Shop_2/config.yaml", b"image: x\n"),
                ("services/Shop_2/version", b"1\n"),
                ("services/Shop_2/prod/config.yaml", b""),
            ],
            &["services/Shop_2", "not a DNS-1123 label"],
        ),
        (
            "env name with a dot",
            &[("services/shop/pro.d/config.yaml", b"")],
            &["services/shop/pro.d", "not a DNS-1123 label"],
        ),
        (
            "env without config.yaml",
            &[("services/shop/staging/version", b"1\n")],
            &["services/shop/staging/config.yaml", "has no config.yaml"],
        ),
        (
            "app without config.yaml",
            &[("services/cart/prod/config.yaml", b"")],
            &["services/cart/config.yaml", "missing app-level config.yaml"],
        ),
    ];
    for (name, files, says) in cases {
        render_fails(name, &repo_with(files, false), says);
    }
    let repo = repo_with(&[], false);
    repo.remove("services/shop/version");
    render_fails(
        "no version anywhere",
        &repo,
        &["has no version", "services/shop/production/version"],
    );
}

#[cfg(unix)]
fn link(repo: &Repo, path: &str, target: &Path) {
    let full = repo.path().join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    let _ = std::fs::remove_file(&full);
    std::os::unix::fs::symlink(target, full).expect("symlink");
}

#[cfg(unix)]
#[test]
fn symlinks_never_lead_out_of_the_repo_in_either_mode() {
    let (_keep, secret) = outside_secret();
    let env_file = Path::new("/proc/self/environ");
    let cases: &[(&str, &str, &Path, &str)] = &[
        (
            "version to the process environment",
            "services/shop/version",
            env_file,
            "points outside the config repo",
        ),
        (
            "config to a kubeconfig elsewhere",
            CFG,
            &secret,
            "points outside the config repo",
        ),
        (
            "app directory elsewhere",
            "services/evil",
            secret.parent().expect("dir"),
            "points outside the config repo",
        ),
        (
            "relative escape",
            "services/shop/version",
            Path::new("../../../../../../etc/hostname"),
            "points outside the config repo",
        ),
        (
            "dangling",
            "services/shop/version",
            Path::new("nowhere"),
            "points at nothing",
        ),
        (
            "loop",
            "services/shop/production/again",
            Path::new(".."),
            "a loop",
        ),
        (
            "chart template elsewhere",
            "charts/service/templates/x.yaml",
            &secret,
            "points outside the config repo",
        ),
    ];
    for (name, path, target, words) in cases {
        let repo = repo_with(&[], false);
        link(&repo, path, target);
        repo.commit("link");
        for args in [
            &["render"][..],
            &["render", "--rev", "HEAD"],
            &["plan", "--base", "HEAD~1", "--head", "HEAD"],
            &["validate"],
        ] {
            Case {
                name: &format!("{name} ({})", args.join(" ")),
                repo: &repo,
                args,
                env: &[],
                code: 2,
                says: &[path, words],
            }
            .check();
        }
    }
    // A link that stays inside is followed, the same in both modes.
    let repo = repo_with(&[("shared/version", b"2.0.0\n")], false);
    repo.remove("services/shop/version");
    link(
        &repo,
        "services/shop/version",
        Path::new("../../shared/version"),
    );
    repo.commit("inside link");
    for args in [
        &["render", "--stdout"][..],
        &["render", "--stdout", "--rev", "HEAD"],
    ] {
        let (out, _) = run(repo.path(), args, &[]);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.contains("ghcr.io/example/shop:2.0.0"),
            "{args:?}"
        );
    }
}

#[test]
fn settings_problems_are_all_listed_in_the_users_words() {
    let repo = repo_with(
        &[(
            "kdeploy.yaml",
            b"plan: 3\nchartz: x\nlimits:\n  fileBytes: 99999999999\nhelm:\n  timeoutSeconds: soon\n",
        )],
        false,
    );
    render_fails(
        "several kdeploy.yaml problems",
        &repo,
        &[
            "kdeploy.yaml:1:1: `plan`: found the number `3`, expected a map",
            "kdeploy.yaml:2:1: `chartz`: unknown key",
            "allowed keys: charts, services, output, defaultChart, namespace, plan, environments, sources, helm, limits, images",
            "kdeploy.yaml:4:3: `limits.fileBytes` is 99999999999; it must be between 1 and 33554432",
            "kdeploy.yaml:6:3: `helm.timeoutSeconds`: found the string \"soon\", expected a whole number",
            "4 problems found",
        ],
    );
    render_fails(
        "duplicate settings key",
        &repo_with(&[("kdeploy.yaml", b"output: a\noutput: b\n")], false),
        &["kdeploy.yaml:2:1", "duplicate key `output`"],
    );
    render_fails(
        "settings are a list",
        &repo_with(&[("kdeploy.yaml", b"- charts\n")], false),
        &["kdeploy.yaml:1:1", "must be a map of settings"],
    );
    let out = repo_with(&[], false);
    let victim = tempfile::tempdir().expect("victim");
    std::fs::write(victim.path().join("keep"), "mine").expect("write");
    out.write(
        "kdeploy.yaml",
        &format!("output: {}\n", victim.path().display()),
    );
    render_fails(
        "output outside the repo",
        &out,
        &["outside the config repo"],
    );
    assert_eq!(
        std::fs::read_to_string(victim.path().join("keep")).expect("kept"),
        "mine"
    );
    out.write("kdeploy.yaml", "output: ../victim\n");
    render_fails("output above the repo", &out, &["outside the config repo"]);
}

#[test]
fn render_only_replaces_its_own_output() {
    let repo = repo_with(&[("notes/keep.txt", b"mine\n"), ("afile", b"data\n")], true);
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "the repo itself",
            &["render", "--out", "."],
            "would replace the config repo itself",
        ),
        (
            "the repo by absolute path",
            &["render", "--out", "__ABS__"],
            "would replace the config repo itself",
        ),
        (
            "services",
            &["render", "--out", "services"],
            "would replace services/",
        ),
        (
            "inside services",
            &["render", "--out", "services/shop/out"],
            "would replace services/",
        ),
        (
            "charts",
            &["render", "--out", "charts"],
            "would replace charts/",
        ),
        ("git", &["render", "--out", ".git"], "would replace .git"),
        (
            "above the repo",
            &["render", "--out", ".."],
            "contains the config repo",
        ),
        (
            "a file",
            &["render", "--out", "afile"],
            "is not a directory",
        ),
        (
            "a directory of other files",
            &["render", "--out", "notes"],
            "holds",
        ),
    ];
    let abs = repo.path().display().to_string();
    for (name, args, words) in cases {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "__ABS__" { abs.as_str() } else { a })
            .collect();
        Case {
            name,
            repo: &repo,
            args: &args,
            env: &[],
            code: 2,
            says: &[words],
        }
        .check();
    }
    #[cfg(unix)]
    {
        let elsewhere = tempfile::tempdir().expect("dir");
        link(&repo, "linked", elsewhere.path());
        Case {
            name: "a link out",
            repo: &repo,
            args: &["render", "--out", "linked"],
            env: &[],
            code: 2,
            says: &["outside the config repo"],
        }
        .check();
        repo.remove("linked");
    }
    // Its own output, with or without the marker, is replaced; a marker is written.
    let (out, _) = run(repo.path(), &["render"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(repo.path().join("_gen/.kdeploy-output").is_file());
    std::fs::remove_file(repo.path().join("_gen/.kdeploy-output")).expect("rm marker");
    let (out, _) = run(repo.path(), &["render"], &[]);
    assert_eq!(out.code, 0, "output of an older kdeploy: {}", out.stderr);
    let debris: Vec<_> = std::fs::read_dir(repo.path())
        .expect("list")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("._gen"))
        .collect();
    assert!(debris.is_empty(), "staging directories left behind");
}

#[test]
fn revisions_and_filters_say_what_exists() {
    let repo = repo_with(&[], false);
    let cases: &[(&str, &[&str], i32, &[&str])] = &[
        (
            "unknown revision",
            &["render", "--rev", "nope"],
            2,
            &["cannot resolve revision `nope`", "git fetch origin nope"],
        ),
        (
            "a tree, not a commit",
            &["render", "--rev", "HEAD^{tree}"],
            2,
            &["names a tree, not a commit"],
        ),
        (
            "env glob matching nothing",
            &["render", "--env", "prdo"],
            2,
            &[
                "--env prdo selects no release",
                "environments: production; apps: shop",
            ],
        ),
        (
            "app glob matching nothing",
            &["render", "--app", "nope", "--check"],
            2,
            &["--app nope selects no release"],
        ),
        (
            "plan filter matching nothing",
            &[
                "plan",
                "--base",
                "HEAD",
                "--env",
                "prdo",
                "--detailed-exitcode",
            ],
            1,
            &["--env prdo selects no release"],
        ),
        (
            "validate filter matching nothing",
            &["validate", "--env", "x*"],
            2,
            &["--env x* selects no release"],
        ),
        (
            "malformed glob",
            &["render", "--env", "[a"],
            2,
            &["invalid --env/--app glob"],
        ),
        (
            "no such repo",
            &["render", "--repo", "/nonexistent/kdeploy"],
            2,
            &["/nonexistent/kdeploy is not a directory"],
        ),
    ];
    for (name, args, code, says) in cases {
        Case {
            name,
            repo: &repo,
            args,
            env: &[],
            code: *code,
            says,
        }
        .check();
    }
    let (out, _) = run(
        repo.path(),
        &["render", "--repo", "/nonexistent/kdeploy"],
        &[],
    );
    assert!(
        !out.stderr.contains("read  at"),
        "empty path: {}",
        out.stderr
    );
    let empty = Repo::new();
    Case {
        name: "empty repository",
        repo: &empty,
        args: &["render", "--rev", "HEAD"],
        env: &[],
        code: 2,
        says: &["has no commits yet"],
    }
    .check();
}

#[test]
fn kubeconfig_errors_never_quote_it() {
    let repo = repo_with(&[], false);
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let head = "apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\ncontexts:\n- name: one\n  context: {cluster: c, user: u}\ncurrent-context: one\nusers:\n- name: u\n  user:\n";
    let syntax = write("syntax", &format!("{head}    token: {CANARY}: oops\n"));
    let typed = write("typed", &format!("{head}    token: [{CANARY}]\n"));
    let quoted = write(
        "quoted",
        &format!("{head}    token: 5\n    client-key-data: {{a: \"{CANARY}\"}}\n"),
    );
    let good = write("good", &format!("{head}    token: {CANARY}\n"));
    let cases: Vec<(&str, Vec<&str>, &[&str])> = vec![
        (
            "syntax error beside the token",
            vec!["apply", "--kubeconfig", &syntax],
            &["not valid YAML at line 12"],
        ),
        (
            "type error in the token",
            vec!["apply", "--kubeconfig", &typed],
            &["cannot load kubeconfig"],
        ),
        (
            "quoted value in a type error",
            vec!["apply", "--kubeconfig", &quoted],
            &["cannot load kubeconfig"],
        ),
        (
            "unknown context",
            vec!["apply", "--kubeconfig", &good, "--context", "two"],
            &["has no context `two`; its contexts: one"],
        ),
        (
            "unreachable cluster",
            vec!["diff", "--live", "--kubeconfig", &good],
            &["cannot reach the Kubernetes API at https://127.0.0.1:1"],
        ),
    ];
    for (name, args, says) in &cases {
        Case {
            name,
            repo: &repo,
            args,
            env: &[],
            code: 2,
            says,
        }
        .check();
    }
    // A cause is printed once, not again after the message that quotes it.
    let (out, _) = run(
        repo.path(),
        &["apply", "--kubeconfig", "/nonexistent/kubeconfig"],
        &[],
    );
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr.matches("(os error 2)").count(),
        1,
        "{}",
        out.stderr
    );
    let (out, _) = run(repo.path(), &["render", "--rev", "nope"], &[]);
    assert_eq!(
        out.stderr.matches("could not be found").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn action_inputs_and_payloads_are_all_reported() {
    let repo = repo_with(&[], false);
    let dir = tempfile::tempdir().expect("dir");
    let event = dir.path().join("event.json");
    std::fs::write(&event, "{not json").expect("write");
    let event = event.display().to_string();
    let base = [
        ("GITHUB_EVENT_PATH", event.as_str()),
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_REPOSITORY", "org/config"),
        ("INPUT_GITHUB-TOKEN", CANARY),
    ];
    let mut bad = base.to_vec();
    bad.extend([
        ("INPUT_MODE", "sometimes"),
        ("INPUT_COMMENT", "maybe"),
        ("INPUT_TIMEOUT", "soon"),
        ("INPUT_MAX-COMMENT-PARTS", "many"),
    ]);
    Case {
        name: "four bad inputs",
        repo: &repo,
        args: &["action"],
        env: &bad,
        code: 2,
        says: &[
            "input `mode` must be auto, plan, apply, images, promote, drift or preview, got `sometimes`",
            "input `comment` must be true or false, got `maybe`",
            "input `timeout` must be a duration",
            "input `max-comment-parts` must be a number",
            "4 problems found",
        ],
    }
    .check();
    Case {
        name: "payload that is not JSON",
        repo: &repo,
        args: &["action"],
        env: &base,
        code: 2,
        says: &["event payload"],
    }
    .check();
    std::fs::write(dir.path().join("event.json"), "{}").expect("write");
    Case {
        name: "payload without the pull request",
        repo: &repo,
        args: &["action"],
        env: &base,
        code: 2,
        says: &["pull_request"],
    }
    .check();
}

/// Preview templates and flags a pull request (or a typo) could bend: every
/// one is refused before a cluster is contacted (the kubeconfig points
/// nowhere), naming the file and line or the flag.
#[test]
fn preview_templates_and_flags_are_refused_before_any_cluster() {
    let nowhere = [("KUBECONFIG", "/nonexistent/kubeconfig")];
    let shared = repo_with(
        &[(
            "kdeploy.yaml",
            b"environments:\n  preview:\n    from: production\n    namespace: default\n",
        )],
        true,
    );
    Case {
        name: "a template namespace every pull request would share",
        repo: &shared,
        args: &["preview", "deploy", "--pr", "1"],
        env: &nowhere,
        code: 2,
        says: &[
            "kdeploy.yaml:4:5",
            "`environments.preview.namespace`: `default` has no `{pr}`",
        ],
    }
    .check();
    let ok = repo_with(
        &[(
            "kdeploy.yaml",
            b"environments:\n  preview:\n    from: production\n    namespace: \"pr-{pr}\"\n    values: {host: \"{secret}.example.com\"}\n",
        )],
        true,
    );
    Case {
        name: "an unknown placeholder in the template's values",
        repo: &ok,
        args: &["preview", "deploy", "--pr", "1"],
        env: &nowhere,
        code: 2,
        says: &["`environments.preview.values.host`: unknown placeholder `{secret}`"],
    }
    .check();
    let fine = repo_with(
        &[(
            "kdeploy.yaml",
            b"environments:\n  preview:\n    from: production\n    namespace: \"pr-{pr}\"\n",
        )],
        true,
    );
    Case {
        name: "a template name with a path in it",
        repo: &fine,
        args: &["preview", "deploy", "--pr", "1", "--template", "../../etc"],
        env: &nowhere,
        code: 2,
        says: &[
            "`../../etc` is not a preview template in kdeploy.yaml",
            "templates there: preview",
        ],
    }
    .check();
    Case {
        name: "a pull request number that is not one",
        repo: &fine,
        args: &["preview", "deploy", "--pr", "1;rm -rf /"],
        env: &nowhere,
        code: 2,
        says: &["invalid value '1;rm -rf /' for '--pr <N>'"],
    }
    .check();
}
