//! The testkit's fault matrix (issue #17) for the Jenkins backend: every scenario with a
//! TCP [`FaultProxy`] between the executor (default settings: only the URL and the
//! credentials are set) and the fake Jenkins, whose builds run until stopped. Prints the
//! matrix's table (`--nocapture`).

use std::sync::Arc;
use std::time::Duration;

use executor_base::Executor;
use executor_base::testkit::faults::{FaultMatrixConfig, Leftovers, fault_matrix};
use executor_base::testkit::proxy::FaultProxy;
use executor_jenkins::JenkinsExecutorBuilder;
use executor_jenkins::fake::{FakeJenkins, FakeOptions};
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_scenario_through_a_proxy_in_front_of_jenkins() {
    // Queue items become builds at once (as on a controller with free executors).
    let jenkins = Arc::new(
        FakeJenkins::start_with(FakeOptions {
            queue_delay: Some(Duration::from_millis(20)),
            ..FakeOptions::default()
        })
        .await,
    );
    let upstream = jenkins.url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::tcp(&upstream).await.expect("proxy");
    let j = jenkins.clone();
    // What is left of a build: its job's builds still running.
    let leftovers: Leftovers = Arc::new(move |id| {
        let j = j.clone();
        async move {
            let job = format!("SD-{id}");
            j.builds(&job)
                .into_iter()
                .filter(|b| b.building)
                .map(|b| format!("{job} #{} still building", b.number))
                .collect()
        }
        .boxed()
    });
    let (user, token) = jenkins.credentials();
    let prefix = jenkins.path_prefix();
    let report = fault_matrix(
        |p: &FaultProxy| {
            let b = JenkinsExecutorBuilder::new()
                .with_url(p.url("http"))
                .with_path_prefix(prefix.clone())
                .with_credentials(user.clone(), token.clone());
            async move { Arc::new(b.build().await.expect("valid options")) as Arc<dyn Executor> }
        },
        &proxy,
        FaultMatrixConfig {
            first_build_id: 3_100_000,
            http: true,
            leftovers: Some(leftovers),
            ..Default::default()
        },
    )
    .await;
    println!("{report}");
}
