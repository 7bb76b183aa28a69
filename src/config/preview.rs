//! Preview templates in `kdeploy.yaml`: an environment with `from:` is not
//! deployed itself; each pull request gets a copy of the `from`
//! environment's releases under the name `<template>-pr-<n>`, in a
//! namespace of its own, with the template's values laid over.
//!
//! ```yaml
//! environments:
//!   preview:
//!     from: staging
//!     namespace: "pr-{pr}"
//!     values: {ingress: {host: "{app}-pr-{pr}.preview.example.com"}}
//! ```

use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Location};
use crate::yaml::Located;

use super::{EnvironmentSettings, Settings, is_dns_label, unknown_placeholders};

/// Placeholders of a template's `namespace`, `url` and `values`.
const PLACEHOLDERS: &[&str] = &["pr", "app", "env"];

/// The longest template name: `<template>-pr-<n>` names the preview's
/// environment and its record, and stays a DNS label for PR numbers up to
/// ten digits.
const MAX_TEMPLATE: usize = 63 - "-pr-".len() - 10;

/// What a preview changes in each release of its `from` environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The template's name in `environments:` (`preview`).
    pub template: String,
    /// The pull request.
    pub pr: u64,
    /// The preview's environment name: `<template>-pr-<n>`.
    pub env: String,
    /// The environment whose releases are copied.
    pub from: String,
    namespace: String,
    values: Map<String, Value>,
    url: Option<String>,
    /// Cluster-scoped objects are allowed.
    pub cluster_scoped: bool,
}

/// The templates of `settings`, by name.
pub fn templates(settings: &Settings) -> impl Iterator<Item = (&str, &EnvironmentSettings)> {
    settings
        .environments
        .iter()
        .filter(|(_, e)| e.from.is_some())
        .map(|(n, e)| (n.as_str(), e))
}

/// The environment name of pull request `pr`'s preview of `template`.
pub fn env_name(template: &str, pr: u64) -> String {
    format!("{template}-pr-{pr}")
}

impl Overlay {
    /// The overlay of `template` for pull request `pr`.
    ///
    /// # Errors
    /// When `template` is not a preview template of `settings`; the message
    /// names the templates there are.
    pub fn new(settings: &Settings, template: &str, pr: u64) -> Result<Overlay, Diagnostic> {
        let Some((from, e)) = settings
            .environments
            .get(template)
            .and_then(|e| Some((e.from.clone()?, e)))
        else {
            let known: Vec<&str> = templates(settings).map(|(n, _)| n).collect();
            return Err(Diagnostic::new(
                Location::file(super::SETTINGS_FILE),
                format!(
                    "`{template}` is not a preview template in {}",
                    super::SETTINGS_FILE
                ),
            )
            .help(if known.is_empty() {
                "declare one: `environments: {preview: {from: staging, namespace: \"pr-{pr}\"}}`"
                    .to_string()
            } else {
                format!("templates there: {}", known.join(", "))
            }));
        };
        Ok(Overlay {
            template: template.to_string(),
            pr,
            env: env_name(template, pr),
            from,
            namespace: e.namespace.clone().unwrap_or_default(),
            values: e.values.clone(),
            url: e.url.clone(),
            cluster_scoped: e.cluster_scoped,
        })
    }

    fn fill(&self, text: &str, app: &str) -> String {
        text.replace("{pr}", &self.pr.to_string())
            .replace("{app}", app)
            .replace("{env}", &self.env)
    }

    /// The namespace of `app`'s release in the preview.
    pub fn namespace_for(&self, app: &str) -> String {
        self.fill(&self.namespace, app)
    }

    /// The template's values for `app`, placeholders filled in.
    pub fn values_for(&self, app: &str) -> Map<String, Value> {
        fn walk(v: &mut Value, fill: &dyn Fn(&str) -> String) {
            match v {
                Value::String(s) => *s = fill(s),
                Value::Array(items) => items.iter_mut().for_each(|i| walk(i, fill)),
                Value::Object(map) => map.values_mut().for_each(|i| walk(i, fill)),
                _ => {}
            }
        }
        let mut values = Value::Object(self.values.clone());
        walk(&mut values, &|s| self.fill(s, app));
        match values {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The template's `url` for `app`, if it sets one.
    pub fn url_for(&self, app: &str) -> Option<String> {
        self.url.as_ref().map(|u| self.fill(u, app))
    }
}

/// Problems with the preview templates of parsed settings, at the line of
/// the offending key.
pub fn problems(settings: &Settings, path: &str, index: &[Located]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, e) in &settings.environments {
        let at = |key: &str| {
            let l = index
                .iter()
                .find(|l| l.path == ["environments", name.as_str(), key])
                .or_else(|| {
                    index
                        .iter()
                        .find(|l| l.path == ["environments", name.as_str()])
                });
            Location::at(path, l.map(|l| l.line), l.map(|l| l.column))
        };
        let Some(from) = &e.from else {
            let set: Vec<&str> = [
                ("namespace", e.namespace.is_some()),
                ("values", !e.values.is_empty()),
                ("url", e.url.is_some()),
                ("clusterScoped", e.cluster_scoped),
            ]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| *k)
            .collect();
            if let Some(first) = set.first() {
                out.push(
                    Diagnostic::new(
                        at(first),
                        format!(
                            "`environments.{name}`: {} only apply to preview templates",
                            set.join(", ")
                        ),
                    )
                    .help(format!("add `from: <environment>` to make `{name}` a preview template, or set the namespace of a deployed environment with the top-level `namespace` template or `namespace:` in config.yaml")),
                );
            }
            continue;
        };
        let key = format!("environments.{name}");
        if from == name
            || settings
                .environments
                .get(from)
                .is_some_and(|f| f.from.is_some())
        {
            out.push(
                Diagnostic::new(
                    at("from"),
                    format!("`{key}.from`: `{from}` is a preview template itself"),
                )
                .help("name an environment with releases in services/, e.g. `from: staging`"),
            );
        }
        if name.len() > MAX_TEMPLATE || !is_dns_label(name) {
            out.push(
                Diagnostic::new(
                    at("from"),
                    format!("preview template name `{name}` must be a DNS-1123 label of at most {MAX_TEMPLATE} characters"),
                )
                .help("previews are named `<template>-pr-<number>`, which must stay a valid name"),
            );
        }
        match &e.namespace {
            None => out.push(
                Diagnostic::new(at("from"), format!("`{key}` sets no `namespace`"))
                    .help("every preview needs a namespace of its own: `namespace: \"pr-{pr}\"` (placeholders {pr}, {app}, {env})"),
            ),
            Some(ns) if !ns.contains("{pr}") => out.push(
                Diagnostic::new(
                    at("namespace"),
                    format!("`{key}.namespace`: `{ns}` has no `{{pr}}`, so every pull request would share it"),
                )
                .help("include the pull request number, e.g. \"pr-{pr}\" or \"{app}-pr-{pr}\""),
            ),
            Some(_) => {}
        }
        let mut texts: Vec<(String, &str)> = Vec::new();
        if let Some(ns) = &e.namespace {
            texts.push(("namespace".into(), ns));
        }
        if let Some(u) = &e.url {
            texts.push(("url".into(), u));
        }
        fn strings<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
            match v {
                Value::String(s) => out.push((at, s)),
                Value::Array(items) => {
                    for (i, x) in items.iter().enumerate() {
                        strings(x, format!("{at}.{i}"), out);
                    }
                }
                Value::Object(m) => {
                    for (k, x) in m {
                        strings(x, format!("{at}.{k}"), out);
                    }
                }
                _ => {}
            }
        }
        for (k, v) in &e.values {
            strings(v, format!("values.{k}"), &mut texts);
        }
        for (field, text) in texts {
            for p in unknown_placeholders(text, PLACEHOLDERS) {
                let first = field.split('.').next().unwrap_or(&field);
                out.push(
                    Diagnostic::new(
                        at(first),
                        format!("`{key}.{field}`: unknown placeholder `{{{p}}}`"),
                    )
                    .help("use {pr} (the pull request number), {app} and {env} (the preview's environment name)"),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> (Settings, Vec<Diagnostic>) {
        super::super::parse_settings(text, "kdeploy.yaml")
    }

    #[test]
    fn fills_placeholders_per_app() {
        let (s, problems) = settings(
            "environments:\n  preview:\n    from: staging\n    namespace: \"{app}-pr-{pr}\"\n    url: \"https://{app}-pr-{pr}.example.com\"\n    values:\n      ingress: {host: \"{app}-{env}.example.com\", tags: [\"{pr}\"]}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let o = Overlay::new(&s, "preview", 42).unwrap();
        assert_eq!(o.env, "preview-pr-42");
        assert_eq!(o.namespace_for("api"), "api-pr-42");
        assert_eq!(
            o.url_for("api").as_deref(),
            Some("https://api-pr-42.example.com")
        );
        let v = Value::Object(o.values_for("api"));
        assert_eq!(v["ingress"]["host"], "api-preview-pr-42.example.com");
        assert_eq!(v["ingress"]["tags"][0], "42");
    }

    #[test]
    fn refuses_shared_namespaces_and_unknown_placeholders() {
        let (_, problems) = settings(
            "environments:\n  preview:\n    from: staging\n    namespace: shared\n    values: {host: \"{branch}.example.com\"}\n  staging:\n    namespace: x\n",
        );
        let text: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
        assert!(text.iter().any(|m| m.contains("has no `{pr}`")), "{text:?}");
        assert!(
            text.iter()
                .any(|m| m.contains("unknown placeholder `{branch}`")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.contains("only apply to preview templates")),
            "{text:?}"
        );
        // The namespace problem points at its line.
        let ns = problems
            .iter()
            .find(|p| p.message.contains("{pr}"))
            .unwrap();
        assert_eq!(ns.location.as_ref().and_then(|l| l.line), Some(4));
    }
}
