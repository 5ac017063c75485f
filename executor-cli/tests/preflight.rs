//! `sdx run --dry-run` and `sdx doctor` show the executor's pre-flight findings, with the
//! defaults a user gets (the process backend, no config file): exit 0 when they pass, 1
//! when a check fails, and nothing is started by a dry run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

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

/// A job-tools directory whose `launch` is not executable.
fn broken_tools() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let launch = dir.path().join("launch");
    std::fs::write(&launch, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir
}

#[test]
fn run_dry_run_shows_the_findings_and_starts_nothing() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .args(["run", "--dry-run", "--step", "hello=echo never-run"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.starts_with("pre-flight of the build on process: passed"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    process.launch"), "{stdout}");
    assert!(stdout.contains("ok    process.stateDir"), "{stdout}");
    assert!(!stdout.contains("never-run"), "nothing ran: {stdout}");
    assert!(
        !stdout.contains("submitted"),
        "nothing was submitted: {stdout}"
    );

    let out = sdx(state.path())
        .args(["run", "--dry-run", "--json", "--step", "hello=true"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["backend"], "process");
    assert_eq!(v["passed"], true);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["level"] == "ok")
    );
}

#[test]
fn a_failed_preflight_fails_the_dry_run_and_refuses_the_run() {
    let state = tempfile::tempdir().unwrap();
    let tools = broken_tools();
    let out = sdx(state.path())
        .env("EXECUTOR_PROCESS_JOB_TOOLS", tools.path())
        .args(["run", "--dry-run", "--step", "hello=true"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("process: FAILED"), "{stdout}");
    assert!(stdout.contains("FAIL  process.launch"), "{stdout}");
    assert!(stdout.contains("not executable"), "{stdout}");

    // Without --dry-run the API refuses the build (422): one line naming the check.
    let out = sdx(state.path())
        .env("EXECUTOR_PROCESS_JOB_TOOLS", tools.path())
        .args(["run", "--step", "hello=true"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused (422)"), "{stderr}");
    assert!(stderr.contains("process.launch"), "{stderr}");
}

#[test]
fn doctor_json_carries_the_preflight_per_backend() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .args(["doctor", "--json", "--executor", "process"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let r = &v[0];
    assert_eq!(r["backend"], "process");
    assert_eq!(r["healthy"], true);
    assert_eq!(r["preflight"]["backend"], "process");
    assert_eq!(r["preflight"]["passed"], true);
    let checks: Vec<&str> = r["preflight"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["process.launch", "process.stateDir"]);

    // The human table shows the same findings.
    let out = sdx(state.path())
        .args(["doctor", "--executor", "process"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.contains("preflight:   passed"), "{stdout}");
    assert!(stdout.contains("ok    process.launch"), "{stdout}");
}

#[test]
fn doctor_names_a_bad_key_and_a_failed_check() {
    let state = tempfile::tempdir().unwrap();
    let out = sdx(state.path())
        .env("EXECUTOR_PROCESS_LAUNCH_MODE", "bogus")
        .args(["doctor", "--json", "--executor", "process"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let f = &v[0]["preflight"]["findings"][0];
    assert_eq!(f["check"], "process.config");
    assert_eq!(f["level"], "fail");
    assert!(f["message"].as_str().unwrap().contains("launchMode"), "{f}");

    let tools = broken_tools();
    let out = sdx(state.path())
        .env("EXECUTOR_PROCESS_JOB_TOOLS", tools.path())
        .args(["doctor", "--executor", "process"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("process [PROBLEM]"), "{stdout}");
    assert!(stdout.contains("preflight:   FAILED"), "{stdout}");
    assert!(stdout.contains("FAIL  process.launch"), "{stdout}");
}
