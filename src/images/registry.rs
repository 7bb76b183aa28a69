//! Resolving image references to digests through the OCI distribution API,
//! with `oci-client`: a manifest HEAD (GET when the registry sends no
//! `Docker-Content-Digest`) accepting OCI indexes and Docker manifest lists,
//! so a multi-arch tag resolves to its index digest as `docker pull` and
//! kbld do. Anonymous access, the bearer-token flow (`WWW-Authenticate:
//! Bearer realm=…`) and credentials from the Docker config (`docker login`,
//! `docker/login-action`, credential helpers) come from the crate.

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// Why a reference did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error("`{reference}` is not an image reference: {detail}")]
    Invalid {
        /// The reference.
        reference: String,
        /// The parser's words.
        detail: String,
    },
    /// The registry has no such repository or tag.
    #[error("{reference}: the registry {registry} has no such image (manifest unknown)")]
    NotFound {
        /// The reference.
        reference: String,
        /// Its registry.
        registry: String,
    },
    /// Credentials are missing or refused.
    #[error(
        "{reference}: the registry {registry} refused access ({detail}); log in with `docker login {registry}` (in Actions: docker/login-action), which writes the Docker config kdeploy reads"
    )]
    Unauthorized {
        /// The reference.
        reference: String,
        /// Its registry.
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// Anything else: the registry is down, unreachable, or answered oddly.
    #[error("{reference}: the registry {registry} failed: {detail}")]
    Failed {
        /// The reference.
        reference: String,
        /// Its registry.
        registry: String,
        /// What went wrong.
        detail: String,
    },
}

/// The most pages of tags listed for one repository (100 tags each).
const MAX_TAG_PAGES: usize = 500;
/// The most time spent listing the tags of one repository.
const MAX_TAG_LISTING: Duration = Duration::from_secs(120);

/// A registry client for one run.
pub struct Registry {
    client: Client,
    /// Registries spoken to over plain HTTP.
    insecure: Vec<String>,
}

impl Registry {
    /// A client; `insecure` registries (`host[:port]`) are spoken to over
    /// plain HTTP.
    pub fn new(insecure: &[String]) -> Registry {
        // reqwest is built without a crypto provider: use ring, as kube does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if insecure.is_empty() {
            oci_client::client::ClientProtocol::Https
        } else {
            oci_client::client::ClientProtocol::HttpsExcept(insecure.to_vec())
        };
        let config = oci_client::client::ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        Registry {
            client: Client::new(config),
            insecure: insecure.to_vec(),
        }
    }

    /// The runner's credentials for `registry`, unless it is spoken to in
    /// clear and the runner did not allow that: which registries are plain
    /// HTTP is the repository's to say (`images.insecureRegistries`), but a
    /// password sent over plain HTTP is readable on the way, so it goes
    /// only to a loopback address or a registry the runner lists in
    /// `KDEPLOY_INSECURE_REGISTRIES` (comma-separated `host:port`).
    fn auth_for(&self, registry: &str) -> RegistryAuth {
        if self.insecure.iter().any(|i| i == registry) && !clear_credentials_allowed(registry) {
            return RegistryAuth::Anonymous;
        }
        credentials(registry)
    }

    /// The digest `reference` resolves to (`sha256:…`), retried on
    /// transport errors, 429 and 5xx.
    ///
    /// # Errors
    /// [`Error`], naming the reference and its registry.
    pub async fn digest(&self, reference: &str) -> Result<String, Error> {
        let parsed: Reference = reference.parse().map_err(|e| Error::Invalid {
            reference: reference.to_string(),
            detail: format!("{e}"),
        })?;
        let registry = parsed.resolve_registry().to_string();
        let auth = self.auth_for(parsed.registry());
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.client.fetch_manifest_digest(&parsed, &auth).await {
                Ok(digest) => return Ok(digest),
                Err(e) if attempt < 3 && transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(explain(reference, &registry, e)),
            }
        }
    }
}

impl Registry {
    /// Every tag of `repository` (`host/path`), page by page (`n` and
    /// `last`, as the distribution API paginates), retried like [`Registry::digest`].
    ///
    /// # Errors
    /// [`Error`], naming the repository and its registry.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, Error> {
        // 100 is what Docker Hub and GHCR serve per page anyway.
        const PAGE: usize = 100;
        let parsed: Reference = repository.parse().map_err(|e| Error::Invalid {
            reference: repository.to_string(),
            detail: format!("{e}"),
        })?;
        let registry = parsed.resolve_registry().to_string();
        let auth = self.auth_for(parsed.registry());
        let mut out = std::collections::BTreeSet::new();
        let mut last: Option<String> = None;
        let started = std::time::Instant::now();
        for pages in 1.. {
            // A registry can paginate forever (a repository the policy
            // names is the pull request's choice): bounded in pages and time.
            if pages > MAX_TAG_PAGES || started.elapsed() > MAX_TAG_LISTING {
                return Err(Error::Failed {
                    reference: repository.to_string(),
                    registry,
                    detail: format!(
                        "listing tags took more than {MAX_TAG_PAGES} pages or {}s; kdeploy stops there (narrow the repository, or prune its tags)",
                        MAX_TAG_LISTING.as_secs()
                    ),
                });
            }
            let mut attempt = 0;
            let page = loop {
                attempt += 1;
                match self
                    .client
                    .list_tags(&parsed, &auth, Some(PAGE), last.as_deref())
                    .await
                {
                    Ok(page) => break page,
                    Err(e) if attempt < 3 && transient(&e) => {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    Err(e) => return Err(explain(repository, &registry, e)),
                }
            };
            let n = page.tags.len();
            let before = out.len();
            last = page.tags.iter().max().cloned();
            out.extend(page.tags);
            // A full page may have a next one (`n` and `last`, as the
            // distribution spec paginates). A registry that does not
            // paginate (Distribution 2.8) sends everything, ignoring `n`:
            // more than a page, or nothing new, ends the listing.
            if n != PAGE || out.len() == before {
                break;
            }
        }
        Ok(out.into_iter().collect())
    }
}

fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == OciErrorCode::Toomanyrequests),
        _ => false,
    }
}

fn explain(reference: &str, registry: &str, e: OciDistributionError) -> Error {
    let (reference, registry) = (reference.to_string(), registry.to_string());
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => Error::NotFound {
            reference,
            registry,
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            Error::NotFound {
                reference,
                registry,
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => Error::NotFound {
            reference,
            registry,
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            Error::Unauthorized {
                reference,
                registry,
                detail: envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        }
        OciDistributionError::UnauthorizedError { .. } => Error::Unauthorized {
            reference,
            registry,
            detail: "401 Unauthorized".into(),
        },
        OciDistributionError::AuthenticationFailure(detail) => Error::Unauthorized {
            reference,
            registry,
            detail,
        },
        OciDistributionError::RequestError(e) => Error::Failed {
            reference,
            registry,
            detail: transport_detail(&e),
        },
        other => Error::Failed {
            reference,
            registry,
            detail: other.to_string(),
        },
    }
}

/// reqwest's error and its causes (`error sending request` alone says
/// nothing about a refused connection).
fn transport_detail(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Credentials for `registry` from the Docker config, else anonymous.
/// See [`Registry::auth_for`].
fn clear_credentials_allowed(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || std::env::var("KDEPLOY_INSECURE_REGISTRIES")
            .is_ok_and(|list| list.split(',').map(str::trim).any(|r| r == registry))
}

fn credentials(registry: &str) -> RegistryAuth {
    // `docker login` stores Docker Hub under its v1 index URL.
    let keys: &[&str] = if registry == "docker.io" || registry == "index.docker.io" {
        &[
            "https://index.docker.io/v1/",
            "docker.io",
            "index.docker.io",
        ]
    } else {
        &[registry]
    };
    for key in keys {
        match docker_credential::get_credential(key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
                return RegistryAuth::Basic(u, p);
            }
            Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
                return RegistryAuth::Bearer(t);
            }
            Err(_) => {}
        }
    }
    RegistryAuth::Anonymous
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_in_clear_only_to_loopback_or_where_the_runner_allows() {
        for local in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.0.0.2",
        ] {
            assert!(clear_credentials_allowed(local), "{local}");
        }
        for remote in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.evil.example:80",
        ] {
            assert!(!clear_credentials_allowed(remote), "{remote}");
        }
        let r = Registry::new(&["registry.example:5000".to_string()]);
        assert!(matches!(
            r.auth_for("registry.example:5000"),
            RegistryAuth::Anonymous
        ));
    }
}
