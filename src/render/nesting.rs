//! How deep a chart's blocks nest, counted from its text before rendering.
//!
//! handlebars renders each `{{#if}}`, `{{#each}}` and `{{#with}}` (and each
//! partial it expands) one stack frame deeper. A pull request's chart could
//! nest a few thousand blocks in a partial that includes itself through
//! `include` 32 times: the process would overflow its stack and abort
//! with no file named. Each template may nest blocks [`MAX_BLOCKS`] deep,
//! its `{{> partial}}` expansions included; `include` adds the depth of
//! what it renders to a per-thread sum bounded by [`MAX_RENDER`].

use std::collections::HashMap;

/// Block nesting one template may write, its partials expanded.
pub const MAX_BLOCKS: usize = 64;

/// Block nesting one render may reach through `include`s.
pub const MAX_RENDER: usize = 256;

/// One template's blocks: the deepest nesting (and its line) and the
/// partials it expands with `{{> name}}`, at the depth of each call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The deepest nesting of its own blocks.
    pub max: usize,
    /// The 1-based line where it is reached.
    pub line: usize,
    /// `(partial, depth)` of each `{{> partial}}` / `{{#> partial}}`.
    pub calls: Vec<(&'a str, usize)>,
}

/// Scans `text`'s mustaches: `{{#…}}` opens a block, `{{/…}}` closes one,
/// `{{> name}}` expands a partial; comments are skipped.
pub fn scan(text: &str) -> Scan<'_> {
    let mut out = Scan::default();
    let mut depth = 0usize;
    let mut rest = text;
    let mut offset = 0;
    while let Some(pos) = rest.find("{{") {
        let at = offset + pos;
        rest = &rest[pos + 2..];
        offset = at + 2;
        let tag = rest.trim_start_matches(['~', '{']).trim_start();
        if tag.starts_with('!') {
            // `{{!-- … --}}` / `{{! … }}`: skip to its end.
            let end = if tag.starts_with("!--") {
                rest.find("--}}").map(|e| e + 4)
            } else {
                rest.find("}}").map(|e| e + 2)
            };
            let Some(end) = end else { break };
            rest = &rest[end..];
            offset += end;
            continue;
        }
        if let Some(after) = tag.strip_prefix('#') {
            depth += 1;
            if depth > out.max {
                out.max = depth;
                out.line = text[..at].matches('\n').count() + 1;
            }
            if let Some(name) = after.trim_start().strip_prefix('>') {
                out.calls.push((partial_name(name), depth));
            }
        } else if tag.starts_with('/') {
            depth = depth.saturating_sub(1);
        } else if let Some(name) = tag.strip_prefix('>') {
            out.calls.push((partial_name(name), depth));
        }
    }
    out
}

fn partial_name(after: &str) -> &str {
    after
        .trim_start()
        .trim_start_matches(['"', '\''])
        .split(|c: char| c.is_whitespace() || matches!(c, '}' | '"' | '\'' | '~'))
        .next()
        .unwrap_or("")
}

/// The nesting `text` reaches with its `{{> partial}}` expansions, given
/// each partial's text. A cycle (reported elsewhere) counts once.
pub fn expanded<'a>(
    text: &'a str,
    partial: &dyn Fn(&str) -> Option<&'a str>,
    memo: &mut HashMap<&'a str, usize>,
    stack: &mut Vec<&'a str>,
) -> usize {
    let s = scan(text);
    let mut deepest = s.max;
    for (name, at) in s.calls {
        if stack.contains(&name) {
            continue;
        }
        let below = match memo.get(name) {
            Some(d) => *d,
            None => {
                let Some(child) = partial(name) else { continue };
                stack.push(name);
                let d = expanded(child, partial, memo, stack);
                stack.pop();
                memo.insert(name, d);
                d
            }
        };
        deepest = deepest.max(at + below);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_partial_calls_are_counted_from_the_text() {
        let s = scan(
            "a\n{{#if x}}{{#each y}}\n{{> p}}{{!-- {{#if}} --}}{{/each}}{{else}}{{/if}}{{#> q}}{{/q}}",
        );
        assert_eq!(s.max, 2);
        assert_eq!(s.line, 2);
        assert_eq!(s.calls, [("p", 2), ("q", 1)]);
        let texts: HashMap<&str, &str> = [
            ("p", "{{#if a}}{{#if b}}{{> r}}{{/if}}{{/if}}"),
            ("r", "{{#with c}}{{/with}}"),
        ]
        .into_iter()
        .collect();
        let partial = |n: &str| texts.get(n).copied();
        let mut memo = HashMap::new();
        assert_eq!(
            expanded(
                "{{#if z}}{{> p}}{{/if}}",
                &partial,
                &mut memo,
                &mut Vec::new()
            ),
            4
        );
    }
}
