//! The flows both faces run, written once: the CLI and the action only
//! translate flags or `INPUT_*` into a request and an outcome into text,
//! summaries and comments (as gitoxide's CLI calls `gitoxide-core`).
//!
//! - [`plan`]: open both revisions' states, render, validate, plan.
//! - [`deploy`]: render and validate the head in full, then deploy each
//!   environment.

pub mod deploy;
pub mod plan;

pub use deploy::{Deploy, DeployRequest};
pub use plan::{PlanOutcome, PlanRequest};
