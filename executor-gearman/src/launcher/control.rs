//! `stop:<manager>` and `set_description:<manager>` jobs.
//!
//! `stop:` with `{name, number}` stops that build on the wrapped executor and completes
//! with `{"name", "number", "stopped": true}` (with `{uuid}`, the build of that
//! `ZUUL_UUID`, answered `{"uuid", "stopped"}`: see [`crate::zuul::StopTarget`]); the build's own job then ends with
//! `WORK_DATA {"result": "ABORTED"}` and `WORK_FAIL`. Stopping a build this worker does
//! not run (finished, never started, another attempt) completes with `"stopped": false`:
//! stop is idempotent. A stop that arrives while the build is still starting waits for
//! the start to return, then stops it.
//!
//! `set_description:` records the HTML description (see
//! [`super::LauncherWorker::description`]) and completes.

use std::sync::Arc;

use executor_base::{Error, ErrorKind};
use serde_json::json;

use super::Launcher;
use super::build::send_exception;
use crate::gearman_worker::Job;
use crate::zuul::{StopTarget, parse_description, parse_stop_target};

impl Launcher {
    pub(super) async fn run_control(self: Arc<Self>, job: Job) {
        let outcome = if job.function == self.cfg.stop_function {
            self.stop_build(&job).await
        } else if job.function == self.cfg.description_function {
            self.describe(&job)
        } else {
            Err(Error::new(
                ErrorKind::Unsupported,
                format!("this worker does not do {:?}", job.function),
            ))
        };
        let sent = match outcome {
            Ok(answer) => job.sink.complete(answer.to_string()),
            Err(e) => {
                send_exception(&job.sink, &e);
                Ok(())
            }
        };
        if let Err(e) = sent {
            tracing::warn!(function = %job.function, error = %e, "could not answer a control job");
        }
    }

    async fn stop_build(&self, job: &Job) -> Result<serde_json::Value, Error> {
        let target = parse_stop_target(&job.data)?;
        let (entry, mut answer) = match &target {
            StopTarget::Build(b) => (
                self.registry.lock().get(&b.name, b.number),
                json!({"name": b.name, "number": b.number}),
            ),
            StopTarget::Uuid { uuid } => (
                self.registry.lock().get_by_uuid(uuid),
                json!({"uuid": uuid}),
            ),
        };
        let Some(entry) = entry else {
            answer["stopped"] = false.into();
            answer["message"] = "no such running build on this launcher".into();
            return Ok(answer);
        };
        tracing::info!(name = %entry.name, number = entry.number, build_id = %entry.stop.build_id, "stop requested");
        entry.request_stop();
        // A build still starting is stopped once its start returns; its driver sees the
        // end through the executor and reports `ABORTED`.
        if entry.wait_started().await {
            self.executor.stop(&entry.stop).await?;
        }
        answer["stopped"] = true.into();
        Ok(answer)
    }

    fn describe(&self, job: &Job) -> Result<serde_json::Value, Error> {
        let d = parse_description(&job.data)?;
        tracing::info!(name = %d.name, number = d.number, "build description set");
        let answer = json!({"name": d.name, "number": d.number, "recorded": true});
        self.record_description(d.name, d.number, d.html_description);
        Ok(answer)
    }
}
