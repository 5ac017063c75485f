//! Running one step: `<shell> -c <command>` in its own process group, with its output
//! streamed, the build deadline enforced and aborts honoured.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::logs::{Msg, Shipper, pump};
use crate::report::Reporter;
use crate::signals::Abort;

/// Exit code reported for a step killed by the build timeout (upstream's timeout code).
pub const TIMEOUT_CODE: i32 = 3;
/// Exit code reported for a step whose shell could not be started.
pub const SPAWN_FAILED_CODE: i32 = 127;
/// How long we wait for a finished step's pipes to close (a background process may keep
/// them open; its later output is dropped).
pub const PIPE_GRACE: Duration = Duration::from_millis(500);

/// A step of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    /// `name`.
    pub name: String,
    /// `command`, run with `<shell> -c`.
    pub command: String,
}

impl StepSpec {
    /// Whether this is a teardown step (`sd-teardown-*`, `teardown-*`, `preteardown-*`,
    /// `postteardown-*`), which runs even after a failed step.
    pub fn is_teardown(&self) -> bool {
        ["sd-teardown-", "teardown-", "preteardown-", "postteardown-"]
            .iter()
            .any(|p| self.name.starts_with(p))
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// The shell exited with this code (128 + n when killed by signal n).
    Exited(i32),
    /// Killed at the build deadline.
    TimedOut,
    /// Killed because the build was aborted by this signal.
    Aborted(i32),
    /// The shell could not be started.
    SpawnFailed(String),
}

impl StepEnd {
    /// The code reported to the API as the step's `code`.
    pub fn code(&self) -> i32 {
        match self {
            StepEnd::Exited(c) => *c,
            StepEnd::TimedOut => TIMEOUT_CODE,
            StepEnd::Aborted(sig) => 128 + sig,
            StepEnd::SpawnFailed(_) => SPAWN_FAILED_CODE,
        }
    }
}

/// Where and how steps run.
#[derive(Debug, Clone)]
pub struct StepContext<'a> {
    /// The shell (`/bin/sh`).
    pub shell: &'a str,
    /// The working directory.
    pub workspace: &'a Path,
    /// Extra environment variables.
    pub env: &'a [(String, String)],
    /// The build's deadline.
    pub deadline: Instant,
    /// The build timeout, for the timeout notice.
    pub timeout_text: &'a str,
    /// Set on SIGTERM/SIGINT/SIGHUP.
    pub abort: &'a Abort,
    /// How long an aborted step gets between SIGTERM and SIGKILL (a share of the
    /// executor's stop grace, see [`crate::args::Args::step_abort_grace`]).
    pub abort_grace: Duration,
}

fn code_of(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn signal_group(child: &Child, sig: Signal) {
    if let Ok(id) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(id), sig);
    }
}

/// Runs `step`, streaming its output through a [`Shipper`] to `api` (when given), and
/// returns how it ended and how many lines it printed.
pub fn run_step(ctx: &StepContext<'_>, step: &StepSpec, api: Option<Reporter>) -> (StepEnd, u64) {
    let shipper = Shipper::start(api, step.name.clone(), 2);
    let notice = shipper.sender();
    let spawned = Command::new(ctx.shell)
        .arg("-c")
        .arg(&step.command)
        .current_dir(ctx.workspace)
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .env_remove("SD_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "cannot start {} in {}: {e}",
                ctx.shell,
                ctx.workspace.display()
            );
            let _ = notice.send(Msg::Line(format!("launch: {msg}")));
            let _ = notice.send(Msg::Eof);
            let _ = notice.send(Msg::Eof);
            drop(notice);
            let lines = shipper.finish(PIPE_GRACE);
            return (StepEnd::SpawnFailed(msg), lines);
        }
    };
    for (i, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = shipper.sender();
        match pipe {
            Some(p) => {
                let spawned = std::thread::Builder::new()
                    .name(format!("pipe-{i}"))
                    .spawn(move || pump(p, &tx));
                if spawned.is_err() {
                    let _ = notice.send(Msg::Eof);
                }
            }
            None => {
                let _ = tx.send(Msg::Eof);
            }
        }
    }
    let end = loop {
        match child.try_wait() {
            Ok(Some(status)) => break StepEnd::Exited(code_of(status)),
            Ok(None) => {}
            Err(_) => break StepEnd::Exited(child.wait().map(code_of).unwrap_or(-1)),
        }
        if let Some(sig) = ctx.abort.signal() {
            let _ = notice.send(Msg::Line(format!(
                "launch: aborted by signal {sig}, stopping step {}",
                step.name
            )));
            signal_group(&child, Signal::SIGTERM);
            let until = Instant::now() + ctx.abort_grace;
            while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal_group(&child, Signal::SIGKILL);
            let _ = child.wait();
            break StepEnd::Aborted(sig);
        }
        if Instant::now() >= ctx.deadline {
            let _ = notice.send(Msg::Line(format!(
                "launch: build timeout of {} reached, killing step {}",
                ctx.timeout_text, step.name
            )));
            signal_group(&child, Signal::SIGKILL);
            let _ = child.wait();
            break StepEnd::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(notice);
    let lines = shipper.finish(PIPE_GRACE);
    (end, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(ws: &'a Path, abort: &'a Abort, deadline: Instant) -> StepContext<'a> {
        StepContext {
            shell: "/bin/sh",
            workspace: ws,
            env: &[],
            deadline,
            timeout_text: "1 second",
            abort,
            abort_grace: Duration::from_secs(2),
        }
    }

    fn step(cmd: &str) -> StepSpec {
        StepSpec {
            name: "s".into(),
            command: cmd.into(),
        }
    }

    #[test]
    fn exit_codes_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let abort = Abort::new();
        let far = Instant::now() + Duration::from_secs(600);
        let c = ctx(dir.path(), &abort, far);
        assert_eq!(
            run_step(&c, &step("echo a; echo b >&2"), None),
            (StepEnd::Exited(0), 2)
        );
        assert_eq!(run_step(&c, &step("exit 7"), None).0, StepEnd::Exited(7));
        assert_eq!(
            run_step(&c, &step("kill -9 $$"), None).0,
            StepEnd::Exited(137)
        );
        assert_eq!(StepEnd::Exited(137).code(), 137);
    }

    #[test]
    fn background_process_holding_the_pipe_does_not_hang_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let abort = Abort::new();
        let c = ctx(
            dir.path(),
            &abort,
            Instant::now() + Duration::from_secs(600),
        );
        let (end, _) = run_step(&c, &step("sleep 30 & echo started"), None);
        assert_eq!(end, StepEnd::Exited(0));
    }

    #[test]
    fn deadline_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let abort = Abort::new();
        let marker = dir.path().join("survived");
        let c = ctx(
            dir.path(),
            &abort,
            Instant::now() + Duration::from_millis(300),
        );
        let cmd = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let (end, lines) = run_step(&c, &step(&cmd), None);
        assert_eq!(end, StepEnd::TimedOut);
        assert_eq!(end.code(), TIMEOUT_CODE);
        assert_eq!(lines, 1, "the timeout notice is part of the step's output");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "a process of the timed out step survived");
    }

    #[test]
    fn abort_stops_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let abort = Abort::new();
        abort.trigger(15);
        let c = ctx(
            dir.path(),
            &abort,
            Instant::now() + Duration::from_secs(600),
        );
        let (end, _) = run_step(&c, &step("sleep 30"), None);
        assert_eq!(end, StepEnd::Aborted(15));
        assert_eq!(end.code(), 143);
    }

    #[test]
    fn missing_shell_is_a_spawn_failure() {
        let dir = tempfile::tempdir().unwrap();
        let abort = Abort::new();
        let mut c = ctx(
            dir.path(),
            &abort,
            Instant::now() + Duration::from_secs(600),
        );
        c.shell = "/nonexistent/sh";
        let (end, lines) = run_step(&c, &step("true"), None);
        assert!(matches!(end, StepEnd::SpawnFailed(_)), "{end:?}");
        assert_eq!(end.code(), SPAWN_FAILED_CODE);
        assert_eq!(lines, 1);
    }

    #[test]
    fn teardown_names() {
        for (n, t) in [
            ("sd-teardown-x", true),
            ("postteardown-y", true),
            ("build", false),
            ("myteardown-", false),
        ] {
            assert_eq!(
                StepSpec {
                    name: n.into(),
                    command: String::new()
                }
                .is_teardown(),
                t,
                "{n}"
            );
        }
    }
}
