//! One retry policy and per-class circuit breakers for every backend's engine calls.
//!
//! Every call a backend makes to its engine (Docker, Kubernetes, Jenkins, gearmand) goes
//! through [`EngineCalls::call_in`] (or [`EngineCalls::call`] for unclassified calls), which
//!
//! - bounds each attempt by [`BreakerConfig::call_timeout`] (an attempt that runs longer
//!   fails with a temporary [`ErrorKind::Timeout`]);
//! - retries temporary errors ([`Error::is_temporary`]) with exponential backoff and
//!   jitter, never sooner than the engine's [`Error::retry_after`]; a call marked
//!   [`Idempotency::NotIdempotent`] is retried only when the error proves the request
//!   was not applied: [`ErrorKind::RateLimited`], or [`ErrorKind::Unavailable`] without
//!   an HTTP status (the connection failed). A 503 is an answer: the request reached the
//!   engine (or a gateway in front of it) and may have been applied, so it is not retried;
//! - counts attempts for [`RequestStats`] and passes each attempt through the circuit
//!   breaker of the call's [`CallClass`].
//!
//! # Breakers
//!
//! One engine has one breaker per class that has one: [`CallClass::Start`] (create,
//! start, pull), [`CallClass::Read`] (inspect, get, list) and [`CallClass::General`]
//! (what [`EngineCalls::call`] uses, so a backend that has not classified its calls
//! behaves as with one shared breaker). The rules:
//!
//! 1. **Per class.** [`BreakerConfig::max_failures`] consecutive temporary failures of
//!    one class open that class's breaker; the other classes keep calling the engine. A
//!    bad image or registry that fails every start cannot make status reads fail fast.
//! 2. **Stop and cleanup are always attempted.** [`CallClass::Stop`] has no breaker: a
//!    stop, delete or garbage collection goes to the engine (with the retry policy) no
//!    matter what other calls did, and its own failures trip nothing.
//! 3. **The real reason.** A call refused by an open breaker fails with the *last real
//!    cause* of that class (e.g. `unavailable: cannot connect to unix:///var/run/docker.sock`,
//!    same kind, message and HTTP status), temporary, with the breaker's state as context
//!    ([`BREAKER_CONTEXT`]: "open after 5 consecutive failures of start calls (last:
//!    create container); next probe in 28s") and the time to the next probe as
//!    [`Error::retry_after`]. [`refused_by_breaker`] tells such an error apart (the request
//!    never left, so even a create had no effect).
//! 4. **Recovery.** After [`BreakerConfig::reset_timeout`] an open breaker lets one probe
//!    call through (half-open); a successful probe closes it, a failed one re-opens it.
//!    Any answer from the engine — a success or a persistent error like a 404, in *any*
//!    class — proves it is reachable and closes *every* breaker at once, and so does
//!    [`EngineCalls::report_healthy`], for backends that see the engine through another
//!    channel (a Kubernetes watch, a Docker event stream). So after the engine returns,
//!    the next call works as soon as anything has reached it (a stop always tries).
//!
//! Breakers are per engine, i.e. per [`EngineCalls`]: a backend that talks to two
//! dependencies (a Docker daemon and the registries it pulls from) gives each its own
//! `EngineCalls` (see [`EngineCalls::sibling`], which shares the request counters), so a
//! failing registry never trips the daemon's breakers.
//!
//! Defaults follow upstream's `circuit-fuses` (5 retries, exponential from 1 s; open after
//! 5 failures for 30 s). Deliberate differences: no retry starts later than
//! [`RetryPolicy::budget`] (5 s) after the call began, so a call on an engine that is down
//! answers within seconds, at most 15 s when every attempt waits out its 10 s timeout
//! (upstream's series could take 91 s); the per-class breakers and rules 2-4
//! above; only *temporary* errors count as breaker failures (a 404 or a validation error
//! means the engine answered, so it is healthy); and a `Retry-After` longer than
//! [`RetryPolicy::max_backoff`] is not slept on: the error is handed back to the caller,
//! still temporary and carrying its `retry_after`, so no call blocks for minutes inside
//! the library.
//!
//! # Opt-ins for backends that know their engine better
//!
//! - [`EngineCalls::with_retry_budget`]: overrides [`RetryPolicy::budget`] (no retry
//!   starts later than this after the call began), so an engine that is down is reported
//!   within a stated time instead of after the whole backoff series.
//! - [`EngineCalls::with_health_probe`]: while a breaker is open, a cheap liveness check
//!   (Docker's `GET /_ping`) runs at most once per interval before a call would be refused;
//!   if the engine answers, every breaker closes and the call goes through. So the first
//!   call after the engine returns works, whatever its class and however long the breaker
//!   had left to stay open.
//! - [`EngineCalls::create_named`]: a create of an object under a name the client
//!   chose, retried on every temporary error (a repeat is refused by name, never
//!   creates twice), with a lost answer turned into [`Created::Earlier`].
//! - [`EngineCalls::call_with_timeout`]: one call with its own per-attempt bound (an image
//!   pull takes minutes, other calls seconds) through the same breakers.
//!
//! All waits use [`tokio::time`], so tests can run them with paused time.

mod breaker;
mod named_create;
mod retry;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use std::pin::Pin;

use crate::sync::Mutex;
use tokio::time::{Duration, Instant};

use breaker::{Admission, Breakers};
pub use breaker::{BREAKER_CONTEXT, BreakerConfig, BreakerState, CallClass, refused_by_breaker};
pub use named_create::Created;
pub(crate) use retry::duration_millis;
pub use retry::{DEFAULT_RETRY_BUDGET, RetryPolicy};

use crate::error::{Error, ErrorKind};
use crate::stats::{BreakerStats, RequestStats};

/// Whether repeating a call is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Repeating the call has the same effect as making it once (GET, DELETE, PUT of a
    /// whole object): any temporary error may be retried.
    Idempotent,
    /// Repeating the call could act twice (create, start, POST): retried only when the
    /// error proves the request was not applied (a 429, or a connection that failed
    /// before any answer; not a 503, which is an answer).
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
            Idempotency::NotIdempotent => match error.kind() {
                ErrorKind::RateLimited => true,
                ErrorKind::Unavailable => error.status().is_none(),
                _ => false,
            },
        }
    }
}

/// Whether a failed call may still have been applied by the engine: a temporary error
/// (a timeout, a connection broken after the request went out, a 5xx) that does not
/// prove the request never reached it, as a refused connection or a 429 does. A
/// non-idempotent request that failed so is never retried blindly; its outcome must be
/// looked up.
pub fn may_have_been_applied(error: &Error) -> bool {
    error.is_temporary() && !Idempotency::NotIdempotent.may_retry(error)
}

/// The error of an engine call that did not finish within `timeout`: temporary, and
/// naming `endpoint` (the engine's address, without credentials) when there is one.
/// [`EngineCalls`] makes it for attempts that time out; a backend bounding an exchange
/// of its own (a connect) makes it here too, so both read the same.
///
/// ```
/// use std::time::Duration;
/// use executor_base::engine::timed_out;
/// let e = timed_out(Some("tcp://engine:2375"), "info", Duration::from_secs(10));
/// assert!(e.is_temporary());
/// assert!(e.to_string().contains("tcp://engine:2375 did not answer info within 10000 ms"));
/// ```
pub fn timed_out(endpoint: Option<&str>, operation: &str, timeout: Duration) -> Error {
    let ms = timeout.as_millis();
    let message = match endpoint {
        Some(at) => format!("{at} did not answer {operation} within {ms} ms"),
        None => format!("{operation} did not finish within {ms} ms"),
    };
    Error::new(ErrorKind::Timeout, message).temporary()
}

/// The retry policy, circuit breakers and request counters of one executor's engine.
///
/// Cheap to clone: clones share the breakers and the counters.
///
/// ```
/// use executor_base::engine::{CallClass, EngineCalls, Idempotency};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let calls = EngineCalls::with_defaults("docker");
/// let n: u32 = calls
///     .call_in(CallClass::Read, "ping", Idempotency::Idempotent, || async { Ok(7) })
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

/// A cheap liveness check of an engine (Docker's `GET /_ping`, a Kubernetes `/readyz`):
/// resolves to whether the engine answered. See [`EngineCalls::with_health_probe`].
pub type HealthProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> + Send + Sync>;

struct Inner {
    executor: &'static str,
    retry: RetryPolicy,
    breaker_config: BreakerConfig,
    breakers: Arc<Mutex<Breakers>>,
    counters: Arc<Mutex<Counters>>,
    opt_ins: Arc<Mutex<OptIns>>,
}

/// The opt-in behaviours; see the module docs.
#[derive(Default)]
struct OptIns {
    retry_budget: Option<Duration>,
    probe: Option<Arc<Probe>>,
    endpoint: Option<Arc<str>>,
}

struct Probe {
    every: Duration,
    check: HealthProbe,
    /// When the last probe started; held while a probe runs, so concurrent callers wait
    /// for its answer instead of being refused meanwhile.
    last: tokio::sync::Mutex<Option<Instant>>,
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

/// Why an attempt failed: the engine's error, or a breaker's refusal (nothing was sent).
enum Failed {
    Engine(Error),
    Refused(Error),
}

impl EngineCalls {
    /// Engine calls of `executor` (its scheme, e.g. `"docker"`) with these policies.
    pub fn new(executor: &'static str, retry: RetryPolicy, breaker: BreakerConfig) -> Self {
        Self::with_counters(executor, retry, breaker, Arc::default())
    }

    fn with_counters(
        executor: &'static str,
        retry: RetryPolicy,
        breaker: BreakerConfig,
        counters: Arc<Mutex<Counters>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor,
                retry,
                breaker_config: breaker.clone(),
                breakers: Arc::new(Mutex::new(Breakers::new(executor, breaker))),
                counters,
                opt_ins: Arc::default(),
            }),
        }
    }

    /// Engine calls of `executor` with [`RetryPolicy::default`] and
    /// [`BreakerConfig::default`].
    pub fn with_defaults(executor: &'static str) -> Self {
        Self::new(executor, RetryPolicy::default(), BreakerConfig::default())
    }

    /// Calls to a second dependency of the same executor (a registry beside a daemon):
    /// its own policies and breakers, so its failures never make this engine's calls fail
    /// fast, but the same request counters ([`EngineCalls::request_stats`] of either
    /// counts both).
    pub fn sibling(&self, retry: RetryPolicy, breaker: BreakerConfig) -> Self {
        Self::with_counters(
            self.inner.executor,
            retry,
            breaker,
            self.inner.counters.clone(),
        )
    }

    /// Bounds the time a call spends retrying: no retry starts later than `budget` after
    /// the call began (the last attempt is still bounded by the call timeout, so a call
    /// takes at most `budget` + [`BreakerConfig::call_timeout`]). Overrides
    /// [`RetryPolicy::budget`] of every policy these calls use. Applies to every clone.
    ///
    /// ```
    /// use std::time::Duration;
    /// use executor_base::engine::EngineCalls;
    /// let calls = EngineCalls::with_defaults("docker").with_retry_budget(Duration::from_secs(3));
    /// assert_eq!(calls.retry_budget(), Some(Duration::from_secs(3)));
    /// ```
    pub fn with_retry_budget(self, budget: Duration) -> Self {
        self.inner.opt_ins.lock().retry_budget = Some(budget);
        self
    }

    /// The retry budget: the one set by [`EngineCalls::with_retry_budget`], else the
    /// retry policy's [`RetryPolicy::budget`].
    pub fn retry_budget(&self) -> Option<Duration> {
        self.inner
            .opt_ins
            .lock()
            .retry_budget
            .or(self.inner.retry.budget)
    }

    /// While the breaker of a call's class is open, runs `probe` (at most once per
    /// `every`, bounded by the call timeout and 2 s) before refusing the call; if the
    /// engine answers, every breaker closes ([`EngineCalls::report_healthy`]) and the call
    /// goes to the engine. Applies to every clone.
    pub fn with_health_probe(self, every: Duration, probe: HealthProbe) -> Self {
        self.inner.opt_ins.lock().probe = Some(Arc::new(Probe {
            every,
            check: probe,
            last: tokio::sync::Mutex::new(None),
        }));
        self
    }

    /// Names the engine these calls talk to (a socket, an API server's URL, a Gearman
    /// server) in the errors they make themselves, so an attempt that times out says where
    /// it was waiting: `unix:///run/docker.sock did not answer info within 10000 ms`.
    /// `endpoint` must carry no credentials. Applies to every clone.
    ///
    /// ```
    /// use executor_base::engine::EngineCalls;
    /// let calls = EngineCalls::with_defaults("docker").with_endpoint("unix:///run/docker.sock");
    /// assert_eq!(calls.endpoint().as_deref(), Some("unix:///run/docker.sock"));
    /// ```
    pub fn with_endpoint(self, endpoint: impl Into<String>) -> Self {
        self.inner.opt_ins.lock().endpoint = Some(endpoint.into().into());
        self
    }

    /// The endpoint set by [`EngineCalls::with_endpoint`].
    pub fn endpoint(&self) -> Option<Arc<str>> {
        self.inner.opt_ins.lock().endpoint.clone()
    }

    /// The same engine (shared breakers, counters, retry budget and health probe) with another retry policy: for
    /// calls that should not wait, e.g. one attempt (`RetryPolicy::none()`) while the
    /// backend already knows the engine is down and something else is retrying.
    pub fn with_retry_policy(&self, retry: RetryPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor: self.inner.executor,
                retry,
                breaker_config: self.inner.breaker_config.clone(),
                breakers: self.inner.breakers.clone(),
                counters: self.inner.counters.clone(),
                opt_ins: self.inner.opt_ins.clone(),
            }),
        }
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

    /// [`EngineCalls::call_in`] with [`CallClass::General`]: unclassified calls share one
    /// breaker of their own.
    pub async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        idem: Idempotency,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        self.call_in(CallClass::General, operation, idem, f).await
    }

    /// Runs `f` through the breaker of `class`, retrying `Error::is_temporary()` errors
    /// with exponential backoff + jitter, honouring `Error::retry_after()`; NotIdempotent
    /// calls are retried only for errors that prove the request never reached the engine
    /// (ErrorKind::Unavailable from a connect failure, or ErrorKind::RateLimited). Counts
    /// requests/timeouts/latency for stats.
    ///
    /// While the class's breaker is open the call fails fast, without calling `f`, with
    /// the last real cause and the breaker state as context (see the module docs);
    /// [`CallClass::Stop`] calls are never refused.
    ///
    /// Errors are tagged with the executor and `operation` when they carry none; an error
    /// returned after retries carries an `attempts` context entry.
    pub async fn call_in<T, F, Fut>(
        &self,
        class: CallClass,
        operation: &'static str,
        idem: Idempotency,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let timeout = self.inner.breaker_config.call_timeout;
        self.call_with_timeout(class, operation, idem, timeout, f)
            .await
    }

    /// [`EngineCalls::call_in`] with `timeout` as the bound on each attempt instead of
    /// [`BreakerConfig::call_timeout`] (an image pull may take minutes), through the same
    /// breakers and counters.
    pub async fn call_with_timeout<T, F, Fut>(
        &self,
        class: CallClass,
        operation: &'static str,
        idem: Idempotency,
        timeout: Duration,
        mut f: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let began = Instant::now();
        let budget = self.retry_budget();
        let mut attempt: u32 = 0;
        loop {
            self.probe_if_open(class).await;
            let error = match self.attempt(class, operation, timeout, &mut f).await {
                Ok(v) => return Ok(v),
                Err(Failed::Refused(e)) => {
                    crate::metrics::record::engine_call_refused(
                        self.inner.executor,
                        operation,
                        class,
                    );
                    return Err(with_attempts(self.tag(e, operation), attempt));
                }
                Err(Failed::Engine(e)) => self.tag(e, operation),
            };
            if attempt >= self.inner.retry.max_retries || !idem.may_retry(&error) {
                return Err(with_attempts(error, attempt));
            }
            let Some(delay) = self.inner.retry.delay(attempt, error.retry_after()) else {
                // The engine asked for a longer pause than we are willing to sleep.
                return Err(with_attempts(error, attempt));
            };
            if budget.is_some_and(|b| began.elapsed() + delay > b) {
                // Out of time: report what the engine said now rather than later.
                return Err(with_attempts(error, attempt));
            }
            tracing::debug!(
                executor = self.inner.executor,
                operation,
                class = class.as_str(),
                attempt = attempt + 1,
                kind = %error.kind(),
                delay_ms = delay.as_millis() as u64,
                "engine call failed, retrying"
            );
            crate::metrics::record::engine_retry(self.inner.executor, operation, class);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Runs the health probe when the breaker of `class` is open and a probe is due (or
    /// waits for the one in flight); an answer closes every breaker.
    async fn probe_if_open(&self, class: CallClass) {
        let open = || matches!(self.breaker_state(class), BreakerState::Open { .. });
        if !open() {
            return;
        }
        let Some(probe) = self.inner.opt_ins.lock().probe.clone() else {
            return;
        };
        let mut last = probe.last.lock().await;
        let now = Instant::now();
        if !open() || last.is_some_and(|t| now < t + probe.every) {
            // Closed by the probe we waited for, or probed a moment ago.
            return;
        }
        *last = Some(now);
        let bound = self
            .inner
            .breaker_config
            .call_timeout
            .min(Duration::from_secs(2));
        let answered = tokio::time::timeout(bound, (probe.check)())
            .await
            .unwrap_or(false);
        tracing::debug!(
            executor = self.inner.executor,
            class = class.as_str(),
            answered,
            "breaker open: probed the engine"
        );
        if answered {
            self.report_healthy();
        }
    }

    /// One attempt: breaker admission, per-attempt timeout, counters.
    async fn attempt<T, F, Fut>(
        &self,
        class: CallClass,
        operation: &'static str,
        timeout: Duration,
        f: &mut F,
    ) -> Result<T, Failed>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let admission = self.inner.breakers.lock().admit(class, Instant::now());
        let probe = match admission {
            Admission::Allowed { probe } => probe,
            Admission::Rejected(e) => return Err(Failed::Refused(e)),
        };
        let mut guard = breaker::ProbeGuard::new(&self.inner.breakers, class, probe);

        {
            let mut c = self.inner.counters.lock();
            c.total += 1;
            c.concurrent += 1;
        }
        let _in_flight = InFlight(&self.inner.counters);
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, f()).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(self.endpoint().as_deref(), operation, timeout)),
        };
        let took = started.elapsed();
        crate::metrics::record::engine_call(
            self.inner.executor,
            operation,
            class,
            crate::metrics::record::outcome(&result),
            took,
        );
        let elapsed_ms = took.as_secs_f64() * 1000.0;
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
        let failure = match &result {
            Err(e) if e.is_temporary() => Some((e, operation)),
            _ => None,
        };
        guard.finish(failure, Instant::now());
        result.map_err(Failed::Engine)
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

    /// The engine answered through another channel (a watch, an event stream, a ping):
    /// closes every breaker, so the next call of any class goes to the engine.
    pub fn report_healthy(&self) {
        self.inner.breakers.lock().healthy();
    }

    /// The state of the breaker of `class` ([`CallClass::Stop`] is always closed).
    pub fn breaker_state(&self, class: CallClass) -> BreakerState {
        self.inner.breakers.lock().state(class, Instant::now())
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

    /// Breaker state (upstream `stats().breaker`): closed when every class's breaker is
    /// closed (half-open counts as not closed).
    pub fn breaker_stats(&self) -> BreakerStats {
        BreakerStats {
            is_closed: self.inner.breakers.lock().all_closed(),
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
mod class_tests;
#[cfg(test)]
mod optin_tests;
#[cfg(test)]
mod tests;
