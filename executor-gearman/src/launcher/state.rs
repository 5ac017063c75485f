//! The worker's state directory (`stateDir`): what it runs, so a restarted worker can
//! adopt or stop it.
//!
//! ```text
//! <stateDir>/lock              flock(2)-ed by the running worker; holds its pid
//! <stateDir>/manager           the manager name, kept across restarts
//! <stateDir>/builds/<n>.json   one record per build number (never a token)
//! ```
//!
//! The lock is released by the kernel when the worker dies, even by `kill -9`, so a
//! second worker on the same directory is refused while the first lives and a restarted
//! one takes over at once. The manager name is kept so that `stop:<manager>` jobs sent
//! for the previous incarnation's builds reach the worker that adopted them. Records are
//! rewritten in place ([`executor_base::record_file`], as the process backend's state
//! files): a save creates no file, a worker killed at any moment leaves the previous or
//! the new record. No record is `fdatasync`ed, the `Finished` one included: a build's
//! outcome is kept durable by its engine (the process backend `fdatasync`s its terminal
//! `state.json` before it wakes the build's waiters; dockerd and the Kubernetes API keep
//! their own), and a restarted worker settles a `Starting` or `Running` record from the
//! engine's status (see `adopt`). The worker's `Finished` record is a cache of that
//! outcome for the retention window, and a second `fdatasync` of it per build would
//! make nothing more durable.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use executor_base::record_file::{self, Durability};
use executor_base::{Error, ErrorKind, StopConfig};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::zuul::BuildReport;

/// Where a recorded build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Stage {
    /// The executor's `start` was called and has not returned.
    Starting,
    /// The executor started it.
    Running,
    /// It ended; `report` holds the outcome.
    Finished,
}

/// One build as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// `ZUUL_UUID`.
    pub uuid: String,
    /// The job name.
    pub name: String,
    /// The build number.
    pub number: u64,
    /// The Gearman function.
    pub function: String,
    /// The handle of the latest job attached to the build.
    pub handle: String,
    /// The executor's stop/status config, without the token.
    pub stop: Value,
    /// The build's timeout in seconds.
    pub timeout_secs: u64,
    /// When the record was made.
    pub started_at: DateTime<Utc>,
    /// Where the build is.
    pub stage: Stage,
    /// The outcome, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<BuildReport>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Record {
    /// The stop config (token left out).
    pub(crate) fn stop_value(stop: &StopConfig) -> Value {
        let mut v = stop.to_json();
        if let Value::Object(m) = &mut v {
            m.remove("token");
        }
        v
    }

    /// The recorded stop config.
    pub(crate) fn stop_config(&self) -> Result<StopConfig, Error> {
        StopConfig::from_json(&self.stop)
    }
}

/// An open, locked state directory.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("stateDir: cannot {what} {}: {e}", path.display()),
    )
    .with_context("key", "stateDir")
}

/// What [`StateDir::open_existing`] found.
#[derive(Debug)]
pub(crate) enum Existing {
    /// No worker ever used the directory.
    Absent,
    /// A live worker holds it (its pid, as it wrote it).
    InUse(String),
    /// Opened and locked.
    Open(StateDir),
}

impl StateDir {
    /// Creates (mode 0700) and locks `dir`; refused while another worker holds it.
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        let builds = dir.join("builds");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&builds)
            .map_err(|e| io_error("create", &builds, e))?;
        match Self::lock(dir)? {
            Ok(s) => Ok(s),
            Err(holder) => Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "stateDir: {} is in use by another gearman worker or sdx gc (pid {holder}); give each worker its own stateDir",
                    dir.display(),
                ),
            )
            .with_context("key", "stateDir")),
        }
    }

    /// Locks `dir` if a worker ever used it, creating nothing (for `sdx gc`).
    pub(crate) fn open_existing(dir: &Path) -> Result<Existing, Error> {
        if !dir.join("builds").is_dir() {
            return Ok(Existing::Absent);
        }
        Ok(match Self::lock(dir)? {
            Ok(s) => Existing::Open(s),
            Err(holder) => Existing::InUse(holder),
        })
    }

    /// Takes the lock of an existing `dir`: `Err(holder's pid)` while another holds it.
    fn lock(dir: &Path) -> Result<Result<Self, String>, Error> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Ok(Err(holder.trim().to_string()));
            }
        };
        let written = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()));
        written.map_err(|e| io_error("write", &path, e))?;
        Ok(Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        }))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The manager name kept here, made from `fresh` on first use.
    pub(crate) fn manager(&self, fresh: impl FnOnce() -> String) -> Result<String, Error> {
        let path = self.dir.join("manager");
        match fs::read_to_string(&path) {
            Ok(m) if !m.trim().is_empty() => Ok(m.trim().to_string()),
            _ => {
                let m = fresh();
                self.write_atomically(&path, m.as_bytes())?;
                Ok(m)
            }
        }
    }

    fn record_path(&self, number: u64) -> PathBuf {
        self.dir.join("builds").join(format!("{number}.json"))
    }

    fn write_atomically(&self, path: &Path, data: &[u8]) -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error("write", &tmp, e))?;
        f.write_all(data).map_err(|e| io_error("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io_error("write", path, e))
    }

    /// Writes a build's record in place.
    pub(crate) fn save(&self, r: &Record) -> Result<(), Error> {
        let data =
            serde_json::to_vec(r).map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?;
        // Never `fdatasync`ed: the engine keeps the outcome durable (module docs).
        let path = self.record_path(r.number);
        record_file::write(&path, &data, Durability::ProcessCrash)
            .map_err(|e| io_error("write", &path, e))
    }

    /// Forgets a build.
    pub(crate) fn remove(&self, number: u64) {
        let path = self.record_path(number);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a build record");
        }
    }

    /// Every readable record; unreadable files are logged and left alone.
    pub(crate) fn load_all(&self) -> Vec<Record> {
        let dir = self.dir.join("builds");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match record_file::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| d.ok_or_else(|| "no complete record".to_string()))
                .and_then(|d| serde_json::from_slice::<Record>(&d).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable build record")
                }
            }
        }
        out.sort_by_key(|r| r.started_at);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::BuildId;

    fn record(number: u64) -> Record {
        let mut stop = StopConfig::new(BuildId::new(number).unwrap());
        stop.token = Some("secret-token".to_string().into());
        Record {
            uuid: format!("u{number}"),
            name: "unit".into(),
            number,
            function: "build:unit".into(),
            handle: "H:1".into(),
            stop: Record::stop_value(&stop),
            timeout_secs: 60,
            started_at: Utc::now(),
            stage: Stage::Running,
            report: None,
            finished_at: None,
        }
    }

    #[test]
    fn records_round_trip_without_the_token_and_the_directory_is_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        state.save(&record(7)).unwrap();
        state.save(&record(8)).unwrap();
        state.remove(8);
        let all = state.load_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].stop_config().unwrap().build_id.get(), 7);
        let disk = fs::read_to_string(tmp.path().join("builds/7.json")).unwrap();
        assert!(!disk.contains("secret-token"), "{disk}");
        // Rewritten in place as the build moves on; a record of the earlier format (plain
        // JSON, temporary file + rename) still loads.
        let mut finished = record(7);
        finished.stage = Stage::Finished;
        state.save(&finished).unwrap();
        let old = serde_json::to_vec(&record(9)).unwrap();
        fs::write(tmp.path().join("builds/9.json"), old).unwrap();
        let all = state.load_all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].stage, Stage::Finished);
        assert_eq!(all[1].number, 9);
        assert_eq!(fs::read_dir(tmp.path().join("builds")).unwrap().count(), 2);

        let e = StateDir::open(tmp.path()).unwrap_err();
        assert!(
            e.to_string().contains("in use by another gearman worker"),
            "{e}"
        );
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
        let first = state.manager(|| "m1".into()).unwrap();
        drop(state);
        let again = StateDir::open(tmp.path()).unwrap();
        assert_eq!(again.manager(|| "m2".into()).unwrap(), first);
    }
}
