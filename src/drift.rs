//! Drift detection without a controller (`kdeploy drift`): every resource
//! in an environment's deploy record is compared with the cluster. The
//! desired state is what was deployed (the record's commit, rendered
//! again), and the comparison is a server-side apply dry run of it, so
//! only fields kdeploy sets can differ; `managedFields` says which other
//! field manager changed them. Missing resources are reported, and with
//! `unmanaged` so are objects in the managed namespaces that kdeploy did
//! not create. `repair` re-applies what drifted.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;

use crate::apply::record::Record;
use crate::apply::{FIELD_MANAGER, Kinds, Options, api_for, api_message, with_retry};
use crate::resource::{Resource, ResourceId};

/// What is wrong with one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Recorded as deployed, gone from the cluster.
    Missing,
    /// Fields kdeploy sets have other values.
    Changed,
    /// In a managed namespace, not deployed by kdeploy.
    Unmanaged,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What kind of drift.
    pub kind: Kind,
    /// `apps/Deployment shop/api`.
    pub id: String,
    /// The app that deployed it (none for unmanaged objects).
    pub app: Option<String>,
    /// Changed fields, `spec.replicas: 3 → 5` (values left out for Secrets).
    pub fields: Vec<String>,
    /// Other field managers that own the changed fields.
    pub managers: Vec<String>,
    /// Unified diff live → deployed, Secret values redacted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
}

/// One environment's drift.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Environment.
    pub environment: String,
    /// The commit the record says was deployed.
    pub deployed: String,
    /// Recorded resources checked.
    pub checked: usize,
    /// What differs.
    pub findings: Vec<Finding>,
    /// Resources re-applied (`--repair`).
    pub repaired: Vec<String>,
    /// Things worth knowing (recorded resources the commit no longer renders).
    pub notes: Vec<String>,
}

impl Report {
    /// True when nothing drifted.
    pub fn in_sync(&self) -> bool {
        self.findings.is_empty()
    }
}

/// How to look.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Also list objects of managed namespaces kdeploy did not create.
    pub unmanaged: bool,
    /// Re-apply what is missing or changed.
    pub repair: bool,
}

/// A leaf where two objects differ: its path (`spec.replicas`,
/// `spec.template.spec.containers[0].image`), both values, and a third
/// object's value there when one is given (`Some(Null)` where it has none).
pub(crate) type Leaf = (String, Value, Value, Option<Value>);

/// Leaf paths where `a` and `b` differ, with `base`'s values beside them
/// (a three-way plan reads what kdeploy set last).
pub(crate) fn differing(
    a: &Value,
    b: &Value,
    base: Option<&Value>,
    at: String,
    out: &mut Vec<Leaf>,
) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                differing(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    base.map(|v| v.get(k).unwrap_or(&Value::Null)),
                    join(k),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                let v = base.map(|v| v.get(i).unwrap_or(&Value::Null));
                differing(p, q, v, format!("{at}[{i}]"), out);
            }
        }
        _ if a != b => out.push((at, a.clone(), b.clone(), base.cloned())),
        _ => {}
    }
}

/// The dotted paths a `fieldsV1` entry owns, list items (`k:{…}`, `v:…`,
/// `i:…`) dropped so they match [`differing`]'s paths without indices.
fn owned_paths(fields: &Value, at: &str, out: &mut Vec<String>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    if map.is_empty() && !at.is_empty() {
        out.push(at.to_string());
    }
    for (k, v) in map {
        if k == "." {
            out.push(at.to_string());
            continue;
        }
        let next = match k.split_once(':') {
            Some(("f", name)) if at.is_empty() => name.to_string(),
            Some(("f", name)) => format!("{at}.{name}"),
            // An item of a list: its fields continue the list's path.
            Some(_) => at.to_string(),
            None => continue,
        };
        owned_paths(v, &next, out);
    }
}

fn without_indices(path: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            _ if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

/// The managers other than kdeploy that own any of `paths`.
pub(crate) fn managers_of(live: &Value, paths: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for entry in live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(manager) = entry["manager"].as_str() else {
            continue;
        };
        if manager == FIELD_MANAGER {
            continue;
        }
        let mut owned = Vec::new();
        owned_paths(&entry["fieldsV1"], "", &mut owned);
        let claims = paths.iter().map(|p| without_indices(p)).any(|p| {
            owned
                .iter()
                .any(|o| p == *o || p.starts_with(&format!("{o}.")))
        });
        if claims {
            let op = entry["operation"].as_str().unwrap_or("");
            out.insert(if op.is_empty() {
                manager.to_string()
            } else {
                format!("{manager} ({op})")
            });
        }
    }
    out.into_iter().collect()
}

/// Kinds listed for `--unmanaged`: what apps are made of.
const LISTED: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "Ingress"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
];

/// Objects every namespace has, or that controllers make.
fn is_default(kind: &str, object: &Value) -> bool {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let owned = object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| !o.is_empty());
    owned
        || (kind == "ConfigMap" && name == "kube-root-ca.crt")
        || (kind == "ServiceAccount" && name == "default")
        || (kind == "Secret" && object["type"] == "kubernetes.io/service-account-token")
}

/// One recorded resource against the cluster: missing, changed (with the
/// managers that own the changed fields), or `None` when in sync.
async fn compare(
    api: &Api<DynamicObject>,
    r: &Resource,
    app: &str,
    dry: &PatchParams,
    opts: &Options,
) -> Result<Option<Finding>, String> {
    let id = &r.id;
    let live = match with_retry(opts, || api.get_opt(&id.name)).await {
        Ok(Some(l)) => serde_json::to_value(l).unwrap_or(Value::Null),
        Ok(None) => Value::Null,
        Err(kube::Error::Api(s)) if s.code == 404 => Value::Null,
        Err(e) => return Err(api_message(&e)),
    };
    if live.is_null() {
        return Ok(Some(Finding {
            kind: Kind::Missing,
            id: id.to_string(),
            app: Some(app.to_string()),
            fields: vec![],
            managers: vec![],
            diff: String::new(),
        }));
    }
    let obj: DynamicObject = serde_json::from_value(r.object.clone()).map_err(|e| e.to_string())?;
    let patch = Patch::Apply(&obj);
    let would = with_retry(opts, || api.patch(&id.name, dry, &patch))
        .await
        .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
        .map_err(|e| api_message(&e))?;
    let (a, b) = (
        crate::apply::live::strip(live.clone()),
        crate::apply::live::strip(would),
    );
    let mut diffs = Vec::new();
    differing(&a, &b, None, String::new(), &mut diffs);
    if diffs.is_empty() {
        return Ok(None);
    }
    let secret = id.kind == "Secret" && id.group.is_empty();
    let paths: Vec<String> = diffs.iter().map(|(p, ..)| p.clone()).collect();
    let fields = diffs
        .iter()
        .map(|(p, live, want, _)| {
            if secret {
                format!("{p} (value not shown)")
            } else {
                format!(
                    "{p}: {} → {}",
                    crate::yaml::show(want),
                    crate::yaml::show(live)
                )
            }
        })
        .collect();
    let (mut x, mut y) = (a.clone(), b.clone());
    crate::plan::redact_secret(&mut x, Some(&b), false);
    crate::plan::redact_secret(&mut y, Some(&a), true);
    let diff =
        similar::TextDiff::from_lines(crate::yaml::to_canonical(&x), crate::yaml::to_canonical(&y))
            .unified_diff()
            .context_radius(2)
            .header(&format!("live {id}"), &format!("deployed {id}"))
            .to_string();
    Ok(Some(Finding {
        kind: Kind::Changed,
        id: id.to_string(),
        app: Some(app.to_string()),
        fields,
        managers: managers_of(&live, &paths),
        diff,
    }))
}

/// Compares `env`'s record with the cluster; `desired` is the state the
/// record's commit renders for it.
///
/// # Errors
/// One message per resource that could not be read or compared.
pub async fn detect(
    client: &kube::Client,
    env: &str,
    record: &Record,
    desired: &[&Resource],
    settings: &Settings,
    opts: &Options,
) -> Result<Report, Vec<String>> {
    let by_id: BTreeMap<&ResourceId, &Resource> = desired.iter().map(|r| (&r.id, *r)).collect();
    let mut kinds = Kinds::new(client.clone());
    let mut dry = PatchParams::apply(FIELD_MANAGER).force();
    dry.dry_run = true;
    let mut report = Report {
        environment: env.to_string(),
        deployed: record.commit.clone(),
        checked: 0,
        findings: Vec::new(),
        repaired: Vec::new(),
        notes: Vec::new(),
    };
    let mut errors = Vec::new();
    let mut to_repair: Vec<&Resource> = Vec::new();
    // Kinds first (discovery is cached per group/version), then the reads
    // and dry runs, several at a time as the apply path writes.
    let mut jobs = Vec::new();
    // Hooks run and finish (and may be cleaned up): not drift.
    for (id, entry) in record.entries.iter().filter(|(_, e)| !e.hook) {
        let Some(r) = by_id.get(id) else {
            report.notes.push(format!(
                "{id} is in the record but {} does not render it: not compared",
                short(&record.commit)
            ));
            continue;
        };
        report.checked += 1;
        match kinds.resolve(&entry.api_version, &entry.kind, opts).await {
            Ok(Some((ar, caps))) => jobs.push((*r, entry.app.as_str(), ar, caps)),
            Ok(None) => report.findings.push(Finding {
                kind: Kind::Missing,
                id: id.to_string(),
                app: Some(entry.app.clone()),
                fields: vec![format!(
                    "the cluster no longer serves {}",
                    entry.api_version
                )],
                managers: vec![],
                diff: String::new(),
            }),
            Err(e) => errors.push(format!("{id}: {}", api_message(&e))),
        }
    }
    let dry = &dry;
    let compared: Vec<(&Resource, Result<Option<Finding>, String>)> = futures::stream::iter(jobs)
        .map(|(r, app, ar, caps)| async move {
            let api: Api<DynamicObject> = api_for(client, &ar, &caps, r.id.namespace.as_deref());
            (r, compare(&api, r, app, dry, opts).await)
        })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    for (r, result) in compared {
        match result {
            Ok(Some(finding)) => {
                report.findings.push(finding);
                to_repair.push(r);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("{}: {e}", r.id)),
        }
    }
    if settings.unmanaged {
        unmanaged(client, record, &mut kinds, opts, &mut report, &mut errors).await;
    }
    if settings.repair {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        for r in to_repair {
            let Ok(Some((ar, caps))) = kinds.resolve(&r.api_version, &r.id.kind, opts).await else {
                errors.push(format!("{}: cannot repair: its kind is not served", r.id));
                continue;
            };
            let api: Api<DynamicObject> = api_for(client, &ar, &caps, r.id.namespace.as_deref());
            let Ok(obj) = serde_json::from_value::<DynamicObject>(r.object.clone()) else {
                continue;
            };
            let patch = Patch::Apply(&obj);
            match with_retry(opts, || api.patch(&r.id.name, &apply, &patch)).await {
                Ok(_) => report.repaired.push(r.id.to_string()),
                Err(e) => errors.push(format!("{}: cannot repair: {}", r.id, api_message(&e))),
            }
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

/// Adds the objects of the record's namespaces that the record lacks.
async fn unmanaged(
    client: &kube::Client,
    record: &Record,
    kinds: &mut Kinds,
    opts: &Options,
    report: &mut Report,
    errors: &mut Vec<String>,
) {
    let namespaces: BTreeSet<&str> = record
        .entries
        .keys()
        .filter_map(|id| id.namespace.as_deref())
        .filter(|ns| *ns != opts.record_namespace)
        .collect();
    for (api_version, kind) in LISTED {
        let Ok(Some((ar, caps))) = kinds.resolve(api_version, kind, opts).await else {
            continue;
        };
        for ns in &namespaces {
            let api: Api<DynamicObject> = api_for(client, &ar, &caps, Some(ns));
            let params = ListParams::default();
            let list = match with_retry(opts, || api.list(&params)).await {
                Ok(l) => l,
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => {
                    errors.push(format!("listing {kind} in {ns}: {}", api_message(&e)));
                    continue;
                }
            };
            for item in list.items {
                let object = serde_json::to_value(&item).unwrap_or(Value::Null);
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let id = ResourceId {
                    group: crate::resource::split_api_version(api_version)
                        .0
                        .to_string(),
                    kind: (*kind).to_string(),
                    namespace: Some((*ns).to_string()),
                    name,
                };
                if record.entries.contains_key(&id) || is_default(kind, &object) {
                    continue;
                }
                report.findings.push(Finding {
                    kind: Kind::Unmanaged,
                    id: id.to_string(),
                    app: None,
                    fields: vec![],
                    managers: object["metadata"]["managedFields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m["manager"].as_str().map(str::to_string))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    diff: String::new(),
                });
            }
        }
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The report as text: a line per finding, then the diffs.
pub fn text(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let drifted = report
        .findings
        .iter()
        .filter(|f| f.kind != Kind::Unmanaged)
        .count();
    if report.in_sync() {
        writeln!(
            out,
            "{}: in sync ({} resources deployed from {} match the cluster)",
            report.environment,
            report.checked,
            short(&report.deployed)
        )?;
    } else {
        writeln!(
            out,
            "{}: drift in {drifted} of {} resources deployed from {}",
            report.environment,
            report.checked,
            short(&report.deployed)
        )?;
    }
    for f in &report.findings {
        let app = f
            .app
            .as_deref()
            .map(|a| format!(" [{a}]"))
            .unwrap_or_default();
        let by = if f.managers.is_empty() {
            String::new()
        } else {
            format!(" by {}", f.managers.join(", "))
        };
        match f.kind {
            Kind::Missing => writeln!(out, "  missing    {}{app}: deleted from the cluster", f.id)?,
            Kind::Changed => {
                writeln!(out, "  changed    {}{app}{by}", f.id)?;
                for field in f.fields.iter().take(8) {
                    writeln!(out, "               {field}")?;
                }
                if f.fields.len() > 8 {
                    writeln!(
                        out,
                        "               … and {} more fields",
                        f.fields.len() - 8
                    )?;
                }
            }
            Kind::Unmanaged => writeln!(
                out,
                "  unmanaged  {}: not deployed by kdeploy{}",
                f.id,
                if f.managers.is_empty() {
                    String::new()
                } else {
                    format!(" (written by {})", f.managers.join(", "))
                }
            )?,
        }
    }
    for n in &report.notes {
        writeln!(out, "  note: {n}")?;
    }
    for r in &report.repaired {
        writeln!(out, "  repaired   {r}")?;
    }
    for f in report.findings.iter().filter(|f| !f.diff.is_empty()) {
        writeln!(out)?;
        out.write_all(f.diff.as_bytes())?;
    }
    Ok(())
}

/// Where to look and what to compare with.
pub struct Scope<'a> {
    /// The config repo.
    pub repo: &'a std::path::Path,
    /// Environments (and apps) to check.
    pub filter: &'a crate::config::Filter,
    /// The cluster flags (`--kubeconfig`, `--context`).
    pub access: &'a crate::cluster::Access,
    /// Compare with this revision instead of each record's commit.
    pub rev: Option<&'a str>,
    /// Credentials to fetch a recorded commit a shallow clone lacks.
    pub fetch: Option<&'a crate::event::FetchAuth>,
}

/// Checks every selected environment that has a deploy record, in the
/// cluster of its `environments.<env>.context` (or the given context).
///
/// # Errors
/// Connection and API failures, records naming no commit, render errors.
pub async fn check(
    scope: &Scope<'_>,
    settings: &Settings,
    opts: &Options,
) -> anyhow::Result<Vec<Report>> {
    use crate::source::{Revision, Snapshot};
    use anyhow::Context as _;
    let head = Snapshot::open(
        scope.repo,
        &Revision::parse(Some(scope.rev.unwrap_or("HEAD"))),
    )?;
    let config = crate::config::head_settings(&head);
    // One connection per context: the flag's, else each environment's.
    let mut contexts: BTreeSet<Option<String>> = BTreeSet::new();
    match &scope.access.context {
        Some(c) => {
            contexts.insert(Some(c.clone()));
        }
        None => {
            contexts.insert(None);
            contexts.extend(
                config
                    .environments
                    .values()
                    .filter_map(|e| e.context.clone())
                    .map(Some),
            );
        }
    }
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for context in contexts {
        let access = crate::cluster::Access {
            kubeconfig: scope.access.kubeconfig.clone(),
            context: context.clone(),
        };
        let client = crate::cluster::connect(&access).await?;
        let records = crate::apply::record::list(&client, &opts.record_namespace, opts).await?;
        for (env, mut record) in records {
            let env_context = config
                .environments
                .get(&env)
                .and_then(|e| e.context.clone());
            let here = scope.access.context.is_some() || env_context == context;
            // A preview renders from its pull request's head, not from
            // here; its next push redeploys it.
            if !here || !scope.filter.matches_env(&env) || record.preview.is_some() {
                continue;
            }
            record
                .entries
                .retain(|_, e| scope.filter.matches_app(&e.app));
            let snapshot = match scope.rev {
                Some(_) => None,
                None => {
                    if record.commit.len() != 40
                        || !record.commit.chars().all(|c| c.is_ascii_hexdigit())
                    {
                        problems.push(format!(
                            "{env}: the record names no commit (`{}`: deployed from a work tree?); compare with a revision: --rev HEAD",
                            record.commit
                        ));
                        continue;
                    }
                    let id = crate::event::ensure_commit(scope.repo, &record.commit, scope.fetch)
                        .with_context(|| {
                        format!("{env} was deployed from {}", record.commit)
                    })?;
                    Some(Snapshot::at_commit(
                        crate::source::discover(scope.repo)?,
                        scope.repo,
                        id,
                        &record.commit,
                    )?)
                }
            };
            let desired = crate::render::render(
                snapshot.as_ref().unwrap_or(&head),
                &crate::config::Filter::new(Some(&env), None)?,
            )?;
            let resources: Vec<&Resource> = desired
                .releases
                .iter()
                .filter(|r| r.release.env == env)
                .flat_map(|r| r.resources.iter())
                .collect();
            match detect(&client, &env, &record, &resources, settings, opts).await {
                Ok(r) => reports.push(r),
                Err(errors) => problems.push(format!("{env}:\n    {}", errors.join("\n    "))),
            }
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("drift could not be checked:\n  {}", problems.join("\n  "));
    }
    reports.sort_by(|a, b| a.environment.cmp(&b.environment));
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_are_attributed_to_the_managers_that_own_them() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "kdeploy", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {".": {}, "f:image": {}}}}}}}},
            {"manager": "hpa", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]}});
        assert_eq!(
            managers_of(&live, &["spec.template.spec.containers[0].image".into()]),
            ["kubectl-edit (Update)"]
        );
        assert_eq!(
            managers_of(&live, &["spec.replicas".into()]),
            ["hpa (Update)"]
        );
        assert!(managers_of(&live, &["metadata.labels.x".into()]).is_empty());
    }

    #[test]
    fn differing_paths_name_leaves() {
        let mut out = Vec::new();
        differing(
            &json!({"spec": {"replicas": 5, "c": [{"image": "a"}]}}),
            &json!({"spec": {"replicas": 3, "c": [{"image": "b"}]}}),
            None,
            String::new(),
            &mut out,
        );
        let paths: Vec<&str> = out.iter().map(|(p, ..)| p.as_str()).collect();
        assert_eq!(paths, ["spec.c[0].image", "spec.replicas"]);
    }
}
