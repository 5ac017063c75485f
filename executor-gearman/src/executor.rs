//! [`GearmanExecutor`]: dispatches builds to Zuul-style launchers through gearmand.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use executor_base::engine::{CallClass, EngineCalls, Idempotency};
use executor_base::{
    BuildCounter, BuildId, BuildStatus, Error, ErrorKind, Executor, StartConfig, Stats, StopConfig,
};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::client::GearmanClient;
use crate::config::{GearmanConfig, JOB_ANNOTATION, NODE_ANNOTATION};
use crate::launcher::config::check_name;
use crate::tracker::{Cmd, GearmanBuildInfo, Tracked, stop_by_uuid, stop_orphan, track};
use crate::worker_check::WorkerCheck;

/// An [`Executor`] that submits each build as a `build:<job>` Gearman job and follows it
/// through the launcher's `WORK_*` packets (see the crate docs and
/// [`crate::tracker`](crate) for the status mapping).
///
/// Build this through [`crate::GearmanExecutorBuilder`].
#[derive(Clone)]
pub struct GearmanExecutor {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: GearmanConfig,
    pub(crate) calls: EngineCalls,
    pub(crate) workers: WorkerCheck,
    pub(crate) counter: BuildCounter,
    builds: Mutex<HashMap<BuildId, Slot>>,
    /// Builds whose `start` failed after a `SUBMIT_JOB` went out: the job's uuid, and
    /// when. A launcher may have taken the job before the connection broke, so `stop`
    /// (and `stop_all`) ask every launcher to stop that uuid ([`stop_by_uuid`]).
    uncertain: Mutex<HashMap<BuildId, (String, Instant)>>,
    preflight: executor_base::PreflightCache,
}

enum Slot {
    /// `start` is submitting it.
    Starting,
    Tracked(Arc<Tracked>),
}

impl fmt::Debug for GearmanExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GearmanExecutor")
            .field("config", &self.inner.cfg)
            .field("builds", &self.inner.builds.lock().len())
            .finish()
    }
}

impl GearmanExecutor {
    pub(crate) fn new(cfg: GearmanConfig) -> Self {
        let calls = EngineCalls::new(crate::SCHEME, cfg.retry.clone(), cfg.breaker.clone())
            .with_endpoint(cfg.server.clone());
        let workers = WorkerCheck::new(
            cfg.server.clone(),
            Duration::from_millis(cfg.worker_check_ttl_ms),
            cfg.client_options().request_timeout,
        );
        Self {
            inner: Arc::new(Inner {
                preflight: executor_base::PreflightCache::new(cfg.preflight.cache_ttl),
                cfg,
                calls,
                workers,
                counter: BuildCounter::new(),
                builds: Mutex::new(HashMap::new()),
                uncertain: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GearmanConfig {
        &self.inner.cfg
    }

    /// Follows a build's status as it changes (no polling); `None` for unknown builds.
    pub fn watch(&self, build_id: BuildId) -> Option<watch::Receiver<BuildStatus>> {
        match self.inner.builds.lock().get(&build_id)? {
            Slot::Tracked(t) => Some(t.status.subscribe()),
            Slot::Starting => None,
        }
    }

    /// The build's Gearman job: handle, launcher, number, URL, progress.
    pub fn build_info(&self, build_id: BuildId) -> Option<GearmanBuildInfo> {
        match self.inner.builds.lock().get(&build_id)? {
            Slot::Tracked(t) => Some(t.info.lock().clone()),
            Slot::Starting => None,
        }
    }

    fn tracked(&self, id: BuildId) -> Option<Result<Arc<Tracked>, ()>> {
        self.inner.builds.lock().get(&id).map(|s| match s {
            Slot::Tracked(t) => Ok(t.clone()),
            Slot::Starting => Err(()),
        })
    }

    /// The job and node a build goes to: annotations first, then the config.
    fn function_for(&self, build: &StartConfig) -> Result<(String, String), Error> {
        let pick = |name: &str, default: Option<&String>| -> Result<Option<String>, Error> {
            match build.annotations.get(name) {
                Some(Value::String(s)) => check_name(s).map(|()| Some(s.clone())).map_err(|why| {
                    Error::invalid_field(format!("annotations[screwdriver.cd/{name}]"), why)
                }),
                Some(_) => Err(Error::invalid_field(
                    format!("annotations[screwdriver.cd/{name}]"),
                    "must be a string",
                )),
                None => Ok(default.cloned()),
            }
        };
        let job = pick(JOB_ANNOTATION, Some(&self.inner.cfg.job))?.unwrap_or_default();
        let node = pick(NODE_ANNOTATION, self.inner.cfg.node.as_ref())?;
        let function = self.inner.cfg.function(&job, node.as_deref());
        Ok((job, function))
    }

    /// The job's arguments: the start config's wire form (token included: the launcher
    /// needs it) plus the `ZUUL_*` parameters.
    fn arguments(&self, build: &StartConfig, job: &str, uuid: &str) -> Value {
        let cfg = &self.inner.cfg;
        let mut m = match build.to_json_with_token() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let repo = build.extra.get("pipeline").and_then(|p| p.get("scmRepo"));
        let project = repo
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| cfg.project.clone());
        let commit = build
            .extra
            .get("sha")
            .and_then(Value::as_str)
            .filter(|s| (7..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()))
            .map_or_else(|| "0".repeat(40), str::to_string);
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), Value::String(v));
        };
        put("ZUUL_UUID", uuid.to_string());
        put("ZUUL_PROJECT", project);
        put("ZUUL_PIPELINE", cfg.pipeline.clone());
        put(
            "ZUUL_REF",
            format!("refs/screwdriver/builds/{}", build.build_id),
        );
        put("ZUUL_COMMIT", commit);
        put("LOG_PATH", format!("{}/{job}/{uuid}", cfg.pipeline));
        if let Some(branch) = repo.and_then(|r| r.get("branch")).and_then(Value::as_str) {
            put("ZUUL_BRANCH", branch.to_string());
        }
        if let Some(u) = &cfg.zuul_url {
            put("ZUUL_URL", u.clone());
        }
        Value::Object(m)
    }

    fn forget_old(&self) {
        let retain = Duration::from_secs(self.inner.cfg.retain_finished_secs);
        self.inner.builds.lock().retain(|_, s| match s {
            Slot::Starting => true,
            Slot::Tracked(t) => t.finished_at.lock().is_none_or(|at| at.elapsed() < retain),
        });
        // Past the retention window the launcher's own abandoned-job check (or its
        // drain) has long ended such a build.
        self.inner
            .uncertain
            .lock()
            .retain(|_, (_, at)| at.elapsed() < retain.max(Duration::from_secs(3600)));
    }

    /// Asks every launcher to stop the job of a `start` that failed after its job went
    /// out; forgets it once they answered.
    async fn stop_uncertain(&self, id: BuildId) -> Result<(), Error> {
        let Some((uuid, _)) = self.inner.uncertain.lock().get(&id).cloned() else {
            return Ok(());
        };
        stop_by_uuid(&self.inner, &uuid)
            .await
            .map_err(|e| e.with_executor(crate::SCHEME).with_operation("stop"))?;
        let mut uncertain = self.inner.uncertain.lock();
        if uncertain.get(&id).is_some_and(|(u, _)| *u == uuid) {
            uncertain.remove(&id);
        }
        Ok(())
    }

    async fn submit(
        &self,
        build: &StartConfig,
        job: &str,
        function: &str,
        began: Instant,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let cfg = &inner.cfg;
        if cfg.check_workers {
            let workers = inner
                .workers
                .workers(&inner.calls, "start", function)
                .await?;
            if workers == 0 {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no Gearman worker can run {function}: no launcher registered it on {}",
                        cfg.server
                    ),
                )
                .with_executor(crate::SCHEME)
                .with_operation("start")
                .with_context("function", function));
            }
        }
        let uuid = format!("{:032x}", fastrand::u128(..));
        let data =
            Bytes::from(serde_json::to_vec(&self.arguments(build, job, &uuid)).unwrap_or_default());
        // Safe to retry: a job whose connection broke before its JOB_CREATED reached us is
        // withdrawn with that connection (both gearmand and geard drop a foreground job
        // whose client is gone) unless a launcher took it already; a retry submits the
        // same unique id, which gearmand attaches to that job and the sdx launcher to
        // that build. If every attempt fails after a job went out, the uuid is kept so
        // that `stop` reaches the build wherever a launcher took it. geard listens with
        // a backlog of one: a burst of starts sees resets there.
        let sent = std::sync::atomic::AtomicBool::new(false);
        let submitted = inner
            .calls
            .call_in(
                CallClass::Start,
                "start",
                Idempotency::Idempotent,
                || async {
                    let client = GearmanClient::connect(&cfg.server, cfg.client_options())
                        .await
                        .map_err(Error::from)?;
                    sent.store(true, std::sync::atomic::Ordering::Relaxed);
                    let job = client
                        .submit(function, &uuid, data.clone())
                        .await
                        .map_err(Error::from)?;
                    Ok((client, job))
                },
            )
            .await;
        let (client, submitted) = match submitted {
            Ok(s) => s,
            Err(e) => {
                if sent.load(std::sync::atomic::Ordering::Relaxed) {
                    self.inner
                        .uncertain
                        .lock()
                        .insert(build.build_id, (uuid, Instant::now()));
                }
                return Err(e);
            }
        };
        tracing::info!(build_id = %build.build_id, %function, handle = %submitted.handle, "build submitted to gearmand");
        let (tracked, cmds) = Tracked::new(
            GearmanBuildInfo {
                function: function.to_string(),
                handle: submitted.handle.clone(),
                uuid,
                ..GearmanBuildInfo::default()
            },
            began,
        );
        inner.counter.started();
        inner
            .builds
            .lock()
            .insert(build.build_id, Slot::Tracked(tracked.clone()));
        tokio::spawn(track(inner.clone(), tracked, client, submitted, cmds));
        Ok(())
    }
}

#[async_trait]
impl Executor for GearmanExecutor {
    fn name(&self) -> &str {
        crate::SCHEME
    }

    /// Pre-flight: gearmand answers its admin `status`, and at least one worker is
    /// registered for the build's function; cached per function.
    async fn preflight(&self, build: &StartConfig) -> Result<executor_base::Preflight, Error> {
        let (_, function) = self.function_for(build)?;
        let cfg = &self.inner.cfg;
        self.inner
            .preflight
            .get_or_run(&function, || {
                crate::preflight::run(&cfg.server, &function, cfg.preflight.check_timeout)
            })
            .await
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let began = Instant::now();
        let (job, function) = self.function_for(build)?;
        self.forget_old();
        {
            let mut builds = self.inner.builds.lock();
            let live = match builds.get(&build.build_id) {
                Some(Slot::Starting) => true,
                Some(Slot::Tracked(t)) => !t.is_terminal(),
                None => false,
            };
            if live {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("build {} is already running", build.build_id),
                )
                .with_executor(crate::SCHEME)
                .with_operation("start"));
            }
            builds.insert(build.build_id, Slot::Starting);
        }
        let r = self.submit(build, &job, &function, began).await;
        if r.is_err() {
            let mut builds = self.inner.builds.lock();
            if matches!(builds.get(&build.build_id), Some(Slot::Starting)) {
                builds.remove(&build.build_id);
            }
        }
        r
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        self.stop_uncertain(build.build_id).await?;
        let deadline = Instant::now() + self.inner.cfg.stop_timeout();
        let tracked = loop {
            match self.tracked(build.build_id) {
                None => return Ok(()),
                Some(Ok(t)) => break t,
                // A concurrent `start` is submitting it: wait for the handle.
                Some(Err(())) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Some(Err(())) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "the build is still being submitted",
                    )
                    .with_executor(crate::SCHEME)
                    .temporary());
                }
            }
        };
        if tracked.is_terminal() {
            // A build lost with the connection may still run on its launcher.
            return stop_orphan(&self.inner, &tracked)
                .await
                .map_err(|e| e.with_executor(crate::SCHEME).with_operation("stop"));
        }
        let (reply, answer) = oneshot::channel();
        // The task ends when the connection breaks, which may be between the check above
        // and now: then the build may run on, on its launcher.
        let orphan = || async {
            stop_orphan(&self.inner, &tracked)
                .await
                .map_err(|e| e.with_executor(crate::SCHEME).with_operation("stop"))
        };
        if tracked.cmds.send(Cmd::Stop(reply)).is_err() {
            return orphan().await;
        }
        let bound = self.inner.cfg.stop_timeout() * 2 + Duration::from_secs(5);
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(r)) => r.map_err(|e| e.with_operation("stop")),
            Ok(Err(_)) => orphan().await,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no stop confirmation within {bound:?}"),
            )
            .with_executor(crate::SCHEME)
            .with_operation("stop")
            .temporary()),
        }
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        match self.tracked(build.build_id) {
            None => Err(Error::build_not_found(build.build_id)
                .with_executor(crate::SCHEME)
                .with_operation("status")),
            Some(Err(())) => Ok(BuildStatus::pending("submitting to gearmand")),
            Some(Ok(t)) => Ok(t.status.borrow().clone()),
        }
    }

    /// What the job's packets told, by this process' clock (see the tracker): accepted,
    /// scheduled (the launcher announced it), running, finished; nothing of pulls or
    /// memory (the Zuul launcher protocol carries neither). `None` for builds this
    /// process does not track.
    async fn timings(
        &self,
        build: &StopConfig,
    ) -> Result<Option<executor_base::BuildTimings>, Error> {
        Ok(match self.tracked(build.build_id) {
            Some(Ok(t)) => Some(t.timings.lock().clone()),
            _ => None,
        })
    }

    fn stats(&self) -> Stats {
        Stats {
            requests: self.inner.calls.request_stats(),
            breaker: self.inner.calls.breaker_stats(),
            builds: self.inner.counter.snapshot(),
            ..Stats::default()
        }
    }

    /// Forgets finished builds past `retainFinishedSecs` (their connections closed when
    /// they finished); live builds keep running.
    async fn cleanup(&self) -> Result<(), Error> {
        self.forget_old();
        Ok(())
    }

    /// Woken by the build's packets (the same status `watch` gives), no polling.
    async fn wait_for_change(
        &self,
        build: &StopConfig,
        last_seen: &BuildStatus,
    ) -> Result<BuildStatus, Error> {
        let tracked = match self.tracked(build.build_id) {
            Some(Ok(t)) => t,
            // Unknown (NotFound) or still being submitted: as `status` reads it.
            _ => return executor_base::executor::poll_for_change(self, build, last_seen).await,
        };
        let mut rx = tracked.status.subscribe();
        let s = rx
            .wait_for(|s| s != last_seen || s.is_terminal())
            .await
            .map(|s| s.clone());
        // The sender lives in `tracked`, which we hold: `wait_for` cannot fail.
        Ok(s.unwrap_or_else(|_| tracked.status.borrow().clone()))
    }

    /// Stops the builds this instance submitted that have not finished.
    async fn stop_all(&self) -> Result<Vec<BuildId>, Error> {
        let live: Vec<BuildId> = {
            let builds = self.inner.builds.lock();
            let mut ids: Vec<BuildId> = builds
                .iter()
                .filter(|(_, slot)| match slot {
                    Slot::Starting => true,
                    Slot::Tracked(t) => !t.is_terminal() || t.orphaned_on.lock().is_some(),
                })
                .map(|(id, _)| *id)
                .collect();
            ids.extend(self.inner.uncertain.lock().keys().copied());
            ids.sort();
            ids.dedup();
            ids
        };
        executor_base::stop_builds(self, live).await
    }
}
