//! Block YAML as templates write it, read line by line without a scanner.
//!
//! Parsing rendered manifests was a third of `kdeploy render`, most of it in
//! libyaml's scanner, which reads a character at a time through a token
//! queue. Template output is nearly always block mappings and sequences of
//! one-line scalars: this reads exactly that shape, by lines and
//! indentation, and resolves plain scalars with the rules of [`super::fast`]
//! (serde_norway's). Anything else (block and multi-line scalars, flow
//! collections other than `[]` and `{}`, anchors, tags, complex keys,
//! tabs, control characters, odd indentation, duplicate keys, errors)
//! returns `None`, and the text goes to the event parser and serde_norway,
//! whose value or message stands. `tests/properties.rs` checks that every
//! value returned here is serde_norway's for the same text.

use serde_json::{Map, Value};

use super::MAX_DEPTH;
use super::fast::plain;

/// The value of `text` when it is in the subset.
pub(super) fn parse(text: &str) -> Option<Value> {
    if !plain_characters(text) {
        return None;
    }
    let mut lines = Vec::new();
    // As `text.split('\n')`, with a vectorized search for line ends.
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len()));
    let mut start = 0;
    for end in ends {
        let line = &text[start..end];
        start = end + 1;
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        let content = content.trim_end_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        // Document markers (split off before this) and directives.
        if indent == 0
            && (content.starts_with("---")
                || content.starts_with("...")
                || content.starts_with('%'))
        {
            return None;
        }
        lines.push(Line { indent, content });
    }
    let first = lines.first()?.indent;
    let mut reader = Reader {
        lines,
        at: 0,
        depth: 0,
    };
    let value = reader.block(first)?;
    (reader.at == reader.lines.len()).then_some(value)
}

/// Printable characters and line feeds only: tabs, carriage returns, the
/// other YAML line breaks (NEL, LS, PS), a byte-order mark and what libyaml
/// refuses as control characters all go to the full parser.
fn plain_characters(text: &str) -> bool {
    // Without an early exit per byte, the check of each chunk vectorizes.
    if text.as_bytes().chunks(64).all(|chunk| {
        chunk.iter().fold(true, |ok, &b| {
            ok & (b == b'\n' || (b' '..=b'~').contains(&b))
        })
    }) {
        return true;
    }
    text.chars().all(|c| {
        c == '\n'
            || (' '..='~').contains(&c)
            || (c >= '\u{A0}'
                && !matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
                ))
    })
}

/// A line with content: its indentation and the rest, trailing spaces cut.
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    content: &'a str,
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    at: usize,
    depth: usize,
}

/// `- ` or a lone `-`: a sequence entry.
fn is_entry(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.at).copied()
    }

    /// The block node whose first line is the current one, at `indent`.
    fn block(&mut self, indent: usize) -> Option<Value> {
        if is_entry(self.peek()?.content) {
            self.deeper(|r| r.sequence(indent))
        } else {
            self.deeper(|r| r.mapping(indent, None))
        }
    }

    /// `read` one level deeper, refused past [`MAX_DEPTH`].
    fn deeper(&mut self, read: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let value = read(self);
        self.depth -= 1;
        value
    }

    /// What follows a `key:` or `-` with nothing after it on its line: a
    /// deeper block, a sequence at the key's own indentation (for a key),
    /// or null.
    fn nested(&mut self, indent: usize, key: bool) -> Option<Value> {
        match self.peek() {
            Some(next) if next.indent > indent => {
                let deeper = next.indent;
                self.block(deeper)
            }
            // `key:` then `- item` lines at the key's indentation.
            Some(next) if key && next.indent == indent && is_entry(next.content) => {
                self.block(indent)
            }
            _ => Some(Value::Null),
        }
    }

    fn sequence(&mut self, indent: usize) -> Option<Value> {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_entry(line.content) {
                break;
            }
            let after = &line.content[1..];
            let rest = after.trim_start_matches(' ');
            let column = indent + 1 + (after.len() - rest.len());
            if rest.is_empty() || rest.starts_with('#') {
                self.at += 1;
                items.push(self.nested(indent, false)?);
            } else if is_entry(rest) {
                return None; // `- - x`
            } else if let Some(entry) = key_of(rest) {
                // `- key: value` opens a mapping at the key's column; its
                // first key is already read.
                self.lines[self.at] = Line {
                    indent: column,
                    content: rest,
                };
                items.push(self.deeper(|r| r.mapping(column, Some(entry)))?);
            } else {
                // A deeper line after it (a multi-line plain scalar, or an
                // error) stops the loop below.
                items.push(scalar(rest)?);
                self.at += 1;
            }
        }
        if self.peek().is_some_and(|l| l.indent > indent) {
            return None;
        }
        Some(Value::Array(items))
    }

    /// A block mapping at `indent`; `first` is its first line's entry when
    /// the caller has read it already.
    fn mapping(&mut self, indent: usize, mut first: Option<(String, &'a str)>) -> Option<Value> {
        let mut map = Map::new();
        while let Some(line) = self.peek() {
            if line.indent != indent {
                if line.indent > indent {
                    return None;
                }
                break;
            }
            let (key, rest) = match first.take() {
                Some(entry) => entry,
                None => key_of(line.content)?,
            };
            self.at += 1;
            let value = if rest.is_empty() || rest.starts_with('#') {
                self.nested(indent, true)?
            } else {
                // A deeper line after it stops the loop above.
                scalar(rest)?
            };
            if map.insert(key, value).is_some() {
                return None; // duplicate keys: the full path reports them
            }
        }
        Some(Value::Object(map))
    }
}

/// The key of a `key: value` or `key:` line and what follows the colon
/// (spaces skipped); `None` when the line is not such a line in the subset.
fn key_of(content: &str) -> Option<(String, &str)> {
    let (key, after) = match content.as_bytes().first()? {
        b'"' | b'\'' => {
            let (key, after) = quoted(content)?;
            (key, after.strip_prefix(':')?)
        }
        _ => {
            // A comment before the colon leaves no key.
            let Some(Mark::Colon(colon)) = first_mark(content) else {
                return None;
            };
            let key = &content[..colon];
            if !plain_start(key) || key.ends_with(' ') {
                return None;
            }
            // Keys are strings; `1:` or `true:` keep serde_norway's spelling.
            let Some(Value::String(key)) = plain(key.to_string()) else {
                return None;
            };
            (key, &content[colon + 1..])
        }
    };
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some((key, after.trim_start_matches(' ')))
}

/// What ends a plain scalar's text on its line.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mark {
    /// A `:` followed by a space or the end: where a plain key ends.
    Colon(usize),
    /// A ` #`: where a comment starts (the space's index).
    Comment(usize),
}

/// The first [`Mark`] in `s`, both kinds in one vectorized pass. Searches
/// set up per short line (this one was two) were 8% of `kdeploy render`.
fn first_mark(s: &str) -> Option<Mark> {
    let b = s.as_bytes();
    memchr::memchr2_iter(b':', b'#', b).find_map(|at| {
        if b[at] == b':' {
            matches!(b.get(at + 1), None | Some(b' ')).then_some(Mark::Colon(at))
        } else {
            (at > 0 && b[at - 1] == b' ').then(|| Mark::Comment(at - 1))
        }
    })
}

/// A plain scalar may start here: not with an indicator, and `-` only
/// before a character that is not a space (`-1`, `-foo`).
fn plain_start(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        None => false,
        Some(b'-') => b.get(1).is_some_and(|c| *c != b' '),
        Some(c) => !b"?:,[]{}#&*!|>'\"%@`".contains(c),
    }
}

/// A value written after `key: ` or `- `, on one line.
fn scalar(rest: &str) -> Option<Value> {
    match rest.as_bytes().first()? {
        b'"' | b'\'' => {
            let (text, after) = quoted(rest)?;
            only_comment(after).then_some(Value::String(text))
        }
        b'[' => {
            let (items, after) = flow_sequence(rest)?;
            only_comment(after).then_some(Value::Array(items))
        }
        b'{' => only_comment(rest.strip_prefix("{}")?).then(|| Value::Object(Map::new())),
        _ => {
            if !plain_start(rest) {
                return None;
            }
            // A colon before any comment makes it a mapping.
            let text = match first_mark(rest) {
                Some(Mark::Colon(_)) => return None,
                Some(Mark::Comment(i)) => rest[..i].trim_end_matches(' '),
                None => rest,
            };
            plain(text.to_string())
        }
    }
}

/// A one-line flow sequence of scalars (`[ALL]`, `["a","b"]` as `toJson`
/// writes it) and what follows its `]`. Plain items keep clear of every
/// character that could make them something else in flow context.
fn flow_sequence(s: &str) -> Option<(Vec<Value>, &str)> {
    let mut rest = s.strip_prefix('[')?.trim_start_matches(' ');
    let mut items = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        return Some((items, after));
    }
    loop {
        let (item, after) = match rest.as_bytes().first()? {
            b'"' | b'\'' => {
                let (text, after) = quoted(rest)?;
                (Value::String(text), after)
            }
            _ => {
                let end = rest.find([',', ']'])?;
                let text = rest[..end].trim_end_matches(' ');
                if !plain_start(text) || text.contains([':', '#', '"', '\'', '[', '{', '}']) {
                    return None;
                }
                (plain(text.to_string())?, &rest[end..])
            }
        };
        items.push(item);
        let after = after.trim_start_matches(' ');
        if let Some(after) = after.strip_prefix(']') {
            return Some((items, after));
        }
        rest = after.strip_prefix(',')?.trim_start_matches(' ');
        // No empty entries (`[a,,b]`, `[a,]`).
        if rest.starts_with([',', ']']) {
            return None;
        }
    }
}

/// Nothing, or a comment after a space: all that may follow a quoted or
/// flow scalar on its line.
fn only_comment(after: &str) -> bool {
    let trimmed = after.trim_start_matches(' ');
    after.is_empty() || (after.starts_with(' ') && (trimmed.is_empty() || trimmed.starts_with('#')))
}

/// A quoted scalar that closes on its line: its text and what follows the
/// closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let quote = s.as_bytes()[0];
    let body = &s[1..];
    let mut out = String::new();
    if quote == b'\'' {
        let mut rest = body;
        loop {
            let end = rest.find('\'')?;
            out.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            match rest.strip_prefix('\'') {
                Some(more) => {
                    out.push('\'');
                    rest = more;
                }
                None => return Some((out, rest)),
            }
        }
    }
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    '\\' | '"' | '/' => out.push(e),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    ' ' => out.push(' '),
                    'x' | 'u' | 'U' => {
                        let width = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let start = i + 2;
                        let hex = body.get(start..start + width)?;
                        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return None;
                        }
                        out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                        for _ in 0..width {
                            chars.next();
                        }
                    }
                    _ => return None,
                }
            }
            _ => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(text: &str) -> Option<Value> {
        serde_norway::from_str(text).ok()
    }

    #[test]
    fn takes_the_built_in_chart_output() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/_gen/production/web/resources.yaml"
        ))
        .unwrap();
        for doc in super::super::split_documents(&text) {
            if super::super::is_blank(doc.text) {
                continue;
            }
            let ours = parse(doc.text).expect("in the subset");
            assert_eq!(Some(ours), serde(doc.text));
        }
    }

    #[test]
    fn takes_what_templates_write() {
        for text in [
            "a: 1\nb:\n  - x\n  - y: 2\n    z: [ALL]\n",
            "a:\n- 1\n- two\nb: {}\n",
            "  a: 'it''s'\n  b: \"\\u00e9\\n\" # note\n",
            "list:\n  -\n    - a\n  - []\n",
            "args: [\"--port\", \"8080\", 3, true]\nk: v#not a comment\n",
            "http://x: 1\nempty:\nlast: ~\n",
        ] {
            let ours = parse(text);
            assert!(ours.is_some(), "{text:?}");
            assert_eq!(ours, serde(text), "{text:?}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_full_parser() {
        for text in [
            "a: |\n  x\n",
            "a: >\n  x\n",
            "a: b\n  c\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: 1\na: 2\n",
            "a: {b: 1}\n",
            "a: [b, [c]]\n",
            "a: [b,]\n",
            "a: [b: c]\n",
            "a:\tb\n",
            "a: b\r\n",
            "a: \"multi\n  line\"\n",
            "? a\n: b\n",
            "- - a\n",
            "a: b: c\n",
            "a: 1\n b: 2\n",
            "a:\n  b: 1\n c: 2\n",
            "1: a\n",
            "true: a\n",
            "a: \"\\q\"\n",
            "a: \"\\ud800\"\n",
            "a: 'x' y\n",
            "plain scalar\n",
            "--- a\n",
            "a: -\n",
            "a: \u{85}\n",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        let deep: String = (0..=MAX_DEPTH)
            .map(|d| format!("{}a:\n", " ".repeat(d)))
            .collect();
        assert_eq!(parse(&deep), None);
    }
}
