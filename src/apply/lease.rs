//! One deploy per environment at a time: a `coordination.k8s.io/v1` Lease
//! (`kdeploy-<env>` in the record namespace), renewed while held and taken
//! over when its holder stopped renewing for longer than its duration.
//!
//! The duration is short (15 s, renewed every 5 s) so that a run that was
//! killed blocks the next one for seconds, not a minute; the holder's
//! identity is the workflow run's URL (or host and process) so a waiting
//! run can say who holds it. Every call goes through the client's retry
//! layer; a create that answers 409 (another run, or our own create whose
//! answer was lost) means "look again".

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// How to take the lease.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds without renewal after which a lease is stale.
    pub duration: Duration,
    /// How long to wait for a held lease; zero fails at once.
    pub wait: Duration,
    /// Who we are (shown to the other run).
    pub holder: String,
}

impl Default for Options {
    fn default() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let run = match (
            var("GITHUB_SERVER_URL"),
            var("GITHUB_REPOSITORY"),
            var("GITHUB_RUN_ID"),
        ) {
            (Some(server), Some(repo), Some(id)) => {
                let attempt = var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
                format!("{server}/{repo}/actions/runs/{id}/attempts/{attempt}")
            }
            _ => format!(
                "{}/pid-{}",
                var("HOSTNAME").unwrap_or_else(|| "localhost".into()),
                std::process::id()
            ),
        };
        Options {
            duration: Duration::from_secs(15),
            wait: Duration::from_secs(300),
            // The suffix tells two runs of one process apart.
            holder: format!("{run} ({:08x})", fastrand::u32(..)),
        }
    }
}

/// The error returned when the lease cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another run holds it.
    #[error(
        "environment {env} is being deployed by {holder} (lease {namespace}/{name}, renewed {renewed}); waited {waited:?}. Retry when it finishes, or delete the lease if that run is gone"
    )]
    Held {
        /// Environment.
        env: String,
        /// Current holder.
        holder: String,
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Last renewal.
        renewed: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The API failed (after the client's retries).
    #[error("lease {namespace}/{name}: {}", super::api_message(error))]
    Api {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// kube's error; its message is in ours, so it is not a cause.
        error: kube::Error,
    },
}

/// A held lease; renewed in the background until [`Held::release`].
pub struct Held {
    api: Api<Lease>,
    name: String,
    renewer: tokio::task::JoinHandle<()>,
}

fn lease_object(
    name: &str,
    namespace: &str,
    opts: &Options,
    resource_version: Option<String>,
    acquired: Option<MicroTime>,
) -> Lease {
    let now = MicroTime(Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(opts.holder.clone()),
            lease_duration_seconds: Some(opts.duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    }
}

/// Takes the lease of `env`, waiting up to `opts.wait` for another holder.
///
/// # Errors
/// [`Error::Held`] when it stays held; API failures.
pub async fn acquire(
    client: &kube::Client,
    namespace: &str,
    env: &str,
    opts: &Options,
) -> Result<Held, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = format!("kdeploy-{env}");
    let api_err = |error| Error::Api {
        namespace: namespace.into(),
        name: name.clone(),
        error,
    };
    let started = std::time::Instant::now();
    // Most runs find no lease (the last one deleted its own): try to
    // create it straight away, and read it only when that conflicts.
    let mut first = true;
    loop {
        let current = if std::mem::take(&mut first) {
            None
        } else {
            api.get_opt(&name).await.map_err(api_err)?
        };
        let attempt = match &current {
            None => api
                .create(
                    &PostParams::default(),
                    &lease_object(&name, namespace, opts, None, None),
                )
                .await
                .map(|_| ()),
            Some(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let renewed = spec
                    .renew_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
                let stale = Timestamp::now().as_second() - renewed.as_second() > duration;
                if holder.is_empty() || holder == opts.holder || stale {
                    api.replace(
                        &name,
                        &PostParams::default(),
                        &lease_object(
                            &name,
                            namespace,
                            opts,
                            lease.metadata.resource_version.clone(),
                            None,
                        ),
                    )
                    .await
                    .map(|_| ())
                } else {
                    if started.elapsed() >= opts.wait {
                        return Err(Error::Held {
                            env: env.into(),
                            holder,
                            namespace: namespace.into(),
                            name,
                            renewed: renewed.to_string(),
                            waited: started.elapsed(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500).min(opts.wait)).await;
                    continue;
                }
            }
        };
        match attempt {
            Ok(()) => break,
            // Someone else created or updated it first: look again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_err(e)),
        }
    }
    let renew_api = api.clone();
    let renew_name = name.clone();
    let renew_opts = opts.clone();
    let renew_ns = namespace.to_string();
    let renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(renew_opts.duration / 3).await;
            if let Ok(Some(lease)) = renew_api.get_opt(&renew_name).await {
                let acquired = lease.spec.as_ref().and_then(|s| s.acquire_time.clone());
                let _ = renew_api
                    .replace(
                        &renew_name,
                        &PostParams::default(),
                        &lease_object(
                            &renew_name,
                            &renew_ns,
                            &renew_opts,
                            lease.metadata.resource_version.clone(),
                            acquired,
                        ),
                    )
                    .await;
            }
        }
    });
    Ok(Held { api, name, renewer })
}

impl Held {
    /// Stops renewing and deletes the lease so the next run need not wait.
    pub async fn release(self) {
        self.renewer.abort();
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
    }
}
