//! Helpers shared by the integration tests: a job-tools directory whose `launch` is a
//! shell script written by the test, and an executor over it with a short stop grace.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use executor_base::{BuildStatus, Executor, ExecutorExt, StartConfig, StopConfig};
use executor_process::{ProcessExecutor, ProcessExecutorBuilder};
use tempfile::TempDir;

/// The API URI put in test builds (nothing listens there; the scripts never call it).
pub const API: &str = "http://127.0.0.1:9";

/// The launch handshake as the reference `launch` writes it when the build succeeded:
/// an `EXIT` trap, so every way `body` exits 0 proves the build ran (as `sd-launch` does).
pub const HANDSHAKE_TRAP: &str = r#"trap '[ $? = 0 ] && echo "sdx-launch-result protocol=1 build=$SD_BUILD_ID status=SUCCESS"' EXIT"#;

/// A job-tools directory whose `launch` runs `body` under `/bin/sh` and, exiting 0,
/// writes the launch handshake ([`HANDSHAKE_TRAP`]).
pub fn job_tools(body: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_launch(dir.path(), body);
    dir
}

/// A job-tools directory whose `launch` runs `body` and never writes the handshake (a
/// launcher that does not speak the launch protocol, such as upstream's on an unknown
/// flag).
pub fn job_tools_without_handshake(body: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), body);
    dir
}

/// Writes `<dir>/launch` running `body`, with the handshake on exit 0.
pub fn write_launch(dir: &Path, body: &str) {
    write_script(dir, &format!("{HANDSHAKE_TRAP}\n{body}"));
}

fn write_script(dir: &Path, body: &str) {
    let path = dir.join("launch");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A builder over `tools` and `state` with a 300 ms stop grace and `OUT=<out>` in the
/// builds' environment.
pub fn builder(tools: &Path, state: &Path, out: &Path) -> ProcessExecutorBuilder {
    // From the environment first: CI runs these tests again with
    // `EXECUTOR_PROCESS_ZYGOTE=false`, the shell-per-build way.
    ProcessExecutorBuilder::from_env()
        .with_job_tools(tools)
        .with_state_dir(state)
        .with_stop_grace(Duration::from_millis(300))
        .with_env("OUT", out.to_str().unwrap())
}

/// An executor from [`builder`].
pub async fn executor(tools: &Path, state: &Path, out: &Path) -> ProcessExecutor {
    builder(tools, state, out).build().await.unwrap()
}

/// A start config for build `id` with `token`.
pub fn build(id: u64, token: &str) -> StartConfig {
    StartConfig::builder(id, API, "busybox:latest", token)
        .job_id(1)
        .build()
        .unwrap()
}

/// Waits until the build is terminal.
pub async fn finished(exec: &dyn Executor, stop: &StopConfig) -> BuildStatus {
    exec.wait_until_finished(stop, Duration::from_millis(20), Duration::from_secs(20))
        .await
        .unwrap()
}

/// Waits until `path` exists (a script wrote it) and returns its trimmed contents.
pub async fn wait_file(path: &Path) -> String {
    for _ in 0..1000 {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} was never written", path.display());
}

/// Whether `pid` is a live process (zombies count as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Waits until `pid` is gone.
pub async fn wait_dead(pid: u32) {
    for _ in 0..500 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} is still alive");
}

/// `<dir>/<name>`.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
