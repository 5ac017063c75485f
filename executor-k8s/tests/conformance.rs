//! The executor-base conformance suite against the fake API server, whose kubelet keeps
//! every pod running until it is deleted; a second fake's kubelet ends every build
//! container with exit 0 and no launch handshake.

mod support;

use std::sync::Arc;
use std::time::Duration;

use executor_base::testkit::conformance::{ConformanceConfig, SilentLauncher, conformance};
use executor_base::{Executor, FailureReason};
use executor_k8s::fake::{AutoKubelet, FakeApiServer};
use futures::FutureExt;
use support::{NS, builder, executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let fake = FakeApiServer::start().await;
    let _kubelet = fake.auto_kubelet(AutoKubelet::RunUntilDeleted);
    let lose_fake = fake.clone();
    // A second API server whose kubelet ends every build container with exit 0 and no
    // launch handshake in its termination message.
    let silent = FakeApiServer::start().await;
    let silent_kubelet = silent.auto_kubelet(AutoKubelet::ExitWithoutHandshakeAfter(
        Duration::from_millis(50),
    ));
    let cfg = ConformanceConfig {
        first_build_id: 5_000,
        settle: Duration::from_secs(20),
        lose_build: Some(Arc::new(move |id| {
            let k = lose_fake.kubelet(NS);
            async move {
                let prefix = format!("sd-{id}-");
                for name in k.pod_names().into_iter().filter(|n| n.starts_with(&prefix)) {
                    k.delete(&name);
                }
            }
            .boxed()
        })),
        silent_launcher: Some(SilentLauncher {
            executor: Arc::new(move || {
                let silent = silent.clone();
                async move { Arc::new(executor(builder(&silent)).await) as Arc<dyn Executor> }
                    .boxed()
            }),
            api_uri: None,
            reason: Some(FailureReason::LaunchProtocol),
        }),
        ..ConformanceConfig::default()
    };
    conformance(
        || {
            let fake = fake.clone();
            async move { Arc::new(executor(builder(&fake)).await) as Arc<dyn Executor> }
        },
        cfg,
    )
    .await;
    silent_kubelet.abort();
}
