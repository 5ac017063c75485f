//! A freestyle job's "Execute shell" step, run the way a Jenkins agent runs it.
//!
//! Core `hudson/tasks/Shell.java`: the command is written to a temporary file (line ends
//! converted to `\n`, and a `\n` put in front when it does not start with `#!`, see
//! `addLineFeedForNonASCII`), then `buildCommandLine` runs
//!
//! * `<interpreter line without "#!", split at white space> <file>` when the command
//!   starts with `#!`;
//! * `/bin/sh -xe <file>` otherwise: `-x` traces every command, with its expanded
//!   arguments, to the build's console log, and Jenkins does **not** mask password
//!   parameters in that log (`PasswordParameterValue` only hides them from launcher
//!   command lines of build wrappers; output masking needs the Mask Passwords plugin).
//!
//! The build's parameters are in the process environment. Jenkins' `Util.tokenize` also
//! honours quotes in the interpreter line; a plain white-space split is enough here.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// The command line Jenkins runs for a Shell step whose command is `command`, written to
/// `file`.
///
/// ```
/// use executor_jenkins::fake::shell_command_line;
/// assert_eq!(shell_command_line("echo hi", "/tmp/j.sh"), ["/bin/sh", "-xe", "/tmp/j.sh"]);
/// assert_eq!(
///     shell_command_line("#!/bin/sh -eu\necho hi", "/tmp/j.sh"),
///     ["/bin/sh", "-eu", "/tmp/j.sh"]
/// );
/// ```
pub fn shell_command_line(command: &str, file: &str) -> Vec<String> {
    match command.strip_prefix("#!") {
        Some(rest) => {
            let line = rest.lines().next().unwrap_or("").trim();
            let mut args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            args.push(file.to_string());
            args
        }
        None => vec!["/bin/sh".into(), "-xe".into(), file.into()],
    }
}

/// The file content Jenkins writes for `command` (`Shell.getContents`).
fn contents(command: &str) -> String {
    let unix = command.replace("\r\n", "\n");
    if unix.starts_with("#!") || unix.starts_with('\n') {
        unix
    } else {
        format!("\n{unix}")
    }
}

/// Runs a Shell step's `command` as a Jenkins agent would, with the build's parameters
/// `env` in its environment, in a fresh temporary workspace; the whole output (what the
/// build's console log would show: stdout and stderr).
pub fn run_shell_step(command: &str, env: &[(&str, &str)]) -> std::io::Result<Output> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "sdx-fake-jenkins-ws-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("jenkins-step.sh");
    std::fs::write(&file, contents(command))?;
    let argv = shell_command_line(command, &file.to_string_lossy());
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(&dir)
        .envs(env.iter().copied())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_interpreter_line_commands_are_traced() {
        let out = run_shell_step("echo \"$SECRET\" >/dev/null", &[("SECRET", "s3cr3t")]).unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("+ echo s3cr3t"),
            "sh -x shows the expanded value: {err}"
        );
    }

    #[test]
    fn an_interpreter_line_replaces_sh_xe() {
        let out = run_shell_step(
            "#!/bin/sh -e\necho \"$SECRET\" >/dev/null\nexit 3",
            &[("SECRET", "s3cr3t")],
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
