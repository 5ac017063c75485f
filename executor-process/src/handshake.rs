//! The launch handshake of a process build: `launch` exiting 0 is success only when it
//! proved it ran the build.
//!
//! `launch` gets `SD_LAUNCH_RESULT_FILE=<stateDir>/builds/<id>/result` and writes the
//! handshake line there (and as its last line of output, which goes to `build.log`). A
//! build whose `launch` exited 0 is `Succeeded` only with a handshake for this build in
//! the result file or, for a launcher that only prints it, in the last
//! [`LOG_TAIL_BYTES`] of `build.log`; otherwise it is `Failed` with
//! [`FailureReason::LaunchProtocol`](executor_base::FailureReason::LaunchProtocol),
//! through the shared [`exit_zero_status`] (the process backend runs native mode only).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use executor_base::launch_protocol::{LaunchResult, exit_zero_status};
use executor_base::{BuildId, BuildStatus, LaunchMode, Phase};

use crate::record::BuildPaths;

/// The environment variable `launch` writes the handshake to (see `sd_launch`).
pub const RESULT_FILE_ENV: &str = "SD_LAUNCH_RESULT_FILE";

/// How much of the end of `build.log` is searched for the handshake line.
pub(crate) const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// `status` unless it is a success without the handshake of build `id` (then the
/// `launchProtocol` failure naming `launch`). Reads files: call on a blocking thread.
pub(crate) fn checked(
    status: BuildStatus,
    paths: &BuildPaths,
    id: BuildId,
    launch: &Path,
) -> BuildStatus {
    if status.phase != Phase::Succeeded {
        return status;
    }
    let found = find(paths, id);
    exit_zero_status(
        LaunchMode::Native,
        id.get(),
        found.as_ref(),
        &launch.display().to_string(),
    )
}

/// The handshake of build `id`: from the result file, else from the log's tail.
fn find(paths: &BuildPaths, id: BuildId) -> Option<LaunchResult> {
    std::fs::read_to_string(paths.result())
        .ok()
        .and_then(|t| LaunchResult::find(&t, id.get()))
        .or_else(|| tail(&paths.log()).and_then(|t| LaunchResult::find(&t, id.get())))
}

/// The last [`LOG_TAIL_BYTES`] of `path`, as text (a cut first line is harmless: it is
/// never a whole handshake).
fn tail(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::FailureReason;

    fn paths() -> (tempfile::TempDir, BuildPaths, BuildId) {
        let dir = tempfile::tempdir().unwrap();
        let id = BuildId::new(7).unwrap();
        let p = BuildPaths::new(dir.path(), id);
        std::fs::create_dir_all(p.work()).unwrap();
        (dir, p, id)
    }

    #[test]
    fn success_needs_the_handshake_from_the_result_file_or_the_log() {
        let launch = Path::new("/tools/launch");
        let (_d, p, id) = paths();
        let s = checked(BuildStatus::succeeded(), &p, id, launch);
        assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol), "{s:?}");
        assert!(s.message.contains("/tools/launch"), "{}", s.message);
        assert_eq!(s.exit_code, Some(0));
        // In the log (a launcher that only prints it), after a long output.
        let mut log = "x".repeat(100_000);
        log.push_str("\nsdx-launch-result protocol=1 build=7 status=SUCCESS\n");
        std::fs::write(p.log(), &log).unwrap();
        assert_eq!(
            checked(BuildStatus::succeeded(), &p, id, launch).phase,
            Phase::Succeeded
        );
        // Another build's handshake does not count.
        std::fs::write(
            p.log(),
            "sdx-launch-result protocol=1 build=8 status=SUCCESS\n",
        )
        .unwrap();
        assert_eq!(
            checked(BuildStatus::succeeded(), &p, id, launch).phase,
            Phase::Failed
        );
        // The result file.
        std::fs::write(
            p.result(),
            "sdx-launch-result protocol=1 build=7 status=SUCCESS\n",
        )
        .unwrap();
        assert_eq!(
            checked(BuildStatus::succeeded(), &p, id, launch).phase,
            Phase::Succeeded
        );
        // Failures are left as they are.
        let failed = BuildStatus::exited(1);
        assert_eq!(checked(failed.clone(), &p, id, launch), failed);
    }
}
