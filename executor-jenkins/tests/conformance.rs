//! The shared conformance suite against the fake Jenkins, whose builds start at once and
//! run until stopped; "lost" builds are jobs deleted behind the executor's back.

use std::sync::Arc;
use std::time::Duration;

use executor_base::testkit::conformance::{
    ConformanceConfig, LoseBuild, SilentLauncher, conformance as run_suite,
};
use executor_base::{Executor, FailureReason};
use executor_jenkins::fake::{FakeJenkins, FakeOptions};
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let jenkins = Arc::new(
        FakeJenkins::start_with(FakeOptions {
            queue_delay: Some(Duration::from_millis(20)),
            ..FakeOptions::default()
        })
        .await,
    );
    let j = jenkins.clone();
    let lose: LoseBuild = Arc::new(move |id| {
        let j = j.clone();
        Box::pin(async move {
            assert!(
                j.delete_job(&format!("SD-{id}")),
                "the job of build {id} exists"
            );
        })
    });
    let factory = || {
        let j = jenkins.clone();
        async move {
            Arc::new(j.executor_builder().build().await.expect("executor")) as Arc<dyn Executor>
        }
    };
    // A second Jenkins whose builds end SUCCESS after a launcher that never wrote the
    // launch handshake to the console.
    let silent = Arc::new(
        FakeJenkins::start_with(FakeOptions {
            queue_delay: Some(Duration::from_millis(20)),
            ..FakeOptions::default()
        })
        .await,
    );
    silent.set_launcher_handshake(false);
    silent.set_run_for(Some((Duration::from_millis(50), "SUCCESS")));
    let silent_launcher = SilentLauncher {
        executor: Arc::new(move || {
            let j = silent.clone();
            async move {
                Arc::new(j.executor_builder().build().await.expect("executor")) as Arc<dyn Executor>
            }
            .boxed()
        }),
        api_uri: None,
        reason: Some(FailureReason::LaunchProtocol),
    };
    run_suite(
        factory,
        ConformanceConfig {
            first_build_id: 1000,
            container: "busybox:latest".into(),
            settle: Duration::from_secs(10),
            lose_build: Some(lose),
            silent_launcher: Some(silent_launcher),
            ..ConformanceConfig::default()
        },
    )
    .await;
}
