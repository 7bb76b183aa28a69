//! YAML in and out, in one place.
//!
//! kdeploy uses `serde_norway`, the maintained fork of `serde_yaml` (see the
//! README for why not `serde-saphyr`: on rendered manifests it parses about
//! 2.6x slower, and parsing is most of a full render). Values are held as
//! `serde_json::Value` because that is what Kubernetes clients speak and its
//! maps are sorted, which makes [`to_canonical`] a stable form for diffs.
//! [`parse`] builds the common subset of YAML straight from parser events
//! (module `fast`) and leaves the rest to serde_norway.

use serde_json::Value;

mod block;
mod canonical;
mod fast;

/// A YAML syntax or type error with its position in the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The parser's message without position.
    pub message: String,
    /// 1-based line in the parsed text.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What usually causes this error, when the text shows it.
    pub help: Option<String>,
}

impl ParseError {
    fn at(message: String, line: usize, column: usize) -> ParseError {
        ParseError {
            message,
            line: Some(line),
            column: Some(column),
            help: None,
        }
    }

    /// The problem as a diagnostic on `path`: "`what`: message", with the help.
    pub fn diagnostic(&self, path: &str, what: &str) -> crate::diag::Diagnostic {
        let d = crate::diag::Diagnostic::new(
            crate::diag::Location::at(path, self.line, self.column),
            format!("{what}: {}", self.message),
        );
        match &self.help {
            Some(h) => d.help(h.clone()),
            None => d,
        }
    }

    /// Adds a hint for the usual causes, read from the offending line.
    fn with_hint(mut self, text: &str) -> ParseError {
        let line = self
            .line
            .and_then(|l| text.lines().nth(l.saturating_sub(1)))
            .unwrap_or("");
        let indent: &str = &line[..line.len() - line.trim_start().len()];
        let m = self.message.as_str();
        self.help = if indent.contains('\t')
            || m.contains("cannot start any token") && line.contains('\t')
        {
            Some("YAML does not allow tabs for indentation: indent with spaces".into())
        } else if m.contains("mapping values are not allowed") {
            Some("a value that contains `: ` must be quoted, e.g. `command: \"echo a: b\"`".into())
        } else if m.contains("did not find expected key")
            || m.contains("could not find expected ':'")
            || m.contains("did not find expected '-' indicator")
        {
            Some("check the indentation: the keys of one map (and the items of one list) must start in the same column".into())
        } else if m.contains("found character that cannot start any token") {
            Some("a value starting with `@`, `` ` `` or `%` must be quoted".into())
        } else {
            self.help
        };
        self
    }
}

/// How deeply YAML may nest: far more than any manifest (a CRD's schema
/// nests about 20 levels), below serde_norway's own limit of 128.
pub const MAX_DEPTH: usize = 100;

/// Refuses text that nests deeper than [`MAX_DEPTH`], in one pass and before
/// the parser sees it: libyaml's work grows with the square of the nesting
/// of flow collections (`[[[[…`), so a short file could take a minute.
///
/// Flow nesting is counted exactly (brackets outside quotes and comments;
/// in block context only where a collection can start); block nesting is
/// bounded by indentation and `- ` prefixes.
///
/// # Errors
/// When the text nests too deeply.
pub fn check_depth(text: &str) -> Result<(), ParseError> {
    let too_deep = |line: usize, column: usize| {
        ParseError::at(
            format!("nesting deeper than {MAX_DEPTH} levels"),
            line,
            column,
        )
    };
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    for (line_no, line) in (1usize..).zip(text.split('\n')) {
        let bytes = line.as_bytes();
        if flow == 0 && quote.is_none() {
            // Block context: each level needs one more column of indentation
            // or one more `- ` / `? ` / `: ` on the line.
            let indent = bytes.iter().take_while(|b| **b == b' ').count();
            let mut depth = indent;
            let mut i = indent;
            while i + 1 < bytes.len()
                && matches!(bytes[i], b'-' | b'?' | b':')
                && bytes[i + 1] == b' '
            {
                depth += 1;
                i += 2;
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
            }
            if depth > 4 * MAX_DEPTH {
                return Err(too_deep(line_no, i + 1));
            }
        }
        let mut prev = b' ';
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(q) => {
                    if b == q {
                        if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            quote = None;
                        }
                    } else if q == b'"' && b == b'\\' {
                        i += 1;
                    }
                }
                None => {
                    let token_start = matches!(prev, b' ' | b'\t' | b'[' | b'{' | b',') || i == 0;
                    match b {
                        b'#' if matches!(prev, b' ' | b'\t') || i == 0 => break,
                        b'"' | b'\'' if token_start || flow > 0 && prev == b':' => quote = Some(b),
                        b'[' | b'{' if flow > 0 || token_start => {
                            flow += 1;
                            if flow > MAX_DEPTH {
                                return Err(too_deep(line_no, i + 1));
                            }
                        }
                        b']' | b'}' if flow > 0 => flow -= 1,
                        _ => {}
                    }
                }
            }
            prev = b;
            i += 1;
        }
        // A quoted scalar in block context may span lines; a single-quoted
        // or double-quoted one keeps `quote` across the newline.
    }
    Ok(())
}

/// The text ending in a line break. libyaml-safer 0.3 panics ("unexpected
/// end of input") on some texts that end inside a block scalar's
/// indentation, e.g. `"|\n  - "` (found by the property tests). Keys,
/// lines and structure stay the same; only a final block scalar gains a
/// line break, which is why [`parse`] never builds values from this.
fn with_final_newline(text: &str) -> std::borrow::Cow<'_, str> {
    if text.ends_with('\n') {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(format!("{text}\n"))
    }
}

/// A key or scalar of a YAML document with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The keys (and list indices) leading to it.
    pub path: Vec<String>,
    /// The scalar value; `None` for a key whose value is a map or list.
    pub value: Option<String>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Every key and scalar of a single-document text with its position, for
/// pointing errors at the user's line; duplicate keys are errors naming both
/// lines. Anchors, aliases and tags are read as plain nodes.
///
/// # Errors
/// Syntax errors (as the parser words them) and duplicate keys.
pub fn index(text: &str) -> Result<Vec<Located>, ParseError> {
    check_depth(text)?;
    index_checked(text)
}

/// Whether libyaml-safer may panic on `text`: 0.3 panics on a tag directly
/// before ',' in a flow collection (`[!a, b]`, "TODO: What is expected
/// here?"; simonask/libyaml-safer#7), which libyaml reads as a tag on an
/// empty node. That needs a '!' and a flow collection.
pub(super) fn may_panic_libyaml_safer(text: &str) -> bool {
    text.contains('!') && (text.contains('[') || text.contains('{'))
}

/// Where and what libyaml-safer's panic that [`index`] catches is: `main`'s
/// panic hook keeps it out of the output (every other panic is printed).
pub const LIBYAML_SAFER: &str = "libyaml-safer";
/// See [`LIBYAML_SAFER`].
pub const LIBYAML_SAFER_TODO: &str = "TODO: What is expected here?";

/// [`index`] of a text whose depth was checked already.
fn index_checked(text: &str) -> Result<Vec<Located>, ParseError> {
    if !may_panic_libyaml_safer(text) {
        return index_events(text);
    }
    std::panic::catch_unwind(|| index_events(text)).unwrap_or_else(|_| {
        let (line, column) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| l.find('!').map(|c| (i + 1, c + 1)))
            .unwrap_or((1, 1));
        Err(ParseError::at(
            "a tag directly before ',' in a flow collection (`[!tag, …]`) cannot be read here; put a space before the comma or write the list in block style".to_string(),
            line,
            column,
        ))
    })
}

/// [`index_checked`] by libyaml-safer's events.
fn index_events(text: &str) -> Result<Vec<Located>, ParseError> {
    use libyaml_safer::{EventData, Parser};
    /// A collection being read. In a map, `key` is the key whose value
    /// comes next (`None`: a key comes next).
    enum Frame {
        Seq(usize),
        Map {
            key: Option<String>,
            seen: std::collections::HashMap<String, usize>,
        },
    }
    let text = with_final_newline(text);
    let mut bytes = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut bytes);
    let mut stack: Vec<Frame> = Vec::new();
    // The path of the collection on top of the stack.
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    loop {
        let event = parser.parse().map_err(|e| {
            let mark = e.problem_mark();
            ParseError::at(
                e.problem().to_string(),
                mark.map_or(1, |m| m.line as usize + 1),
                mark.map_or(1, |m| m.column as usize + 1),
            )
        })?;
        let (line, column) = (
            event.start_mark.line as usize + 1,
            event.start_mark.column as usize + 1,
        );
        // The path segment of the node starting now, or `None` when the
        // node is a key.
        let segment = match stack.last_mut() {
            None => Some(None),
            Some(Frame::Seq(i)) => {
                *i += 1;
                Some(Some((*i - 1).to_string()))
            }
            Some(Frame::Map { key: Some(k), .. }) => Some(Some(std::mem::take(k))),
            Some(Frame::Map { key: None, .. }) => None,
        };
        let is_value = segment.is_some();
        // After a value, the map expects a key again.
        let done_value = |stack: &mut Vec<Frame>| {
            if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                *key = None;
            }
        };
        match event.data {
            EventData::Scalar { value, .. } | EventData::Alias { anchor: value } => {
                if is_value {
                    let mut at = path.clone();
                    if let Some(Some(seg)) = segment {
                        at.push(seg);
                    }
                    out.push(Located {
                        path: at,
                        value: Some(value),
                        line,
                        column,
                    });
                    done_value(&mut stack);
                } else if let Some(Frame::Map { key, seen }) = stack.last_mut() {
                    if let Some(first) = seen.insert(value.clone(), line) {
                        return Err(ParseError {
                            message: format!(
                                "duplicate key `{value}` (first on line {first}, again on line {line})"
                            ),
                            line: Some(line),
                            column: Some(column),
                            help: Some("a key may appear once per map: delete one of them (YAML would silently keep the last)".into()),
                        });
                    }
                    let mut at = path.clone();
                    at.push(value.clone());
                    out.push(Located {
                        path: at,
                        value: None,
                        line,
                        column,
                    });
                    *key = Some(value);
                }
            }
            EventData::SequenceStart { .. } | EventData::MappingStart { .. } => {
                // A collection used as a key has no name in a path: "?".
                if !stack.is_empty() {
                    path.push(match segment {
                        Some(Some(seg)) => seg,
                        Some(None) | None => "?".into(),
                    });
                }
                stack.push(if matches!(event.data, EventData::SequenceStart { .. }) {
                    Frame::Seq(0)
                } else {
                    Frame::Map {
                        key: None,
                        seen: std::collections::HashMap::new(),
                    }
                });
            }
            EventData::SequenceEnd | EventData::MappingEnd => {
                stack.pop();
                let segment = if stack.is_empty() { None } else { path.pop() };
                match stack.last_mut() {
                    // The collection was a complex key: its value comes next.
                    Some(Frame::Map {
                        key: key @ None, ..
                    }) if segment.as_deref() == Some("?") => {
                        *key = Some("?".into());
                    }
                    _ => done_value(&mut stack),
                }
            }
            EventData::StreamEnd => return Ok(out),
            _ => {}
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<serde_norway::Error> for ParseError {
    fn from(e: serde_norway::Error) -> Self {
        let location = e.location();
        let mut message = e.to_string();
        // The parser appends its own "at line N column M"; we report it separately.
        if let Some(pos) = message.find(" at line ") {
            message.truncate(pos);
        }
        ParseError {
            message,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            help: None,
        }
    }
}

/// Parses one YAML document into a value (`Null` when it holds nothing).
///
/// # Errors
/// When the text is not valid YAML or holds several documents.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    if is_blank(text) {
        return Ok(Value::Null);
    }
    // Both fast paths stop by themselves at MAX_DEPTH; the depth check (one
    // more pass over the text) is needed only before the other parsers.
    if let Some(value) = block::parse(text) {
        return Ok(value);
    }
    match fast::outcome(text) {
        fast::Outcome::Value(value) => return Ok(value),
        fast::Outcome::Duplicate => {
            index(text)?;
        }
        fast::Outcome::Other => {
            check_depth(text)?;
            // serde_norway keeps the last of duplicate keys; refuse them first.
            if let Err(e) = index_checked(text)
                && e.message.starts_with("duplicate key")
            {
                return Err(e);
            }
        }
    }
    serde_norway::from_str(text).map_err(|e| ParseError::from(e).with_hint(text))
}

/// Parses YAML into a typed value, for settings files.
///
/// # Errors
/// When the text is not valid YAML or does not match `T`.
pub fn parse_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let text = if is_blank(text) { "{}" } else { text };
    index(text)?;
    serde_norway::from_str(text).map_err(|e| ParseError::from(e).with_hint(text))
}

/// The canonical text of a value: sorted keys, two-space indent, block
/// scalars for multi-line strings. Equal values always give equal text.
/// Values of the usual shapes are written directly ([`canonical`]), the
/// others by libyaml's emitter: the same text either way.
pub fn to_canonical(value: &Value) -> String {
    let mut out = Vec::new();
    if canonical::write_document(value, &mut out)
        && let Ok(text) = String::from_utf8(out)
    {
        return text;
    }
    emitted_canonical(value)
}

/// [`to_canonical`] by libyaml's emitter alone: the reference the direct
/// writer is tested against.
pub fn emitted_canonical(value: &Value) -> String {
    // Serializing a `serde_json::Value` cannot fail: keys are strings and
    // there are no non-finite floats in JSON numbers.
    serde_norway::to_string(value).unwrap_or_else(|e| format!("# unserializable: {e}\n"))
}

/// The canonical text of several documents, separated by `---` lines: the
/// same text as [`to_canonical`] of each joined with `---`. Documents of the
/// usual shapes are written directly ([`canonical`]); the others by one
/// emitter per document.
pub fn to_canonical_documents<'a>(values: impl IntoIterator<Item = &'a Value>, out: &mut Vec<u8>) {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"---\n");
        }
        if !canonical::write_document(v, out) {
            out.extend_from_slice(emitted_canonical(v).as_bytes());
        }
    }
}

/// True when the text holds no YAML content (only blanks and comments).
pub fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim_start();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// One document of a multi-document stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Document<'a> {
    /// Its text, without the `---` separator line.
    pub text: &'a str,
    /// 1-based line of its first line in the whole stream.
    pub first_line: usize,
    /// 0-based index among the stream's documents (blank ones included).
    pub index: usize,
}

/// A value as one line of a report shows it: strings bare, a missing field
/// `(unset)`, anything else as JSON.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Splits a stream at `---` lines (column 0, as YAML requires).
///
/// Done on text rather than by the parser so each document can be parsed on
/// its own, errors keep exact lines, and one bad document does not hide the
/// others.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let bytes = text.as_bytes();
    // Only lines starting with `---` or `...` can be separators: find those
    // (a vectorized search) instead of walking every line.
    let mut candidates: Vec<usize> = Vec::new();
    if bytes.starts_with(b"---") || bytes.starts_with(b"...") {
        candidates.push(0);
    }
    for marker in [&b"\n---"[..], &b"\n..."[..]] {
        candidates.extend(memchr::memmem::find_iter(bytes, marker).map(|i| i + 1));
    }
    candidates.sort_unstable();
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let (mut counted_to, mut line_no) = (0usize, 1usize);
    for offset in candidates {
        let end = memchr::memchr(b'\n', &bytes[offset..]).map_or(bytes.len(), |i| offset + i + 1);
        let line = &text[offset..end];
        let content = line.trim_end_matches(['\n', '\r']);
        let is_sep = content == "---"
            || content.starts_with("--- ")
            || content.starts_with("---\t")
            || content == "...";
        if !is_sep {
            continue;
        }
        line_no += bytes[counted_to..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted_to = offset;
        docs.push(Document {
            text: &text[start..offset],
            first_line: start_line,
            index: docs.len(),
        });
        // A "--- value" line carries content; keep it after the marker.
        let rest = content.get(3..).unwrap_or("").trim();
        let inline = content.starts_with("--- ") && !rest.is_empty() && !rest.starts_with('#');
        if inline {
            start = offset + 4;
            start_line = line_no;
        } else {
            start = offset + line.len();
            start_line = line_no + 1;
        }
    }
    docs.push(Document {
        text: &text[start..],
        first_line: start_line,
        index: docs.len(),
    });
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_before_a_comma_in_a_flow_list_is_read_as_serde_norway_reads_it() {
        // libyaml-safer's scanner panics on these (found by the property
        // test `the_yaml_reader_reads_what_serde_norway_reads`).
        for text in ["A: [!a, \"\"]\n", "- {k: !x, v: 1}\n", "a: [b, !c,d]\n"] {
            let theirs: Result<Value, _> = serde_norway::from_str(text);
            assert_eq!(parse(text).ok(), theirs.ok(), "{text:?}");
        }
        // Where lines are wanted, the reader says what to change.
        let e = index("a: 1\nb: [x, !c,d]\n").expect_err("cannot be indexed");
        assert_eq!((e.line, e.column), (Some(2), Some(8)), "{e}");
        assert!(e.message.contains("put a space before the comma"), "{e}");
        assert!(index("b: [x, !c ,d]\n").is_ok());
        // libyaml-safer#6 needs a text without a final line break, which
        // neither path gives it.
        let text = "a: ''|\n 0";
        let theirs: Result<Value, _> = serde_norway::from_str(text);
        assert_eq!(parse(text).ok(), theirs.ok());
        let _ = index(text);
    }

    #[test]
    fn split_keeps_lines() {
        let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n---\n\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].text, "a: 1\n");
        assert_eq!(docs[1].text, "b: 2\nc: 3\n");
        assert_eq!(docs[1].first_line, 3);
        assert!(is_blank(docs[2].text));
    }

    #[test]
    fn leading_separator_gives_empty_first_document() {
        let docs = split_documents("---\na: 1\n");
        assert_eq!(docs.len(), 2);
        assert!(is_blank(docs[0].text));
        assert_eq!(docs[1].first_line, 2);
    }

    #[test]
    fn parse_error_has_position() {
        let err = parse("a: b\n  c: [\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(!err.message.contains("at line"), "{}", err.message);
    }

    #[test]
    fn canonical_sorts_keys_and_quotes_ambiguous_strings() {
        let v = parse("b: '8080'\na: 1\nc: |\n  x\n  y\n").unwrap();
        assert_eq!(to_canonical(&v), "a: 1\nb: '8080'\nc: |\n  x\n  y\n");
        assert_eq!(parse(&to_canonical(&v)).unwrap(), v);
    }

    /// The fast path gives serde_norway's value, or leaves the text to it.
    #[test]
    fn fast_path_agrees_with_serde_norway() {
        let scalars = [
            "",
            "~",
            "null",
            "Null",
            "NULL",
            "nULL",
            "true",
            "True",
            "TRUE",
            "tRUE",
            "false",
            "FALSE",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "0",
            "-0",
            "+0",
            "00",
            "007",
            "-007",
            "+007",
            "0755",
            "8080",
            "+12",
            "-12",
            "--12",
            "+-12",
            "-+12",
            "1_000",
            "0x1F",
            "0X1F",
            "-0x1F",
            "+0x1F",
            "0x-1",
            "0x+1",
            "0xZZ",
            "0o17",
            "-0o17",
            "0o8",
            "0b101",
            "-0b101",
            "0b2",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "340282366920938463463374607431768211455",
            "999999999999999999999999999999999999999999",
            "1.5",
            "-1.5",
            "+1.5",
            ".5",
            "-.5",
            "5.",
            "1e3",
            "1E3",
            "-1e-3",
            "1e400",
            "-1e400",
            ".inf",
            "-.inf",
            "+.inf",
            ".Inf",
            ".NaN",
            ".nan",
            "nan",
            "inf",
            "infinity",
            "0.0",
            "00.5",
            "1.2.3",
            "1:30",
            "12:30:45",
            "2024-01-01",
            "2024-01-01T10:00:00Z",
            "1.0.0",
            "v1",
            "100m",
            "128Mi",
            "0.5Gi",
            "'quoted'",
            "\"8080\"",
            "'true'",
            "\"null\"",
            "|\n  block\n",
            ">\n  folded\n",
            "a b",
            "http://x:80/y",
            "\"\\u00e9\"",
            "é",
            "[1, '2', three]",
            "{a: 1}",
        ];
        for s in scalars {
            for text in [format!("k: {s}\n"), format!("- {s}\n")] {
                // `None` leaves the text to serde_norway.
                if let Some(v) = fast::parse(&text) {
                    let serde: Option<Value> = serde_norway::from_str(&text).ok();
                    assert_eq!(Some(v), serde, "{text:?}");
                }
            }
            // Keys: strings only; anything else is left to serde.
            let text = format!("{s}: 1\n");
            if let Some(v) = fast::parse(&text) {
                let serde: Value = serde_norway::from_str(&text).unwrap();
                assert_eq!(v, serde, "{text:?}");
            }
        }
        // The common forms take the fast path (so the agreement above is not vacuous).
        let fast_values = fast::parse(
            "a: 8080\nb: '8080'\nc: 0x1F\nd: -1.5\ne: 007\nf: ~\ng: true\nh: 2024-01-01\ni: -12\nj: |\n  x\n",
        );
        assert_eq!(
            fast_values,
            Some(serde_json::json!({
                "a": 8080, "b": "8080", "c": 31, "d": -1.5, "e": "007", "f": null,
                "g": true, "h": "2024-01-01", "i": -12, "j": "x\n"
            }))
        );
        // Outside the subset or invalid: always serde_norway's answer.
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: !custom x\n",
            "a: 1\na: 2\n",
            "a: [\n",
            "a: b\n  c: d\n",
            "? [1]\n: x\n",
            "a: 1\n---\nb: 2\n",
            "<<: {a: 1}\nb: 2\n",
        ] {
            if text.starts_with("<<") {
                // A merge key is a plain string key to serde_norway too.
                assert_eq!(
                    fast::parse(text),
                    serde_norway::from_str(text).ok(),
                    "{text:?}"
                );
            } else {
                assert_eq!(fast::parse(text), None, "{text:?}");
            }
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(fast::parse(&deep), None);
    }

    #[test]
    fn fast_path_takes_the_built_in_chart_output() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/_gen/production/web/resources.yaml"
        ))
        .unwrap();
        for doc in split_documents(&text).iter().filter(|d| !is_blank(d.text)) {
            let fast = fast::parse(doc.text).expect("in the fast subset");
            assert_eq!(fast, serde_norway::from_str::<Value>(doc.text).unwrap());
        }
    }

    #[test]
    fn texts_that_end_inside_a_block_scalar_do_not_panic() {
        // libyaml-safer 0.3 panicked on these (found by tests/properties.rs).
        for text in ["|\n  - ", "a: |\n  - ", "- >\n  x"] {
            let _ = parse(text);
            let _ = index(text);
        }
        assert_eq!(parse("a: |\n  x").unwrap(), serde_json::json!({"a": "x"}));
    }

    #[test]
    fn blank_and_comment_only_documents_are_null() {
        assert_eq!(parse("# nothing\n\n").unwrap(), Value::Null);
    }
}
