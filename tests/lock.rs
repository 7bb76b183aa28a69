//! The image lock against a real OCI registry: Debian's `docker-registry`
//! (the CNCF distribution registry) on loopback, images pushed with
//! `skopeo` from OCI layouts the test writes (a single-platform image and
//! a two-platform index). `.ci/run` installs both; without them the tests
//! say so and skip.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use sha2::Digest as _;

use crate::util::Repo;

/// A registry process on a loopback port, stopped on drop.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// `user:password` when it wants basic auth.
    creds: Option<String>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http_status(host: &str, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(host).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

impl Registry {
    /// Starts a registry, or `None` (with a note) when the tools are missing.
    pub fn start() -> Option<Registry> {
        Registry::start_with(None)
    }

    /// A registry that wants `user`/`password` (htpasswd basic auth).
    pub fn with_basic_auth(user: &str, password: &str) -> Option<Registry> {
        if !have("htpasswd") {
            eprintln!("skipped: htpasswd is not installed (.ci/run installs apache2-utils)");
            return None;
        }
        Registry::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Option<Registry> {
        let dir = tempfile::tempdir().ok()?;
        let auth = match auth {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-nbB", user, password])
                    .output()
                    .ok()?;
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).ok()?;
                Some((
                    format!(
                        "auth:\n  htpasswd:\n    realm: kdeploy-tests\n    path: {}\n",
                        file.display()
                    ),
                    format!("{user}:{password}"),
                ))
            }
            None => None,
        };
        Registry::serve(dir, auth)
    }

    /// Starts a registry with `auth` (its config section, and the
    /// `user:password` skopeo pushes with), in `dir`.
    pub fn serve(dir: tempfile::TempDir, auth: Option<(String, String)>) -> Option<Registry> {
        for tool in ["docker-registry", "skopeo"] {
            if !have(tool) {
                eprintln!("skipped: {tool} is not installed (.ci/run installs it from Debian)");
                return None;
            }
        }
        let host = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((section, _)) = &auth {
            text.push_str(section);
        }
        std::fs::write(&config, text).ok()?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let registry = Registry {
            child,
            _dir: dir,
            host,
            creds: auth.map(|(_, creds)| creds),
        };
        for _ in 0..100 {
            if matches!(http_status(&registry.host, "/v2/"), Some(200 | 401)) {
                return Some(registry);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry did not start on {}", registry.host);
    }

    /// Pushes an image (one platform, or an index of two when `multi`) as
    /// `repo:tag`, its content made unique by `seed`; returns the digest
    /// the registry serves for the tag (sha256 of the raw manifest).
    pub fn push(&self, repo: &str, tag: &str, seed: &str, multi: bool) -> String {
        let layout = tempfile::tempdir().unwrap();
        write_layout(layout.path(), tag, seed, multi);
        let dest = format!("docker://{}/{repo}:{tag}", self.host);
        let creds: Vec<String> = self
            .creds
            .iter()
            .map(|c| format!("--dest-creds={c}"))
            .collect();
        let out = Command::new("skopeo")
            .args(["copy", "--all", "--dest-tls-verify=false", "--quiet"])
            .args(&creds)
            .arg(format!("oci:{}:{tag}", layout.path().display()))
            .arg(&dest)
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(self.creds.iter().map(|c| format!("--creds={c}")))
            .arg(&dest)
            .output()
            .expect("skopeo runs");
        assert!(raw.status.success());
        format!("sha256:{:x}", sha2::Sha256::digest(&raw.stdout))
    }
}

/// Writes a blob into an OCI layout; returns its descriptor fields.
fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = format!("{:x}", sha2::Sha256::digest(bytes));
    let path = dir.join("blobs/sha256").join(&hex);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

fn image_manifest(dir: &Path, seed: &str, arch: &str) -> (String, usize) {
    // An empty tar archive is 1,024 zero bytes; uncompressed, its diff id
    // is its digest.
    let (layer, layer_size) = blob(dir, &[0u8; 1024]);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (config, config_size) = blob(dir, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    });
    blob(dir, manifest.to_string().as_bytes())
}

fn write_layout(dir: &Path, tag: &str, seed: &str, multi: bool) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let (media_type, (digest, size)) = if multi {
        let platforms: Vec<serde_json::Value> = ["amd64", "arm64"]
            .iter()
            .map(|arch| {
                let (d, s) = image_manifest(dir, seed, arch);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": d, "size": s,
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": platforms,
        });
        (
            "application/vnd.oci.image.index.v1+json",
            blob(dir, index.to_string().as_bytes()),
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            image_manifest(dir, seed, "amd64"),
        )
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// A config repo whose two apps use images of `registry`.
fn repo_for(registry: &Registry, extra_settings: &str) -> Repo {
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        &format!(
            "images:\n  insecureRegistries: [\"{}\"]\n{extra_settings}",
            registry.host
        ),
    )
    .write(
        "services/api/config.yaml",
        &format!("image: {}/example/api\n", registry.host),
    )
    .write("services/api/version", "1.0.0\n")
    .write("services/api/production/config.yaml", "")
    .write(
        "services/web/config.yaml",
        &format!("image: {}/example/web\n", registry.host),
    )
    .write("services/web/version", "2.0.0\n")
    .write("services/web/production/config.yaml", "");
    repo
}

fn kdeploy(repo: &Repo, args: &[&str]) -> crate::util::Run {
    kdeploy_with(repo, args, None)
}

/// Runs kdeploy with a HOME of its own and, when given, a Docker config
/// directory (as `docker login` leaves it).
pub fn kdeploy_with(repo: &Repo, args: &[&str], docker_config: Option<&Path>) -> crate::util::Run {
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    c.args(args)
        .current_dir(repo.path())
        .env("HOME", home.path())
        .env_remove("DOCKER_CONFIG")
        .env("NO_COLOR", "1");
    if let Some(d) = docker_config {
        c.env("DOCKER_CONFIG", d);
    }
    c.output().expect("kdeploy runs").into()
}

#[test]
fn lock_pins_tags_and_indexes_to_the_digests_the_registry_serves() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let api = registry.push("example/api", "1.0.0", "api-1", false);
    let web = registry.push("example/web", "2.0.0", "web-1", true);
    let repo = repo_for(&registry, "");
    repo.commit("apps");

    let check = kdeploy(&repo, &["lock", "--check"]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(check.stdout.contains("missing"), "{}", check.stdout);

    let run = kdeploy(&repo, &["lock"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("(new)"), "{}", run.stdout);
    let lock = repo.read("images.lock.yaml");
    let api_ref = format!("{}/example/api:1.0.0", registry.host);
    let web_ref = format!("{}/example/web:2.0.0", registry.host);
    assert!(lock.contains(&format!("\"{api_ref}\": {api}")), "{lock}");
    // The multi-arch tag locks to its index, as `docker pull` resolves it.
    assert!(lock.contains(&format!("\"{web_ref}\": {web}")), "{lock}");
    assert_eq!(kdeploy(&repo, &["lock", "--check"]).code, 0);
    let first = repo.commit("lock");

    // Rendering deploys the digests, even after the tag moved.
    let moved = registry.push("example/api", "1.0.0", "api-2", false);
    assert_ne!(moved, api);
    let render = kdeploy(&repo, &["render", "--stdout"]);
    assert!(
        render.stdout.contains(&format!("image: {api_ref}@{api}")),
        "{}",
        render.stdout
    );
    // A refresh records the move; the plan says the digest changed.
    let run = kdeploy(&repo, &["lock"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("changed from sha256:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("(unchanged)"), "{}", run.stdout);
    let second = repo.commit("refresh");
    let plan = kdeploy(&repo, &["plan", "--base", &first, "--head", &second]);
    assert!(
        plan.stdout.contains(&format!(
            "image api: 1.0.0 digest {}… → {}…",
            &api[..19],
            &moved[..19]
        )),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains("apps/Deployment web-production/web"),
        "{}",
        plan.stdout
    );
}

#[test]
fn unlocked_unresolvable_and_malformed_are_clear_errors() {
    let Some(registry) = Registry::start() else {
        return;
    };
    registry.push("example/api", "1.0.0", "api-1", false);
    let repo = repo_for(&registry, "  requireLock: true\n");
    repo.commit("apps");
    // web:2.0.0 was never pushed: nothing is written.
    let run = kdeploy(&repo, &["lock"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "failed   {}/example/web:2.0.0: the registry {} has no such image (manifest unknown) (used by production/web: apps/Deployment web-production/web containers[0])",
            registry.host, registry.host
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("1 image(s) did not resolve; the lock was not changed")
    );
    assert!(!repo.path().join("images.lock.yaml").exists());

    // requireLock: rendering names each unlocked image and what to do.
    let render = kdeploy(&repo, &["render", "--stdout"]);
    assert_eq!(render.code, 2);
    assert!(
        render
            .stderr
            .contains("is not in images.lock.yaml, and `images.requireLock` is set")
            && render
                .stderr
                .contains("run `kdeploy lock` and commit images.lock.yaml"),
        "{}",
        render.stderr
    );

    // A lock edited by hand: the line is named.
    repo.write(
        "images.lock.yaml",
        &format!(
            "images:\n  \"{}/example/api:1.0.0\": sha256:beef\n",
            registry.host
        ),
    );
    let render = kdeploy(&repo, &["render", "--stdout"]);
    assert!(
        render.stderr.contains("images.lock.yaml:2:3:")
            && render.stderr.contains("is not a digest"),
        "{}",
        render.stderr
    );

    // The registry is down: the error names it.
    let host = registry.host.clone();
    drop(registry);
    repo.remove("images.lock.yaml");
    let run = kdeploy(&repo, &["lock"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains(&format!("the registry {host} failed:"))
            && run.stdout.contains("Connection refused"),
        "{}",
        run.stdout
    );
}

/// `kdeploy lock` of 1,000 image references on loopback. Run by hand:
/// `cargo test --release --test tests measure_locking -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
fn measure_locking_1000_images() {
    let Some(registry) = Registry::start() else {
        return;
    };
    registry.push("example/app", "1.0.0", "m", false);
    let repo = Repo::new();
    repo.write(
        "kdeploy.yaml",
        &format!("images:\n  insecureRegistries: [\"{}\"]\n", registry.host),
    );
    // 1,000 distinct references: one tag, 1,000 repository names is not
    // possible without pushing each, so each app uses its own tag of one
    // repository, all pushed.
    for i in 0..1000 {
        let tag = format!("1.0.{i}");
        registry.push("example/app", &tag, "m", false);
        repo.write(
            &format!("services/app{i}/config.yaml"),
            &format!("image: {}/example/app\n", registry.host),
        )
        .write(&format!("services/app{i}/version"), &format!("{tag}\n"))
        .write(&format!("services/app{i}/production/config.yaml"), "");
    }
    repo.commit("apps");
    let started = std::time::Instant::now();
    let run = kdeploy(&repo, &["lock"]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    println!(
        "kdeploy lock: 1,000 references resolved and written in {took:?} (process, render included)"
    );
}

#[test]
fn credentials_come_from_the_docker_config_and_refusals_are_explained() {
    let Some(registry) = Registry::with_basic_auth("ci-user", "CANARY-registry-pass") else {
        return;
    };
    let digest = registry.push("example/api", "1.0.0", "auth", false);
    let repo = repo_for(&registry, "");
    repo.remove("services/web");
    repo.commit("api only");

    // No credentials: the registry's refusal, and what to do.
    let run = kdeploy(&repo, &["lock"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("the registry {} refused access", registry.host))
            && run.stdout.contains("docker login"),
        "{}",
        run.stdout
    );

    // What `docker login` writes: an `auths` entry with base64 user:password.
    use base64::Engine as _;
    let docker = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("ci-user:CANARY-registry-pass");
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            registry.host
        ),
    )
    .unwrap();
    let run = kdeploy_with(&repo, &["lock"], Some(docker.path()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(repo.read("images.lock.yaml").contains(&digest));
    assert!(!format!("{}{}", run.stdout, run.stderr).contains("CANARY-registry-pass"));
}
