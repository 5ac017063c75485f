//! `status`: the queue item, then the build it became, read as a [`BuildStatus`]; a
//! final status is remembered and costs no more requests.

use executor_base::engine::Idempotency::Idempotent;
use executor_base::{BuildStatus, Error, StopConfig};

use super::{JenkinsExecutor, Tracked};
use crate::SCHEME;
use crate::mapping::{from_build, from_queue, lost};

impl JenkinsExecutor {
    pub(super) async fn do_status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
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
