//! `gc` and `cleanup`: builds past their expiry (start + timeout + the 30-minute token
//! buffer) are stopped and their directories (log, state, work) removed; and `stop_all`,
//! the explicit "stop every live build" (`cleanup` never stops a live build).
//!
//! A start prepares its directory under a temporary name (`.<id>.<pid>.<random>`, its
//! state file, written first, naming the process as `owner`, [`executor_base::owner`];
//! earlier versions wrote an `owner` file, still read) and renames it to the id with its
//! state file in place. A temporary directory is collected at once when its
//! owner is gone, else after an hour; a build directory without a state file (made by an
//! older sdx) at once when its owner is gone, else after the longest timeout and the
//! buffer. A started build belongs to the state directory, not to the process that
//! started it: a later instance adopts it, so its owner's death orphans nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use executor_base::{BuildId, Error, GcReport, Liveness, Owner, TOKEN_BUFFER_MINUTES};

use crate::error;
use crate::executor::Inner;
use crate::record::{BuildPaths, StopReason};

/// The file that named the owner of a build's directory before the state file did
/// (read for directories an earlier sdx made).
const OWNER_FILE: &str = "owner";

/// The owner label of the build directory `dir` (the process that claimed it): from its
/// state file, else from an `owner` file. Blocking (small reads).
fn owner_label(dir: &std::path::Path) -> Option<String> {
    let paths = BuildPaths {
        dir: dir.to_path_buf(),
    };
    paths.load().and_then(|r| r.owner).or_else(|| {
        std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .map(|l| l.trim().to_string())
    })
}

/// Whether the process that claimed the build directory `dir` still runs
/// ([`Liveness::Unknown`] without a recorded owner). Blocking (small reads).
pub(crate) fn owner_liveness(dir: &std::path::Path) -> Liveness {
    Owner::liveness_of_label(owner_label(dir).as_deref())
}

/// Removes a build's directory. A process of another instance sharing the state
/// directory may still write into it for a moment (its reaper's last record): "not
/// empty" is tried again a few times.
fn remove_build_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 * tries));
            }
            other => return other,
        }
    }
}

/// When the directory of a start interrupted before its claim counts as abandoned.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

impl Inner {
    /// Finds (and unless `dry_run`, stops and removes) expired builds.
    pub(crate) async fn gc(self: &Arc<Self>, dry_run: bool) -> Result<GcReport, Error> {
        let now = Utc::now();
        let dir = &self.settings.builds_dir;
        if let Err(e) = std::fs::read_dir(dir) {
            return Err(error::io("gc", "cannot list builds", dir, e));
        }
        let mut expired = Vec::new();
        let mut first_error = None;
        let mut ids = self.build_ids_on_disk();
        ids.sort();
        for id in ids {
            let paths = BuildPaths::new(dir, id);
            let in_memory = self.builds.lock().get(&id).map(|b| b.snapshot().expires_at);
            let Some(expires_at) = in_memory
                .or_else(|| paths.load().map(|r| r.expires_at))
                .or_else(|| self.undated_expiry(&paths))
            else {
                continue;
            };
            if now <= expires_at {
                continue;
            }
            expired.push(format!("build/{id}"));
            if dry_run {
                continue;
            }
            if let Some(build) = self.lookup(id) {
                if !build.is_finished()
                    && let Err(e) = self.terminate(&build, StopReason::Expired).await
                {
                    // Never delete the files of a process we could not stop.
                    first_error.get_or_insert(e);
                    continue;
                }
                // The reaper's last write may still be under way: let it land first.
                let _ = build.flush().await;
                let mut map = self.builds.lock();
                if map.get(&id).is_some_and(|b| Arc::ptr_eq(b, &build)) {
                    map.remove(&id);
                }
            }
            let dir = paths.dir.clone();
            let removed = tokio::task::spawn_blocking(move || remove_build_dir(&dir))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match removed {
                Ok(()) => tracing::info!(build_id = %id, "gc removed an expired build"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(error::io(
                        "gc",
                        "cannot remove build directory",
                        &paths.dir,
                        e,
                    ));
                }
            }
        }
        if !dry_run {
            self.remove_abandoned_starts().await;
        }
        // Finished builds whose directory someone else removed.
        if !dry_run {
            self.builds.lock().retain(|_, b| {
                !(b.is_finished() && b.snapshot().expires_at < now && !b.paths.dir.exists())
            });
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(GcReport { dry_run, expired }),
        }
    }

    /// Removes directories of starts that a crash interrupted before they were claimed
    /// (`.<id>.<pid>.<random>`): at once when their owner is gone, else after an hour.
    async fn remove_abandoned_starts(&self) {
        let dir = self.settings.builds_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return;
            };
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED_AFTER);
                let gone = owner_liveness(&e.path()) == Liveness::Gone;
                if e.file_name().to_string_lossy().starts_with('.') && (old || gone) {
                    match std::fs::remove_dir_all(e.path()) {
                        Ok(()) => tracing::info!(path = %e.path().display(), "gc removed an interrupted start"),
                        Err(err) => tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an interrupted start"),
                    }
                }
            }
        })
        .await;
    }

    /// The expiry of a directory without a readable state file (a crash between creating
    /// it and writing the state): now when its owner is gone, else its modification time
    /// plus the longest timeout and the buffer. Undatable directories are never expired.
    fn undated_expiry(&self, paths: &BuildPaths) -> Option<DateTime<Utc>> {
        if owner_liveness(&paths.dir) == Liveness::Gone {
            // Orphaned by a start killed half-way: collect now.
            return Some(DateTime::<Utc>::MIN_UTC);
        }
        let modified = std::fs::metadata(&paths.dir)
            .and_then(|m| m.modified())
            .ok()?;
        let minutes = self.settings.timeout.max_minutes + TOKEN_BUFFER_MINUTES;
        Some(DateTime::<Utc>::from(modified) + chrono::Duration::minutes(i64::from(minutes)))
    }

    /// `cleanup`: collects expired builds (see [`Inner::gc`]). It never stops a live build:
    /// a server that restarts leaves its builds running and adopts them again.
    pub(crate) async fn cleanup(self: &Arc<Self>) -> Result<(), Error> {
        self.gc(false).await.map(|_| ())
    }

    /// Stops every live build in the state directory (started by this instance or
    /// adopted), concurrently; the first error is returned after all were tried.
    pub(crate) async fn stop_all(self: &Arc<Self>) -> Result<Vec<BuildId>, Error> {
        for id in self.build_ids_on_disk() {
            self.lookup(id);
        }
        let running: Vec<_> = self
            .builds
            .lock()
            .values()
            .filter(|b| !b.is_finished())
            .cloned()
            .collect();
        let stops = running
            .iter()
            .map(|b| self.terminate(b, StopReason::Canceled));
        futures::future::join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, Error>>()?;
        let mut ids: Vec<BuildId> = running.iter().map(|b| b.id).collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use executor_base::{ErrorKind, Executor, ExecutorExt, Phase};

    use crate::testutil::{self, config};

    #[tokio::test]
    async fn gc_stops_and_removes_expired_builds_only() {
        let tools = testutil::job_tools("[ \"$SD_BUILD_ID\" = 3 ] && exit 0\nexec sleep 3600");
        let state = tempfile::tempdir().unwrap();
        let exec = testutil::executor(tools.path(), state.path()).await;
        let (running, fresh, done) = (config(1), config(2), config(3));
        for b in [&running, &fresh, &done] {
            exec.start(b).await.unwrap();
        }
        exec.wait_until_finished(
            &done.to_stop(),
            Duration::from_millis(20),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        let pid = exec.pid(running.build_id).unwrap();
        let past = Utc::now() - chrono::Duration::minutes(1);
        for b in [&running, &done] {
            exec.inner
                .lookup(b.build_id)
                .unwrap()
                .update(|r| r.expires_at = past)
                .await;
        }
        std::fs::create_dir(state.path().join("builds").join("not-a-build")).unwrap();

        let report = exec.gc(true).await.unwrap();
        assert!(report.dry_run);
        assert_eq!(report.expired, ["build/1", "build/3"]);
        assert_eq!(
            exec.status(&running.to_stop()).await.unwrap().phase,
            Phase::Running
        );
        assert!(exec.builds_dir().join("3").exists());

        let report = exec.gc(false).await.unwrap();
        assert_eq!(report.expired, ["build/1", "build/3"]);
        // SIGKILLed and reaped by its supervisor's exit: gone within moments, however
        // loaded the machine.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::os::is_alive(pid, None) && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!crate::os::is_alive(pid, None));
        for b in [&running, &done] {
            assert!(!exec.builds_dir().join(b.build_id.to_string()).exists());
            assert_eq!(
                exec.status(&b.to_stop()).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
        }
        assert_eq!(
            exec.status(&fresh.to_stop()).await.unwrap().phase,
            Phase::Running
        );
        assert!(
            exec.builds_dir().join("not-a-build").exists(),
            "gc only touches build directories"
        );
        assert!(exec.gc(false).await.unwrap().expired.is_empty());
        exec.cleanup().await.unwrap();
        assert_eq!(
            exec.status(&fresh.to_stop()).await.unwrap().phase,
            Phase::Running,
            "cleanup never stops a live build"
        );
        exec.stop_all().await.unwrap();
        assert_eq!(
            exec.status(&fresh.to_stop()).await.unwrap().phase,
            Phase::Canceled
        );
    }

    #[tokio::test]
    async fn a_start_killed_half_way_is_collected_at_once_when_its_owner_is_gone() {
        use super::OWNER_FILE;
        use executor_base::Owner;
        use executor_base::owner::ProcessIdentity;
        let tools = testutil::job_tools("exit 0");
        let state = tempfile::tempdir().unwrap();
        let exec = testutil::executor(tools.path(), state.path()).await;
        let Some(Owner::Process(me)) = Owner::current() else {
            panic!("no process identity");
        };
        // Directories as a start killed between the claim and the state file leaves them
        // (the token file already written): one by a process that is gone (our pid with
        // another start time is a recycled pid), one by a live process (this one), one
        // from before owners were recorded.
        let gone = Owner::Process(ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        });
        for (id, owner) in [(11, Some(gone)), (12, Owner::current()), (13, None)] {
            let dir = exec.builds_dir().join(id.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("token"), "a-secret-token").unwrap();
            if let Some(o) = owner {
                std::fs::write(dir.join(OWNER_FILE), o.to_label()).unwrap();
            }
        }
        let report = exec.gc(false).await.unwrap();
        assert_eq!(report.expired, ["build/11"]);
        assert!(!exec.builds_dir().join("11").exists());
        assert!(exec.builds_dir().join("12").exists());
        assert!(exec.builds_dir().join("13").exists());

        // A real start records its owner (this process) in the state file, no file of
        // its own.
        exec.start(&config(14)).await.unwrap();
        let dir = exec.builds_dir().join("14");
        let label = super::owner_label(&dir).unwrap();
        assert_eq!(Owner::parse(&label), Owner::current());
        assert!(!dir.join(OWNER_FILE).exists());
        exec.cleanup().await.unwrap();
    }
}
