//! The recording calls the library makes, one function per event, so every call site
//! uses the catalog's names and label sets.
//!
//! Each costs a few hash lookups when a recorder is installed and next to nothing when
//! none is (the facade's no-op recorder).

use std::time::Duration;

use super::catalog::*;
use crate::engine::CallClass;
use crate::error::Error;
use crate::status::BuildStatus;

/// The `outcome` label of an engine call's result.
pub fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind().as_str(),
    }
}

/// One engine call attempt that was sent, with its outcome and duration.
pub fn engine_call(
    backend: &'static str,
    operation: &'static str,
    class: CallClass,
    outcome: &'static str,
    took: Duration,
) {
    ::metrics::counter!(ENGINE_CALLS.name, "backend" => backend, "operation" => operation,
        "class" => class.as_str(), "outcome" => outcome)
    .increment(1);
    ::metrics::histogram!(ENGINE_CALL_DURATION.name, "backend" => backend,
        "operation" => operation, "class" => class.as_str())
    .record(took.as_secs_f64());
}

/// One engine call an open breaker refused (nothing was sent).
pub fn engine_call_refused(backend: &'static str, operation: &'static str, class: CallClass) {
    ::metrics::counter!(ENGINE_CALLS.name, "backend" => backend, "operation" => operation,
        "class" => class.as_str(), "outcome" => "refused")
    .increment(1);
}

/// A retry of an engine call is about to wait and go again.
pub fn engine_retry(backend: &'static str, operation: &'static str, class: CallClass) {
    ::metrics::counter!(ENGINE_RETRIES.name, "backend" => backend, "operation" => operation,
        "class" => class.as_str())
    .increment(1);
}

/// A breaker changed state; `state` is the new one (`open`, `half_open`, `closed`).
pub fn breaker_transition(backend: &'static str, class: CallClass, state: &'static str) {
    ::metrics::counter!(BREAKER_TRANSITIONS.name, "backend" => backend,
        "class" => class.as_str(), "state" => state)
    .increment(1);
}

/// A build was started on `backend`.
pub fn build_started(backend: &str) {
    ::metrics::counter!(BUILDS_STARTED.name, "backend" => backend.to_string()).increment(1);
}

/// A build is tracked on `backend` (started or adopted): `+1`; seen ending: `-1`.
pub fn build_in_flight(backend: &str, delta: f64) {
    ::metrics::gauge!(BUILDS_IN_FLIGHT.name, "backend" => backend.to_string()).increment(delta);
}

/// A build was seen ending with `status`.
pub fn build_finished(backend: &str, status: &BuildStatus) {
    let reason = status.reason().map(|r| r.as_str()).unwrap_or("none");
    ::metrics::counter!(BUILDS_FINISHED.name, "backend" => backend.to_string(),
        "phase" => status.phase.as_str(), "reason" => reason)
    .increment(1);
}

/// A build this process started was seen running `latency` after `start` was called.
pub fn build_start_latency(backend: &str, latency: Duration) {
    ::metrics::histogram!(BUILD_START_LATENCY.name, "backend" => backend.to_string())
        .record(latency.as_secs_f64());
}

/// The timer service's metrics, registered once per service: the pending gauge changes on
/// every start and stop of a timer, where a registry lookup per call would cost more than
/// the timer operation itself. Handles taken before a recorder is installed stay no-ops.
#[derive(Debug, Clone)]
pub struct TimerMetrics {
    pending: ::metrics::Gauge,
    fired: ::metrics::Counter,
    lateness: ::metrics::Histogram,
}

impl TimerMetrics {
    /// Registers the handles with the recorder installed now.
    pub fn register() -> Self {
        Self {
            pending: ::metrics::gauge!(TIMERS_PENDING.name),
            fired: ::metrics::counter!(TIMERS_FIRED.name),
            lateness: ::metrics::histogram!(TIMER_LATENESS.name),
        }
    }

    /// The timer service holds `n` pending deadlines.
    pub fn pending(&self, n: usize) {
        self.pending.set(n as f64);
    }

    /// A deadline fired `lateness` after it passed.
    pub fn fired(&self, lateness: Duration) {
        self.fired.increment(1);
        self.lateness.record(lateness.as_secs_f64());
    }
}

/// The state of a Kubernetes namespace's pod watch: whether it is synced, and when (unix
/// seconds) its cache was last known current.
pub fn k8s_watch_state(namespace: &str, synced: bool, synced_at_unix: Option<f64>) {
    ::metrics::gauge!(K8S_WATCH_SYNCED.name, "namespace" => namespace.to_string()).set(if synced {
        1.0
    } else {
        0.0
    });
    if let Some(t) = synced_at_unix {
        ::metrics::gauge!(K8S_CACHE_SYNCED_AT.name, "namespace" => namespace.to_string()).set(t);
    }
}

/// A complete pod list was applied to a namespace's cache.
pub fn k8s_watch_relist(namespace: &str) {
    ::metrics::counter!(K8S_WATCH_RELISTS.name, "namespace" => namespace.to_string()).increment(1);
}

/// A namespace's pod watch failed.
pub fn k8s_watch_error(namespace: &str) {
    ::metrics::counter!(K8S_WATCH_ERRORS.name, "namespace" => namespace.to_string()).increment(1);
}

/// Gearman jobs in flight on `side` (`executor` or `worker`) changed by `delta`.
pub fn gearman_in_flight(side: &'static str, delta: f64) {
    ::metrics::gauge!(GEARMAN_JOBS_IN_FLIGHT.name, "side" => side).increment(delta);
}

/// Garbage collection on `backend` removed `n` expired builds' leftovers.
pub fn gc_removed(backend: &str, n: usize) {
    ::metrics::counter!(GC_REMOVED.name, "backend" => backend.to_string()).increment(n as u64);
}
