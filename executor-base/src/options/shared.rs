//! Keys every backend spells the same way: retry, breaker, timeout, ecosystem, resources.

use std::time::Duration;

use super::{Kind, OptionValue, Options};
use crate::engine::{BreakerConfig, RetryPolicy};
use crate::launch::Ecosystem;
use crate::preflight::PreflightOptions;
use crate::resources::ResourceTable;
use crate::timeout::TimeoutPolicy;

/// A lens from a config to one of its parts.
pub trait Lens<C, T>: for<'a> Fn(&'a mut C) -> &'a mut T + Copy + Send + Sync + 'static {}
impl<C, T, F> Lens<C, T> for F where
    F: for<'a> Fn(&'a mut C) -> &'a mut T + Copy + Send + Sync + 'static
{
}

impl<C: Clone + Default + 'static> Options<C> {
    /// A duration field given in whole milliseconds.
    pub fn millis(
        self,
        name: &'static str,
        doc: &'static str,
        lens: impl Lens<C, Duration>,
    ) -> Self {
        self.custom(
            name,
            doc,
            Kind::Integer,
            move |c, raw| {
                *lens(c) = Duration::from_millis(u64::parse_option(raw)?);
                Ok(())
            },
            move |c| lens(&mut c.clone()).as_millis().to_string(),
            move |c| *lens(c) = *lens(&mut C::default()),
        )
    }

    /// `retry.maxRetries`, `retry.initialBackoffMs`, `retry.maxBackoffMs`,
    /// `retry.multiplier`, `retry.jitter`, `retry.budgetMs` ([`RetryPolicy`]).
    pub fn retry(self, lens: impl Lens<C, RetryPolicy>) -> Self {
        self.field(
            "retry.maxRetries",
            "Retries of a failed engine call after the first attempt (temporary errors only).",
            move |c| &mut lens(c).max_retries,
        )
        .millis(
            "retry.initialBackoffMs",
            "Wait before the first retry, ms; doubles (`retry.multiplier`) per retry.",
            move |c| &mut lens(c).initial_backoff,
        )
        .alias("retry.initialBackoff")
        .millis(
            "retry.maxBackoffMs",
            "Longest wait between retries, ms; a longer `Retry-After` is handed back instead.",
            move |c| &mut lens(c).max_backoff,
        )
        .alias("retry.maxBackoff")
        .field(
            "retry.multiplier",
            "Growth factor of the wait per retry.",
            move |c| &mut lens(c).multiplier,
        )
        .field(
            "retry.jitter",
            "Randomise each wait within its upper half.",
            move |c| &mut lens(c).jitter,
        )
        .custom(
            "retry.budgetMs",
            "No retry starts later than this many ms after the call began (`0`: as long as `retry.maxRetries` allows), so a call on an engine that is down fails within this plus one `breaker.callTimeoutMs`.",
            Kind::Integer,
            move |c, raw| {
                let ms = u64::parse_option(raw)?;
                lens(c).budget = (ms > 0).then(|| Duration::from_millis(ms));
                Ok(())
            },
            move |c| {
                lens(&mut c.clone())
                    .budget
                    .map_or(0, |d| d.as_millis())
                    .to_string()
            },
            move |c| lens(c).budget = lens(&mut C::default()).budget,
        )
    }

    /// `breaker.maxFailures`, `breaker.resetTimeoutMs`, `breaker.callTimeoutMs`
    /// ([`BreakerConfig`]).
    pub fn breaker(self, lens: impl Lens<C, BreakerConfig>) -> Self {
        self.field(
            "breaker.maxFailures",
            "Consecutive failed engine calls that open the circuit breaker (0: never).",
            move |c| &mut lens(c).max_failures,
        )
        .millis(
            "breaker.resetTimeoutMs",
            "How long the breaker stays open before one probe call, ms.",
            move |c| &mut lens(c).reset_timeout,
        )
        .alias("breaker.resetTimeout")
        .millis(
            "breaker.callTimeoutMs",
            "Bound on each single engine call, ms.",
            move |c| &mut lens(c).call_timeout,
        )
        .alias("breaker.callTimeout")
    }

    /// `timeout.defaultMinutes`, `timeout.maxMinutes` ([`TimeoutPolicy`]); the old
    /// spellings `timeoutDefaultMinutes`/`timeoutMaxMinutes` are aliases.
    pub fn timeout(self, lens: impl Lens<C, TimeoutPolicy>) -> Self {
        self.field(
            "timeout.defaultMinutes",
            "Build timeout when the build has no `screwdriver.cd/timeout` annotation, minutes.",
            move |c| &mut lens(c).default_minutes,
        )
        .alias("timeoutDefaultMinutes")
        .field(
            "timeout.maxMinutes",
            "Cap on a build's `screwdriver.cd/timeout`, minutes.",
            move |c| &mut lens(c).max_minutes,
        )
        .alias("timeoutMaxMinutes")
    }

    /// `preflight.cacheMs`, `preflight.timeoutMs` ([`PreflightOptions`]).
    pub fn preflight(self, lens: impl Lens<C, PreflightOptions>) -> Self {
        self.millis(
            "preflight.cacheMs",
            "How long a pre-flight answer is reused for builds with the same key (launcher image, launch mode, build image, ...), ms (`0`: check every build).",
            move |c| &mut lens(c).cache_ttl,
        )
        .millis(
            "preflight.timeoutMs",
            "Bound on each pre-flight engine check, ms; past it the check fails naming the address.",
            move |c| &mut lens(c).check_timeout,
        )
    }

    /// `storeUri`, `uiUri` ([`Ecosystem`]).
    pub fn ecosystem(self, lens: impl Lens<C, Ecosystem>) -> Self {
        self.field(
            "storeUri",
            "Artifact store URL passed to builds (a build's own `storeUri` wins).",
            move |c| &mut lens(c).store,
        )
        .alias("ecosystem.store")
        .field(
            "uiUri",
            "UI URL passed to builds (a build's own `uiUri` wins).",
            move |c| &mut lens(c).ui,
        )
        .alias("ecosystem.ui")
    }

    /// `resources` ([`ResourceTable`]): cores and GiB per tier, as JSON
    /// (`{"ram": {"high": 8}}` changes one tier) or one value (`resources.ram.high=8`).
    pub fn resources(self, lens: impl Lens<C, ResourceTable>) -> Self {
        self.json(
            "resources",
            "CPU cores and RAM GiB per tier (`micro`, `low`, `high`, `turbo`, `max`); set one with `resources.ram.high=8`.",
            lens,
        )
    }
}
