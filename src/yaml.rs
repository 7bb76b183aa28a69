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

/// A YAML syntax or type error with its position in the parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The parser's message without position.
    pub message: String,
    /// 1-based line in the parsed text.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
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
    if let Some(value) = fast::parse(text) {
        return Ok(value);
    }
    Ok(serde_norway::from_str(text)?)
}

/// Parses YAML into a typed value, for settings files.
///
/// # Errors
/// When the text is not valid YAML or does not match `T`.
pub fn parse_as<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let text = if is_blank(text) { "{}" } else { text };
    Ok(serde_norway::from_str(text)?)
}

/// The canonical text of a value: sorted keys, two-space indent, block
/// scalars for multi-line strings. Equal values always give equal text.
pub fn to_canonical(value: &Value) -> String {
    // Serializing a `serde_json::Value` cannot fail: keys are strings and
    // there are no non-finite floats in JSON numbers.
    serde_norway::to_string(value).unwrap_or_else(|e| format!("# unserializable: {e}\n"))
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

/// Splits a stream at `---` lines (column 0, as YAML requires).
///
/// Done on text rather than by the parser so each document can be parsed on
/// its own, errors keep exact lines, and one bad document does not hide the
/// others.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_sep = content == "---"
            || content.starts_with("--- ")
            || content.starts_with("---\t")
            || content == "...";
        if is_sep {
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
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start..],
        first_line: start_line,
        index: docs.len(),
    });
    docs
}

/// The common subset of YAML, parsed straight from parser events into a
/// value: maps, lists and scalars without tags, anchors or aliases.
///
/// Rendered manifests are almost all of a full render's parsing, and going
/// through serde (events collected per document, then deserialized) cost a
/// sixth more than building the value directly. Anything outside the subset,
/// and every error, returns `None` and goes through `serde_norway`, so
/// results and messages are exactly serde_norway's; `fast_path_agrees` checks
/// the scalar rules against it.
mod fast {
    use libyaml_safer::{EventData, Parser, ScalarStyle};
    use serde_json::{Map, Number, Value};

    /// serde_norway's recursion limit; deeper input gets its error.
    const MAX_DEPTH: usize = 128;

    enum Frame {
        List(Vec<Value>),
        Map(Map<String, Value>, Option<String>),
    }

    pub(super) fn parse(text: &str) -> Option<Value> {
        let mut bytes = text.as_bytes();
        let mut parser = Parser::new();
        parser.set_input_string(&mut bytes);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root = None;
        let mut documents = 0;
        loop {
            let value = match parser.parse().ok()?.data {
                EventData::Scalar {
                    anchor: None,
                    tag: None,
                    value,
                    style,
                    ..
                } => {
                    let key_slot = matches!(stack.last(), Some(Frame::Map(_, None)));
                    if style != ScalarStyle::Plain {
                        Value::String(value)
                    } else if key_slot {
                        // A plain key that would resolve to null, a bool or a
                        // number: leave its spelling to serde.
                        match plain(value) {
                            Some(Value::String(s)) => Value::String(s),
                            _ => return None,
                        }
                    } else {
                        plain(value)?
                    }
                }
                _ if stack.len() > MAX_DEPTH => return None,
                EventData::SequenceStart {
                    anchor: None,
                    tag: None,
                    ..
                } => {
                    stack.push(Frame::List(Vec::new()));
                    continue;
                }
                EventData::MappingStart {
                    anchor: None,
                    tag: None,
                    ..
                } => {
                    stack.push(Frame::Map(Map::new(), None));
                    continue;
                }
                EventData::SequenceEnd => match stack.pop()? {
                    Frame::List(items) => Value::Array(items),
                    Frame::Map(..) => return None,
                },
                EventData::MappingEnd => match stack.pop()? {
                    Frame::Map(map, None) => Value::Object(map),
                    _ => return None,
                },
                EventData::StreamStart { .. } | EventData::DocumentEnd { .. } => continue,
                EventData::DocumentStart { .. } => {
                    documents += 1;
                    if documents > 1 {
                        return None;
                    }
                    continue;
                }
                EventData::StreamEnd => return Some(root.unwrap_or(Value::Null)),
                // Anchors, aliases and tags.
                _ => return None,
            };
            match stack.last_mut() {
                None => root = Some(value),
                Some(Frame::List(items)) => items.push(value),
                Some(Frame::Map(map, key)) => match key.take() {
                    None => match value {
                        Value::String(k) => *key = Some(k),
                        _ => return None,
                    },
                    Some(k) => {
                        if map.insert(k, value).is_some() {
                            return None; // duplicate key: serde decides
                        }
                    }
                },
            }
        }
    }

    /// A plain scalar resolved as serde_norway resolves it; `None` where
    /// serde_json would not hold it as such (128-bit ints, inf, NaN).
    fn plain(s: String) -> Option<Value> {
        match s.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
            "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
            "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
            _ => {}
        }
        // Only text starting like a number can be one.
        let first = s.as_bytes()[0];
        if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
            return Some(Value::String(s));
        }
        if let Some(n) = unsigned(&s) {
            return Some(Value::Number(n.into()));
        }
        if let Some(n) = negative(&s) {
            return Some(Value::Number(n.into()));
        }
        if wide_int(&s) {
            return None;
        }
        if !leading_zero_digits(&s) {
            let unsigned = match s.strip_prefix('+') {
                Some(rest) if rest.starts_with(['+', '-']) => return Some(Value::String(s)),
                Some(rest) => rest,
                None => s.as_str(),
            };
            let special = [
                ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN",
            ];
            if special.contains(&unsigned) || special.contains(&s.as_str()) {
                return None;
            }
            if let Ok(f) = unsigned.parse::<f64>() {
                return if f.is_finite() {
                    Number::from_f64(f).map(Value::Number)
                } else {
                    None
                };
            }
        }
        Some(Value::String(s))
    }

    /// YAML 1.2: zeros followed by digits are a string ("0755").
    fn leading_zero_digits(s: &str) -> bool {
        let s = s.strip_prefix(['-', '+']).unwrap_or(s);
        s.len() > 1 && s.starts_with('0') && s[1..].bytes().all(|b| b.is_ascii_digit())
    }

    fn radix(s: &str) -> (u32, &str) {
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
            if let Some(rest) = s.strip_prefix(prefix) {
                return (radix, rest);
            }
        }
        (10, s)
    }

    fn unsigned(s: &str) -> Option<u64> {
        let body = s.strip_prefix('+').unwrap_or(s);
        let (r, digits) = radix(body);
        if digits.starts_with(['+', '-']) {
            return None;
        }
        if r != 10
            && let Ok(n) = u64::from_str_radix(digits, r)
        {
            return Some(n);
        }
        if body.starts_with(['+', '-']) || leading_zero_digits(s) {
            return None;
        }
        body.parse().ok()
    }

    fn negative(s: &str) -> Option<i64> {
        if let Some(rest) = s.strip_prefix('-') {
            let (r, digits) = radix(rest);
            if r != 10
                && let Ok(n) = i64::from_str_radix(&format!("-{digits}"), r)
            {
                return Some(n);
            }
        }
        if leading_zero_digits(s) {
            return None;
        }
        s.parse().ok()
    }

    /// An integer too wide for 64 bits; serde_json has no such number.
    fn wide_int(s: &str) -> bool {
        let body = s.strip_prefix(['+', '-']).unwrap_or(s);
        let (r, digits) = radix(body);
        !digits.is_empty()
            && !digits.starts_with(['+', '-'])
            && !leading_zero_digits(s)
            && u128::from_str_radix(digits, r).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn blank_and_comment_only_documents_are_null() {
        assert_eq!(parse("# nothing\n\n").unwrap(), Value::Null);
    }
}
