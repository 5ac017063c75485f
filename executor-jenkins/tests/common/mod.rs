//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use executor_base::{BuildStatus, Executor, StartConfig, StopConfig};
use executor_jenkins::JenkinsExecutor;
use executor_jenkins::fake::{FakeJenkins, FakeOptions};

/// The token every test build carries; tests assert it never leaks.
pub const BUILD_TOKEN: &str = "build-token-SECRET-7f3a9c";

/// A start config for build `id`.
pub fn build(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9/api", "node:22", BUILD_TOKEN)
        .job_id(7)
        .build()
        .unwrap()
}

/// A fake with manual queue and results, plus an executor for it.
pub async fn setup() -> (FakeJenkins, JenkinsExecutor) {
    setup_with(FakeOptions::default()).await
}

/// A fake with `opts`, plus an executor for it; the requests of building the executor
/// (its plugin check) are forgotten.
pub async fn setup_with(opts: FakeOptions) -> (FakeJenkins, JenkinsExecutor) {
    let j = FakeJenkins::start_with(opts).await;
    let e = j.executor_builder().build().await.unwrap();
    assert_eq!(calls(&j), ["GET /pluginManager/api/json"]);
    j.clear_requests();
    (j, e)
}

/// `status` of build `id`.
pub async fn status(e: &JenkinsExecutor, id: u64) -> BuildStatus {
    e.status(&stop_cfg(id)).await.unwrap()
}

/// A stop config for build `id`.
pub fn stop_cfg(id: u64) -> StopConfig {
    build(id).to_stop()
}

/// Polls until `pred` holds (at most 5 s).
pub async fn eventually(mut pred: impl FnMut() -> bool) {
    for _ in 0..500 {
        if pred() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

/// The `(method, path)` pairs the fake saw since the last clear.
pub fn calls(j: &FakeJenkins) -> Vec<String> {
    j.requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Polls `status` of build `id` until it is `phase` (at most 5 s); that status.
pub async fn wait_for_phase(
    e: &JenkinsExecutor,
    id: u64,
    phase: executor_base::Phase,
) -> BuildStatus {
    for _ in 0..500 {
        let s = status(e, id).await;
        if s.phase == phase {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "build {id} did not reach {phase:?} within 5 s: {}",
        status(e, id).await
    );
}
