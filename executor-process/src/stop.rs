//! `stop`: SIGTERM to the build's process group (the supervisor and `launch`, which stops
//! its step within its share of the grace and reports), SIGKILL to every process of the
//! build after the grace (group, cgroup, marked processes: see `tree`), and waiting until
//! the exit is recorded. Idempotent; stopping an unknown or finished build is `Ok`.

use std::sync::Arc;
use std::time::Duration;

use executor_base::{BuildId, Error, ErrorKind};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::SCHEME;
use crate::executor::Inner;
use crate::os::{self, SIGKILL, SIGTERM};
use crate::record::{Build, StopReason, StopRequest};

/// How long to wait for the exit after SIGKILL (which cannot be caught) before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often an adopted build's pid is polled (there is no child handle to wait on).
const POLL: Duration = Duration::from_millis(50);

impl Inner {
    /// `stop` of build `id`.
    pub(crate) async fn stop(self: &Arc<Self>, id: BuildId) -> Result<(), Error> {
        match self.lookup(id) {
            Some(build) => self.terminate(&build, StopReason::Canceled).await,
            None => Ok(()),
        }
    }

    /// Stops `build` for `reason` and waits until its exit is recorded.
    pub(crate) async fn terminate(
        self: &Arc<Self>,
        build: &Arc<Build>,
        reason: StopReason,
    ) -> Result<(), Error> {
        self.refresh(build).await;
        if build.request_stop(reason).await == StopRequest::Finished {
            build.paths.remove_token();
            return Ok(());
        }
        let Some(pid) = wait_spawned(build).await else {
            // Never spawned (adopted without a pid, or a start that ended without a
            // spawn): `refresh` settles it as stopped, or leaves it to the live instance
            // that is starting it.
            self.refresh(build).await;
            return Ok(());
        };
        // Only signal a group whose leader we know is ours: an adopted build's pid may have
        // been reused once the process is gone.
        let r = build.snapshot();
        let ours = build.owned || os::is_alive(pid, r.proc_start);
        if ours {
            signal(build, pid, SIGTERM)?;
        }
        if self.wait_finished(build, self.settings.stop_grace).await {
            return Ok(());
        }
        if ours {
            tracing::info!(build_id = %build.id, pid, "build did not exit within the grace; sending SIGKILL");
            signal(build, pid, SIGKILL)?;
        }
        // Every process of the build: its cgroup and marked processes outside the group.
        self.kill_tree(build).await;
        if self.wait_finished(build, KILL_WAIT).await {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "build {} (process group {pid}) did not exit after SIGKILL",
                build.id
            ),
        )
        .with_executor(SCHEME)
        .with_operation("stop"))
    }

    /// Waits up to `within` until `build` has a terminal status.
    async fn wait_finished(&self, build: &Build, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut changes = build.subscribe();
        loop {
            self.refresh(build).await;
            if build.is_finished() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wake = if build.owned {
                deadline
            } else {
                deadline.min(now + POLL)
            };
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// Waits until the build's process is spawned; `None` if it finished first, its start
/// ended without a spawn, or (adopted) it has no pid. Bounded by the start itself: the
/// start's [`crate::record::StartGuard`] wakes this when it ends, however it ends.
async fn wait_spawned(build: &Build) -> Option<u32> {
    let mut changes = build.subscribe();
    loop {
        let r = build.snapshot();
        if r.status.is_some() {
            return None;
        }
        if let Some(pid) = r.pid {
            return Some(pid);
        }
        if !build.owned || !build.is_starting() || changes.changed().await.is_err() {
            return None;
        }
    }
}

fn signal(build: &Build, pid: u32, sig: Signal) -> Result<(), Error> {
    match os::signal_group(pid, sig) {
        Ok(_) => Ok(()),
        Err(errno) => Err(Error::new(
            if errno == nix::errno::Errno::EPERM {
                ErrorKind::PermissionDenied
            } else {
                ErrorKind::Unexpected
            },
            format!(
                "cannot send {sig} to process group {pid} of build {}: {errno}",
                build.id
            ),
        )
        .with_executor(SCHEME)
        .with_operation("stop")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use executor_base::{Executor, ExecutorExt, Phase};

    use crate::record::StopReason;
    use crate::testutil::{self, config};

    #[tokio::test]
    async fn backstop_stops_a_build_past_its_timeout_as_timed_out() {
        let tools = testutil::job_tools("exec sleep 3600");
        let state = tempfile::tempdir().unwrap();
        let exec = testutil::executor(tools.path(), state.path()).await;
        let b = config(4);
        exec.start(&b).await.unwrap();
        // Pretend the deadline passed: re-arm the backstop as a restart would.
        let build = exec.inner.lookup(b.build_id).unwrap();
        let past = Utc::now() - chrono::Duration::seconds(1);
        build.update(|r| r.kill_at = past).await;
        exec.inner.arm_deadline(&build, past, StopReason::TimedOut);
        let s = testutil::finished(&exec, &b).await;
        assert_eq!(s.phase, Phase::TimedOut, "{s}");
        assert!(s.message.contains("90-minute"), "{s}");
    }

    #[tokio::test]
    async fn stop_right_after_start_cancels() {
        let tools = testutil::job_tools("exec sleep 3600");
        let state = tempfile::tempdir().unwrap();
        let exec = testutil::executor(tools.path(), state.path()).await;
        let b = config(5);
        let stop = b.to_stop();
        let (started, stopped) = tokio::join!(exec.start(&b), async {
            tokio::task::yield_now().await;
            exec.stop(&stop).await
        });
        started.unwrap();
        stopped.unwrap();
        exec.stop(&stop).await.unwrap();
        let s = exec
            .wait_until_finished(&stop, Duration::from_millis(20), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(s.phase, Phase::Canceled, "{s}");
    }
}
