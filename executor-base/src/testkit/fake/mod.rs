//! [`FakeExecutor`]: an in-memory backend with scriptable outcomes and faults.
//!
//! Builds move through the real [`BuildStatus`] state machine on a schedule the test
//! controls: a [`Script`] per build (or a default one) whose steps happen after a delay
//! or on [`FakeExecutor::advance`], plus [`FakeExecutor::set_status`] for anything else.
//! Faults cover what real engines do: a refused start, an image pull failure, an OOM
//! kill with exit code 0, a build lost behind the executor's back, a slow engine, and
//! transient errors that pass after N calls. Every engine call is counted, so a test can
//! show that a refused input never reached the engine.
//!
//! Time is [`tokio::time::Instant`], so tests with a paused clock control the schedule.

mod script;
#[cfg(test)]
mod tests;

#[cfg(test)]
use script::STEP;
pub use script::{Script, Trigger};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{ApiBuildStatus, StartConfig, StopConfig, TimerConfig};
use crate::error::{Error, ErrorKind};
use crate::executor::{Executor, GcReport};
use crate::ids::BuildId;
use crate::stats::{BuildCounter, RequestStats, Stats};
use crate::status::BuildStatus;
use crate::verdict::Verdict;

/// The engine operations of the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    /// `start`
    Start,
    /// `stop`
    Stop,
    /// `status`
    Status,
    /// `verify`
    Verify,
    /// `cleanup`
    Cleanup,
    /// `gc`
    Gc,
}

impl FakeOp {
    fn as_str(self) -> &'static str {
        match self {
            FakeOp::Start => "start",
            FakeOp::Stop => "stop",
            FakeOp::Status => "status",
            FakeOp::Verify => "verify",
            FakeOp::Cleanup => "cleanup",
            FakeOp::Gc => "gc",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many times each engine operation was called (including failed calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// `start` calls.
    pub start: u64,
    /// `stop` calls.
    pub stop: u64,
    /// `status` calls.
    pub status: u64,
    /// `verify` calls.
    pub verify: u64,
    /// `cleanup` calls.
    pub cleanup: u64,
    /// `gc` calls.
    pub gc: u64,
}

impl CallCounts {
    /// All engine calls.
    pub fn total(&self) -> u64 {
        self.start + self.stop + self.status + self.verify + self.cleanup + self.gc
    }
}

#[derive(Debug, Default, Clone)]
struct Faults {
    latency: Duration,
    /// Per operation: (remaining transient failures, kind).
    transient: HashMap<FakeOp, (u32, ErrorKind)>,
    /// Per operation: a persistent refusal.
    refuse: HashMap<FakeOp, ErrorKind>,
}

#[derive(Debug)]
struct FakeBuild {
    script: Arc<Script>,
    idx: usize,
    entered: Instant,
    forced: Option<BuildStatus>,
    counted: bool,
}

impl FakeBuild {
    fn new(script: Arc<Script>) -> Self {
        Self {
            script,
            idx: 0,
            entered: Instant::now(),
            forced: None,
            counted: false,
        }
    }

    /// Applies the timed steps that are due and returns the current status.
    fn current(&mut self, counter: &BuildCounter) -> BuildStatus {
        if self.forced.is_none() {
            let now = Instant::now();
            while let Some((Trigger::After(d), _)) = self.script.steps.get(self.idx + 1) {
                if now < self.entered + *d {
                    break;
                }
                self.entered += *d;
                self.idx += 1;
            }
        }
        let s = match &self.forced {
            Some(s) => s.clone(),
            None => self.script.steps[self.idx].1.clone(),
        };
        if s.is_terminal() && !self.counted {
            self.counted = true;
            counter.finished(&s);
        }
        s
    }
}

#[derive(Debug, Default)]
struct Requests {
    total: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    concurrent: AtomicU64,
    micros: AtomicU64,
    per_op: [AtomicU64; 6],
}

struct Inner {
    name: &'static str,
    builds: Mutex<HashMap<BuildId, FakeBuild>>,
    default_script: Mutex<Arc<Script>>,
    scripts: Mutex<HashMap<BuildId, Arc<Script>>>,
    faults: Mutex<Faults>,
    requests: Requests,
    counter: BuildCounter,
    /// Timers armed through `start_timer` and not yet disarmed.
    timers: Mutex<HashMap<BuildId, TimerConfig>>,
    /// What `preflight` answers.
    preflight: Mutex<Vec<crate::preflight::Finding>>,
}

/// An in-memory [`Executor`] whose builds follow [`Script`]s and whose engine can be made
/// slow or faulty. Clones are handles to the same fake engine.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use executor_base::{Executor, ErrorKind, Phase, StartConfig};
/// use executor_base::testkit::fake::{FakeExecutor, FakeOp, Script};
/// let fake = FakeExecutor::new();
/// let build = StartConfig::builder(1, "http://127.0.0.1:9", "busybox:latest", "tok").build().unwrap();
///
/// fake.script_for(build.build_id, Script::manual());
/// fake.fail_next(FakeOp::Start, 1, ErrorKind::Unavailable);
/// assert!(fake.start(&build).await.unwrap_err().is_temporary());
/// fake.start(&build).await.unwrap();                       // the second try passes
/// assert_eq!(fake.status(&build.to_stop()).await.unwrap().phase, Phase::Pending);
/// fake.advance(build.build_id).unwrap();
/// assert_eq!(fake.status(&build.to_stop()).await.unwrap().phase, Phase::Pulling);
/// fake.stop(&build.to_stop()).await.unwrap();
/// assert_eq!(fake.status(&build.to_stop()).await.unwrap().phase, Phase::Canceled);
/// assert_eq!(fake.calls().start, 2);
/// # });
/// ```
#[derive(Clone)]
pub struct FakeExecutor {
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeExecutor")
            .field("name", &self.inner.name)
            .field("builds", &self.inner.builds.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for FakeExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeExecutor {
    /// A fake named `fake` whose builds run until stopped ([`Script::run_until_stopped`]).
    pub fn new() -> Self {
        Self::named("fake")
    }

    /// A fake with another name (e.g. `docker`, to stand in for a backend in router tests).
    pub fn named(name: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                builds: Mutex::new(HashMap::new()),
                default_script: Mutex::new(Arc::new(Script::default())),
                scripts: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults::default()),
                requests: Requests::default(),
                counter: BuildCounter::new(),
                timers: Mutex::new(HashMap::new()),
                preflight: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Makes [`Executor::preflight`] answer these findings (default: none, a pass), as a
    /// backend would for a misconfigured engine.
    pub fn set_preflight(&self, findings: Vec<crate::preflight::Finding>) {
        *self.inner.preflight.lock() = findings;
    }

    /// The timers armed through [`Executor::start_timer`] (with a `RUNNING` build status)
    /// and not disarmed by [`Executor::stop_timer`] since, by build id. The fake records
    /// them and never fires them: pair it with [`crate::timer::TimedExecutor`] to test
    /// enforcement.
    pub fn armed_timers(&self) -> Vec<TimerConfig> {
        let mut v: Vec<TimerConfig> = self.inner.timers.lock().values().cloned().collect();
        v.sort_by_key(|t| t.build_id);
        v
    }

    /// The script of builds without their own.
    pub fn set_default_script(&self, script: Script) {
        *self.inner.default_script.lock() = Arc::new(script);
    }

    /// The script of one build (used when it is next started).
    pub fn script_for(&self, build_id: BuildId, script: Script) {
        self.inner.scripts.lock().insert(build_id, Arc::new(script));
    }

    /// Makes every engine call take `latency` first (a slow engine).
    pub fn set_latency(&self, latency: Duration) {
        self.inner.faults.lock().latency = latency;
    }

    /// The next `times` calls of `op` fail with a temporary error of `kind`, then calls
    /// succeed again (transient errors, then success).
    pub fn fail_next(&self, op: FakeOp, times: u32, kind: ErrorKind) {
        self.inner.faults.lock().transient.insert(op, (times, kind));
    }

    /// Every `start` is refused with a persistent error of `kind` until
    /// [`FakeExecutor::clear_faults`]; nothing is created.
    pub fn refuse_start(&self, kind: ErrorKind) {
        self.refuse(FakeOp::Start, kind);
    }

    /// Every call of `op` fails with a persistent error of `kind` until cleared.
    pub fn refuse(&self, op: FakeOp, kind: ErrorKind) {
        self.inner.faults.lock().refuse.insert(op, kind);
    }

    /// Removes every fault (latency, transient errors, refusals).
    pub fn clear_faults(&self) {
        *self.inner.faults.lock() = Faults::default();
    }

    /// Moves the build to its script's next step now. Errors when the build is unknown,
    /// its status was set by hand or by `stop`, or the script has no next step.
    pub fn advance(&self, build_id: BuildId) -> Result<BuildStatus, Error> {
        let mut builds = self.inner.builds.lock();
        let b = builds
            .get_mut(&build_id)
            .ok_or_else(|| Error::build_not_found(build_id))?;
        b.current(&self.inner.counter);
        if b.forced.is_some() || b.idx + 1 >= b.script.steps.len() {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!("build {build_id}: the script has no next step"),
            ));
        }
        b.idx += 1;
        b.entered = Instant::now();
        Ok(b.current(&self.inner.counter))
    }

    /// Sets the build's status, if the state machine allows the transition.
    pub fn set_status(&self, build_id: BuildId, status: BuildStatus) -> Result<(), Error> {
        let mut builds = self.inner.builds.lock();
        let b = builds
            .get_mut(&build_id)
            .ok_or_else(|| Error::build_not_found(build_id))?;
        let now = b.current(&self.inner.counter);
        if !now.phase.can_become(status.phase) {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "build {build_id}: {} cannot become {}",
                    now.phase, status.phase
                ),
            ));
        }
        b.forced = Some(status);
        b.current(&self.inner.counter);
        Ok(())
    }

    /// Makes the build vanish behind the executor's back: it reports `Lost`.
    pub fn lose(&self, build_id: BuildId) -> Result<(), Error> {
        self.set_status(
            build_id,
            BuildStatus::lost(Some(true), "the build's resources vanished from the engine"),
        )
    }

    /// Builds started and not finished, canceled or lost.
    pub fn live_builds(&self) -> Vec<BuildId> {
        let mut builds = self.inner.builds.lock();
        let mut ids: Vec<BuildId> = builds
            .iter_mut()
            .filter_map(|(id, b)| (!b.current(&self.inner.counter).is_terminal()).then_some(*id))
            .collect();
        ids.sort();
        ids
    }

    /// How many times each engine operation was called.
    pub fn calls(&self) -> CallCounts {
        let c = |op: FakeOp| self.inner.requests.per_op[op.index()].load(Ordering::Relaxed);
        CallCounts {
            start: c(FakeOp::Start),
            stop: c(FakeOp::Stop),
            status: c(FakeOp::Status),
            verify: c(FakeOp::Verify),
            cleanup: c(FakeOp::Cleanup),
            gc: c(FakeOp::Gc),
        }
    }

    fn error(&self, op: FakeOp, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, message)
            .with_executor("fake")
            .with_operation(op.as_str())
    }

    /// Runs one engine call: latency, faults, counters, then `f`.
    async fn call<T>(&self, op: FakeOp, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let r = &self.inner.requests;
        r.total.fetch_add(1, Ordering::Relaxed);
        r.per_op[op.index()].fetch_add(1, Ordering::Relaxed);
        r.concurrent.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let (latency, fault) = {
            let mut faults = self.inner.faults.lock();
            let fault = match faults.transient.get_mut(&op) {
                Some((n, kind)) if *n > 0 => {
                    *n -= 1;
                    Some(
                        self.error(op, *kind, "the fake engine failed (transient)")
                            .temporary(),
                    )
                }
                _ => faults
                    .refuse
                    .get(&op)
                    .map(|kind| self.error(op, *kind, "the fake engine refused the call")),
            };
            (faults.latency, fault)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let out = match fault {
            Some(e) => Err(e),
            None => f(),
        };
        r.concurrent.fetch_sub(1, Ordering::Relaxed);
        r.micros
            .fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &out {
            Ok(_) => r.success.fetch_add(1, Ordering::Relaxed),
            Err(_) => r.failure.fetch_add(1, Ordering::Relaxed),
        };
        out
    }

    fn status_now(&self, op: FakeOp, build_id: BuildId) -> Result<BuildStatus, Error> {
        let mut builds = self.inner.builds.lock();
        match builds.get_mut(&build_id) {
            Some(b) => Ok(b.current(&self.inner.counter)),
            None => Err(self.error(
                op,
                ErrorKind::NotFound,
                format!("build {build_id} not found"),
            )),
        }
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    fn name(&self) -> &str {
        self.inner.name
    }

    async fn preflight(&self, build: &StartConfig) -> Result<crate::Preflight, Error> {
        let _ = build;
        Ok(crate::Preflight {
            backend: self.inner.name.to_string(),
            findings: self.inner.preflight.lock().clone(),
        })
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let id = build.build_id;
        self.call(FakeOp::Start, || {
            let mut builds = self.inner.builds.lock();
            if let Some(b) = builds.get_mut(&id)
                && !b.current(&self.inner.counter).is_terminal()
            {
                return Err(self.error(
                    FakeOp::Start,
                    ErrorKind::AlreadyExists,
                    format!("build {id} is already running"),
                ));
            }
            let script = self
                .inner
                .scripts
                .lock()
                .get(&id)
                .cloned()
                .unwrap_or_else(|| self.inner.default_script.lock().clone());
            builds.insert(id, FakeBuild::new(script));
            self.inner.counter.started();
            tracing::debug!(executor = self.inner.name, build_id = %id, container = %build.container, "fake: build started");
            Ok(())
        })
        .await
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let id = build.build_id;
        self.call(FakeOp::Stop, || {
            let mut builds = self.inner.builds.lock();
            if let Some(b) = builds.get_mut(&id)
                && !b.current(&self.inner.counter).is_terminal()
            {
                b.forced = Some(BuildStatus::canceled());
                b.counted = true;
                self.inner.counter.stopped();
                tracing::debug!(executor = self.inner.name, build_id = %id, "fake: build stopped");
            }
            Ok(())
        })
        .await
    }

    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        let id = build.build_id;
        self.call(FakeOp::Verify, || {
            self.status_now(FakeOp::Verify, id)
                .map(|s| Verdict::from_status(&s))
        })
        .await
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        let id = build.build_id;
        self.call(FakeOp::Status, || self.status_now(FakeOp::Status, id))
            .await
    }

    async fn start_timer(&self, timer: &TimerConfig) -> Result<(), Error> {
        if timer.build_status == ApiBuildStatus::Running {
            self.inner
                .timers
                .lock()
                .insert(timer.build_id, timer.clone());
        }
        Ok(())
    }

    async fn stop_timer(&self, build: &StopConfig) -> Result<(), Error> {
        self.inner.timers.lock().remove(&build.build_id);
        Ok(())
    }

    fn stats(&self) -> Stats {
        let r = &self.inner.requests;
        let success = r.success.load(Ordering::Relaxed);
        let failure = r.failure.load(Ordering::Relaxed);
        let done = success + failure;
        Stats {
            requests: RequestStats {
                total: r.total.load(Ordering::Relaxed),
                timeouts: 0,
                success,
                failure,
                concurrent: r.concurrent.load(Ordering::Relaxed),
                average_time: if done == 0 {
                    0.0
                } else {
                    r.micros.load(Ordering::Relaxed) as f64 / 1000.0 / done as f64
                },
            },
            builds: self.inner.counter.snapshot(),
            ..Stats::default()
        }
    }

    async fn cleanup(&self) -> Result<(), Error> {
        self.call(FakeOp::Cleanup, || Ok(())).await?;
        self.gc(false).await.map(|_| ())
    }

    async fn stop_all(&self) -> Result<Vec<BuildId>, Error> {
        crate::executor::stop_builds(self, self.live_builds()).await
    }

    /// Removes the records of finished builds (`status` then answers `NotFound`).
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        self.call(FakeOp::Gc, || {
            let mut builds = self.inner.builds.lock();
            let mut expired: Vec<BuildId> = builds
                .iter_mut()
                .filter_map(|(id, b)| b.current(&self.inner.counter).is_terminal().then_some(*id))
                .collect();
            expired.sort();
            if !dry_run {
                for id in &expired {
                    builds.remove(id);
                }
            }
            Ok(GcReport {
                dry_run,
                expired: expired.iter().map(|id| format!("build/{id}")).collect(),
            })
        })
        .await
    }
}
