//! Shared set-up of the integration tests: a fake API server and an executor on it.
#![allow(dead_code)]

pub mod real;

use std::time::Duration;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::{StartConfig, StopConfig};
use executor_k8s::fake::{FakeApiServer, Kubelet};
use executor_k8s::{K8sExecutor, K8sExecutorBuilder};

pub const NS: &str = "builds";
pub const TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.s3cr3t-build-token";

/// Fast retries for tests: 4 retries from 10 ms, no jitter.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: false,
        budget: None,
    }
}

/// A builder pointed at `fake` with test-friendly defaults.
pub fn builder(fake: &FakeApiServer) -> K8sExecutorBuilder {
    K8sExecutorBuilder::new()
        .with_url(fake.url())
        .with_namespace(NS)
        .with_prefix("sd-")
        .with_rate_limit(1000, 1000)
        .with_retry(fast_retry())
        .with_breaker(BreakerConfig {
            max_failures: 50,
            ..BreakerConfig::default()
        })
}

/// An executor whose watch has synced.
pub async fn executor(b: K8sExecutorBuilder) -> K8sExecutor {
    let e = b.build().await.expect("build executor");
    if e.config().watch {
        e.wait_synced(Duration::from_secs(10))
            .await
            .expect("watch synced");
    }
    e
}

/// A fake, its kubelet for `NS`, and a synced executor with defaults.
pub async fn setup() -> (FakeApiServer, Kubelet, K8sExecutor) {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake)).await;
    (fake.clone(), fake.kubelet(NS), e)
}

pub fn start_cfg(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9/", "busybox:latest", TOKEN)
        .job_id(7)
        .build()
        .expect("valid start config")
}

pub fn stop_cfg(id: u64) -> StopConfig {
    StopConfig::new(executor_base::BuildId::new(id).expect("positive"))
}

/// The single pod of build `id` (prefix `sd-`).
pub fn pod_name(k: &Kubelet, id: u64) -> String {
    let prefix = format!("sd-{id}-");
    let names: Vec<String> = k
        .pod_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "expected one pod for build {id}, got {names:?}"
    );
    names[0].clone()
}

/// Polls `f` every 10 ms until it returns `Some` (panics after 10 s).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
