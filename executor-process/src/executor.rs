//! [`ProcessExecutor`]: the [`Executor`] implementation and the shared state behind it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use executor_base::{
    BuildCounter, BuildId, BuildStatus, BuildTimings, Error, Executor, GcReport, Liveness,
    StartConfig, Stats, StopConfig,
};
use parking_lot::Mutex;

use crate::SCHEME;
use crate::builder::{ProcessExecutorBuilder, Settings};
use crate::os;
use crate::record::{Build, BuildPaths, StopReason};
use crate::requests::Requests;
use crate::supervisor;
use crate::tree::{Cgroups, Tree};

/// How long an adopted build may sit without a recorded pid while it cannot be told
/// whether the instance that claimed it still runs (no recorded owner) before it counts
/// as never spawned. With an owner recorded, a claimant that is gone settles it at once
/// and a live one is waited for.
const START_WINDOW: Duration = Duration::from_secs(10);
/// How long to wait for the owning instance to record an exit before calling a vanished
/// process lost.
const EXIT_RECORD_WAIT: Duration = Duration::from_millis(100);
/// How often `wait_for_change` re-reads an adopted build, which no reaper watches.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

/// Runs builds as local child processes; see the [crate docs](crate).
///
/// Cheap to clone: clones share the same builds.
#[derive(Clone)]
pub struct ProcessExecutor {
    pub(crate) inner: Arc<Inner>,
}

/// State shared by the executor and its reaper and timer tasks.
pub(crate) struct Inner {
    pub settings: Settings,
    /// Where builds get their own cgroup, if anywhere.
    pub cgroups: Cgroups,
    pub builds: Mutex<HashMap<BuildId, Arc<Build>>>,
    pub counter: BuildCounter,
    pub requests: Requests,
    /// The shell that forks build supervisors (started on first use).
    pub zygote: crate::zygote::Zygote,
}

impl ProcessExecutor {
    /// A builder with default options.
    pub fn builder() -> ProcessExecutorBuilder {
        ProcessExecutorBuilder::new()
    }

    /// Opens the state directory and adopts the builds a previous instance left running.
    pub(crate) async fn open(settings: Settings) -> Result<Self, Error> {
        let cgroups = if settings.cgroups {
            let dir = settings.builds_dir.clone();
            tokio::task::spawn_blocking(move || Cgroups::detect(&dir))
                .await
                .unwrap_or_default()
        } else {
            Cgroups::disabled()
        };
        let inner = Arc::new(Inner {
            settings,
            cgroups,
            builds: Mutex::new(HashMap::new()),
            counter: BuildCounter::new(),
            requests: Requests::default(),
            zygote: Default::default(),
        });
        for id in inner.build_ids_on_disk() {
            let paths = BuildPaths::new(&inner.settings.builds_dir, id);
            if paths.load().is_some_and(|r| r.status.is_none()) {
                inner.lookup(id);
            }
        }
        Ok(Self { inner })
    }

    /// The directory holding `launch`.
    pub fn job_tools(&self) -> &Path {
        &self.inner.settings.job_tools
    }

    /// The directory holding one subdirectory per build (`<stateDir>/builds`).
    pub fn builds_dir(&self) -> &Path {
        &self.inner.settings.builds_dir
    }

    /// Where the output (stdout and stderr) of `launch` for a build goes:
    /// `<stateDir>/builds/<id>/build.log`. Kept after the build ends, until `gc` removes
    /// the build's directory.
    pub fn log_path(&self, build_id: BuildId) -> PathBuf {
        BuildPaths::new(&self.inner.settings.builds_dir, build_id).log()
    }

    /// Where `launch` spools what it could not report while the API was unreachable
    /// (`<stateDir>/builds/<id>/spool.jsonl`, passed as `SD_SPOOL_FILE`): the API reads it
    /// when it adopts the build (see `sd_launch::spool`).
    pub fn spool_path(&self, build_id: BuildId) -> PathBuf {
        BuildPaths::new(&self.inner.settings.builds_dir, build_id).spool()
    }

    /// Whether builds get a cgroup of their own on this machine.
    pub fn uses_cgroups(&self) -> bool {
        self.inner.cgroups.enabled()
    }

    /// The pids of build `id`'s live processes found through its cgroup and marker
    /// variable (not its process group alone); empty once it is over.
    pub fn processes(&self, build_id: BuildId) -> Vec<u32> {
        let paths = BuildPaths::new(&self.inner.settings.builds_dir, build_id);
        let cgroup = self
            .inner
            .lookup(build_id)
            .and_then(|b| b.snapshot().cgroup);
        let mark = paths.mark();
        Tree {
            pgid: None,
            cgroup: cgroup.as_deref(),
            mark: &mark,
        }
        .members()
    }

    /// The process id (and process group id) of a build's supervisor, the parent of its
    /// `launch`, once spawned.
    pub fn pid(&self, build_id: BuildId) -> Option<u32> {
        self.inner.lookup(build_id).and_then(|b| b.snapshot().pid)
    }
}

impl fmt::Debug for ProcessExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("ProcessExecutor")
            .field("job_tools", &s.job_tools)
            .field("builds_dir", &s.builds_dir)
            .field("stop_grace", &s.stop_grace)
            .field("builds", &self.inner.builds.lock().len())
            .finish()
    }
}

impl Inner {
    /// The supervisor of `build` when an executor died between spawning it and recording
    /// its pid, and the build's cgroup (see [`crate::tree::find_unrecorded_supervisor`]).
    fn find_unrecorded_supervisor(
        &self,
        build: &Build,
        r: &crate::record::Record,
    ) -> Option<(u32, Option<PathBuf>)> {
        let cgroup = r.cgroup.clone().or_else(|| self.cgroups.path_for(build.id));
        crate::tree::find_unrecorded_supervisor(&build.paths.mark(), cgroup)
    }

    /// Ids of the build directories under `<state>/builds`.
    pub(crate) fn build_ids_on_disk(&self) -> Vec<BuildId> {
        let Ok(entries) = std::fs::read_dir(&self.settings.builds_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .parse::<u64>()
                    .ok()
                    .and_then(BuildId::new)
            })
            .collect()
    }

    /// The build `id`: from memory, or adopted from its state file (a build started by a
    /// previous instance or another process sharing the state directory).
    pub(crate) fn lookup(self: &Arc<Self>, id: BuildId) -> Option<Arc<Build>> {
        if let Some(b) = self.builds.lock().get(&id) {
            return Some(b.clone());
        }
        let paths = BuildPaths::new(&self.settings.builds_dir, id);
        let record = paths.load()?;
        let build = {
            let mut map = self.builds.lock();
            if let Some(b) = map.get(&id) {
                return Some(b.clone());
            }
            let b = Arc::new(Build::new(paths, record, false));
            map.insert(id, b.clone());
            b
        };
        let r = build.snapshot();
        if r.status.is_none() {
            self.arm_deadline(&build, r.kill_at, StopReason::TimedOut);
        }
        Some(build)
    }

    /// Brings an adopted build's record up to date: the owner may have recorded an exit,
    /// or its process may have vanished (then it is `Lost`, or stopped if a stop was asked).
    pub(crate) async fn refresh(&self, build: &Build) {
        if build.is_finished() {
            return;
        }
        if build.owned {
            // The reaper records the end of a spawned build; a start that ended without
            // a spawn (cancelled half-way) is settled here.
            if build.snapshot().pid.is_none() && !build.is_starting() {
                self.settle_unspawned(build, "its start was interrupted")
                    .await;
            }
            return;
        }
        if let Some(status) = build.paths.load().and_then(|r| r.status) {
            build.finish(status).await;
            return;
        }
        build.merge_disk_stop();
        let mut r = build.snapshot();
        // Read before looking for a supervisor: once the claiming process is gone, any
        // supervisor it spawned is visible by its marker.
        let claimant = crate::gc::owner_liveness(&build.paths.dir);
        if r.pid.is_none()
            && let Some((pid, cgroup)) = self.find_unrecorded_supervisor(build, &r)
        {
            // Spawned by an executor that died before it recorded the pid.
            tracing::info!(build_id = %build.id, pid, "found the supervisor of a build with no recorded pid");
            let cgroup = cgroup.or_else(|| r.cgroup.clone());
            let _ = build
                .set_spawned(pid, os::proc_start_time(pid), cgroup)
                .await;
            r = build.snapshot();
        }
        let Some(pid) = r.pid else {
            let age = (Utc::now() - r.started_at).to_std().unwrap_or_default();
            let interrupted = match claimant {
                Liveness::Gone => true,
                Liveness::Alive => false,
                Liveness::Unknown => age > START_WINDOW,
            };
            if r.stop.is_some() || interrupted {
                self.settle_unspawned(
                    build,
                    "the executor that claimed it stopped while starting it",
                )
                .await;
            }
            return;
        };
        if os::is_alive(pid, r.proc_start) {
            return;
        }
        // The supervisor is gone: whatever the build left running goes too.
        self.kill_tree(build).await;
        // The owner may be about to record the exit.
        tokio::time::sleep(EXIT_RECORD_WAIT).await;
        if let Some(status) = build.paths.load().and_then(|r| r.status) {
            build.finish(status).await;
            return;
        }
        build.merge_disk_stop();
        let r = build.snapshot();
        let status = match r.stop {
            Some(reason) => r.stopped_status(reason),
            // It ended while no executor waited for it: its supervisor wrote the code.
            None => supervisor::recorded_exit(&build.paths.exit()).unwrap_or_else(|| BuildStatus::lost(
                Some(true),
                format!(
                    "process {pid} is gone and no exit was recorded (killed with its supervisor while the executor was not running)"
                ),
            )),
        };
        let status = crate::reaper::with_handshake(self, build, status).await;
        build.finish(status).await;
    }

    /// Settles a build whose `launch` was never spawned: stopped if a stop was asked,
    /// else `Lost` with "the build's own process never started" (`build_started:
    /// false`), which tells a caller it may start the build again. Nothing of it runs; its
    /// token file goes.
    async fn settle_unspawned(&self, build: &Build, why: &str) {
        let r = build.snapshot();
        let status = match r.stop {
            Some(reason) => r.stopped_status(reason),
            None => BuildStatus::lost(Some(false), format!("launch was never spawned: {why}")),
        };
        tracing::info!(build_id = %build.id, %status, "settling a build that was never spawned");
        build.finish(status).await;
    }

    /// SIGKILLs every process of `build` (process group, cgroup, marked processes) on a
    /// blocking thread and waits until they are gone.
    pub(crate) async fn kill_tree(&self, build: &Build) {
        let r = build.snapshot();
        let killed = crate::tree::kill_blocking(r.pid, r.cgroup, build.paths.mark()).await;
        if killed > 0 {
            tracing::info!(build_id = %build.id, killed, "killed processes the build left running");
        }
    }

    /// The status of build `id`.
    pub(crate) async fn status(self: &Arc<Self>, id: BuildId) -> Result<BuildStatus, Error> {
        let build = self.lookup(id).ok_or_else(|| {
            Error::build_not_found(id)
                .with_executor(SCHEME)
                .with_operation("status")
        })?;
        self.refresh(&build).await;
        let r = build.durable_snapshot().await;
        Ok(match (r.status, r.pid) {
            (Some(status), _) => status,
            (None, None) => BuildStatus::pending("starting launch"),
            (None, Some(_)) => BuildStatus::running(),
        })
    }

    /// Waits until build `id`'s status differs from `last_seen` (the contract of
    /// [`Executor::wait_for_change`]): every change of the build's record (the reaper's
    /// exit, a stop) wakes it; an adopted build, which no reaper watches, is also re-read
    /// every [`ADOPTED_POLL`].
    pub(crate) async fn wait_for_change(
        self: &Arc<Self>,
        id: BuildId,
        last_seen: &BuildStatus,
    ) -> Result<BuildStatus, Error> {
        let build = self.lookup(id).ok_or_else(|| {
            Error::build_not_found(id)
                .with_executor(SCHEME)
                .with_operation("wait_for_change")
        })?;
        // Subscribed before reading, so a change between the read and the wait wakes us.
        let mut changes = build.subscribe();
        loop {
            let now = self.status(id).await?;
            if now != *last_seen || now.is_terminal() {
                return Ok(now);
            }
            let poll = if build.owned {
                None
            } else {
                Some(ADOPTED_POLL)
            };
            tokio::select! {
                // The sender lives in `build`, which we hold: `changed` cannot fail.
                _ = changes.changed() => {}
                _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => {}
            }
        }
    }

    /// Arms the executor's backstop: a task that stops `build` for `reason` at `at`.
    pub(crate) fn arm_deadline(
        self: &Arc<Self>,
        build: &Arc<Build>,
        at: chrono::DateTime<Utc>,
        reason: StopReason,
    ) {
        let delay = (at - Utc::now()).to_std().unwrap_or_default();
        let (inner, b) = (self.clone(), build.clone());
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tracing::info!(build_id = %b.id, ?reason, "build ran past its deadline; stopping it");
            if let Err(e) = inner.terminate(&b, reason).await {
                tracing::warn!(build_id = %b.id, error = %e, "cannot stop a build past its deadline");
            }
        });
        build.add_timer(task.abort_handle());
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    /// Pre-flight: job-tools' `launch` (and its `#!` interpreter) is executable and the
    /// state directory is writable.
    async fn preflight(&self, build: &StartConfig) -> Result<executor_base::Preflight, Error> {
        let _ = build;
        let s = &self.inner.settings;
        Ok(crate::preflight::run(&s.launch(), &s.builds_dir))
    }

    /// Runs to its end even when the caller stops waiting: the start is a task of its
    /// own, so dropping this future (a caller's timeout, an aborted task) never leaves a
    /// half-started build behind. The build is then either spawned (and `stop` ends it) or
    /// rolled back.
    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let inner = self.inner.clone();
        let cfg = build.clone();
        let id = build.build_id;
        tokio::spawn(async move { inner.requests.track(inner.start(&cfg)).await })
            .await
            .unwrap_or_else(|e| {
                Err(Error::new(
                    executor_base::ErrorKind::Unexpected,
                    format!("the start of build {id} panicked: {e}"),
                )
                .with_executor(SCHEME)
                .with_operation("start"))
            })
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let inner = &self.inner;
        inner.requests.track(inner.stop(build.build_id)).await
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        let inner = &self.inner;
        inner.requests.track(inner.status(build.build_id)).await
    }

    /// From the build's record: accepted and running when `launch` was spawned (one
    /// step of `start`), finished when the reaper saw it exit, and the cgroup's
    /// `memory.peak` where cgroup v2 accounts memory.
    async fn timings(&self, build: &StopConfig) -> Result<Option<BuildTimings>, Error> {
        Ok(self.inner.timings(build.build_id))
    }

    fn stats(&self) -> Stats {
        Stats {
            requests: self.inner.requests.snapshot(),
            builds: self.inner.counter.snapshot(),
            ..Stats::default()
        }
    }

    async fn cleanup(&self) -> Result<(), Error> {
        let inner = &self.inner;
        inner.requests.track(inner.cleanup()).await
    }

    /// Stops every live build in the state directory, those this instance started and
    /// those it adopted from an earlier one, and waits until they ended.
    async fn stop_all(&self) -> Result<Vec<BuildId>, Error> {
        let inner = &self.inner;
        inner.requests.track(inner.stop_all()).await
    }

    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let inner = &self.inner;
        inner.requests.track(inner.gc(dry_run)).await
    }

    /// Woken by the build's record (the reaper records the exit at once), no polling.
    async fn wait_for_change(
        &self,
        build: &StopConfig,
        last_seen: &BuildStatus,
    ) -> Result<BuildStatus, Error> {
        self.inner.wait_for_change(build.build_id, last_seen).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use executor_base::owner::ProcessIdentity;
    use executor_base::{ErrorKind, Executor, Owner, Phase};

    use crate::record::{BuildPaths, Record};
    use crate::testutil::{self, config};

    /// Leaves build `id`'s directory as a start killed between its claim and the spawn
    /// does (state file without a pid, token file, `owner`), claimed by `owner`.
    fn interrupted_claim(builds: &std::path::Path, id: u64, owner: Option<Owner>) {
        use std::os::unix::fs::DirBuilderExt;
        let paths = BuildPaths::new(builds, executor_base::BuildId::new(id).unwrap());
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&paths.dir)
            .unwrap();
        let now = Utc::now();
        paths
            .save(&Record {
                build_id: executor_base::BuildId::new(id).unwrap(),
                pid: None,
                proc_start: None,
                started_at: now,
                timeout_minutes: 90,
                kill_at: now + chrono::Duration::minutes(91),
                expires_at: now + chrono::Duration::minutes(120),
                stop: None,
                status: None,
                cgroup: None,
                memory_peak: None,
                finished_at: None,
                owner: None,
            })
            .unwrap();
        std::fs::write(paths.token(), "a-secret-token").unwrap();
        std::fs::create_dir(paths.work()).unwrap();
        if let Some(o) = owner {
            std::fs::write(paths.dir.join("owner"), o.to_label()).unwrap();
        }
    }

    fn runs(builds: &std::path::Path, id: u64) -> usize {
        std::fs::read_to_string(builds.join(format!("{id}.runs")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_start_whose_claimant_died_before_the_spawn_is_never_spawned_and_starts_again_once() {
        let tools = testutil::job_tools("echo run >> \"$SD_PROCESS_BUILD.runs\"; exit 0");
        let state = tempfile::tempdir().unwrap();
        let builds = state.path().join("builds");
        let Some(Owner::Process(me)) = Owner::current() else {
            panic!("no process identity");
        };
        // Our pid with another start time: a process that is gone (its pid reused).
        let gone = Owner::Process(ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        });
        interrupted_claim(&builds, 21, Some(gone));
        let exec = testutil::executor(tools.path(), state.path()).await;
        let b = config(21);
        // Settled at once, not after the 10 s start window.
        let s = tokio::time::timeout(Duration::from_secs(1), exec.status(&b.to_stop()))
            .await
            .expect("status answers at once")
            .unwrap();
        assert_eq!(s.phase, Phase::Lost, "{s}");
        assert_eq!(
            s.failure.as_ref().unwrap().build_started,
            Some(false),
            "{s}"
        );
        assert!(s.message.contains("never spawned"), "{s}");
        assert!(!builds.join("21").join("token").exists(), "token file left");
        assert_eq!(runs(&builds, 21), 0);
        // The id is free for the start again (the API's adoption does it), which runs once.
        exec.start(&b).await.unwrap();
        let s = testutil::finished(&exec, &b).await;
        assert_eq!(s.phase, Phase::Succeeded, "{s}");
        assert_eq!(runs(&builds, 21), 1);
    }

    #[tokio::test]
    async fn a_start_whose_claimant_lives_is_left_to_it() {
        let tools = testutil::job_tools("exit 0");
        let state = tempfile::tempdir().unwrap();
        let builds = state.path().join("builds");
        // Claimed by this (live) process, as another executor instance starting it.
        interrupted_claim(&builds, 22, Owner::current());
        let exec = testutil::executor(tools.path(), state.path()).await;
        let b = config(22);
        let s = exec.status(&b.to_stop()).await.unwrap();
        assert_eq!(s.phase, Phase::Pending, "{s}");
        let e = exec.start(&b).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert!(
            builds.join("22").join("token").exists(),
            "the live claim is untouched"
        );
        // A stop settles it as canceled (nothing was spawned) and removes the token.
        tokio::time::timeout(Duration::from_secs(5), exec.stop(&b.to_stop()))
            .await
            .expect("stop of a claim without a process answers")
            .unwrap();
        assert_eq!(
            exec.status(&b.to_stop()).await.unwrap().phase,
            Phase::Canceled
        );
        assert!(!builds.join("22").join("token").exists());
    }
}
