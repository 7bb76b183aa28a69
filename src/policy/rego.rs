//! The organisation's policies in Rego, conftest-style: every package of
//! the policy directory may define `deny`, `violation` (both fail the plan)
//! and `warn` rules over `input`, one rendered object; each message (a
//! string, or an object with `msg`) becomes a finding of that object.
//! Evaluated in process by regorus, with a time limit per evaluation.
//!
//! Where the policies come from is runner policy ([`Source`]): a directory
//! of the config repo is read from the revision that supplies runner policy
//! (a pull request's base), never from the pull request's own head, so a
//! pull request cannot weaken or delete the checks its plan runs; any other
//! directory is the runner's own (a checkout of an organisation's policy
//! repository).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the Rego files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory of the config repo, relative to its root, read from the
    /// revision that supplies runner policy.
    Repo(String),
    /// A directory on the runner, outside the config repo.
    Disk(PathBuf),
}

impl Source {
    /// `dir` as the runner names it: a relative path is the config repo's
    /// (`policy/`), an absolute one the runner's.
    pub fn parse(dir: &str) -> Source {
        let path = Path::new(dir);
        if path.is_absolute() {
            Source::Disk(path.to_path_buf())
        } else {
            Source::Repo(
                dir.trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
            )
        }
    }
}

/// A problem with the policies themselves.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or a file could not be read.
    #[error("policies: cannot read {path}: {detail}")]
    Read {
        /// What was read.
        path: String,
        /// Why it failed.
        detail: String,
    },
    /// A file is not valid Rego.
    #[error("policies: {file} is not valid Rego:{detail}")]
    Parse {
        /// The file.
        file: String,
        /// regorus's message, with the line.
        detail: String,
    },
    /// A rule failed while evaluating an object.
    #[error("policies: evaluating {rule} on {object}: {detail}")]
    Eval {
        /// `data.main.deny`.
        rule: String,
        /// The object's id.
        object: String,
        /// regorus's message.
        detail: String,
    },
}

/// One message of a rule about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `main.deny`.
    pub rule: String,
    /// `deny` or `violation`: the plan fails.
    pub fails: bool,
    /// The rule's message.
    pub message: String,
}

/// Policies loaded and ready to evaluate.
#[derive(Clone)]
pub struct Policies {
    engine: regorus::Engine,
    /// (`data.main.deny`, `main.deny`, fails) of each rule found.
    rules: Vec<(String, String, bool)>,
    /// Where they came from, for messages: `policy/ (at the base abc123)`.
    pub label: String,
    /// How many files.
    pub files: usize,
}

/// The rule names conftest reads, and whether they fail.
const RULES: &[(&str, bool)] = &[("deny", true), ("violation", true), ("warn", false)];

impl Policies {
    /// Loads `(path, text)` Rego files; `label` names where they came from.
    ///
    /// # Errors
    /// A file that is not valid Rego, naming it and the line.
    pub fn from_files(files: Vec<(String, String)>, label: String) -> Result<Policies, Error> {
        let mut engine = regorus::Engine::new();
        // A policy that loops must not hold the plan: 2 s per evaluation.
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: std::time::Duration::from_secs(2),
            check_interval: std::num::NonZeroU32::new(64).unwrap_or(std::num::NonZeroU32::MIN),
        });
        let mut packages = std::collections::BTreeSet::new();
        let count = files.len();
        for (path, text) in files {
            let package = engine
                .add_policy(path.clone(), text)
                .map_err(|e| Error::Parse {
                    file: path.clone(),
                    detail: e.to_string(),
                })?;
            packages.insert(package.trim_start_matches("data.").to_string());
        }
        // Which rules each package defines: a path that is no rule is an
        // error regorus reports the same whatever the input.
        engine.set_input(regorus::Value::new_object());
        let mut rules = Vec::new();
        for package in &packages {
            for (rule, fails) in RULES {
                let path = format!("data.{package}.{rule}");
                match engine.eval_rule(path.clone()) {
                    Err(e) if e.to_string().contains("not a valid rule path") => {}
                    _ => rules.push((path, format!("{package}.{rule}"), *fails)),
                }
            }
        }
        Ok(Policies {
            engine,
            rules,
            label,
            files: count,
        })
    }

    /// Loads the Rego files of `source` (`_test.rego` left out, as
    /// conftest leaves them); `Ok(None)` when `trusted` has no such
    /// directory.
    ///
    /// # Errors
    /// Read and parse failures.
    pub fn load(
        source: &Source,
        trusted: &crate::source::Snapshot,
    ) -> Result<Option<Policies>, Error> {
        let Some((files, label)) = read_files(source, trusted, is_policy)? else {
            return Ok(None);
        };
        Policies::from_files(files, label).map(Some)
    }

    /// The rules' messages about one object.
    ///
    /// # Errors
    /// A rule that fails to evaluate (a type error, the time limit).
    pub fn evaluate(&mut self, id: &str, object: &Value) -> Result<Vec<Finding>, Error> {
        self.engine.set_input(regorus::Value::from(object.clone()));
        let mut out = Vec::new();
        for (path, rule, fails) in &self.rules {
            let value = self
                .engine
                .eval_rule(path.clone())
                .map_err(|e| Error::Eval {
                    rule: path.clone(),
                    object: id.to_string(),
                    detail: e.to_string(),
                })?;
            let json = value.to_json_str().unwrap_or_default();
            let messages: Vec<Value> = match serde_json::from_str::<Value>(&json) {
                Ok(Value::Array(items)) => items,
                Ok(Value::Object(o)) if o.is_empty() => Vec::new(),
                Ok(Value::Null) | Err(_) => Vec::new(),
                Ok(Value::Bool(false)) => Vec::new(),
                Ok(other) => vec![other],
            };
            for m in messages {
                let message = match &m {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o
                        .get("msg")
                        .and_then(Value::as_str)
                        .map_or_else(|| m.to_string(), str::to_string),
                    other => other.to_string(),
                };
                out.push(Finding {
                    rule: rule.clone(),
                    fails: *fails,
                    message,
                });
            }
        }
        Ok(out)
    }
}

/// Files as read: (path, text) sorted by path, and where they came from.
pub(super) type Files = (Vec<(String, String)>, String);

/// The files of `source` that `keep` takes, sorted by path, and a label
/// saying where they came from; `Ok(None)` when `trusted` (for a
/// directory of the config repo) has no such directory.
///
/// # Errors
/// Read failures.
pub(super) fn read_files(
    source: &Source,
    trusted: &crate::source::Snapshot,
    keep: fn(&str) -> bool,
) -> Result<Option<Files>, Error> {
    let mut files = Vec::new();
    let label = match source {
        Source::Disk(dir) => {
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                let entries = std::fs::read_dir(&d).map_err(|e| Error::Read {
                    path: d.display().to_string(),
                    detail: e.to_string(),
                })?;
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if keep(&path.to_string_lossy()) {
                        let text = std::fs::read_to_string(&path).map_err(|e| Error::Read {
                            path: path.display().to_string(),
                            detail: e.to_string(),
                        })?;
                        files.push((path.display().to_string(), text));
                    }
                }
            }
            dir.display().to_string()
        }
        Source::Repo(dir) => {
            let reader = trusted.reader();
            let read_err = |e: crate::source::Error| Error::Read {
                path: dir.clone(),
                detail: e.to_string(),
            };
            let Some(top) = reader.find(&trusted.root(), dir).map_err(read_err)? else {
                return Ok(None);
            };
            let mut stack = vec![top];
            while let Some(node) = stack.pop() {
                for child in reader.list(&node).map_err(read_err)? {
                    if child.is_dir {
                        stack.push(child);
                    } else if keep(&child.path) {
                        let text = reader.read_text(&child).map_err(read_err)?;
                        files.push((child.path.clone(), text));
                    }
                }
            }
            format!("{dir}/ (at {})", trusted.label())
        }
    };
    files.sort();
    Ok(Some((files, label)))
}

/// A Rego file conftest reads: `.rego`, not a test.
fn is_policy(path: &str) -> bool {
    path.ends_with(".rego") && !path.ends_with("_test.rego")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policies(text: &str) -> Policies {
        Policies::from_files(vec![("policy/p.rego".into(), text.into())], "test".into())
            .expect("loads")
    }

    #[test]
    fn deny_warn_and_violation_in_the_shapes_conftest_documents() {
        let mut p = policies(
            r#"package main
import rego.v1

deny contains msg if {
  input.kind == "Deployment"
  not input.spec.template.spec.securityContext.runAsNonRoot
  msg := sprintf("Containers must not run as root in Deployment %s", [input.metadata.name])
}

warn contains msg if {
  input.kind == "Service"
  input.spec.type == "LoadBalancer"
  msg := "a LoadBalancer Service costs money"
}

violation contains {"msg": msg, "details": {}} if {
  not input.metadata.labels.team
  msg := "every object needs a team label"
}
"#,
        );
        let found = p
            .evaluate("d", &json!({"kind": "Deployment", "metadata": {"name": "api"}, "spec": {"template": {"spec": {}}}}))
            .expect("evaluates");
        let got: Vec<(&str, bool, &str)> = found
            .iter()
            .map(|f| (f.rule.as_str(), f.fails, f.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "main.deny",
                    true,
                    "Containers must not run as root in Deployment api"
                ),
                ("main.violation", true, "every object needs a team label"),
            ]
        );
        let svc = json!({"kind": "Service", "metadata": {"name": "s", "labels": {"team": "a"}}, "spec": {"type": "LoadBalancer"}});
        let found = p.evaluate("s", &svc).expect("evaluates");
        assert_eq!(found.len(), 1);
        assert!(!found[0].fails && found[0].rule == "main.warn");
    }

    #[test]
    fn a_file_that_is_not_rego_is_named_with_its_line() {
        let err = Policies::from_files(
            vec![(
                "policy/bad.rego".into(),
                "package x\ndeny contains m if {\n  input.x ==\n}\n".into(),
            )],
            "t".into(),
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(
            err.contains("policy/bad.rego") && err.contains(":4:"),
            "{err}"
        );
    }
}
