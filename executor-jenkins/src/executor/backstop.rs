//! The job's own timeout, the engine-side backstop: who enforces it (checked when the
//! executor is built), and the executor's own enforcement when Jenkins cannot.
//!
//! Jenkins drops the build-timeout wrapper of a job when the plugin is missing and still
//! answers `createItem` with 200 (see [`crate::plugins`]). So `build()` reads the plugin
//! list once. When the plugin is there, Jenkins aborts an overdue build and writes the
//! timeout marker. Otherwise (plugin missing, list unreadable, or a template without the
//! wrapper) the executor does the same when it finds a build running past its job
//! timeout (build start + build timeout + margin, from Jenkins' `timestamp` and the job
//! description) in `status`, `verify` or `gc`: it writes the marker as the build's
//! description (`submitDescription`, Run/Update permission) and stops the build. That
//! survives a restart of the server, since both the start time and the timeout live in
//! Jenkins; it acts only when the build is read, which a server polling its builds (or
//! running `sdx gc`) does. With `requireTimeoutPlugin` the executor refuses to be built
//! when the plugin is missing instead.

use chrono::Utc;
use executor_base::engine::Idempotency::Idempotent;
use executor_base::{Error, ErrorKind};

use super::JenkinsExecutor;
use crate::SCHEME;
use crate::api::BuildInfo;
use crate::error::JenkinsError;
use crate::job::timeout_marker;
use crate::plugins::{PluginCheck, TimeoutBackstop, evaluate};

/// What the executor knows about the backstop.
#[derive(Debug, Clone)]
pub(super) struct BackstopState {
    /// Who enforces job timeouts.
    pub backstop: TimeoutBackstop,
    /// The plugin list could not be read: read it again before the next start.
    pub recheck: bool,
}

impl Default for BackstopState {
    fn default() -> Self {
        Self {
            backstop: TimeoutBackstop::ExecutorPluginUnknown("not checked yet".into()),
            recheck: true,
        }
    }
}

impl JenkinsExecutor {
    /// Who stops a build that runs past its job timeout on Jenkins' side, as found when
    /// the executor was built (or at the first start, when Jenkins could not be asked
    /// then). See [`TimeoutBackstop`].
    pub fn timeout_backstop(&self) -> TimeoutBackstop {
        self.backstop.lock().backstop.clone()
    }

    /// Reads Jenkins' plugin list (one request, not retried: a Jenkins that cannot be
    /// asked is asked again at the next start) and evaluates the template against it.
    /// With `requireTimeoutPlugin`, a missing plugin (or a template without the wrapper)
    /// is a `ConfigInvalid` error naming the option; a list the user may not read
    /// (Overall/SystemRead) is not: the executor then enforces job timeouts itself.
    pub(crate) async fn check_plugins(&self) -> Result<(), Error> {
        let check = match self.client.plugins().await {
            Ok(list) => PluginCheck::Read(list),
            Err(JenkinsError::Status { status: 403, .. }) => PluginCheck::Forbidden(format!(
                "user '{}' may not read Jenkins' plugin list (Overall/SystemRead)",
                self.client.user()
            )),
            Err(e) => PluginCheck::Failed(e.to_string()),
        };
        let ev = evaluate(&self.job.template, &check);
        if !ev.missing.is_empty() {
            tracing::warn!(
                missing = %ev.missing.join(", "),
                template = self.job.template.origin(),
                "Jenkins lacks plugins the job template uses: it silently drops their elements from every job"
            );
        }
        let refuse = self.require_timeout_plugin
            && matches!(
                ev.backstop,
                TimeoutBackstop::ExecutorPluginMissing | TimeoutBackstop::ExecutorNoWrapper
            );
        // A refused plugin set is asked again at every start: once someone installs the
        // plugin, builds start without restarting the server.
        *self.backstop.lock() = BackstopState {
            backstop: ev.backstop.clone(),
            recheck: ev.recheck || refuse,
        };
        if refuse {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "requireTimeoutPlugin: jobs would have no timeout of their own: {} is \
                     required but {}; install and enable the {} plugin, or set \
                     requireTimeoutPlugin=false to let the executor enforce job timeouts",
                    crate::TIMEOUT_PLUGIN,
                    match ev.backstop {
                        TimeoutBackstop::ExecutorNoWrapper =>
                            "the job template has no build-timeout wrapper",
                        _ => "Jenkins does not have it installed and active",
                    },
                    crate::TIMEOUT_PLUGIN,
                ),
            )
            .with_executor(SCHEME));
        }
        if !ev.backstop.by_jenkins() {
            tracing::warn!(
                backstop = %ev.backstop,
                "Jenkins will not end overdue builds by itself; the executor stops builds it finds past their job timeout"
            );
        }
        Ok(())
    }

    /// Reads the plugin list again when it could not be read before (or, with
    /// `requireTimeoutPlugin`, when it lacked the plugin).
    pub(super) async fn recheck_plugins(&self) -> Result<(), Error> {
        if self.backstop.lock().recheck {
            self.check_plugins().await?;
        }
        Ok(())
    }

    /// When the executor enforces job timeouts and build `b` of job `name` runs past its
    /// job timeout of `job_minutes`: writes the timeout marker as its description and
    /// stops it; whether it did. A marker Jenkins refuses (no Run/Update permission) is
    /// logged, not fatal.
    pub(super) async fn enforce_job_timeout(
        &self,
        name: &str,
        b: &BuildInfo,
        job_minutes: Option<u32>,
    ) -> Result<bool, Error> {
        if !b.building || self.backstop.lock().backstop.by_jenkins() {
            return Ok(false);
        }
        let (Some(started), Some(minutes)) = (b.timestamp, job_minutes) else {
            return Ok(false);
        };
        if Utc::now().timestamp_millis() < started + i64::from(minutes) * 60_000 {
            return Ok(false);
        }
        let n = b.number;
        let marker = timeout_marker(minutes);
        if let Err(e) = self
            .engine("describe build", Idempotent, || {
                self.client.describe_build(name, n, &marker)
            })
            .await
        {
            tracing::warn!(job = name, build = n, error = %e, "could not write the timeout marker; only this executor will report the build timed out");
        }
        self.engine("stop build", Idempotent, || self.client.stop_build(name, n))
            .await?;
        tracing::info!(
            job = name,
            build = n,
            minutes,
            "build ran past its job timeout: stopped by the executor"
        );
        Ok(true)
    }
}
