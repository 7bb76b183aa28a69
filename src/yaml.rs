//! YAML in and out, in one place.
//!
//! kdeploy uses `serde_norway`, the maintained fork of `serde_yaml` (see the
//! README for why not `serde-saphyr`: on rendered manifests it parses about
//! 2.6x slower, and parsing is most of a full render). Values are held as
//! `serde_json::Value` because that is what Kubernetes clients speak and its
//! maps are sorted, which makes [`to_canonical`] a stable form for diffs.

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

    #[test]
    fn blank_and_comment_only_documents_are_null() {
        assert_eq!(parse("# nothing\n\n").unwrap(), Value::Null);
    }
}
