//! `gc`: delete our jobs whose expiry passed and whose build is not running; stop our
//! builds running past their job timeout when the executor enforces it.

use chrono::Utc;
use executor_base::engine::Idempotency::Idempotent;
use executor_base::{BuildId, Error, GcReport};

use super::JenkinsExecutor;
use crate::SCHEME;
use crate::job::DescribedJob;
use crate::mapping::{from_build, lost};

impl JenkinsExecutor {
    pub(super) async fn do_gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let tag = |e: Error| e.with_executor(SCHEME).with_operation("gc");
        let jobs = self
            .engine("list jobs", Idempotent, || self.client.jobs())
            .await
            .map_err(tag)?;
        let now = Utc::now();
        let mut expired = Vec::new();
        for j in jobs {
            let Some(name) = j.name.as_deref() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(self.job.job_prefix.as_str()) else {
                continue;
            };
            let described = DescribedJob::parse(j.description.as_deref().unwrap_or(""));
            let running = j.last_build.as_ref().filter(|b| b.building);
            if let Some(b) = running
                && described.managed
                && !dry_run
            {
                // The executor's backstop when Jenkins has no build-timeout plugin.
                if self
                    .enforce_job_timeout(name, b, described.job_timeout_minutes)
                    .await
                    .map_err(tag)?
                    && let Ok(id) = rest.parse::<BuildId>()
                {
                    self.remember(id, |t| {
                        t.timed_out = true;
                        t.job_timeout_minutes = described.job_timeout_minutes;
                    });
                }
            }
            if running.is_some() || !described.expired(now) {
                continue;
            }
            expired.push(self.client.folder().item_path(name));
            if dry_run {
                continue;
            }
            self.engine("delete job", Idempotent, || self.client.delete_job(name))
                .await
                .map_err(tag)?;
            tracing::info!(job = name, folder = %self.client.folder(), "expired job deleted");
            // A collected build is forgotten with its job (status: NotFound), after its
            // final status, if it was never read, is counted.
            if let Ok(id) = rest.parse::<BuildId>()
                && let Some(t) = self.tracked(id)
            {
                if t.terminal.is_none() {
                    let last = j
                        .last_build
                        .as_ref()
                        .filter(|b| !b.building && b.number > t.before);
                    let status = match last {
                        Some(b) => from_build(name, b, t.stopped),
                        None => lost(name, Some(false), "collected by gc before it ran"),
                    };
                    self.remember(id, |r| r.terminal = Some(status));
                }
                self.builds.lock().remove(&id);
            }
        }
        Ok(GcReport { dry_run, expired })
    }
}
