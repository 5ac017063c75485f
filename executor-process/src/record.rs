//! One build's record: what is persisted in `<state>/builds/<id>/state.json` (so a
//! restarted executor can still answer `status`, `stop` and `gc`), and the in-memory
//! handle around it that waiters watch.
//!
//! The state file is rewritten in place ([`executor_base::record_file`]): a save creates
//! no file, a writer killed at any moment leaves the previous or the new record, and
//! `sdx stop`/`status` in another process never read a torn one. Only the save that
//! makes the build terminal is `fdatasync`ed: the earlier ones describe processes a
//! power loss kills anyway.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use executor_base::record_file::{self, Durability};
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
    /// The build's own cgroup (v2), when the machine allowed one (see `tree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// The most memory the build's cgroup used (`memory.peak`, bytes), when accounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak: Option<u64>,
    /// When the reaper saw `launch` exit (for [`executor_base::BuildTimings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The process that claimed the build's directory ([`executor_base::Owner`] label),
    /// so `gc` can tell an interrupted start whose claimant is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
    /// `result`: the launch handshake `launch` writes when it ends
    /// (`SD_LAUNCH_RESULT_FILE`).
    pub(crate) fn result(&self) -> PathBuf {
        self.dir.join("result")
    }
    /// `build.log`: stdout and stderr of `launch`.
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("build.log")
    }
    /// `spool.jsonl`: what `launch` could not report while the API was unreachable
    /// (`SD_SPOOL_FILE`), for the API to read when it adopts the build.
    pub(crate) fn spool(&self) -> PathBuf {
        self.dir.join("spool.jsonl")
    }
    /// The value of the marker variable every process of the build inherits.
    pub(crate) fn mark(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
    /// `work/`: the working directory of `launch`.
    pub(crate) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Reads `state.json` (either format of [`record_file`]); `None` when missing or
    /// unreadable.
    pub(crate) fn load(&self) -> Option<Record> {
        record_file::load_json(&self.state())
    }

    /// Writes `state.json` in place ([`record_file`]); `fdatasync`ed once the record is
    /// terminal.
    pub(crate) fn save(&self, record: &Record) -> std::io::Result<()> {
        let durability = if record.status.is_some() {
            Durability::PowerLoss
        } else {
            Durability::ProcessCrash
        };
        record_file::save_json(&self.state(), record, durability)
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

/// Held by the task running a build's `start`: when it is dropped (the start returned,
/// failed, or was cancelled half-way) the build is no longer starting, and whoever waits
/// for its spawn is woken. A build left without a pid after that was never spawned.
pub(crate) struct StartGuard(pub(crate) std::sync::Arc<Build>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        self.0.starting.store(false, Ordering::SeqCst);
        self.0.changed.send_modify(|n| *n += 1);
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
    /// Whether this executor's `start` of the build is still under way (only ever true for
    /// an owned build; cleared by [`StartGuard`] however the start ends).
    starting: AtomicBool,
    record: Mutex<Record>,
    /// Bumped by every change of `record`; `saved` is the last one written to disk.
    changes: AtomicU64,
    saved: tokio::sync::Mutex<u64>,
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
            starting: AtomicBool::new(owned),
            record: Mutex::new(record),
            changes: AtomicU64::new(0),
            saved: tokio::sync::Mutex::new(0),
            changed: watch::channel(0).0,
            timers: Mutex::new(Vec::new()),
        }
    }

    /// A copy of the record.
    pub(crate) fn snapshot(&self) -> Record {
        self.record.lock().clone()
    }

    /// A copy of the record for `status`: a terminal status is returned only once it is
    /// on disk (`fdatasync`ed, see [`BuildPaths::save`]), waiting for its write if that
    /// is under way, so whoever reports the outcome on (the Gearman worker's
    /// `WORK_COMPLETE`, the API's final status) never reports one a power loss could
    /// take back. Before the build is terminal it is [`Build::snapshot`].
    pub(crate) async fn durable_snapshot(&self) -> Record {
        let r = self.snapshot();
        if r.status.is_none() {
            return r;
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(build_id = %self.id, error = %e, "cannot persist build state");
        }
        self.snapshot()
    }

    /// Whether the build reached a terminal status.
    pub(crate) fn is_finished(&self) -> bool {
        self.record.lock().status.is_some()
    }

    /// Whether this executor's `start` of the build is still under way.
    pub(crate) fn is_starting(&self) -> bool {
        self.starting.load(Ordering::SeqCst)
    }

    /// A receiver that sees every change of the record.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Changes the record with `f`, persists it (on a blocking thread), and wakes
    /// waiters. A failed save is logged; see [`Build::set_spawned`].
    pub(crate) async fn update<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        let (out, change, snapshot) = self.change(f);
        if let Err(e) = self.persist(change, snapshot).await {
            tracing::warn!(build_id = %self.id, error = %e, "cannot persist build state");
        }
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// Applies `f` in memory; returns its result, the change number and the new record.
    fn change<T>(&self, f: impl FnOnce(&mut Record) -> T) -> (T, u64, Record) {
        let mut r = self.record.lock();
        let out = f(&mut r);
        let change = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        (out, change, r.clone())
    }

    /// Writes `snapshot` (change number `change`) unless a later change is already on
    /// disk, so concurrent updates never leave an older record on disk.
    async fn persist(&self, change: u64, snapshot: Record) -> std::io::Result<()> {
        let mut saved = self.saved.lock().await;
        if change <= *saved {
            return Ok(());
        }
        let paths = self.paths.clone();
        tokio::task::spawn_blocking(move || paths.save(&snapshot))
            .await
            .map_err(std::io::Error::other)??;
        *saved = change;
        Ok(())
    }

    /// Writes the newest record unless it is on disk already, and waits for a write in
    /// progress: afterwards no earlier change writes the state file again (an older
    /// change's write finds a newer one saved and skips). Whoever removes the build's
    /// directory calls this first, or a write still under way (the reaper's final one)
    /// recreates a file in it and the removal fails with "directory not empty".
    pub(crate) async fn flush(&self) -> std::io::Result<()> {
        let (change, snapshot) = {
            let r = self.record.lock();
            (self.changes.load(Ordering::SeqCst), r.clone())
        };
        self.persist(change, snapshot).await
    }

    /// Records the spawned process and its cgroup; unlike [`Build::update`], failing to
    /// persist is an error (the state file is what lets a restarted executor find the
    /// process).
    pub(crate) async fn set_spawned(
        &self,
        pid: u32,
        proc_start: Option<u64>,
        cgroup: Option<PathBuf>,
    ) -> std::io::Result<()> {
        let (_, change, snapshot) = self.change(|r| {
            r.pid = Some(pid);
            r.proc_start = proc_start;
            r.cgroup = cgroup;
        });
        let saved = self.persist(change, snapshot).await;
        self.changed.send_modify(|n| *n += 1);
        saved
    }

    /// Marks the build to be stopped for `reason` (the first reason wins).
    pub(crate) async fn request_stop(&self, reason: StopReason) -> StopRequest {
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
        .await
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
    pub(crate) async fn finish(&self, status: BuildStatus) -> bool {
        self.finish_with(status, |_| {}).await
    }

    /// [`Build::finish`], applying `also` to the record in the same save (whether or not
    /// a status was recorded already).
    pub(crate) async fn finish_with(
        &self,
        status: BuildStatus,
        also: impl FnOnce(&mut Record),
    ) -> bool {
        // First, so whoever sees the terminal status finds the token gone.
        self.paths.remove_token();
        let made_terminal = self
            .update(|r| {
                also(r);
                if r.status.is_some() {
                    false
                } else {
                    r.status = Some(status);
                    true
                }
            })
            .await;
        // Last: a timer task finishing its own build is aborted at its next `.await`.
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
            cgroup: None,
            memory_peak: None,
            finished_at: None,
            owner: None,
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
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(paths.state()).unwrap());
        r.memory_peak = Some(42);
        paths.save(&r).unwrap();
        assert_eq!(paths.load().unwrap(), r);
        // rewritten in place; no temporary files left behind
        let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(paths.state()).unwrap());
        assert_eq!(now, inode);
        assert_eq!(std::fs::read_dir(&paths.dir).unwrap().count(), 1);
    }

    #[test]
    fn a_state_file_of_the_earlier_format_loads() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(dir.path(), BuildId::new(8).unwrap());
        std::fs::create_dir(&paths.dir).unwrap();
        let r = record(8);
        std::fs::write(paths.state(), serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        assert_eq!(paths.load().unwrap(), r);
    }

    #[tokio::test]
    async fn first_stop_reason_and_first_status_win() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(dir.path(), BuildId::new(6).unwrap());
        std::fs::create_dir(&paths.dir).unwrap();
        std::fs::write(paths.token(), "t").unwrap();
        let b = Build::new(paths.clone(), record(6), true);
        assert_eq!(
            b.request_stop(StopReason::TimedOut).await,
            StopRequest::Pending
        );
        assert_eq!(
            b.request_stop(StopReason::Canceled).await,
            StopRequest::Pending
        );
        assert_eq!(b.snapshot().stop, Some(StopReason::TimedOut));
        assert!(b.finish(BuildStatus::canceled()).await);
        assert!(!b.finish(BuildStatus::succeeded()).await);
        assert_eq!(b.snapshot().status, Some(BuildStatus::canceled()));
        assert_eq!(
            b.request_stop(StopReason::Canceled).await,
            StopRequest::Finished
        );
        assert!(!paths.token().exists(), "finish removes the token file");
        assert_eq!(paths.load().unwrap().status, Some(BuildStatus::canceled()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_terminal_status_is_answered_only_once_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(dir.path(), BuildId::new(9).unwrap());
        std::fs::create_dir(&paths.dir).unwrap();
        paths.save(&record(9)).unwrap();
        let b = std::sync::Arc::new(Build::new(paths.clone(), record(9), true));
        // A slow disk: the reaper's terminal write cannot begin yet.
        let disk = b.saved.lock().await;
        let reaper = tokio::spawn({
            let b = b.clone();
            async move { b.finish(BuildStatus::exited(0)).await }
        });
        while !b.is_finished() {
            tokio::task::yield_now().await;
        }
        let asker = tokio::spawn({
            let b = b.clone();
            async move { b.durable_snapshot().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !asker.is_finished(),
            "answered a status that is not on disk"
        );
        assert_eq!(paths.load().unwrap().status, None);
        drop(disk);
        let answered = asker.await.unwrap();
        assert_eq!(answered.status, Some(BuildStatus::exited(0)));
        assert_eq!(paths.load().unwrap().status, Some(BuildStatus::exited(0)));
        assert!(reaper.await.unwrap());
        // Before the build is terminal, nothing waits.
        let running = Build::new(paths.clone(), record(9), true);
        let _disk = running.saved.lock().await;
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            running.durable_snapshot(),
        )
        .await
        .expect("a running build's status does not wait for the disk");
        assert_eq!(r.status, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_leave_the_latest_record_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(dir.path(), BuildId::new(7).unwrap());
        std::fs::create_dir(&paths.dir).unwrap();
        let b = std::sync::Arc::new(Build::new(paths.clone(), record(7), true));
        let tasks: Vec<_> = (0..50u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.update(|r| r.timeout_minutes += i + 1).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(b.snapshot().timeout_minutes, 90 + (1..=50).sum::<u32>());
        assert_eq!(paths.load().unwrap(), b.snapshot());
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
