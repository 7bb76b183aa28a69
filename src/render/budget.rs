//! The work one release may make a handlebars chart do.
//!
//! A chart comes from the pull request, so a template can ask for any amount
//! of work: nested `each` loops over a long list, partials that include each
//! other twice per level, helpers that multiply text. Each release renders
//! on one thread with a [`Budget`] of steps (loop iterations, helper and
//! include calls) and bytes (text produced); every loop, helper and write
//! draws on it *before* doing the work, so a hostile chart stops with an
//! error naming the limit instead of allocating gigabytes.
//!
//! The budget is thread-local because handlebars helpers get no handle to
//! per-render state; rayon runs each release start to end on one thread.

use std::cell::Cell;

use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, HelperDef, HelperResult, Output, RenderContext,
    RenderError, RenderErrorReason, Renderable,
};

use crate::config::Limits;

/// What ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// `limits.templateSteps`.
    Steps(u64),
    /// `limits.releaseBytes`.
    Bytes(u64),
}

impl Exceeded {
    /// The message for a release that ran out, with how to raise the limit.
    pub fn message(self) -> (String, &'static str) {
        match self {
            Exceeded::Steps(n) => (
                format!(
                    "template work exceeds the limit of {n} steps (loop iterations, helper and include calls) for one release"
                ),
                "look for loops nested over long lists or partials that include each other; raise `limits.templateSteps` in kdeploy.yaml if the chart really needs it",
            ),
            Exceeded::Bytes(n) => (
                format!("rendered output exceeds the limit of {n} bytes for one release"),
                "look for loops or helpers that repeat text; raise `limits.releaseBytes` in kdeploy.yaml if the release really is that large",
            ),
        }
    }
}

#[derive(Clone, Copy)]
struct Budget {
    steps_left: u64,
    bytes_left: u64,
    limits: (u64, u64),
    exceeded: Option<Exceeded>,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Runs `f` (one release's rendering) with a fresh budget from `limits`;
/// returns its result and what ran out, if anything did.
pub fn with_budget<T>(limits: &Limits, f: impl FnOnce() -> T) -> (T, Option<Exceeded>) {
    let outer = BUDGET.with(|b| {
        b.replace(Some(Budget {
            steps_left: limits.template_steps,
            bytes_left: limits.release_bytes,
            limits: (limits.template_steps, limits.release_bytes),
            exceeded: None,
        }))
    });
    let out = f();
    let exceeded = BUDGET.with(|b| b.replace(outer)).and_then(|b| b.exceeded);
    (out, exceeded)
}

/// What ran out in the current render, if anything.
pub fn exceeded() -> Option<Exceeded> {
    BUDGET.with(|b| b.get().and_then(|b| b.exceeded))
}

fn draw(steps: u64, bytes: u64) -> Result<(), Exceeded> {
    BUDGET.with(|cell| {
        let Some(mut b) = cell.get() else {
            return Ok(()); // outside a release render (tests of helpers)
        };
        if let Some(e) = b.exceeded {
            return Err(e);
        }
        let result = if steps > b.steps_left {
            Err(Exceeded::Steps(b.limits.0))
        } else if bytes > b.bytes_left {
            Err(Exceeded::Bytes(b.limits.1))
        } else {
            b.steps_left -= steps;
            b.bytes_left -= bytes;
            Ok(())
        };
        b.exceeded = result.err();
        cell.set(Some(b));
        result
    })
}

/// Steps and bytes drawn so far in the current render ((0, 0) outside one).
pub fn drawn() -> (u64, u64) {
    BUDGET.with(|cell| {
        cell.get().map_or((0, 0), |b| {
            (b.limits.0 - b.steps_left, b.limits.1 - b.bytes_left)
        })
    })
}

/// Draws what a reused template output cost when it rendered, if the budget
/// covers all of it; otherwise draws nothing and returns false, so that
/// rendering the template stops where it would have.
pub fn charge(steps: u64, bytes: u64) -> bool {
    let fits = BUDGET.with(|cell| {
        cell.get()
            .is_none_or(|b| b.exceeded.is_none() && steps <= b.steps_left && bytes <= b.bytes_left)
    });
    fits && draw(steps, bytes).is_ok()
}

/// Draws `steps` steps and `bytes` bytes, as a handlebars error when the
/// budget is spent (the caller maps it with [`exceeded`]).
///
/// # Errors
/// When the budget does not cover it.
pub fn spend(steps: u64, bytes: u64) -> Result<(), RenderError> {
    draw(steps, bytes).map_err(|e| RenderError::from(RenderErrorReason::Other(e.message().0)))
}

/// `each` as handlebars-rust's built-in helper does it (`@index`, `@key`,
/// `@first`, `@last`, block parameters, `{{else}}`), charged one step per
/// item before that item renders. The built-in cannot be wrapped: the crate
/// does not export it. Adapted from handlebars-rust's `helper_each.rs` (MIT).
pub struct CountedEach;

impl HelperDef for CountedEach {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        use serde_json::Value;
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("each", 0))?;
        let Some(template) = h.template() else {
            return Ok(());
        };
        let items: Vec<(Value, String, &Value)> = match value.value() {
            Value::Array(list) if !list.is_empty() || h.inverse().is_none() => list
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i), i.to_string(), v))
                .collect(),
            Value::Object(map) if !map.is_empty() || h.inverse().is_none() => map
                .iter()
                .map(|(k, v)| (Value::String(k.clone()), k.clone(), v))
                .collect(),
            _ => {
                return match h.inverse() {
                    Some(else_template) => else_template.render(r, ctx, rc, out),
                    None if r.strict_mode() => {
                        Err(RenderError::strict_error(value.relative_path()))
                    }
                    None => Ok(()),
                };
            }
        };
        let is_map = value.value().is_object();
        let mut block = BlockContext::new();
        let base_path = value.context_path();
        match base_path {
            Some(p) => block.base_path_mut().clone_from(p),
            None => block.set_base_value(value.value().clone()),
        }
        rc.push_block(block);
        let len = items.len();
        for (i, (key, relative, v)) in items.into_iter().enumerate() {
            spend(1, 0)?;
            if let Some(block) = rc.block_mut() {
                block.set_local_var("first", Value::Bool(i == 0));
                block.set_local_var("last", Value::Bool(i + 1 == len));
                block.set_local_var("index", Value::from(i));
                if is_map {
                    block.set_local_var("key", key.clone());
                }
                match base_path {
                    Some(p) if i == 0 => {
                        let mut path = p.clone();
                        path.push(relative);
                        *block.base_path_mut() = path;
                    }
                    Some(_) => {
                        if let Some(last) = block.base_path_mut().last_mut() {
                            *last = relative;
                        }
                    }
                    None => block.set_base_value(v.clone()),
                }
                let mut params = None;
                if let Some(name) = h.block_param() {
                    let mut bp = BlockParams::new();
                    add_param(&mut bp, name, base_path.is_some(), v)?;
                    params = Some(bp);
                } else if let Some((name, key_name)) = h.block_param_pair() {
                    let mut bp = BlockParams::new();
                    add_param(&mut bp, name, base_path.is_some(), v)?;
                    bp.add_value(key_name, key)?;
                    params = Some(bp);
                }
                if let Some(bp) = params {
                    block.set_block_params(bp);
                }
            }
            template.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
}

fn add_param<'rc>(
    bp: &mut BlockParams<'rc>,
    name: &'rc str,
    by_path: bool,
    v: &serde_json::Value,
) -> Result<(), RenderError> {
    if by_path {
        bp.add_path(name, Vec::new())
    } else {
        bp.add_value(name, v.clone())
    }
}

/// A string output that draws on the byte budget as it grows. Handlebars
/// writes in many small pieces, so the budget is drawn in steps of
/// [`BoundedOutput::STEP`] bytes: a release can pass its limit by less than
/// one step before it stops.
#[derive(Default)]
pub struct BoundedOutput {
    text: String,
    undrawn: u64,
}

impl BoundedOutput {
    /// Bytes written between two draws on the budget.
    pub const STEP: u64 = 16 * 1024;

    /// The text written, once what was not yet drawn fits the budget.
    ///
    /// # Errors
    /// The limit that the last bytes passed.
    pub fn finish(self) -> Result<String, Exceeded> {
        draw(0, self.undrawn)?;
        Ok(self.text)
    }
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.undrawn += buf.len() as u64;
        if self.undrawn >= Self::STEP {
            draw(0, self.undrawn).map_err(|e| std::io::Error::other(e.message().0))?;
            self.undrawn = 0;
        }
        // Handlebars writes whole `str`s, so this never fails in practice.
        let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.text.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_stops_at_the_limit_and_stays_stopped() {
        let limits = Limits {
            template_steps: 10,
            release_bytes: 100,
            ..Limits::default()
        };
        let ((a, b, c), exceeded) = with_budget(&limits, || {
            (draw(6, 50).is_ok(), draw(5, 0).is_ok(), draw(0, 1).is_ok())
        });
        assert!(a && !b && !c);
        assert_eq!(exceeded, Some(Exceeded::Steps(10)));
        let (_, exceeded) = with_budget(&limits, || draw(0, 101).is_ok());
        assert_eq!(exceeded, Some(Exceeded::Bytes(100)));
        assert_eq!(super::exceeded(), None, "the budget ends with the render");
    }
}
