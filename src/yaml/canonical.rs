//! Canonical YAML written straight from values, for the shapes rendered
//! manifests are made of, byte for byte as serde_norway's emitter (libyaml)
//! writes them.
//!
//! The emitter analyses every scalar and keeps a state machine per event; on
//! a large render that was a fifth of the command. Here a document is
//! written directly when every scalar is one whose form is certain: keys and
//! strings that start with a letter or `/` and hold only characters that
//! cannot change how YAML reads them, strings led by a digit that cannot
//! read as a number (`1.2.0`, `128Mi`), digit strings and the words YAML reads as
//! booleans or null (quoted), integers, booleans and null. (serde_norway
//! sets no line width, so long strings are never folded.) Any other document
//! (floats, multi-line strings, other characters, long keys) goes to the
//! emitter whole, so the output is the emitter's either way; the tests
//! compare the two.

use std::io::Write as _;

use serde_json::{Map, Value};

/// The longest key the emitter writes as a simple `key:`.
const SIMPLE_KEY: usize = 128;

/// Writes `value` as one document; false (and nothing written) when it has
/// a shape this writer leaves to the emitter.
pub(super) fn write_document(value: &Value, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let done = match value {
        Value::Object(m) if !m.is_empty() => mapping(m, 0, false, out),
        _ => false,
    };
    if !done {
        out.truncate(start);
    }
    done
}

/// A block mapping whose keys start at column `indent`; `inline`: the first
/// key goes where the cursor is (after a sequence's `- `).
fn mapping(m: &Map<String, Value>, indent: usize, inline: bool, out: &mut Vec<u8>) -> bool {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline {
            spaces(indent, out);
        }
        if k.len() > SIMPLE_KEY || !string(k, true, out) {
            return false;
        }
        out.push(b':');
        if let Some(flow) = empty(v) {
            out.push(b' ');
            out.extend_from_slice(flow);
            continue;
        }
        let ok = match v {
            Value::Object(c) => {
                out.push(b'\n');
                mapping(c, indent + 2, false, out)
            }
            // A sequence in a mapping is not indented.
            Value::Array(c) => {
                out.push(b'\n');
                sequence(c, indent, false, out)
            }
            scalar => {
                out.push(b' ');
                self::scalar(scalar, out)
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A block sequence whose `- ` starts at column `indent`.
fn sequence(items: &[Value], indent: usize, inline: bool, out: &mut Vec<u8>) -> bool {
    for (i, v) in items.iter().enumerate() {
        if i > 0 || !inline {
            spaces(indent, out);
        }
        out.extend_from_slice(b"- ");
        if let Some(flow) = empty(v) {
            out.extend_from_slice(flow);
            continue;
        }
        let ok = match v {
            Value::Object(c) => mapping(c, indent + 2, true, out),
            Value::Array(c) => sequence(c, indent + 2, true, out),
            scalar => self::scalar(scalar, out),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// An empty mapping or sequence, written in flow style, with its newline.
fn empty(v: &Value) -> Option<&'static [u8]> {
    match v {
        Value::Object(c) if c.is_empty() => Some(b"{}\n"),
        Value::Array(c) if c.is_empty() => Some(b"[]\n"),
        _ => None,
    }
}

fn spaces(n: usize, out: &mut Vec<u8>) {
    out.resize(out.len() + n, b' ');
}

/// A scalar and its newline.
fn scalar(v: &Value, out: &mut Vec<u8>) -> bool {
    let written = scalar_text(v, out);
    if written {
        out.push(b'\n');
    }
    written
}

fn scalar_text(v: &Value, out: &mut Vec<u8>) -> bool {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Floats have forms of their own (`.inf`, exponents): the emitter's.
            let written = if let Some(u) = n.as_u64() {
                write!(out, "{u}")
            } else if let Some(i) = n.as_i64() {
                write!(out, "{i}")
            } else {
                return false;
            };
            return written.is_ok();
        }
        Value::String(s) => return string(s, false, out),
        Value::Array(_) | Value::Object(_) => return false,
    }
    true
}

/// A string as serde_norway styles it and libyaml writes it, when certain.
fn string(s: &str, key: bool, out: &mut Vec<u8>) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        // Empty: quoted (it would read as null).
        if key {
            return false;
        }
        out.extend_from_slice(b"''");
        return true;
    };
    // What YAML 1.2 reads as another type is single-quoted.
    let quoted = b.iter().all(u8::is_ascii_digit)
        || matches!(
            s,
            "true" | "True" | "TRUE" | "false" | "False" | "FALSE" | "null" | "Null" | "NULL"
        );
    if quoted {
        out.push(b'\'');
        out.extend_from_slice(b);
        out.push(b'\'');
        return true;
    }
    let plain_start =
        first.is_ascii_alphabetic() || first == b'/' || (first.is_ascii_digit() && not_a_number(b));
    if !plain_start || !plain_safe(b) {
        return false;
    }
    out.extend_from_slice(b);
    true
}

/// A string led by a digit that no YAML reader takes for a number, and so
/// is written plain (`1.2.0`, `128Mi`, a hex digest): letters, digits and
/// dots only, not a float as Rust reads one (what serde_norway checks, e.g.
/// `1e5`), and no `0x`/`0o`/`0b` prefix. Anything else is the emitter's.
fn not_a_number(b: &[u8]) -> bool {
    let radix = b.len() > 1 && b[0] == b'0' && matches!(b[1] | 0x20, b'x' | b'o' | b'b');
    !radix
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.')
        && std::str::from_utf8(b).is_ok_and(|s| s.parse::<f64>().is_err())
}

/// Characters that cannot make a plain scalar (starting with a letter) read
/// otherwise or need quotes: no `: `, no ` #`, no trailing space, no flow
/// or quote characters, ASCII only.
fn plain_safe(b: &[u8]) -> bool {
    let last = b.len() - 1;
    b.iter().enumerate().all(|(i, &c)| match c {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => true,
        b'-' | b'.' | b'_' | b'/' | b'=' | b'+' | b'@' | b'~' | b'(' | b')' | b'$' | b';' => true,
        b':' => i < last && b[i + 1] != b' ',
        b' ' => i < last,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Long strings with spaces, after plain and quoted keys, in mappings
    /// and sequences: the same text as the emitter, which sets no width
    /// (libyaml's default of 80 would fold them).
    #[test]
    fn long_spaced_strings_are_the_emitters() {
        for key in ["a", "8080", "true", "app.kubernetes.io/name"] {
            for (n, space) in (60..=200).flat_map(|n| (n - 3..n - 1).map(move |p| (n, p))) {
                let text: String = (0..n).map(|i| if i == space { ' ' } else { 'x' }).collect();
                for doc in [
                    json!({ key: text }),
                    json!({"spec": { key: [text.clone(), {key: text}] }}),
                ] {
                    let mut direct = Vec::new();
                    super::super::to_canonical_documents([&doc], &mut direct);
                    assert_eq!(
                        String::from_utf8_lossy(&direct),
                        super::super::emitted_canonical(&doc),
                        "{key} {n}"
                    );
                }
            }
        }
    }
}
