//! [`JenkinsExecutor`]: the [`Executor`] contract on Jenkins' REST API.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use chrono::Utc;
use executor_base::engine::{EngineCalls, Idempotency};
use executor_base::{
    BuildCounter, BuildId, BuildStatus, Error, ErrorKind, Executor, GcReport, StartConfig, Stats,
    StopConfig, Verdict,
};
use parking_lot::Mutex;

use crate::SCHEME;
use crate::api::JobInfo;
use crate::client::{Body, Client, Created};
use crate::error::JenkinsError;
use crate::job::{DescribedJob, JobSettings};
use crate::mapping::{from_build, from_queue, lost};

use Idempotency::{Idempotent, NotIdempotent};

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
    /// The final status, once Jenkins reported one (no more requests after that).
    terminal: Option<BuildStatus>,
    /// Counted as started in the build counters (we started it).
    counted: bool,
    /// Counted as finished or stopped.
    done_counted: bool,
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
}

impl fmt::Debug for JenkinsExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JenkinsExecutor")
            .field("client", &self.client)
            .field("job_prefix", &self.job.job_prefix)
            .field("template", &self.job.template)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

/// Removes a build id from the in-flight starts when the start ends, however it ends.
struct StartGuard<'a> {
    set: &'a Mutex<HashSet<BuildId>>,
    id: BuildId,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

/// Why `buildWithParameters` did not give us a build.
enum TriggerError {
    /// Jenkins did not queue it: safe to clean up.
    Refused(Error),
    /// Jenkins may have queued it and we could not check: leave everything in place.
    Unknown(Error),
}

/// An error whose request may have reached Jenkins and taken effect.
fn ambiguous(e: &Error) -> bool {
    e.is_temporary()
        && !executor_base::engine::refused_by_breaker(e)
        && !matches!(
            e.kind(),
            ErrorKind::Unavailable | ErrorKind::RateLimited | ErrorKind::CircuitOpen
        )
}

impl JenkinsExecutor {
    pub(crate) fn new(client: Client, calls: EngineCalls, job: JobSettings) -> Self {
        Self {
            client,
            calls,
            job,
            builds: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            counter: BuildCounter::new(),
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

    /// One engine call through the retry policy and breaker.
    async fn engine<T, F, Fut>(&self, op: &'static str, idem: Idempotency, f: F) -> Result<T, Error>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, JenkinsError>> + Send,
        T: Send,
    {
        self.calls
            .call(op, idem, || {
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
        self.engine("get job", Idempotent, || self.client.job(name))
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

    /// `buildWithParameters`, never blindly repeated: after an answer that leaves the
    /// outcome open, Jenkins is asked whether the build was queued before any retry.
    async fn trigger(&self, name: &str, form: &Body, before: u64) -> Result<Tracked, TriggerError> {
        let policy = self.calls.retry_policy().clone();
        let mut attempt = 0;
        loop {
            let err = match self
                .engine("buildWithParameters", NotIdempotent, || {
                    self.client.build_with_parameters(name, form)
                })
                .await
            {
                Ok(queue_id) => {
                    return Ok(Tracked {
                        queue_id,
                        before,
                        ..Tracked::default()
                    });
                }
                Err(e) if ambiguous(&e) => e,
                Err(e) => return Err(TriggerError::Refused(e)),
            };
            tracing::warn!(job = name, error = %err, "buildWithParameters outcome unknown; asking Jenkins before any retry");
            // Give a request still in flight on Jenkins' side time to land before looking.
            if let Some(d) = policy.delay(attempt, None) {
                tokio::time::sleep(d).await;
            }
            let info = match self.get_job(name).await {
                Ok(i) => i,
                Err(check) => {
                    return Err(TriggerError::Unknown(
                        err.with_context(
                            "outcome",
                            "unknown: Jenkins could not be asked whether the build was queued",
                        )
                        .with_context("check", check.message().to_string()),
                    ));
                }
            };
            match info {
                Some(j) if j.in_queue => {
                    return Ok(Tracked {
                        queue_id: j.queue_item.map(|q| q.id),
                        before,
                        ..Tracked::default()
                    });
                }
                Some(j) if j.last_number() > before => {
                    return Ok(Tracked {
                        number: Some(j.last_number()),
                        before,
                        ..Tracked::default()
                    });
                }
                Some(_) => {}
                None => {
                    return Err(TriggerError::Refused(
                        err.with_context("job", format!("{name} vanished")),
                    ));
                }
            }
            if attempt >= policy.max_retries {
                return Err(TriggerError::Refused(err));
            }
            attempt += 1;
            tracing::info!(
                job = name,
                attempt,
                "Jenkins did not queue the build; sending buildWithParameters again"
            );
        }
    }

    async fn do_start(&self, build: &StartConfig) -> Result<(), Error> {
        let id = build.build_id;
        let job = self.job.render(build, Utc::now())?;
        let name = job.name.as_str();
        let already = || {
            Error::new(
                ErrorKind::AlreadyExists,
                format!("build {id} is already live as Jenkins job {name}"),
            )
        };

        if !self.starting.lock().insert(id) {
            return Err(already());
        }
        let _guard = StartGuard {
            set: &self.starting,
            id,
        };
        if self.tracked(id).is_some_and(|t| t.terminal.is_none()) {
            let s = self.status(&StopConfig::new(id)).await?;
            if !s.is_terminal() {
                return Err(already());
            }
        }

        let before = match self
            .engine("create job", Idempotent, || {
                self.client.create_job(name, &job.xml)
            })
            .await?
        {
            Created::New => 0,
            Created::Exists => match self.get_job(name).await? {
                Some(j) if j.is_live() => return Err(already()),
                Some(j) if !DescribedJob::parse(j.description.as_deref().unwrap_or("")).managed => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "Jenkins job {name} exists and was not created by sdx; not touching it"
                        ),
                    ));
                }
                Some(j) => {
                    self.engine("update job", Idempotent, || {
                        self.client.update_job(name, &job.xml)
                    })
                    .await?;
                    j.last_number()
                }
                None => match self
                    .engine("create job", Idempotent, || {
                        self.client.create_job(name, &job.xml)
                    })
                    .await?
                {
                    Created::New => 0,
                    Created::Exists => {
                        return Err(Error::new(
                            ErrorKind::Unexpected,
                            format!("Jenkins job {name} keeps appearing and disappearing"),
                        )
                        .temporary());
                    }
                },
            },
        };

        match self.trigger(name, &job.form, before).await {
            Ok(mut t) => {
                t.counted = true;
                self.builds.lock().insert(id, t);
                self.counter.started();
                tracing::info!(build = %id, job = name, folder = %self.client.folder(), "build queued on Jenkins");
                Ok(())
            }
            Err(TriggerError::Refused(e)) => {
                self.delete_quietly(name).await;
                Err(e)
            }
            Err(TriggerError::Unknown(e)) => Err(e),
        }
    }

    /// Status of a build we track; returns whether the status is final.
    async fn status_tracked(
        &self,
        name: &str,
        t: &mut Tracked,
    ) -> Result<(BuildStatus, bool), Error> {
        if t.number.is_none()
            && let Some(q) = t.queue_id
        {
            match self
                .engine("get queue item", Idempotent, || self.client.queue_item(q))
                .await?
            {
                Some(item) => match (&item.executable, from_queue(name, &item)) {
                    (Some(e), _) => t.number = Some(e.number),
                    (None, Some(s)) if s.is_terminal() && !t.stopped => {
                        // Cancelled by someone else: deleting the job cancels its queue too.
                        return match self.get_job(name).await? {
                            None => Ok((
                                lost(name, Some(false), "the job was deleted while queued"),
                                true,
                            )),
                            Some(_) => Ok((s, true)),
                        };
                    }
                    (None, Some(s)) => {
                        let fin = s.is_terminal();
                        return Ok((s, fin));
                    }
                    (None, None) => unreachable!("from_queue is None only with an executable"),
                },
                // Jenkins forgets items some minutes after they leave the queue.
                None => t.queue_id = None,
            }
        }
        if let Some(n) = t.number {
            return Ok(
                match self
                    .engine("get build", Idempotent, || self.client.build(name, n))
                    .await?
                {
                    Some(b) => (from_build(name, &b, t.stopped), !b.building),
                    None if t.stopped => (BuildStatus::canceled(), true),
                    None => (
                        lost(name, Some(true), "the job or its build was deleted"),
                        true,
                    ),
                },
            );
        }
        match self.get_job(name).await? {
            None if t.stopped => Ok((BuildStatus::canceled(), true)),
            None => Ok((lost(name, None, "the job was deleted"), true)),
            Some(j) => match j.last_build {
                Some(b) if b.number > t.before => {
                    t.number = Some(b.number);
                    Ok((from_build(name, &b, t.stopped), !b.building))
                }
                _ if j.in_queue => {
                    t.queue_id = j.queue_item.as_ref().map(|q| q.id);
                    let s = j.queue_item.as_ref().and_then(|q| from_queue(name, q));
                    Ok((
                        s.unwrap_or_else(|| BuildStatus::pending(format!("{name} is queued"))),
                        false,
                    ))
                }
                _ => Ok((
                    lost(
                        name,
                        Some(false),
                        "the build left the queue without running",
                    ),
                    true,
                )),
            },
        }
    }

    /// Status of a build this executor does not track (started by another process, or
    /// before a restart); `None` when Jenkins has no such job.
    async fn status_untracked(
        &self,
        name: &str,
        t: &mut Tracked,
    ) -> Result<Option<(BuildStatus, bool)>, Error> {
        let Some(j) = self.get_job(name).await? else {
            return Ok(None);
        };
        if j.in_queue {
            t.queue_id = j.queue_item.as_ref().map(|q| q.id);
            t.before = j.last_number();
            let s = j.queue_item.as_ref().and_then(|q| from_queue(name, q));
            return Ok(Some((
                s.unwrap_or_else(|| BuildStatus::pending(format!("{name} is queued"))),
                false,
            )));
        }
        Ok(Some(match j.last_build {
            Some(b) => {
                t.number = Some(b.number);
                (from_build(name, &b, false), !b.building)
            }
            None => (
                lost(name, Some(false), "the job has no queued or started build"),
                true,
            ),
        }))
    }
}

#[async_trait]
impl Executor for JenkinsExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        self.do_start(build)
            .await
            .map_err(|e| e.with_executor(SCHEME).with_operation("start"))
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let id = build.build_id;
        let name = self.job.job_name(id);
        let name = name.as_str();
        let t = self.tracked(id);
        if t.as_ref().is_some_and(|t| t.terminal.is_some()) {
            return Ok(());
        }
        let t = t.unwrap_or_default();
        let mut number = t.number;
        let mut queue = if number.is_none() { t.queue_id } else { None };
        if number.is_none() && queue.is_none() {
            match self.get_job(name).await? {
                None => return Ok(()),
                Some(j) if j.in_queue => queue = j.queue_item.map(|q| q.id),
                Some(j) => number = j.last_build.filter(|b| b.building).map(|b| b.number),
            }
        }
        if let Some(q) = queue
            && !self
                .engine("cancel queue item", Idempotent, || {
                    self.client.cancel_queue_item(q)
                })
                .await?
        {
            // It left the queue meanwhile: stop the build it became, if any.
            number = match self
                .engine("get queue item", Idempotent, || self.client.queue_item(q))
                .await?
                .and_then(|i| i.executable)
            {
                Some(e) => Some(e.number),
                None => self
                    .get_job(name)
                    .await?
                    .and_then(|j| j.last_build)
                    .filter(|b| b.building)
                    .map(|b| b.number),
            };
        }
        if let Some(n) = number {
            self.engine("stop build", Idempotent, || self.client.stop_build(name, n))
                .await?;
        }
        if queue.is_none() && number.is_none() {
            return Ok(()); // Nothing was queued or running.
        }
        tracing::info!(build = %id, job = name, "build stopped");
        self.remember(id, |t| {
            t.stopped = true;
            if number.is_some() {
                t.number = number;
            }
            if t.counted && !t.done_counted {
                self.counter.stopped();
                t.done_counted = true;
            }
        });
        Ok(())
    }

    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        let s = self.status(&build.to_stop()).await?;
        Ok(Verdict::from_status(&s))
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        let id = build.build_id;
        let name = self.job.job_name(id);
        let tag = |e: Error| e.with_executor(SCHEME).with_operation("status");
        let (mut t, known) = match self.tracked(id) {
            Some(t) => (t, true),
            None => (Tracked::default(), false),
        };
        if let Some(s) = t.terminal {
            return Ok(s);
        }
        let (status, fin) = if known {
            self.status_tracked(&name, &mut t).await.map_err(tag)?
        } else {
            match self.status_untracked(&name, &mut t).await.map_err(tag)? {
                Some(r) => r,
                None => return Err(tag(Error::build_not_found(id))),
            }
        };
        self.remember(id, |r| {
            r.queue_id = t.queue_id;
            r.number = t.number.or(r.number);
            r.before = t.before;
            if fin && r.terminal.is_none() {
                r.terminal = Some(status.clone());
            }
        });
        Ok(status)
    }

    fn stats(&self) -> Stats {
        Stats {
            requests: self.calls.request_stats(),
            breaker: self.calls.breaker_stats(),
            builds: self.counter.snapshot(),
            ..Stats::default()
        }
    }

    async fn cleanup(&self) -> Result<(), Error> {
        self.gc(false).await.map(|_| ())
    }

    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let tag = |e: Error| e.with_executor(SCHEME).with_operation("gc");
        let jobs = self
            .engine("list jobs", Idempotent, || self.client.jobs())
            .await
            .map_err(tag)?;
        let now = Utc::now();
        let mut expired = Vec::new();
        for j in jobs {
            let Some(name) = j.name.as_deref() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(self.job.job_prefix.as_str()) else {
                continue;
            };
            let finished = !j.last_build.as_ref().is_some_and(|b| b.building);
            if !finished
                || !DescribedJob::parse(j.description.as_deref().unwrap_or("")).expired(now)
            {
                continue;
            }
            expired.push(self.client.folder().item_path(name));
            if dry_run {
                continue;
            }
            self.engine("delete job", Idempotent, || self.client.delete_job(name))
                .await
                .map_err(tag)?;
            tracing::info!(job = name, folder = %self.client.folder(), "expired job deleted");
            // A collected build is forgotten with its job (status: NotFound), after its
            // final status, if it was never read, is counted.
            if let Ok(id) = rest.parse::<BuildId>()
                && let Some(t) = self.tracked(id)
            {
                if t.terminal.is_none() {
                    let last = j
                        .last_build
                        .as_ref()
                        .filter(|b| !b.building && b.number > t.before);
                    let status = match last {
                        Some(b) => from_build(name, b, t.stopped),
                        None => lost(name, Some(false), "collected by gc before it ran"),
                    };
                    self.remember(id, |r| r.terminal = Some(status));
                }
                self.builds.lock().remove(&id);
            }
        }
        Ok(GcReport { dry_run, expired })
    }
}
