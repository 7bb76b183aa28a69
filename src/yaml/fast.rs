//! The common subset of YAML, parsed straight from parser events into a
//! value: maps, lists and scalars without tags, anchors or aliases.
//!
//! Rendered manifests are almost all of a full render's parsing, and going
//! through serde (events collected per document, then deserialized) cost a
//! sixth more than building the value directly. Anything outside the subset,
//! and every error, returns `None` and goes through `serde_norway`, so
//! results and messages are exactly serde_norway's; `fast_path_agrees` checks
//! the scalar rules against it.

use libyaml_safer::{EventData, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

use super::MAX_DEPTH;

enum Frame {
    List(Vec<Value>),
    Map(Map<String, Value>, Option<String>),
}

/// What the fast path made of a text.
pub(super) enum Outcome {
    /// The value, the same as serde_norway's.
    Value(Value),
    /// A map holds a key twice: an error, whoever parses it.
    Duplicate,
    /// Outside the subset, or an error: serde_norway decides.
    Other,
}

/// The value when the text is in the subset.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Option<Value> {
    walk(text, &mut false)
}

pub(super) fn outcome(text: &str) -> Outcome {
    let mut duplicate = false;
    match walk(text, &mut duplicate) {
        Some(v) => Outcome::Value(v),
        None if duplicate => Outcome::Duplicate,
        None => Outcome::Other,
    }
}

fn walk(text: &str, duplicate: &mut bool) -> Option<Value> {
    // libyaml-safer can panic on a text that ends without a line break
    // (see `with_final_newline`), and adding one would change a final
    // block scalar: leave such texts to serde_norway.
    if !text.ends_with('\n') {
        return None;
    }
    // Tags are outside the subset anyway: a text where libyaml-safer could
    // panic on one goes to serde_norway.
    if super::may_panic_libyaml_safer(text) {
        return None;
    }
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
                        *duplicate = true;
                        return None;
                    }
                }
            },
        }
    }
}

/// A plain scalar resolved as serde_norway resolves it; `None` where
/// serde_json would not hold it as such (128-bit ints, inf, NaN).
pub(super) fn plain(s: String) -> Option<Value> {
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
