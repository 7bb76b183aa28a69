//! The process's list of secret values and the redaction every output goes
//! through, the way GitHub's runner masks `::add-mask::` values in its log.
//!
//! A decrypted value is registered here the moment sops returns it, with
//! the place it came from; every sink (stdout and stderr, the job summary
//! and outputs, GitHub API bodies, the output directory) replaces each
//! occurrence with `<sops:FILE#KEY>`. Secret `data` is also redacted by
//! structure (see `plan::redact_secret`); this catches a value that a chart
//! copied elsewhere (a ConfigMap, an env value, an error snippet).
//!
//! A process-wide registry rather than a value passed around: the sinks are
//! many and far from the decryption, and one that forgot the list would
//! leak. Values are only ever added.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use serde_json::Value;

/// Shorter values are not searched for in free text: "1" or "yes" would
/// redact half of every plan. Secret data is redacted by structure anyway.
pub const MIN_LEN: usize = 4;

/// The values, their labels, and the automaton over them (rebuilt when a
/// value is added; shared with readers without copying).
#[derive(Default)]
struct Registry {
    needles: Vec<String>,
    labels: Vec<String>,
    matcher: Option<(Arc<AhoCorasick>, Arc<Vec<String>>)>,
    /// Every form of every value, however short, for whole-field matches
    /// (Secret data in rendered output).
    exact: Option<std::collections::HashMap<String, String>>,
    /// Values were added since `matcher` was built.
    dirty: bool,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    needles: Vec::new(),
    labels: Vec::new(),
    matcher: None,
    exact: None,
    dirty: false,
});

/// Registers a secret value (each line of it, and its base64 form, since
/// Secret `data` holds that) to be replaced by `<sops:{origin}>`.
pub fn register(value: &str, origin: &str) {
    let label = format!("<sops:{}>", label_text(origin));
    if value.is_empty() {
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let mut forms: Vec<String> = value
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= MIN_LEN)
        .map(str::to_string)
        .collect();
    if value.len() >= MIN_LEN {
        forms.push(value.to_string());
        forms.push(b64.clone());
    }
    let mut reg = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    let exact = reg.exact.get_or_insert_with(Default::default);
    exact
        .entry(value.to_string())
        .or_insert_with(|| label.clone());
    exact.entry(b64).or_insert_with(|| label.clone());
    let mut added = false;
    for form in forms {
        if !reg.needles.contains(&form) {
            reg.needles.push(form);
            reg.labels.push(label.clone());
            added = true;
        }
    }
    if added {
        // Built on the next read: decrypting a file registers many values.
        reg.matcher = None;
        reg.dirty = true;
    }
}

/// Only characters that are safe in a YAML plain scalar and a log line.
fn label_text(origin: &str) -> String {
    origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._/-#".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A core Secret with each `data`/`stringData` value that is a registered
/// value (of any length, plain or base64) replaced by where it came from;
/// `None` when nothing in it is registered. Free-text redaction skips short
/// values; a whole Secret field never is.
pub fn redact_secret_fields(object: &Value) -> Option<Value> {
    if object["kind"] != "Secret" || object["apiVersion"] != "v1" {
        return None;
    }
    let reg = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    let exact = reg.exact.as_ref()?;
    let mut out = object.clone();
    let mut changed = false;
    for field in ["data", "stringData"] {
        if let Some(map) = out.get_mut(field).and_then(Value::as_object_mut) {
            for v in map.values_mut() {
                if let Some(label) = v.as_str().and_then(|s| exact.get(s)) {
                    *v = Value::String(label.clone());
                    changed = true;
                }
            }
        }
    }
    changed.then_some(out)
}

fn snapshot() -> Option<(Arc<AhoCorasick>, Arc<Vec<String>>)> {
    {
        let reg = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
        if !reg.dirty {
            return reg.matcher.clone();
        }
    }
    let mut reg = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    if reg.dirty {
        let labels = Arc::new(reg.labels.clone());
        reg.matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&reg.needles)
            .ok()
            .map(|m| (Arc::new(m), labels));
        reg.dirty = false;
    }
    reg.matcher.clone()
}

/// `text` with every registered value replaced by where it came from.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Some((matcher, labels)) = snapshot() else {
        return Cow::Borrowed(text);
    };
    if !matcher.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in matcher.find_iter(text) {
        out.push_str(&text[last..m.start()]);
        out.push_str(&labels[m.pattern().as_usize()]);
        last = m.end();
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// Redacts every string (and map key) inside a JSON value, in place.
pub fn redact_value(value: &mut Value) {
    if snapshot().is_none() {
        return;
    }
    walk(value);
}

fn walk(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let Some(mut v) = map.remove(&key) else {
                    continue;
                };
                walk(&mut v);
                map.insert(redact(&key).into_owned(), v);
            }
        }
        _ => {}
    }
}

/// A writer that redacts what passes through it, line by line (a value is
/// never split across two writes of the inner writer). Flushes whole lines;
/// the rest on `flush` or drop.
pub struct MaskingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> MaskingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        MaskingWriter {
            inner,
            pending: Vec::new(),
        }
    }

    /// With nothing registered, the whole lines of `buf` (up to `last`, its
    /// last newline) go to the inner writer uncopied (`render --stdout`
    /// prints megabytes), each line within one write. The partial line
    /// still waits: a value registered before it ends must be masked in it.
    fn pass(&mut self, buf: &[u8], last: usize) -> io::Result<()> {
        let mut lines = &buf[..=last];
        if !self.pending.is_empty() {
            let first = lines.iter().position(|b| *b == b'\n').unwrap_or(last);
            self.pending.extend_from_slice(&lines[..=first]);
            self.inner.write_all(&self.pending)?;
            self.pending.clear();
            lines = &lines[first + 1..];
        }
        if !lines.is_empty() {
            self.inner.write_all(lines)?;
        }
        self.pending.extend_from_slice(&buf[last + 1..]);
        Ok(())
    }

    fn emit(&mut self, upto: usize) -> io::Result<()> {
        let chunk: Vec<u8> = self.pending.drain(..upto).collect();
        let text = String::from_utf8_lossy(&chunk);
        self.inner.write_all(redact(&text).as_bytes())
    }

    /// Takes `buf`: a partial line waits; whole lines are masked, or
    /// passed uncopied when `masking()` says nothing is registered (asked
    /// only when `buf` ends a line).
    fn take(&mut self, buf: &[u8], masking: impl FnOnce() -> bool) -> io::Result<()> {
        let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
            self.pending.extend_from_slice(buf);
            return Ok(());
        };
        if !masking() {
            return self.pass(buf, last);
        }
        self.pending.extend_from_slice(buf);
        let upto = self.pending.len() - (buf.len() - last - 1);
        self.emit(upto)
    }
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.take(buf, || snapshot().is_some())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.emit(n)?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for MaskingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasked_lines_pass_whole_and_partial_lines_wait() {
        /// Records each write it is given.
        #[derive(Default)]
        struct Writes(Vec<Vec<u8>>);
        impl Write for Writes {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut inner = Writes::default();
        let mut w = MaskingWriter::new(&mut inner);
        // As `write` takes them with nothing registered (other tests
        // register values in this process).
        for piece in ["one ", "li", "ne\ntwo\nthr", "ee\n", "\n", "four"] {
            w.take(piece.as_bytes(), || false).unwrap();
        }
        assert_eq!(w.pending, b"four");
        drop(w);
        let writes: Vec<String> = inner
            .0
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(writes.concat(), "one line\ntwo\nthree\n\nfour");
        // Every write but the last (the flush at drop) ends a line, and a
        // line is never split across two writes.
        assert_eq!(
            writes[..writes.len() - 1],
            ["one line\n", "two\n", "three\n", "\n"]
        );
    }

    #[test]
    fn registered_values_are_replaced_everywhere() {
        register("unit-CANARY-xyzzy", "services/a/secrets.sops.yaml#PW");
        register("ab", "short");
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"S": base64::engine::general_purpose::STANDARD.encode("ab"), "O": "b3RoZXI="}});
        let redacted = redact_secret_fields(&secret).expect("a registered field");
        assert_eq!(redacted["data"]["S"], "<sops:short>");
        assert_eq!(redacted["data"]["O"], "b3RoZXI=");
        let text = "url: postgres://u:unit-CANARY-xyzzy@db and ab";
        assert_eq!(
            redact(text),
            "url: postgres://u:<sops:services/a/secrets.sops.yaml#PW>@db and ab"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode("unit-CANARY-xyzzy");
        assert!(!redact(&format!("data: {b64}")).contains(&b64));
        let mut v = serde_json::json!({"a": ["x unit-CANARY-xyzzy"], "unit-CANARY-xyzzy": 1});
        redact_value(&mut v);
        assert!(!v.to_string().contains("unit-CANARY"), "{v}");

        let mut out = Vec::new();
        {
            let mut w = MaskingWriter::new(&mut out);
            // Split in the middle of the value: still caught.
            w.write_all(b"one unit-CANA").unwrap();
            w.write_all(b"RY-xyzzy two\nlast unit-CANARY-xyzzy")
                .unwrap();
        }
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("CANARY"), "{out}");
        assert!(out.ends_with("last <sops:services/a/secrets.sops.yaml#PW>"));
    }
}
