//! Reports of a [`Plan`]: terminal text, markdown (PR comment, job summary)
//! and JSON. Writers only format; Secret values were redacted by the plan
//! before any text existed.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::plan::{Action, Change, Plan};

pub mod deploy;
mod parts;

pub use parts::{markdown, markdown_parts};

/// The environments a plan changes, each with the kubeconfig context
/// kdeploy.yaml gives it (`null` when none): what a workflow fans deploy
/// jobs out over, one per environment and cluster.
pub fn environments(plan: &Plan, settings: &crate::config::Settings) -> serde_json::Value {
    let envs: std::collections::BTreeSet<&str> =
        plan.changes.iter().map(|c| c.env.as_str()).collect();
    serde_json::Value::Array(
        envs.into_iter()
            .map(|env| {
                serde_json::json!({
                    "environment": env,
                    "context": settings.environments.get(env).and_then(|e| e.context.clone()),
                })
            })
            .collect(),
    )
}

/// GitHub's limit on an issue or PR comment body, in characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// The hidden marker that identifies kdeploy's comment on a PR.
pub fn comment_marker(id: &str) -> String {
    format!("<!-- kdeploy-plan:{id} -->")
}

/// Per-environment counts: (added, changed, deleted, apps touched).
fn env_summary(plan: &Plan) -> Vec<(String, [usize; 3], Vec<String>)> {
    let mut out: Vec<(String, [usize; 3], Vec<String>)> = Vec::new();
    for c in &plan.changes {
        if out.last().is_none_or(|(env, _, _)| *env != c.env) {
            out.push((c.env.clone(), [0; 3], Vec::new()));
        }
        if let Some((_, counts, apps)) = out.last_mut() {
            counts[c.action as usize] += 1;
            if !apps.contains(&c.app) {
                apps.push(c.app.clone());
            }
        }
    }
    out
}

/// The one-line summary: `2 to add, 1 to change, 0 to delete`.
pub fn summary_line(plan: &Plan) -> String {
    let (a, c, d) = plan.counts();
    format!("{a} to add, {c} to change, {d} to delete")
}

/// Writes the plan for a terminal; `color` adds ANSI colors to diffs.
///
/// # Errors
/// When writing fails.
pub fn text(plan: &Plan, color: bool, out: &mut dyn Write) -> io::Result<()> {
    text_with(plan, color, false, out)
}

/// [`text`], grouped by environment under a header each. `compact` gives
/// one line per resource with the number of changed lines, and no diffs.
///
/// # Errors
/// When writing fails.
pub fn text_with(plan: &Plan, color: bool, compact: bool, out: &mut dyn Write) -> io::Result<()> {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    writeln!(out, "Plan {} -> {}", plan.base, plan.head)?;
    for n in &plan.notes {
        writeln!(out, "Note: {n}")?;
    }
    if !plan.has_changes() {
        writeln!(out, "No changes. {}", unchanged_note(plan))?;
        if let Some(h) = hidden_note(plan) {
            writeln!(out, "{h}")?;
        }
        return Ok(());
    }
    let mut env: Option<&str> = None;
    for c in &plan.changes {
        if env != Some(c.env.as_str()) {
            let n = plan.changes.iter().filter(|x| x.env == c.env).count();
            writeln!(
                out,
                "\n{} ({})",
                paint("1", &format!("== {} ==", c.env)),
                plural(n, "change")
            )?;
            env = Some(c.env.as_str());
        }
        let sign = c.action.sign().to_string();
        let code = match c.action {
            Action::Added => "32",
            Action::Changed => "33",
            Action::Deleted => "31",
        };
        let lines = c.diff.lines().skip(2);
        if compact {
            let (plus, minus) = lines.fold((0, 0), |(p, m), l| match l.chars().next() {
                Some('+') => (p + 1, m),
                Some('-') => (p, m + 1),
                _ => (p, m),
            });
            let size = match c.action {
                Action::Added => plural(plus, "line"),
                Action::Deleted => plural(minus, "line"),
                Action::Changed => format!("+{plus} -{minus}"),
            };
            writeln!(
                out,
                "{} {} [{}] {} ({size})",
                paint(code, &sign),
                c.id,
                c.app,
                c.summary
            )?;
            write_warnings(c, &paint, out)?;
            write_live(plan, c, &paint, out)?;
            continue;
        }
        writeln!(
            out,
            "\n{} {} [{}] {}",
            paint(code, &sign),
            paint("1", &c.id.to_string()),
            c.app,
            action_word(c.action)
        )?;
        if !c.summary.is_empty() {
            writeln!(out, "    = {}", c.summary)?;
        }
        write_warnings(c, &paint, out)?;
        write_live(plan, c, &paint, out)?;
        for line in lines {
            let painted = match line.chars().next() {
                Some('+') => paint("32", line),
                Some('-') => paint("31", line),
                Some('@') => paint("36", line),
                _ => line.to_string(),
            };
            writeln!(out, "    {painted}")?;
        }
    }
    writeln!(out, "\n{}. {}", summary_line(plan), unchanged_note(plan))?;
    if let Some(w) = warnings_note(plan) {
        writeln!(out, "{w}")?;
    }
    if let Some(h) = hidden_note(plan) {
        writeln!(out, "{h}")?;
    }
    writeln!(out, "{}", plan.live.summary())?;
    Ok(())
}

/// What a reviewer looks for first: the images and replica counts that
/// change per environment, then deletions that lose data or take much
/// with them.
fn highlights(plan: &Plan) -> Vec<String> {
    let mut images: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut scale: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut dangerous = Vec::new();
    for c in &plan.changes {
        let part = c
            .summary
            .split("; ")
            .find(|p| p.starts_with("image ") || p.starts_with("new: image "));
        if let Some(p) = part {
            let text = match c.action {
                Action::Added => format!(
                    "`{}` {}",
                    c.app,
                    p.trim_start_matches("new: ")
                        .split(", ")
                        .next()
                        .unwrap_or(p)
                ),
                _ => p.trim_start_matches("image ").to_string(),
            };
            let list = images.entry(c.env.as_str()).or_default();
            if !list.contains(&text) {
                list.push(text);
            }
        }
        if let Some(p) = c.summary.split("; ").find(|p| p.starts_with("replicas ")) {
            scale.entry(c.env.as_str()).or_default().push(format!(
                "`{}` {}",
                c.app,
                p.trim_start_matches("replicas ")
            ));
        }
        let risky = matches!(
            (c.id.group.as_str(), c.id.kind.as_str()),
            ("", "Namespace" | "PersistentVolumeClaim")
                | ("apiextensions.k8s.io", "CustomResourceDefinition")
                | ("apps", "StatefulSet")
        );
        if c.action == Action::Deleted && risky {
            dangerous.push(format!("`{}` in {}", c.id, c.env));
        }
    }
    let mut out = Vec::new();
    for (title, by_env) in [("Images", &images), ("Replicas", &scale)] {
        if by_env.is_empty() {
            continue;
        }
        let per_env: Vec<String> = by_env
            .iter()
            .map(|(env, list)| format!("**{env}**: {}", escape_images(&list.join(", "))))
            .collect();
        out.push(format!("**{title}.** {}", per_env.join("; ")));
    }
    if !dangerous.is_empty() {
        out.push(format!(
            "> [!CAUTION]\n> **Deletes** {}.",
            dangerous.join(", ")
        ));
    }
    out
}

/// Image lines keep their backticked app names; the rest is escaped.
fn escape_images(s: &str) -> String {
    s.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("`{part}`")
            } else {
                escape_markdown(part)
            }
        })
        .collect()
}

/// A change's warnings, one `warning[code] message` line each.
fn write_warnings(
    c: &crate::plan::Change,
    paint: &dyn Fn(&str, &str) -> String,
    out: &mut dyn Write,
) -> io::Result<()> {
    for w in &c.warnings {
        let tag = paint("1;33", &format!("warning[{}]", w.code));
        writeln!(out, "    {tag} {}", w.message)?;
    }
    Ok(())
}

/// What the cluster showed of a change ([`crate::plan::live`]): a
/// refusal, the resource missing, each field of live drift.
fn write_live(
    plan: &Plan,
    c: &crate::plan::Change,
    paint: &dyn Fn(&str, &str) -> String,
    out: &mut dyn Write,
) -> io::Result<()> {
    let Some(f) = plan.live.finding(&c.env, &c.id) else {
        return Ok(());
    };
    if let Some(why) = &f.refused {
        writeln!(
            out,
            "    {} {why}",
            paint("1;31", "refused by the API server:")
        )?;
    }
    if f.missing {
        writeln!(
            out,
            "    {} missing from the cluster: this merge creates it again",
            paint("1;35", "live:")
        )?;
    }
    for d in &f.drift {
        writeln!(
            out,
            "    {} {}",
            paint("1;35", "live drift this merge sets back:"),
            drift_line(d)
        )?;
    }
    Ok(())
}

/// `spec.replicas: 7 → 3 (set by kubectl-scale (Update))`.
pub(crate) fn drift_line(d: &crate::plan::live::Drift) -> String {
    let by = if d.managers.is_empty() {
        "removed from the live object".to_string()
    } else {
        format!("set by {}", d.managers.join(", "))
    };
    format!("{}: {} → {} ({by})", d.path, d.live, d.planned)
}

/// `2 warnings: immutable-field (1), removed-api (1).`
fn warnings_note(plan: &Plan) -> Option<String> {
    let n = plan.warning_count();
    if n == 0 {
        return None;
    }
    let mut codes: std::collections::BTreeMap<&str, usize> = Default::default();
    for w in plan.changes.iter().flat_map(|c| &c.warnings) {
        *codes.entry(w.code).or_default() += 1;
    }
    let list: Vec<String> = codes.iter().map(|(c, k)| format!("{c} ({k})")).collect();
    Some(format!("{}: {}.", plural(n, "warning"), list.join(", ")))
}

/// `1 change`, `2 changes`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Added => "added",
        Action::Changed => "changed",
        Action::Deleted => "deleted",
    }
}

fn unchanged_note(plan: &Plan) -> String {
    format!(
        "{} unchanged; {} skipped (identical inputs).",
        plural(plan.unchanged, "resource"),
        plural(plan.unchanged_releases, "release")
    )
}

fn hidden_note(plan: &Plan) -> Option<String> {
    let mut parts = Vec::new();
    if plan.hidden_resources > 0 {
        parts.push(format!(
            "{} hidden by plan.ignoreResources",
            plural(plan.hidden_resources, "changed resource")
        ));
    }
    if plan.ignored_fields > 0 {
        parts.push(format!(
            "{} ignored by plan.ignoreFields",
            plural(plan.ignored_fields, "field path")
        ));
    }
    (!parts.is_empty()).then(|| format!("Hidden: {} (kdeploy.yaml).", parts.join("; ")))
}

/// Text that markdown shows as written (`*`, `_`, `<`, backticks...).
pub(crate) fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(
            ch,
            '\\' | '`' | '*' | '_' | '<' | '>' | '[' | ']' | '#' | '|' | '~'
        ) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A code fence longer than any run of backticks in `body`.
fn fence_for(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for ch in body.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

fn kind_heading(c: &Change) -> String {
    let ns =
        c.id.namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
    format!("{} `{}{}`", c.id.kind, ns, c.id.name)
}

/// The JSON report (schema in the README).
#[derive(Debug, Serialize)]
pub struct JsonPlan<'a> {
    base: &'a str,
    head: &'a str,
    summary: JsonSummary,
    notes: &'a [String],
    /// `env/app` → the section's fingerprint, and the kdeploy version.
    fingerprints: BTreeMap<String, &'a str>,
    kdeploy: &'static str,
    /// The JSON report's version: 2 added `live` (three-way plans).
    schema: u32,
    /// What the cluster showed, or why it was not asked.
    live: &'a crate::plan::live::Live,
    changes: Vec<JsonChange<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonSummary {
    added: usize,
    changed: usize,
    deleted: usize,
    unchanged: usize,
    unchanged_releases: usize,
    hidden: usize,
    warnings: usize,
    policy_errors: usize,
    refused: usize,
    drift_fields: usize,
    missing: usize,
}

#[derive(Debug, Serialize)]
struct JsonChange<'a> {
    env: &'a str,
    app: &'a str,
    action: Action,
    group: &'a str,
    kind: &'a str,
    namespace: Option<&'a str>,
    name: &'a str,
    source: &'a str,
    summary: &'a str,
    warnings: &'a [crate::plan::Warning],
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<&'a crate::plan::live::Finding>,
    diff: &'a str,
}

/// `env/app` → fingerprint, for the JSON plan and the action's output.
pub fn fingerprints(plan: &Plan) -> BTreeMap<String, &str> {
    plan.fingerprints
        .iter()
        .map(|((env, app), f)| (format!("{env}/{app}"), f.id.as_str()))
        .collect()
}

/// Builds the JSON form of a plan.
pub fn json(plan: &Plan) -> JsonPlan<'_> {
    let (added, changed, deleted) = plan.counts();
    let (drift_fields, _, missing) = plan.live.drift_counts();
    JsonPlan {
        base: &plan.base,
        head: &plan.head,
        summary: JsonSummary {
            added,
            changed,
            deleted,
            unchanged: plan.unchanged,
            unchanged_releases: plan.unchanged_releases,
            hidden: plan.hidden_resources,
            warnings: plan.warning_count(),
            policy_errors: plan.policy_errors,
            refused: plan.live.refusals(),
            drift_fields,
            missing,
        },
        notes: &plan.notes,
        fingerprints: fingerprints(plan),
        kdeploy: crate::plan::fingerprint::VERSION,
        schema: 2,
        live: &plan.live,
        changes: plan
            .changes
            .iter()
            .map(|c| JsonChange {
                env: &c.env,
                app: &c.app,
                action: c.action,
                group: &c.id.group,
                kind: &c.id.kind,
                namespace: c.id.namespace.as_deref(),
                name: &c.id.name,
                source: &c.origin.file,
                summary: &c.summary,
                warnings: &c.warnings,
                live: plan.live.finding(&c.env, &c.id),
                diff: &c.diff,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_is_longer_than_backtick_runs() {
        assert_eq!(fence_for("a ``` b"), "````");
        assert_eq!(fence_for("plain"), "```");
    }
}
