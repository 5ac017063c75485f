//! Exponential backoff with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How failed engine calls are retried.
///
/// The wait before retry `n` (0-based) is `initial_backoff * multiplier^n`, capped at
/// `max_backoff`; with `jitter` it is drawn uniformly from the upper half of that value
/// ("equal jitter"), so concurrent callers spread out but never retry sooner than half the
/// backoff. A `Retry-After` from the engine is a lower bound on the wait.
///
/// `budget` bounds the whole series: no retry starts later than `budget` after the call
/// began, so a call on an engine that is down fails within `budget` plus one call
/// timeout instead of after every backoff (the default, [`DEFAULT_RETRY_BUDGET`], keeps
/// a call within 15 s with the default 10 s call timeout, where the full series of 5
/// retries could take 91 s against an engine that swallows connections). A caller that
/// wants to ride out a longer outage retries the call itself, or raises the budget.
///
/// ```
/// use std::time::Duration;
/// use executor_base::engine::RetryPolicy;
/// let p = RetryPolicy { jitter: false, ..RetryPolicy::default() };
/// assert_eq!(p.backoff(0), Duration::from_secs(1));
/// assert_eq!(p.backoff(3), Duration::from_secs(8));
/// assert_eq!(p.backoff(10), p.max_backoff);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` attempts).
    pub max_retries: u32,
    /// The wait before the first retry.
    #[serde(with = "duration_millis")]
    pub initial_backoff: Duration,
    /// The longest single wait; a `Retry-After` above it is not waited for.
    #[serde(with = "duration_millis")]
    pub max_backoff: Duration,
    /// Growth factor of the wait per retry (values below 1 are treated as 1).
    pub multiplier: f64,
    /// Randomise each wait within its upper half; turn off for deterministic tests.
    pub jitter: bool,
    /// No retry starts later than this after the call began (`None`: retry as long as
    /// `max_retries` allows). Serialised as milliseconds, `0` for none.
    #[serde(with = "option_millis")]
    pub budget: Option<Duration>,
}

/// The default [`RetryPolicy::budget`]: 5 s, so a call on an engine that is down answers
/// within seconds (refused: attempts at 0, ~1 and ~3 s), and within 15 s when every
/// attempt waits out its 10 s call timeout.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(5);

impl Default for RetryPolicy {
    /// Upstream circuit-fuses: 5 retries, exponential from 1 s doubling, capped at 30 s;
    /// and (unlike upstream) no retry later than [`DEFAULT_RETRY_BUDGET`] after the call
    /// began.
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: true,
            budget: Some(DEFAULT_RETRY_BUDGET),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The backoff before retry `attempt` (0-based), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        let max = self.max_backoff.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max_backoff
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before retry `attempt` (0-based), with jitter when enabled and never
    /// shorter than `retry_after`; `None` when `retry_after` exceeds
    /// [`RetryPolicy::max_backoff`] (the caller should give up and hand the error back).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(after) = retry_after
            && after > self.max_backoff
        {
            return None;
        }
        let base = self.backoff(attempt);
        let jittered = if self.jitter && !base.is_zero() {
            let half = base / 2;
            let extra = fastrand::u64(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
            half + Duration::from_nanos(extra)
        } else {
            base
        };
        Some(jittered.max(retry_after.unwrap_or_default()))
    }
}

/// Serialises durations as integer milliseconds (config files stay readable).
pub(crate) mod duration_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Serialises an optional duration as integer milliseconds, `0` for `None`.
pub(super) mod option_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        u64::deserialize(d).map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
    }
}
