//! One retry policy for every call kdeploy makes to the API server:
//! discovery, reads, writes, watches, the Lease, the deploy record, events
//! and logs all go through the client built in [`super::from_config`], and
//! so through this layer.
//!
//! Retried: 429, 500, 502, 503, 504 and connection failures, with jittered
//! exponential backoff; a `Retry-After` header is honoured (the server's
//! delay is the least we wait, capped). Never retried: anything else, so a
//! validation error (422) or a conflict (409) is shown at once.
//!
//! Retrying a write whose connection broke after the server did the work is
//! safe for kdeploy's writes: server-side apply is idempotent (the same
//! patch gives the same object), deletes answer 404 when already done, and
//! the Lease and record writes carry a resourceVersion precondition or
//! answer 409 on a second create, which their callers treat as "look again".
//!
//! kube's own `RetryPolicy` retries only 429/503/504 and no connection
//! errors, so kdeploy has its own.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tower::BoxError;
use tower::retry::Policy;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time, with up to 50% jitter.
    pub backoff: Duration,
    /// The most a `Retry-After` may make us wait.
    pub max_server_delay: Duration,
    attempt: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(5, Duration::from_millis(200))
    }
}

impl RetryPolicy {
    /// A policy of `attempts` tries starting at `backoff`.
    pub fn new(attempts: u32, backoff: Duration) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            backoff,
            max_server_delay: Duration::from_secs(30),
            attempt: 1,
        }
    }

    /// True for statuses worth another try.
    pub fn retryable_status(status: StatusCode) -> bool {
        matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
    }

    /// The delay before retry number `attempt` (1-based): jittered
    /// exponential backoff, at least the server's `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = self.backoff.saturating_mul(1 << (attempt - 1).min(6));
        let jittered = base + base.mul_f64(fastrand::f64() * 0.5);
        match retry_after {
            Some(server) => jittered.max(server.min(self.max_server_delay)),
            None => jittered,
        }
    }
}

/// `Retry-After` in seconds (the API server sends seconds, not dates).
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempt >= self.attempts {
            return None;
        }
        let delay = match result {
            Ok(response) if Self::retryable_status(response.status()) => {
                self.delay(self.attempt, retry_after(response))
            }
            Ok(_) => return None,
            // No response at all: the connection failed or broke.
            Err(_) => self.delay(self.attempt, None),
        };
        self.attempt += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let body = req.body().try_clone()?;
        let mut clone = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(body)
            .ok()?;
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_least_delay_and_capped() {
        let p = RetryPolicy::new(5, Duration::from_millis(10));
        let d = p.delay(1, Some(Duration::from_secs(1)));
        assert!(
            d >= Duration::from_secs(1) && d < Duration::from_millis(1100),
            "{d:?}"
        );
        let d = p.delay(1, Some(Duration::from_secs(3600)));
        assert_eq!(d, Duration::from_secs(30));
        let d = p.delay(3, None);
        assert!(
            d >= Duration::from_millis(40) && d <= Duration::from_millis(60),
            "{d:?}"
        );
    }

    #[test]
    fn only_throttling_and_server_errors_are_retried() {
        for code in [429, 500, 502, 503, 504] {
            assert!(RetryPolicy::retryable_status(
                StatusCode::from_u16(code).unwrap()
            ));
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!RetryPolicy::retryable_status(
                StatusCode::from_u16(code).unwrap()
            ));
        }
    }
}
