//! The executor-base conformance suite, run against the Gearman executor dispatching to
//! a launcher worker (wrapping the FakeExecutor) through the real gearmand and geard.

#[macro_use]
mod common;

use std::sync::Arc;

use common::*;
use executor_base::launch_protocol::exit_zero_status;
use executor_base::testkit::conformance::{
    ConformanceConfig, LoseBuild, SilentLauncher, conformance,
};
use executor_base::testkit::fake::{FakeExecutor, Script};
use executor_base::{Executor, LaunchMode};
use futures::FutureExt;

on_both_servers! {
async fn gearman_executor_conforms(server: Server) {
    let job = unique("conformance");
    let fake = FakeExecutor::new();
    fake.set_default_script(Script::run_until_stopped());
    let worker = RunningWorker::start(server, &job, fake.clone(), |c| c.max_builds = 128).await;
    // The build vanishes from the launcher's engine: the launcher reports LOST.
    let lost_fake = fake.clone();
    let lose: LoseBuild = Arc::new(move |id| {
        let f = lost_fake.clone();
        async move { f.lose(id).expect("the fake knows the build") }.boxed()
    });
    // A second worker whose backend saw every launcher exit 0 without the launch
    // handshake: it reports those builds failed (`launchProtocol`), and the Gearman relay
    // must not turn that into a success (its wire result carries no reason).
    let silent_job = unique("conformance-silent");
    let silent_fake = FakeExecutor::new();
    silent_fake.set_default_script(Script::finish_after(
        std::time::Duration::from_millis(50),
        exit_zero_status(LaunchMode::Native, 1, None, "stock-launcher:stand-in"),
    ));
    let silent_worker =
        RunningWorker::start(server, &silent_job, silent_fake.clone(), |c| c.max_builds = 8).await;
    let cfg = ConformanceConfig {
        first_build_id: u64::from(fastrand::u32(..)) * 1000 + 1,
        lose_build: Some(lose),
        silent_launcher: Some(SilentLauncher {
            executor: Arc::new(move || {
                let job = silent_job.clone();
                async move { Arc::new(executor(server, &job).await) as Arc<dyn Executor> }.boxed()
            }),
            api_uri: None,
            reason: None,
        }),
        ..ConformanceConfig::default()
    };
    conformance(
        || {
            let job = job.clone();
            async move { Arc::new(executor(server, &job).await) as Arc<dyn Executor> }
        },
        cfg,
    )
    .await;
    // Whatever the suite started, nothing is left running on the launcher's engine.
    let all: Vec<_> = fake.live_builds();
    wait_not_live(&fake, &all).await;
    worker.kill().await;
    silent_worker.kill().await;
}
}
