//! The life of one `build:` job on the launcher.
//!
//! 1. Validate the arguments ([`ZuulParams`] and the Screwdriver start fields) into a
//!    [`StartConfig`]; a bad one ends the job with `WORK_EXCEPTION` naming every bad
//!    parameter.
//! 2. If every submitter of the job is gone already (a withdrawn job taken in the same
//!    instant), end it with `WORK_FAIL` without starting anything.
//! 3. Announce it at once: `WORK_DATA` {name, number, manager, url, worker_*} with
//!    `worker_extra.starting = true`, so a stop can reach it while it starts.
//! 4. Start the build on the wrapped executor (a refused start ends the job with
//!    `WORK_EXCEPTION` carrying the error), arm its timer there (`start_timer`, when the
//!    build has a `jobId`), then `WORK_STATUS` 0/timeout: running.
//! 5. Poll the executor's status every `pollIntervalMs` (at once when a stop arrives),
//!    sending `WORK_STATUS` elapsed/timeout seconds; right after the start and then every
//!    `abandonCheckMs` check that someone still waits for the job (`GET_STATUS_UNIQUE`
//!    client count), else stop it.
//! 6. Report: `WORK_DATA` {result, ...} then `WORK_COMPLETE` for `SUCCESS`, `WORK_FAIL`
//!    otherwise; then `stop` on the executor to release the build's resources, and
//!    `stop_timer` (on every way out of the job).
//!
//! If the connection that grabbed the job breaks, gearmand re-queues the job and this
//! attempt can no longer report: the runner stops the build and leaves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use executor_base::{
    ApiBuildStatus, BuildStatus, Error, ErrorKind, FieldError, StartConfig, TimeoutPolicy,
    TimerConfig,
};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{BuildEntry, Launcher};
use crate::worker::{Job, JobSink};
use crate::zuul::{BuildReport, LauncherException, StartAnnouncement, ZuulParams};

/// Consecutive failed status polls after which the build is reported `LOST`.
const MAX_STATUS_ERRORS: u32 = 10;

/// The worker program's name in the start announcement.
const PROGRAM: &str = "sdx-gearman-worker";

/// A validated `build:` job.
struct Prepared {
    name: String,
    node: Option<String>,
    number: u64,
    start: StartConfig,
    params: ZuulParams,
    timeout_secs: u64,
}

/// Ends a job with `WORK_EXCEPTION` describing `e`.
pub(super) fn send_exception(sink: &JobSink, e: &Error) {
    let data = serde_json::to_vec(&LauncherException::from(e)).unwrap_or_default();
    if let Err(err) = sink.exception(data) {
        tracing::warn!(error = %err, "could not report a launcher error to gearmand");
    }
}

impl Launcher {
    pub(super) async fn run_build(self: Arc<Self>, job: Job) {
        let sink = job.sink.clone();
        let p = match self.prepare(&job) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(handle = %job.handle, function = %job.function, error = %e, "refused build job");
                send_exception(&sink, &e);
                return;
            }
        };
        if self.abandoned(&job.unique).await {
            // The submitter withdrew the job as we took it: nobody would see the build.
            tracing::info!(handle = %job.handle, "the job's submitter is gone: not starting the build");
            let _ = sink.fail();
            return;
        }
        if p.params.offline_node_when_complete {
            // No further builds on this node; it goes offline once the running ones end.
            self.offline.cancel();
        }
        let key = (p.name.clone(), p.number);
        let entry = Arc::new(BuildEntry::new(p.start.to_stop()));
        self.registry.lock().insert(key.clone(), entry.clone());
        self.run_prepared(&job, &sink, &p, &entry).await;
        // Whatever ended the job (report, stop, lost connection), its timer goes with it.
        if let Err(e) = self.executor.stop_timer(&entry.stop).await {
            tracing::warn!(build_id = %entry.stop.build_id, error = %e, "cannot disarm the build's timer");
        }
        entry.settle(false); // releases stop handlers waiting on a start that never came
        self.registry.lock().remove(&key);
    }

    async fn run_prepared(&self, job: &Job, sink: &JobSink, p: &Prepared, entry: &BuildEntry) {
        let build_id = p.start.build_id;
        // Announce at once (Zuul: "immediately"), marked as starting, so the submitter
        // can reach this build with `stop:<manager>` while the executor starts it.
        let announced = serde_json::to_vec(&self.announcement(job, p))
            .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))
            .and_then(|data| sink.data(data).map_err(Error::from));
        if announced.is_err() {
            return; // the connection is gone and nothing was started
        }
        if let Err(e) = self.executor.start(&p.start).await {
            tracing::warn!(%build_id, error = %e, "wrapped executor refused the build");
            send_exception(sink, &e);
            return;
        }
        entry.settle(true);
        tracing::info!(%build_id, name = %p.name, number = p.number, handle = %job.handle, "build started");
        self.arm_timer(p).await;
        if entry.stop_requested() {
            self.stop_quietly(entry).await;
        }
        if sink.status(0, p.timeout_secs).is_err() || sink.is_connection_lost() {
            return self
                .abandon(entry, "gearman connection lost mid-build")
                .await;
        }

        let started = Instant::now();
        let mut last_progress = 0;
        let mut errors = 0;
        let mut aborted = false;
        let check_every = self.cfg.abandon_check.unwrap_or(Duration::from_secs(3600));
        // The first check comes right after the start: a submitter that withdrew while the
        // job was being grabbed (its stop saw it still queued) is noticed at once, not a
        // whole period later.
        let mut abandon_check = tokio::time::interval_at(started, check_every);
        let status = loop {
            match self.executor.status(&entry.stop).await {
                Ok(s) if s.is_terminal() => break s,
                Ok(_) => errors = 0,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    break BuildStatus::lost(Some(true), "the executor no longer knows the build");
                }
                Err(e) => {
                    errors += 1;
                    tracing::warn!(%build_id, error = %e, errors, "status poll failed");
                    if errors >= MAX_STATUS_ERRORS {
                        break BuildStatus::lost(Some(true), format!("status unavailable: {e}"));
                    }
                }
            }
            let progress = started.elapsed().as_secs().min(p.timeout_secs);
            if progress != last_progress {
                last_progress = progress;
                let _ = sink.status(progress, p.timeout_secs);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = entry.wake.notified() => {}
                _ = sink.connection_lost() => {
                    return self.abandon(entry, "gearman connection lost mid-build").await;
                }
                _ = abandon_check.tick(), if self.cfg.abandon_check.is_some() && !aborted => {
                    if self.abandoned(&job.unique).await {
                        aborted = true;
                        tracing::warn!(%build_id, "nobody waits for the build's outcome any more: stopping it");
                        entry.request_stop();
                        self.stop_quietly(entry).await;
                    }
                }
                _ = self.abort.cancelled(), if !aborted => {
                    aborted = true;
                    entry.request_stop();
                    self.stop_quietly(entry).await;
                }
            }
        };

        let mut report = BuildReport::from_status(&status, entry.stop_requested());
        report.name = Some(p.name.clone());
        report.number = Some(p.number);
        tracing::info!(%build_id, result = %report.result, status = %status, "build finished");
        let data = Bytes::from(serde_json::to_vec(&report).unwrap_or_default());
        let sent = sink.data(data.clone()).and_then(|()| {
            if report.result == crate::zuul::RESULT_SUCCESS {
                sink.complete(data)
            } else {
                sink.fail()
            }
        });
        if let Err(e) = sent {
            tracing::warn!(%build_id, error = %e, "could not report the result; gearmand re-queues the job");
        }
        // Release what the build holds on the engine (containers, pods, volumes).
        self.stop_quietly(entry).await;
    }

    /// Arms the wrapped executor's timer for the started build (`sdx gearman-worker` wraps
    /// its backends in a router with a timer service, which stops the build at its
    /// timeout; the status then reads `TimedOut` and the job ends `TIMED_OUT`). A build
    /// without a `jobId` (a plain Zuul job) has no timer to arm: its own `launch` and the
    /// engine's backstop enforce the timeout.
    async fn arm_timer(&self, p: &Prepared) {
        let Some(job_id) = p.start.job_id else {
            tracing::debug!(build_id = %p.start.build_id, "no jobId: no launcher-side timer");
            return;
        };
        let timer = TimerConfig::new(
            p.start.build_id,
            job_id,
            ApiBuildStatus::Running,
            Utc::now(),
            p.start.annotations.clone(),
        );
        if let Err(e) = self.executor.start_timer(&timer).await {
            tracing::warn!(build_id = %p.start.build_id, error = %e, "cannot arm the build's timer");
        }
    }

    /// This attempt can never report (its connection broke: gearmand re-queued the job),
    /// so stop it rather than run the build twice.
    async fn abandon(&self, entry: &BuildEntry, why: &str) {
        tracing::warn!(build_id = %entry.stop.build_id, "{why}: stopping the build");
        entry.request_stop();
        self.stop_quietly(entry).await;
    }

    async fn stop_quietly(&self, entry: &BuildEntry) {
        if let Err(e) = self.executor.stop(&entry.stop).await {
            tracing::warn!(build_id = %entry.stop.build_id, error = %e, "stop failed");
        }
        entry.wake.notify_one();
    }

    /// Validates the job and builds the start config.
    fn prepare(&self, job: &Job) -> Result<Prepared, Error> {
        let rest = job.function.strip_prefix("build:").ok_or_else(|| {
            Error::invalid_field(
                "(function)",
                format!("{:?} is not a build: function", job.function),
            )
        })?;
        let (name, node) = match rest.split_once(':') {
            Some((n, node)) => (n.to_string(), Some(node.to_string())),
            None => (rest.to_string(), None),
        };
        let args: Value = serde_json::from_slice(&job.data).map_err(|e| {
            Error::invalid_field("(arguments)", format!("must be a JSON object ({e})"))
        })?;
        let Value::Object(mut map) = args else {
            return Err(Error::invalid_field("(arguments)", "must be a JSON object"));
        };
        let zuul = ZuulParams::parse(&map, &job.unique);
        let number = self.next_number();
        let mut missing = Vec::new();
        self.fill_defaults(&mut map, number, node.as_deref(), &mut missing);
        let start = StartConfig::from_json(&Value::Object(map));
        // Report every bad parameter at once: Zuul's, the defaults we lacked, Screwdriver's.
        let mut fields: Vec<FieldError> = Vec::new();
        if let Err(e) = &zuul {
            fields.extend(e.field_errors().iter().cloned());
        }
        fields.extend(missing);
        if let Err(e) = &start {
            fields.extend(
                e.field_errors()
                    .iter()
                    .filter(|f| !fields.iter().any(|g| g.field == f.field))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            if e.field_errors().is_empty() {
                fields.push(FieldError::new("(arguments)", e.message()));
            }
        }
        if !fields.is_empty() {
            return Err(Error::invalid(fields));
        }
        let (params, start) = (zuul.expect("checked"), start.expect("checked"));
        let timeout_secs = u64::from(TimeoutPolicy::default().minutes(&start.annotations)) * 60;
        Ok(Prepared {
            name,
            node,
            number,
            start,
            params,
            timeout_secs,
        })
    }

    /// Fills `buildId`, `apiUri`, `container`, `token` and `storeUri` from the worker's
    /// defaults when the arguments lack them; records what neither provides.
    fn fill_defaults(
        &self,
        map: &mut Map<String, Value>,
        number: u64,
        node: Option<&str>,
        missing: &mut Vec<FieldError>,
    ) {
        let raw = &self.cfg.raw;
        let absent = |map: &Map<String, Value>, k: &str| map.get(k).is_none_or(Value::is_null);
        if absent(map, "buildId") {
            map.insert("buildId".into(), number.into());
        }
        let defaults: [(&str, Option<String>, &str); 3] = [
            (
                "apiUri",
                self.cfg.default_api_uri.as_ref().map(|u| u.to_string()),
                "defaultApiUri",
            ),
            (
                "container",
                raw.default_container.clone(),
                "defaultContainer",
            ),
            (
                "token",
                raw.default_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                "defaultToken",
            ),
        ];
        for (key, value, setting) in defaults {
            if absent(map, key) {
                match value {
                    Some(v) => {
                        map.insert(key.into(), Value::String(v));
                    }
                    None => missing.push(FieldError::new(
                        key,
                        format!(
                            "is required (not in the job arguments and the worker has no {setting})"
                        ),
                    )),
                }
            }
        }
        if absent(map, "storeUri")
            && let Some(u) = &self.cfg.default_store_uri
        {
            map.insert("storeUri".into(), Value::String(u.to_string()));
        }
        if let Some(node) = node {
            map.entry("gearmanNode")
                .or_insert_with(|| Value::String(node.to_string()));
        }
    }

    fn announcement(&self, job: &Job, p: &Prepared) -> StartAnnouncement {
        let mut extra = Map::new();
        extra.insert(
            "executor".into(),
            Value::String(self.executor.name().to_string()),
        );
        extra.insert("buildId".into(), p.start.build_id.get().into());
        // Announced before the executor's start returns: not running yet.
        extra.insert("starting".into(), Value::Bool(true));
        if let Some(node) = &p.node {
            extra.insert("node".into(), Value::String(node.clone()));
        }
        StartAnnouncement {
            name: p.name.clone(),
            number: p.number,
            manager: self.cfg.manager.clone(),
            url: self.build_url(p),
            worker_name: Some(self.cfg.worker_name.clone()),
            worker_hostname: Some(self.cfg.hostname.clone()),
            worker_ips: job
                .local_addr
                .map(|a| a.ip().to_string())
                .into_iter()
                .collect(),
            worker_fqdn: Some(self.cfg.hostname.clone()),
            worker_program: Some(PROGRAM.to_string()),
            worker_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            worker_extra: extra,
        }
    }

    fn build_url(&self, p: &Prepared) -> Option<String> {
        let b = &p.start;
        match &self.cfg.raw.build_url {
            Some(t) => Some(
                t.replace("{buildId}", &b.build_id.to_string())
                    .replace("{number}", &p.number.to_string())
                    .replace("{name}", &p.name)
                    .replace("{uuid}", &p.params.uuid)
                    .replace("{manager}", &self.cfg.manager),
            ),
            None => match (&b.ui_uri, b.pipeline_id) {
                (Some(ui), Some(pid)) => Some(format!(
                    "{}/pipelines/{pid}/builds/{}",
                    ui.as_str().trim_end_matches('/'),
                    b.build_id
                )),
                _ => None,
            },
        }
    }
}
