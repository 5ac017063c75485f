//! Acting on expired deadlines: stop the build and report it [`crate::Phase::TimedOut`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::sync::Mutex;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{StartConfig, StopConfig, TimerConfig};
use crate::error::Error;
use crate::executor::{Executor, GcReport};
use crate::ids::BuildId;
use crate::stats::Stats;
use crate::status::BuildStatus;
use crate::timer::service::{Expired, TimerService};
use crate::verdict::Verdict;

/// How long a timed-out mark is kept (so `status` keeps answering `TimedOut`).
const RETAIN: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Builds that were stopped for running past their deadline, so `status` can answer
/// [`crate::Phase::TimedOut`] (the engine itself only knows they were stopped). Marks are kept
/// for a day. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct TimedOutBuilds {
    marks: Arc<Mutex<HashMap<BuildId, Mark>>>,
}

/// Timeout minutes, when recorded.
type Mark = (u32, DateTime<Utc>);

impl TimedOutBuilds {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the build ran past its deadline.
    pub fn record(&self, e: &Expired) {
        let now = Utc::now();
        let mut m = self.marks.lock();
        if m.len() >= 1024 {
            m.retain(|_, (_, at)| now - *at < RETAIN);
        }
        m.insert(e.build_id, (e.timeout_minutes, now));
    }

    /// The `TimedOut` status of a recorded build.
    pub fn status(&self, build_id: BuildId) -> Option<BuildStatus> {
        self.marks
            .lock()
            .get(&build_id)
            .map(|(minutes, _)| timed_out_status(*minutes))
    }

    /// Forgets the build (it was started again).
    pub fn forget(&self, build_id: BuildId) {
        self.marks.lock().remove(&build_id);
    }
}

/// The status of a build stopped after `minutes`.
pub fn timed_out_status(minutes: u32) -> BuildStatus {
    BuildStatus::timed_out(format!(
        "Build failed due to timeout: ran past its timeout of {minutes} minutes and was stopped"
    ))
}

/// Records the expiry in `timed_out`, then stops the build on `target` in a new task
/// (failures are logged). Use as a [`TimerService`] handler.
pub fn stop_on_expiry(
    target: Arc<dyn Executor>,
    timed_out: TimedOutBuilds,
) -> impl Fn(Expired) + Send + Sync + 'static {
    move |e: Expired| {
        timed_out.record(&e);
        let target = target.clone();
        tokio::spawn(async move {
            let mut stop = StopConfig::new(e.build_id);
            stop.job_id = Some(e.job_id);
            tracing::info!(build_id = %e.build_id, job_id = %e.job_id, late_ms = e.lateness.as_millis() as u64, "build ran past its timeout; stopping it");
            if let Err(err) = target.stop(&stop).await {
                tracing::warn!(build_id = %e.build_id, error = %err, "could not stop a timed-out build");
            }
        });
    }
}

/// An executor wrapper that owns the timers: its `start_timer`/`stop_timer` use a
/// [`TimerService`], and when a deadline passes it stops the build on the wrapped
/// executor and reports it [`crate::Phase::TimedOut`] from `status` and `verify`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use executor_base::{Executor, Phase, StartConfig, TimerConfig, ApiBuildStatus};
/// use executor_base::testkit::fake::FakeExecutor;
/// use executor_base::timer::{TimedExecutor, TimerService};
/// let fake = FakeExecutor::new();
/// let timed = TimedExecutor::new(Arc::new(fake.clone()), TimerService::builder().build().await.unwrap());
/// let build = StartConfig::builder(7, "http://127.0.0.1:9", "busybox:latest", "tok").job_id(1).build().unwrap();
/// timed.start(&build).await.unwrap();
/// let t = TimerConfig::new(build.build_id, build.job_id.unwrap(), ApiBuildStatus::Running,
///     chrono::Utc::now() - chrono::Duration::minutes(120), Default::default());
/// timed.start_timer(&t).await.unwrap();
/// while timed.status(&build.to_stop()).await.unwrap().phase != Phase::TimedOut {
///     tokio::task::yield_now().await;
/// }
/// # });
/// ```
pub struct TimedExecutor {
    inner: Arc<dyn Executor>,
    timers: TimerService,
    timed_out: TimedOutBuilds,
}

impl fmt::Debug for TimedExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedExecutor")
            .field("inner", &self.inner)
            .field("timers", &self.timers)
            .finish()
    }
}

impl TimedExecutor {
    /// Wraps `inner`; takes over `timers`' expiry handler.
    pub fn new(inner: Arc<dyn Executor>, timers: TimerService) -> Self {
        let timed_out = TimedOutBuilds::new();
        timers.set_handler(stop_on_expiry(inner.clone(), timed_out.clone()));
        Self {
            inner,
            timers,
            timed_out,
        }
    }

    /// The timer service.
    pub fn timers(&self) -> &TimerService {
        &self.timers
    }

    /// The builds stopped for running past their deadline.
    pub fn timed_out(&self) -> &TimedOutBuilds {
        &self.timed_out
    }

    /// The wrapped executor.
    pub fn inner(&self) -> &Arc<dyn Executor> {
        &self.inner
    }
}

#[async_trait]
impl Executor for TimedExecutor {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        self.inner.start(build).await?;
        self.timed_out.forget(build.build_id);
        Ok(())
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        self.inner.stop(build).await
    }

    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        match self.timed_out.status(build.build_id) {
            Some(s) => Ok(Verdict::from_status(&s)),
            None => self.inner.verify(build).await,
        }
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        match self.timed_out.status(build.build_id) {
            Some(s) => Ok(s),
            None => self.inner.status(build).await,
        }
    }

    fn stats(&self) -> Stats {
        self.inner.stats()
    }

    async fn cleanup(&self) -> Result<(), Error> {
        self.inner.cleanup().await
    }

    async fn stop_all(&self) -> Result<Vec<crate::BuildId>, Error> {
        self.inner.stop_all().await
    }

    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        self.inner.gc(dry_run).await
    }

    async fn preflight(&self, build: &StartConfig) -> Result<crate::Preflight, Error> {
        self.inner.preflight(build).await
    }

    async fn start_timer(&self, timer: &TimerConfig) -> Result<(), Error> {
        self.timers.start_timer(timer).await.map(|_| ())
    }

    async fn stop_timer(&self, build: &StopConfig) -> Result<(), Error> {
        self.timers.stop_timer(build.build_id).await.map(|_| ())
    }

    async fn wait_for_change(
        &self,
        build: &StopConfig,
        last_seen: &BuildStatus,
    ) -> Result<BuildStatus, Error> {
        if let Some(s) = self.timed_out.status(build.build_id) {
            return Ok(s);
        }
        let s = self.inner.wait_for_change(build, last_seen).await?;
        Ok(self.timed_out.status(build.build_id).unwrap_or(s))
    }

    async fn timings(
        &self,
        build: &StopConfig,
    ) -> Result<Option<crate::timings::BuildTimings>, Error> {
        self.inner.timings(build).await
    }
}
