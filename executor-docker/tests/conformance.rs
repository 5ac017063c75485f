//! The executor-base conformance suite against the real `dockerd`: builds run the test
//! launcher, which keeps running until stopped; a build is "lost" by force-removing its
//! build container behind the executor's back.

use std::sync::Arc;
use std::time::Duration;

use executor_base::engine::RetryPolicy;
use executor_base::testkit::conformance::{
    ConformanceConfig, LoseBuild, SilentLauncher, conformance,
};
use executor_base::testkit::daemon::require;
use executor_base::{Executor, FailureReason};
use executor_docker::testing;
use executor_docker::{DockerExecutorBuilder, PullPolicy};
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_conformance() {
    if !require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket (DOCKER_HOST or /var/run/docker.sock)",
    ) {
        return;
    }
    let images = testing::test_images().await;
    let prefix = format!("sdxc-{}-", std::process::id());

    let lose_prefix = prefix.clone();
    let lose: LoseBuild = Arc::new(move |id| {
        let name = format!("{lose_prefix}{id}-build");
        async move {
            let docker = testing::docker().await;
            let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(true)
                .build();
            docker
                .remove_container(&name, Some(opts))
                .await
                .expect("remove behind its back");
        }
        .boxed()
    });

    // The stand-in for upstream's launcher: usage and exit 0 on native mode's
    // `--token-file`, no launch handshake.
    let stock = format!("sdx-test/stock-launcher:{}", testing::TAG);
    testing::build_launcher_image(
        &testing::docker().await,
        &stock,
        testing::STOCK_LAUNCH.as_bytes(),
    )
    .await;
    let silent_prefix = format!("{prefix}s");
    let silent_launcher = SilentLauncher {
        executor: Arc::new(move || {
            let prefix = silent_prefix.clone();
            async move {
                let exec = DockerExecutorBuilder::new()
                    .with_host(testing::docker_host())
                    .with_launcher_image("sdx-test/stock-launcher", testing::TAG)
                    .with_prefix(prefix)
                    .with_network("none")
                    .with_pull_policy(PullPolicy::Never)
                    .build()
                    .await
                    .expect("executor");
                Arc::new(exec) as Arc<dyn Executor>
            }
            .boxed()
        }),
        api_uri: None,
        reason: Some(FailureReason::LaunchProtocol),
    };

    let factory = || {
        let images = images.clone();
        let prefix = prefix.clone();
        async move {
            let exec = DockerExecutorBuilder::new()
                .with_host(testing::docker_host())
                .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
                .with_prefix(prefix)
                .with_network("none")
                .with_pull_policy(PullPolicy::Never)
                .with_retry(RetryPolicy {
                    initial_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(500),
                    ..RetryPolicy::default()
                })
                .build()
                .await
                .expect("executor");
            Arc::new(exec) as Arc<dyn Executor>
        }
    };
    conformance(
        factory,
        ConformanceConfig {
            // A path the test launcher does not know: it runs until stopped.
            api_uri: "http://127.0.0.1:9/run-until-stopped".into(),
            container: images.build.clone(),
            first_build_id: 7_000_000 + u64::from(std::process::id() % 1000) * 1000,
            concurrent_builds: 50,
            settle: Duration::from_secs(60),
            lose_build: Some(lose),
            silent_launcher: Some(silent_launcher),
        },
    )
    .await;
}
