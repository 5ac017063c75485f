//! Every process of a build, wherever it went: its cgroup (v2) when the machine allows one,
//! and the marker variable every process of the build inherits.
//!
//! A build's processes do not all stay in the supervisor's process group: `launch` runs
//! each step in a group of its own, and a step may start a daemon that calls `setsid`.
//! So killing a build is three sweeps, all with SIGKILL:
//!
//! 1. the supervisor's process group (supervisor and `launch`);
//! 2. the build's cgroup (`cgroup.kill`, or each pid of `cgroup.procs` on kernels before
//!    5.14): the supervisor moves itself into `<cgroup2>/<executor's cgroup>/sdx-<hash>/<id>`
//!    before it starts `launch`, and no process can leave a cgroup it cannot write to;
//! 3. every process whose environment holds [`MARK_ENV`]`=<the build's directory>`
//!    (`/proc/<pid>/environ`), which catches children that left the group and the session.
//!
//! What escapes on a machine without a writable cgroup v2 hierarchy (no cgroup2 mount, no
//! permission to create cgroups, or `cgroups = false`): a process that both leaves the
//! build's process group (`setsid`, `setpgid`) *and* replaces its environment without the
//! marker (`env -i`, an `execve` with a fresh environment), and processes that changed to
//! another user (their `environ` is unreadable). With a cgroup nothing escapes short of a
//! process with the privilege to move itself to another cgroup.
//!
//! Memory accounting: when the executor may enable the `memory` controller for its
//! `sdx-<hash>` cgroup (a delegated subtree), each build's cgroup has `memory.events` (OOM
//! kills of the build alone) and `memory.peak`; otherwise the OOM probe falls back to the
//! executor's cgroup (see `oom`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use executor_base::fnv::fnv1a;

use crate::os;

/// The variable every process of a build inherits: the build's directory
/// (`<stateDir>/builds/<id>`), unique on the host.
pub const MARK_ENV: &str = "SD_PROCESS_BUILD";

/// How long a kill waits for the build's processes to be gone.
const KILL_SETTLE: Duration = Duration::from_secs(5);
/// How often the kill looks again.
const KILL_POLL: Duration = Duration::from_millis(20);

/// Where this executor creates one cgroup per build, if it can.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cgroups {
    /// `<cgroup2 mount><own cgroup>/sdx-<hash of the builds directory>`.
    base: Option<PathBuf>,
    /// Whether the `memory` controller is enabled for the builds' cgroups.
    memory: bool,
}

impl Cgroups {
    /// No cgroups: the marker and the process group only.
    pub(crate) fn disabled() -> Self {
        Self::default()
    }

    /// Finds the cgroup v2 hierarchy and this process's place in it, and creates the
    /// parent of the builds' cgroups. Disabled when any step fails (logged at debug level).
    pub(crate) fn detect(builds_dir: &Path) -> Self {
        let Some(mount) = cgroup2_mount() else {
            tracing::debug!(
                "no cgroup2 hierarchy mounted: builds are tracked by process group and marker"
            );
            return Self::disabled();
        };
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| unified_path(&t).map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let base = mount.join(own.trim_start_matches('/')).join(format!(
            "sdx-{:016x}",
            fnv1a(builds_dir.as_os_str().as_encoded_bytes().iter().copied())
        ));
        if let Err(e) = create_base(&base) {
            tracing::debug!(cgroup = %base.display(), error = %e, "cannot create a cgroup: builds are tracked by process group and marker");
            return Self::disabled();
        }
        if !base.join("cgroup.procs").exists() {
            let _ = std::fs::remove_dir(&base);
            return Self::disabled();
        }
        // Best effort: only a delegated subtree lets us enable the memory controller.
        let memory = std::fs::read_to_string(base.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
            && std::fs::write(base.join("cgroup.subtree_control"), "+memory").is_ok();
        tracing::debug!(cgroup = %base.display(), memory, "one cgroup per build");
        // Created again by the first build; an idle executor leaves no cgroup behind.
        let _ = std::fs::remove_dir(&base);
        Self {
            base: Some(base),
            memory,
        }
    }

    /// Where build `id`'s cgroup is (or will be), when builds get one.
    pub(crate) fn path_for(&self, id: executor_base::BuildId) -> Option<PathBuf> {
        self.base.as_ref().map(|b| b.join(id.to_string()))
    }

    /// Whether builds get a cgroup.
    pub(crate) fn enabled(&self) -> bool {
        self.base.is_some()
    }

    /// Creates the cgroup of build `id` (replacing an empty leftover of an earlier build
    /// with the same id); `None` when cgroups are off or the directory cannot be made.
    pub(crate) fn create(&self, id: executor_base::BuildId) -> Option<PathBuf> {
        let base = self.base.as_ref()?;
        let dir = base.join(id.to_string());
        if dir.exists() {
            // A leftover: kill whatever is still in it and remove it.
            kill_cgroup(&dir);
            let _ = std::fs::remove_dir(&dir);
        }
        // The parent may be removed by a build ending at the same moment: try again.
        let mut last = None;
        for _ in 0..3 {
            let made = create_base(base).and_then(|()| {
                if self.memory {
                    let _ = std::fs::write(base.join("cgroup.subtree_control"), "+memory");
                }
                std::fs::create_dir(&dir)
            });
            match made {
                Ok(()) => return Some(dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = last {
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot create the build's cgroup");
        }
        None
    }

    /// Whether the builds' cgroups account memory (`memory.events`, `memory.peak`).
    pub(crate) fn has_memory(&self) -> bool {
        self.memory
    }
}

/// Where one build's processes are.
#[derive(Debug, Clone)]
pub(crate) struct Tree<'a> {
    /// The supervisor's process group, once spawned.
    pub pgid: Option<u32>,
    /// The build's cgroup, if it has one.
    pub cgroup: Option<&'a Path>,
    /// The value of [`MARK_ENV`] in the build's processes.
    pub mark: &'a str,
}

/// [`Tree::kill`] on a blocking thread, for async callers: SIGKILL to the process group
/// `pgid`, the `cgroup` and every process marked `mark`. Answers how many were killed.
pub(crate) async fn kill_blocking(
    pgid: Option<u32>,
    cgroup: Option<PathBuf>,
    mark: String,
) -> usize {
    tokio::task::spawn_blocking(move || {
        Tree {
            pgid,
            cgroup: cgroup.as_deref(),
            mark: &mark,
        }
        .kill()
    })
    .await
    .unwrap_or_default()
}

impl Tree<'_> {
    /// The pids of the build's live processes (cgroup members and marked processes).
    pub(crate) fn members(&self) -> Vec<u32> {
        let mut pids = self.cgroup.map(cgroup_pids).unwrap_or_default();
        for pid in marked(self.mark) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        pids.retain(|p| os::is_alive(*p, None));
        pids
    }

    /// SIGKILLs every process of the build and waits (up to a few seconds) until none is
    /// left; removes the cgroup then. Returns how many processes were signalled. Blocking:
    /// run it on a blocking thread.
    pub(crate) fn kill(&self) -> usize {
        let mut killed = 0;
        let until = Instant::now() + KILL_SETTLE;
        loop {
            if let Some(pgid) = self.pgid {
                let _ = os::signal_group(pgid, os::SIGKILL);
            }
            if let Some(cg) = self.cgroup {
                kill_cgroup(cg);
            }
            let left = self.members();
            if left.is_empty() || Instant::now() >= until {
                for pid in &left {
                    tracing::warn!(
                        pid,
                        mark = self.mark,
                        "a process of the build survived SIGKILL"
                    );
                }
                break;
            }
            for pid in &left {
                if os::signal_pid(*pid, os::SIGKILL) {
                    killed += 1;
                }
            }
            std::thread::sleep(KILL_POLL);
        }
        if let Some(cg) = self.cgroup {
            remove_cgroup(cg);
        }
        killed
    }
}

/// SIGKILLs every member of cgroup `dir`.
fn kill_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in cgroup_pids(dir) {
        os::signal_pid(pid, os::SIGKILL);
    }
}

/// Removes an emptied build cgroup (a missing one is fine), and its `sdx-<hash>` parent
/// when no other build's cgroup is left in it.
pub(crate) fn remove_cgroup(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::debug!(cgroup = %dir.display(), error = %e, "cannot remove the build's cgroup")
        }
    }
    if let Some(base) = dir.parent()
        && base
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("sdx-"))
    {
        // Fails (EBUSY) while other builds' cgroups are in it: then it stays.
        let _ = std::fs::remove_dir(base);
    }
}

/// Creates the parent of the builds' cgroups (an existing one is fine).
fn create_base(base: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(base) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The pids in `<dir>/cgroup.procs`.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Pids (other than ours) whose environment holds `MARK_ENV=<mark>`, from a pass over
/// `/proc` shared with the builds ending at the same time (see `sweep`). Blocking.
pub(crate) fn marked(mark: &str) -> Vec<u32> {
    crate::sweep::marked(mark)
}

/// The supervisor of the build marked `mark`, if it runs: the marked process whose
/// argument list names it (`sh -c <script> sd-supervise ...`). Finds a build whose
/// executor died between spawning it and recording its pid.
pub(crate) fn find_supervisor(mark: &str) -> Option<u32> {
    marked(mark).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).nth(3) == Some(crate::supervisor::ARG0.as_bytes()))
    })
}

/// The supervisor of a build whose executor died between spawning it and recording its
/// pid: a shell of its own carries the build's `mark`; one the zygote forked does not,
/// and is found among the members of the build's `cgroup` (the recorded one, else the
/// path the build's id gives). With the cgroup it was found in, if it was found there.
pub(crate) fn find_unrecorded_supervisor(
    mark: &str,
    cgroup: Option<PathBuf>,
) -> Option<(u32, Option<PathBuf>)> {
    if let Some(pid) = find_supervisor(mark) {
        return Some((pid, None));
    }
    let cgroup = cgroup?;
    let pid = find_zygote_supervisor(&cgroup)?;
    Some((pid, Some(cgroup)))
}

/// The supervisor the zygote forked for the build whose cgroup is `cgroup`: the member
/// whose command line is the zygote's (it carries no marker in its environment).
fn find_zygote_supervisor(cgroup: &Path) -> Option<u32> {
    cgroup_pids(cgroup).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| crate::zygote::is_zygote_cmdline(&c))
    })
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The cgroup v2 path (`0::<path>`) in a `/proc/<pid>/cgroup` listing.
pub(crate) fn unified_path(membership: &str) -> Option<&str> {
    membership
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_hierarchy() {
        assert_eq!(
            unified_path("0::/user.slice/sdx\n"),
            Some("/user.slice/sdx")
        );
        assert_eq!(unified_path("12:memory:/x\n0::/\n"), Some("/"));
        assert_eq!(unified_path("12:memory:/x\n"), None);
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(*b"/a/builds"), fnv1a(*b"/b/builds"));
    }

    #[test]
    fn marked_processes_are_found_and_killed_even_after_setsid() {
        let dir = tempfile::tempdir().unwrap();
        let mark = format!("{}/builds/1", dir.path().display());
        // A detached grandchild in a new session, marked by the inherited environment.
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!",
            ])
            .env(MARK_ENV, &mark)
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let tree = Tree {
            pgid: None,
            cgroup: None,
            mark: &mark,
        };
        let until = Instant::now() + Duration::from_secs(5);
        while !tree.members().contains(&pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(tree.members().contains(&pid), "the marked process is found");
        assert!(tree.kill() >= 1);
        assert!(!os::is_alive(pid, None));
        assert!(tree.members().is_empty());
    }
}
