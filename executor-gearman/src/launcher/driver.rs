//! The driver of one build: starts it on the wrapped executor, follows it to its end
//! through [`Executor::wait_for_change`](executor_base::Executor::wait_for_change) (no
//! polling: the process backend wakes it when the build exits), and records the outcome
//! for the jobs attached to it.
//!
//! While the build runs, right after the start and then every `abandonCheckMs`, the
//! driver asks the Gearman server whether anyone still waits for the job (`GET_STATUS`
//! on the latest job's handle, and `GET_STATUS_UNIQUE`'s client count where the server
//! answers it: gearmand does, `geard` does not). The build is stopped when nobody can
//! ever receive its outcome: the server forgot the job (`geard` drops a job whose client
//! or worker went away), every submitter is gone (gearmand), or, while no job of this
//! launcher is attached, another worker holds the re-queued job (seen twice in a row, so
//! a job this launcher is just taking back is not mistaken for it).
//!
//! At the end: the outcome is recorded (state directory, retention window), reported to
//! the attached jobs, then `stop` on the executor releases what the build holds (for
//! the process backend: its token file) and `stop_timer` disarms its timer.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use executor_base::{ApiBuildStatus, BuildStatus, Error, ErrorKind, StartConfig, TimerConfig};
use tokio::time::Instant;

use super::Launcher;
use super::registry::BuildEntry;
use super::state::{Record, Stage};
use crate::client::{ClientOptions, GearmanClient};
use crate::error::GearmanError;
use crate::gearman_worker::JobSlot;
use crate::zuul::BuildReport;

/// Consecutive failed status reads after which the build is reported `LOST`.
const MAX_STATUS_ERRORS: u32 = 10;

impl Launcher {
    /// Runs the build to its end: `start` it (unless it is adopted, `start: None`), follow
    /// it, report. Holds `slot` all along.
    pub(super) async fn drive(
        self: Arc<Self>,
        entry: Arc<BuildEntry>,
        start: Option<StartConfig>,
        slot: Option<JobSlot>,
    ) {
        let _slot = slot;
        if let Some(start) = start {
            if let Err(e) = self.executor.start(&start).await {
                tracing::warn!(build_id = %start.build_id, error = %e, "wrapped executor refused the build");
                let mut report = BuildReport::refusal(&e);
                report.name = Some(entry.name.clone());
                report.number = Some(entry.number);
                self.registry.lock().retire(&entry, None);
                self.forget(&entry);
                entry.finish(report);
                return;
            }
            entry.settle(true);
            self.record(&entry, Stage::Running, None).await;
            tracing::info!(build_id = %start.build_id, name = %entry.name, number = entry.number, uuid = %entry.uuid, "build started");
            self.arm_timer(&start).await;
        }
        if entry.stop_requested() {
            self.stop_quietly(&entry).await;
        }
        let status = self.follow(&entry).await;
        let mut report = BuildReport::from_status(&status, entry.stop_requested());
        report.name = Some(entry.name.clone());
        report.number = Some(entry.number);
        tracing::info!(build_id = %entry.stop.build_id, result = %report.result, %status, "build finished");
        self.record(&entry, Stage::Finished, Some(&report)).await;
        self.registry.lock().retire(&entry, Some(report.clone()));
        entry.finish(report);
        // Release what the build holds on the engine (containers, pods, token files).
        self.stop_quietly(&entry).await;
        if let Err(e) = self.executor.stop_timer(&entry.stop).await {
            tracing::warn!(build_id = %entry.stop.build_id, error = %e, "cannot disarm the build's timer");
        }
    }

    /// Waits for the build's terminal status; stops it when nobody waits for it any
    /// more or the drain timeout passed.
    async fn follow(&self, entry: &BuildEntry) -> BuildStatus {
        let executor = self.executor.clone();
        let stop = entry.stop.clone();
        let wait = move |last: BuildStatus| {
            let (executor, stop) = (executor.clone(), stop.clone());
            async move {
                let r = executor.wait_for_change(&stop, &last).await;
                (r, last)
            }
        };
        let mut pending = Box::pin(wait(BuildStatus::pending("not read yet")));
        let mut errors = 0;
        let mut aborted = false;
        let mut held_elsewhere = 0;
        let every = self.cfg.abandon_check.unwrap_or(Duration::from_secs(3600));
        // The first check comes right after the start: a submitter that withdrew while
        // the job was being grabbed is noticed at once, not a whole period later.
        let mut check = tokio::time::interval_at(Instant::now(), every);
        loop {
            tokio::select! {
                (r, last) = &mut pending => {
                    let next = match r {
                        Ok(s) if s.is_terminal() => return s,
                        Ok(s) => {
                            errors = 0;
                            s
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            return BuildStatus::lost(Some(true), "the executor no longer knows the build");
                        }
                        Err(e) => {
                            errors += 1;
                            tracing::warn!(build_id = %entry.stop.build_id, error = %e, errors, "status read failed");
                            if errors >= MAX_STATUS_ERRORS {
                                return BuildStatus::lost(Some(true), format!("status unavailable: {e}"));
                            }
                            tokio::time::sleep(Duration::from_millis(100) * errors).await;
                            last
                        }
                    };
                    pending = Box::pin(wait(next));
                }
                _ = check.tick(), if self.cfg.abandon_check.is_some() && !aborted => {
                    let attached = entry.attached() > 0;
                    match self.job_state(&entry.handle(), &entry.uuid).await {
                        JobState::Gone(why) => {
                            tracing::warn!(build_id = %entry.stop.build_id, "{why}: nobody can receive the outcome; stopping the build");
                            aborted = true;
                        }
                        JobState::Held if !attached => {
                            held_elsewhere += 1;
                            if held_elsewhere >= 2 {
                                tracing::warn!(build_id = %entry.stop.build_id, "another worker runs the re-queued job: stopping this build");
                                aborted = true;
                            }
                        }
                        _ => held_elsewhere = 0,
                    }
                    if aborted {
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
        }
    }

    /// Whether nobody can receive the outcome of the job (`handle`, `unique`): see
    /// [`Launcher::job_state`]. With `attached`, a job held by a worker is ours.
    /// Unknown answers count as "someone waits".
    pub(super) async fn nobody_waits(&self, handle: &str, unique: &str, attached: bool) -> bool {
        if self.cfg.abandon_check.is_none() {
            return false;
        }
        match self.job_state(handle, unique).await {
            JobState::Gone(_) => true,
            JobState::Held => !attached,
            JobState::Queued | JobState::Unknown => false,
        }
    }

    /// The job's state on the Gearman server (see the module docs).
    pub(super) async fn job_state(&self, handle: &str, unique: &str) -> JobState {
        let watcher = self.watcher.get_or_init(|| {
            GearmanClient::lazy(
                &self.cfg.raw.server,
                ClientOptions {
                    connect_timeout: self.cfg.connect_timeout,
                    max_packet_size: self.cfg.raw.max_packet_size,
                    exceptions: false,
                    ..ClientOptions::default()
                },
            )
        });
        let ask_unique = !unique.is_empty()
            && !self
                .unique_unanswered
                .load(std::sync::atomic::Ordering::Relaxed);
        // Sent in this order: a server that skips GET_STATUS_UNIQUE answers GET_STATUS
        // first, which tells the client so at once (no timeout).
        let (by_unique, by_handle) = tokio::join!(
            async {
                if ask_unique {
                    Some(watcher.status_unique(unique).await)
                } else {
                    None
                }
            },
            watcher.status(handle)
        );
        if let Some(Err(GearmanError::Unanswered(_))) = &by_unique {
            tracing::info!(
                "the Gearman server does not answer GET_STATUS_UNIQUE: checking jobs by handle only"
            );
            self.unique_unanswered
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let job = match by_handle {
            Ok(j) => j,
            Err(e) => {
                tracing::debug!(error = %e, "job check failed");
                return JobState::Unknown;
            }
        };
        if !job.known {
            return JobState::Gone(format!("the Gearman server no longer knows job {handle}"));
        }
        if let Some(Ok(u)) = by_unique
            && u.known
            && u.clients == 0
        {
            return JobState::Gone(format!("every submitter of job {handle} is gone"));
        }
        if job.running {
            JobState::Held
        } else {
            JobState::Queued
        }
    }

    /// Arms the wrapped executor's timer for the started build (`sdx gearman-worker`
    /// wraps its backends in a router with a timer service, which stops the build at its
    /// timeout; the status then reads `TimedOut` and the job ends `TIMED_OUT`). A build
    /// without a `jobId` (a plain Zuul job) has no timer to arm: its own `launch` and the
    /// engine's backstop enforce the timeout.
    async fn arm_timer(&self, start: &StartConfig) {
        let Some(job_id) = start.job_id else {
            tracing::debug!(build_id = %start.build_id, "no jobId: no launcher-side timer");
            return;
        };
        let timer = TimerConfig::new(
            start.build_id,
            job_id,
            ApiBuildStatus::Running,
            Utc::now(),
            start.annotations.clone(),
        );
        if let Err(e) = self.executor.start_timer(&timer).await {
            tracing::warn!(build_id = %start.build_id, error = %e, "cannot arm the build's timer");
        }
    }

    /// Stops the build on the executor, logging a failure.
    pub(super) async fn stop_quietly(&self, entry: &BuildEntry) {
        if let Err(e) = self.executor.stop(&entry.stop).await {
            tracing::warn!(build_id = %entry.stop.build_id, error = %e, "stop failed");
        }
    }

    /// Writes the build's record to the state directory, if there is one, on a blocking
    /// thread (file I/O, which a runtime thread must not wait for), and returns once it
    /// is written.
    pub(super) async fn record(
        &self,
        entry: &BuildEntry,
        stage: Stage,
        report: Option<&BuildReport>,
    ) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let began = chrono::Duration::from_std(entry.began.elapsed()).unwrap_or_default();
        let r = Record {
            uuid: entry.uuid.clone(),
            name: entry.name.clone(),
            number: entry.number,
            function: entry.function.clone(),
            handle: entry.handle(),
            stop: Record::stop_value(&entry.stop),
            timeout_secs: entry.timeout_secs,
            started_at: Utc::now() - began,
            stage,
            report: report.cloned(),
            finished_at: report.map(|_| Utc::now()),
        };
        let number = entry.number;
        let saved = tokio::task::spawn_blocking(move || state.save(&r))
            .await
            .unwrap_or_else(|e| Err(Error::new(ErrorKind::Unexpected, e.to_string())));
        if let Err(e) = saved {
            tracing::warn!(number, error = %e, "cannot record the build");
        }
    }

    /// Removes the build's record.
    pub(super) fn forget(&self, entry: &BuildEntry) {
        if let Some(state) = &self.state {
            state.remove(entry.number);
        }
    }
}

/// What the Gearman server says about a job.
#[derive(Debug)]
pub(super) enum JobState {
    /// Nobody can receive its outcome any more (why).
    Gone(String),
    /// A worker holds it.
    Held,
    /// It waits in the queue (re-queued after its worker's connection dropped).
    Queued,
    /// The server could not be asked.
    Unknown,
}
