//! The builds a launcher knows: running ones by (job name, number) and by `ZUUL_UUID`,
//! and finished ones by `ZUUL_UUID` for `retainFinishedSecs`, so a job is never run
//! twice: a job whose `ZUUL_UUID` runs already is attached to that build, one whose
//! build finished within the window gets that build's outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use executor_base::{BuildId, StopConfig};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::zuul::BuildReport;

/// One build, shared by its driver task, the jobs attached to it and `stop:` handlers.
#[derive(Debug)]
pub(crate) struct BuildEntry {
    /// The job name.
    pub name: String,
    /// The build number (unique per build on this launcher, announced to Zuul).
    pub number: u64,
    /// `ZUUL_UUID`.
    pub uuid: String,
    /// The Gearman function.
    pub function: String,
    /// The node of `build:<job>:<node>`.
    pub node: Option<String>,
    /// The executor's stop/status config.
    pub stop: StopConfig,
    /// The announced build URL.
    pub url: Option<String>,
    /// The build's timeout in seconds (the `WORK_STATUS` denominator).
    pub timeout_secs: u64,
    /// When this launcher took the build on.
    pub began: Instant,
    stop_requested: AtomicBool,
    /// `None` while the executor starts the build, then whether it started.
    started: watch::Sender<Option<bool>>,
    /// The outcome, once the build ended.
    outcome: watch::Sender<Option<BuildReport>>,
    /// Jobs attached now whose connection is up.
    attached: AtomicUsize,
    /// The latest attached job's handle (for `GET_STATUS` checks).
    handle: Mutex<String>,
}

/// What [`BuildEntry::new`] needs.
#[derive(Debug)]
pub(crate) struct NewBuild {
    pub name: String,
    pub number: u64,
    pub uuid: String,
    pub function: String,
    pub node: Option<String>,
    pub stop: StopConfig,
    pub url: Option<String>,
    pub timeout_secs: u64,
    pub handle: String,
}

impl BuildEntry {
    /// A build about to start (`started: None`), or already running (`Some(true)`, an
    /// adopted one).
    pub(crate) fn new(b: NewBuild, started: Option<bool>) -> Self {
        Self {
            name: b.name,
            number: b.number,
            uuid: b.uuid,
            function: b.function,
            node: b.node,
            stop: b.stop,
            url: b.url,
            timeout_secs: b.timeout_secs,
            began: Instant::now(),
            stop_requested: AtomicBool::new(false),
            started: watch::Sender::new(started),
            outcome: watch::Sender::new(None),
            attached: AtomicUsize::new(0),
            handle: Mutex::new(b.handle),
        }
    }

    /// Marks the build to be stopped (a stop job, the drain timeout, abandonment).
    pub(crate) fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    /// Records the outcome of the executor's `start`.
    pub(crate) fn settle(&self, started: bool) {
        self.started.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(started);
                true
            } else {
                false
            }
        });
    }

    /// `None` while starting, then whether the build started.
    #[cfg(test)]
    pub(crate) fn started(&self) -> Option<bool> {
        *self.started.borrow()
    }

    /// Follows [`BuildEntry::started`].
    pub(crate) fn watch_started(&self) -> watch::Receiver<Option<bool>> {
        self.started.subscribe()
    }

    /// Waits for the executor's `start` to return; whether the build started.
    pub(crate) async fn wait_started(&self) -> bool {
        let mut rx = self.started.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let started = rx.wait_for(Option::is_some).await.map(|v| *v == Some(true));
        started.unwrap_or(false)
    }

    /// Records the outcome (once); jobs attached now report it.
    pub(crate) fn finish(&self, report: BuildReport) {
        self.settle(false);
        self.outcome.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(report);
                true
            } else {
                false
            }
        });
    }

    /// Follows the outcome.
    pub(crate) fn watch_outcome(&self) -> watch::Receiver<Option<BuildReport>> {
        self.outcome.subscribe()
    }

    /// A job attached (its connection is up); counted until the guard drops.
    pub(crate) fn attach(self: &Arc<Self>, handle: &str) -> Attached {
        *self.handle.lock() = handle.to_string();
        self.attached.fetch_add(1, Ordering::SeqCst);
        Attached(self.clone())
    }

    /// Jobs attached with a live connection.
    pub(crate) fn attached(&self) -> usize {
        self.attached.load(Ordering::SeqCst)
    }

    /// The latest attached job's handle.
    pub(crate) fn handle(&self) -> String {
        self.handle.lock().clone()
    }
}

/// A job attached to a build; detaches when dropped.
#[derive(Debug)]
pub(crate) struct Attached(Arc<BuildEntry>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A build that ended, kept for re-delivered jobs.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// The job name.
    pub name: String,
    /// The build number.
    pub number: u64,
    /// The executor's build id.
    pub build_id: BuildId,
    /// The outcome.
    pub report: BuildReport,
    /// When it ended.
    pub at: Instant,
}

/// What a `build:` job with a given `ZUUL_UUID` finds.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Nothing: the new build was registered.
    New(Arc<BuildEntry>),
    /// The build runs already: attach the job.
    Running(Arc<BuildEntry>),
    /// The build ended within the retention window: report its outcome.
    Finished(Box<Finished>),
}

/// Running and recently finished builds.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_key: HashMap<(String, u64), Arc<BuildEntry>>,
    by_uuid: HashMap<String, Arc<BuildEntry>>,
    finished: HashMap<String, Finished>,
    /// (when it ended, uuid, number), oldest first.
    finished_order: VecDeque<(Instant, String, u64)>,
}

impl Registry {
    /// Finds the build of `uuid`, or registers `make()` as a new one. Call
    /// [`Registry::expire`] first so an outcome past the retention window is not replayed.
    pub(crate) fn claim(&mut self, uuid: &str, make: impl FnOnce() -> BuildEntry) -> Claim {
        if let Some(e) = self.by_uuid.get(uuid) {
            return Claim::Running(e.clone());
        }
        if let Some(f) = self.finished.get(uuid) {
            return Claim::Finished(Box::new(f.clone()));
        }
        let e = Arc::new(make());
        self.insert(e.clone());
        Claim::New(e)
    }

    /// Registers a running build (a new or an adopted one).
    pub(crate) fn insert(&mut self, e: Arc<BuildEntry>) {
        self.by_key.insert((e.name.clone(), e.number), e.clone());
        self.by_uuid.insert(e.uuid.clone(), e);
    }

    /// The running build `(name, number)`.
    pub(crate) fn get(&self, name: &str, number: u64) -> Option<Arc<BuildEntry>> {
        self.by_key.get(&(name.to_string(), number)).cloned()
    }

    /// The running build of the job `uuid` (`ZUUL_UUID`).
    pub(crate) fn get_by_uuid(&self, uuid: &str) -> Option<Arc<BuildEntry>> {
        self.by_uuid.get(uuid).cloned()
    }

    /// Running builds.
    pub(crate) fn running(&self) -> usize {
        self.by_key.len()
    }

    /// Moves a build out of the running ones; with a report, into the finished ones.
    pub(crate) fn retire(&mut self, e: &BuildEntry, report: Option<BuildReport>) {
        self.by_key.remove(&(e.name.clone(), e.number));
        if self
            .by_uuid
            .get(&e.uuid)
            .is_some_and(|x| x.number == e.number)
        {
            self.by_uuid.remove(&e.uuid);
        }
        if let Some(report) = report {
            let f = Finished {
                name: e.name.clone(),
                number: e.number,
                build_id: e.stop.build_id,
                report,
                at: Instant::now(),
            };
            self.remember(&e.uuid, f);
        }
    }

    /// Keeps a finished build's outcome for re-delivered jobs.
    pub(crate) fn remember(&mut self, uuid: &str, f: Finished) {
        self.finished_order
            .push_back((f.at, uuid.to_string(), f.number));
        self.finished.insert(uuid.to_string(), f);
    }

    /// Forgets outcomes older than `retain`; returns their build numbers (and those of
    /// outcomes a later build of the same uuid replaced), whose records can go.
    pub(crate) fn expire(&mut self, retain: Duration) -> Vec<u64> {
        let mut gone = Vec::new();
        while let Some((at, uuid, number)) = self.finished_order.front() {
            if at.elapsed() < retain {
                break;
            }
            if self.finished.get(uuid).is_some_and(|f| f.number == *number) {
                self.finished.remove(uuid);
            }
            gone.push(*number);
            self.finished_order.pop_front();
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uuid: &str, number: u64) -> BuildEntry {
        BuildEntry::new(
            NewBuild {
                name: "unit".into(),
                number,
                uuid: uuid.into(),
                function: "build:unit".into(),
                node: None,
                stop: StopConfig::new(BuildId::new(number).unwrap()),
                url: None,
                timeout_secs: 60,
                handle: "H:1".into(),
            },
            None,
        )
    }

    #[test]
    fn a_uuid_is_claimed_once_then_attached_then_replayed_within_the_window() {
        let mut r = Registry::default();
        let hour = Duration::from_secs(3600);
        let Claim::New(e) = r.claim("u1", || entry("u1", 1)) else {
            panic!()
        };
        assert!(matches!(r.claim("u1", || entry("u1", 2)), Claim::Running(x) if x.number == 1));
        assert_eq!(r.get("unit", 1).unwrap().uuid, "u1");
        let report = BuildReport::from_status(&executor_base::BuildStatus::succeeded(), false);
        r.retire(&e, Some(report));
        assert_eq!(r.running(), 0);
        assert!(r.expire(hour).is_empty());
        assert!(matches!(r.claim("u1", || entry("u1", 3)), Claim::Finished(f) if f.number == 1));
        // Past the window the uuid is new again, and the old build's record can go.
        assert_eq!(r.expire(Duration::ZERO), [1]);
        assert!(matches!(r.claim("u1", || entry("u1", 4)), Claim::New(x) if x.number == 4));
    }

    #[test]
    fn attachments_are_counted_and_the_outcome_is_set_once() {
        let e = Arc::new(entry("u2", 5));
        let a = e.attach("H:2");
        let b = e.attach("H:3");
        assert_eq!((e.attached(), e.handle().as_str()), (2, "H:3"));
        drop(a);
        drop(b);
        assert_eq!(e.attached(), 0);
        let rx = e.watch_outcome();
        e.finish(BuildReport::from_status(
            &executor_base::BuildStatus::succeeded(),
            false,
        ));
        e.finish(BuildReport::from_status(
            &executor_base::BuildStatus::canceled(),
            false,
        ));
        assert_eq!(rx.borrow().as_ref().unwrap().result, "SUCCESS");
        assert_eq!(e.started(), Some(false));
    }
}
