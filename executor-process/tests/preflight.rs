//! Pre-flight of the process backend: job-tools' `launch` and its `#!` interpreter are
//! executable, the state directory is writable; each problem is one `fail` naming the
//! path and the option.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{build, executor, job_tools};
use executor_base::{Executor, Level, Preflight};

fn finding<'a>(p: &'a Preflight, check: &str) -> &'a executor_base::Finding {
    p.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no finding {check} in {p:#?}"))
}

#[tokio::test]
async fn an_executable_launch_and_a_writable_state_dir_pass() {
    let tools = job_tools("exit 0");
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let e = executor(tools.path(), state.path(), out.path()).await;
    let p = e.preflight(&build(1, "tok")).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(p.backend, "process");
    let l = finding(&p, "process.launch");
    assert_eq!(l.level, Level::Ok);
    assert!(l.message.contains("interpreter /bin/sh"), "{}", l.message);
    assert_eq!(finding(&p, "process.stateDir").level, Level::Ok);
    let leftovers: Vec<_> = std::fs::read_dir(state.path().join("builds"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".preflight"))
        .collect();
    assert!(leftovers.is_empty(), "the write probe is removed");
}

#[tokio::test]
async fn a_launch_that_cannot_run_fails_naming_it() {
    let tools = job_tools("exit 0");
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let e = executor(tools.path(), state.path(), out.path()).await;
    let launch = tools.path().join("launch");

    std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = e.preflight(&build(2, "tok")).await.unwrap();
    assert!(!p.passed());
    let l = finding(&p, "process.launch");
    assert_eq!(l.level, Level::Fail);
    assert!(l.message.contains("not executable"), "{}", l.message);
    assert!(
        l.message.contains(&launch.display().to_string()),
        "{}",
        l.message
    );
    assert!(l.message.contains("jobTools"), "{}", l.message);

    std::fs::write(&launch, "#!/nonexistent/interpreter\nexit 0\n").unwrap();
    std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = e.preflight(&build(3, "tok")).await.unwrap();
    let l = finding(&p, "process.launch");
    assert_eq!(l.level, Level::Fail);
    assert!(
        l.message.contains("/nonexistent/interpreter"),
        "{}",
        l.message
    );

    std::fs::write(&launch, "#!/usr/bin/env no-such-program-sdx\nexit 0\n").unwrap();
    let p = e.preflight(&build(4, "tok")).await.unwrap();
    let l = finding(&p, "process.launch");
    assert_eq!(l.level, Level::Fail);
    assert!(l.message.contains("no-such-program-sdx"), "{}", l.message);

    std::fs::remove_file(&launch).unwrap();
    let p = e.preflight(&build(5, "tok")).await.unwrap();
    assert_eq!(finding(&p, "process.launch").level, Level::Fail);
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_written_fails_naming_it() {
    let tools = job_tools("exit 0");
    let (state, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let e = executor(tools.path(), state.path(), out.path()).await;
    // The builds directory replaced by a file (permissions alone do not stop root).
    let builds = state.path().join("builds");
    std::fs::remove_dir_all(&builds).unwrap();
    std::fs::write(&builds, "not a directory").unwrap();
    let p = e.preflight(&build(6, "tok")).await.unwrap();
    assert!(!p.passed());
    let s = finding(&p, "process.stateDir");
    assert_eq!(s.level, Level::Fail);
    assert!(
        s.message.contains(&builds.display().to_string()),
        "{}",
        s.message
    );
    assert!(s.message.contains("stateDir"), "{}", s.message);
}
