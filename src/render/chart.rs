//! A handlebars chart: `Chart.yaml`, `values.yaml` (defaults) and
//! `templates/*.yaml`, compiled once and rendered for many releases.
//!
//! Files in `templates/` whose name starts with `_` are partials (`{{> name}}`
//! with the name minus `_` and extension); the others are rendered in name
//! order. HTML escaping is off and strict mode on: a missing value is an error.

use std::collections::BTreeMap;

use handlebars::Handlebars;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::source::{Node, Reader};
use crate::yaml;

use super::helpers;

/// The default chart, built into the binary so a config repo with only
/// `services/` works. A repo's own `charts/service` takes precedence.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "Chart.yaml",
        include_str!("../../charts/service/Chart.yaml"),
    ),
    (
        "values.yaml",
        include_str!("../../charts/service/values.yaml"),
    ),
    (
        "values.schema.json",
        include_str!("../../charts/service/values.schema.json"),
    ),
    (
        "templates/_labels.yaml",
        include_str!("../../charts/service/templates/_labels.yaml"),
    ),
    (
        "templates/_selector.yaml",
        include_str!("../../charts/service/templates/_selector.yaml"),
    ),
    (
        "templates/configmap.yaml",
        include_str!("../../charts/service/templates/configmap.yaml"),
    ),
    (
        "templates/deployment.yaml",
        include_str!("../../charts/service/templates/deployment.yaml"),
    ),
    (
        "templates/hpa.yaml",
        include_str!("../../charts/service/templates/hpa.yaml"),
    ),
    (
        "templates/ingress.yaml",
        include_str!("../../charts/service/templates/ingress.yaml"),
    ),
    (
        "templates/namespace.yaml",
        include_str!("../../charts/service/templates/namespace.yaml"),
    ),
    (
        "templates/pdb.yaml",
        include_str!("../../charts/service/templates/pdb.yaml"),
    ),
    (
        "templates/secret.yaml",
        include_str!("../../charts/service/templates/secret.yaml"),
    ),
    (
        "templates/service.yaml",
        include_str!("../../charts/service/templates/service.yaml"),
    ),
    (
        "templates/serviceaccount.yaml",
        include_str!("../../charts/service/templates/serviceaccount.yaml"),
    ),
    (
        "templates/servicemonitor.yaml",
        include_str!("../../charts/service/templates/servicemonitor.yaml"),
    ),
];

/// Name of the built-in chart.
pub const BUILTIN_NAME: &str = "service";

#[derive(Debug, Deserialize)]
struct ChartMeta {
    name: Option<String>,
    version: Option<serde_json::Value>,
}

/// A compiled chart.
pub struct Chart {
    /// The chart's name (its directory name).
    pub name: String,
    /// `version` from Chart.yaml.
    pub version: String,
    /// Directory, relative to the config repo (`<builtin>` for the built-in chart).
    pub dir: String,
    /// Identity of the chart's content: the git tree id, or a hash of the
    /// built-in files; `None` in the work tree.
    pub key: Option<String>,
    /// `values.yaml`.
    pub defaults: Map<String, Value>,
    /// `values.schema.json`, when the chart has one (the built-in has).
    pub schema: Option<super::schema::ValuesSchema>,
    registry: Handlebars<'static>,
    templates: Vec<String>,
    /// Per template (same order): a digest of its path, its text and every
    /// partial's, which with the context decides its output (helpers are
    /// pure). Lets a plan reuse output across revisions ([`super::memo`]).
    fingerprints: Vec<[u8; 32]>,
    /// Partial name -> file, so errors inside partials name the file.
    partials: BTreeMap<String, String>,
}

impl std::fmt::Debug for Chart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chart")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("templates", &self.templates)
            .finish_non_exhaustive()
    }
}

impl Chart {
    /// Reads and compiles the chart in directory `node`.
    ///
    /// # Errors
    /// [`LoadError::Source`] when files cannot be read,
    /// [`LoadError::Invalid`] for problems in the chart.
    pub fn load(reader: &Reader<'_>, node: &Node) -> Result<Chart, LoadError> {
        let mut files = Vec::new();
        for entry in reader.list(node)? {
            if entry.is_dir && entry.name() == "templates" {
                for t in reader.list(&entry)? {
                    if !t.is_dir {
                        files.push((t.path.clone(), reader.read_text(&t)?));
                    }
                }
            } else if !entry.is_dir
                && matches!(
                    entry.name(),
                    "Chart.yaml" | "values.yaml" | "values.schema.json"
                )
            {
                files.push((entry.path.clone(), reader.read_text(&entry)?));
            }
        }
        let key = node.id.map(|id| id.to_string());
        Chart::from_files(node.name(), &node.path, key, files).map_err(LoadError::Invalid)
    }

    /// The built-in `service` chart.
    ///
    /// # Errors
    /// Never in a released binary (a test compiles it).
    pub fn builtin() -> Result<Chart, Diagnostics> {
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for (path, text) in BUILTIN {
            sha2::Digest::update(&mut hasher, path.as_bytes());
            sha2::Digest::update(&mut hasher, text.as_bytes());
        }
        let digest = sha2::Digest::finalize(hasher);
        let key = format!(
            "builtin:{}",
            digest
                .iter()
                .take(10)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let files = BUILTIN
            .iter()
            .map(|(p, t)| (format!("<builtin>/{p}"), t.to_string()))
            .collect();
        Chart::from_files(BUILTIN_NAME, "<builtin>", Some(key), files)
    }

    /// Compiles a chart from `(path, text)` pairs; paths are relative to
    /// the config repo and start with `dir`.
    ///
    /// # Errors
    /// Every problem in `Chart.yaml`, `values.yaml` and the templates.
    pub fn from_files(
        name: &str,
        dir: &str,
        key: Option<String>,
        files: Vec<(String, String)>,
    ) -> Result<Chart, Diagnostics> {
        let mut problems = Diagnostics::default();
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        helpers::register(&mut registry);

        let rel = |p: &str| {
            p.strip_prefix(dir)
                .unwrap_or(p)
                .trim_start_matches('/')
                .to_string()
        };
        let mut version = None;
        let mut defaults = Map::new();
        let mut schema = None;
        let mut templates = Vec::new();
        let mut partials = BTreeMap::new();
        let mut saw_meta = false;
        for (path, text) in &files {
            let local = rel(path);
            match local.as_str() {
                "Chart.yaml" => {
                    saw_meta = true;
                    match yaml::parse_as::<ChartMeta>(text) {
                        Ok(meta) => {
                            if let Some(n) = meta.name.filter(|n| n != name) {
                                problems.push(Diagnostic::new(
                                    Location::file(path),
                                    format!("chart name `{n}` differs from its directory `{name}`"),
                                ).help("rename the directory or fix `name:`; services select charts by directory name"));
                            }
                            version = meta.version.map(|v| match v {
                                Value::String(s) => s,
                                other => other.to_string(),
                            });
                        }
                        Err(e) => problems.push(e.diagnostic(path, "invalid Chart.yaml")),
                    }
                }
                "values.schema.json" => match super::schema::ValuesSchema::compile(text, path) {
                    Ok(compiled) => schema = Some(compiled),
                    Err(d) => problems.push(d),
                },
                "values.yaml" => match yaml::parse(text) {
                    Ok(Value::Object(m)) => defaults = m,
                    Ok(Value::Null) => {}
                    Ok(_) => problems.push(Diagnostic::new(
                        Location::file(path),
                        "values.yaml must be a map of default values",
                    )),
                    Err(e) => problems.push(e.diagnostic(path, "invalid YAML")),
                },
                t if t.starts_with("templates/") => {
                    let file = &t["templates/".len()..];
                    let registered = if let Some(partial) = file.strip_prefix('_') {
                        let pname = partial.split('.').next().unwrap_or(partial);
                        partials.insert(pname.to_string(), path.clone());
                        registry.register_partial(pname, text.as_str())
                    } else if file.ends_with(".yaml") || file.ends_with(".yml") {
                        templates.push(path.clone());
                        registry.register_template_string(path, text.as_str())
                    } else {
                        Ok(())
                    };
                    if let Err(e) = registered {
                        let (line, col) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
                        problems.push(
                            Diagnostic::new(
                                Location::at(path, line, col),
                                format!("template syntax error: {}", e.reason()),
                            )
                            .help("check that every {{#block}} has its {{/block}} and braces are balanced"),
                        );
                    }
                }
                _ => {}
            }
        }
        if !saw_meta {
            problems.push(
                Diagnostic::new(
                    Location::file(format!("{dir}/Chart.yaml")),
                    "chart has no Chart.yaml",
                )
                .help("add a Chart.yaml with `name:` and `version:`"),
            );
        }
        templates.sort();
        let fingerprints = fingerprints(&templates, &partials, &files);
        registry.register_helper("each", Box::new(super::budget::CountedEach));
        for (file, text) in &files {
            if let Some(d) = partial_fan_out(file, text, &files, &rel) {
                problems.push(d);
            }
        }
        let nesting = block_nesting(&files, &rel, &mut problems);
        registry.register_helper(
            "include",
            Box::new(helpers::Include {
                partials: partials.clone(),
                nesting,
            }),
        );
        problems.into_result(Chart {
            name: name.to_string(),
            version: version.unwrap_or_else(|| "0.0.0".into()),
            dir: dir.to_string(),
            key,
            defaults,
            schema,
            registry,
            templates,
            fingerprints,
            partials,
        })
    }

    /// Template paths in render order.
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// Template paths in render order, each with its fingerprint.
    pub fn templates_with_fingerprints(&self) -> impl Iterator<Item = (&String, &[u8; 32])> {
        self.templates.iter().zip(&self.fingerprints)
    }

    /// Renders each partial that templates rendered with `ctx` include
    /// once, while the guard lives ([`helpers::sharing_includes`]).
    pub fn sharing_includes<'a>(
        &self,
        ctx: &'a handlebars::Context,
    ) -> helpers::SharedIncludes<'a> {
        helpers::sharing_includes(ctx, &self.registry)
    }

    /// Renders one template with `ctx`.
    ///
    /// # Errors
    /// A diagnostic naming the template, line and the missing value.
    pub fn render_template(
        &self,
        template: &str,
        ctx: &handlebars::Context,
    ) -> Result<String, Diagnostic> {
        let mut out = super::budget::BoundedOutput::default();
        let rendered = self
            .registry
            .render_with_context_to_write(template, ctx, &mut out);
        if rendered.is_ok() {
            return out.finish().map_err(|exceeded| {
                let (message, help) = exceeded.message();
                Diagnostic::new(Location::file(template), message).help(help)
            });
        }
        rendered.map(|()| String::new()).map_err(|e| {
            if let Some(exceeded) = super::budget::exceeded() {
                let (message, help) = exceeded.message();
                return Diagnostic::new(Location::at(template, e.line_no, e.column_no), message).help(help);
            }
            let (message, help) = match e.reason() {
                handlebars::RenderErrorReason::MissingVariable(path) => (
                    format!(
                        "missing value `{}`",
                        path.as_deref().unwrap_or("?")
                    ),
                    Some("set it in the service's config.yaml, give it a default in the chart's values.yaml, or wrap it in {{default …}} / {{#if …}}"),
                ),
                other => (other.to_string(), None),
            };
            // Errors inside a partial carry the partial's name.
            let file = match &e.template_name {
                Some(t) => self.partials.get(t).unwrap_or(t).clone(),
                None => template.to_string(),
            };
            let d = Diagnostic::new(Location::at(file, e.line_no, e.column_no), message);
            match help {
                Some(h) => d.help(h),
                None => d,
            }
        })
    }
}

/// The fingerprint of each template: sha256 of its path and text, then of
/// every partial's name and text (any template may include any partial).
fn fingerprints(
    templates: &[String],
    partials: &BTreeMap<String, String>,
    files: &[(String, String)],
) -> Vec<[u8; 32]> {
    use sha2::Digest as _;
    let text_of = |path: &str| {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map_or("", |(_, t)| t.as_str())
    };
    let mut shared = sha2::Sha256::new();
    for (name, path) in partials {
        for part in [name.as_str(), text_of(path)] {
            shared.update((part.len() as u64).to_le_bytes());
            shared.update(part.as_bytes());
        }
    }
    let shared = shared.finalize();
    templates
        .iter()
        .map(|path| {
            let mut h = sha2::Sha256::new();
            for part in [path.as_str(), text_of(path)] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            h.update(shared);
            h.finalize().into()
        })
        .collect()
}

/// Partials named by `{{> name}}` / `{{#> name}}` in a template's text.
fn partial_calls(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("{{") {
        rest = &rest[pos + 2..];
        let t = rest.trim_start_matches(['~', '#']).trim_start();
        if let Some(after) = t.strip_prefix('>') {
            let name = after
                .trim_start()
                .trim_start_matches(['"', '\''])
                .split(|c: char| c.is_whitespace() || matches!(c, '}' | '"' | '\'' | '~'))
                .next()
                .unwrap_or("");
            out.push(name);
        }
    }
    out
}

/// How many partial renders one render of each template costs at most:
/// handlebars expands `{{> name}}` with no bound of its own (a partial that
/// includes itself overflows the stack; 27 partials that each include the
/// next twice run for minutes). Counted from the text before any render.
fn partial_fan_out(
    file: &str,
    text: &str,
    files: &[(String, String)],
    rel: &dyn Fn(&str) -> String,
) -> Option<Diagnostic> {
    const MAX_RENDERS: u64 = 10_000;
    let partial_text = |name: &str| {
        files.iter().find_map(|(p, t)| {
            let local = rel(p);
            let f = local.strip_prefix("templates/_")?;
            (f.split('.').next() == Some(name)).then_some(t.as_str())
        })
    };
    fn cost<'a>(
        text: &'a str,
        partial_text: &dyn Fn(&str) -> Option<&'a str>,
        stack: &mut Vec<&'a str>,
        memo: &mut std::collections::HashMap<&'a str, u64>,
    ) -> Result<u64, String> {
        let mut total = 1u64;
        for name in partial_calls(text) {
            if stack.contains(&name) {
                return Err(format!(
                    "partial `{name}` includes itself ({} -> {name})",
                    stack.join(" -> ")
                ));
            }
            let c = match memo.get(name) {
                Some(c) => *c,
                None => {
                    let Some(child) = partial_text(name) else {
                        continue;
                    };
                    stack.push(name);
                    let c = cost(child, partial_text, stack, memo)?;
                    stack.pop();
                    memo.insert(name, c);
                    c
                }
            };
            total = total.saturating_add(c);
        }
        Ok(total)
    }
    if rel(file).starts_with("templates/_") {
        return None; // partials are counted where a template uses them
    }
    let mut stack = Vec::new();
    let (message, help) = match cost(text, &partial_text, &mut stack, &mut Default::default()) {
        Ok(n) if n <= MAX_RENDERS => return None,
        Ok(n) => (
            format!("one render of this template expands {n} partials, more than {MAX_RENDERS}"),
            "partials that include other partials several times multiply; flatten them",
        ),
        Err(cycle) => (
            cycle,
            "a partial may not include itself, directly or through others",
        ),
    };
    Some(Diagnostic::new(Location::file(file), message).help(help))
}

/// Each partial's block nesting with its `{{> partial}}` expansions (what
/// an `include` of it adds); a template or partial nesting deeper than
/// [`super::nesting::MAX_BLOCKS`] is a problem at its deepest line.
fn block_nesting(
    files: &[(String, String)],
    rel: &dyn Fn(&str) -> String,
    problems: &mut Diagnostics,
) -> BTreeMap<String, usize> {
    use super::nesting;
    let partial_text = |name: &str| {
        files.iter().find_map(|(p, t)| {
            let local = rel(p);
            let f = local.strip_prefix("templates/_")?;
            (f.split('.').next() == Some(name)).then_some(t.as_str())
        })
    };
    let mut memo = std::collections::HashMap::new();
    let mut out = BTreeMap::new();
    for (file, text) in files {
        let local = rel(file);
        let Some(name) = local.strip_prefix("templates/") else {
            continue;
        };
        let depth = nesting::expanded(text, &partial_text, &mut memo, &mut Vec::new());
        if depth > nesting::MAX_BLOCKS {
            let line = nesting::scan(text).line;
            problems.push(
                Diagnostic::new(
                    Location::at(file, Some(line.max(1)), None),
                    format!(
                        "blocks nest {depth} deep here (partials expanded), more than {}",
                        nesting::MAX_BLOCKS
                    ),
                )
                .help(
                    "flatten the template: nesting that deep is a stack overflow waiting to happen",
                ),
            );
        }
        if let Some(partial) = name.strip_prefix('_') {
            let pname = partial.split('.').next().unwrap_or(partial);
            out.insert(pname.to_string(), depth);
        }
    }
    out
}

/// The error returned by [`Chart::load`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the chart's files failed.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// The chart has problems.
    #[error("{0}")]
    Invalid(Diagnostics),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_chart_compiles() {
        let chart = Chart::builtin().unwrap();
        assert!(
            chart
                .templates()
                .iter()
                .any(|t| t.ends_with("deployment.yaml"))
        );
        assert!(chart.defaults.contains_key("replicas"));
    }

    #[test]
    fn include_gives_the_same_text_as_a_standalone_partial() {
        let partial = "a: {{values.a}}\n{{#if values.b}}\nb: {{values.b}}\n{{/if}}\n";
        let files = vec![
            ("c/Chart.yaml".into(), "name: c\nversion: 1.0.0\n".into()),
            ("c/templates/_p.yaml".into(), partial.into()),
            ("c/templates/x.yaml".into(), "m:\n  {{> p}}\nn: 1\n".into()),
            (
                "c/templates/y.yaml".into(),
                "m:{{nindent 2 (include \"p\")}}\nn: 1\n".into(),
            ),
        ];
        let chart = Chart::from_files("c", "c", None, files).unwrap();
        for values in [
            serde_json::json!({"a": 1, "b": "two"}),
            serde_json::json!({"a": "x"}),
        ] {
            let ctx = handlebars::Context::from(serde_json::json!({ "values": values }));
            let x = chart.render_template("c/templates/x.yaml", &ctx).unwrap();
            let y = chart.render_template("c/templates/y.yaml", &ctx).unwrap();
            assert_eq!(x, y);
        }
        let ctx = handlebars::Context::from(serde_json::json!({"values": {"a": 1, "b": 2}}));
        assert_eq!(
            chart.render_template("c/templates/y.yaml", &ctx).unwrap(),
            "m:\n  a: 1\n  b: 2\nn: 1\n"
        );
    }

    #[test]
    fn shared_includes_belong_to_the_context_they_rendered_with() {
        let files = vec![
            ("c/Chart.yaml".into(), "name: c\nversion: 1.0.0\n".into()),
            ("c/templates/_p.yaml".into(), "a: {{values.a}}\n".into()),
            (
                "c/templates/y.yaml".into(),
                "m:{{nindent 2 (include \"p\")}}\n".into(),
            ),
        ];
        let chart = Chart::from_files("c", "c", None, files).unwrap();
        let one = handlebars::Context::from(serde_json::json!({"values": {"a": 1}}));
        let two = handlebars::Context::from(serde_json::json!({"values": {"a": 2}}));
        let shared = chart.sharing_includes(&one);
        let texts =
            [&one, &two, &one].map(|ctx| chart.render_template("c/templates/y.yaml", ctx).unwrap());
        drop(shared);
        assert_eq!(texts, ["m:\n  a: 1\n", "m:\n  a: 2\n", "m:\n  a: 1\n"]);
    }

    #[test]
    fn an_include_that_runs_out_of_budget_leaves_no_depth_behind() {
        // It used to count itself one level deep before drawing its step:
        // after 32 releases ran out at an include on one thread, every
        // include there failed as nested too deep.
        let files = vec![
            ("c/Chart.yaml".into(), "name: c\nversion: 1.0.0\n".into()),
            ("c/templates/_p.yaml".into(), "a: 1\n".into()),
            ("c/templates/y.yaml".into(), "{{include \"p\"}}".into()),
        ];
        let chart = Chart::from_files("c", "c", None, files).unwrap();
        let ctx = handlebars::Context::from(serde_json::json!({}));
        let spent = crate::config::Limits {
            template_steps: 0,
            ..crate::config::Limits::default()
        };
        for _ in 0..40 {
            let (result, exceeded) = super::super::budget::with_budget(&spent, || {
                chart.render_template("c/templates/y.yaml", &ctx)
            });
            assert!(result.is_err() && exceeded.is_some());
        }
        let (result, _) =
            super::super::budget::with_budget(&crate::config::Limits::default(), || {
                chart.render_template("c/templates/y.yaml", &ctx)
            });
        assert_eq!(result.unwrap(), "a: 1\n");
    }

    #[test]
    fn syntax_error_names_template_and_line() {
        let files = vec![
            ("c/Chart.yaml".into(), "name: c\nversion: 1.0.0\n".into()),
            ("c/templates/a.yaml".into(), "a: 1\nb: {{#if x}}\n".into()),
        ];
        let err = Chart::from_files("c", "c", None, files).unwrap_err();
        let loc = err.0[0].location.clone().unwrap();
        assert_eq!(loc.path, "c/templates/a.yaml");
        assert!(loc.line.is_some());
    }
}
