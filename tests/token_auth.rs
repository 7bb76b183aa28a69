//! Registry token authentication as Docker Hub and GHCR do it, end to end:
//! Debian's registry (Distribution 2.8) configured with `auth: token`
//! answers `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`;
//! a token server in this test checks the client's basic credentials and
//! issues a JWT (ES256, signed with ring, its certificate in `x5c` and in
//! the registry's `rootcertbundle`) granting exactly the scopes asked for.
//! kdeploy must follow that exchange with the Docker config's credentials.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::json;

use crate::lock::{Registry, free_port, have};

const SERVICE: &str = "kdeploy-registry";
const ISSUER: &str = "kdeploy-token-server";

/// One token request: the scopes asked for, and whether the credentials
/// were right.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    pub authorized: bool,
}

/// A registry behind a token server.
pub struct TokenRegistry {
    pub registry: Registry,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM base64")
}

/// A P-256 key and a self-signed certificate for it, made by openssl.
fn key_and_cert(dir: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=kdeploy token server"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read_to_string(dir.join("key.pem")).ok()?;
    let cert = std::fs::read_to_string(dir.join("cert.pem")).ok()?;
    Some((pem_to_der(&key), pem_to_der(&cert)))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT as Distribution verifies it: `x5c` chain, issuer, audience,
/// validity and the `access` list.
fn token(
    key: &ring::signature::EcdsaKeyPair,
    cert: &[u8],
    user: &str,
    access: &[serde_json::Value],
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = json!({
        "typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert)],
    });
    let claims = json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{:016x}", fastrand::u64(..)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let signature = key.sign(&rng, signing_input.as_bytes()).expect("signs");
    format!("{signing_input}.{}", b64url(signature.as_ref()))
}

/// What the token server knows.
struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    cert: Vec<u8>,
    /// The `Authorization` header the right credentials make.
    expected: String,
    user: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

/// `GET /token?service=…&scope=…`: a token granting what is asked, for the
/// right credentials; 401 otherwise.
async fn issue(
    axum::extract::State(issuer): axum::extract::State<Arc<Issuer>>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(issuer.expected.as_str());
    let scopes: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let service_ok = query.iter().any(|(k, v)| k == "service" && v == SERVICE);
    issuer
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(TokenRequest {
            scopes: scopes.clone(),
            authorized,
        });
    if !authorized || !service_ok {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({"details": "incorrect username or password"})),
        );
    }
    // Grant what is asked: `repository:NAME:pull,push`.
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let jwt = token(&issuer.key, &issuer.cert, &issuer.user, &access);
    (
        axum::http::StatusCode::OK,
        axum::Json(
            json!({"token": jwt, "access_token": jwt, "expires_in": 300, "issued_at": "2026-11-27T10:00:00Z"}),
        ),
    )
}

impl TokenRegistry {
    /// Starts the token server and the registry wanting `user`/`password`,
    /// or `None` (with a note) when a tool is missing.
    pub fn start(user: &str, password: &str) -> Option<TokenRegistry> {
        if !have("openssl") {
            eprintln!("skipped: openssl is not installed (.ci/run installs it)");
            return None;
        }
        if !have("docker-registry") || !have("skopeo") {
            eprintln!(
                "skipped: docker-registry or skopeo is not installed (.ci/run installs them from Debian)"
            );
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let (key_der, cert_der) = key_and_cert(dir.path())?;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_der,
            &ring::rand::SystemRandom::new(),
        )
        .expect("openssl's PKCS#8 key");
        let port = free_port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let state = Arc::new(Issuer {
            key,
            cert: cert_der,
            expected,
            user: user.to_string(),
            requests: requests.clone(),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue))
            .with_state(state);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
        listener.set_nonblocking(true).ok()?;
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(l) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(l, app).await;
                }
            });
        });
        let section = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            dir.path().join("cert.pem").display()
        );
        let registry = Registry::serve(dir, Some((section, format!("{user}:{password}"))))?;
        Some(TokenRegistry { registry, requests })
    }
}

/// Runs kdeploy in `repo` with a Docker config holding `user:password`
/// for the registry.
fn kdeploy(dir: &Path, host: &str, creds: &str, args: &[&str]) -> crate::util::Run {
    let docker = tempfile::tempdir().expect("temp");
    let auth = base64::engine::general_purpose::STANDARD.encode(creds);
    std::fs::write(
        docker.path().join("config.json"),
        json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    let home = tempfile::tempdir().expect("temp");
    Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(args)
        .current_dir(dir)
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", docker.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("kdeploy runs")
        .into()
}

#[test]
fn the_bearer_token_flow_is_followed_with_docker_config_credentials() {
    let Some(tr) = TokenRegistry::start("ci-bot", "s3cret-pass") else {
        return;
    };
    let host = tr.registry.host.clone();
    for tag in ["1.0.0", "1.2.0", "2.0.0"] {
        tr.registry.push("example/api", tag, "api", false);
    }
    let digest = tr.registry.push(
        "example/web",
        "v1_abc1234_2026-01-02T10.00.00Z",
        "web",
        false,
    );
    let repo = crate::images::config_repo(&host);

    let run = kdeploy(
        repo.path(),
        &host,
        "ci-bot:s3cret-pass",
        &["images", "update"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("set api staging 1.0.0 → 1.2.0 (semver >=1.0.0 <2, newest of 3 tags"),
        "{}",
        run.stdout
    );
    assert_eq!(repo.read("services/api/staging/version"), "1.2.0\n");
    // The tag list was read with a token for exactly that repository.
    let requests = tr
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        requests
            .iter()
            .any(|r| r.authorized && r.scopes == ["repository:example/api:pull"]),
        "{requests:?}"
    );
    // The lock resolves digests through the same exchange.
    let lock = kdeploy(repo.path(), &host, "ci-bot:s3cret-pass", &["lock"]);
    assert_eq!(lock.code, 0, "{}{}", lock.stdout, lock.stderr);
    assert!(
        repo.read("images.lock.yaml").contains(&digest),
        "{}",
        repo.read("images.lock.yaml")
    );

    // Wrong credentials: the token server refuses, the run says so, and
    // nothing is written.
    repo.commit("versions");
    let before = crate::util::tree(repo.path());
    let run = kdeploy(repo.path(), &host, "ci-bot:wrong", &["images", "update"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("{host}/example/api")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("s3cret") && !run.stderr.contains("wrong"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no version file was changed"),
        "{}",
        run.stderr
    );
    assert_eq!(crate::util::tree(repo.path()), before);
}
