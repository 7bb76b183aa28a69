//! Rendering for output, release by release: what `kdeploy render` and
//! `kdeploy validate` run.
//!
//! [`render::render`] holds every object of every release until the end,
//! which a plan needs (it compares them) and a command that only checks and
//! prints them does not. Here each release is validated and serialized on
//! the thread that rendered it, then its objects are replaced by outlines
//! (identity, origin, the ordering annotations): memory holds the output
//! text, not the objects (230 MB -> see README, Performance, for 3,000
//! releases). The checks across releases (duplicates, clusters shared by
//! environments, ordering, custom kinds against the CRDs of their
//! environment) run on what is kept, so the result is the same as
//! rendering, then validating, then serializing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::{Filter, Settings};
use crate::diag::Diagnostics;
use crate::render::{self, Rendered, State};
use crate::source::Snapshot;
use crate::validate::{self, Pass, Summary};

/// A state rendered, checked and serialized.
#[derive(Debug)]
pub struct Emitted {
    /// The releases. Their resources are outlines, except CRDs and custom
    /// kinds, which the last checks read whole.
    pub state: State,
    /// Each release's text ([`crate::output::release_text`]), in the order
    /// of `state.releases`; empty when not asked for.
    pub texts: Vec<String>,
    /// What validation covered.
    pub summary: Summary,
    /// Where the time went.
    pub timings: Timings,
}

/// Where [`emit`]'s time went. Releases are checked and serialized on the
/// threads that render them, so those two are thread time summed over
/// releases, not wall time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Wall time of rendering with the work done per release.
    pub releases: Duration,
    /// Thread time validating releases, within `releases`.
    pub validate: Duration,
    /// Thread time serializing releases, within `releases`.
    pub serialize: Duration,
    /// Wall time of the checks across releases, after them.
    pub across: Duration,
}

impl Emitted {
    /// Relative path -> text, as [`crate::output::files`] makes them; the
    /// texts move out.
    pub fn take_files(&mut self) -> BTreeMap<PathBuf, String> {
        self.state
            .releases
            .iter()
            .zip(std::mem::take(&mut self.texts))
            .map(|(r, text)| (crate::output::path_of(&r.release), text))
            .collect()
    }
}

/// Whether [`emit`] keeps each release's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texts {
    /// Serialize every release (`kdeploy render`).
    Keep,
    /// Only check (`kdeploy validate`).
    Skip,
}

/// Renders, validates and (as `texts` says) serializes every release of
/// `snapshot` that `filter` selects, as [`render::render`] then
/// [`validate::check`] then [`crate::output::release_texts`] would.
///
/// # Errors
/// Every problem of rendering and validation; nothing is partial.
pub fn emit(snapshot: &Snapshot, filter: &Filter, texts: Texts) -> Result<Emitted, render::Error> {
    let made: Mutex<HashMap<(String, String), String>> = Mutex::default();
    let covered: Mutex<Summary> = Mutex::default();
    // Kept aside, not returned: the release stays for the checks across
    // releases, so every problem is reported at once.
    let invalid: Mutex<Vec<((String, String), Diagnostics)>> = Mutex::default();
    let (validating, serializing) = (AtomicU64::new(0), AtomicU64::new(0));
    let nanos = |since: Instant| u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let finish = |r: &mut Rendered, settings: &Settings| -> Result<(), Diagnostics> {
        let key = || (r.release.env.clone(), r.release.app.clone());
        let t = Instant::now();
        // Custom kinds wait for the CRDs of other releases.
        let (problems, summary) = validate::validate_release(r, settings, &[], true, Pass::Release);
        validating.fetch_add(nanos(t), Ordering::Relaxed);
        covered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(summary);
        if !problems.is_empty() {
            invalid
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((key(), problems));
        } else if texts == Texts::Keep {
            let t = Instant::now();
            let text = crate::output::release_text(r);
            serializing.fetch_add(nanos(t), Ordering::Relaxed);
            made.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key(), text);
        }
        outline(r);
        Ok(())
    };
    let t = Instant::now();
    let rendered = render::render_finishing(snapshot, filter, &finish);
    let releases = t.elapsed();
    let mut invalid = invalid.into_inner().unwrap_or_else(PoisonError::into_inner);
    invalid.sort_by(|a, b| a.0.cmp(&b.0));
    let mut problems = Diagnostics::default();
    for (_, d) in invalid {
        problems.extend(d.0);
    }
    let state = match rendered {
        Ok(state) => state,
        Err(render::Error::Invalid(mut d)) => {
            d.extend(problems.0);
            return Err(render::Error::Invalid(d));
        }
        Err(e) => return Err(e),
    };
    let t = Instant::now();
    let mut summary = covered.into_inner().unwrap_or_else(PoisonError::into_inner);
    let (custom_problems, custom) = validate::validate_pass(&state, true, Pass::Custom);
    summary.add(custom);
    problems.extend(custom_problems.0);
    problems.extend(validate::ordering(&state, &|_| true).0);
    problems.into_result(())?;
    let timings = Timings {
        releases,
        validate: Duration::from_nanos(validating.into_inner()),
        serialize: Duration::from_nanos(serializing.into_inner()),
        across: t.elapsed(),
    };
    let mut made = made.into_inner().unwrap_or_else(PoisonError::into_inner);
    let texts = state
        .releases
        .iter()
        .map(|r| {
            made.remove(&(r.release.env.clone(), r.release.app.clone()))
                .unwrap_or_default()
        })
        .collect();
    Ok(Emitted {
        state,
        texts,
        summary,
        timings,
    })
}

/// Replaces the objects of a checked and serialized release by what the
/// checks across releases read of them; CRDs and custom kinds stay whole.
fn outline(r: &mut Rendered) {
    for res in &mut r.resources {
        if res.id.kind == "CustomResourceDefinition"
            || !validate::is_builtin(&res.api_version, &res.id.kind)
        {
            continue;
        }
        res.object = crate::order::outline(&res.object);
    }
}
