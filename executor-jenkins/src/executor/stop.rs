//! `stop`: cancel the queue item, or stop the build it became.
//!
//! core `Queue.doCancelItem` answers 204 only for an item still in the queue. For an item
//! that already left it (a `LeftItem`, kept 5 minutes) it answers 500 "Could not cancel
//! run", without the Cancel permission 422, for an unknown id 404, and cores before
//! ≈2.212 always 302. None of these is retried: the queue item says what happened, and the
//! build it became is stopped. Jenkins stops a build asynchronously (`Executor.interrupt`):
//! after `stop` the build reads `Running` ("being stopped") until Jenkins has aborted it,
//! then `Canceled`.

use executor_base::engine::CallClass::Stop;
use executor_base::engine::Idempotency::Idempotent;
use executor_base::{Error, ErrorKind, StopConfig};

use super::JenkinsExecutor;
use crate::SCHEME;
use crate::client::Cancel;

impl JenkinsExecutor {
    pub(super) async fn do_stop(&self, build: &StopConfig) -> Result<(), Error> {
        let id = build.build_id;
        let name = self.job.job_name(id);
        let name = name.as_str();
        let tag = |e: Error| e.with_executor(SCHEME).with_operation("stop");
        let t = self.tracked(id);
        if t.as_ref().is_some_and(|t| t.terminal.is_some()) {
            return Ok(());
        }
        let t = t.unwrap_or_default();
        let mut number = t.number;
        let mut queue = if number.is_none() { t.queue_id } else { None };
        if number.is_none() && queue.is_none() {
            match self.get_job_in(Stop, name).await.map_err(tag)? {
                None => return Ok(()),
                Some(j) if j.in_queue => queue = j.queue_item.map(|q| q.id),
                Some(j) => number = j.last_build.filter(|b| b.building).map(|b| b.number),
            }
        }
        if let Some(q) = queue {
            let cancel = self
                .engine("cancel queue item", Idempotent, || {
                    self.client.cancel_queue_item(q)
                })
                .await
                .map_err(tag)?;
            if let Cancel::NotCancelled { status, detail } = cancel {
                number = self
                    .build_of_item(name, q, t.before, status, &detail)
                    .await
                    .map_err(tag)?;
            }
        }
        if let Some(n) = number {
            self.engine("stop build", Idempotent, || self.client.stop_build(name, n))
                .await
                .map_err(tag)?;
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

    /// After Jenkins did not cancel queue item `q` (answer `status`): the build it became,
    /// if any. An item that left the queue without a build yet is read again (with the
    /// retry policy's backoff) until its build exists; an item still waiting means the
    /// cancel was refused, which is an error naming Jenkins' status.
    async fn build_of_item(
        &self,
        name: &str,
        q: u64,
        before: u64,
        status: u16,
        detail: &str,
    ) -> Result<Option<u64>, Error> {
        let policy = self.calls.retry_policy().clone();
        let budget = self.calls.retry_budget();
        let began = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            let item = self
                .engine_in(Stop, "get queue item", Idempotent, || {
                    self.client.queue_item(q)
                })
                .await?;
            match item {
                // Forgotten (5 minutes after it left): the job knows the build.
                None => {
                    return Ok(self
                        .get_job_in(Stop, name)
                        .await?
                        .and_then(|j| j.last_build)
                        .filter(|b| b.building && b.number > before)
                        .map(|b| b.number));
                }
                Some(i) if i.cancelled == Some(true) => return Ok(None),
                Some(i) if i.executable.is_some() => return Ok(i.executable.map(|e| e.number)),
                // Left for an executor, whose thread has not created the build yet.
                Some(i) if i.has_left() => {}
                Some(_) => return Err(cancel_refused(q, status, detail)),
            }
            let Some(delay) = policy.delay(attempt, None).filter(|d| {
                attempt < policy.max_retries && budget.is_none_or(|b| began.elapsed() + *d <= b)
            }) else {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!(
                        "queue item {q} of {name} left the queue but its build does not exist yet; stop again"
                    ),
                )
                .temporary());
            };
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Jenkins answered `status` to `cancelItem` and the item is still in the queue.
fn cancel_refused(q: u64, status: u16, detail: &str) -> Error {
    let e = if status == 422 {
        Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "Jenkins refused to cancel queue item {q} (422: the user lacks the Job/Cancel permission): {detail}"
            ),
        )
    } else {
        let e = Error::new(
            ErrorKind::Unexpected,
            format!("Jenkins did not cancel queue item {q} ({status}): {detail}"),
        );
        if status >= 500 { e.temporary() } else { e }
    };
    e.with_status(status).with_executor(SCHEME)
}
