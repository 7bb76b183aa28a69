//! The markdown report cut into comment-sized parts.
//!
//! GitHub refuses a comment body over 65,536 characters, and the job
//! summary over 1 MiB. Every part is measured as it is written, in bytes
//! (never fewer than characters), against the limit: the part header, the
//! summary, each app's `<details>` wrapper and link, each resource and the
//! closing tags all count, so no part can exceed it however many apps,
//! resources, notes or highlights a plan has. What does not fit is left
//! out and named, within the same limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plan::Plan;

use super::{
    env_summary, escape_markdown, fence_for, hidden_note, highlights, kind_heading, plural,
    summary_line, unchanged_note, warnings_note,
};

/// Most app names listed per environment in the summary table.
const SUMMARY_APPS: usize = 12;

/// What closes an app's section.
const CLOSE: &str = "</details>\n\n";

/// Kept free in the last part for the note naming what was left out.
const LEFT_OUT_NOTE: usize = 1_000;

/// The markdown report as one body of at most `limit` characters (the
/// job summary, `--format markdown`). See [`markdown_parts`].
pub fn markdown(plan: &Plan, marker: &str, limit: usize) -> String {
    markdown_parts(plan, marker, limit, 1)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The plan's summary: revisions, notes, the table per environment, the
/// warning and highlights. When the table names only some apps, every
/// changed release follows it, in half of what is left of `room` bytes.
fn summary(plan: &Plan, room: usize) -> String {
    let mut summary = crate::plan::fingerprint::review_marker(plan);
    let _ = writeln!(summary, "`{}` → `{}`\n", plan.base, plan.head);
    for n in &plan.notes {
        let _ = writeln!(summary, "> [!NOTE]\n> {n}\n");
    }
    if !plan.has_changes() {
        let _ = writeln!(summary, "**No changes.** {}", unchanged_note(plan));
    } else {
        let _ = writeln!(summary, "| environment | add | change | delete | apps |");
        let _ = writeln!(summary, "| --- | ---: | ---: | ---: | --- |");
        for (env, [a, c, d], apps) in env_summary(plan) {
            let mut names = apps
                .iter()
                .take(SUMMARY_APPS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if apps.len() > SUMMARY_APPS {
                let _ = write!(names, " and {} more", apps.len() - SUMMARY_APPS);
            }
            let _ = writeln!(summary, "| {env} | {a} | {c} | {d} | {names} |");
        }
        // Half of what is left, so that highlights and dangers fit too.
        let left = room.saturating_sub(summary.len()) / 2;
        summary.push_str(&every_release(plan, left));
        let _ = writeln!(
            summary,
            "\n**{}.** {}",
            summary_line(plan),
            unchanged_note(plan)
        );
        if let Some(w) = warnings_note(plan) {
            let _ = writeln!(
                summary,
                "\n> [!WARNING]\n> **{w}** See the resources marked ⚠️ below."
            );
        }
        for line in highlights(plan) {
            let _ = writeln!(summary, "\n{line}");
        }
    }
    if let Some(h) = hidden_note(plan) {
        let _ = writeln!(summary, "\n_{h}_");
    }
    if plan.has_changes() {
        let refused = plan.live.refusals();
        if refused > 0 {
            let _ = writeln!(
                summary,
                "\n> [!CAUTION]\n> **The API server refuses {}.** See the resources marked ⛔ below: the deploy would fail there.",
                plural(refused, "planned change")
            );
        }
        let _ = writeln!(summary, "\n_{}_", escape_markdown(&plan.live.summary()));
    }
    summary.push('\n');
    summary
}

/// Every changed (environment, app) with its counts, when the summary
/// table had to leave names out, within `room` bytes: environments with the
/// same apps and counts share a line, and numbered names in a row are shown
/// as a range (`app-0000…app-0999`). Folded, so part 1 stays readable.
fn every_release(plan: &Plan, room: usize) -> String {
    let per_env = release_counts(plan);
    if per_env.values().all(|apps| apps.len() <= SUMMARY_APPS) {
        return String::new();
    }
    // env → "~1: a…c; +1 ~2: d", then environments with the same text joined.
    let mut lines: Vec<(Vec<&str>, String)> = Vec::new();
    for (env, apps) in &per_env {
        let mut by_counts: BTreeMap<[usize; 3], Vec<&str>> = BTreeMap::new();
        for (app, counts) in apps {
            by_counts.entry(*counts).or_default().push(app);
        }
        let text = by_counts
            .iter()
            .map(|(counts, names)| format!("{}: {}", counts_text(*counts), ranges(names)))
            .collect::<Vec<_>>()
            .join("; ");
        match lines.iter_mut().find(|(_, t)| *t == text) {
            Some((envs, _)) => envs.push(env),
            None => lines.push((vec![env], text)),
        }
    }
    let total: usize = per_env.values().map(BTreeMap::len).sum();
    let mut out = format!(
        "\n<details><summary>All {} changed releases (environment: changes per app)</summary>\n\n",
        total
    );
    let close = "\n</details>\n";
    const MORE: &str = " _… more: the job summary and the plan JSON list every one_";
    for (envs, text) in &lines {
        let line = format!(
            "- **{}**: {}",
            escape_markdown(&envs.join(", ")),
            escape_markdown(text)
        );
        let free = room.saturating_sub(out.len() + close.len() + MORE.len() + 1);
        if line.len() <= free {
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        // Cut after a whole name, and stop: what is left is named elsewhere.
        let mut keep = free.min(line.len());
        while !line.is_char_boundary(keep) {
            keep -= 1;
        }
        match line[..keep].rfind(", ") {
            Some(cut) => out.push_str(&line[..cut]),
            None => out.push('-'),
        }
        out.push_str(MORE);
        out.push('\n');
        break;
    }
    out.push_str(close);
    out
}

/// (add, change, delete) per app per environment.
fn release_counts(plan: &Plan) -> BTreeMap<&str, BTreeMap<&str, [usize; 3]>> {
    let mut out: BTreeMap<&str, BTreeMap<&str, [usize; 3]>> = BTreeMap::new();
    for c in &plan.changes {
        out.entry(c.env.as_str())
            .or_default()
            .entry(c.app.as_str())
            .or_default()[c.action as usize] += 1;
    }
    out
}

/// `+1 ~2 -1`, zeros left out.
fn counts_text([a, c, d]: [usize; 3]) -> String {
    [("+", a), ("~", c), ("-", d)]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(sign, n)| format!("{sign}{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sorted names, with three or more in a row that differ only in a
/// numbered suffix of one width (`app-0001`, `app-0002`, …) as `first…last`.
fn ranges(names: &[&str]) -> String {
    // (text before, width, number, text after) of the last run of digits.
    let split = |n: &str| {
        let end = n.rfind(|c: char| c.is_ascii_digit()).map_or(0, |i| i + 1);
        let start = n[..end]
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        let num = &n[start..end];
        (
            (n[..start].to_string(), n[end..].to_string()),
            num.len(),
            num.parse::<u64>().ok(),
        )
    };
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let (prefix, width, first) = split(names[i]);
        let mut j = i;
        if let Some(mut n) = first {
            while j + 1 < names.len() {
                let (p, w, next) = split(names[j + 1]);
                if p != prefix || w != width || next != n.checked_add(1) {
                    break;
                }
                n += 1;
                j += 1;
            }
        }
        if j >= i + 2 {
            out.push(format!("{}…{}", names[i], names[j]));
        } else {
            out.extend(names[i..=j].iter().map(|s| s.to_string()));
        }
        i = j + 1;
    }
    out.join(", ")
}

/// `text` cut at a line end so that it takes at most `room` bytes with the
/// note that says so; whole when it fits. Cutting between lines keeps the
/// markdown valid: a table or a quote simply ends there.
fn fit_lines(text: String, room: usize) -> String {
    const CUT: &str = "\n_… cut to fit GitHub's comment size limit: the job summary and the plan JSON have all of it._\n\n";
    if text.len() <= room {
        return text;
    }
    let mut keep = room.saturating_sub(CUT.len()).min(text.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let end = text[..keep].rfind('\n').map_or(0, |i| i + 1);
    let mut out = text[..end].to_string();
    out.push_str(CUT);
    out
}

/// One resource's section, with the (env, app) it belongs to and the name
/// it is listed by when left out.
struct Block {
    key: (String, String),
    text: String,
    name: String,
}

fn blocks(plan: &Plan) -> Vec<Block> {
    let mut blocks: Vec<Block> = plan
        .changes
        .iter()
        .map(|c| {
            let diff: String = c.diff.lines().skip(2).collect::<Vec<_>>().join("\n");
            let fence = fence_for(&diff);
            let mut warned = String::new();
            for w in &c.warnings {
                let _ = writeln!(warned, "> [!WARNING]\n> **{}**: {}\n", w.code, w.message);
            }
            let live = plan.live.finding(&c.env, &c.id);
            if let Some(f) = live {
                live_block(f, &mut warned);
            }
            // The change in words first; the diff folded under it.
            let summary = if c.summary.is_empty() {
                String::new()
            } else {
                format!("{}\n\n", escape_markdown(&c.summary))
            };
            let text = format!(
                "#### {} {}{}\n\n{summary}{warned}<details><summary>diff ({})</summary>\n\n{fence}diff\n{diff}\n{fence}\n\n</details>\n\n",
                c.action.sign(),
                kind_heading(c),
                match (c.warnings.is_empty(), live) {
                    (_, Some(f)) if f.refused.is_some() => " ⛔",
                    (true, None) => "",
                    _ => " ⚠️",
                },
                plural(
                    diff.lines().filter(|l| l.starts_with(['+', '-'])).count(),
                    "line"
                ),
            );
            Block {
                key: (c.env.clone(), c.app.clone()),
                text,
                name: format!("{} [{}/{}]", c.id, c.env, c.app),
            }
        })
        .collect();
    // One section per (environment, app): resources keep their apply order
    // inside it (the sort is stable).
    blocks.sort_by(|x, y| x.key.cmp(&y.key));
    blocks
}

/// What the cluster showed of a resource: the API server's refusal, the
/// resource missing, the live drift this merge sets back.
fn live_block(f: &crate::plan::live::Finding, out: &mut String) {
    if let Some(why) = &f.refused {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> **Refused by the API server** (server-side apply dry run): {}\n",
            escape_markdown(why)
        );
    }
    if f.missing {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> **Missing from the cluster**: deleted since it was deployed; this merge creates it again.\n"
        );
    }
    if !f.drift.is_empty() {
        let _ = writeln!(out, "> [!WARNING]\n> **Live drift this merge sets back**:");
        for d in &f.drift {
            let _ = writeln!(out, "> - `{}`", super::drift_line(d).replace('`', "'"));
        }
        out.push('\n');
    }
}

/// The opening of an app's section; `piece` is `(k, n)` when the app is
/// spread over `n` parts and this is the `k`th.
fn group_header(
    plan: &Plan,
    key: &(String, String),
    changes: usize,
    piece: Option<(usize, usize)>,
) -> String {
    let continued = piece
        .map(|(k, n)| format!(" (part {k}/{n} of this app)"))
        .unwrap_or_default();
    // The section's fingerprint: shown short, and whole in a comment a
    // merge reads back ([`crate::review`]).
    let (short, hidden) = match plan.fingerprints.get(key) {
        Some(f) => (
            format!(" · plan <code>{}</code>", &f.id[..f.id.len().min(8)]),
            crate::plan::fingerprint::section_marker(key, f),
        ),
        None => (String::new(), String::new()),
    };
    let mut header = format!(
        "{hidden}<details><summary><b>{}</b> / <b>{}</b>: {}{short}{continued}</summary>\n\n",
        key.0,
        key.1,
        plural(changes, "change")
    );
    if let (Some(url), Some(dir)) = (&plan.browse_url, plan.dirs.get(key)) {
        let _ = write!(header, "Config: [`{dir}`]({url}/{dir})\n\n");
    }
    header
}

fn part_header(marker: &str, n: usize, total: usize) -> String {
    let mut body = format!("{marker}\n<!-- part:{n} -->\n### kdeploy plan");
    if total > 1 {
        let _ = write!(body, " (part {n}/{total})");
    }
    body.push_str("\n\n");
    body
}

/// The markdown report split into at most `max_parts` bodies of at most
/// `limit` characters each: the summary first, then one `<details>` per
/// (env, app) with a diff block per resource. Resources are never split;
/// those that fit in no part are left out and named at the end. Each part
/// starts with `marker` and its number (`<!-- … part:N -->`), so a re-run
/// can find and update it.
pub fn markdown_parts(plan: &Plan, marker: &str, limit: usize, max_parts: usize) -> Vec<String> {
    let max_parts = max_parts.max(1);
    let blocks = blocks(plan);
    let mut sizes: BTreeMap<&(String, String), usize> = BTreeMap::new();
    for b in &blocks {
        *sizes.entry(&b.key).or_default() += 1;
    }
    // The longest a part header and an app's header can be once the parts
    // are counted: measured with the widest numbers they can show.
    let widest = max_parts.max(blocks.len()).max(1);
    let head_room = part_header(marker, widest, widest).len();
    let group_room =
        |key: &(String, String)| group_header(plan, key, sizes[key], Some((widest, widest))).len();
    let budget = limit.saturating_sub(LEFT_OUT_NOTE);
    let summary = fit_lines(
        summary(plan, budget.saturating_sub(head_room + CLOSE.len())),
        budget.saturating_sub(head_room + CLOSE.len()),
    );

    let mut parts: Vec<Vec<usize>> = vec![Vec::new()];
    let mut used = head_room + summary.len();
    let mut open: Option<&(String, String)> = None;
    let mut left_out = Vec::new();
    // What adding block `i` to the current part costs, its section's
    // closing tag included.
    let cost = |i: usize, open: Option<&(String, String)>| {
        let b = &blocks[i];
        let header = if open == Some(&b.key) {
            0
        } else {
            group_room(&b.key)
        };
        header + b.text.len() + CLOSE.len()
    };
    for (i, b) in blocks.iter().enumerate() {
        // Parts split between apps: an app that fits in a part of its own
        // starts one rather than being cut in two.
        let starts_group = open != Some(&b.key);
        let fresh = head_room;
        if starts_group && parts.len() < max_parts && !parts.last().is_some_and(Vec::is_empty) {
            let group: usize = group_room(&b.key)
                + blocks[i..]
                    .iter()
                    .take_while(|x| x.key == b.key)
                    .map(|x| x.text.len())
                    .sum::<usize>()
                + CLOSE.len();
            if used + group > budget && fresh + group <= budget {
                parts.push(Vec::new());
                used = fresh;
                open = None;
            }
        }
        if used + cost(i, open) > budget {
            if parts.len() < max_parts && !parts.last().is_some_and(Vec::is_empty) {
                parts.push(Vec::new());
                used = fresh;
                open = None;
            }
            if used + cost(i, open) > budget {
                left_out.push(i);
                continue;
            }
        }
        used += cost(i, open) - CLOSE.len();
        open = Some(&b.key);
        if let Some(p) = parts.last_mut() {
            p.push(i);
        }
    }
    let total = parts.len();
    // The parts each (env, app) appears in: an app too large for one part
    // says which of its pieces a section is.
    let mut spans: BTreeMap<&(String, String), Vec<usize>> = BTreeMap::new();
    for (n, part) in parts.iter().enumerate() {
        for &i in part {
            let list = spans.entry(&blocks[i].key).or_default();
            if list.last() != Some(&n) {
                list.push(n);
            }
        }
    }
    let mut out = Vec::with_capacity(total);
    for (n, part) in parts.iter().enumerate() {
        let mut body = part_header(marker, n + 1, total);
        if n == 0 {
            body.push_str(&summary);
        }
        let mut current: Option<&(String, String)> = None;
        for &i in part {
            let b = &blocks[i];
            if current != Some(&b.key) {
                if current.is_some() {
                    body.push_str(CLOSE);
                }
                let piece = spans.get(&b.key).filter(|l| l.len() > 1).map(|list| {
                    (
                        list.iter().position(|p| *p == n).unwrap_or(0) + 1,
                        list.len(),
                    )
                });
                body.push_str(&group_header(plan, &b.key, sizes[&b.key], piece));
                current = Some(&b.key);
            }
            body.push_str(&b.text);
        }
        if current.is_some() {
            body.push_str(CLOSE);
        }
        if n + 1 == total && !left_out.is_empty() {
            let mut note = format!(
                "**{} resources left out to fit GitHub's comment size limit**; the full plan is in the job summary and the plan JSON: ",
                left_out.len()
            );
            for (k, &i) in left_out.iter().enumerate() {
                let name = &blocks[i].name;
                if body.len() + note.len() + name.len() + 10 > limit {
                    note.push_str(", …");
                    break;
                }
                if k > 0 {
                    note.push_str(", ");
                }
                note.push_str(name);
            }
            body.push_str(&note);
            body.push('\n');
        }
        debug_assert!(
            body.len() <= limit,
            "part {} is {} bytes",
            n + 1,
            body.len()
        );
        out.push(body);
    }
    out
}
