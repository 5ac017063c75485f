//! The operating-system side: signals to process groups, liveness and identity of a pid.
//!
//! Signals go through `nix` rather than raw `libc` calls: the workspace forbids `unsafe`
//! code, and `nix` gives safe, typed `killpg`/`kill` with `Errno` results (`ESRCH` for "no
//! such group" is an expected answer here, not a failure).

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub(crate) use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// Sends `signal` to the process group `pgid`. `Ok(false)` when the group no longer exists.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> Result<bool, Errno> {
    let Some(pgid) = to_pid(pgid) else {
        return Ok(false);
    };
    match killpg(pgid, signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `signal` to the single process `pid`; `false` when it is gone (or not ours).
pub(crate) fn signal_pid(pid: u32, signal: Signal) -> bool {
    to_pid(pid).is_some_and(|p| kill(p, signal).is_ok())
}

/// `pid` as a nix `Pid`, refusing values that would address more than one process
/// (0 is "my group", negative values are groups, 1 is init).
fn to_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22), which
/// together with the pid identifies a process across pid reuse. `None` without procfs.
pub(crate) fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = ProcStat::read(pid)?;
    Some(stat.start_time)
}

/// Whether `pid` is a live (not zombie) process; with `start_time`, also whether it is
/// still the same process (the pid was not reused).
pub(crate) fn is_alive(pid: u32, start_time: Option<u64>) -> bool {
    let Some(p) = to_pid(pid) else {
        return false;
    };
    if std::path::Path::new("/proc/self/stat").exists() {
        return match ProcStat::read(pid) {
            Some(stat) => !stat.is_dead() && start_time.is_none_or(|t| t == stat.start_time),
            None => false,
        };
    }
    // No procfs: signal 0 checks existence (a zombie still counts; we cannot tell).
    matches!(kill(p, None), Ok(()) | Err(Errno::EPERM))
}

/// The name of a signal number (`SIGKILL`), or `signal <n>` for unknown numbers.
pub(crate) fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// The fields of `/proc/<pid>/stat` we use.
struct ProcStat {
    state: char,
    start_time: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// Parses the line; the command name (field 2) may contain spaces and parentheses,
    /// so fields are counted from the last `)`.
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
        Some(Self {
            state: fields.first()?.chars().next()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 0 0";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 987654);
        assert!(!s.is_dead());
        assert!(ProcStat::parse("garbage").is_none());
    }

    #[test]
    fn self_is_alive_and_identified() {
        let me = std::process::id();
        let start = proc_start_time(me);
        assert!(is_alive(me, start));
        if let Some(t) = start {
            assert!(
                !is_alive(me, Some(t + 1)),
                "a different start time means a reused pid"
            );
        }
    }

    #[test]
    fn refuses_pids_that_address_groups() {
        assert!(!is_alive(0, None));
        assert!(!is_alive(1, None));
        assert_eq!(signal_group(0, SIGTERM), Ok(false));
        assert_eq!(signal_group(u32::MAX, SIGTERM), Ok(false));
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(1000), "signal 1000");
    }
}
