//! The circuit breaker: closed -> open -> half-open -> closed.

use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::retry::duration_millis;

/// When the breaker opens and how long each engine call may take.
///
/// ```
/// use std::time::Duration;
/// let b = executor_base::engine::BreakerConfig::default();
/// assert_eq!((b.max_failures, b.reset_timeout, b.call_timeout),
///            (5, Duration::from_secs(30), Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BreakerConfig {
    /// Consecutive failed attempts (temporary errors, timeouts) that open the breaker;
    /// `0` disables the breaker.
    pub max_failures: u32,
    /// How long the breaker stays open before one probe call is let through (half-open).
    #[serde(with = "duration_millis")]
    pub reset_timeout: Duration,
    /// The bound on each single attempt; a slower attempt fails with
    /// [`crate::ErrorKind::Timeout`].
    #[serde(with = "duration_millis")]
    pub call_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            reset_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// Whether an attempt may go to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Go ahead; `probe` is true for the single trial call of the half-open state.
    Allowed { probe: bool },
    /// Fail fast; the breaker may let a probe through after `retry_in`.
    Rejected { retry_in: Option<Duration> },
}

#[derive(Debug)]
pub(super) struct Breaker {
    config: BreakerConfig,
    state: State,
}

impl Breaker {
    pub(super) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    pub(super) fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Allowed { probe: false },
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                Admission::Allowed { probe: true }
            }
            State::Open { until } => Admission::Rejected {
                retry_in: Some(until - now),
            },
            State::HalfOpen {
                probe_in_flight: true,
            } => Admission::Rejected { retry_in: None },
            State::HalfOpen {
                probe_in_flight: false,
            } => {
                self.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                Admission::Allowed { probe: true }
            }
        }
    }

    /// Records the outcome of an admitted attempt.
    fn record(&mut self, probe: bool, healthy: bool, now: Instant) {
        if self.config.max_failures == 0 {
            return;
        }
        if healthy {
            // Any answer from the engine proves it is reachable again.
            self.state = State::Closed { failures: 0 };
            return;
        }
        let open = State::Open {
            until: now + self.config.reset_timeout,
        };
        self.state = match self.state {
            State::Closed { failures } if failures + 1 >= self.config.max_failures => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            State::HalfOpen { .. } if probe => open,
            other => other,
        };
    }

    /// The probe was abandoned (its future dropped): let another one through.
    fn release_probe(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.config.max_failures == 0 || matches!(self.state, State::Closed { .. })
    }
}

/// Records an attempt's outcome; releases a half-open probe if the attempt is cancelled.
pub(super) struct ProbeGuard<'a> {
    breaker: &'a Mutex<Breaker>,
    probe: bool,
    done: bool,
}

impl<'a> ProbeGuard<'a> {
    pub(super) fn new(breaker: &'a Mutex<Breaker>, probe: bool) -> Self {
        Self {
            breaker,
            probe,
            done: false,
        }
    }

    pub(super) fn finish(&mut self, healthy: bool, now: Instant) {
        self.done = true;
        self.breaker.lock().record(self.probe, healthy, now);
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.lock().release_probe();
        }
    }
}
