//! Values schemas: a chart's `values.schema.json` (JSON Schema 2020-12,
//! as Helm reads it; the built-in chart ships one) checks every release's
//! merged values before anything is rendered. A key the chart does not know
//! is an error, not a value silently dropped; each problem names the
//! user's file and line and, for a misspelt key, the nearest known one.

use serde_json::Value;

use crate::diag::{Diagnostic, Location};
use crate::yaml;

/// A compiled values schema.
pub struct ValuesSchema {
    validator: jsonschema::Validator,
    schema: Value,
    /// Where the schema came from (`charts/x/values.schema.json`).
    pub path: String,
}

impl std::fmt::Debug for ValuesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValuesSchema({})", self.path)
    }
}

impl ValuesSchema {
    /// Compiles `text`. Remote `$ref`s are not fetched (rendering never
    /// uses the network).
    ///
    /// # Errors
    /// Invalid JSON or an invalid schema, naming `path`.
    pub fn compile(text: &str, path: &str) -> Result<ValuesSchema, Diagnostic> {
        let schema: Value = serde_json::from_str(text).map_err(|e| {
            Diagnostic::new(
                Location::at(path, Some(e.line()), Some(e.column())),
                format!("invalid JSON: {e}"),
            )
        })?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| {
            Diagnostic::new(Location::file(path), format!("invalid values schema: {e}")).help(
                "write JSON Schema (2020-12 or draft 7, as Helm takes); remote $ref is not fetched",
            )
        })?;
        Ok(ValuesSchema {
            validator,
            schema,
            path: path.to_string(),
        })
    }

    /// The problems of `values` (merged), located in `inputs` (the env and
    /// app config.yaml: `(path, text)`, most specific first), else in
    /// `defaults_path` (the chart's values.yaml).
    pub fn check(
        &self,
        values: &Value,
        inputs: &[(String, String)],
        defaults_path: &str,
        chart: &str,
    ) -> Vec<Diagnostic> {
        // Most releases are valid: index the user's files only to place
        // problems, never on the way through.
        if self.validator.is_valid(values) {
            return Vec::new();
        }
        let mut found = Vec::new();
        let indexes: Vec<(&str, Vec<yaml::Located>)> = inputs
            .iter()
            .filter(|(p, _)| p.ends_with(".yaml") || p.ends_with(".yml"))
            .filter_map(|(p, t)| yaml::index(t).ok().map(|i| (p.as_str(), i)))
            .collect();
        // A wrong value points at the value; an unknown key at the key.
        let locate_as = |segments: &[String], value: bool| -> Location {
            for (path, index) in &indexes {
                let mut hits = index.iter().filter(|l| l.path == segments);
                let first = hits.next();
                let pick = if value {
                    first
                        .filter(|l| l.value.is_some())
                        .or_else(|| hits.find(|l| l.value.is_some()))
                        .or(first)
                } else {
                    first
                };
                if let Some(l) = pick {
                    return Location::at(*path, Some(l.line), Some(l.column));
                }
            }
            // Not set by the service: the parent key, else the defaults.
            for n in (1..segments.len()).rev() {
                for (path, index) in &indexes {
                    if let Some(l) = index.iter().find(|l| l.path == segments[..n]) {
                        return Location::at(*path, Some(l.line), Some(l.column));
                    }
                }
            }
            Location::file(defaults_path)
        };
        let locate = |segments: &[String]| locate_as(segments, false);
        for error in self.validator.iter_errors(values) {
            let segments: Vec<String> = error
                .instance_path()
                .as_str()
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect();
            let dotted = |segs: &[String]| {
                if segs.is_empty() {
                    "(top level)".to_string()
                } else {
                    segs.join(".")
                }
            };
            match error.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let known = self.known_keys(&segments);
                    for key in unexpected {
                        let mut at = segments.clone();
                        at.push(key.clone());
                        let mut d = Diagnostic::new(
                            locate(&at),
                            format!("`{}` is not a value of chart `{chart}`", dotted(&at)),
                        );
                        d = match nearest(key, &known) {
                            Some(k) => d.help(format!(
                                "did you mean `{}`? (`kdeploy schema values` prints the chart's values)",
                                dotted(&[segments.clone(), vec![k.to_string()]].concat())
                            )),
                            None if known.is_empty() => d,
                            None => d.help(format!(
                                "known here: {}",
                                known
                                    .iter()
                                    .map(|k| format!("`{k}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        };
                        found.push(d);
                    }
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default().to_string();
                    let mut at = segments.clone();
                    at.push(name);
                    found.push(
                        Diagnostic::new(
                            locate(&segments),
                            format!("`{}` is required by chart `{chart}`", dotted(&at)),
                        )
                        .help("set it in services/<app>/config.yaml (all environments) or in the environment's config.yaml"),
                    );
                }
                jsonschema::error::ValidationErrorKind::Pattern { pattern }
                    if pattern.contains("[KMGTPE]i") =>
                {
                    found.push(
                        Diagnostic::new(
                            locate_as(&segments, true),
                            format!(
                                "`{}`: {} is not a quantity",
                                dotted(&segments),
                                error.instance()
                            ),
                        )
                        .help("write a Kubernetes quantity: 100m, 0.5, 128Mi, 1Gi"),
                    );
                }
                _ => {
                    let message = error.to_string();
                    found.push(
                        Diagnostic::new(
                            locate_as(&segments, true),
                            format!("`{}`: {message}", dotted(&segments)),
                        )
                        .help(format!(
                            "the values schema of chart `{chart}` ({}) says so",
                            self.path
                        )),
                    );
                }
            }
        }
        found
    }

    /// Keys the schema names under `segments` (`properties`, following
    /// local `$ref`s).
    fn known_keys(&self, segments: &[String]) -> Vec<String> {
        let mut node = &self.schema;
        for seg in segments {
            node = self.resolve(node);
            match node.get("properties").and_then(|p| p.get(seg)) {
                Some(next) => node = next,
                None => return Vec::new(),
            }
        }
        self.resolve(node)
            .get("properties")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        let mut node = node;
        for _ in 0..16 {
            match node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
            {
                Some(pointer) => match self.schema.pointer(pointer) {
                    Some(target) => node = target,
                    None => break,
                },
                None => break,
            }
        }
        node
    }

    /// The schema as JSON (for `kdeploy schema values`).
    pub fn text(&self) -> String {
        serde_json::to_string_pretty(&self.schema).unwrap_or_default()
    }
}

/// The known key closest to `key`, when close enough to be a typo.
fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = key.to_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key() {
        let known: Vec<String> = ["replicas", "port", "servicePort", "image"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(nearest("replcas", &known), Some("replicas"));
        assert_eq!(nearest("ServicePort", &known), Some("servicePort"));
        assert_eq!(nearest("scalability", &known), None);
    }
}
