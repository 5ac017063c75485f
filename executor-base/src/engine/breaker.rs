//! Circuit breakers, one per [`CallClass`]: closed -> open -> half-open -> closed.

use std::fmt;
use std::time::Duration;

use crate::sync::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::retry::duration_millis;
use crate::error::{Error, ErrorKind};

/// When a breaker opens and how long each engine call may take.
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
    /// Consecutive failed attempts (temporary errors, timeouts) of one call class that
    /// open that class's breaker; `0` disables the breakers.
    pub max_failures: u32,
    /// How long a breaker stays open before one probe call is let through (half-open),
    /// unless the engine answers another call first (which closes it at once).
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

/// What an engine call does, which decides the breaker it goes through.
///
/// Failures of one class never make calls of another class fail fast: a run of failing
/// starts (a bad registry, a quota) cannot stop reads, and nothing can stop a stop.
///
/// ```
/// use executor_base::engine::CallClass;
/// assert_eq!(CallClass::Stop.as_str(), "stop");
/// assert!(!CallClass::Stop.has_breaker());
/// assert!(CallClass::Start.has_breaker());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CallClass {
    /// Calls that create work: create, start, pull, trigger, upload.
    Start,
    /// Calls that only look: get, inspect, list, logs, status.
    Read,
    /// Calls that stop or remove work: stop, kill, delete, cleanup, garbage collection.
    /// They have no breaker and are always attempted (with the retry policy), and their
    /// failures trip no breaker: releasing resources must never wait for a breaker that
    /// other calls tripped.
    Stop,
    /// Unclassified calls ([`super::EngineCalls::call`]): one breaker of their own.
    General,
}

impl CallClass {
    /// Every class.
    pub const ALL: [CallClass; 4] = [
        CallClass::Start,
        CallClass::Read,
        CallClass::Stop,
        CallClass::General,
    ];

    /// A short lowercase name (`"start"`, `"read"`, `"stop"`, `"general"`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallClass::Start => "start",
            CallClass::Read => "read",
            CallClass::Stop => "stop",
            CallClass::General => "general",
        }
    }

    /// Whether calls of this class can be refused by a breaker (all but [`CallClass::Stop`]).
    pub fn has_breaker(self) -> bool {
        self.slot().is_some()
    }

    /// The index of the class's breaker.
    fn slot(self) -> Option<usize> {
        match self {
            CallClass::Start => Some(0),
            CallClass::Read => Some(1),
            CallClass::General => Some(2),
            CallClass::Stop => None,
        }
    }
}

impl fmt::Display for CallClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one class's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast with the last real cause; a probe is let through after `retry_in`.
    Open {
        /// Time left until the next probe.
        retry_in: Duration,
    },
    /// One probe call may go (or is going) to the engine; its success closes the breaker.
    HalfOpen,
}

/// The context key an error refused by a breaker carries (its value describes the
/// breaker's state); see [`refused_by_breaker`].
pub const BREAKER_CONTEXT: &str = "breaker";

/// Whether `error` was returned by an open breaker without calling the engine, so the
/// request certainly never reached it (even a non-idempotent call had no effect).
///
/// ```
/// use executor_base::{Error, ErrorKind};
/// use executor_base::engine::{refused_by_breaker, BREAKER_CONTEXT};
/// let e = Error::new(ErrorKind::Unavailable, "cannot connect").with_context(BREAKER_CONTEXT, "open");
/// assert!(refused_by_breaker(&e));
/// assert!(!refused_by_breaker(&Error::new(ErrorKind::Unavailable, "cannot connect")));
/// ```
pub fn refused_by_breaker(error: &Error) -> bool {
    error.context().iter().any(|(k, _)| *k == BREAKER_CONTEXT)
}

/// What a failed attempt said, kept so an open breaker can report it.
#[derive(Debug, Clone)]
pub(super) struct Cause {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    context: Vec<(&'static str, String)>,
    operation: &'static str,
}

impl Cause {
    fn of(e: &Error, operation: &'static str) -> Self {
        Self {
            kind: e.kind(),
            message: e.message().to_string(),
            status: e.status(),
            context: e
                .context()
                .iter()
                .filter(|(k, _)| *k != "attempts" && *k != BREAKER_CONTEXT)
                .cloned()
                .collect(),
            operation,
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
#[derive(Debug)]
pub(super) enum Admission {
    /// Go ahead; `probe` is true for the single trial call of a half-open breaker.
    Allowed { probe: bool },
    /// Fail fast with this error (the last real cause, the breaker state as context).
    Rejected(Error),
}

#[derive(Debug)]
struct Breaker {
    state: State,
    /// Consecutive failures that opened (or count towards opening) the breaker.
    failures: u32,
    last: Option<Cause>,
}

impl Breaker {
    const CLOSED: Breaker = Breaker {
        state: State::Closed { failures: 0 },
        failures: 0,
        last: None,
    };
}

/// The breakers of one engine (one per class that has one), behind one lock so that a
/// sign of life closes them all at once.
#[derive(Debug)]
pub(super) struct Breakers {
    /// The backend, for the transition metric.
    executor: &'static str,
    config: BreakerConfig,
    slots: [Breaker; 3],
}

impl Breakers {
    pub(super) fn new(executor: &'static str, config: BreakerConfig) -> Self {
        Self {
            executor,
            config,
            slots: [Breaker::CLOSED, Breaker::CLOSED, Breaker::CLOSED],
        }
    }

    pub(super) fn admit(&mut self, class: CallClass, now: Instant) -> Admission {
        let Some(slot) = class.slot() else {
            return Admission::Allowed { probe: false };
        };
        let b = &mut self.slots[slot];
        let retry_in = match b.state {
            State::Closed { .. } => return Admission::Allowed { probe: false },
            State::Open { until } if now >= until => {
                b.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                transition(self.executor, class, "half_open");
                return Admission::Allowed { probe: true };
            }
            State::Open { until } => Some(until - now),
            State::HalfOpen {
                probe_in_flight: true,
            } => None,
            State::HalfOpen {
                probe_in_flight: false,
            } => {
                b.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                return Admission::Allowed { probe: true };
            }
        };
        Admission::Rejected(refusal(class, b, retry_in))
    }

    /// Records the outcome of an admitted attempt: `None` for an answer from the engine
    /// (a success or a persistent error such as a 404), else the temporary error.
    pub(super) fn record(
        &mut self,
        class: CallClass,
        probe: bool,
        failure: Option<(&Error, &'static str)>,
        now: Instant,
    ) {
        if self.config.max_failures == 0 {
            return;
        }
        let Some((error, operation)) = failure else {
            // Any answer proves the engine is reachable: every class may go again.
            self.healthy();
            return;
        };
        let Some(slot) = class.slot() else {
            return;
        };
        let open = State::Open {
            until: now + self.config.reset_timeout,
        };
        let max = self.config.max_failures;
        let b = &mut self.slots[slot];
        b.last = Some(Cause::of(error, operation));
        match b.state {
            State::Closed { failures } => {
                b.failures = failures + 1;
                b.state = if failures + 1 >= max {
                    transition(self.executor, class, "open");
                    open
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                };
            }
            State::HalfOpen { .. } if probe => {
                b.failures += 1;
                b.state = open;
                transition(self.executor, class, "open");
            }
            // A call admitted before the breaker opened: it adds evidence, not time.
            State::Open { .. } | State::HalfOpen { .. } => {}
        }
    }

    /// The engine answered (here or through another channel): close every breaker.
    pub(super) fn healthy(&mut self) {
        for (class, b) in SLOT_CLASSES.iter().zip(&self.slots) {
            if !matches!(b.state, State::Closed { .. }) {
                transition(self.executor, *class, "closed");
            }
        }
        self.slots = [Breaker::CLOSED, Breaker::CLOSED, Breaker::CLOSED];
    }

    /// A probe was abandoned (its future dropped): let another one through.
    pub(super) fn release_probe(&mut self, class: CallClass) {
        if let Some(slot) = class.slot()
            && let State::HalfOpen { .. } = self.slots[slot].state
        {
            self.slots[slot].state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    pub(super) fn state(&self, class: CallClass, now: Instant) -> BreakerState {
        if self.config.max_failures == 0 {
            return BreakerState::Closed;
        }
        match class.slot().map(|s| self.slots[s].state) {
            None | Some(State::Closed { .. }) => BreakerState::Closed,
            Some(State::Open { until }) if now < until => BreakerState::Open {
                retry_in: until - now,
            },
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether every breaker is closed.
    pub(super) fn all_closed(&self) -> bool {
        self.config.max_failures == 0
            || self
                .slots
                .iter()
                .all(|b| matches!(b.state, State::Closed { .. }))
    }
}

/// The class of each breaker slot (see [`CallClass::slot`]).
const SLOT_CLASSES: [CallClass; 3] = [CallClass::Start, CallClass::Read, CallClass::General];

fn transition(executor: &'static str, class: CallClass, state: &'static str) {
    tracing::debug!(
        executor,
        class = class.as_str(),
        state,
        "circuit breaker changed state"
    );
    crate::metrics::record::breaker_transition(executor, class, state);
}

/// The error of a call refused by `b`: its last real cause, the breaker's state as context.
fn refusal(class: CallClass, b: &Breaker, retry_in: Option<Duration>) -> Error {
    let state = match retry_in {
        Some(d) => format!(
            "open after {} consecutive failures of {class} calls{}; next probe in {}s",
            b.failures,
            b.last
                .as_ref()
                .map(|c| format!(" (last: {})", c.operation))
                .unwrap_or_default(),
            d.as_secs() + u64::from(d.subsec_nanos() > 0),
        ),
        None => format!("half-open: a probe {class} call is in flight"),
    };
    let mut e = match &b.last {
        Some(c) => {
            let mut e = Error::new(c.kind, c.message.clone());
            if let Some(s) = c.status {
                e = e.with_status(s);
            }
            for (k, v) in &c.context {
                e = e.with_context(k, v.clone());
            }
            e
        }
        None => Error::new(
            ErrorKind::CircuitOpen,
            "engine failed repeatedly; circuit breaker is open, failing fast",
        ),
    }
    .temporary()
    .with_context(BREAKER_CONTEXT, state);
    if let Some(d) = retry_in {
        e = e.with_retry_after(d);
    }
    e
}

/// Records an attempt's outcome; releases a half-open probe if the attempt is cancelled.
pub(super) struct ProbeGuard<'a> {
    breakers: &'a Mutex<Breakers>,
    class: CallClass,
    probe: bool,
    done: bool,
}

impl<'a> ProbeGuard<'a> {
    pub(super) fn new(breakers: &'a Mutex<Breakers>, class: CallClass, probe: bool) -> Self {
        Self {
            breakers,
            class,
            probe,
            done: false,
        }
    }

    pub(super) fn finish(&mut self, failure: Option<(&Error, &'static str)>, now: Instant) {
        self.done = true;
        self.breakers
            .lock()
            .record(self.class, self.probe, failure, now);
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breakers.lock().release_probe(self.class);
        }
    }
}
