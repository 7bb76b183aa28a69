//! Cluster access: a kube-rs client from, in order, an explicit kubeconfig
//! (a file path or the kubeconfig text itself, as CI secrets hold it),
//! `KUBECONFIG`, `~/.kube/config`, then the in-cluster service account; with
//! an optional context.
//!
//! Kubeconfig contents are never printed: errors name the source (path,
//! "the kubeconfig input", the context) and the cluster URL only.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The error returned when no usable client can be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or parsed.
    #[error("cannot load {source_name}: {detail}")]
    Kubeconfig {
        /// Where it came from (never its content).
        source_name: String,
        /// What was wrong.
        detail: String,
    },
    /// No configuration was found anywhere.
    #[error(
        "no cluster configuration: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run in a pod ({0})"
    )]
    NotFound(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API at {url}: {detail}")]
    Unreachable {
        /// Cluster URL.
        url: String,
        /// The failure.
        detail: String,
    },
}

/// Where to find the cluster.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// A kubeconfig file path, or kubeconfig YAML itself.
    pub kubeconfig: Option<String>,
    /// The context to use instead of `current-context`.
    pub context: Option<String>,
}

/// True when `s` is kubeconfig text rather than a path.
fn looks_like_content(s: &str) -> bool {
    s.contains('\n') && (s.contains("clusters:") || s.contains("apiVersion:"))
}

/// Builds a client and checks that the API server answers, before any work.
///
/// # Errors
/// Unreadable configuration or an unreachable server.
pub async fn connect(access: &Access) -> Result<kube::Client, Error> {
    let options = KubeConfigOptions {
        context: access.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config =
        match access.kubeconfig.as_deref() {
            Some(k) => {
                let (kubeconfig, name) = if looks_like_content(k) {
                    (Kubeconfig::from_yaml(k), "the kubeconfig input".to_string())
                } else {
                    (
                        Kubeconfig::read_from(Path::new(k)),
                        format!("kubeconfig {k}"),
                    )
                };
                let kubeconfig = kubeconfig.map_err(|e| Error::Kubeconfig {
                    source_name: name.clone(),
                    detail: e.to_string(),
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| Error::Kubeconfig {
                        source_name: name,
                        detail: e.to_string(),
                    })?
            }
            None if access.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Kubeconfig {
                    source_name: format!("context {}", access.context.as_deref().unwrap_or("")),
                    detail: e.to_string(),
                })?,
            None => kube::Config::infer()
                .await
                .map_err(|e| Error::NotFound(e.to_string()))?,
        };
    from_config(config).await
}

/// A client for `config`, checked with a version request. kube's built-in
/// retry is turned off: the apply stage retries with its own bounded policy.
///
/// # Errors
/// When the server does not answer.
pub async fn from_config(mut config: kube::Config) -> Result<kube::Client, Error> {
    let url = config.cluster_url.to_string();
    config.default_retry = false;
    let client = kube::Client::try_from(config).map_err(|e| Error::Unreachable {
        url: url.clone(),
        detail: e.to_string(),
    })?;
    client
        .apiserver_version()
        .await
        .map_err(|e| Error::Unreachable {
            url,
            detail: e.to_string(),
        })?;
    Ok(client)
}
