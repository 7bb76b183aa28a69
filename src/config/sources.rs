//! Releases of other sources, found by the patterns of `sources:` in
//! kdeploy.yaml (`manifests/{env}/{app}`): the config model lists them
//! beside `services/`; `render::sources` renders them.

use std::collections::BTreeMap;

use crate::config::{Filter, SourcesSettings, is_dns_label};
use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::source::{self, Node, Reader};

/// Which kind of source a release comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain manifests.
    Raw,
    /// A Kustomize overlay.
    Kustomize,
}

/// One release of a non-chart source.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Raw or Kustomize.
    pub kind: Kind,
    /// Environment.
    pub env: String,
    /// App.
    pub app: String,
    /// The directory.
    pub dir: Node,
    /// The namespace of objects that name none (kdeploy.yaml's `namespace`
    /// template, set by the layout).
    pub namespace: String,
}

/// Finds the releases matching the patterns.
///
/// # Errors
/// Read failures; bad names are diagnostics.
pub fn find(
    reader: &Reader<'_>,
    root: &Node,
    settings: &SourcesSettings,
    filter: &Filter,
    problems: &mut Diagnostics,
) -> Result<Vec<SourceSpec>, source::Error> {
    let mut out = Vec::new();
    for (kind, patterns) in [
        (Kind::Raw, &settings.raw),
        (Kind::Kustomize, &settings.kustomize),
    ] {
        for pattern in patterns {
            let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
            let mut found = Vec::new();
            walk(reader, root.clone(), &parts, BTreeMap::new(), &mut found)?;
            for (vars, dir) in found {
                let app = vars
                    .get("app")
                    .cloned()
                    .unwrap_or_else(|| dir.name().to_string());
                let env = vars.get("env").cloned().unwrap_or_else(|| "default".into());
                if !is_dns_label(&app) || !is_dns_label(&env) {
                    problems.push(
                        Diagnostic::new(Location::file(&dir.path), format!("`{env}`/`{app}` from pattern `{pattern}` is not a pair of DNS-1123 labels"))
                            .help("rename the directory, or prefix it with '_' to have it ignored"),
                    );
                    continue;
                }
                if filter.matches(&env, &app) {
                    out.push(SourceSpec {
                        kind,
                        namespace: app.clone(),
                        env,
                        app,
                        dir,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn walk(
    reader: &Reader<'_>,
    node: Node,
    parts: &[&str],
    vars: BTreeMap<String, String>,
    out: &mut Vec<(BTreeMap<String, String>, Node)>,
) -> Result<(), source::Error> {
    let Some((first, rest)) = parts.split_first() else {
        out.push((vars, node));
        return Ok(());
    };
    if let Some(var) = first.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
        for child in reader.list(&node)?.into_iter().filter(|c| c.is_dir) {
            let name = child.name().to_string();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let mut v = vars.clone();
            v.insert(var.to_string(), name);
            walk(reader, child, rest, v, out)?;
        }
    } else if let Some(child) = reader.child(&node, first)?.filter(|c| c.is_dir) {
        walk(reader, child, rest, vars, out)?;
    }
    Ok(())
}
