//! Claiming a build's directory: prepared under a temporary name (state file first, then
//! token file, work directory and log), then renamed to `<builds>/<id>`, so the directory
//! never exists without its state file; a directory left there by an earlier build with
//! the same id is taken over only once that build is certainly not live.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use executor_base::{Error, Liveness};

use crate::error;
use crate::os;
use crate::record::{BuildPaths, Record};
use crate::spawn::already_exists;

/// A leftover build directory without a state file younger than this is taken to be a
/// build another instance is starting right now.
const CLAIM_WINDOW: Duration = Duration::from_secs(10);

/// The open files of a prepared build directory.
pub(crate) struct Prepared {
    pub log: File,
    pub log_err: File,
}

/// Where a build's directory goes, and the cgroup its supervisor would be in.
pub(crate) struct Claim<'a> {
    pub builds_dir: &'a std::path::Path,
    pub paths: &'a BuildPaths,
    pub id: executor_base::BuildId,
    /// The cgroup a build with this id gets (`None`: builds get none).
    pub cgroup: Option<PathBuf>,
}

/// Prepares the build's directory under a temporary name (token file, work directory,
/// build log, and `state.json` without a pid), then claims `<builds>/<id>` by renaming it
/// there, so the build's directory never exists without its state file: a crash at any
/// point leaves either nothing under the id or a record a restarted executor can adopt.
/// Blocking.
pub(crate) fn prepare_and_claim(
    claim: &Claim,
    token: Option<&str>,
    record: &Record,
) -> Result<Prepared, Error> {
    let id = claim.id;
    let tmp = BuildPaths {
        dir: claim.builds_dir.join(format!(
            ".{id}.{}.{:08x}",
            std::process::id(),
            fastrand::u32(..)
        )),
    };
    DirBuilder::new()
        .mode(0o700)
        .create(&tmp.dir)
        .map_err(|e| error::io("start", "cannot create the build directory", &tmp.dir, e))?;
    let result = prepare(&tmp, token, record).and_then(|p| claim.take(&tmp).map(|()| p));
    if result.is_err() {
        remove_dir(&tmp.dir);
    }
    result
}

/// Saves the record (first: it names the directory's owner), writes the token file
/// (unless the token goes through the environment), creates the work directory and the
/// build log. Blocking.
fn prepare(paths: &BuildPaths, token: Option<&str>, record: &Record) -> Result<Prepared, Error> {
    paths
        .save(record)
        .map_err(|e| error::io("start", "cannot write the state file", &paths.state(), e))?;
    if let Some(token) = token {
        let token_path = paths.token();
        write_private(&token_path, token.as_bytes())
            .map_err(|e| error::io("start", "cannot write the token file", &token_path, e))?;
    }
    let work = paths.work();
    DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .map_err(|e| error::io("start", "cannot create the work directory", &work, e))?;
    let log_path = paths.log();
    let log = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| error::io("start", "cannot create the build log", &log_path, e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| error::io("start", "cannot share the build log", &log_path, e))?;
    Ok(Prepared { log, log_err })
}

impl Claim<'_> {
    /// Renames the prepared `tmp` directory to the build's. A directory left there by an
    /// earlier build with the same id is replaced unless that build is still alive (or being
    /// started by another executor instance sharing the state directory).
    fn take(&self, tmp: &BuildPaths) -> Result<(), Error> {
        let (paths, id) = (self.paths, self.id);
        for _ in 0..3 {
            match std::fs::rename(&tmp.dir, &paths.dir) {
                Ok(()) => return Ok(()),
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY))
                        || e.kind() == std::io::ErrorKind::AlreadyExists
                        || e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
                Err(e) => {
                    return Err(error::io(
                        "start",
                        "cannot create the build directory",
                        &paths.dir,
                        e,
                    ));
                }
            }
            if let Some(why) = self.live() {
                return Err(already_exists(id, why));
            }
            match std::fs::remove_dir_all(&paths.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(error::io(
                        "start",
                        "cannot remove the previous build directory",
                        &paths.dir,
                        e,
                    ));
                }
            }
        }
        Err(already_exists(id, "is being started"))
    }

    /// Why the build already in its directory still counts as live, if it does.
    fn live(&self) -> Option<&'static str> {
        let paths = self.paths;
        let young = || {
            std::fs::metadata(&paths.dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < CLAIM_WINDOW)
        };
        let claimant = || crate::gc::owner_liveness(&paths.dir);
        match paths.load() {
            Some(r) if r.status.is_none() => match r.pid {
                Some(p) if os::is_alive(p, r.proc_start) => {
                    Some("is already running (started by another executor instance)")
                }
                Some(_) => None,
                // Its claimant is gone (checked first: a supervisor it spawned is visible by
                // now) and spawned nothing: an interrupted start, replaced.
                None => match claimant() {
                    _ if crate::tree::find_unrecorded_supervisor(
                        &paths.mark(),
                        r.cgroup.clone().or_else(|| self.cgroup.clone()),
                    )
                    .is_some() =>
                    {
                        Some("is already running (started by another executor instance)")
                    }
                    Liveness::Gone => None,
                    Liveness::Alive => Some("is being started by another executor instance"),
                    Liveness::Unknown if young() => {
                        Some("is being started by another executor instance")
                    }
                    Liveness::Unknown => None,
                },
            },
            Some(_) => None,
            // Only a directory made by something else (or an older sdx) lacks a state file.
            None if young() => Some("is being started by another executor instance"),
            None => None,
        }
    }
}

/// Removes a directory of a start that failed. Blocking.
pub(crate) fn remove_dir(dir: &std::path::Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove the directory of a failed start")
        }
    }
}

/// Writes a new file readable only by its owner.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}
