//! [`DockerExecutor`]: the [`Executor`] implementation.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::models::ContainerCreateBody;
use chrono::{DateTime, Utc};
use executor_base::launch::expose_token;
use executor_base::launch_protocol::{LaunchResult, exit_zero_status};
use executor_base::{
    BuildId, BuildStatus, Error, ErrorKind, Executor, FailureReason, GcReport, ImageRef,
    LaunchMode, Owner, Phase, RequestStats, StartConfig, Stats, StopConfig,
};

/// How many of the build container's last output lines are searched for the launch
/// handshake (it is the last line `launch` writes; the margin covers a step's background
/// process writing after it).
const HANDSHAKE_TAIL_LINES: u32 = 20;

use crate::classify::classify;
use crate::client::Engine;
use crate::config::{DockerConfig, PullPolicy};
use crate::error::EXECUTOR;
use crate::plan::{BuildPlan, Names, token_tar};
use crate::state::{Builds, Known};
use crate::undo::Undo;

/// A point of `start` after which a test can inject a failure (feature `test-support`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartStep {
    /// The images are ready (pulled when the policy says so); nothing is created yet.
    ImagesReady,
    /// The launcher (`-init`) container and the tools volume (and, in token mode `file`,
    /// the token volume) exist.
    InitCreated,
    /// The token is delivered. Token mode `stdin`: fed to the started build container,
    /// after [`StartStep::BuildCreated`]; otherwise before it (mode `file`: written to the
    /// token volume; mode `env`: nothing to do).
    TokenWritten,
    /// The build container exists (token modes `file` and `env`: the token is written);
    /// it is not started yet.
    BuildCreated,
}

/// How long the daemon may take to pass the token to a started build's stdin.
const TOKEN_FEED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A hook called at each [`StartStep`]; an `Err` fails the start there.
pub type FaultHook = Arc<dyn Fn(StartStep) -> Result<(), Error> + Send + Sync>;

/// Runs Screwdriver builds as Docker containers; see the crate docs.
///
/// Cheap to clone: clones share the connection, counters and build registry.
#[derive(Clone)]
pub struct DockerExecutor {
    pub(crate) cfg: Arc<DockerConfig>,
    pub(crate) launcher: ImageRef,
    pub(crate) engine: Engine,
    pub(crate) builds: Arc<Builds>,
    pub(crate) fault: Option<FaultHook>,
    /// Written on every resource ([`executor_base::owner`]).
    pub(crate) owner: Option<Owner>,
    /// Pre-flight answers, reused for `preflight.cacheMs`.
    pub(crate) preflight: Arc<executor_base::PreflightCache>,
    /// Turns to create and start containers (`maxConcurrentStarts`); `None`: no limit.
    pub(crate) start_slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("config", &self.cfg)
            .field("fault_hook", &self.fault.is_some())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DockerExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DockerExecutor({})", self.engine.endpoint())
    }
}

impl DockerExecutor {
    /// The options in force.
    pub fn config(&self) -> &DockerConfig {
        &self.cfg
    }

    /// Who the resources this executor creates belong to (see [`executor_base::owner`]).
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// The daemon endpoint (`unix:///var/run/docker.sock`, `tcp://…`).
    pub fn endpoint(&self) -> &str {
        self.engine.endpoint()
    }

    /// Name of build `id`'s build container (`<prefix><id>-build`).
    pub fn build_container_name(&self, id: BuildId) -> String {
        Names::new(&self.cfg.prefix, id).build
    }

    /// Name of build `id`'s launcher container (`<prefix><id>-init`).
    pub fn init_container_name(&self, id: BuildId) -> String {
        Names::new(&self.cfg.prefix, id).init
    }

    /// Counters of image pulls (one per pull; `stats()` counts them among all calls too).
    pub fn pull_stats(&self) -> RequestStats {
        self.engine.pulls().request_stats()
    }

    /// Like [`Executor::gc`], with expiry judged at `now` instead of the current time
    /// (`sdx gc --at`, tests). Only resources of this executor's prefix are considered.
    pub async fn gc_at(&self, now: DateTime<Utc>, dry_run: bool) -> Result<GcReport, Error> {
        crate::gc::collect(self, now, dry_run).await
    }

    /// Marks a step of `start` (debug timing) and runs the fault hook, if any.
    fn step(&self, step: StartStep, id: BuildId, since: std::time::Instant) -> Result<(), Error> {
        tracing::debug!(build_id = %id, ?step, elapsed_ms = since.elapsed().as_secs_f64() * 1000.0, "start step done");
        match &self.fault {
            Some(hook) => hook(step),
            None => Ok(()),
        }
    }

    /// Samples the started build container's memory until it exits (a background task:
    /// the daemon's stats stream; see `Engine::watch_memory`).
    fn watch_memory(&self, id: BuildId, container: String) {
        let (engine, builds) = (self.engine.clone(), self.builds.clone());
        tokio::spawn(async move {
            engine
                .watch_memory(&container, |bytes| builds.memory_seen(id, bytes))
                .await;
        });
    }

    async fn pull(&self, id: BuildId, image: &ImageRef) -> Result<(), Error> {
        self.builds.pulling(id, true);
        let r = self.engine.pull(image).await;
        self.builds.pulling(id, false);
        r
    }

    /// Creates a container, pulling its image first when the daemon lacks it and the
    /// policy allows.
    async fn create(
        &self,
        id: BuildId,
        name: &str,
        body: &ContainerCreateBody,
        image: &ImageRef,
    ) -> Result<(), Error> {
        match self.engine.create_container(name, body).await {
            Ok(None) => {
                if self.cfg.pull_policy == PullPolicy::Never {
                    return Err(Error::new(
                        ErrorKind::ImagePull,
                        format!("image {image} is not present and the pull policy is never"),
                    )
                    .with_context("image", image.as_str()));
                }
                self.pull(id, image).await?;
                match self.engine.create_container(name, body).await? {
                    Some(_) => Ok(()),
                    None => Err(Error::new(
                        ErrorKind::ImagePull,
                        format!("image {image} is still missing after it was pulled"),
                    )
                    .with_context("image", image.as_str())),
                }
            }
            Err(e) if e.status() == Some(400) && e.message().contains("reference format") => {
                Err(Error::new(
                    ErrorKind::ImagePull,
                    format!("invalid image reference {image}: {}", e.message()),
                ))
            }
            other => other.map(drop),
        }
    }

    async fn create_and_start(
        &self,
        plan: &mut BuildPlan,
        b: &StartConfig,
        undo: &mut Undo,
    ) -> Result<(), Error> {
        let id = plan.build_id;
        let t0 = std::time::Instant::now();
        // First (connecting on first use): a daemon that cannot answer fails the start
        // before anything is created, so there is nothing to roll back.
        let ncpu = self.engine.ncpu().await?;
        if self.cfg.pull_policy == PullPolicy::Always {
            let (l, i) = tokio::join!(self.pull(id, &plan.launcher), self.pull(id, &plan.image));
            i?;
            l.map_err(launcher_problem)?;
        }

        // The volumes are created by the daemon together with the init container.
        undo.volume(&plan.names.tools);
        if plan.token_file {
            undo.volume(&plan.names.token);
        }
        self.step(StartStep::ImagesReady, id, t0)?;
        // Held until the build container runs (or the start failed).
        let _turn = match &self.start_slots {
            Some(slots) => Some(slots.acquire().await.map_err(|_| {
                Error::new(ErrorKind::Unavailable, "the executor is shutting down")
            })?),
            None => None,
        };

        // The launcher and build containers are created concurrently: the build mounts the
        // volumes with `NoCopy`, so only the launcher image fills the tools volume, whichever
        // creation comes first. The token goes in as soon as the init container exists.
        plan.cap_cpus(ncpu);
        undo.container(&plan.names.init);
        undo.container(&plan.names.build);
        let init_and_token = async {
            self.create(id, &plan.names.init, &plan.init, &plan.launcher)
                .await
                .map_err(|e| (launcher_problem(e), true))?;
            self.step(StartStep::InitCreated, id, t0)
                .map_err(|e| (e, false))?;
            if plan.token_file {
                self.engine
                    .upload(&plan.names.init, &plan.token_dir, token_tar(&b.token))
                    .await
                    .map_err(|e| (e, false))?;
            }
            if !plan.token_stdin {
                self.step(StartStep::TokenWritten, id, t0)
                    .map_err(|e| (e, false))?;
            }
            Ok::<(), (Error, bool)>(())
        };
        // Token mode `stdin`: attach to the build's stdin as soon as it exists (before its
        // start, so no byte of stdin is missed), alongside the init container's creation.
        let build_and_attach = async {
            self.create(id, &plan.names.build, &plan.build, &plan.image)
                .await?;
            if plan.token_stdin {
                self.engine.attach_stdin(&plan.names.build).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (init, build) = tokio::join!(init_and_token, build_and_attach);
        if let Err(e) = &build {
            undo.conflict_if(e, &plan.names.build);
        }
        if let Err((e, from_create)) = &init
            && *from_create
        {
            undo.conflict_if(e, &plan.names.init);
        }
        // The build container's failure (e.g. its image is missing) is reported first.
        let feed = build?;
        init.map_err(|(e, _)| e)?;
        self.step(StartStep::BuildCreated, id, t0)?;

        self.engine
            .start_container(&plan.names.build)
            .await
            .map_err(|e| {
                if e.is_temporary() {
                    e
                } else {
                    // The daemon refused to run it (entry point missing, bad mount, ...).
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("the build container failed to start: {}", e.message()),
                    )
                    .with_context("reason", FailureReason::StartRefused.as_str())
                }
            })?;
        if let Some(feed) = feed {
            feed.deliver(expose_token(&b.token).as_bytes(), TOKEN_FEED_TIMEOUT)
                .await?;
            self.step(StartStep::TokenWritten, id, t0)?;
        }
        Ok(())
    }

    /// Native mode: a build container that exited 0 succeeded only when `launch` wrote
    /// the launch handshake for this build as its last output (read from the container's
    /// log); otherwise the build failed (`launchProtocol`), naming the launcher image.
    async fn with_handshake(
        &self,
        id: BuildId,
        container: &str,
        st: BuildStatus,
    ) -> Result<BuildStatus, Error> {
        if st.phase != Phase::Succeeded || self.cfg.launch_mode != LaunchMode::Native {
            return Ok(st);
        }
        let Some(tail) = self
            .engine
            .stdout_tail(container, HANDSHAKE_TAIL_LINES)
            .await?
        else {
            return Ok(BuildStatus::lost(
                Some(true),
                "the build container was removed before its launch handshake could be read",
            ));
        };
        let found = LaunchResult::find(&tail, id.get());
        Ok(exit_zero_status(
            self.cfg.launch_mode,
            id.get(),
            found.as_ref(),
            &self.cfg.launcher_reference(),
        ))
    }

    async fn lost_or_unknown(&self, id: BuildId, names: &Names) -> Result<BuildStatus, Error> {
        match self.builds.get(id) {
            Some(Known::Ended(s)) | Some(Known::Stopping(s)) => return Ok(s),
            Some(Known::Starting { .. }) => return Ok(BuildStatus::pending("starting")),
            Some(Known::Live) => {
                let s = BuildStatus::lost(
                    Some(true),
                    "the build container was removed behind our back",
                );
                self.builds.ended(id, s.clone());
                return Ok(s);
            }
            None => {}
        }
        // Not ours in this process (e.g. after a restart): leftovers mean it was lost.
        let selector = vec![names.selector()];
        let containers = self.engine.list_containers(&selector).await?;
        let volumes = self.engine.list_volumes(&selector).await?;
        if containers.is_empty() && volumes.is_empty() {
            Err(Error::build_not_found(id)
                .with_executor(EXECUTOR)
                .with_operation("status"))
        } else {
            Ok(BuildStatus::lost(
                None,
                "the build container is gone but other resources of the build remain",
            ))
        }
    }
}

/// A launcher image that cannot be had is the executor's configuration problem, not the
/// build's.
fn launcher_problem(e: Error) -> Error {
    if e.kind() == ErrorKind::ImagePull {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("launcherImage: {}", e.message()),
        )
        .with_context("key", "launcherImage")
    } else {
        e
    }
}

/// What a failed start says about the build, to be reported by `status`/`verify`.
fn start_outcome(e: &Error) -> Option<BuildStatus> {
    match e.kind() {
        ErrorKind::ImagePull => Some(BuildStatus::failed(
            FailureReason::ImagePull,
            e.message().to_string(),
            Some(e.message().to_string()),
        )),
        ErrorKind::ConfigInvalid => Some(BuildStatus::failed(
            FailureReason::Configuration,
            e.message().to_string(),
            Some(e.message().to_string()),
        )),
        ErrorKind::Unexpected | ErrorKind::NotFound if !e.is_temporary() => {
            let mut s = BuildStatus::failed(
                FailureReason::StartRefused,
                e.message().to_string(),
                Some(e.message().to_string()),
            );
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(false);
            }
            Some(s)
        }
        _ => None,
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    /// Pre-flight: daemon, launcher image and its launch-protocol label, build image; cached
    /// per launcher image, launch mode, pull policy and build image.
    async fn preflight(&self, build: &StartConfig) -> Result<executor_base::Preflight, Error> {
        let key = crate::preflight::key(self, build);
        self.preflight
            .get_or_run(&key, || crate::preflight::run(self, build))
            .await
    }

    fn name(&self) -> &str {
        crate::SCHEME
    }

    async fn start(&self, b: &StartConfig) -> Result<(), Error> {
        let id = b.build_id;
        let _serial = self.builds.lock(id).await;
        if matches!(
            self.builds.get(id),
            Some(Known::Live | Known::Starting { .. })
        ) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("build {id} is already running"),
            )
            .with_executor(EXECUTOR)
            .with_operation("start"));
        }
        let mut plan = BuildPlan::new(
            &self.cfg,
            &self.launcher,
            b,
            Utc::now(),
            self.owner.as_ref(),
        );
        tracing::debug!(build_id = %id, ?plan, "starting build");
        let starting = self.builds.starting(id);
        let mut undo = Undo::new(self.engine.clone());
        match self.create_and_start(&mut plan, b, &mut undo).await {
            Ok(()) => {
                undo.disarm();
                starting.started();
                self.watch_memory(id, plan.names.build.clone());
                tracing::info!(build_id = %id, container = %plan.names.build, image = %plan.image, "build started");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(build_id = %id, error = %e, "start failed, removing what it created");
                undo.run().await;
                starting.failed(start_outcome(&e));
                let e = if e.executor().is_empty() {
                    e.with_executor(EXECUTOR)
                } else {
                    e
                };
                Err(if e.operation().is_empty() {
                    e.with_operation("start")
                } else {
                    e
                })
            }
        }
    }

    async fn stop(&self, s: &StopConfig) -> Result<(), Error> {
        let id = s.build_id;
        let names = Names::new(&self.cfg.prefix, id);
        let _serial = self.builds.lock(id).await;
        let known = self.builds.get(id);
        let before = self.engine.inspect_container(&names.build).await?;
        let last = match (&before, &known) {
            (Some(c), _) => {
                let st = classify(c, self.cfg.launch_mode);
                let st = self.with_handshake(id, &names.build, st).await?;
                if st.is_terminal() {
                    st
                } else {
                    BuildStatus::canceled()
                }
            }
            (None, Some(Known::Ended(st))) => st.clone(),
            (None, Some(Known::Live)) => BuildStatus::lost(
                Some(true),
                "the build container was removed behind our back",
            ),
            (None, _) => BuildStatus::canceled(),
        };
        self.builds.stopping(id, last.clone());
        let running = before
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running)
            .unwrap_or(false);
        if running {
            self.engine.kill_container(&names.build).await?;
        }
        let removed = crate::gc::remove_build(&self.engine, &names).await;
        match removed {
            Ok(n) => {
                if n > 0 || before.is_some() || known.is_some() {
                    self.builds.ended(id, last);
                } else {
                    self.builds.forget(id);
                }
                tracing::info!(build_id = %id, removed = n, "build stopped");
                Ok(())
            }
            Err(e) => {
                self.builds.unstop(id, known);
                Err(e)
            }
        }
    }

    async fn status(&self, s: &StopConfig) -> Result<BuildStatus, Error> {
        let id = s.build_id;
        match self.builds.get(id) {
            Some(Known::Starting { pulling: true }) => {
                return Ok(BuildStatus::pulling("pulling images"));
            }
            Some(Known::Starting { pulling: false }) => {
                return Ok(BuildStatus::pending("starting"));
            }
            Some(Known::Ended(st)) | Some(Known::Stopping(st)) => return Ok(st),
            _ => {}
        }
        let names = Names::new(&self.cfg.prefix, id);
        match self.engine.inspect_container(&names.build).await? {
            Some(c) => {
                // Not being started by this process (checked above): a container left
                // created by a dead start is lost, whoever owned it.
                let st = crate::gc::orphaned(&c)
                    .or_else(|| crate::gc::abandoned_start(&c, Utc::now()))
                    .unwrap_or_else(|| classify(&c, self.cfg.launch_mode));
                let st = self.with_handshake(id, &names.build, st).await?;
                self.builds.observed(id, &st);
                Ok(st)
            }
            None => self.lost_or_unknown(id, &names).await,
        }
    }

    /// From the build container's inspect answer, with what this process saw of the
    /// start (accepted, pulls) and the stats samples' peak memory (see the `timings`
    /// module); `None` once neither the container nor this process knows the build.
    async fn timings(&self, s: &StopConfig) -> Result<Option<executor_base::BuildTimings>, Error> {
        let names = Names::new(&self.cfg.prefix, s.build_id);
        let container = self.engine.inspect_container(&names.build).await?;
        Ok(crate::timings::merge(
            container.as_ref(),
            self.builds.acct(s.build_id),
        ))
    }

    fn stats(&self) -> Stats {
        // Pulls go through the daemon's calls too, so these count them.
        let calls = self.engine.calls();
        Stats {
            requests: calls.request_stats(),
            breaker: calls.breaker_stats(),
            builds: self.builds.counts(),
            ..Stats::default()
        }
    }

    /// Collects expired containers and volumes ([`Executor::gc`]); live builds keep running.
    async fn cleanup(&self) -> Result<(), Error> {
        self.gc(false).await.map(drop)
    }

    /// Stops the builds this instance started and has not seen end.
    async fn stop_all(&self) -> Result<Vec<BuildId>, Error> {
        executor_base::stop_builds(self, self.builds.live()).await
    }

    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        self.gc_at(Utc::now(), dry_run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_outcomes() {
        let pull = Error::new(
            ErrorKind::ImagePull,
            "cannot pull image x: manifest unknown",
        );
        assert_eq!(
            start_outcome(&pull).unwrap().reason(),
            Some(FailureReason::ImagePull)
        );
        let refused = Error::new(
            ErrorKind::Unexpected,
            "the build container failed to start: exec",
        );
        assert_eq!(
            start_outcome(&refused).unwrap().reason(),
            Some(FailureReason::StartRefused)
        );
        let launcher = launcher_problem(Error::new(ErrorKind::ImagePull, "cannot pull image l:1"));
        assert_eq!(launcher.kind(), ErrorKind::ConfigInvalid);
        assert!(launcher.message().starts_with("launcherImage: "));
        assert_eq!(
            start_outcome(&launcher).unwrap().reason(),
            Some(FailureReason::Configuration)
        );
        let down = Error::new(ErrorKind::Unavailable, "cannot reach").temporary();
        assert!(start_outcome(&down).is_none());
        assert!(start_outcome(&Error::new(ErrorKind::AlreadyExists, "conflict")).is_none());
    }
}
