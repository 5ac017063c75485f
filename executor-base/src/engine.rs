//! One retry policy and one circuit breaker for every backend's engine calls.
//!
//! Every call a backend makes to its engine (Docker, Kubernetes, Jenkins, gearmand) goes
//! through [`EngineCalls::call`], which
//!
//! - bounds each attempt by [`BreakerConfig::call_timeout`] (an attempt that runs longer
//!   fails with a temporary [`ErrorKind::Timeout`]);
//! - retries temporary errors ([`Error::is_temporary`]) with exponential backoff and
//!   jitter, never sooner than the engine's [`Error::retry_after`]; a call marked
//!   [`Idempotency::NotIdempotent`] is retried only when the error proves the request
//!   never reached the engine ([`ErrorKind::Unavailable`], [`ErrorKind::RateLimited`]);
//! - counts attempts for [`RequestStats`] and trips a circuit breaker (closed -> open after
//!   [`BreakerConfig::max_failures`] consecutive failures -> half-open after
//!   [`BreakerConfig::reset_timeout`] -> closed on the first success), failing fast with
//!   [`ErrorKind::CircuitOpen`] while open.
//!
//! Defaults follow upstream's `circuit-fuses` (5 retries, exponential from 1 s). Two
//! deliberate differences: only *temporary* errors count as breaker failures (a 404 or a
//! validation error means the engine answered, so it is healthy), and a `Retry-After`
//! longer than [`RetryPolicy::max_backoff`] is not slept on: the error is handed back to
//! the caller, still temporary and carrying its `retry_after`, so no call blocks for
//! minutes inside the library.
//!
//! All waits use [`tokio::time`], so tests can run them with paused time.

mod breaker;
mod retry;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

pub use breaker::BreakerConfig;
use breaker::{Admission, Breaker};
pub use retry::RetryPolicy;

use crate::error::{Error, ErrorKind};
use crate::stats::{BreakerStats, RequestStats};

/// Whether repeating a call is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Repeating the call has the same effect as making it once (GET, DELETE, PUT of a
    /// whole object): any temporary error may be retried.
    Idempotent,
    /// Repeating the call could act twice (create, start, POST): retried only when the
    /// error proves the request never reached the engine.
    NotIdempotent,
}

impl Idempotency {
    /// Whether an error of this call may be retried.
    pub fn may_retry(self, error: &Error) -> bool {
        if !error.is_temporary() {
            return false;
        }
        match self {
            Idempotency::Idempotent => true,
            Idempotency::NotIdempotent => {
                matches!(
                    error.kind(),
                    ErrorKind::Unavailable | ErrorKind::RateLimited
                )
            }
        }
    }
}

/// The retry policy, circuit breaker and request counters of one executor's engine.
///
/// Cheap to clone: clones share the breaker and the counters.
///
/// ```
/// use executor_base::engine::{EngineCalls, Idempotency};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let calls = EngineCalls::with_defaults("docker");
/// let n: u32 = calls
///     .call("ping", Idempotency::Idempotent, || async { Ok(7) })
///     .await
///     .unwrap();
/// assert_eq!(n, 7);
/// assert_eq!(calls.request_stats().success, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct EngineCalls {
    inner: Arc<Inner>,
}

struct Inner {
    executor: &'static str,
    retry: RetryPolicy,
    breaker_config: BreakerConfig,
    breaker: Mutex<Breaker>,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    total: u64,
    timeouts: u64,
    success: u64,
    failure: u64,
    concurrent: u64,
    finished: u64,
    total_millis: f64,
}

impl fmt::Debug for EngineCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineCalls")
            .field("executor", &self.inner.executor)
            .field("retry", &self.inner.retry)
            .field("breaker", &self.inner.breaker_config)
            .field("is_closed", &self.breaker_stats().is_closed)
            .finish()
    }
}

/// Decrements the in-flight counter even when the caller drops the call's future.
struct InFlight<'a>(&'a Mutex<Counters>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut c = self.0.lock();
        c.concurrent = c.concurrent.saturating_sub(1);
    }
}

impl EngineCalls {
    /// Engine calls of `executor` (its scheme, e.g. `"docker"`) with these policies.
    pub fn new(executor: &'static str, retry: RetryPolicy, breaker: BreakerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor,
                retry,
                breaker_config: breaker.clone(),
                breaker: Mutex::new(Breaker::new(breaker)),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }

    /// Engine calls of `executor` with [`RetryPolicy::default`] and
    /// [`BreakerConfig::default`].
    pub fn with_defaults(executor: &'static str) -> Self {
        Self::new(executor, RetryPolicy::default(), BreakerConfig::default())
    }

    /// The executor name errors are tagged with.
    pub fn executor(&self) -> &'static str {
        self.inner.executor
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The breaker configuration.
    pub fn breaker_config(&self) -> &BreakerConfig {
        &self.inner.breaker_config
    }

    /// Runs `f`, retrying `Error::is_temporary()` errors with exponential backoff + jitter,
    /// honouring `Error::retry_after()`; NotIdempotent calls are retried only for errors
    /// that prove the request never reached the engine (ErrorKind::Unavailable from a
    /// connect failure, or ErrorKind::RateLimited). Counts requests/timeouts/latency for
    /// stats and opens the breaker after repeated failures (then fails fast with
    /// ErrorKind::CircuitOpen).
    ///
    /// Errors are tagged with the executor and `operation` when they carry none; an error
    /// returned after retries carries an `attempts` context entry.
    pub async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        idem: Idempotency,
        mut f: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let mut attempt: u32 = 0;
        loop {
            let result = self.attempt(operation, &mut f).await;
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => self.tag(e, operation),
            };
            if error.kind() == ErrorKind::CircuitOpen
                || attempt >= self.inner.retry.max_retries
                || !idem.may_retry(&error)
            {
                return Err(with_attempts(error, attempt));
            }
            let Some(delay) = self.inner.retry.delay(attempt, error.retry_after()) else {
                // The engine asked for a longer pause than we are willing to sleep.
                return Err(with_attempts(error, attempt));
            };
            tracing::debug!(
                executor = self.inner.executor,
                operation,
                attempt = attempt + 1,
                kind = %error.kind(),
                delay_ms = delay.as_millis() as u64,
                "engine call failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt: breaker admission, per-call timeout, counters.
    async fn attempt<T, F, Fut>(&self, operation: &'static str, f: &mut F) -> Result<T, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let admission = self.inner.breaker.lock().admit(Instant::now());
        let probe = match admission {
            Admission::Allowed { probe } => probe,
            Admission::Rejected { retry_in } => {
                let mut e = Error::new(
                    ErrorKind::CircuitOpen,
                    "engine failed repeatedly; circuit breaker is open, failing fast",
                )
                .temporary();
                if let Some(d) = retry_in {
                    e = e.with_retry_after(d);
                }
                return Err(e);
            }
        };
        let mut guard = breaker::ProbeGuard::new(&self.inner.breaker, probe);

        {
            let mut c = self.inner.counters.lock();
            c.total += 1;
            c.concurrent += 1;
        }
        let _in_flight = InFlight(&self.inner.counters);
        let started = Instant::now();
        let timeout = self.inner.breaker_config.call_timeout;
        let result = match tokio::time::timeout(timeout, f()).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{operation} did not finish within {} ms",
                    timeout.as_millis()
                ),
            )
            .temporary()),
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        {
            let mut c = self.inner.counters.lock();
            c.finished += 1;
            c.total_millis += elapsed_ms;
            match &result {
                Ok(_) => c.success += 1,
                Err(e) => {
                    c.failure += 1;
                    if e.kind() == ErrorKind::Timeout {
                        c.timeouts += 1;
                    }
                }
            }
        }
        // Only temporary errors say the engine is unhealthy; an answer like 404 means it
        // is up and talking.
        let healthy = match &result {
            Ok(_) => true,
            Err(e) => !e.is_temporary(),
        };
        guard.finish(healthy, Instant::now());
        result
    }

    fn tag(&self, mut e: Error, operation: &'static str) -> Error {
        if e.executor().is_empty() {
            e = e.with_executor(self.inner.executor);
        }
        if e.operation().is_empty() {
            e = e.with_operation(operation);
        }
        e
    }

    /// Request counters (upstream `stats().requests`); counts attempts, not calls.
    pub fn request_stats(&self) -> RequestStats {
        let c = self.inner.counters.lock();
        RequestStats {
            total: c.total,
            timeouts: c.timeouts,
            success: c.success,
            failure: c.failure,
            concurrent: c.concurrent,
            average_time: if c.finished == 0 {
                0.0
            } else {
                c.total_millis / c.finished as f64
            },
        }
    }

    /// Breaker state (upstream `stats().breaker`); half-open counts as not closed.
    pub fn breaker_stats(&self) -> BreakerStats {
        BreakerStats {
            is_closed: self.inner.breaker.lock().is_closed(),
        }
    }
}

fn with_attempts(error: Error, retries: u32) -> Error {
    if retries == 0 {
        error
    } else {
        error.with_context("attempts", (retries + 1).to_string())
    }
}

#[cfg(test)]
mod tests;
