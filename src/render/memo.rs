//! Template output shared by the two revisions of a plan.
//!
//! A change to a shared chart makes every release differ, so a plan renders
//! each one at both revisions; yet most of the chart's templates are the
//! same at both. A handlebars template's output depends only on its text,
//! the partials it may include and the context (helpers are pure), so the
//! base records each template's parsed documents under a digest of those,
//! and the head takes them instead of rendering the template again. The
//! render budget is charged what the template cost when it rendered, so a
//! release runs out of budget where a full render would.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use sha2::Digest as _;

use crate::resource::Origin;

/// Parsed template output of the base, by [`key`].
pub struct Memo {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    /// Fingerprints of the head's templates: only their output is worth
    /// keeping (a changed template's never is).
    wanted: HashSet<[u8; 32]>,
    reused: AtomicUsize,
}

/// One template's output for one release, and what rendering it cost.
pub struct Entry {
    /// The documents parsed from the output, with their origins.
    pub docs: Vec<(Value, Origin)>,
    /// Length of the rendered text (counted against `limits.totalBytes`).
    pub bytes: u64,
    /// Budget steps and bytes the template drew.
    pub drawn: (u64, u64),
}

/// How a render uses the memo: the base records, the head reuses.
#[derive(Clone, Copy)]
pub enum Use<'a> {
    /// Record every template output rendered without a problem.
    Record(&'a Memo),
    /// Take recorded outputs instead of rendering.
    Reuse(&'a Memo),
}

impl Memo {
    /// A memo that keeps only the output of templates with these
    /// fingerprints.
    pub fn keeping(fingerprints: HashSet<[u8; 32]>) -> Memo {
        Memo {
            entries: Mutex::default(),
            wanted: fingerprints,
            reused: AtomicUsize::new(0),
        }
    }

    /// Whether output of the template with `fingerprint` may be reused.
    pub fn wants(&self, fingerprint: &[u8; 32]) -> bool {
        self.wanted.contains(fingerprint)
    }

    /// Keeps `entry` under `key`.
    pub fn record(&self, key: [u8; 32], entry: Entry) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, entry);
        }
    }

    /// Takes the entry under `key`: each is reused at most once, by the
    /// same release at the other revision.
    pub fn take(&self, key: &[u8; 32]) -> Option<Entry> {
        let entry = self.entries.lock().ok()?.remove(key);
        if entry.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        entry
    }

    /// How many template outputs were reused.
    pub fn reused(&self) -> usize {
        self.reused.load(Ordering::Relaxed)
    }
}

/// The digest of a render context: its JSON text, keys in their order
/// (`each` walks a map in that order, so order is part of the input).
pub fn context_digest(ctx: &Value) -> Option<[u8; 32]> {
    struct Hashing(sha2::Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(sha2::Sha256::new());
    serde_json::to_writer(&mut h, ctx).ok()?;
    Some(h.0.finalize().into())
}

/// The key of one template's output in one context.
pub fn key(fingerprint: &[u8; 32], context: &[u8; 32]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(fingerprint);
    h.update(context);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_taken_once() {
        let memo = Memo::keeping(HashSet::from([[2; 32]]));
        assert!(memo.wants(&[2; 32]) && !memo.wants(&[3; 32]));
        memo.record(
            [1; 32],
            Entry {
                docs: Vec::new(),
                bytes: 3,
                drawn: (1, 3),
            },
        );
        assert_eq!(memo.take(&[1; 32]).map(|e| e.bytes), Some(3));
        assert!(memo.take(&[1; 32]).is_none());
        assert_eq!(memo.reused(), 1);
    }
}
