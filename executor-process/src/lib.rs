//! The local-process build executor: the embedded default backend, no engine needed.
//!
//! [`ProcessExecutor`] runs the `launch` program from a job-tools directory on the host as
//! a child process, one per build, exactly as the container backends run it inside the
//! build's image (the native launch contract of [`executor_base::LaunchSpec::native`]):
//!
//! ```text
//! <jobTools>/launch --api-uri A --store-uri S --ui-uri U --build-timeout N --token-file F <buildId>
//! ```
//!
//! * **Token**: written to `<stateDir>/builds/<id>/token` (mode 0600, directory 0700) and
//!   passed as `--token-file`; never in the argument list or the environment, unless the
//!   `tokenEnv` option asks for `SD_TOKEN`. The file is deleted as soon as the process has
//!   exited or been stopped.
//! * **Environment**: cleared, then the variables named by `passEnv` (`PATH`, `HOME`, ...),
//!   the configured `env`, and the launch variables (`SD_BUILD_ID`, `SD_API_URI`,
//!   `SD_STORE_URI`, `SD_BUILD_TIMEOUT`, ...). Secrets of the server never reach builds.
//! * **Output**: stdout and stderr go to `<stateDir>/builds/<id>/build.log`
//!   ([`ProcessExecutor::log_path`]); the working directory is `<stateDir>/builds/<id>/work`.
//! * **The whole tree**: each build is the leader of its own process group and, where the
//!   machine gives a writable cgroup v2 hierarchy (`cgroups`, default on), has a cgroup of
//!   its own that the supervisor joins before it starts `launch`; every process of the
//!   build also inherits `SD_PROCESS_BUILD=<stateDir>/builds/<id>`. `stop` sends SIGTERM to
//!   the group (`launch` stops its step within its share of the grace, which it gets as
//!   `SD_STOP_GRACE_MS`, and reports), then after `stopGraceMs` SIGKILLs the group, the
//!   cgroup and every marked process: steps in their own groups and daemons that called
//!   `setsid` included. When `launch` exits, whatever the build left running is killed
//!   the same way before the build counts as finished. Without a cgroup, a process that
//!   both leaves the group *and* drops the marker from its environment escapes (see the
//!   `tree` module; a test shows both cases).
//! * **Status**: running until the reaper task sees the exit; exit code 0 succeeds only
//!   with the launch handshake (`launch` writes it to `SD_LAUNCH_RESULT_FILE` =
//!   `<stateDir>/builds/<id>/result` and as its last output line; without it the build is
//!   failed with reason `launchProtocol`, see `executor_base::launch_protocol`), others
//!   fail (`launch`'s code 3 means its own build timeout: `TimedOut`); a signal we did not
//!   send is a failure with the signal name as evidence, or out of memory when the cgroup's
//!   `memory.events` counted an OOM kill meanwhile (see the `oom` module). After `stop`:
//!   `Canceled`; after a timeout: `TimedOut`.
//! * **Supervisor**: `launch` runs under a small `/bin/sh` supervisor (the process group
//!   leader; see **Zygote** for how it starts) that waits for it, writes its exit code to `<stateDir>/builds/<id>/exit`, and
//!   exits the same way (re-raising a fatal signal), so a build that ends while no executor
//!   runs keeps its real outcome. It waits through `stop`'s SIGTERM, so `launch` can abort
//!   gracefully; a `launch` that is a `#!` script with a missing interpreter is refused by
//!   `start` (`ConfigInvalid`, naming `jobTools`).
//! * **Zygote** (`zygote`, default on; builds with a cgroup): the supervisor is not a new
//!   `/bin/sh` per build but a subshell forked by one long-lived shell per executor, which
//!   saves a program start per build (the cost that bounds trivial builds per second; see
//!   the README's Gearman figures). The zygote turns job control on through a
//!   pseudo-terminal it then hangs up, so each supervisor still leads its own process
//!   group, SIGINT and SIGQUIT are not ignored, and builds have no controlling terminal:
//!   a test checks that `launch` sees the same environment, directory, signal dispositions
//!   and terminal either way. It reports each supervisor's pid and launch's exit code on a
//!   pipe; a supervisor killed before it reported is seen by its pid. Killing the zygote
//!   costs no build (its supervisors run on, and the next start forks a new zygote);
//!   killing the executor leaves it as before, and a restarted executor finds a
//!   supervisor whose pid it never recorded among the build's cgroup members. Where the
//!   zygote cannot run (no `setsid` program, no pseudo-terminals), builds start under a
//!   shell of their own and the executor logs why once.
//! * **Restarts**: `<stateDir>/builds/<id>/state.json` keeps pid, process start time (to
//!   detect pid reuse), deadlines and the outcome. A new instance on the same state
//!   directory adopts running builds (status, stop and its timeout backstop keep working);
//!   a build that ended meanwhile gets its status from the supervisor's exit file
//!   (succeeded, failed with the code, timed out, or killed by a signal); only a build
//!   whose whole process group vanished without a recorded exit is `Lost`. Builds are
//!   *not* killed when the executor is dropped: a server restart does not cancel them.
//!   The terminal `state.json` is `fdatasync`ed, and `status` answers a terminal status
//!   only once it is on disk, so an outcome reported on (the Gearman worker's
//!   `WORK_COMPLETE`) survives a power loss.
//! * **Interrupted starts**: `start` runs as a task of its own, so dropping its future
//!   (a caller's timeout) never leaves half a build: it is spawned (and `stop` ends it)
//!   or rolled back. A start killed with its process between claiming the directory and
//!   spawning `launch` leaves a state file without a pid; its `owner` field (an `owner`
//!   file in directories of earlier versions) names the claiming process, so once that process is gone (and no supervisor carries
//!   the build's marker) the build is `Lost` with `build_started: false` ("launch was
//!   never spawned") at once, its token file removed, and a new `start` of the id takes
//!   the directory over: a caller (the reference API's adoption) starts it again and it
//!   runs once. While the claimant lives, the build is `Pending` and left to it.
//! * **Timeouts**: the executor kills a build still running `timeoutGraceMs` (default 1
//!   minute, upstream's "1 min more than the launcher") after its timeout, so `launch`
//!   can run its own timeout handling first. This backstop is persisted with the build, so
//!   a restart loses no timeout. `start_timer`/`stop_timer` are the trait's no-ops: wrap
//!   the executor in `executor_base::timer::TimedExecutor` for the API-driven timers.
//! * **gc / cleanup**: builds past start + timeout + 30 minutes are stopped and their
//!   directories removed; `cleanup` does only that and never stops a live build (a server
//!   restart leaves builds running).
//!   [`Executor::stop_all`](executor_base::Executor::stop_all) is the explicit "stop
//!   every live build of this state directory".
//! * **Spool**: `launch` gets `SD_SPOOL_FILE=<stateDir>/builds/<id>/spool.jsonl` for the
//!   reports it cannot deliver while the API is down ([`ProcessExecutor::spool_path`]).
//! * **Blocking I/O** (the fsync of every state save, creating and removing build
//!   directories, killing the tree) runs on Tokio's blocking threads, never on the async
//!   workers.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use executor_base::{Executor, ErrorKind, StartConfig, StopConfig};
//! use executor_process::ProcessExecutorBuilder;
//!
//! let state = tempfile::tempdir().unwrap();
//! let exec = ProcessExecutorBuilder::new()
//!     .with_job_tools("/nonexistent/job-tools")
//!     .with_state_dir(state.path())
//!     .build()
//!     .await
//!     .unwrap();
//! let build = StartConfig::builder(42, "http://127.0.0.1:8080", "busybox", "t").build().unwrap();
//! let err = exec.start(&build).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::ConfigInvalid); // names jobTools: no launch there
//! assert!(err.to_string().contains("jobTools"));
//! assert_eq!(exec.status(&build.to_stop()).await.unwrap_err().kind(), ErrorKind::NotFound);
//! exec.stop(&build.to_stop()).await.unwrap(); // stop of an unknown build is fine
//! # });
//! ```
//!
//! # Dependencies
//!
//! * `tokio::process`: async child processes whose exit a task can await, with
//!   `process_group(0)` to give each build its own group without `unsafe` `pre_exec` code.
//! * `nix`: safe, typed `killpg`/`kill` with `Errno` results; the workspace forbids
//!   `unsafe`, which raw `libc::killpg` would need.
//! * `chrono`, `serde_json`: the state file's timestamps and format; `parking_lot`: short,
//!   never-awaited locks around the build table and records.
//! * `futures`: `join_all` to stop every build concurrently on `cleanup`.
//! * `/bin/sh` (POSIX, builtins only) as the supervisor: it is on every host that can run
//!   `launch`'s steps, and outlives the executor without a helper binary to install.
//! * `setsid` (util-linux) to start the zygote in a session of its own (the standard
//!   library's `setsid` is unstable, and `pre_exec` is `unsafe`); `nix`'s `pty` functions
//!   for the zygote's brief terminal.
//!
//! Linux is the target (procfs for pid identity and the marker sweep, cgroup v2 for the
//! build's cgroup and OOM evidence); on other Unix systems those extras are skipped and
//! liveness falls back to `kill(pid, 0)`.

mod builder;
mod claim;
mod config;
mod error;
mod executor;
mod gc;
mod handshake;
mod oom;
mod os;
mod pause;
mod preflight;
mod reaper;
mod record;
mod requests;
mod spawn;
mod stop;
mod supervisor;
mod sweep;
#[cfg(test)]
mod testutil;
mod timings;
mod tree;
mod zygote;

pub use builder::ProcessExecutorBuilder;
pub use config::{
    DEFAULT_PASS_ENV, DEFAULT_STOP_GRACE_MS, DEFAULT_TIMEOUT_GRACE_MS, ENV_JOB_TOOLS,
    ENV_STATE_DIR, ProcessConfig, default_job_tools, default_state_dir,
};
pub use executor::ProcessExecutor;
pub use handshake::RESULT_FILE_ENV;
pub use reaper::LAUNCH_EXIT_TIMEOUT;
pub use spawn::{SPOOL_ENV, STOP_GRACE_ENV};
pub use tree::MARK_ENV;

/// The backend's name, as used by the router and `--executor process`.
pub const SCHEME: &str = "process";
