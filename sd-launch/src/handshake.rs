//! The launch handshake (launch protocol 1): the last line `launch` writes to its
//! standard output when a build ends, proof for the executor that the build really ran.
//!
//! ```text
//! sdx-launch-result protocol=1 build=<buildId> status=<SUCCESS|FAILURE|ABORTED|TIMEOUT|ERROR>
//! ```
//!
//! A launcher that exits 0 without running the build (upstream's `screwdrivercd/launcher`
//! given native mode's `--token-file`: it prints its usage and exits 0) never writes it,
//! and the executors report such a build failed (`launchProtocol`) instead of succeeded.
//! The executor side reads it with `executor_base::launch_protocol::LaunchResult`; both
//! spell the line the same way, which the Docker end-to-end tests check with this binary.

use crate::run::Outcome;

/// The environment variable naming a file that `launch` also writes the handshake line
/// to (truncated first), for engines that cannot read the build's output: the Kubernetes
/// backend sets it to the build container's `terminationMessagePath`, the process backend
/// to a file in the build's state directory. Stdout gets the line either way.
pub const RESULT_FILE_ENV: &str = "SD_LAUNCH_RESULT_FILE";

/// Writes `line` (and a newline) to the file named by [`RESULT_FILE_ENV`], when set. A
/// file that cannot be written is reported on stderr and changes nothing else: the
/// executor then finds no handshake there and does not report success.
pub fn write_result_file(line: &str) {
    let Some(path) = std::env::var_os(RESULT_FILE_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    if let Err(e) = std::fs::write(&path, format!("{line}\n")) {
        eprintln!(
            "launch: cannot write the launch result to {} ({RESULT_FILE_ENV}): {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// The launch protocol this `launch` speaks.
pub const PROTOCOL: u32 = 1;

/// First word of the handshake line.
pub const MARKER: &str = "sdx-launch-result";

/// The handshake line for build `build_id` that ended with `outcome`.
///
/// ```
/// use sd_launch::{handshake, Outcome};
/// assert_eq!(
///     handshake::line(42, Outcome::Success),
///     "sdx-launch-result protocol=1 build=42 status=SUCCESS"
/// );
/// assert!(handshake::line(42, Outcome::TimedOut).ends_with("status=TIMEOUT"));
/// ```
pub fn line(build_id: u64, outcome: Outcome) -> String {
    let status = match outcome {
        Outcome::Success => "SUCCESS",
        Outcome::StepFailed => "FAILURE",
        Outcome::Aborted | Outcome::AbortedByApi => "ABORTED",
        Outcome::TimedOut => "TIMEOUT",
        Outcome::UsageOrApiError => "ERROR",
    };
    format!("{MARKER} protocol={PROTOCOL} build={build_id} status={status}")
}
