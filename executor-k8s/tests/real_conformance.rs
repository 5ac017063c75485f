//! The executor-base conformance suite against a real kube-apiserver (the shared control
//! plane), as the least-privilege user, with every option at its default. A background
//! "kubelet" binds and runs each new pod and finishes graceful deletions; `lose_build`
//! deletes the build's pod as another client would. Builds of a second executor (prefix
//! `rconfs-`) end with exit 0 and no launch handshake in the termination message.

mod support;

use std::sync::Arc;
use std::time::Duration;

use executor_base::testkit::conformance::{ConformanceConfig, SilentLauncher, conformance};
use executor_base::{Executor, FailureReason};
use futures::FutureExt;
use support::real::{ControlPlane, Kubelet};

const PREFIX: &str = "rconf-";
/// Builds whose launcher exits 0 without the launch handshake.
const SILENT_PREFIX: &str = "rconfs-";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_a_real_api_server() {
    let Some(cp) = ControlPlane::shared("conformance_suite_on_a_real_api_server") else {
        return;
    };
    let kubelet = Kubelet::new(&cp).await;
    kubelet.clean(PREFIX).await;
    kubelet.clean(SILENT_PREFIX).await;
    let auto = kubelet.auto(PREFIX);
    let silent_auto = kubelet.auto_exit_without_handshake(SILENT_PREFIX);
    let silent_kubeconfig = cp.limited_kubeconfig();
    let lose = kubelet.clone();
    let cfg = ConformanceConfig {
        first_build_id: 5_000,
        settle: Duration::from_secs(30),
        lose_build: Some(Arc::new(move |id| {
            let k = lose.clone();
            async move {
                for p in k.pods_of(PREFIX, id.get()).await {
                    k.delete(p.metadata.name.as_deref().unwrap()).await;
                }
            }
            .boxed()
        })),
        silent_launcher: Some(SilentLauncher {
            executor: Arc::new(move || {
                let b = executor_k8s::K8sExecutorBuilder::new()
                    .with_kubeconfig(silent_kubeconfig.clone())
                    .with_namespace(support::real::NS)
                    .with_prefix(SILENT_PREFIX);
                async move {
                    let e = b.build().await.expect("executor");
                    e.wait_synced(Duration::from_secs(30))
                        .await
                        .expect("synced");
                    Arc::new(e) as Arc<dyn Executor>
                }
                .boxed()
            }),
            api_uri: None,
            reason: Some(FailureReason::LaunchProtocol),
        }),
        ..ConformanceConfig::default()
    };
    let builder = || cp.builder(PREFIX);
    conformance(
        || {
            let b = builder();
            async move {
                let e = b.build().await.expect("executor");
                e.wait_synced(Duration::from_secs(30))
                    .await
                    .expect("synced");
                Arc::new(e) as Arc<dyn Executor>
            }
        },
        cfg,
    )
    .await;
    auto.abort();
    silent_auto.abort();
    kubelet.clean(PREFIX).await;
    kubelet.clean(SILENT_PREFIX).await;
}
