//! Helpers for the unit tests that run real processes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use executor_base::StartConfig;
use tempfile::TempDir;

use crate::{ProcessExecutor, ProcessExecutorBuilder};

/// A job-tools directory whose `launch` runs `body` under `/bin/sh` and, exiting 0,
/// writes the launch handshake as the reference `launch` does (an `EXIT` trap).
pub(crate) fn job_tools(body: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let launch = dir.path().join("launch");
    let trap = r#"trap '[ $? = 0 ] && echo "sdx-launch-result protocol=1 build=$SD_BUILD_ID status=SUCCESS"' EXIT"#;
    std::fs::write(&launch, format!("#!/bin/sh\n{trap}\n{body}\n")).unwrap();
    std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// An executor over `tools` and `state` with a 200 ms stop grace.
pub(crate) async fn executor(tools: &Path, state: &Path) -> ProcessExecutor {
    // From the environment first: CI runs these tests again with
    // `EXECUTOR_PROCESS_ZYGOTE=false`, the shell-per-build way.
    ProcessExecutorBuilder::from_env()
        .with_job_tools(tools)
        .with_state_dir(state)
        .with_stop_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
}

/// A start config for build `id`.
pub(crate) fn config(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9", "busybox", "tok")
        .build()
        .unwrap()
}

/// Waits (up to 20 s) until build `b` is terminal.
pub(crate) async fn finished(
    exec: &ProcessExecutor,
    b: &StartConfig,
) -> executor_base::BuildStatus {
    use executor_base::ExecutorExt;
    exec.wait_until_finished(
        &b.to_stop(),
        Duration::from_millis(20),
        Duration::from_secs(20),
    )
    .await
    .unwrap()
}
