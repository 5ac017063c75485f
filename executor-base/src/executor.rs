//! The [`Executor`] trait every backend implements, and conveniences on top of it.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::{StartConfig, StopConfig, TimerConfig};
use crate::error::{Error, ErrorKind};
use crate::preflight::Preflight;
use crate::stats::Stats;
use crate::status::BuildStatus;
use crate::timings::BuildTimings;
use crate::verdict::Verdict;

/// First pause between two status reads of the default [`Executor::wait_for_change`].
pub const CHANGE_POLL_MIN: Duration = Duration::from_millis(50);

/// Longest pause between two status reads of the default [`Executor::wait_for_change`].
pub const CHANGE_POLL_MAX: Duration = Duration::from_secs(1);

/// What `gc` found (and removed, unless it was a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Whether anything was actually removed.
    pub dry_run: bool,
    /// The resources found expired, as `<kind>/<name>` (`container/sd-42-build`).
    pub expired: Vec<String>,
}

/// A build execution engine.
///
/// # Behaviour every backend guarantees (checked by `testkit::conformance`)
///
/// * `start` creates the build on the engine and returns once the engine accepted it;
///   on failure nothing it created is left behind. Starting a build id that is already
///   live is [`ErrorKind::AlreadyExists`].
/// * `stop` of a running build stops it and removes its resources; `stop` of a finished,
///   stopped or never-started build is `Ok(())` (idempotent).
/// * `status` of a build this executor never knew is [`ErrorKind::NotFound`]; of a build
///   whose engine resources vanished behind our back it is [`crate::Phase::Lost`], never
///   success; after `stop` it is [`crate::Phase::Canceled`] (or the terminal status it had).
/// * `verify` renders the status as a [`Verdict`] with upstream's strings.
/// * `cleanup` means the same on every backend: release connections and idle state, and
///   collect expired resources ([`Executor::gc`]). It **never stops a live build**, so a
///   server may call it on shutdown and its builds keep running (and are adopted by the
///   next instance). It is safe to call any number of times.
/// * `stop_all` is the one explicit way to end every live build this executor instance
///   started (or adopted after a restart).
/// * Invalid input never reaches a backend: the config types are validated on parse.
/// * No token appears in any error, `Debug` output or log line.
/// * `wait_for_change` returns the first status that differs from the caller's last
///   seen one (see its docs); wrappers forward it so a backend's native notification
///   is not lost behind them.
///
/// The trait is object-safe: servers hold `Arc<dyn Executor>` and route between backends.
#[async_trait]
pub trait Executor: Debug + Send + Sync {
    /// The backend's short name (`docker`, `k8s`, `jenkins`, `gearman`, `process`, ...).
    fn name(&self) -> &str;

    /// Creates the build on the engine.
    async fn start(&self, build: &StartConfig) -> Result<(), Error>;

    /// Stops the build and removes its resources. Idempotent.
    async fn stop(&self, build: &StopConfig) -> Result<(), Error>;

    /// Checks the build's health; see [`Verdict`]. Default: [`Verdict::from_status`] of
    /// [`Executor::status`]; override only where the engine knows better.
    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        let status = self.status(&build.to_stop()).await?;
        Ok(Verdict::from_status(&status))
    }

    /// The build's current status.
    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error>;

    /// Counters and breaker state.
    fn stats(&self) -> Stats;

    /// Releases connections and idle state and removes expired resources; never stops a
    /// live build (see the trait docs). Default: no-op.
    async fn cleanup(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Stops every live build this executor instance started (or adopted after a
    /// restart), as [`Executor::stop`] would, and returns their ids. Every build is tried;
    /// the first error is returned after. Unlike [`Executor::cleanup`] this ends running
    /// builds: call it only to cancel them all (`sdx serve --cancel-on-exit`). Default:
    /// [`ErrorKind::Unsupported`].
    async fn stop_all(&self) -> Result<Vec<crate::BuildId>, Error> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} cannot list the builds it started", self.name()),
        )
        .with_operation("stop_all"))
    }

    /// Finds (and unless `dry_run`, removes) resources whose expiry label has passed.
    /// Default: nothing to collect.
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        Ok(GcReport {
            dry_run,
            expired: Vec::new(),
        })
    }

    /// Checks, before anything is created, whether `build` could run on this executor as
    /// configured: the engine is reachable, the images exist and speak the launch
    /// protocol of the mode, the credentials and permissions are there (see each
    /// backend's README). Answers a list of [`crate::Finding`]s; a build whose pre-flight
    /// has a `fail` finding ([`Preflight::passed`] is false) should not be started.
    ///
    /// # Contract
    ///
    /// * Creates nothing on the engine and never starts the build.
    /// * An engine that cannot be reached is a `fail` finding naming its address, within
    ///   the backend's `preflight.timeoutMs`; an `Err` is for this executor's own faults only.
    /// * Answers may be reused for `preflight.cacheMs` for builds with the same key
    ///   ([`crate::PreflightCache`]), so calling it before every start is cheap.
    ///
    /// Default: nothing to check (an empty, passing [`Preflight`]). Wrappers (the
    /// router, the timer wrapper, `Arc`/`Box`) forward it.
    async fn preflight(&self, build: &StartConfig) -> Result<Preflight, Error> {
        let _ = build;
        Ok(Preflight::new(self.name()))
    }

    /// Arms the build's timeout. Default: no-op (see `timer::TimerService`).
    async fn start_timer(&self, timer: &TimerConfig) -> Result<(), Error> {
        let _ = timer;
        Ok(())
    }

    /// Disarms the build's timeout. Default: no-op.
    async fn stop_timer(&self, build: &StopConfig) -> Result<(), Error> {
        let _ = build;
        Ok(())
    }

    /// Waits until the build's status differs from `last_seen`, and returns it: how a
    /// caller (the Gearman launcher, a server's dispatcher) learns that a build ended
    /// without polling `status` itself.
    ///
    /// # Contract
    ///
    /// * Returns at once when the current status differs from `last_seen` (compared
    ///   with `==`: phase, message, exit code and failure), and at once when the build
    ///   is terminal (a terminal status never changes, so there is nothing to wait for).
    ///   Otherwise it never returns a status equal to `last_seen`.
    /// * Returns the *latest* status: intermediate ones may be skipped.
    /// * Errors as [`Executor::status`] does: a build this executor never knew is
    ///   [`ErrorKind::NotFound`]; a transient engine error is returned as such, and the
    ///   caller decides whether to call again.
    /// * Has no deadline of its own (wrap it in `tokio::time::timeout`) and is
    ///   cancel-safe: dropping the future loses nothing.
    ///
    /// The default reads `status` with growing pauses ([`CHANGE_POLL_MIN`], doubling up
    /// to [`CHANGE_POLL_MAX`]), so every backend supports it. A backend that is told
    /// of changes overrides it: the process backend wakes when its reaper records the
    /// exit; the Gearman executor when the job's packets arrive. Docker (waiting on the
    /// container) and Kubernetes (its pod watch) can do the same. Wrappers (the router,
    /// the timer wrapper, `Arc`/`Box`) forward it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use executor_base::{BuildStatus, Executor, Phase, StartConfig};
    /// use executor_base::testkit::fake::{FakeExecutor, Script};
    /// let fake = FakeExecutor::new();
    /// fake.set_default_script(Script::succeed_after(Duration::from_millis(100)));
    /// let b = StartConfig::builder(9, "http://127.0.0.1:9", "busybox", "t").build().unwrap();
    /// fake.start(&b).await.unwrap();
    /// let stop = b.to_stop();
    /// let mut seen = fake.status(&stop).await.unwrap();
    /// while !seen.is_terminal() {
    ///     seen = fake.wait_for_change(&stop, &seen).await.unwrap();
    /// }
    /// assert_eq!(seen.phase, Phase::Succeeded);
    /// # });
    /// ```
    async fn wait_for_change(
        &self,
        build: &StopConfig,
        last_seen: &BuildStatus,
    ) -> Result<BuildStatus, Error> {
        poll_for_change(self, build, last_seen).await
    }

    /// Where the build's time went and its peak memory, as far as the engine can tell
    /// (see [`BuildTimings`] for what each backend fills); `None` when the backend keeps
    /// no such record or no longer has the build. Read it before `stop` removes an
    /// ended build's leftovers: the reference API stores it when it concludes a build.
    ///
    /// The default answers `None`.
    async fn timings(&self, build: &StopConfig) -> Result<Option<BuildTimings>, Error> {
        let _ = build;
        Ok(None)
    }
}

/// The default [`Executor::wait_for_change`]: reads `status` with pauses growing from
/// [`CHANGE_POLL_MIN`] to [`CHANGE_POLL_MAX`] until it differs from `last_seen` (or is
/// terminal). For backends whose native notification does not cover a build (one
/// adopted from a previous instance, say).
pub async fn poll_for_change<E: Executor + ?Sized>(
    executor: &E,
    build: &StopConfig,
    last_seen: &BuildStatus,
) -> Result<BuildStatus, Error> {
    let mut pause = CHANGE_POLL_MIN;
    loop {
        let now = executor.status(build).await?;
        if now != *last_seen || now.is_terminal() {
            return Ok(now);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(CHANGE_POLL_MAX);
    }
}

/// Stops `builds` on `executor` concurrently, as [`Executor::stop_all`] implementations
/// do with the builds they know: every build is tried; the first error is returned after,
/// else the ids.
pub async fn stop_builds<E: Executor + ?Sized>(
    executor: &E,
    builds: Vec<crate::BuildId>,
) -> Result<Vec<crate::BuildId>, Error> {
    let stops: Vec<StopConfig> = builds.iter().map(|id| StopConfig::new(*id)).collect();
    let results = crate::join::join_all(stops.iter().map(|s| executor.stop(s))).await;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(builds)
}

/// A trait object of any executor.
pub type DynExecutor = dyn Executor;

macro_rules! forward {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Executor + ?Sized> Executor for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            async fn start(&self, build: &StartConfig) -> Result<(), Error> {
                (**self).start(build).await
            }
            async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
                (**self).stop(build).await
            }
            async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
                (**self).verify(build).await
            }
            async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
                (**self).status(build).await
            }
            fn stats(&self) -> Stats {
                (**self).stats()
            }
            async fn cleanup(&self) -> Result<(), Error> {
                (**self).cleanup().await
            }
            async fn stop_all(&self) -> Result<Vec<crate::BuildId>, Error> {
                (**self).stop_all().await
            }
            async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
                (**self).gc(dry_run).await
            }
            async fn preflight(&self, build: &StartConfig) -> Result<Preflight, Error> {
                (**self).preflight(build).await
            }
            async fn start_timer(&self, timer: &TimerConfig) -> Result<(), Error> {
                (**self).start_timer(timer).await
            }
            async fn stop_timer(&self, build: &StopConfig) -> Result<(), Error> {
                (**self).stop_timer(build).await
            }
            async fn wait_for_change(
                &self,
                build: &StopConfig,
                last_seen: &BuildStatus,
            ) -> Result<BuildStatus, Error> {
                (**self).wait_for_change(build, last_seen).await
            }
            async fn timings(&self, build: &StopConfig) -> Result<Option<BuildTimings>, Error> {
                (**self).timings(build).await
            }
        }
    };
}

forward!(Arc<T>);
forward!(Box<T>);

/// Conveniences for any [`Executor`], kept out of the trait so wrappers cannot lose them.
#[async_trait]
pub trait ExecutorExt: Executor {
    /// Polls `status` every `every` until the build is terminal or `within` passes
    /// ([`ErrorKind::Timeout`]). Returns the terminal status.
    async fn wait_until_finished(
        &self,
        build: &StopConfig,
        every: Duration,
        within: Duration,
    ) -> Result<BuildStatus, Error> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.status(build).await?;
            if s.is_terminal() {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "build {} still {} after {:?}",
                        build.build_id, s.phase, within
                    ),
                ));
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl<T: Executor + ?Sized> ExecutorExt for T {}
