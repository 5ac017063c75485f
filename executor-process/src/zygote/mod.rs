//! The zygote: one long-lived shell per executor that forks each build's supervisor as a
//! background subshell, where the other way starts a new `/bin/sh` per build. A fork of a
//! running shell skips the program start (`execve`, the dynamic loader, the shell's own
//! set-up) that is most of the cost of a trivial build's supervisor; the supervisor is
//! still a shell that is `launch`'s parent, so it still records launch's exit code when no
//! executor runs, and it still survives the executor (and the zygote) being killed.
//!
//! Used for builds with a cgroup of their own (option `zygote`, default on): a restarted
//! executor finds a supervisor whose pid it never recorded among its build's cgroup
//! members (see [`is_zygote_cmdline`]). The zygote is a session leader whose controlling
//! terminal is, for a moment, a pseudo-terminal ([`terminal`]), so it runs with job control: each
//! subshell leads a process group of its own, as the per-build shell does, and SIGINT and
//! SIGQUIT stay at their defaults. It is started on first use and again after it died;
//! where it cannot start (no `setsid`, no pseudo-terminals, no job control), builds start
//! under a shell of their own, and the executor says so once.
//!
//! The zygote reads its commands from a pipe as its script (`sh -s`), in blocks: a line
//! per build through the shell's `read` would cost a system call per byte. The token, in
//! `tokenEnv` mode, goes through that pipe, never through a file or a log.

mod exit;
mod line;
mod terminal;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

pub(crate) use exit::wait;
pub(crate) use line::Job;

use crate::supervisor;
use terminal::Terminal;

/// The zygote's last argument, which every supervisor it forks shows too (in
/// `/proc/<pid>/cmdline`).
const TAG: &str = "sd-zygote";

/// How long the zygote may take to start, and a build's subshell to report its pid.
const REPORT_WITHIN: Duration = Duration::from_secs(10);

/// Where `setsid` (util-linux) may be: the zygote must lead a session of its own to take
/// a controlling terminal, and the standard library cannot call `setsid` itself.
const SETSID: &[&str] = &["/usr/bin/setsid", "/bin/setsid"];

/// Whether `cmdline` (the NUL-separated bytes of `/proc/<pid>/cmdline`) is the zygote's,
/// as every supervisor it forked shows.
pub(crate) fn is_zygote_cmdline(cmdline: &[u8]) -> bool {
    let mut args = cmdline
        .strip_suffix(&[0])
        .unwrap_or(cmdline)
        .split(|b| *b == 0);
    args.next() == Some(supervisor::SHELL.as_bytes())
        && args.next() == Some(b"-s")
        && args.next() == Some(TAG.as_bytes())
        && args.next().is_none()
}

/// How a build's supervisor did not start through the zygote.
#[derive(Debug)]
pub(crate) enum NotStarted {
    /// Nothing of the build runs: start it under a shell of its own.
    UseOwnShell,
    /// The zygote took the build's text but no subshell reported: one may still come up
    /// in the build's cgroup, so the cgroup must be emptied before anything else.
    NoReport,
}

/// A supervisor the zygote started.
pub(crate) struct Started {
    pub pid: u32,
    /// Launch's exit code, when the supervisor reports it.
    pub exit: ExitReport,
}

/// The receiving end of a supervisor's `x` report; dropping it stops waiting for one (a
/// supervisor killed before it could report never sends it).
pub(crate) struct ExitReport {
    rx: oneshot::Receiver<i32>,
    key: String,
    reports: Arc<Mutex<Waiting>>,
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        self.reports.lock().exits.remove(&self.key);
    }
}

/// One executor's zygote, started on first use.
pub(crate) struct Zygote {
    /// Where to look for `setsid` ([`SETSID`]).
    setsid: &'static [&'static str],
    running: tokio::sync::Mutex<Option<Running>>,
    reports: Arc<Mutex<Waiting>>,
    /// Why the zygote cannot run here, once it failed to start.
    unavailable: OnceLock<String>,
}

impl Default for Zygote {
    fn default() -> Self {
        Self {
            setsid: SETSID,
            running: Default::default(),
            reports: Default::default(),
            unavailable: OnceLock::new(),
        }
    }
}

/// A started zygote: its script pipe, and whether it has exited.
struct Running {
    stdin: ChildStdin,
    exited: watch::Receiver<bool>,
}

/// Who waits for which report, by key.
#[derive(Default)]
struct Waiting {
    started: HashMap<String, oneshot::Sender<Option<u32>>>,
    exits: HashMap<String, oneshot::Sender<i32>>,
}

impl Zygote {
    /// Starts the supervisor `job` describes, in a subshell of the zygote.
    pub(crate) async fn start(&self, job: &Job<'_>) -> Result<Started, NotStarted> {
        if self.unavailable.get().is_some() {
            return Err(NotStarted::UseOwnShell);
        }
        let Some(text) = job.text() else {
            return Err(NotStarted::UseOwnShell);
        };
        let key = job.key.to_string();
        let (started_tx, started_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        {
            let mut w = self.reports.lock();
            w.started.insert(key.clone(), started_tx);
            w.exits.insert(key.clone(), exit_tx);
        }
        match self.send_and_wait(&text, started_rx).await {
            Ok(Some(pid)) => Ok(Started {
                pid,
                exit: ExitReport {
                    rx: exit_rx,
                    key,
                    reports: self.reports.clone(),
                },
            }),
            not_started => {
                self.forget(&key);
                Err(match not_started {
                    Err(NotStarted::NoReport) => NotStarted::NoReport,
                    _ => NotStarted::UseOwnShell,
                })
            }
        }
    }

    /// Writes `text` to the zygote (starting one, or another after a broken pipe) and
    /// waits for the subshell's first report: its pid, or `None` when it could not run.
    async fn send_and_wait(
        &self,
        text: &[u8],
        started: oneshot::Receiver<Option<u32>>,
    ) -> Result<Option<u32>, NotStarted> {
        let mut exited = {
            let mut running = self.running.lock().await;
            let mut attempts = 0;
            loop {
                attempts += 1;
                if running.as_ref().is_none_or(|r| *r.exited.borrow()) {
                    *running = Some(self.spawn_zygote().await.map_err(|why| {
                        self.give_up(why);
                        NotStarted::UseOwnShell
                    })?);
                }
                let r = running.as_mut().expect("just set");
                match r.stdin.write_all(text).await {
                    Ok(()) => break r.exited.clone(),
                    // The zygote died since it was started: the text went nowhere.
                    Err(e) if attempts < 2 => {
                        tracing::info!(error = %e, "the zygote is gone; starting another");
                        *running = None;
                    }
                    Err(e) => {
                        self.give_up(format!("cannot write to it: {e}"));
                        *running = None;
                        return Err(NotStarted::UseOwnShell);
                    }
                }
            }
        };
        let mut started = std::pin::pin!(started);
        let deadline = tokio::time::Instant::now() + REPORT_WITHIN;
        let gone = exited.wait_for(|e| *e);
        tokio::select! {
            r = &mut started => return r.map_err(|_| NotStarted::NoReport),
            _ = gone => {}
            _ = tokio::time::sleep_until(deadline) => return Err(NotStarted::NoReport),
        }
        // The zygote died; a subshell it forked before still reports: give it a moment.
        let grace = tokio::time::Instant::now() + Duration::from_secs(1);
        match tokio::time::timeout_at(grace.min(deadline), started).await {
            Ok(Ok(pid)) => Ok(pid),
            _ => Err(NotStarted::NoReport),
        }
    }

    /// Remembers that the zygote cannot run here, and says so once.
    pub(crate) fn give_up(&self, why: String) {
        if self.unavailable.set(why.clone()).is_ok() {
            tracing::warn!(
                reason = %why,
                "the zygote cannot run here; every build starts under a shell of its own"
            );
        }
    }

    fn forget(&self, key: &str) {
        let mut w = self.reports.lock();
        w.started.remove(key);
        w.exits.remove(key);
    }

    /// Starts a zygote: `setsid /bin/sh -s sd-zygote`, which takes the terminal's slave
    /// as its controlling terminal, turns job control on, defines the supervisor's
    /// functions and says `ready`; then the terminal is hung up.
    async fn spawn_zygote(&self) -> Result<Running, String> {
        let setsid = self
            .setsid
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or("no setsid program (util-linux)")?;
        let terminal = Terminal::open().map_err(|e| format!("no pseudo-terminal: {e}"))?;
        let mut child = Command::new(setsid)
            .args([supervisor::SHELL, "-s", TAG])
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("cannot start {setsid}: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let prelude = format!(
            "trap '' HUP\nexec 9<>'{}' || exit 1\nset -m\nexec 9>&-\ncase $- in *m*) ;; *) exit 1 ;; esac\n{}printf 'ready\\n'\n",
            terminal.slave,
            supervisor::FUNCTIONS
        );
        stdin
            .write_all(prelude.as_bytes())
            .await
            .map_err(|e| format!("its shell did not start: cannot write to it: {e}"))?;
        let mut first = String::new();
        let ready = tokio::time::timeout(REPORT_WITHIN, stdout.read_line(&mut first)).await;
        if !matches!(ready, Ok(Ok(_))) || first != "ready\n" {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err("its shell did not turn job control on".into());
        }
        // Job control is on: hang the terminal up, so builds have none.
        drop(terminal);
        let (exited_tx, exited) = watch::channel(false);
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exited_tx.send(true);
        });
        tokio::spawn(read_reports(stdout, self.reports.clone()));
        tracing::debug!("zygote started");
        Ok(Running { stdin, exited })
    }
}

/// Hands each report on the zygote's stdout to whoever waits for it, until every
/// subshell holding the pipe is gone.
async fn read_reports(stdout: BufReader<ChildStdout>, waiting: Arc<Mutex<Waiting>>) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split(' ');
        let (Some(what), Some(key)) = (words.next(), words.next()) else {
            continue;
        };
        let number = words.next().and_then(|n| n.parse::<i64>().ok());
        let mut w = waiting.lock();
        match (what, number) {
            ("p", Some(pid)) => {
                if let Some(tx) = w.started.remove(key) {
                    let _ = tx.send(u32::try_from(pid).ok());
                }
            }
            ("f", _) => {
                if let Some(tx) = w.started.remove(key) {
                    let _ = tx.send(None);
                }
                w.exits.remove(key);
            }
            ("x", Some(code)) => {
                if let Some(tx) = w.exits.remove(key) {
                    let _ = tx.send(i32::try_from(code).unwrap_or(i32::MAX));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use executor_base::{Executor, Phase};
    use std::ffi::OsStr;

    fn job<'a>(dir: &'a Path) -> Job<'a> {
        Job {
            key: "1",
            log: dir,
            exit: dir,
            work: dir,
            cgroup_procs: dir,
            program: OsStr::new("/bin/true"),
            args: &[],
            env: &[],
        }
    }

    #[tokio::test]
    async fn a_zygote_that_cannot_start_is_given_up_once_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        // No setsid program; then one that exits at once (no shell, no `ready`).
        for (setsid, reason) in [
            (&["/nonexistent/setsid"][..], "no setsid program"),
            (&["/bin/true"][..], "its shell did not"),
        ] {
            let z = Zygote {
                setsid,
                ..Zygote::default()
            };
            assert!(matches!(
                z.start(&job(dir.path())).await,
                Err(NotStarted::UseOwnShell)
            ));
            let why = z.unavailable.get().expect("given up");
            assert!(why.contains(reason), "{why}");
            assert!(z.running.lock().await.is_none());
            assert!(matches!(
                z.start(&job(dir.path())).await,
                Err(NotStarted::UseOwnShell)
            ));
        }
    }

    #[tokio::test]
    async fn a_build_whose_zygote_cannot_run_starts_under_a_shell_of_its_own() {
        let tools = testutil::job_tools("exec sleep 3600");
        let state = tempfile::tempdir().unwrap();
        let exec = testutil::executor(tools.path(), state.path()).await;
        if !exec.uses_cgroups() {
            return;
        }
        exec.inner.zygote.give_up("a test says so".into());
        let b = testutil::config(61);
        exec.start(&b).await.unwrap();
        let pid = exec.pid(b.build_id).unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!is_zygote_cmdline(&cmdline));
        let arg0 = cmdline.split(|c| *c == 0).nth(3).unwrap();
        assert_eq!(arg0, supervisor::ARG0.as_bytes());
        exec.stop(&b.to_stop()).await.unwrap();
        let s = testutil::finished(&exec, &b).await;
        assert_eq!(s.phase, Phase::Canceled, "{s}");
    }

    #[test]
    fn the_zygotes_command_line_is_told_apart() {
        assert!(is_zygote_cmdline(b"/bin/sh\0-s\0sd-zygote\0"));
        assert!(!is_zygote_cmdline(b"/bin/sh\0-s\0sd-zygote\0x\0"));
        assert!(!is_zygote_cmdline(b"/bin/sh\0-c\0sd-zygote\0"));
        assert!(!is_zygote_cmdline(b"sd-zygote\0"));
    }
}
