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
    /// template, set by the layout, unless the entry names one).
    pub namespace: String,
    /// The entry's own namespace, if it names one.
    pub fixed_namespace: Option<String>,
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
            let entry = pattern.entry();
            let pattern = entry.path.as_str();
            let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
            let mut found = Vec::new();
            let walk_with = Walk {
                reader,
                exclude: &entry.exclude,
                // A placeholder only takes overlays: `{env}` beside `base/`.
                needs: (kind == Kind::Kustomize).then_some(KUSTOMIZATION_FILES),
            };
            walk_with.walk(root.clone(), &parts, BTreeMap::new(), &mut found)?;
            if let Some(app) = &entry.app
                && pattern.contains("{app}")
            {
                problems.push(
                    Diagnostic::new(Location::file(crate::config::SETTINGS_FILE), format!("source `{pattern}` has both {{app}} and `app: {app}`"))
                        .help("keep one: the placeholder names each directory's app, `app` names the one app of a pattern without it"),
                );
                continue;
            }
            for (vars, dir) in found {
                let app = entry
                    .app
                    .clone()
                    .or_else(|| vars.get("app").cloned())
                    .unwrap_or_else(|| dir.name().to_string());
                let envs: Vec<String> = match vars.get("env") {
                    Some(env)
                        if entry.environments.is_empty() || entry.environments.contains(env) =>
                    {
                        vec![env.clone()]
                    }
                    Some(_) => Vec::new(),
                    None if entry.environments.is_empty() => vec!["default".into()],
                    None => entry.environments.clone(),
                };
                for env in envs {
                    if let Some(ns) = entry.namespace.as_deref().filter(|n| !is_dns_label(n)) {
                        problems.push(
                            Diagnostic::new(
                                Location::file(crate::config::SETTINGS_FILE),
                                format!(
                                    "source `{pattern}`: `namespace: {ns}` is not a DNS-1123 label"
                                ),
                            )
                            .help("use lowercase letters, digits and '-'"),
                        );
                        break;
                    }
                    if !is_dns_label(&app) || !is_dns_label(&env) {
                        problems.push(
                            Diagnostic::new(Location::file(&dir.path), format!("`{env}`/`{app}` from pattern `{pattern}` is not a pair of DNS-1123 labels"))
                                .help("rename the directory, prefix it with '_' to have it ignored, or list it under the source's `exclude`"),
                        );
                        continue;
                    }
                    if filter.matches(&env, &app) {
                        out.push(SourceSpec {
                            kind,
                            namespace: app.clone(),
                            fixed_namespace: entry.namespace.clone(),
                            env,
                            app: app.clone(),
                            dir: dir.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The files that make a directory a Kustomize overlay.
const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// How a pattern walks the tree.
struct Walk<'r, 'a> {
    reader: &'r Reader<'a>,
    /// Names a placeholder never takes.
    exclude: &'r [String],
    /// A directory a placeholder takes must hold one of these files.
    needs: Option<&'static [&'static str]>,
}

impl Walk<'_, '_> {
    fn walk(
        &self,
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
            for child in self.reader.list(&node)?.into_iter().filter(|c| c.is_dir) {
                let name = child.name().to_string();
                if name.starts_with('_') || name.starts_with('.') || self.exclude.contains(&name) {
                    continue;
                }
                if rest.is_empty()
                    && let Some(files) = self.needs
                    && !self.holds_any(&child, files)?
                {
                    continue;
                }
                let mut v = vars.clone();
                v.insert(var.to_string(), name);
                self.walk(child, rest, v, out)?;
            }
        } else if let Some(child) = self.reader.child(&node, first)?.filter(|c| c.is_dir) {
            self.walk(child, rest, vars, out)?;
        }
        Ok(())
    }

    fn holds_any(&self, dir: &Node, files: &[&str]) -> Result<bool, source::Error> {
        for f in files {
            if self.reader.child(dir, f)?.is_some_and(|n| !n.is_dir) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
