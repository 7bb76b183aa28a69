//! The preview's sticky comment on its pull request: where it runs, whether
//! it is ready, its addresses; then, once the pull request closes, that it
//! is gone. One comment per template, kept apart from the plan's.

use std::fmt::Write as _;

use crate::apply::Report;
use crate::report::escape_markdown as md;

use super::{Preview, Removed};

/// The marker line of the comment of `template`'s previews.
pub fn marker(template: &str) -> String {
    format!("<!-- kdeploy-preview:{template} -->")
}

/// A host name as Kubernetes accepts one (wildcards too): nothing else from
/// a rendered object reaches the comment as a link.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            l == "*"
                || (!l.is_empty()
                    && l.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
        })
}

/// A link only when it is a plain http(s) address.
fn link(url: &str) -> String {
    let plain = (url.starts_with("https://") || url.starts_with("http://"))
        && !url.chars().any(|c| {
            c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '[' | ']' | '`' | '|' | '"')
        });
    if plain {
        format!("<{url}>")
    } else {
        format!("`{}`", url.replace('`', "'"))
    }
}

/// The addresses of `app` in the preview: the template's `url`, else the
/// hosts of its Ingresses (https when the Ingress has TLS for the host).
pub fn urls(preview: &Preview, app: &str) -> Vec<String> {
    if let Some(u) = preview.overlay.url_for(app) {
        return vec![u];
    }
    let mut out = Vec::new();
    let ingresses = preview
        .state
        .releases
        .iter()
        .filter(|r| r.release.app == app)
        .flat_map(|r| r.resources.iter())
        .filter(|r| r.id.group == "networking.k8s.io" && r.id.kind == "Ingress");
    for ing in ingresses {
        let spec = &ing.object["spec"];
        let tls: Vec<&str> = spec["tls"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["hosts"].as_array().into_iter().flatten())
            .filter_map(|h| h.as_str())
            .collect();
        for rule in spec["rules"].as_array().into_iter().flatten() {
            let Some(host) = rule["host"]
                .as_str()
                .filter(|h| is_host(h) && !h.starts_with('*'))
            else {
                continue;
            };
            let scheme = if tls.contains(&host) { "https" } else { "http" };
            let url = format!("{scheme}://{host}");
            if !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
}

fn header(out: &mut String, preview: &Preview, state: &str) {
    let _ = writeln!(out, "{}", marker(&preview.overlay.template));
    let _ = writeln!(
        out,
        "### kdeploy preview `{}`: {state}\n",
        preview.overlay.env
    );
}

/// The comment after a deploy of the preview (succeeded or not).
pub fn deployed(preview: &Preview, report: &Report, run_url: Option<&str>) -> String {
    let ok = report.succeeded();
    let mut out = String::new();
    header(&mut out, preview, if ok { "ready" } else { "**failed**" });
    let head = &report.head[..report.head.len().min(12)];
    let _ = writeln!(
        out,
        "Commit `{head}` of this pull request, as `{}` would deploy it, in namespace {}.\n",
        preview.overlay.from,
        preview
            .namespaces()
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(
        "| app | namespace | address | resources | status |\n| --- | --- | --- | ---: | --- |\n",
    );
    for r in &preview.state.releases {
        let app = &r.release.app;
        let addresses: Vec<String> = urls(preview, app).iter().map(|u| link(u)).collect();
        let failed = report.failed.iter().filter(|f| &f.app == app).count();
        let tracked: Vec<_> = report.tracked.iter().filter(|t| &t.app == app).collect();
        let waiting = tracked.iter().filter(|t| !t.ok()).count();
        let status = if failed > 0 {
            format!(":x: {failed} failed")
        } else if waiting > 0 {
            format!(":x: {waiting} not ready")
        } else if !ok {
            ":grey_question: not finished".to_string()
        } else if tracked.is_empty() {
            ":white_check_mark: applied".to_string()
        } else {
            ":white_check_mark: ready".to_string()
        };
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {status} |",
            md(app),
            preview.overlay.namespace_for(app),
            if addresses.is_empty() {
                "–".to_string()
            } else {
                addresses.join("<br>")
            },
            r.resources.len(),
        );
    }
    let mut problems: Vec<String> = report
        .failed
        .iter()
        .map(|f| format!("- :x: `{}`: {}", f.id, md(&f.error)))
        .collect();
    for t in report.tracked.iter().filter(|t| !t.ok()) {
        let why = match &t.state {
            crate::wait::State::Failed(s) | crate::wait::State::Waiting(s) => s.clone(),
            crate::wait::State::Ready => String::new(),
        };
        problems.push(format!("- :x: `{}`: {}", t.id, md(&why)));
        problems.extend(t.details.iter().take(5).map(|d| format!("  - {}", md(d))));
    }
    if !problems.is_empty() {
        let _ = write!(out, "\n{}\n", problems.join("\n"));
    }
    let _ = write!(
        out,
        "\n{} applied, {} unchanged, {} deleted. The preview is removed when the pull request closes.",
        report.applied.len(),
        report.unchanged,
        report.deleted.len()
    );
    if let Some(url) = run_url {
        let _ = write!(out, " [Workflow run]({url})");
    }
    out.push('\n');
    out
}

/// The comment when the preview could not be rendered or deployed at all.
pub fn not_deployed(template: &str, env: &str, why: &str, run_url: Option<&str>) -> String {
    let mut out = format!(
        "{}\n### kdeploy preview `{env}`: **not deployed**\n\n```text\n{}\n```\n",
        marker(template),
        why.replace("```", "'''")
    );
    if let Some(url) = run_url {
        let _ = writeln!(out, "\n[Workflow run]({url})");
    }
    out
}

/// The comment for a pull request from a fork, which gets no preview.
pub fn fork(template: &str, env: &str, repo: &str) -> String {
    format!(
        "{}\n### kdeploy preview `{env}`: not deployed\n\nThis pull request comes from the fork `{}`. Its workflow runs get no cluster credentials (GitHub withholds secrets from forks), so kdeploy deploys no preview for it; the plan shows what it would change. A maintainer can push the branch to this repository to get a preview.\n",
        marker(template),
        md(repo)
    )
}

/// The comment once the pull request closed and the preview was removed.
pub fn removed(template: &str, removed: &Removed) -> String {
    let mut out = format!("{}\n", marker(template));
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let namespaces: Vec<String> = removed
        .report
        .iter()
        .flat_map(|r| r.deleted.iter())
        .filter_map(|id| id.strip_prefix("Namespace ").map(str::to_string))
        .collect();
    match &removed.report {
        None if !removed.left.is_empty() => {
            let _ = write!(
                out,
                "### kdeploy preview `{}`: **removal failed**\n\nNamespace {} was deleted but is still there (a finalizer of something in it?). Re-run this job, or `kdeploy preview gc`, once it is unblocked.\n",
                removed.env,
                quoted(&removed.left)
            );
        }
        None if !removed.namespaces.is_empty() => {
            let _ = write!(
                out,
                "### kdeploy preview `{}`: removed\n\nThe pull request is closed. No deploy of the preview had finished, so its namespace {} was deleted with everything in it, and waited for until gone.\n",
                removed.env,
                quoted(&removed.namespaces)
            );
        }
        None => {
            let _ = write!(
                out,
                "### kdeploy preview `{}`: removed\n\nThe pull request is closed; nothing of the preview was left in the cluster.\n",
                removed.env
            );
        }
        Some(r) if r.succeeded() => {
            let _ = write!(
                out,
                "### kdeploy preview `{}`: removed\n\nThe pull request is closed: {} deleted{}, and waited for until gone.\n",
                removed.env,
                crate::report::plural(r.deleted.len(), "resource"),
                if namespaces.is_empty() {
                    String::new()
                } else {
                    format!(" (namespace {} included)", quoted(&namespaces))
                }
            );
        }
        Some(r) => {
            let _ = write!(
                out,
                "### kdeploy preview `{}`: **removal failed**\n\n{} deleted; these are left:\n",
                removed.env,
                crate::report::plural(r.deleted.len(), "resource"),
            );
            for f in &r.failed {
                let _ = write!(out, "\n- :x: `{}`: {}", f.id, md(&f.error));
            }
            for t in r.tracked.iter().filter(|t| !t.ok()) {
                let _ = write!(out, "\n- :x: `{}` still there", t.id);
            }
            out.push_str("\n\nThe record was kept: `kdeploy preview gc` (or re-running this job) tries again.\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_links() {
        assert!(is_host("api-pr-1.preview.example.com"));
        assert!(!is_host("evil.com)[x](javascript:alert(1)"));
        assert_eq!(link("https://a.example.com"), "<https://a.example.com>");
        assert_eq!(link("javascript:alert(1)"), "`javascript:alert(1)`");
        assert_eq!(
            link("https://a.example.com)[x]("),
            "`https://a.example.com)[x](`"
        );
    }
}
