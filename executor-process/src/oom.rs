//! Out-of-memory detection through the cgroup v2 `memory.events` counter.
//!
//! A process killed by the kernel's OOM killer just dies of SIGKILL; the exit status alone
//! cannot tell it from `kill -9`. The cgroup the build runs in counts OOM kills
//! (`oom_kill` in `memory.events`), so a SIGKILL we did not send, together with a rise of
//! that counter while the build ran, is reported as out of memory with the counter as
//! evidence. Without cgroup v2 (or when the file is unreadable) nothing is guessed: the
//! build is reported as killed by SIGKILL.
//!
//! When the build has a cgroup of its own with the `memory` controller (see `tree`), the
//! counter is the build's alone. Otherwise the build shares the executor's cgroup, so a
//! rise can in principle come from another process of the same cgroup that was OOM-killed
//! at the same moment the build was SIGKILLed by someone else; the evidence string names
//! the cgroup so an operator can check.

use std::path::{Path, PathBuf};

use crate::tree::unified_path;

/// The `oom_kill` count of a process's cgroup, taken when the build started.
#[derive(Debug, Clone)]
pub(crate) struct OomProbe {
    cgroup: String,
    events: PathBuf,
    before: u64,
}

impl OomProbe {
    /// Reads the cgroup of `pid` and its current `oom_kill` count, if cgroup v2 is there.
    pub(crate) fn for_pid(pid: u32) -> Option<Self> {
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let cgroup = unified_path(&membership)?;
        let events = Path::new("/sys/fs/cgroup")
            .join(cgroup.trim_start_matches('/'))
            .join("memory.events");
        let before = read_oom_kills(&events)?;
        Some(Self {
            cgroup: cgroup.to_string(),
            events,
            before,
        })
    }

    /// The probe of a build's own cgroup directory `dir` (with the `memory` controller).
    pub(crate) fn for_cgroup(dir: &Path) -> Option<Self> {
        let events = dir.join("memory.events");
        let before = read_oom_kills(&events)?;
        Some(Self {
            cgroup: dir.display().to_string(),
            events,
            before,
        })
    }

    /// A probe on an arbitrary `memory.events` file (tests).
    #[cfg(test)]
    pub(crate) fn on_file(events: PathBuf, before: u64) -> Self {
        Self {
            cgroup: "/test".into(),
            events,
            before,
        }
    }

    /// If the counter rose since the probe was taken: the evidence to report.
    pub(crate) fn fired(&self) -> Option<String> {
        let after = read_oom_kills(&self.events)?;
        (after > self.before).then(|| {
            format!(
                "SIGKILL while memory.events oom_kill of cgroup {} rose from {} to {after}",
                self.cgroup, self.before
            )
        })
    }
}

fn read_oom_kills(events: &Path) -> Option<u64> {
    parse_oom_kills(&std::fs::read_to_string(events).ok()?)
}

fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == "oom_kill").then(|| parts.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_events() {
        let t = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(t), Some(2));
        assert_eq!(parse_oom_kills("low 0\n"), None);
    }

    #[test]
    fn probe_reports_only_a_rise() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 0\noom_kill 1\n").unwrap();
        let probe = OomProbe {
            cgroup: "/test".into(),
            events: events.clone(),
            before: 1,
        };
        assert_eq!(probe.fired(), None);
        std::fs::write(&events, "oom 1\noom_kill 2\n").unwrap();
        let evidence = probe.fired().unwrap();
        assert!(evidence.contains("rose from 1 to 2"), "{evidence}");
    }
}
