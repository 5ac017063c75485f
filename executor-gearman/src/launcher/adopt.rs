//! Taking over from the previous incarnation (a worker restarted on the same `stateDir`,
//! also after `kill -9`), before any job is grabbed.
//!
//! For each recorded build:
//!
//! - **finished**: its outcome is kept for the rest of the retention window, so a job
//!   of that `ZUUL_UUID` that gearmand re-queues gets it instead of a second run;
//! - **unknown to the executor**: its start never completed; the record is dropped;
//! - **ended while no worker ran**: its outcome is recorded and the executor releases
//!   what the build held (its token file, for the process backend);
//! - **running, and its job is gone from the Gearman server** (`geard` fails a dead
//!   worker's jobs; the submitter left): nobody can receive its outcome, so it is
//!   stopped now;
//! - **running, and its job is still known** (gearmand re-queued it): adopted. Its
//!   driver follows it; the re-queued job, when grabbed, is attached to it and reports
//!   its outcome. If another worker takes that job instead, the driver's checks stop
//!   this build.
//!
//! Adopted builds take worker slots (beyond `maxBuilds` if they must: they run anyway).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use executor_base::ErrorKind;
use tokio::time::Instant;

use super::Launcher;
use super::driver::JobState;
use super::registry::{BuildEntry, Finished, NewBuild};
use super::state::{Record, Stage};
use crate::gearman_worker::JobSlot;
use crate::zuul::BuildReport;

impl Launcher {
    /// Handles every recorded build (see the module docs); returns how many were adopted.
    pub(super) async fn adopt(self: &Arc<Self>, take_slot: impl Fn() -> Option<JobSlot>) -> usize {
        let Some(state) = &self.state else { return 0 };
        let mut adopted = 0;
        for rec in state.load_all() {
            match rec.stage {
                Stage::Finished => self.keep_outcome(rec),
                Stage::Starting | Stage::Running => {
                    if self.take_over(rec, &take_slot).await {
                        adopted += 1;
                    }
                }
            }
        }
        adopted
    }

    fn keep_outcome(&self, rec: Record) {
        let age = rec
            .finished_at
            .and_then(|at| (Utc::now() - at).to_std().ok())
            .unwrap_or(Duration::MAX);
        let stop = rec.stop_config();
        match (rec.report, stop) {
            (Some(report), Ok(stop)) if age < self.cfg.retain_finished => {
                let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                let f = Finished {
                    name: rec.name,
                    number: rec.number,
                    build_id: stop.build_id,
                    report,
                    at,
                };
                self.registry.lock().remember(&rec.uuid, f);
            }
            _ => self.forget_number(rec.number),
        }
    }

    /// Adopts or stops a build recorded as starting or running; whether it was adopted.
    async fn take_over(
        self: &Arc<Self>,
        rec: Record,
        take_slot: &impl Fn() -> Option<JobSlot>,
    ) -> bool {
        let stop = match rec.stop_config() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(number = rec.number, error = %e, "unreadable build record: dropped");
                self.forget_number(rec.number);
                return false;
            }
        };
        let entry = Arc::new(BuildEntry::new(
            NewBuild {
                name: rec.name.clone(),
                number: rec.number,
                uuid: rec.uuid.clone(),
                function: rec.function.clone(),
                node: rec.function.splitn(3, ':').nth(2).map(str::to_string),
                stop,
                url: None,
                timeout_secs: rec.timeout_secs,
                handle: rec.handle.clone(),
            },
            Some(true),
        ));
        match self.executor.status(&entry.stop).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::info!(number = rec.number, uuid = %rec.uuid, "a recorded build the executor does not know (never started): dropped");
                self.forget_number(rec.number);
                return false;
            }
            Ok(s) if s.is_terminal() => {
                let mut report = BuildReport::from_status(&s, false);
                report.name = Some(rec.name.clone());
                report.number = Some(rec.number);
                tracing::info!(number = rec.number, uuid = %rec.uuid, result = %report.result, "the previous worker's build ended meanwhile");
                self.record(&entry, Stage::Finished, Some(&report)).await;
                self.registry.lock().retire(&entry, Some(report));
                self.stop_quietly(&entry).await;
                return false;
            }
            // Running, or the executor cannot tell now: the driver will follow it.
            _ => {}
        }
        if let JobState::Gone(why) = self.job_state(&rec.handle, &rec.uuid).await {
            tracing::warn!(number = rec.number, uuid = %rec.uuid, "{why}: stopping the previous worker's build");
            entry.request_stop();
            self.stop_quietly(&entry).await;
        } else {
            tracing::info!(number = rec.number, uuid = %rec.uuid, handle = %rec.handle, "adopted the previous worker's build; waiting for its re-queued job");
        }
        self.registry.lock().insert(entry.clone());
        let slot = take_slot();
        tokio::spawn(self.clone().drive(entry.clone(), None, slot));
        !entry.stop_requested()
    }

    /// Removes build `number`'s record.
    pub(super) fn forget_number(&self, number: u64) {
        if let Some(state) = &self.state {
            state.remove(number);
        }
    }
}
