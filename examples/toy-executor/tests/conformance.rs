//! The toy backend passes the conformance suite, and its own options and outcomes work.

use std::sync::Arc;
use std::time::Duration;

use executor_base::testkit::conformance::{ConformanceConfig, conformance};
use executor_base::{ErrorKind, Executor, ExecutorExt, Phase, StartConfig};
use toy_executor::{ToyConfig, ToyExecutor};

#[tokio::test]
async fn toy_executor_passes_conformance() {
    conformance(
        || async { Arc::new(ToyExecutor::new(ToyConfig::default())) as Arc<dyn Executor> },
        ConformanceConfig {
            first_build_id: 1,
            ..Default::default()
        },
    )
    .await;
}

#[test]
fn options_use_the_shared_config_types() {
    let c = ToyConfig::from_json(&serde_json::json!({
        "runSeconds": 1, "timeout": {"maxMinutes": 30}, "resources": {"cpu": {"low": 1.0}}
    }))
    .unwrap();
    assert_eq!(
        (
            c.run_seconds,
            c.timeout.max_minutes,
            c.timeout.default_minutes
        ),
        (Some(1), 30, 90)
    );
    assert_eq!(c.resources.cpu_millis(None), 1000);
    let e = ToyConfig::from_json(&serde_json::json!({"runSecs": 1})).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.to_string().contains("runSecs"), "{e}");
    let e = ToyConfig::from_json(&serde_json::json!({"timeout": {"maxMinutes": 0}})).unwrap_err();
    assert!(e.to_string().contains("timeout.maxMinutes"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn builds_succeed_after_their_run_time_or_time_out_on_the_engine() {
    let toy = ToyExecutor::new(ToyConfig {
        run_seconds: Some(120),
        ..ToyConfig::default()
    });
    let build = |id, timeout: u32| {
        StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", "t")
            .annotation("screwdriver.cd/ram", "HIGH")
            .annotation("screwdriver.cd/timeout", timeout)
            .build()
            .unwrap()
    };
    let (ok, slow) = (build(1, 5), build(2, 1));
    toy.start(&ok).await.unwrap();
    toy.start(&slow).await.unwrap();
    assert!(
        toy.status(&ok.to_stop())
            .await
            .unwrap()
            .message
            .contains("12288 MiB")
    );
    let (every, within) = (Duration::from_secs(1), Duration::from_secs(600));
    let s = toy
        .wait_until_finished(&ok.to_stop(), every, within)
        .await
        .unwrap();
    assert_eq!(
        s.phase,
        Phase::Succeeded,
        "2 minutes of work within a 5-minute timeout"
    );
    let s = toy
        .wait_until_finished(&slow.to_stop(), every, within)
        .await
        .unwrap();
    assert_eq!(
        s.phase,
        Phase::TimedOut,
        "2 minutes of work with a 1-minute timeout"
    );
    assert_eq!(toy.stats().builds.by_reason["timedOut"], 1);
    assert_eq!(toy.gc(false).await.unwrap().expired.len(), 2);
}
