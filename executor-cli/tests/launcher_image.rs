//! `sdx launcher-image build` refuses bad input before it talks to any daemon: one line
//! on stderr naming the flag, exit code 2. (The build and push themselves are tested
//! against the real `dockerd` and registry in `tests/tests/launcher_image.rs`.)

use std::process::Command;

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

fn refused(args: &[&str]) -> String {
    // A daemon address nothing answers on: bad input must be refused before it is used.
    let out = Command::new(SDX)
        .arg("launcher-image")
        .arg("build")
        .args(args)
        .env("DOCKER_HOST", "tcp://127.0.0.1:9")
        .env_remove("SDX_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    stderr
}

#[test]
fn push_without_a_registry_tag_is_refused() {
    let e = refused(&["--push"]);
    assert!(e.contains("--push") && e.contains("--tag"), "{e}");
}

#[test]
fn a_bad_tag_is_refused_naming_it() {
    let e = refused(&["--tag", "Bad:Tag"]);
    assert!(e.contains("--tag") && e.contains("Bad:Tag"), "{e}");
    let e = refused(&["--tag", "r:5000/x@sha256:0123456789abcdef0123456789abcdef"]);
    assert!(e.contains("digest"), "{e}");
}

#[test]
fn an_unreachable_daemon_is_one_line_naming_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("launch");
    std::fs::write(&script, "#!/bin/sh\necho launch 1\n").unwrap();
    let out = Command::new(SDX)
        .args(["launcher-image", "build", "--launch"])
        .arg(&script)
        .env("DOCKER_HOST", "tcp://127.0.0.1:9")
        .env_remove("SDX_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "stderr: {stderr}");
}
