//! Cluster access: a kube-rs client from, in order, an explicit kubeconfig
//! (a file path or the kubeconfig text itself, as CI secrets hold it),
//! `KUBECONFIG`, `~/.kube/config`, then the in-cluster service account; with
//! an optional context.
//!
//! Kubeconfig contents are never printed: errors name the source (path,
//! "the kubeconfig input", the context) and the cluster URL only.

use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod retry;

/// `User-Agent` of every request, so API server audit logs can tell
/// kdeploy's requests from others'.
pub const USER_AGENT: &str = concat!("kdeploy/", env!("CARGO_PKG_VERSION"));

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

/// A kubeconfig parse error without any of its text: YAML errors give only
/// the position and the parser's problem (their snippets could show a
/// token), type errors have quoted values replaced.
fn parse_error(text: &str, kube_message: &str) -> String {
    match crate::yaml::index(text) {
        Err(e) => format!(
            "not valid YAML at line {}, column {}: {}",
            e.line.unwrap_or(0),
            e.column.unwrap_or(0),
            e.message
        ),
        Ok(_) => scrub_quoted(kube_message),
    }
}

/// The first line of a message (serde-saphyr appends a snippet of the input
/// below it) with every quoted part (where serde puts the offending value)
/// replaced by `"<redacted>"`.
fn scrub_quoted(message: &str) -> String {
    let message = message.lines().next().unwrap_or_default();
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            out.push_str("\"<redacted>");
        } else {
            out.push('"');
            out.push_str(part);
        }
    }
    out
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
    let (kubeconfig, name) = match access.kubeconfig.as_deref() {
        Some(k) if looks_like_content(k) => (
            Kubeconfig::from_yaml(k).map_err(|e| parse_error(k, &e.to_string())),
            "the kubeconfig input".to_string(),
        ),
        Some(k) => (
            std::fs::read_to_string(k)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    Kubeconfig::from_yaml(&text).map_err(|e| parse_error(&text, &e.to_string()))
                }),
            format!("kubeconfig {k}"),
        ),
        None if access.context.is_some() => (
            Kubeconfig::read().map_err(|e| scrub_quoted(&e.to_string())),
            "the default kubeconfig (KUBECONFIG or ~/.kube/config)".to_string(),
        ),
        None => {
            let config = kube::Config::infer()
                .await
                .map_err(|e| Error::NotFound(scrub_quoted(&e.to_string())))?;
            return from_config(config).await;
        }
    };
    let kubeconfig = kubeconfig.map_err(|detail| Error::Kubeconfig {
        source_name: name.clone(),
        detail,
    })?;
    if let Some(context) = &access.context
        && !kubeconfig.contexts.iter().any(|c| &c.name == context)
    {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(Error::Kubeconfig {
            source_name: name,
            detail: format!(
                "it has no context `{context}`; its contexts: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        });
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Kubeconfig {
            source_name: name,
            detail: scrub_quoted(&e.to_string()),
        })?;
    from_config(config).await
}

/// A client for `config` with kdeploy's [`retry::RetryPolicy`] on every
/// call and its `User-Agent`, checked with a version request.
///
/// # Errors
/// When the server does not answer.
pub async fn from_config(config: kube::Config) -> Result<kube::Client, Error> {
    from_config_with(config, retry::RetryPolicy::default()).await
}

/// [`from_config`] with a given retry policy (tests use short delays).
///
/// # Errors
/// When the server does not answer.
pub async fn from_config_with(
    mut config: kube::Config,
    policy: retry::RetryPolicy,
) -> Result<kube::Client, Error> {
    let url = config.cluster_url.to_string();
    // kube's own retry layer is replaced by ours (see `retry`).
    config.default_retry = false;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    let unreachable = |e: kube::Error| Error::Unreachable {
        url: url.clone(),
        detail: e.to_string(),
    };
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(unreachable)?
        // Retrying needs a service it can call again: a buffer makes one.
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(policy))
        .build();
    client
        .apiserver_version()
        .await
        .map_err(|e| Error::Unreachable {
            url,
            detail: e.to_string(),
        })?;
    Ok(client)
}

/// The API server's message for a failure, without kube's debug dump.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}
