//! Rendered text to resources: documents split and parsed once, required
//! fields checked, ids built, namespaces filled in, apply order.

use serde_json::Value;

use super::Release;
use crate::config;
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::resource::{self, Origin, Resource, ResourceId};
use crate::yaml;

/// Turns parsed objects into resources in apply order (kind rank, then the
/// order they came in), with namespaces filled in; CRDs among them decide
/// the scope of their own kinds.
pub(super) fn resources_of(
    objects: Vec<(Value, Origin)>,
    namespace: &str,
    problems: &mut Diagnostics,
) -> Vec<Resource> {
    let cluster_crds = resource::crd_scopes(objects.iter().map(|(v, _)| v));
    let mut resources = Vec::with_capacity(objects.len());
    for (object, origin) in objects {
        match to_resource(object, origin, namespace, &cluster_crds) {
            Ok(r) => resources.push(r),
            Err(d) => problems.push(d),
        }
    }
    resources.sort_by_key(|r| resource::kind_rank(&r.id.group, &r.id.kind));
    resources
}

/// Splits a template's output into documents and parses each once.
pub(super) fn parse_documents(
    text: &str,
    template: &str,
    release: &Release,
    out: &mut Vec<(Value, Origin)>,
    problems: &mut Diagnostics,
) {
    for doc in yaml::split_documents(text) {
        if yaml::is_blank(doc.text) {
            continue;
        }
        let origin = Origin {
            env: release.env.clone(),
            app: release.app.clone(),
            file: template.to_string(),
            document: doc.index,
            line: doc.first_line,
        };
        match yaml::parse(doc.text) {
            Ok(v) => out.push((v, origin)),
            Err(e) => {
                let line_in_output = e.line.map(|l| l + doc.first_line - 1);
                // The line's shape only: a rendered value may be a secret.
                let snippet = line_in_output
                    .and_then(|l| text.lines().nth(l.saturating_sub(1)))
                    .map(|l| format!("\n  | {}", shape_of_line(l)))
                    .unwrap_or_default();
                problems.push(
                    Diagnostic::new(
                        Location::file(template),
                        format!(
                            "rendered output for {}/{} is not valid YAML (document {}, line {} of the output): {}{snippet}",
                            release.env,
                            release.app,
                            doc.index + 1,
                            line_in_output.map_or("?".into(), |l| l.to_string()),
                            e.message
                        ),
                    )
                    .help("check indentation around {{…}} expressions; use nindent/toYaml for maps and lists"),
                );
            }
        }
    }
}

/// A YAML line with its value hidden: indentation, `- ` and the key stay,
/// which is what a syntax error is about; the value could be a secret.
fn shape_of_line(line: &str) -> String {
    let indent = line.len() - line.trim_start().len();
    let mut rest = &line[indent..];
    let mut out = line[..indent].to_string();
    while let Some(r) = rest.strip_prefix("- ") {
        out.push_str("- ");
        rest = r;
    }
    match rest.split_once(':') {
        Some((key, value))
            if !key.contains(['"', '\'', ' ', '{', '[']) && !value.trim().is_empty() =>
        {
            format!("{out}{key}: <value hidden>")
        }
        Some((key, _)) if !key.contains(['"', '\'', ' ', '{', '[']) => format!("{out}{key}:"),
        _ if rest.is_empty() => out,
        _ => format!("{out}<value hidden>"),
    }
}

/// The name of a hook Job that has only `metadata.generateName` (as Helm
/// charts and Argo CD repos write them, so each run creates a new Job):
/// kdeploy deletes and recreates a hook by name on every run that needs
/// it, so the name is the prefix and a suffix derived from it, the same in
/// every render.
fn hook_name(object: &Value) -> Option<String> {
    use sha2::Digest as _;
    let meta = &object["metadata"];
    let prefix = meta["generateName"].as_str()?;
    let annotations = &meta["annotations"];
    let hook = [
        crate::hooks::HOOK,
        crate::hooks::HELM_HOOK,
        crate::hooks::ARGO_HOOK,
    ]
    .iter()
    .any(|k| annotations[*k].is_string());
    if meta["name"].is_string() || !hook || object["kind"] != "Job" || prefix.is_empty() {
        return None;
    }
    let digest = sha2::Sha256::digest(prefix.as_bytes());
    let suffix: String = digest
        .iter()
        .take(3)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..5]
        .to_string();
    Some(format!("{prefix}{suffix}"))
}

/// Checks the fields every object needs and builds its id; namespaced kinds
/// without a namespace get the release's.
fn to_resource(
    mut object: Value,
    origin: Origin,
    namespace: &str,
    cluster_crds: &[(String, String)],
) -> Result<Resource, Diagnostic> {
    let fail = |what: &str| {
        Diagnostic::new(
            Location::file(&origin.file),
            format!(
                "document {} rendered for {}/{} {what}",
                origin.document + 1,
                origin.env,
                origin.app
            ),
        )
        .help("every document needs apiVersion, kind and metadata.name (`metadata.generateName` only for a hook Job: annotate it `kdeploy.io/hook: pre-deploy` or `post-deploy`)")
    };
    if !object.is_object() {
        return Err(fail(&format!(
            "is {}, not a Kubernetes object",
            config::type_name(&object)
        )));
    }
    let api_version = object["apiVersion"].as_str().map(str::to_string);
    let kind = object["kind"].as_str().map(str::to_string);
    if let Some(name) = hook_name(&object) {
        object["metadata"]["name"] = Value::String(name);
    }
    let name = object["metadata"]["name"].as_str().map(str::to_string);
    let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
        let missing: Vec<&str> = [
            ("apiVersion", object["apiVersion"].is_string()),
            ("kind", object["kind"].is_string()),
            ("metadata.name", object["metadata"]["name"].is_string()),
        ]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(f, _)| *f)
        .collect();
        return Err(fail(&format!("has no {}", missing.join(", "))));
    };
    if name.is_empty() {
        return Err(fail("has an empty metadata.name"));
    }
    let group = resource::split_api_version(&api_version).0.to_string();
    let cluster = resource::is_cluster_scoped(&group, &kind)
        || cluster_crds.iter().any(|(g, k)| *g == group && *k == kind);
    let ns = if cluster {
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            return Err(Diagnostic::new(
                Location::file(&origin.file),
                format!(
                    "document {} rendered for {}/{}: {kind} {name} is cluster-scoped but sets metadata.namespace `{ns}`",
                    origin.document + 1,
                    origin.env,
                    origin.app
                ),
            )
            .help("remove metadata.namespace: cluster-scoped objects belong to no namespace"));
        }
        None
    } else {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(namespace)
            .to_string();
        object["metadata"]["namespace"] = Value::String(ns.clone());
        Some(ns)
    };
    Ok(Resource {
        id: ResourceId {
            group,
            kind,
            namespace: ns,
            name,
        },
        api_version,
        object,
        origin,
    })
}
