//! One build's record: what is persisted in `<state>/builds/<id>/state.json` (so a
//! restarted executor can still answer `status`, `stop` and `gc`), and the in-memory
//! handle around it that waiters watch.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use executor_base::{BuildId, BuildStatus};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Why the executor stopped a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum StopReason {
    /// `stop` or `cleanup` was called.
    Canceled,
    /// It ran past its timeout (timer or backstop).
    TimedOut,
    /// `gc` found it past its expiry.
    Expired,
}

/// The persisted state of one build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// The build.
    pub build_id: BuildId,
    /// The `launch` process (also its process group id); `None` until spawned.
    pub pid: Option<u32>,
    /// The process's start time in clock ticks since boot (detects pid reuse).
    pub proc_start: Option<u64>,
    /// When the executor started the build.
    pub started_at: DateTime<Utc>,
    /// The build timeout passed to `launch`.
    pub timeout_minutes: u32,
    /// When the executor kills the build if it is still running (timeout + grace).
    pub kill_at: DateTime<Utc>,
    /// When `gc` may remove the build (timeout + the token buffer).
    pub expires_at: DateTime<Utc>,
    /// Set once the executor decided to stop the build.
    pub stop: Option<StopReason>,
    /// The terminal status, once known.
    pub status: Option<BuildStatus>,
}

impl Record {
    /// The terminal status a stop for `reason` results in.
    pub(crate) fn stopped_status(&self, reason: StopReason) -> BuildStatus {
        match reason {
            StopReason::Canceled => BuildStatus::canceled(),
            StopReason::TimedOut => BuildStatus::timed_out(format!(
                "stopped by the executor: ran past its {}-minute timeout",
                self.timeout_minutes
            )),
            StopReason::Expired => BuildStatus::timed_out(format!(
                "stopped by gc: past its expiry ({}-minute timeout plus buffer)",
                self.timeout_minutes
            )),
        }
    }
}

/// Files of one build, all under `<state>/builds/<id>/`.
#[derive(Debug, Clone)]
pub(crate) struct BuildPaths {
    /// The build's directory.
    pub dir: PathBuf,
}

impl BuildPaths {
    pub(crate) fn new(builds_dir: &Path, id: BuildId) -> Self {
        Self {
            dir: builds_dir.join(id.to_string()),
        }
    }
    /// `state.json`.
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `token` (mode 0600, removed as soon as the process is gone).
    pub(crate) fn token(&self) -> PathBuf {
        self.dir.join("token")
    }
    /// `exit`: `launch`'s exit code, written by the supervisor when `launch` ends.
    pub(crate) fn exit(&self) -> PathBuf {
        self.dir.join("exit")
    }
    /// `build.log`: stdout and stderr of `launch`.
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("build.log")
    }
    /// `work/`: the working directory of `launch`.
    pub(crate) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Reads `state.json`; `None` when missing or unreadable.
    pub(crate) fn load(&self) -> Option<Record> {
        let text = std::fs::read(self.state()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes `state.json` atomically (temporary file + rename).
    pub(crate) fn save(&self, record: &Record) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(
            ".state.json.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let result = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_data()))
            .and_then(|()| std::fs::rename(&tmp, self.state()));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the token file; a missing file is fine.
    pub(crate) fn remove_token(&self) {
        match std::fs::remove_file(self.token()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.token().display(), error = %e, "cannot remove token file")
            }
        }
    }
}

/// What `Build::request_stop` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopRequest {
    /// The build had already finished; nothing to do.
    Finished,
    /// The build is (still) to be stopped.
    Pending,
}

/// The in-memory handle of one build.
#[derive(Debug)]
pub(crate) struct Build {
    /// The build.
    pub id: BuildId,
    /// Its files.
    pub paths: BuildPaths,
    /// Whether this executor spawned it (and a reaper task waits for it). Builds found in
    /// the state directory after a restart are *adopted*: watched by polling their pid.
    pub owned: bool,
    record: Mutex<Record>,
    changed: watch::Sender<u64>,
    timers: Mutex<Vec<AbortHandle>>,
}

impl Build {
    /// A handle around `record`.
    pub(crate) fn new(paths: BuildPaths, record: Record, owned: bool) -> Self {
        Self {
            id: record.build_id,
            paths,
            owned,
            record: Mutex::new(record),
            changed: watch::channel(0).0,
            timers: Mutex::new(Vec::new()),
        }
    }

    /// A copy of the record.
    pub(crate) fn snapshot(&self) -> Record {
        self.record.lock().clone()
    }

    /// Whether the build reached a terminal status.
    pub(crate) fn is_finished(&self) -> bool {
        self.record.lock().status.is_some()
    }

    /// A receiver that sees every change of the record.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Changes the record with `f`, persists it, and wakes waiters.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        let out = {
            let mut r = self.record.lock();
            let out = f(&mut r);
            if let Err(e) = self.paths.save(&r) {
                tracing::warn!(build_id = %self.id, error = %e, "cannot persist build state");
            }
            out
        };
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// Records the spawned process; unlike [`Build::update`], failing to persist is an
    /// error (the state file is what lets a restarted executor find the process).
    pub(crate) fn set_spawned(&self, pid: u32, proc_start: Option<u64>) -> std::io::Result<()> {
        {
            let mut r = self.record.lock();
            r.pid = Some(pid);
            r.proc_start = proc_start;
            self.paths.save(&r)?;
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Marks the build to be stopped for `reason` (the first reason wins).
    pub(crate) fn request_stop(&self, reason: StopReason) -> StopRequest {
        if self.is_finished() {
            return StopRequest::Finished;
        }
        self.update(|r| {
            if r.status.is_some() {
                StopRequest::Finished
            } else {
                r.stop.get_or_insert(reason);
                StopRequest::Pending
            }
        })
    }

    /// Takes a stop decision another executor instance wrote to the state file (e.g.
    /// `sdx stop` from another process) into this record.
    pub(crate) fn merge_disk_stop(&self) {
        if let Some(disk) = self.paths.load().and_then(|r| r.stop) {
            self.record.lock().stop.get_or_insert(disk);
        }
    }

    /// Records the terminal `status` unless one is already recorded; removes the token
    /// file and cancels timers. Returns whether this call made the build terminal.
    pub(crate) fn finish(&self, status: BuildStatus) -> bool {
        let made_terminal = self.update(|r| {
            if r.status.is_some() {
                false
            } else {
                r.status = Some(status);
                true
            }
        });
        self.paths.remove_token();
        self.cancel_timers();
        made_terminal
    }

    /// Records a terminal `status` in memory only, for a start that failed before the
    /// build owned its directory (which may belong to another live build).
    pub(crate) fn abandon(&self, status: BuildStatus) {
        self.record.lock().status.get_or_insert(status);
        self.changed.send_modify(|n| *n += 1);
        self.cancel_timers();
    }

    fn cancel_timers(&self) {
        for t in self.timers.lock().drain(..) {
            t.abort();
        }
    }

    /// Keeps `timer` to cancel it when the build finishes.
    pub(crate) fn add_timer(&self, timer: AbortHandle) {
        if self.is_finished() {
            timer.abort();
        } else {
            self.timers.lock().push(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> Record {
        let now = Utc::now();
        Record {
            build_id: BuildId::new(id).unwrap(),
            pid: Some(4242),
            proc_start: Some(7),
            started_at: now,
            timeout_minutes: 90,
            kill_at: now,
            expires_at: now,
            stop: None,
            status: None,
        }
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(dir.path(), BuildId::new(5).unwrap());
        std::fs::create_dir(&paths.dir).unwrap();
        assert!(paths.load().is_none());
        let mut r = record(5);
        r.status = Some(BuildStatus::exited(2));
        paths.save(&r).unwrap();
        assert_eq!(paths.load().unwrap(), r);
        // no temporary files left behind
        assert_eq!(std::fs::read_dir(&paths.dir).unwrap().count(), 1);
    }

    #[test]
    fn first_stop_reason_and_first_status_win() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(dir.path(), BuildId::new(6).unwrap());
        std::fs::create_dir(&paths.dir).unwrap();
        std::fs::write(paths.token(), "t").unwrap();
        let b = Build::new(paths.clone(), record(6), true);
        assert_eq!(b.request_stop(StopReason::TimedOut), StopRequest::Pending);
        assert_eq!(b.request_stop(StopReason::Canceled), StopRequest::Pending);
        assert_eq!(b.snapshot().stop, Some(StopReason::TimedOut));
        assert!(b.finish(BuildStatus::canceled()));
        assert!(!b.finish(BuildStatus::succeeded()));
        assert_eq!(b.snapshot().status, Some(BuildStatus::canceled()));
        assert_eq!(b.request_stop(StopReason::Canceled), StopRequest::Finished);
        assert!(!paths.token().exists(), "finish removes the token file");
        assert_eq!(paths.load().unwrap().status, Some(BuildStatus::canceled()));
    }

    #[test]
    fn stopped_status_names_the_reason() {
        let r = record(1);
        assert_eq!(
            r.stopped_status(StopReason::Canceled).phase,
            executor_base::Phase::Canceled
        );
        let t = r.stopped_status(StopReason::TimedOut);
        assert_eq!(t.phase, executor_base::Phase::TimedOut);
        assert!(t.message.contains("90-minute"));
    }
}
