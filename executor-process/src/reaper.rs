//! The reaper: one task per spawned build waits for its exit, kills what the build left
//! running, and records the terminal status (exit code, signal, out of memory, or the stop
//! the executor asked for).
//!
//! The order matters to whoever waits on the build: the leftovers are gone before the
//! status turns terminal, so "finished" always means "no process of the build is left".

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;

use executor_base::{BuildStatus, FailureReason};

use crate::executor::Inner;
use crate::oom::OomProbe;
use crate::os::{self, SIGKILL};
use crate::record::Build;

/// `launch`'s exit code for "the build ran past its timeout" (the native launch contract;
/// [`executor_base::launch_protocol::EXIT_TIMED_OUT`]).
pub const LAUNCH_EXIT_TIMEOUT: i32 = executor_base::launch_protocol::EXIT_TIMED_OUT;

/// A build supervisor's end, as a waiting parent sees it: the per-build shell's own
/// `wait`, or a zygote-forked supervisor's report ([`crate::zygote::wait`]).
pub(crate) type Exit = futures::future::BoxFuture<'static, std::io::Result<ExitStatus>>;

/// Waits for the build's supervisor to end and records how the build ended.
pub(crate) async fn reap(inner: Arc<Inner>, build: Arc<Build>, exit: Exit, oom: Option<OomProbe>) {
    let waited = exit.await;
    let exited_at = chrono::Utc::now();
    let pid = build.snapshot().pid.unwrap_or(0);
    // The build is over when `launch` is: anything it left behind goes too (its group,
    // its cgroup, every process carrying its marker).
    let peak = build.snapshot().cgroup.and_then(|cg| memory_peak(&cg));
    inner.kill_tree(&build).await;
    // A stop asked by another process sharing the state directory (`sdx stop`) counts too.
    // Merged before the record is written again, which would otherwise overwrite it.
    build.merge_disk_stop();
    let r = build.snapshot();
    let status = match (r.stop, waited) {
        (Some(reason), _) => r.stopped_status(reason),
        (None, Ok(exit)) => classify(exit, oom.as_ref()),
        (None, Err(e)) => {
            BuildStatus::lost(Some(true), format!("cannot wait for process {pid}: {e}"))
        }
    };
    let status = with_handshake(&inner, &build, status).await;
    tracing::info!(build_id = %build.id, pid, %status, "build finished");
    // Only the reaper finishes a build it owns: count it before waiters can see it end.
    if !build.is_finished() {
        inner.counter.finished(&status);
    }
    // One save for the exit time, the memory peak and the status.
    build
        .finish_with(status, |r| {
            r.memory_peak = peak.or(r.memory_peak);
            r.finished_at = Some(exited_at);
        })
        .await;
}

/// `status`, unless it is a success without `launch`'s handshake (see `handshake`);
/// the files are read on a blocking thread.
pub(crate) async fn with_handshake(
    inner: &Inner,
    build: &Build,
    status: BuildStatus,
) -> BuildStatus {
    if status.phase != executor_base::Phase::Succeeded {
        return status;
    }
    let (paths, id) = (build.paths.clone(), build.id);
    let launch = inner.settings.job_tools.join("launch");
    let fallback = status.clone();
    tokio::task::spawn_blocking(move || crate::handshake::checked(status, &paths, id, &launch))
        .await
        .unwrap_or(fallback)
}

/// `memory.peak` of a build's cgroup, when the memory controller accounts it.
fn memory_peak(cgroup: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(cgroup.join("memory.peak"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The status of a `launch` that exited on its own with `code`.
pub(crate) fn classify_code(code: i32) -> BuildStatus {
    if let Some(s) = executor_base::launch_protocol::status_of_launch_exit(code) {
        return s;
    }
    match code {
        0 => BuildStatus::succeeded(),
        _ => {
            let mut s = BuildStatus::exited(code);
            s.message = match code {
                1 => "launch exited with code 1: a step failed".to_string(),
                2 => "launch exited with code 2: usage or API error (see build.log)".to_string(),
                _ => format!("launch exited with code {code}"),
            };
            s
        }
    }
}

/// The status of a `launch` that exited on its own.
pub(crate) fn classify(exit: ExitStatus, oom: Option<&OomProbe>) -> BuildStatus {
    if let Some(code) = exit.code() {
        return classify_code(code);
    }
    let signal = exit.signal().unwrap_or_default();
    let name = os::signal_name(signal);
    if signal == SIGKILL as i32
        && let Some(evidence) = oom.and_then(OomProbe::fired)
    {
        return BuildStatus::oom(None, evidence);
    }
    let core = if exit.core_dumped() {
        " (core dumped)"
    } else {
        ""
    };
    killed_by(name, &format!("{core}, not sent by the executor"))
}

/// A `launch` killed by signal `name` (`SIGUSR1`); `detail` follows the name in the message.
pub(crate) fn killed_by(name: String, detail: &str) -> BuildStatus {
    let mut s = BuildStatus::failed(
        FailureReason::NonZeroExit,
        format!("launch was killed by {name}{detail}"),
        Some(name),
    );
    if let Some(f) = s.failure.as_mut() {
        f.build_started = Some(true);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::Phase;

    #[test]
    fn exit_codes() {
        assert_eq!(
            classify(ExitStatus::from_raw(0), None),
            BuildStatus::succeeded()
        );
        let failed = classify(ExitStatus::from_raw(1 << 8), None);
        assert_eq!(failed.phase, Phase::Failed);
        assert_eq!(failed.reason(), Some(FailureReason::NonZeroExit));
        assert_eq!(failed.exit_code, Some(1));
        assert!(failed.message.contains("a step failed"));
        let timed_out = classify(ExitStatus::from_raw(3 << 8), None);
        assert_eq!(timed_out.phase, Phase::TimedOut);
        assert_eq!(timed_out.exit_code, Some(3));
        assert_eq!(
            classify(ExitStatus::from_raw(42 << 8), None).exit_code,
            Some(42)
        );
        // launch found the build already aborted by the API: canceled, as the API says.
        let aborted = classify(ExitStatus::from_raw(4 << 8), None);
        assert_eq!(aborted.phase, Phase::Canceled);
        assert_eq!(aborted.exit_code, Some(4));
    }

    #[test]
    fn signals_are_failures_with_the_signal_name() {
        let s = classify(ExitStatus::from_raw(9), None);
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.exit_code, None);
        let f = s.failure.unwrap();
        assert_eq!(f.evidence.as_deref(), Some("SIGKILL"));
        assert_eq!(f.build_started, Some(true));
        let segv = classify(ExitStatus::from_raw(11 | 0x80), None);
        assert!(
            segv.message.contains("SIGSEGV (core dumped)"),
            "{}",
            segv.message
        );
    }

    #[test]
    fn sigkill_with_an_oom_kill_counted_is_out_of_memory() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom_kill 0\n").unwrap();
        let probe = OomProbe::on_file(events.clone(), 0);
        // no rise: just a SIGKILL
        assert_eq!(
            classify(ExitStatus::from_raw(9), Some(&probe)).reason(),
            Some(FailureReason::NonZeroExit)
        );
        std::fs::write(&events, "oom_kill 1\n").unwrap();
        let s = classify(ExitStatus::from_raw(9), Some(&probe));
        assert_eq!(s.reason(), Some(FailureReason::OutOfMemory));
        assert!(s.failure.unwrap().evidence.unwrap().contains("oom_kill"));
        // other signals are never OOM
        assert_eq!(
            classify(ExitStatus::from_raw(15), Some(&probe)).reason(),
            Some(FailureReason::NonZeroExit)
        );
    }
}
