//! [`BuildMeter`]: turns the statuses a router sees into per-build metrics (started,
//! finished by phase and reason, in flight, start latency), each build counted once.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use super::record;
use crate::ids::BuildId;
use crate::status::{BuildStatus, Phase};
use crate::sync::Mutex;

/// Builds tracked at most; past it, entries older than [`STALE_AFTER`] are dropped (a
/// build nobody asks about again is never seen ending).
const MAX_TRACKED: usize = 65_536;
/// See [`MAX_TRACKED`].
const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug)]
struct Tracked {
    backend: String,
    /// When `start` was called, for builds this process started (not adopted ones).
    started: Option<Instant>,
    running_seen: bool,
    since: Instant,
}

/// Per-build bookkeeping behind the `sdx_builds_*` and `sdx_build_start_latency_seconds`
/// metrics: the router reports each start, each status it hands out and each stop; the
/// meter records a build's end once, however many callers poll it.
///
/// A build is counted as finished the first time a terminal status of it passes through
/// (a `status` or `wait_for_change` call), or when it is stopped before that (as
/// `canceled`). Start latency is measured from `start` to the first status that says
/// `running`, so its precision is that of the caller's polling (the reference API polls
/// every `statusPollMs`, 1 s by default; `wait_for_change` on a backend that pushes
/// changes is exact).
///
/// ```
/// use executor_base::{BuildId, BuildStatus, metrics::BuildMeter};
/// let meter = BuildMeter::default();
/// let id = BuildId::new(7).unwrap();
/// meter.started(id, "process");
/// meter.observed(id, "process", &BuildStatus::running());
/// meter.observed(id, "process", &BuildStatus::succeeded());
/// meter.observed(id, "process", &BuildStatus::succeeded()); // counted once
/// assert_eq!(meter.in_flight(), 0);
/// ```
#[derive(Debug, Default)]
pub struct BuildMeter {
    builds: Mutex<HashMap<BuildId, Tracked>>,
}

impl BuildMeter {
    /// `backend` accepted build `id` just now.
    pub fn started(&self, id: BuildId, backend: &str) {
        let now = Instant::now();
        record::build_started(backend);
        let mut builds = self.builds.lock();
        if builds.len() >= MAX_TRACKED {
            builds.retain(|_, t| now.duration_since(t.since) < STALE_AFTER);
        }
        let old = builds.insert(
            id,
            Tracked {
                backend: backend.to_string(),
                started: Some(now),
                running_seen: false,
                since: now,
            },
        );
        if let Some(old) = old {
            record::build_in_flight(&old.backend, -1.0);
        }
        record::build_in_flight(backend, 1.0);
    }

    /// A status of build `id` on `backend` was handed out.
    pub fn observed(&self, id: BuildId, backend: &str, status: &BuildStatus) {
        let mut builds = self.builds.lock();
        if status.is_terminal() {
            if let Some(t) = builds.remove(&id) {
                drop(builds);
                record::build_in_flight(&t.backend, -1.0);
                record::build_finished(&t.backend, status);
            }
            return;
        }
        let now = Instant::now();
        let t = builds.entry(id).or_insert_with(|| {
            // Adopted: started by an earlier process; counted from here on.
            record::build_in_flight(backend, 1.0);
            Tracked {
                backend: backend.to_string(),
                started: None,
                running_seen: false,
                since: now,
            }
        });
        if status.phase == Phase::Running && !t.running_seen {
            t.running_seen = true;
            if let Some(at) = t.started {
                record::build_start_latency(&t.backend, now.duration_since(at));
            }
        }
    }

    /// Build `id` was stopped: if it had not been seen ending, it ends `canceled`.
    pub fn stopped(&self, id: BuildId) {
        self.ended(id, &BuildStatus::canceled());
    }

    /// Build `id` ended as `status` (e.g. timed out), unless it was already seen ending.
    pub fn ended(&self, id: BuildId, status: &BuildStatus) {
        if let Some(t) = self.builds.lock().remove(&id) {
            record::build_in_flight(&t.backend, -1.0);
            record::build_finished(&t.backend, status);
        }
    }

    /// Builds tracked and not yet seen ending.
    pub fn in_flight(&self) -> usize {
        self.builds.lock().len()
    }
}
