//! Renders a plan comment (markdown on stdin) to an HTML page the way
//! GitHub renders comments (CommonMark with GitHub's extensions, through
//! comrak), for `scripts/comment-screenshot`. Not part of kdeploy.

use std::io::Read as _;

#[path = "../tests/gfm.rs"]
mod gfm;

fn main() -> std::io::Result<()> {
    let mut md = String::new();
    std::io::stdin().read_to_string(&mut md)?;
    let body = gfm::to_html(&md);
    // Open the first app section with a change (`~`), as a reviewer would.
    let section = "<details><summary><b>";
    let first_change = body.find("<h4>~").unwrap_or(0);
    let body = match body[..first_change].rfind(section) {
        Some(at) => format!(
            "{}<details open>{}",
            &body[..at],
            &body[at + "<details>".len()..]
        ),
        None => body,
    };
    println!(
        "<!doctype html><meta charset=utf-8><style>{}</style><main>{body}</main>",
        CSS
    );
    Ok(())
}

/// A few rules of GitHub's comment styles (Primer), enough to read it.
const CSS: &str = "body{margin:0;background:#fff;font:14px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328}\
main{max-width:860px;margin:16px;padding:16px;border:1px solid #d1d9e0;border-radius:6px}\
h3{font-size:1.25em;margin:0 0 16px}h4{font-size:1em;margin:16px 0 8px}\
table{border-collapse:collapse;margin:0 0 16px}td,th{border:1px solid #d1d9e0;padding:6px 13px}\
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eff1f3;padding:.2em .4em;border-radius:6px}\
pre{background:#f6f8fa;padding:16px;border-radius:6px;overflow:auto}pre code{background:none;padding:0}\
summary{cursor:pointer;margin:8px 0}details>details,details>*:not(summary){margin-left:16px}\
.markdown-alert{padding:8px 16px;margin:0 0 16px;border-left:.25em solid #d1d9e0}\
.markdown-alert-warning{border-color:#9a6700}.markdown-alert-caution{border-color:#d1242f}.markdown-alert-note{border-color:#0969da}\
.markdown-alert-title{font-weight:600;margin:0}";
