//! Markdown to HTML as GitHub renders comments: CommonMark with GitHub's
//! extensions (tables, strikethrough, autolinks, alerts) and raw HTML kept
//! (`<details>`), through comrak. Shared by the tests and
//! `examples/comment_html.rs`.

/// `md` rendered as GitHub would.
pub fn to_html(md: &str) -> String {
    let mut options = comrak::Options::default();
    options.extension.table = true;
    options.extension.strikethrough = true;
    options.extension.autolink = true;
    options.extension.alerts = true;
    options.render.r#unsafe = true;
    comrak::markdown_to_html(md, &options)
}
