//! The testkit's fault matrix (issue #17) for the Docker backend: every scenario with a
//! [`FaultProxy`] on a Unix socket between the executor (default settings) and the shared
//! dockerd. Prints the matrix's table (`--nocapture`).
//!
//! Skipped outside CI when dockerd is absent (a failure under `CI=true`).

use std::sync::Arc;

use executor_base::Executor;
use executor_base::testkit::daemon::require;
use executor_base::testkit::faults::{FaultMatrixConfig, fault_matrix};
use executor_base::testkit::proxy::FaultProxy;
use executor_docker::testing;
use executor_docker::{DockerExecutorBuilder, PullPolicy};
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_scenario_through_a_proxy_in_front_of_dockerd() {
    if !require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket",
    ) {
        return;
    }
    let images = testing::test_images().await;
    let at = format!("/tmp/sdxfm-{}.sock", std::process::id());
    let proxy = FaultProxy::unix(testing::socket_path(), &at)
        .await
        .expect("proxy");
    let prefix = format!("sdxfm-{}-", std::process::id());
    let docker = Arc::new(testing::docker().await);
    let p = prefix.clone();
    let leftovers: executor_base::testkit::faults::Leftovers = Arc::new(move |id| {
        let docker = docker.clone();
        let sel = format!("sdbuild={p}{id}");
        async move {
            let (c, v) = testing::labelled(&docker, &sel).await;
            c.into_iter().chain(v).collect()
        }
        .boxed()
    });
    let report = fault_matrix(
        |p: &FaultProxy| {
            let (host, prefix, images) = (p.url("unix"), prefix.clone(), images.clone());
            async move {
                Arc::new(
                    DockerExecutorBuilder::new()
                        .with_host(&host)
                        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
                        .with_prefix(&prefix)
                        .with_network("none")
                        .with_pull_policy(PullPolicy::Missing)
                        .build()
                        .await
                        .expect("valid options"),
                ) as Arc<dyn Executor>
            }
        },
        &proxy,
        FaultMatrixConfig {
            api_uri: "http://127.0.0.1:9/run-until-stopped".into(),
            container: images.build.clone(),
            first_build_id: 1_700_000,
            http: true,
            leftovers: Some(leftovers),
            ..Default::default()
        },
    )
    .await;
    println!("{report}");
}
