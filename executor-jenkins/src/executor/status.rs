//! `status`: the queue item, then the build it became, read as a [`BuildStatus`]; a
//! final status is remembered and costs no more requests. A running build found past its
//! job timeout is stopped here when the executor enforces that timeout (see
//! [`crate::TimeoutBackstop`]).

use executor_base::engine::Idempotency::Idempotent;
use executor_base::launch_protocol::{LaunchResult, exit_zero_status};
use executor_base::{BuildId, BuildStatus, Error, LaunchMode, Phase, StopConfig};

/// How much of the end of a finished build's console log is searched for the launch
/// handshake (the job script's cleanup lines follow it).
pub(crate) const CONSOLE_TAIL_BYTES: usize = 64 * 1024;

use super::{JenkinsExecutor, Tracked};
use crate::SCHEME;
use crate::api::{BuildInfo, JobInfo};
use crate::job::{DescribedJob, timeout_marker};
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
        let status = match t.number {
            Some(n) if fin => self
                .with_handshake(id, &name, n, status)
                .await
                .map_err(tag)?,
            _ => status,
        };
        self.remember(id, |r| {
            r.queue_id = t.queue_id;
            r.number = t.number.or(r.number);
            r.in_queue_since_ms = t.in_queue_since_ms.or(r.in_queue_since_ms);
            r.started_ms = t.started_ms.or(r.started_ms);
            r.duration_ms = t.duration_ms.or(r.duration_ms);
            r.before = t.before;
            r.job_timeout_minutes = t.job_timeout_minutes.or(r.job_timeout_minutes);
            r.timed_out |= t.timed_out;
            if fin && r.terminal.is_none() {
                r.terminal = Some(status.clone());
            }
        });
        Ok(status)
    }

    /// Native mode: a build Jenkins finished with `SUCCESS` succeeded only when `launch`
    /// wrote the launch handshake for build `id` to the console log (its last
    /// [`CONSOLE_TAIL_BYTES`] are read once, when the build has ended); otherwise it failed
    /// (`launchProtocol`), naming the launcher image, through the shared
    /// [`exit_zero_status`]. A console that is gone (the job was deleted meanwhile) holds
    /// no handshake either.
    async fn with_handshake(
        &self,
        id: BuildId,
        name: &str,
        number: u64,
        status: BuildStatus,
    ) -> Result<BuildStatus, Error> {
        if status.phase != Phase::Succeeded || self.job.launch_mode != LaunchMode::Native {
            return Ok(status);
        }
        let tail = self
            .engine("get console", Idempotent, || {
                self.client.console_tail(name, number, CONSOLE_TAIL_BYTES)
            })
            .await?;
        let found = tail.and_then(|t| LaunchResult::find(&t, id.get()));
        let mut s = exit_zero_status(
            self.job.launch_mode,
            id.get(),
            found.as_ref(),
            &self.job.launcher_image,
        );
        if s.phase == Phase::Failed {
            // Jenkins reports a result, not the script's exit code.
            s.exit_code = None;
            s.message = format!("{name} #{number} ended SUCCESS, but {}", s.message);
        }
        Ok(s)
    }

    /// The status of build `b`; when it runs past its job timeout and the executor
    /// enforces that timeout, the build is stopped first. Returns whether it is final.
    async fn read_build(
        &self,
        name: &str,
        b: &BuildInfo,
        t: &mut Tracked,
    ) -> Result<(BuildStatus, bool), Error> {
        t.saw_build(b);
        if !t.timed_out
            && !t.stopped
            && self
                .enforce_job_timeout(name, b, t.job_timeout_minutes)
                .await?
        {
            t.timed_out = true;
        }
        Ok((build_status(name, b, t), !b.building))
    }

    /// Remembers what a job read says about the job's own timeout.
    fn learn_from_job(t: &mut Tracked, j: &JobInfo) {
        if t.job_timeout_minutes.is_none() {
            t.job_timeout_minutes =
                DescribedJob::parse(j.description.as_deref().unwrap_or("")).job_timeout_minutes;
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
            let item = self
                .engine("get queue item", Idempotent, || self.client.queue_item(q))
                .await?;
            if let Some(item) = &item {
                t.saw_queue_item(item);
            }
            match item {
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
                // Jenkins forgets items 5 minutes after they left the queue.
                None => t.queue_id = None,
            }
        }
        if let Some(n) = t.number {
            return match self
                .engine("get build", Idempotent, || self.client.build(name, n))
                .await?
            {
                Some(b) => self.read_build(name, &b, t).await,
                None if t.stopped => Ok((BuildStatus::canceled(), true)),
                None => Ok((
                    lost(name, Some(true), "the job or its build was deleted"),
                    true,
                )),
            };
        }
        match self.get_job(name).await? {
            None if t.stopped => Ok((BuildStatus::canceled(), true)),
            None => Ok((lost(name, None, "the job was deleted"), true)),
            Some(j) => {
                Self::learn_from_job(t, &j);
                match &j.last_build {
                    Some(b) if b.number > t.before => {
                        t.number = Some(b.number);
                        self.read_build(name, b, t).await
                    }
                    _ if j.in_queue => {
                        t.queue_id = j.queue_item.as_ref().map(|q| q.id);
                        if let Some(q) = &j.queue_item {
                            t.saw_queue_item(q);
                        }
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
                }
            }
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
        Self::learn_from_job(t, &j);
        if j.in_queue {
            t.queue_id = j.queue_item.as_ref().map(|q| q.id);
            if let Some(q) = &j.queue_item {
                t.saw_queue_item(q);
            }
            t.before = j.last_number();
            let s = j.queue_item.as_ref().and_then(|q| from_queue(name, q));
            return Ok(Some((
                s.unwrap_or_else(|| BuildStatus::pending(format!("{name} is queued"))),
                false,
            )));
        }
        match &j.last_build {
            Some(b) => {
                t.number = Some(b.number);
                self.read_build(name, b, t).await.map(Some)
            }
            None => Ok(Some((
                lost(name, Some(false), "the job has no queued or started build"),
                true,
            ))),
        }
    }
}

/// Build `b` as a status, with what this executor did to it: a build it stopped for its
/// job timeout reads as being stopped, then as timed out (also when Jenkins refused the
/// marker description, so only this executor knows).
fn build_status(name: &str, b: &BuildInfo, t: &Tracked) -> BuildStatus {
    let s = from_build(name, b, t.stopped);
    if !t.timed_out {
        return s;
    }
    let minutes = t.job_timeout_minutes.unwrap_or_default();
    match s.phase {
        Phase::Running => {
            let mut s = s;
            s.message = format!(
                "{name} #{} ran past its job timeout of {minutes} minutes and is being stopped",
                b.number
            );
            s
        }
        Phase::Canceled => {
            BuildStatus::timed_out(format!("{name} #{}: {}", b.number, timeout_marker(minutes)))
        }
        _ => s,
    }
}
