//! What this executor process knows about its builds beyond the engine's state: starts in
//! flight (reported as pending/pulling), builds it started (so a vanished container is
//! `Lost` rather than unknown), how builds ended when their containers are gone (stopped,
//! failed to start, collected), and the build counters.
//!
//! Also per-build start/stop serialisation (striped locks), so a `stop` racing a `start`
//! of the same build cannot leave containers behind.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use executor_base::{BuildCounter, BuildCounts, BuildId, BuildStatus, BuildTimings};
use parking_lot::Mutex;

/// How many ended builds are remembered (oldest forgotten first).
const ENDED_CAPACITY: usize = 10_000;
/// Lock stripes for start/stop serialisation.
const STRIPES: usize = 256;

/// What we know about one build.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Known {
    /// `start` is running; `pulling` while an image is being pulled.
    Starting {
        /// Whether an image pull is in progress.
        pulling: bool,
    },
    /// Started by this process.
    Live,
    /// `stop` is removing its resources; this is how it will have ended.
    Stopping(BuildStatus),
    /// Its resources are gone and this is how it ended.
    Ended(BuildStatus),
}

#[derive(Debug)]
struct Entry {
    known: Known,
    /// Pulls in progress during a start.
    pulls: u32,
    /// Started by this process (so counted as started).
    live: bool,
    /// Whether the counters already saw this build finish.
    counted: bool,
    /// What this process saw of the build's timings (kept when it ends).
    acct: Acct,
}

/// The parts of a build's [`BuildTimings`] only this process sees (the container tells
/// the rest): kept in memory, so lost with the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Acct {
    /// `start` was called.
    pub accepted: Option<DateTime<Utc>>,
    /// The first pull of the start began.
    pub pull_started: Option<DateTime<Utc>>,
    /// The last pull of the start ended.
    pub pull_finished: Option<DateTime<Utc>>,
    /// The most memory a stats sample showed.
    pub peak_memory_bytes: Option<u64>,
}

impl Acct {
    /// Fills `t`'s fields this process knows.
    pub(crate) fn fill(&self, t: &mut BuildTimings) {
        t.accepted = t.accepted.or(self.accepted);
        t.pull_started = t.pull_started.or(self.pull_started);
        t.pull_finished = t.pull_finished.or(self.pull_finished);
        t.peak_memory_bytes = t.peak_memory_bytes.or(self.peak_memory_bytes);
    }
}

/// A start in progress; see [`Builds::starting`].
#[derive(Debug)]
pub(crate) struct Starting<'a> {
    builds: &'a Builds,
    id: BuildId,
    done: bool,
}

impl Starting<'_> {
    /// The start succeeded.
    pub(crate) fn started(mut self) {
        self.done = true;
        self.builds.started(self.id);
    }

    /// The start failed; see `Builds::start_failed`.
    pub(crate) fn failed(mut self, outcome: Option<BuildStatus>) {
        self.done = true;
        self.builds.start_failed(self.id, outcome);
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.builds.start_failed(self.id, None);
        }
    }
}

/// The registry.
#[derive(Debug)]
pub(crate) struct Builds {
    entries: Mutex<HashMap<BuildId, Entry>>,
    ended: Mutex<VecDeque<BuildId>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    counter: BuildCounter,
}

impl Default for Builds {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ended: Mutex::new(VecDeque::new()),
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            counter: BuildCounter::new(),
        }
    }
}

impl Builds {
    /// Serialises start/stop of one build.
    pub(crate) async fn lock(&self, id: BuildId) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks[(id.get() % STRIPES as u64) as usize]
            .lock()
            .await
    }

    /// The builds this instance started (or is starting) that are not known to have
    /// ended or to be stopping.
    pub(crate) fn live(&self) -> Vec<BuildId> {
        let mut ids: Vec<BuildId> = self
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| matches!(e.known, Known::Live | Known::Starting { .. }))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// What we know, if anything.
    pub(crate) fn get(&self, id: BuildId) -> Option<Known> {
        self.entries.lock().get(&id).map(|e| e.known.clone())
    }

    /// A start began. Unless the returned guard is told how it ended, dropping it (the
    /// `start` future was abandoned) forgets the build again.
    pub(crate) fn starting(&self, id: BuildId) -> Starting<'_> {
        self.entries.lock().insert(
            id,
            Entry {
                known: Known::Starting { pulling: false },
                pulls: 0,
                live: false,
                counted: false,
                acct: Acct {
                    accepted: Some(Utc::now()),
                    ..Acct::default()
                },
            },
        );
        Starting {
            builds: self,
            id,
            done: false,
        }
    }

    /// A pull began or ended during a start.
    pub(crate) fn pulling(&self, id: BuildId, pulling: bool) {
        if let Some(e) = self.entries.lock().get_mut(&id)
            && matches!(e.known, Known::Starting { .. })
        {
            e.pulls = if pulling {
                e.pulls + 1
            } else {
                e.pulls.saturating_sub(1)
            };
            if pulling {
                e.acct.pull_started = e.acct.pull_started.or(Some(Utc::now()));
            } else if e.pulls == 0 {
                e.acct.pull_finished = Some(Utc::now());
            }
            e.known = Known::Starting {
                pulling: e.pulls > 0,
            };
        }
    }

    fn started(&self, id: BuildId) {
        self.counter.started();
        if let Some(e) = self.entries.lock().get_mut(&id) {
            e.known = Known::Live;
            e.live = true;
        }
    }

    /// The start failed and left nothing: remember why (when it says something about the
    /// build), or forget the build (when a retry may work, e.g. the daemon was down).
    fn start_failed(&self, id: BuildId, outcome: Option<BuildStatus>) {
        match outcome {
            Some(status) => {
                self.counter.started();
                self.counter.finished(&status);
                self.end(id, status, true);
            }
            None => {
                self.entries.lock().remove(&id);
            }
        }
    }

    /// The build's resources are gone; `status` is how it ended. Counts it if not yet
    /// counted (`stopped` for a build stopped while running).
    pub(crate) fn ended(&self, id: BuildId, status: BuildStatus) {
        let count = self
            .entries
            .lock()
            .get(&id)
            .is_some_and(|e| e.live && !e.counted);
        if count {
            if status.phase == executor_base::Phase::Canceled {
                self.counter.stopped();
            } else {
                self.counter.finished(&status);
            }
        }
        self.end(id, status, true);
    }

    /// `stop` began removing the build; `status` is how it will have ended.
    pub(crate) fn stopping(&self, id: BuildId, status: BuildStatus) {
        let mut entries = self.entries.lock();
        let e = entries.entry(id).or_insert(Entry {
            known: Known::Live,
            pulls: 0,
            live: false,
            counted: false,
            acct: Acct::default(),
        });
        e.known = Known::Stopping(status);
    }

    /// `stop` failed half-way: back to what we knew before.
    pub(crate) fn unstop(&self, id: BuildId, before: Option<Known>) {
        let mut entries = self.entries.lock();
        match before {
            Some(k) => {
                if let Some(e) = entries.get_mut(&id) {
                    e.known = k;
                }
            }
            None => {
                entries.remove(&id);
            }
        }
    }

    /// Forgets a build (a stop of a build that never existed).
    pub(crate) fn forget(&self, id: BuildId) {
        self.entries.lock().remove(&id);
    }

    fn end(&self, id: BuildId, status: BuildStatus, counted: bool) {
        let (live, acct) = self
            .entries
            .lock()
            .get(&id)
            .map_or((false, Acct::default()), |e| (e.live, e.acct));
        self.entries.lock().insert(
            id,
            Entry {
                known: Known::Ended(status),
                pulls: 0,
                live,
                counted,
                acct,
            },
        );
        let mut ended = self.ended.lock();
        ended.push_back(id);
        while ended.len() > ENDED_CAPACITY {
            if let Some(old) = ended.pop_front() {
                let mut entries = self.entries.lock();
                if matches!(
                    entries.get(&old),
                    Some(Entry {
                        known: Known::Ended(_),
                        ..
                    })
                ) {
                    entries.remove(&old);
                }
            }
        }
    }

    /// A status was observed from the engine: counts a build we started the first time
    /// it is seen terminal.
    pub(crate) fn observed(&self, id: BuildId, status: &BuildStatus) {
        if !status.is_terminal() {
            return;
        }
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get_mut(&id)
            && e.live
            && matches!(e.known, Known::Live)
            && !e.counted
        {
            e.counted = true;
            drop(entries);
            self.counter.finished(status);
        }
    }

    /// What this process saw of build `id`'s timings, if it knows the build.
    pub(crate) fn acct(&self, id: BuildId) -> Option<Acct> {
        self.entries.lock().get(&id).map(|e| e.acct)
    }

    /// A stats sample of build `id` showed `bytes` of memory in use (or as its peak).
    pub(crate) fn memory_seen(&self, id: BuildId, bytes: u64) {
        if let Some(e) = self.entries.lock().get_mut(&id) {
            e.acct.peak_memory_bytes = Some(e.acct.peak_memory_bytes.unwrap_or(0).max(bytes));
        }
    }

    /// Counter snapshot.
    pub(crate) fn counts(&self) -> BuildCounts {
        self.counter.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::FailureReason;

    fn id(n: u64) -> BuildId {
        BuildId::new(n).unwrap()
    }

    #[test]
    fn counts_each_build_once() {
        let b = Builds::default();
        b.starting(id(1)).started();
        let oom = BuildStatus::oom(Some(0), "OOMKilled");
        b.observed(id(1), &oom);
        b.observed(id(1), &oom);
        b.ended(id(1), oom);
        let c = b.counts();
        assert_eq!((c.started, c.running, c.finished, c.failed), (1, 0, 1, 1));
        assert_eq!(c.by_reason["outOfMemory"], 1);

        b.starting(id(2)).started();
        b.ended(id(2), BuildStatus::canceled());
        let c = b.counts();
        assert_eq!((c.started, c.running, c.finished, c.failed), (2, 0, 2, 1));
        assert_eq!(b.get(id(2)), Some(Known::Ended(BuildStatus::canceled())));
    }

    #[test]
    fn accounting_survives_the_end_of_the_build() {
        let b = Builds::default();
        let s = b.starting(id(4));
        let accepted = b.acct(id(4)).unwrap().accepted.unwrap();
        b.pulling(id(4), true);
        b.pulling(id(4), true);
        b.pulling(id(4), false);
        let a = b.acct(id(4)).unwrap();
        assert!(a.pull_started.unwrap() >= accepted);
        assert_eq!(a.pull_finished, None, "one pull still runs");
        b.pulling(id(4), false);
        s.started();
        b.memory_seen(id(4), 10 << 20);
        b.memory_seen(id(4), 30 << 20);
        b.memory_seen(id(4), 20 << 20);
        b.ended(id(4), BuildStatus::canceled());
        let a = b.acct(id(4)).unwrap();
        assert!(a.pull_finished.unwrap() >= a.pull_started.unwrap());
        assert_eq!(a.peak_memory_bytes, Some(30 << 20), "the largest sample");
        let mut t = BuildTimings::default();
        a.fill(&mut t);
        assert_eq!(t.accepted, Some(accepted));
        assert!(t.running.is_none(), "only the container tells");
        assert_eq!(b.acct(id(5)), None);
    }

    #[test]
    fn failed_starts_are_remembered_or_forgotten() {
        let b = Builds::default();
        let s = b.starting(id(3));
        b.pulling(id(3), true);
        b.pulling(id(3), true);
        b.pulling(id(3), false);
        assert_eq!(
            b.get(id(3)),
            Some(Known::Starting { pulling: true }),
            "one pull still runs"
        );
        s.failed(Some(BuildStatus::failed(
            FailureReason::ImagePull,
            "manifest unknown",
            None,
        )));
        assert!(matches!(b.get(id(3)), Some(Known::Ended(_))));
        assert_eq!(b.counts().by_reason["imagePull"], 1);
        b.starting(id(4)).failed(None);
        assert_eq!(b.get(id(4)), None);
        drop(b.starting(id(5))); // abandoned
        assert_eq!(b.get(id(5)), None);
    }
}
