//! Pruning: what the previous state had and the head has not is deleted,
//! in reverse apply order, stopping at the first failure.

use std::time::Duration;

use kube::api::DeleteParams;
use kube::discovery::Scope;

use super::kinds::{Kinds, api_for};
use super::record::Entry;
use super::{Failure, Options, Report, api_message, with_retry};
use crate::resource;

/// Deletes what the previous state had and the head has not, in reverse
/// apply order; stops at the first failure.
#[allow(clippy::too_many_arguments)]
pub(super) async fn delete_entries(
    client: &kube::Client,
    kinds: &mut Kinds,
    to_delete: Vec<&Entry>,
    opts: &Options,
    report: &mut Report,
    to_track: &mut Vec<crate::wait::Target>,
    global_timeout: Duration,
) {
    let mut deletions = to_delete;
    deletions.sort_by_key(|e| std::cmp::Reverse(resource::kind_rank(&e.id().group, &e.kind)));
    let mut dp = DeleteParams {
        propagation_policy: Some(opts.propagation.clone()),
        ..DeleteParams::default()
    };
    dp.dry_run = opts.dry_run;
    for e in deletions {
        let id = e.id();
        let resolved = kinds.resolve(&e.api_version, &e.kind, opts).await;
        let result = match resolved {
            Ok(Some((ar, caps))) => {
                let api = api_for(client, &ar, &caps, id.namespace.as_deref());
                if opts.wait.is_some() && !opts.dry_run {
                    to_track.push(crate::wait::Target {
                        id: id.clone(),
                        app: e.app.clone(),
                        api: ar.clone(),
                        namespaced: matches!(caps.scope, Scope::Namespaced),
                        timeout: global_timeout,
                        deleted: true,
                    });
                }
                match with_retry(opts, || api.delete(&id.name, &dp)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(api_message(&e)),
                }
            }
            // The kind is gone (its CRD was deleted): so are its objects.
            Ok(None) => Ok(()),
            Err(err) => Err(api_message(&err)),
        };
        match result {
            Ok(()) => report.deleted.push(id.to_string()),
            Err(error) => {
                report.failed.push(Failure {
                    app: e.app.clone(),
                    id: id.to_string(),
                    source: format!("deploy record of app {}", e.app),
                    error,
                });
                break;
            }
        }
    }
}
