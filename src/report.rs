//! Reports of a [`Plan`]: terminal text, markdown (PR comment, job summary)
//! and JSON. Writers only format; Secret values were redacted by the plan
//! before any text existed.

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use crate::plan::{Action, Change, Plan};

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
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    writeln!(out, "Plan {} -> {}", plan.base, plan.head)?;
    if !plan.has_changes() {
        writeln!(out, "No changes. {}", unchanged_note(plan))?;
        if let Some(h) = hidden_note(plan) {
            writeln!(out, "{h}")?;
        }
        return Ok(());
    }
    for c in &plan.changes {
        let sign = c.action.sign().to_string();
        let code = match c.action {
            Action::Added => "32",
            Action::Changed => "33",
            Action::Deleted => "31",
        };
        writeln!(
            out,
            "\n{} {} [{}/{}] {}",
            paint(code, &sign),
            paint("1", &c.id.to_string()),
            c.env,
            c.app,
            action_word(c.action)
        )?;
        for line in c.diff.lines().skip(2) {
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
    if let Some(h) = hidden_note(plan) {
        writeln!(out, "{h}")?;
    }
    Ok(())
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
        "{} resources unchanged; {} releases skipped (identical inputs).",
        plan.unchanged, plan.unchanged_releases
    )
}

fn hidden_note(plan: &Plan) -> Option<String> {
    let mut parts = Vec::new();
    if plan.hidden_resources > 0 {
        parts.push(format!(
            "{} changed resources hidden by plan.ignoreResources",
            plan.hidden_resources
        ));
    }
    if plan.ignored_fields > 0 {
        parts.push(format!(
            "{} field paths ignored by plan.ignoreFields",
            plan.ignored_fields
        ));
    }
    (!parts.is_empty()).then(|| format!("Hidden: {} (kdeploy.yaml).", parts.join("; ")))
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

/// The markdown report: summary first, then one `<details>` per (env, app)
/// with a diff block per resource. Whole resources are left out (and named)
/// when the body would exceed `limit` characters.
pub fn markdown(plan: &Plan, marker: &str, limit: usize) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "{marker}\n### kdeploy plan\n");
    let _ = writeln!(head, "`{}` → `{}`\n", plan.base, plan.head);
    if !plan.has_changes() {
        let _ = writeln!(head, "**No changes.** {}", unchanged_note(plan));
        if let Some(h) = hidden_note(plan) {
            let _ = writeln!(head, "\n_{h}_");
        }
        return head;
    }
    let _ = writeln!(head, "| environment | add | change | delete | apps |");
    let _ = writeln!(head, "| --- | ---: | ---: | ---: | --- |");
    for (env, [a, c, d], apps) in env_summary(plan) {
        let _ = writeln!(head, "| {env} | {a} | {c} | {d} | {} |", apps.join(", "));
    }
    let _ = writeln!(
        head,
        "\n**{}.** {}",
        summary_line(plan),
        unchanged_note(plan)
    );
    if let Some(h) = hidden_note(plan) {
        let _ = writeln!(head, "\n_{h}_");
    }
    head.push('\n');

    // Group by (env, app), keeping plan order.
    let mut groups: Vec<((String, String), Vec<&Change>)> = Vec::new();
    for c in &plan.changes {
        let key = (c.env.clone(), c.app.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(c),
            None => groups.push((key, vec![c])),
        }
    }
    let mut body = String::new();
    let mut left_out: Vec<String> = Vec::new();
    // Room for the closing note about left-out resources.
    let reserve = 600;
    for ((env, app), changes) in groups {
        let open = format!(
            "<details><summary><b>{env}</b> / <b>{app}</b>: {} changes</summary>\n\n",
            changes.len()
        );
        let mut section = String::new();
        for c in changes {
            let diff: String = c.diff.lines().skip(2).collect::<Vec<_>>().join("\n");
            let fence = fence_for(&diff);
            let block = format!(
                "#### {} {}\n\n{fence}diff\n{diff}\n{fence}\n\n",
                c.action.sign(),
                kind_heading(c)
            );
            let total = head.len() + body.len() + open.len() + section.len() + block.len() + 20;
            if total + reserve > limit {
                left_out.push(format!("{} [{env}/{app}]", c.id));
            } else {
                section.push_str(&block);
            }
        }
        if !section.is_empty() {
            body.push_str(&open);
            body.push_str(&section);
            body.push_str("</details>\n\n");
        }
    }
    let mut out = head + &body;
    if !left_out.is_empty() {
        let mut note = format!(
            "**{} resources left out to fit the comment size limit**; the full plan is in the job summary and the plan artifact: ",
            left_out.len()
        );
        for (i, name) in left_out.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            if out.len() + note.len() + name.len() + 10 > limit {
                note.push_str(", …");
                break;
            }
            note.push_str(sep);
            note.push_str(name);
        }
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// The JSON report (schema in the README).
#[derive(Debug, Serialize)]
pub struct JsonPlan<'a> {
    base: &'a str,
    head: &'a str,
    summary: JsonSummary,
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
    diff: &'a str,
}

/// Builds the JSON form of a plan.
pub fn json(plan: &Plan) -> JsonPlan<'_> {
    let (added, changed, deleted) = plan.counts();
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
        },
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
