//! The executor-base conformance suite against the fake API server, whose kubelet keeps
//! every pod running until it is deleted.

mod support;

use std::sync::Arc;
use std::time::Duration;

use executor_base::Executor;
use executor_base::testkit::conformance::{ConformanceConfig, conformance};
use executor_k8s::fake::{AutoKubelet, FakeApiServer};
use futures::FutureExt;
use support::{NS, builder, executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let fake = FakeApiServer::start().await;
    let _kubelet = fake.auto_kubelet(AutoKubelet::RunUntilDeleted);
    let lose_fake = fake.clone();
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
}
