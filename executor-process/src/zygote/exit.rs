//! How a zygote-forked supervisor's end is learnt: sdx is not its parent (the zygote is),
//! so no `wait` tells; the supervisor reports launch's exit code on the zygote's pipe once
//! it is in the exit file. A supervisor killed before it could report (a stop's SIGKILL to
//! its group) is seen by watching its pid; it then ended as the exit file says, or killed.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::ExitReport;

/// How often the supervisor's pid is looked at while no report came.
const POLL: Duration = Duration::from_millis(50);

/// Waits for the supervisor `pid` (started at `proc_start`) to end; answers launch's end
/// as the status a waiting parent would see (an exit code, or the signal for codes
/// 129–159, as the per-build supervisor re-raises it).
pub(crate) async fn wait(
    mut report: ExitReport,
    pid: u32,
    proc_start: Option<u64>,
    exit_file: PathBuf,
) -> io::Result<ExitStatus> {
    // A closed channel (the zygote's pipe is gone) is no end: the supervisor runs on and
    // still writes the exit file, so its pid is watched until it is gone.
    let mut closed = false;
    let reported = loop {
        tokio::select! {
            r = &mut report.rx, if !closed => match r {
                Ok(code) => break Some(code),
                Err(_) => closed = true,
            },
            _ = tokio::time::sleep(POLL) => {
                if !crate::os::is_alive(pid, proc_start) {
                    // The report may have come with the end.
                    break if closed { None } else { report.rx.try_recv().ok() };
                }
            }
        }
    };
    let code = match reported {
        Some(code) => code,
        None => match tokio::fs::read_to_string(&exit_file).await {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("the exit file holds {text:?}")))?,
            // Killed before launch ended.
            Err(e) if e.kind() == io::ErrorKind::NotFound => 128 + libc::SIGKILL,
            Err(e) => return Err(e),
        },
    };
    Ok(status(code))
}

/// The wait status of a process that exited with `code`, where 129–159 is "killed by
/// signal `code - 128`" (the shell's convention).
fn status(code: i32) -> ExitStatus {
    if (129..160).contains(&code) {
        ExitStatus::from_raw(code - 128)
    } else {
        ExitStatus::from_raw((code & 0xff) << 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_as_a_waiting_parent_sees_them() {
        assert_eq!(status(0).code(), Some(0));
        assert_eq!(status(3).code(), Some(3));
        assert_eq!(status(137).signal(), Some(9));
        assert_eq!(status(143).signal(), Some(15));
        assert_eq!(status(255).code(), Some(255));
    }
}
