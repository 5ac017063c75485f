//! `stop`: cancel the queue item, or stop the build it became.

use executor_base::engine::Idempotency::Idempotent;
use executor_base::{Error, StopConfig};

use super::JenkinsExecutor;

impl JenkinsExecutor {
    pub(super) async fn do_stop(&self, build: &StopConfig) -> Result<(), Error> {
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
}
