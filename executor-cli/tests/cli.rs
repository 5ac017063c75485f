//! End-to-end tests of the `sdx` binary: the demo, failing builds, bad input, the
//! multi-call launcher, and `serve` driven by `run`/`status`/`stop --api`.
//! Everything runs on the process backend and loopback; nothing else is needed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

/// `sdx` with a clean configuration: no config file, the process backend with its state
/// in `state`.
fn sdx(state: &Path) -> Command {
    let mut c = Command::new(SDX);
    for var in [
        "SDX_CONFIG",
        "SDX_EXECUTOR",
        "SDX_API",
        "SDX_API_TOKEN",
        "RUST_LOG",
        "EXECUTOR_PROCESS_JOB_TOOLS",
    ] {
        c.env_remove(var);
    }
    c.env("EXECUTOR_PROCESS_STATE_DIR", state);
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A failed command prints exactly one line on stderr, and no panic or backtrace.
fn assert_one_line_error(stderr: &str) {
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("sdx: "), "stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "stderr: {stderr}"
    );
}

#[test]
fn demo_runs_a_three_step_build_to_success() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path()).arg("demo").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in [
        "sdx demo: reference API at http://127.0.0.1:",
        "build 1 submitted: 3 step(s) on process",
        "build 1 RUNNING (build)",
        "step hello started",
        "    hello | Hello from build 1 (job 1) in ",
        "    compile | compiling module 3 of 3",
        "step test succeeded (exit 0)",
        "build 1 SUCCESS (done)",
        "\nbuild 1 SUCCESS in ",
        "  STEP     EXIT      TIME\n",
        // The process backend's record: spawned within `start`, so no phase before
        // running; reaped at the end.
        "  on the engine: running ",
    ] {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
    // State transitions come in order, step output between its start and end.
    let pos = |s: &str| stdout.find(s).unwrap_or_else(|| panic!("{s:?} missing"));
    assert!(pos("QUEUED") < pos("RUNNING (build)"));
    assert!(
        pos("step hello started") < pos("hello | Hello")
            && pos("hello | Hello") < pos("step hello succeeded")
    );
    assert!(pos("step test succeeded") < pos("SUCCESS (done)"));
    let summary = &stdout[pos("\nbuild 1 SUCCESS in ")..];
    for step in ["hello", "compile", "test"] {
        assert!(
            summary
                .lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains(" 0 ")),
            "{step} missing from the summary:\n{summary}"
        );
    }
    // The demo cleans up after itself: nothing is left in the configured state dir.
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}

#[test]
fn demo_with_a_failing_step_exits_non_zero_with_the_reason() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path()).args(["demo", "--fail"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("test | test_divide FAILED: expected 2, got 3"),
        "{stdout}"
    );
    assert!(stdout.contains("step test FAILED (exit 1)"), "{stdout}");
    assert!(
        stdout.contains("build 1 FAILURE (failed) - step test failed with exit code 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(executor process): step test failed with exit code 1"),
        "{stdout}"
    );
}

#[test]
fn run_from_flags_reports_the_failing_step_and_skips_the_rest() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .args([
            "run",
            "--step",
            "first=echo one",
            "--step",
            "second=echo two; exit 3",
            "--step",
            "third=echo never",
        ])
        .args(["--env", "WHO=world"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("step second failed with exit code 3"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("echo never") && !stdout.contains("| never"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("third") && l.contains("skipped")),
        "{stdout}"
    );
}

#[test]
fn build_timeout_kills_the_step() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .env("EXECUTOR_PROCESS_ENV_SD_BUILD_TIMEOUT_SECS", "1")
        .args(["run", "--step", "slow=echo started; sleep 60"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("build timeout of 1 second reached, killing step slow"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Build timed out after 1 second"),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_one_line_on_stderr() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .args(["run", "--step", "bad name=true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(
        stderr.contains("(422): steps[0].name: must be 1-64 letters"),
        "{stderr}"
    );

    let out = sdx(state.path())
        .args(["demo", "--executor", "dokcer"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(stderr.contains("unknown backend \"dokcer\""), "{stderr}");

    let cfg = state.path().join("sdx.toml");
    std::fs::write(&cfg, "[process]\nstopGraceMs = \"later\"\n").unwrap();
    let out = sdx(state.path())
        .arg("--config")
        .arg(&cfg)
        .arg("demo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(
        stderr.contains("[process] stopGraceMs: must be an integer"),
        "{stderr}"
    );

    let out = sdx(state.path())
        .args(["status", "424242"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(stderr.contains("build 424242 not found"), "{stderr}");
}

#[test]
fn options_come_from_flags_over_environment_over_file() {
    let state = tempfile::tempdir().unwrap();
    let cfg = state.path().join("sdx.toml");
    std::fs::write(
        &cfg,
        "[process]\nstopGraceMs = 1000\n[api]\nstatusPollMs = 200\n",
    )
    .unwrap();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = sdx(state.path());
        c.arg("--config").arg(&cfg).args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // The environment is read although the file has a [process] section.
    let out = run(&["demo"], &[("EXECUTOR_PROCESS_STOP_GRACE_MS", "later")]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(
        stderr.contains("stopGraceMs: must be an integer")
            && stderr.contains("EXECUTOR_PROCESS_STOP_GRACE_MS"),
        "{stderr}"
    );
    // A flag beats the environment: the same bad variable is overridden, the demo runs.
    let out = run(
        &[
            "--opt",
            "process.stopGraceMs=1500",
            "--opt",
            "api.statusPollMs=100",
            "demo",
        ],
        &[("EXECUTOR_PROCESS_STOP_GRACE_MS", "later")],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // Unknown keys, sections and variables: refused with a suggestion.
    for (args, env, want) in [
        (
            vec!["--opt", "process.stopGrace=1", "demo"],
            vec![],
            "did you mean `stopGraceMs`?",
        ),
        (
            vec!["--opt", "procss.stopGraceMs=1", "demo"],
            vec![],
            "did you mean `process`?",
        ),
        (
            vec!["demo"],
            vec![("EXECUTOR_PROCESS_STOPGRACE_MS", "1")],
            "did you mean EXECUTOR_PROCESS_STOP_GRACE_MS?",
        ),
    ] {
        let out = run(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let (_, stderr) = text(&out);
        assert_one_line_error(&stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // `sdx options` lists the keys with their variables and defaults.
    let out = sdx(state.path())
        .args(["options", "process"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("stopGraceMs (integer, default 10000)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("env: EXECUTOR_PROCESS_STOP_GRACE_MS"),
        "{stdout}"
    );
}

#[test]
fn sdx_is_also_the_launcher() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path()).arg("launch").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("usage: launch"));
    let link = state.path().join("launch");
    std::os::unix::fs::symlink(SDX, &link).unwrap();
    let out = Command::new(&link).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.starts_with("launch "));
}

#[test]
fn doctor_and_gc_on_the_process_backend() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .args(["doctor", "--executor", "process"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.starts_with("process [ok]\n"), "{stdout}");
    assert!(
        stdout.contains("reachable:   yes") && stdout.contains("permissions: ok"),
        "{stdout}"
    );
    let out = sdx(state.path())
        .args(["gc", "--dry-run"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout, "process: nothing expired\n");
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_with_run_status_and_stop_over_http() {
    let state = tempfile::tempdir().unwrap();
    let token_file = state.path().join("api.token");
    let mut child = sdx(state.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut serve = Serve(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    assert!(
        lines
            .next()
            .unwrap()
            .unwrap()
            .starts_with("administrator token in")
    );
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();

    let remote = |args: &[&str]| {
        sdx(state.path())
            .args(args)
            .args(["--api", &url])
            .env("SDX_API_TOKEN", &token)
            .output()
            .unwrap()
    };
    let out = remote(&["run", "--step", "greet=echo hello over http"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("greet | hello over http"), "{stdout}");
    assert!(stdout.contains("build 1 SUCCESS"), "{stdout}");

    let out = remote(&["status", "1"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.starts_with("build 1 SUCCESS"), "{stdout}");
    let out = remote(&["stop", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a finished build cannot be aborted"
    );
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(stderr.contains("403"), "{stderr}");

    let out = sdx(state.path())
        .args(["status", "1", "--api", &url])
        .env("SDX_API_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("401"));

    // SIGTERM: graceful shutdown, exit 0.
    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = serve.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

#[test]
fn status_stop_and_verify_of_an_unknown_build_fail_with_a_hint() {
    // Before: `sdx stop 999` said "build 999: stopped" for a build that never existed.
    let state = tempfile::tempdir().unwrap();
    for cmd in ["status", "stop", "verify"] {
        let out = sdx(state.path()).args([cmd, "999"]).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stdout} {stderr}");
        assert_one_line_error(&stderr);
        assert!(stderr.contains("build 999 not found"), "{cmd}: {stderr}");
        assert!(stderr.contains("--api"), "{cmd}: {stderr}");
        assert!(stdout.is_empty(), "{cmd}: {stdout}");
    }
}

#[test]
fn every_run_gets_its_own_increasing_id_and_its_own_store() {
    // Before: every `sdx run` was build 1, so two runs destroyed each other's builds.
    let state = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = sdx(state.path())
            .args(["run", "--step", "hi=echo hi"])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let id: u64 = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("build ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no build id in {stdout}"));
        ids.push(id);
    }
    assert!(ids[1] > ids[0], "{ids:?}");
    assert!(ids[0] > 1 << 40, "run ids are time-based: {ids:?}");
    for id in &ids {
        assert!(state.path().join(format!("builds/{id}")).is_dir());
        // Its outcome stays readable on the executor after the run.
        let out = sdx(state.path())
            .args(["status", &id.to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out).0.contains("succeeded"), "{}", text(&out).0);
    }
    assert!(state.path().join("run.db").exists());
    assert!(
        !state.path().join("api.db").exists(),
        "a run never touches a server's store"
    );
}

#[test]
fn a_second_serve_on_one_state_directory_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let mut child = sdx(state.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _serve = Serve(child);
    let mut lines = BufReader::new(stdout).lines();
    assert!(lines.next().unwrap().unwrap().contains("reference API at"));
    let out = sdx(state.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert_one_line_error(&stderr);
    assert!(stderr.contains("another sdx serve"), "{stderr}");
}
