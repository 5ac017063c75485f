//! The supervisor: a POSIX shell that runs `launch` as its child and writes `launch`'s exit
//! code to `<stateDir>/builds/<id>/exit`, so the outcome of a build that ends while no
//! executor runs (the server restarted) is known afterwards instead of being `Lost`.
//!
//! It is the build's process group leader (the pid in `state.json`) and behaves as
//! `launch` does to whoever waits for it:
//!
//! * it waits for `launch` through a group-wide SIGTERM/SIGINT/SIGHUP from `stop` (the
//!   signal reaches `launch` directly; the shell's trap runs only once `launch` is done),
//!   so a graceful abort is not cut short; SIGKILL takes both, as before;
//! * it exits with `launch`'s code, and when `launch` died of a signal it re-raises that
//!   signal on itself (core dumps off), so the reaper still sees the signal, including
//!   SIGKILL for the out-of-memory check.
//!
//! It first moves itself into the build's cgroup (when the executor made one), so
//! `launch` and everything it starts are born inside it.
//!
//! Only builtins are used (`printf`, `trap`, `kill`, `ulimit`), so an empty `PATH` is fine.
//! The shell convention makes an exit code above 128 mean "killed by signal code - 128";
//! `launch` uses 0-3.

use std::path::Path;

use executor_base::BuildStatus;

use crate::reaper;

/// The shell every build runs under.
pub(crate) const SHELL: &str = "/bin/sh";

/// The shell functions of a supervisor, shared by both ways one starts: the script below
/// (a shell per build) and the [`crate::zygote`] (defined once, used by each build's
/// forked subshell).
///
/// * `sd_join <cgroup.procs>` moves the calling shell into the build's cgroup (`0` is
///   "the writer"; nothing when the argument is empty), so `launch` and everything it
///   starts are born inside;
/// * `sd_run <exit file> <launch...>` runs `launch` as the shell's child, waits for it
///   through a stop's SIGTERM/SIGINT/SIGHUP (the trap runs only once `launch` is done),
///   writes its exit code to the exit file and returns it. `launch` does not get the
///   zygote's report pipe (3).
macro_rules! functions {
    () => {
        r#"sd_join() {
  [ -z "$1" ] || { echo 0 > "$1"; } 2>/dev/null
}
sd_run() {
  sd_exit_file="$1"; shift
  trap : TERM INT HUP
  "$@" 3>&-
  sd_code=$?
  printf '%s\n' "$sd_code" > "$sd_exit_file"
  return "$sd_code"
}
"#
    };
}

/// [`functions!`] as a string, for the zygote's prelude.
pub(crate) const FUNCTIONS: &str = functions!();

/// The supervisor script of a shell per build; `$1` is the exit file, `$2` the
/// `cgroup.procs` file of the build's cgroup (empty: none), the rest is the `launch`
/// command. It exits as `launch` did: with its code, or killed by the same signal.
pub(crate) const SCRIPT: &str = concat!(
    functions!(),
    r#"f="$1"; cg="$2"; shift 2
if ! sd_join "$cg"; then
  printf 'sd-supervise: cannot join the cgroup %s; the build is tracked by process group and marker\n' "$cg" >&2
fi
sd_run "$f" "$@"
code=$?
if [ "$code" -gt 128 ] && [ "$code" -lt 160 ]; then
  trap - TERM INT HUP
  ulimit -c 0 2>/dev/null
  kill -$((code - 128)) $$
fi
exit "$code"
"#
);

/// The `$0` the supervisor shows in `ps`.
pub(crate) const ARG0: &str = "sd-supervise";

/// The status of a build from the exit code its supervisor wrote to `exit_file`, when it
/// wrote one (a build that ended while no executor waited for it).
pub(crate) fn recorded_exit(exit_file: &Path) -> Option<BuildStatus> {
    let text = std::fs::read_to_string(exit_file).ok()?;
    let code: i32 = text.trim().parse().ok()?;
    Some(match code {
        129..=159 => reaper::killed_by(
            crate::os::signal_name(code - 128),
            " while no executor was running",
        ),
        _ => reaper::classify_code(code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::Phase;

    fn run(launch: &str) -> (std::process::ExitStatus, Option<BuildStatus>) {
        let dir = tempfile::tempdir().unwrap();
        let exit = dir.path().join("exit");
        let status = std::process::Command::new(SHELL)
            .args(["-c", SCRIPT, ARG0])
            .arg(&exit)
            .arg("")
            .args([SHELL, "-c", launch])
            .env_clear()
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        (status, recorded_exit(&exit))
    }

    #[test]
    fn exit_codes_pass_through_and_are_recorded() {
        use std::os::unix::process::ExitStatusExt;
        let (st, rec) = run("exit 0");
        assert_eq!(st.code(), Some(0));
        assert_eq!(rec.unwrap().phase, Phase::Succeeded);
        let (st, rec) = run("exit 5");
        assert_eq!(st.code(), Some(5));
        assert_eq!(rec.unwrap().exit_code, Some(5));
        let (st, rec) = run("exit 3");
        assert_eq!(st.code(), Some(3));
        assert_eq!(rec.unwrap().phase, Phase::TimedOut);
        // A signal is re-raised, and recorded as that signal.
        let (st, rec) = run("kill -USR1 $$; sleep 5");
        assert_eq!(st.signal(), Some(10));
        let rec = rec.unwrap();
        assert_eq!(rec.phase, Phase::Failed);
        assert_eq!(rec.failure.unwrap().evidence.as_deref(), Some("SIGUSR1"));
    }

    #[test]
    fn nothing_recorded_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded_exit(&dir.path().join("exit")).is_none());
        std::fs::write(dir.path().join("exit"), "garbage").unwrap();
        assert!(recorded_exit(&dir.path().join("exit")).is_none());
    }
}
