//! The testkit's fault matrix (issue #17) for the Gearman backend: every scenario with a
//! TCP [`FaultProxy`] between the executor (default settings: only the server and the
//! job are set) and the shared gearmand, whose launcher worker (over a `FakeExecutor`
//! whose builds run until stopped) connects directly. The shared gearmand is never
//! stopped: the proxy plays its outages. Prints the matrix's table (`--nocapture`).

#[macro_use]
mod common;

use std::sync::Arc;

use common::*;
use executor_base::Executor;
use executor_base::testkit::fake::{FakeExecutor, Script};
use executor_base::testkit::faults::{FaultMatrixConfig, Leftovers, fault_matrix};
use executor_base::testkit::proxy::FaultProxy;
use executor_gearman::GearmanExecutorBuilder;
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_scenario_through_a_proxy_in_front_of_gearmand() {
    let Some(server) = Server::Gearmand.require() else {
        return;
    };
    let job = unique("faults");
    let fake = FakeExecutor::new();
    fake.set_default_script(Script::run_until_stopped());
    let worker = RunningWorker::start(server, &job, fake.clone(), |c| c.max_builds = 128).await;
    let proxy = FaultProxy::tcp(&server.addr()).await.expect("proxy");
    // What is left of a build: it still runs on the launcher's engine.
    let f = fake.clone();
    let leftovers: Leftovers = Arc::new(move |id| {
        let f = f.clone();
        async move {
            f.live_builds()
                .into_iter()
                .filter(|b| *b == id)
                .map(|b| format!("build {b} still runs on the launcher"))
                .collect()
        }
        .boxed()
    });
    let report = fault_matrix(
        |p: &FaultProxy| {
            let b = GearmanExecutorBuilder::new()
                .with_server(p.addr())
                .with_job(job.clone());
            async move { Arc::new(b.build().await.expect("valid options")) as Arc<dyn Executor> }
        },
        &proxy,
        FaultMatrixConfig {
            first_build_id: u64::from(fastrand::u32(..)) * 1000 + 1,
            http: false,
            leftovers: Some(leftovers),
            // Only the submitting connection hears a job's result (Gearman protocol).
            lost_on_disconnect: true,
            ..Default::default()
        },
    )
    .await;
    println!("{report}");
    worker.kill().await;
}
