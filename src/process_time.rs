//! The run's time for child processes (helm, kustomize, sops) together.
//!
//! Each process has its own timeout, but a pull request can add releases:
//! a thousand `helm template` calls at two minutes each is a day. The sum
//! is bounded too, by the runner (`KDEPLOY_PROCESS_SECONDS`, default 15
//! minutes), never by the repository.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The default total, in seconds.
pub const DEFAULT_SECONDS: u64 = 15 * 60;

static SPENT_MS: AtomicU64 = AtomicU64::new(0);

fn total() -> Duration {
    let secs = std::env::var("KDEPLOY_PROCESS_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_SECONDS);
    Duration::from_secs(secs)
}

/// The time processes may still take in this run.
pub fn remaining() -> Duration {
    total().saturating_sub(Duration::from_millis(SPENT_MS.load(Ordering::Relaxed)))
}

/// The timeout of the next process: its own, or what is left if less;
/// an error naming the total when nothing is left.
///
/// # Errors
/// The run's total is spent.
pub fn timeout(own: Duration) -> Result<Duration, String> {
    let left = remaining();
    if left.is_zero() {
        return Err(format!(
            "this run's time for helm, kustomize and sops ({}s in all) is spent; the runner raises it with KDEPLOY_PROCESS_SECONDS",
            total().as_secs()
        ));
    }
    Ok(own.min(left))
}

/// Counts what a process took.
pub fn charge(took: Duration) {
    let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    SPENT_MS.fetch_add(ms, Ordering::Relaxed);
}
