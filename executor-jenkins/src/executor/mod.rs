//! [`JenkinsExecutor`]: the [`Executor`] contract on Jenkins' REST API.
//!
//! The contract's calls live in one file each: `start` (create or update the job, then
//! `buildWithParameters`, never blindly repeated), `status` (queue item → build →
//! [`BuildStatus`]), `stop` (cancel the queue item or stop the build it became) and `gc`
//! (delete expired jobs); `backstop` checks and, where Jenkins cannot, enforces the job's
//! own timeout.

mod backstop;
mod gc;
mod preflight;
mod start;
mod status;
mod stop;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use executor_base::engine::{CallClass, EngineCalls, Idempotency};
use executor_base::{
    BuildCounter, BuildId, BuildStatus, Error, Executor, GcReport, StartConfig, Stats, StopConfig,
};
use parking_lot::Mutex;

use crate::SCHEME;
use crate::api::JobInfo;
use crate::client::Client;
use crate::error::JenkinsError;
use crate::job::JobSettings;

use Idempotency::Idempotent;

/// What this executor remembers about a build it started (or looked up).
#[derive(Debug, Clone, Default)]
struct Tracked {
    /// The queue item `buildWithParameters` created.
    queue_id: Option<u64>,
    /// The build number, once the queue item became a build.
    number: Option<u64>,
    /// The job's last build number before our trigger: later builds are ours.
    before: u64,
    /// We asked Jenkins to stop it.
    stopped: bool,
    /// The job's own timeout in minutes (from the render, or the job description).
    job_timeout_minutes: Option<u32>,
    /// The executor stopped it for running past its job timeout.
    timed_out: bool,
    /// The final status, once Jenkins reported one (no more requests after that).
    terminal: Option<BuildStatus>,
    /// Counted as started in the build counters (we started it).
    counted: bool,
    /// Counted as finished or stopped.
    done_counted: bool,
    /// When this executor's `start` queued it.
    accepted: Option<chrono::DateTime<chrono::Utc>>,
    /// The queue item's `inQueueSince` (ms since the epoch), once read.
    in_queue_since_ms: Option<i64>,
    /// The build's `timestamp` (ms since the epoch: it left the queue and began).
    started_ms: Option<i64>,
    /// The build's `duration` (ms), once it is no longer building.
    duration_ms: Option<i64>,
}

impl Tracked {
    /// Takes what a queue item says of the build's timings.
    fn saw_queue_item(&mut self, q: &crate::api::QueueItem) {
        self.in_queue_since_ms = q.in_queue_since.or(self.in_queue_since_ms);
    }

    /// Takes what a build says of its timings.
    fn saw_build(&mut self, b: &crate::api::BuildInfo) {
        self.started_ms = b.timestamp.or(self.started_ms);
        if !b.building {
            self.duration_ms = b.duration.or(self.duration_ms);
        }
    }

    /// The build's timings: accepted from the queue item's `inQueueSince` (else when our
    /// `start` queued it), scheduled and running from the build's `timestamp` (Jenkins
    /// exports no separate start of execution), finished at `timestamp + duration`.
    fn timings(&self) -> executor_base::BuildTimings {
        let ms = |v: Option<i64>| v.and_then(chrono::DateTime::from_timestamp_millis);
        let started = ms(self.started_ms);
        executor_base::BuildTimings {
            accepted: ms(self.in_queue_since_ms).or(self.accepted),
            scheduled: started,
            running: started,
            finished: self
                .started_ms
                .zip(self.duration_ms)
                .and_then(|(t, d)| ms(Some(t + d))),
            ..executor_base::BuildTimings::default()
        }
    }
}

/// Runs each Screwdriver build as a Jenkins job `SD-<buildId>`; see the crate docs.
///
/// Built by [`crate::JenkinsExecutorBuilder`].
pub struct JenkinsExecutor {
    client: Client,
    calls: EngineCalls,
    job: JobSettings,
    builds: Mutex<HashMap<BuildId, Tracked>>,
    starting: Mutex<HashSet<BuildId>>,
    counter: BuildCounter,
    backstop: Mutex<backstop::BackstopState>,
    require_timeout_plugin: bool,
    preflight: executor_base::PreflightOptions,
    preflight_cache: executor_base::PreflightCache,
}

impl fmt::Debug for JenkinsExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JenkinsExecutor")
            .field("client", &self.client)
            .field("job_prefix", &self.job.job_prefix)
            .field("template", &self.job.template)
            .field("backstop", &self.backstop.lock().backstop)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl JenkinsExecutor {
    pub(crate) fn new(
        client: Client,
        calls: EngineCalls,
        job: JobSettings,
        require_timeout_plugin: bool,
        preflight: executor_base::PreflightOptions,
    ) -> Self {
        Self {
            client,
            calls,
            job,
            builds: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            counter: BuildCounter::new(),
            backstop: Mutex::new(backstop::BackstopState::default()),
            require_timeout_plugin,
            preflight_cache: executor_base::PreflightCache::new(preflight.cache_ttl),
            preflight,
        }
    }

    /// The Jenkins base URL (with the path prefix).
    pub fn base_url(&self) -> &url::Url {
        self.client.base()
    }

    /// The Jenkins job name of a build (`SD-<buildId>` by default).
    pub fn job_name(&self, build_id: BuildId) -> String {
        self.job.job_name(build_id)
    }

    /// The folder jobs are created in (`ci/screwdriver`), `/` for Jenkins' root.
    pub fn folder(&self) -> String {
        self.client.folder().to_string()
    }

    /// Jenkins' version (its `X-Jenkins` header), read with the configured credentials:
    /// a check that the URL, path prefix, user and token work (`sdx doctor`), and that
    /// the configured folder exists (a `ConfigInvalid` error naming `folder` if not).
    pub async fn jenkins_version(&self) -> Result<String, Error> {
        let tag = |e: Error| e.with_executor(SCHEME).with_operation("version");
        let version = self
            .engine("version", Idempotent, || self.client.version())
            .await
            .map_err(tag)?;
        self.engine("check folder", Idempotent, || self.client.check_folder())
            .await
            .map_err(tag)?;
        Ok(version)
    }

    /// One engine call through the retry policy and the breaker of its class
    /// ([`call_class`]).
    async fn engine<T, F, Fut>(&self, op: &'static str, idem: Idempotency, f: F) -> Result<T, Error>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, JenkinsError>> + Send,
        T: Send,
    {
        self.engine_in(call_class(op), op, idem, f).await
    }

    /// One engine call in `class`: a read made on behalf of a stop is a
    /// [`CallClass::Stop`] call, so an open breaker never keeps a stop from Jenkins.
    async fn engine_in<T, F, Fut>(
        &self,
        class: CallClass,
        op: &'static str,
        idem: Idempotency,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, JenkinsError>> + Send,
        T: Send,
    {
        self.calls
            .call_in(class, op, idem, || {
                let fut = f();
                async move { fut.await.map_err(Error::from) }
            })
            .await
    }

    fn tracked(&self, id: BuildId) -> Option<Tracked> {
        self.builds.lock().get(&id).cloned()
    }

    /// Stores what a status or stop learned, and counts a build once when it ends.
    fn remember(&self, id: BuildId, update: impl FnOnce(&mut Tracked)) {
        let mut builds = self.builds.lock();
        let t = builds.entry(id).or_default();
        update(t);
        if let Some(s) = &t.terminal
            && t.counted
            && !t.done_counted
        {
            if t.stopped {
                self.counter.stopped();
            } else {
                self.counter.finished(s);
            }
            t.done_counted = true;
        }
    }

    async fn get_job(&self, name: &str) -> Result<Option<JobInfo>, Error> {
        self.get_job_in(CallClass::Read, name).await
    }

    /// [`JenkinsExecutor::get_job`] as a call of `class` (a stop's reads are stop calls).
    async fn get_job_in(&self, class: CallClass, name: &str) -> Result<Option<JobInfo>, Error> {
        self.engine_in(class, "get job", Idempotent, || self.client.job(name))
            .await
    }

    async fn delete_quietly(&self, name: &str) {
        if let Err(e) = self
            .engine("delete job", Idempotent, || self.client.delete_job(name))
            .await
        {
            tracing::warn!(job = name, error = %e, "could not remove the job of a failed start");
        }
    }
}

#[async_trait]
impl Executor for JenkinsExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    /// Pre-flight: credentials, the plugins the job template needs, an online agent with
    /// the build's node label; cached per node label.
    async fn preflight(&self, build: &StartConfig) -> Result<executor_base::Preflight, Error> {
        self.run_preflight(build).await
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        self.do_start(build)
            .await
            .map_err(|e| e.with_executor(SCHEME).with_operation("start"))
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        self.do_stop(build).await
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        self.do_status(build).await
    }

    /// From the queue item's `inQueueSince` and the build's `timestamp` and `duration`
    /// (see `Tracked::timings`), read by `status` (which this calls first unless the
    /// build's end is already known). No peak memory: Jenkins does not account it.
    async fn timings(
        &self,
        build: &StopConfig,
    ) -> Result<Option<executor_base::BuildTimings>, Error> {
        let known = self
            .tracked(build.build_id)
            .is_some_and(|t| t.terminal.is_some() && t.duration_ms.is_some());
        if !known {
            match self.do_status(build).await {
                Ok(_) => {}
                Err(e) if e.kind() == executor_base::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(self
            .tracked(build.build_id)
            .map(|t| t.timings())
            .filter(|t| !t.is_empty()))
    }

    fn stats(&self) -> Stats {
        Stats {
            requests: self.calls.request_stats(),
            breaker: self.calls.breaker_stats(),
            builds: self.counter.snapshot(),
            ..Stats::default()
        }
    }

    /// Deletes expired jobs ([`Executor::gc`]); live builds keep running.
    async fn cleanup(&self) -> Result<(), Error> {
        self.gc(false).await.map(|_| ())
    }

    /// Stops the builds this instance started and has not seen end.
    async fn stop_all(&self) -> Result<Vec<BuildId>, Error> {
        let live: Vec<BuildId> = {
            let builds = self.builds.lock();
            let mut ids: Vec<BuildId> = builds
                .iter()
                .filter(|(_, t)| t.terminal.is_none() && !t.stopped)
                .map(|(id, _)| *id)
                .collect();
            ids.sort();
            ids
        };
        executor_base::stop_builds(self, live).await
    }

    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        self.do_gc(dry_run).await
    }
}

/// The breaker class of a Jenkins call, by its operation name: creating and triggering
/// jobs are starts (a controller that refuses them must not make status reads fail
/// fast), reads are reads, and stopping, cancelling, deleting and the timeout marker
/// are stops, which are always attempted.
fn call_class(op: &str) -> CallClass {
    match op {
        "create job" | "update job" | "buildWithParameters" | "check folder" => CallClass::Start,
        "stop build" | "cancel queue item" | "delete job" | "describe build" => CallClass::Stop,
        _ => CallClass::Read,
    }
}
