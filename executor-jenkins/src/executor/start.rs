//! `start`: render the job, create it (or update a finished one of ours), then
//! `buildWithParameters`, which is never blindly repeated.

use std::collections::HashSet;

use chrono::Utc;
use executor_base::engine::Idempotency::{Idempotent, NotIdempotent};
use executor_base::{BuildId, Error, ErrorKind, StartConfig, StopConfig};
use parking_lot::Mutex;

use super::{JenkinsExecutor, Tracked};
use crate::client::{Body, Created};
use crate::job::DescribedJob;

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
    /// `buildWithParameters`, never blindly repeated: after an answer that leaves the
    /// outcome open, Jenkins is asked whether the build was queued before any retry.
    async fn trigger(&self, name: &str, form: &Body, before: u64) -> Result<Tracked, TriggerError> {
        let policy = self.calls.retry_policy().clone();
        let budget = self.calls.retry_budget();
        let began = tokio::time::Instant::now();
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
                        queue_id: Some(queue_id),
                        before,
                        accepted: Some(chrono::Utc::now()),
                        ..Tracked::default()
                    });
                }
                Err(e) if ambiguous(&e) => e,
                Err(e) => return Err(TriggerError::Refused(e)),
            };
            tracing::warn!(job = name, error = %err, "buildWithParameters outcome unknown; asking Jenkins before any retry");
            // Give a request still in flight on Jenkins' side time to land before looking
            // (within the retry budget: past it, look at once and answer).
            if let Some(d) = policy.delay(attempt, None) {
                let left = budget.map_or(d, |b| b.saturating_sub(began.elapsed()));
                tokio::time::sleep(d.min(left)).await;
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
                        accepted: Some(chrono::Utc::now()),
                        ..Tracked::default()
                    });
                }
                Some(j) if j.last_number() > before => {
                    return Ok(Tracked {
                        number: Some(j.last_number()),
                        before,
                        accepted: Some(chrono::Utc::now()),
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
            if attempt >= policy.max_retries || budget.is_some_and(|b| began.elapsed() >= b) {
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

    pub(super) async fn do_start(&self, build: &StartConfig) -> Result<(), Error> {
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
            let s = self.do_status(&StopConfig::new(id)).await?;
            if !s.is_terminal() {
                return Err(already());
            }
        }

        // Jenkins could not be asked for its plugins when the executor was built.
        self.recheck_plugins().await?;

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
                t.job_timeout_minutes = Some(job.job_timeout_minutes);
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
}
