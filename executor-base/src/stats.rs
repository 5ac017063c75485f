//! `stats()`: upstream's circuit-breaker shape plus build counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::Mutex;
use serde::{Deserialize, Serialize};

use crate::status::{BuildStatus, Phase};

/// Engine-call counters (upstream circuit-fuses `stats().requests`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStats {
    /// Calls made.
    pub total: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls that succeeded.
    pub success: u64,
    /// Calls that failed.
    pub failure: u64,
    /// Calls in flight now.
    pub concurrent: u64,
    /// Mean duration of finished calls, milliseconds.
    pub average_time: f64,
}

/// Breaker state (upstream `stats().breaker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStats {
    /// `false` while the breaker is open (calls fail fast).
    pub is_closed: bool,
}

impl Default for BreakerStats {
    fn default() -> Self {
        Self { is_closed: true }
    }
}

/// Build counters (our addition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildCounts {
    /// Builds started.
    pub started: u64,
    /// Builds running now (started and not yet seen finished or stopped).
    pub running: u64,
    /// Builds seen finished (any terminal phase).
    pub finished: u64,
    /// Builds seen failed, lost or timed out.
    pub failed: u64,
    /// Failures by reason (`outOfMemory`, `imagePull`, ..., `timedOut`, `lost`).
    pub by_reason: BTreeMap<String, u64>,
}

/// What `stats()` returns; serialises to `{requests, breaker, builds, executors}`.
///
/// ```
/// let s = executor_base::Stats::default();
/// let v = serde_json::to_value(&s).unwrap();
/// assert_eq!(v["breaker"]["isClosed"], true);
/// assert_eq!(v["requests"]["averageTime"], 0.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Engine-call counters.
    pub requests: RequestStats,
    /// Breaker state.
    pub breaker: BreakerStats,
    /// Build counters.
    pub builds: BuildCounts,
    /// Per-backend stats (the router fills this).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub executors: BTreeMap<String, Stats>,
    /// How current the backend's status cache is, for a backend that answers `status`
    /// from one (a Kubernetes watch); `None` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheFreshness>,
}

/// How current a status cache fed by a watch (or event stream) is.
///
/// ```
/// let c = executor_base::CacheFreshness { synced: false, age_ms: 1500, relists: 2, errors: 3 };
/// let v = serde_json::to_value(&c).unwrap();
/// assert_eq!(v["ageMs"], 1500);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheFreshness {
    /// The cache is complete and kept current (its watch is connected and synced).
    pub synced: bool,
    /// How far behind the cache may be, in milliseconds: 0 while synced, else the time
    /// since it last was (or since the backend started, if it never was).
    pub age_ms: u64,
    /// Complete lists applied so far (the first one included).
    pub relists: u64,
    /// Watch failures so far (each reconnect attempt that failed counts).
    pub errors: u64,
}

/// Thread-safe build counters a backend updates as builds come and go.
#[derive(Debug, Default)]
pub struct BuildCounter {
    started: AtomicU64,
    running: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    by_reason: Mutex<BTreeMap<String, u64>>,
}

impl BuildCounter {
    /// A new, zeroed counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A build was started.
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A build reached a terminal status (call once per build).
    pub fn finished(&self, status: &BuildStatus) {
        let _ = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.finished.fetch_add(1, Ordering::Relaxed);
        let key = match (status.phase, status.reason()) {
            (Phase::Failed, Some(r)) => Some(r.as_str().to_string()),
            (Phase::Lost, _) => Some("lost".to_string()),
            (Phase::TimedOut, _) => Some("timedOut".to_string()),
            (Phase::Failed, None) => Some("unknown".to_string()),
            _ => None,
        };
        if let Some(k) = key {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.by_reason.lock().entry(k).or_default() += 1;
        }
    }

    /// A build that had not finished was stopped (it no longer runs).
    pub fn stopped(&self) {
        let _ = self
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> BuildCounts {
        BuildCounts {
            started: self.started.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            by_reason: self.by_reason.lock().clone(),
        }
    }
}
