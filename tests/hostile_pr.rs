//! The hostile pull request corpus: what an attacker who can open a pull
//! request writes into the config repo (and into the payloads that come
//! with it), against the real binary and the real engines (helm through its
//! SDK, kubectl kustomize, git).
//!
//! Every case asserts the exit code and the message, that no canary (the
//! job's token, the kubeconfig, the registry password, the age key) appears
//! in anything printed, that nothing outside the repo changed, and that no
//! program of the pull request's ran: each hostile script creates a marker
//! file, which must not exist afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Repo, Run, tree};

/// In the environment, the kubeconfig, the docker config and the age key.
const CANARY: &str = "CANARY-pr-5e1f0d";

/// A config repo with a valid base, the secrets a runner holds outside it,
/// and the place where a hostile program would leave its marker.
struct World {
    repo: Repo,
    outside: tempfile::TempDir,
    base: String,
}

impl World {
    /// One app (`api`, envs staging and production), a ConfigMap chart and
    /// `base_settings` as the base's kdeploy.yaml (none when empty).
    fn new(base_settings: &str) -> World {
        let repo = Repo::with_app();
        if !base_settings.is_empty() {
            repo.write("kdeploy.yaml", base_settings);
        }
        let outside = tempfile::tempdir().expect("temp dir");
        let o = outside.path();
        std::fs::create_dir_all(o.join("home/.docker")).expect("mkdir");
        std::fs::write(
            o.join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: {CANARY}\n"
            ),
        )
        .expect("kubeconfig");
        std::fs::write(
            o.join("home/.docker/config.json"),
            format!(
                "{{\"auths\":{{\"registry.example:5000\":{{\"auth\":\"{}\"}}}}}}",
                b64(&format!("ci:{CANARY}"))
            ),
        )
        .expect("docker config");
        let base = repo.commit("base");
        World {
            repo,
            outside,
            base,
        }
    }

    /// Where a hostile program would prove it ran.
    fn marker(&self) -> PathBuf {
        self.outside.path().join("pwned")
    }

    /// A script (in the repo, at `rel`) that leaves the marker with the
    /// environment it saw.
    fn evil_script(&self, rel: &str) -> String {
        let text = format!("#!/bin/sh\nenv > '{}'\n", self.marker().display());
        self.repo.write(rel, &text);
        use std::os::unix::fs::PermissionsExt as _;
        let full = self.repo.path().join(rel);
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        full.display().to_string()
    }

    /// Commits the pull request's head.
    fn head(&self, edit: impl FnOnce(&Repo)) -> String {
        edit(&self.repo);
        self.repo.commit("pull request")
    }

    /// Runs kdeploy in the repo with the runner's secrets in reach.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let o = self.outside.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kdeploy"));
        cmd.args(args)
            .current_dir(self.repo.path())
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1")
            .env("GITHUB_TOKEN", CANARY)
            .env("VAULT_TOKEN", CANARY)
            .env("SOPS_AGE_KEY", format!("AGE-SECRET-KEY-{CANARY}"))
            .env("KUBECONFIG", o.join("kubeconfig"))
            .env("DOCKER_CONFIG", o.join("home/.docker"))
            .env("HOME", o.join("home"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("kdeploy runs").into()
    }

    /// Runs and checks one case.
    fn case(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        code: i32,
        says: &[&str],
    ) -> Run {
        let outside_before = tree(self.outside.path());
        let out = self.run(args, env);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.code, code,
            "{name}: exit code\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        for words in says {
            assert!(all.contains(words), "{name}: expected {words:?} in:\n{all}");
        }
        assert!(!all.contains(CANARY), "{name}: canary printed:\n{all}");
        assert!(
            !self.marker().exists(),
            "{name}: a program of the pull request ran:\n{}",
            std::fs::read_to_string(self.marker()).unwrap_or_default()
        );
        assert_eq!(
            tree(self.outside.path()),
            outside_before,
            "{name}: something outside the repo changed"
        );
        assert!(!all.contains("panicked"), "{name}: crashed:\n{all}");
        out
    }

    fn plan(&self, name: &str, head: &str, code: i32, says: &[&str]) -> Run {
        self.case(
            name,
            &["plan", "--base", &self.base, "--head", head],
            &[],
            code,
            says,
        )
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A helm chart `web` (a ConfigMap) used by app `web` in production.
fn with_helm_app(repo: &Repo) {
    repo.write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n")
        .write(
            "charts/web/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  tag: {{ .Values.tag | quote }}\n",
        )
        .write("services/web/config.yaml", "chart: web\n")
        .write("services/web/version", "1.0.0\n")
        .write("services/web/production/config.yaml", "");
}

/// A kustomize source `shop` in production.
fn with_kustomize_app(repo: &Repo) {
    repo.write(
        "apps/shop/production/kustomization.yaml",
        "resources: [cm.yaml]\nnamespace: shop\n",
    )
    .write(
        "apps/shop/production/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  a: b\n",
    );
}

fn kubectl_settings(kubectl: &Path) -> String {
    format!(
        "sources:\n  kustomize: [\"apps/{{app}}/{{env}}\"]\n  kustomizeCommand: {}\n",
        kubectl.display()
    )
}

// 1. Runner policy comes from the base; executables are never the PR's.

#[test]
fn a_head_cannot_choose_the_programs_kdeploy_runs() {
    // helm.binary as a script of the pull request: refused at its line.
    let w = World::new("");
    let head = w.head(|r| {
        r.write("kdeploy.yaml", "helm:\n  binary: ./evil.sh\n");
    });
    w.evil_script("evil.sh");
    w.plan(
        "helm.binary relative",
        &head,
        2,
        &["kdeploy.yaml:2:3: `helm.binary`: `./evil.sh` is not helm"],
    );

    // kustomizeCommand as another program (bash would run a repo file).
    let w = World::new("");
    let head = w.head(|r| {
        r.write("kdeploy.yaml", "sources:\n  kustomizeCommand: bash\n");
    });
    w.plan(
        "kustomizeCommand bash",
        &head,
        2,
        &["`sources.kustomizeCommand`: `bash` is not kubectl or kustomize"],
    );

    // An absolute path into the repo, named like the program: the plan
    // uses the base's (helm on PATH) and says so; the script never runs.
    let w = World::new("");
    with_helm_app(&w.repo);
    w.repo.commit("helm app");
    let base = w.repo.git(&["rev-parse", "HEAD"]).trim().to_string();
    let script = w.evil_script("tools/helm");
    let head = w.head(|r| {
        r.write("kdeploy.yaml", &format!("helm:\n  binary: {script}\n"));
    });
    let out = w.run(
        &["plan", "--base", &base, "--head", &head],
        &[("PATH", "/usr/bin:/bin")],
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!w.marker().exists(), "the pull request's helm ran");
    assert!(!all.contains(CANARY), "{all}");

    // The same with the kustomize command.
    if let Some(kubectl) = crate::sources::kubectl() {
        let w = World::new(&kubectl_settings(&kubectl));
        with_kustomize_app(&w.repo);
        w.repo.commit("kustomize app");
        let base = w.repo.git(&["rev-parse", "HEAD"]).trim().to_string();
        let script = w.evil_script("bin/kustomize");
        let head = w.head(|r| {
            r.write(
                "kdeploy.yaml",
                &format!("sources:\n  kustomize: [\"apps/{{app}}/{{env}}\"]\n  kustomizeCommand: {script}\n"),
            )
            .write("apps/shop/production/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  a: c\n");
        });
        w.case(
            "kustomizeCommand into the repo",
            &["plan", "--base", &base, "--head", &head],
            &[],
            0,
            &[
                "the head changes runner policy in kdeploy.yaml (sources.kustomizeCommand)",
                "~ ConfigMap shop/shop [shop] changed",
            ],
        );
    }
}

#[test]
fn a_head_cannot_hide_its_own_changes() {
    let crb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: api-production\n";
    // ignoreResources added with a cluster-admin binding.
    let w = World::new("");
    let head = w.head(|r| {
        r.write("kdeploy.yaml", "plan:\n  ignoreResources: ['*:ClusterRoleBinding:*:*']\n")
            .write("raw/rbac/production/crb.yaml", crb)
            .write(
                "kdeploy.yaml",
                "plan:\n  ignoreResources: ['*:ClusterRoleBinding:*:*']\nsources:\n  raw: ['raw/{app}/{env}']\n",
            );
    });
    w.plan(
        "ignoreResources",
        &head,
        0,
        &[
            "+ rbac.authorization.k8s.io/ClusterRoleBinding pwn [rbac] added",
            "plan.ignoreResources",
        ],
    );
    // ignoreFields hiding a change of the image.
    let w = World::new("");
    let head = w.head(|r| {
        r.write(
            "kdeploy.yaml",
            "plan:\n  ignoreFields:\n    - path: /spec/template/spec/containers\n",
        )
        .write("services/api/version", "6.6.6\n");
    });
    w.plan(
        "ignoreFields",
        &head,
        0,
        &[
            "api-production/api [api] changed",
            "6.6.6",
            "plan.ignoreFields",
        ],
    );
    // A base with rules keeps them: the head cannot remove them to make
    // noise either, and the note names what it tried.
    let w = World::new("plan:\n  ignoreResources: [':ConfigMap:*:*']\n");
    let head = w.head(|r| {
        r.write("kdeploy.yaml", "plan:\n  ignoreResources: []\n");
    });
    w.plan("rules removed", &head, 0, &["plan.ignoreResources"]);
}

#[test]
fn a_head_cannot_lift_the_limits() {
    // Raised within the ceiling: the base's limit still holds.
    let w = World::new("limits:\n  templateSteps: 1000\n");
    let head = w.head(|r| {
        r.write("kdeploy.yaml", "limits:\n  templateSteps: 50000000\n")
            .write("charts/loop/Chart.yaml", "name: loop\n")
            .write(
                "charts/loop/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loop\ndata:\n{{#each (range 100000)}}  k{{this}}: v\n{{/each}}",
            )
            .write("services/api/config.yaml", "image: ghcr.io/example/api\nchart: loop\n");
    });
    let out = w.run(&["plan", "--base", &w.base, "--head", &head], &[]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(!format!("{}{}", out.stdout, out.stderr).contains(CANARY));
    // Over the ceiling: refused at the line, whoever writes it.
    for (name, settings, says) in [
        (
            "totalBytes",
            "limits:\n  totalBytes: 8589934592\n",
            "`limits.totalBytes` is 8589934592; it must be between 1 and 1073741824",
        ),
        (
            "releaseBytes",
            "limits:\n  releaseBytes: 268435456\n",
            "`limits.releaseBytes` is 268435456; it must be between 1 and 67108864",
        ),
        (
            "fileBytes",
            "limits:\n  fileBytes: 67108864\n",
            "`limits.fileBytes` is 67108864; it must be between 1 and 33554432",
        ),
        (
            "helm timeout",
            "helm:\n  timeoutSeconds: 86400\n",
            "kdeploy.yaml:2:3: `helm.timeoutSeconds` is 86400; it must be between 1 and 600",
        ),
        (
            "sources timeout",
            "sources:\n  timeoutSeconds: 7200\n",
            "`sources.timeoutSeconds` is 7200; it must be between 1 and 600",
        ),
    ] {
        let w = World::new("");
        let head = w.head(|r| {
            r.write("kdeploy.yaml", settings);
        });
        w.plan(name, &head, 2, &[says]);
    }
    // A head that only raises timeouts and registries in clear plans with
    // the base's, and says which keys it ignored.
    let w = World::new("");
    let head = w.head(|r| {
        r.write(
            "kdeploy.yaml",
            "helm:\n  timeoutSeconds: 600\nimages:\n  insecureRegistries: [registry.example:5000]\n",
        );
    });
    w.plan(
        "timeouts and registries",
        &head,
        0,
        &[
            "runner policy",
            "helm.timeoutSeconds, images.insecureRegistries",
        ],
    );
}

#[test]
fn the_run_has_one_time_budget_for_renderer_processes() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let w = World::new(&kubectl_settings(&kubectl));
    with_kustomize_app(&w.repo);
    let head = w.repo.commit("kustomize app");
    w.case(
        "process budget",
        &["render", "--rev", &head, "--stdout"],
        &[("KDEPLOY_PROCESS_SECONDS", "0")],
        2,
        &["KDEPLOY_PROCESS_SECONDS"],
    );
}

// 2. No string from the repo or a payload becomes an option.

#[test]
fn repository_strings_never_become_options() {
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    let settings = format!("helm:\n  binary: {}\n", helm.display());
    for (name, release_name, says) in [
        (
            "post-renderer",
            "--post-renderer=./evil.sh",
            "`helm.releaseName` gives `--post-renderer=./evil.sh`",
        ),
        ("space", "a b", "is not a Helm release name"),
        ("dash first", "-x", "is not a Helm release name"),
    ] {
        let w = World::new(&settings);
        with_helm_app(&w.repo);
        w.evil_script("evil.sh");
        let head = w.head(|r| {
            r.write(
                "kdeploy.yaml",
                &format!("{settings}  releaseName: \"{release_name}\"\n"),
            );
        });
        w.case(
            name,
            &["render", "--rev", &head, "--stdout"],
            &[],
            2,
            &[says],
        );
    }
    // A release's own name (what Argo CD and Flux adoptions write) too.
    let w = World::new(&settings);
    with_helm_app(&w.repo);
    w.evil_script("evil.sh");
    let head = w.head(|r| {
        r.write(
            "services/web/production/config.yaml",
            "releaseName: \"--post-renderer=./evil.sh\"\n",
        );
    });
    w.case(
        "own release name",
        &["render", "--rev", &head, "--stdout"],
        &[],
        2,
        &["`releaseName` gives `--post-renderer=./evil.sh` for production/web"],
    );
    // A chart version that looks like an option stays a version: a helm
    // that records its arguments (outside the repo, the runner's) shows the
    // version joined to its option and the reference after `--`.
    let args_dir = tempfile::tempdir().expect("temp");
    let args_file = args_dir.path().join("args");
    let recorder = args_dir.path().join("helm");
    std::fs::write(
        &recorder,
        format!(
            "#!/bin/sh\n[ \"$1\" = version ] && echo v3.16.0 && exit 0\nprintf '%s\\n' \"$@\" > '{}'\nexit 1\n",
            args_file.display()
        ),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let w = World::new(&format!("helm:\n  binary: {}\n", recorder.display()));
    w.evil_script("evil.sh");
    let head = w.head(|r| {
        r.write(
            "services/api/config.yaml",
            "image: ghcr.io/example/api\nchart: oci://127.0.0.1:9/charts/x\nchartVersion: \"--post-renderer=./evil.sh\"\n",
        );
    });
    let out = w.run(
        &["render", "--rev", &head, "--stdout"],
        &[(
            "KDEPLOY_CACHE_DIR",
            &args_dir.path().join("cache").display().to_string(),
        )],
    );
    assert_ne!(out.code, 0);
    assert!(!w.marker().exists());
    let args = std::fs::read_to_string(&args_file).expect("helm pull ran");
    let args: Vec<&str> = args.lines().collect();
    assert!(
        args.contains(&"--version=--post-renderer=./evil.sh"),
        "{args:?}"
    );
    assert_eq!(
        &args[args.len() - 2..],
        ["--", "oci://127.0.0.1:9/charts/x"],
        "{args:?}"
    );
    // A namespace that looks like an option is not a namespace.
    let w = World::new("");
    let head = w.head(|r| {
        r.write(
            "services/api/production/config.yaml",
            "namespace: --kubeconfig=/etc/passwd\n",
        );
    });
    w.plan("namespace", &head, 2, &["--kubeconfig=/etc/passwd"]);
}

// 3. git runs only on the checkout's own repository.

#[test]
fn a_repository_committed_inside_the_checkout_is_never_opened() {
    let w = World::new("");
    let marker = w.marker();
    let head = w.head(|r| {
        r.write("config/HEAD", "ref: refs/heads/main\n")
            .write(
                "config/config",
                &format!(
                    "[core]\n\tbare = true\n\tfsmonitor = touch {0}\n\tsshCommand = touch {0}\n[remote \"origin\"]\n\turl = ext::sh -c touch% {0}\n",
                    marker.display()
                ),
            )
            .write("config/objects/info/.keep", "")
            .write("config/refs/heads/.keep", "")
            .write("config/services/x/config.yaml", "");
    });
    let dir = w.repo.path().join("config");
    w.case(
        "planted repository",
        &[
            "plan",
            "--repo",
            &dir.display().to_string(),
            "--base",
            "HEAD~1",
            "--head",
            &head,
        ],
        &[],
        2,
        &["looks like a git repository inside the checkout"],
    );
}

// 4. What kdeploy writes goes through no link.

#[test]
fn writes_never_follow_a_link_out_of_the_repo() {
    // set-version through a linked environment directory.
    let w = World::new("");
    let target = w.outside.path().join("elsewhere");
    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::remove_dir_all(w.repo.path().join("services/api/staging")).expect("rm");
    std::os::unix::fs::symlink(&target, w.repo.path().join("services/api/staging")).expect("link");
    let out = w.run(&["set-version", "api", "staging", "9.9.9"], &[]);
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_dir(&target).expect("dir").count(),
        0,
        "wrote outside"
    );
    // The lock file in a linked directory.
    let w = World::new("images:\n  lockFile: locks/images.lock.yaml\n");
    let target = w.outside.path().join("locks");
    std::fs::create_dir_all(&target).expect("mkdir");
    std::os::unix::fs::symlink(&target, w.repo.path().join("locks")).expect("link");
    let out = w.run(&["lock"], &[]);
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_dir(&target).expect("dir").count(),
        0,
        "wrote outside"
    );
    // Rendered output into a hidden directory (.github/workflows).
    let w = World::new("output: .github/workflows\n");
    w.case(
        "output hidden",
        &["render"],
        &[],
        2,
        &["a hidden directory (.github)"],
    );
}

// 6. Nothing printed can start a workflow command.

#[test]
fn repository_text_cannot_start_a_workflow_command() {
    // A literal block in rendered YAML: the runner trims the indentation
    // and would read `::add-mask::` and `##[…]` as commands.
    let w = World::new("sources:\n  raw: ['raw/{app}/{env}']\n");
    let head = w.head(|r| {
        r.write(
            "raw/inject/production/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: inject\ndata:\n  a: |\n    x\n    ::add-mask::visible\n    ::stop-commands::t\n    ##[set-output name=a;]b\n",
        );
    });
    for (name, args) in [
        ("render", vec!["render", "--rev", head.as_str(), "--stdout"]),
        (
            "plan",
            vec!["plan", "--base", w.base.as_str(), "--head", head.as_str()],
        ),
    ] {
        let out = w.case(name, &args, &[("GITHUB_ACTIONS", "true")], 0, &["add-mask"]);
        for line in out.stdout.split(['\n', '\r']) {
            assert!(
                !kdeploy::workflow::is_command(line),
                "{name}: a workflow command: {line:?}"
            );
        }
    }
    // Outside a workflow the bytes stay exact (a file, a pipe to kubectl).
    let out = w.run(&["render", "--rev", &head, "--stdout"], &[]);
    assert!(
        out.stdout.contains("\n    ::add-mask::visible\n"),
        "{}",
        out.stdout
    );
    // An error carrying repository text over several lines, on stderr.
    let w = World::new("");
    let head = w.head(|r| {
        r.write(
            "kdeploy.yaml",
            "helm:\n  set:\n    \"a..\\n::add-mask::visible\\r::error::forged\": x\n",
        );
    });
    let out = w.case(
        "error text",
        &["plan", "--base", &w.base, "--head", &head],
        &[("GITHUB_ACTIONS", "true")],
        2,
        &["is not a dotted value path"],
    );
    for line in out.stderr.split(['\n', '\r']) {
        assert!(!kdeploy::workflow::is_command(line), "{line:?}");
    }
    assert!(out.stderr.contains("add-mask"), "{}", out.stderr);
}

// 8. What a plan may reach on the network.

#[test]
fn kustomize_fields_that_fetch_are_refused() {
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    for (name, kustomization) in [
        (
            "openapi",
            "resources: [cm.yaml]\nopenapi:\n  path: https://127.0.0.1:9/openapi.json\n",
        ),
        (
            "replacements",
            "resources: [cm.yaml]\nreplacements:\n  - path: https://127.0.0.1:9/r.yaml\n",
        ),
        (
            "upper-case scheme",
            "resources: [\"HTTPS://github.com/example/base\"]\n",
        ),
        (
            "host without scheme",
            "resources: [\"GitHub.com/example/base\"]\n",
        ),
        (
            "git:: form",
            "resources: [\"git::https://127.0.0.1:9/base.git\"]\n",
        ),
        ("scp form", "resources: [\"git@github.com:example/base\"]\n"),
        ("query", "resources: [\"../base?ref=main\"]\n"),
    ] {
        let w = World::new(&kubectl_settings(&kubectl));
        with_kustomize_app(&w.repo);
        w.repo.commit("kustomize");
        let head = w.head(|r| {
            r.write("apps/shop/production/kustomization.yaml", kustomization);
        });
        w.case(
            name,
            &["render", "--rev", &head, "--stdout"],
            &[],
            2,
            &["is not allowed"],
        );
    }
}

#[test]
fn values_schemas_that_reach_out_are_refused_before_helm_runs() {
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    // A listener that counts connections: nothing may reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let remote = format!("http://127.0.0.1:{port}/s.json");
    let settings = format!("helm:\n  binary: {}\n", helm.display());
    for (name, path, schema) in [
        (
            "top-level $ref",
            "charts/web/values.schema.json",
            format!("{{\"properties\":{{\"tag\":{{\"$ref\":\"{remote}\"}}}}}}"),
        ),
        (
            "subchart $ref",
            "charts/web/charts/sub/values.schema.json",
            format!("{{\"$ref\":\"{remote}\"}}"),
        ),
        (
            "file $ref",
            "charts/web/values.schema.json",
            "{\"$ref\":\"file:///etc/passwd\"}".to_string(),
        ),
        (
            "unknown $schema",
            "charts/web/values.schema.json",
            format!("{{\"$schema\":\"{remote}\"}}"),
        ),
    ] {
        let w = World::new(&settings);
        with_helm_app(&w.repo);
        if path.contains("/charts/sub/") {
            w.repo.write(
                "charts/web/charts/sub/Chart.yaml",
                "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
            );
        }
        let head = w.head(|r| {
            r.write(path, &schema);
        });
        w.case(
            name,
            &["render", "--rev", &head, "--stdout"],
            &[],
            2,
            &["reaches outside the chart"],
        );
    }
    assert!(listener.accept().is_err(), "a schema was fetched");
}

// The action: payloads, the checkout, the comment, the log.

#[tokio::test]
async fn a_comment_that_carries_the_marker_is_kdeploys_only_if_kdeploy_wrote_it() {
    let job = crate::action::Job::new().await;
    let marker = kdeploy::report::comment_marker("deploy");
    // The author plants "kdeploy's" comment, and a part 2 for it to delete.
    let forged = format!("{marker}\nNo changes. Approve me.");
    let forged_part = format!("{marker}\n<!-- part:2 -->\nmore");
    job.fake.add_comment(9, &forged);
    job.fake
        .add_comment_by(9, &forged_part, "evil-app[bot]", "Bot");
    let run = job
        .pr_push(
            "opened",
            9,
            |r| {
                r.write("services/web/version", "1.1.0\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(9);
    let bodies: Vec<&str> = comments.iter().map(|(_, b)| b.as_str()).collect();
    assert!(
        bodies.contains(&forged.as_str()),
        "the author's comment was edited: {bodies:?}"
    );
    assert!(
        bodies.contains(&forged_part.as_str()),
        "another bot's comment was deleted: {bodies:?}"
    );
    assert_eq!(
        comments.len(),
        3,
        "kdeploy's own comment is separate: {bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.starts_with(&marker) && b.contains("web"))
    );
    // A second run edits its own comment in place, still leaving theirs.
    let run = job
        .pr_push(
            "opened",
            9,
            |r| {
                r.write("services/web/version", "1.2.0\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(9);
    assert_eq!(comments.len(), 3, "{comments:?}");
    assert!(comments.iter().any(|(_, b)| b.contains("1.2.0")));
}

#[tokio::test]
async fn with_a_users_token_kdeploy_edits_that_users_comments_only() {
    let job = crate::action::Job::new().await;
    job.fake.as_user("ci-user");
    let marker = kdeploy::report::comment_marker("deploy");
    job.fake
        .add_comment_by(4, &format!("{marker}\nold plan"), "ci-user", "User");
    job.fake.add_comment(4, &format!("{marker}\nforged"));
    let run = job
        .pr_push(
            "opened",
            4,
            |r| {
                r.write("services/web/version", "1.1.0\n");
            },
            &[],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.log);
    let comments = job.fake.comments(4);
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert!(comments.iter().any(|(_, b)| b.ends_with("forged")));
    assert!(
        !comments.iter().any(|(_, b)| b.ends_with("old plan")),
        "{comments:?}"
    );
}

#[tokio::test]
async fn a_dispatched_revision_is_never_an_option_of_git() {
    let job = crate::action::Job::new().await;
    let marker_dir = tempfile::tempdir().expect("temp");
    let marker = marker_dir.path().join("pwned");
    let base = job.base();
    for bad in [
        format!("--upload-pack=touch {}", marker.display()),
        format!("-c core.sshCommand=touch {}", marker.display()),
        "main..HEAD".to_string(),
    ] {
        let run = job
            .run(
                "workflow_dispatch",
                &serde_json::json!({"ref": "refs/heads/main", "inputs": {}}),
                "main",
                &[("INPUT_BASE", &base), ("INPUT_HEAD", &bad)],
            )
            .await;
        assert_ne!(run.code, 0, "{bad}: {}", run.log);
        assert!(
            run.log.contains("fetches only full commit ids"),
            "{bad}: {}",
            run.log
        );
        assert!(!marker.exists(), "{bad}: git ran the payload's program");
    }
}

#[tokio::test]
async fn a_working_directory_that_holds_a_repository_is_refused() {
    let job = crate::action::Job::new().await;
    let marker_dir = tempfile::tempdir().expect("temp");
    let marker = marker_dir.path().join("pwned");
    let run = job
        .pr_push(
            "opened",
            3,
            |r| {
                r.write("config/HEAD", "ref: refs/heads/main\n")
            .write(
                "config/config",
                &format!(
                    "[core]\n\tbare = true\n\tfsmonitor = touch {0}\n\tsshCommand = touch {0}\n",
                    marker.display()
                ),
            )
            .write("config/objects/info/.keep", "")
            .write("config/refs/heads/.keep", "");
            },
            &[("INPUT_WORKING-DIRECTORY", "config")],
        )
        .await;
    assert_ne!(run.code, 0, "{}", run.log);
    assert!(
        run.log
            .contains("looks like a git repository inside the checkout"),
        "{}",
        run.log
    );
    assert!(!marker.exists());
}

#[test]
fn git_runs_with_the_checkouts_programs_switched_off() {
    let origin = Repo::with_app();
    origin.commit("base");
    let clone = crate::util::shallow_clone(&origin, "main");
    let marker_dir = tempfile::tempdir().expect("temp");
    let marker = marker_dir.path().join("pwned");
    let git = |args: &[&str]| crate::util::git_in(clone.path(), args);
    let touch = format!("touch {}", marker.display());
    git(&["config", "core.sshCommand", &touch]);
    git(&["config", "core.fsmonitor", &touch]);
    git(&["config", "credential.helper", &format!("!{touch}")]);
    git(&["remote", "set-url", "origin", "git@127.0.0.1:x.git"]);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = kdeploy::event::ensure_commit(clone.path(), missing, None).unwrap_err();
    assert!(err.to_string().contains(missing), "{err}");
    assert!(!marker.exists(), "git ran the checkout's program");
    // A local origin runs its upload-pack: the one of the checkout's
    // config is never used.
    let origin_url = format!("file://{}", origin.path().display());
    git(&["remote", "set-url", "origin", &origin_url]);
    git(&["config", "remote.origin.uploadpack", &touch]);
    let _ = kdeploy::event::ensure_commit(clone.path(), missing, None);
    assert!(!marker.exists(), "the checkout's upload-pack ran");
    git(&[
        "remote",
        "set-url",
        "origin",
        &format!("ext::sh -c {touch}"),
    ]);
    assert!(kdeploy::event::ensure_commit(clone.path(), missing, None).is_err());
    assert!(!marker.exists(), "the ext:: transport ran");
}

#[tokio::test]
async fn the_action_log_carries_no_workflow_command_of_the_repository() {
    let job = crate::action::Job::new().await;
    let run = job.pr_push("opened", 6, |r| {
        r.write(
            "kdeploy.yaml",
            "sources:\n  raw: ['raw/{app}/{env}']\n",
        )
        .write(
            "raw/inject/staging/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: inject\ndata:\n  a: |\n    ::add-mask::visible\n    ::stop-commands::token\n    ##[set-output name=x;]y\n    ::error file=kdeploy.yaml::forged\n",
        );
    }, &[])
    .await;
    assert_eq!(run.code, 0, "{}", run.log);
    assert!(run.log.contains("add-mask::visible"), "{}", run.log);
    for line in run.log.split(['\n', '\r']) {
        if kdeploy::workflow::is_command(line) {
            for forged in ["visible", "stop-commands", "set-output", "forged"] {
                assert!(!line.contains(forged), "a forged command: {line:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_working_directory_outside_the_checkout_is_refused() {
    let job = crate::action::Job::new().await;
    for dir in ["../..", "/etc", "services/../../x"] {
        let run = job
            .pr_push(
                "opened",
                11,
                |r| {
                    r.write("services/web/version", "1.1.0\n");
                },
                &[("INPUT_WORKING-DIRECTORY", dir)],
            )
            .await;
        assert_ne!(run.code, 0, "{dir}: {}", run.log);
        assert!(
            run.log
                .contains("must be a relative path inside the checkout"),
            "{dir}: {}",
            run.log
        );
    }
}

// What a pull request deploys stays in its place.

#[test]
fn the_record_namespace_and_preview_names_are_reserved() {
    let forged = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kdeploy-record-production\n  namespace: kdeploy-system\n  labels:\n    app.kubernetes.io/managed-by: kdeploy\ndata:\n  record: '{}'\n";
    for (name, file, text, says) in [
        (
            "forged record",
            "raw/forge/production/record.yaml",
            forged,
            "the namespace `kdeploy-system` holds kdeploy's deploy records",
        ),
        (
            "record namespace itself",
            "raw/forge/production/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kdeploy-system\n",
            "Namespace kdeploy-system in production/forge",
        ),
    ] {
        let w = World::new("sources:\n  raw: ['raw/{app}/{env}']\n");
        let head = w.head(|r| {
            r.write(file, text);
        });
        w.plan(name, &head, 2, &[says]);
        w.case(
            name,
            &["render", "--rev", &head, "--stdout"],
            &[],
            2,
            &[says],
        );
    }
    let w =
        World::new("environments:\n  preview:\n    from: staging\n    namespace: \"pr-{pr}\"\n");
    let head = w.head(|r| {
        r.write("services/api/preview-pr-3/config.yaml", "");
    });
    w.plan(
        "preview-named environment",
        &head,
        2,
        &["services/api/preview-pr-3/config.yaml: environment `preview-pr-3` is named like a preview of the template `preview`"],
    );
}

#[test]
fn a_chart_cannot_overflow_the_stack() {
    let deep = |n: usize, inner: &str| {
        format!("{}{inner}{}", "{{#if true}}".repeat(n), "{{/if}}".repeat(n))
    };
    for (name, partial, says) in [
        (
            "nesting",
            deep(2_000, "x"),
            "charts/c/templates/_p.yaml:1: blocks nest 2000 deep here (partials expanded), more than 64",
        ),
        (
            "nesting through includes",
            deep(60, "x{{include \"p\"}}"),
            "`p` would nest blocks more than 256 deep through includes",
        ),
    ] {
        let w = World::new("");
        let head = w.head(|r| {
            r.write("charts/c/Chart.yaml", "name: c\nversion: 1\n")
                .write("charts/c/templates/_p.yaml", &partial)
                .write(
                    "charts/c/templates/cm.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: \"{{include \"p\"}}\"\n",
                )
                .write("services/api/config.yaml", "image: ghcr.io/example/api\nchart: c\n");
        });
        w.plan(name, &head, 2, &[says]);
    }
}
