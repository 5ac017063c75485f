//! The testkit's fault matrix (issue #17) for the Kubernetes backend, with a TCP
//! [`FaultProxy`] between the executor (default settings: only where the API server is,
//! the namespace and the name prefix are set) and
//!
//! - the fake API server (plain HTTP, so the 5xx and 429 scenarios too), its background
//!   kubelet running every pod until it is deleted;
//! - the real kube-apiserver (the shared control plane, as the least-privilege user; TLS
//!   passes through the proxy untouched, so only the connection faults), with the test's
//!   kubelet running the pods.
//!
//! Prints each matrix's table (`--nocapture`).

mod support;

use std::sync::Arc;

use executor_base::Executor;
use executor_base::testkit::faults::{FaultMatrixConfig, Leftovers, fault_matrix};
use executor_base::testkit::proxy::FaultProxy;
use executor_k8s::K8sExecutorBuilder;
use executor_k8s::fake::{AutoKubelet, FakeApiServer};
use futures::FutureExt;
use kube::api::ListParams;
use std::time::Duration;
use support::NS;
use support::real::{ControlPlane, Kubelet};

/// A synced executor with the default settings, built by `b`.
async fn synced(b: K8sExecutorBuilder) -> Arc<dyn Executor> {
    let e = b.build().await.expect("valid options");
    e.wait_synced(Duration::from_secs(30))
        .await
        .expect("watch synced");
    Arc::new(e)
}

/// The two matrices run one after the other: each already runs four lanes of scenarios
/// on this 2-core machine, and together (beside the API server) a harmless 300 ms delay
/// could starve a call past its 10 s bound.
static ONE_MATRIX_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_scenario_through_a_proxy_in_front_of_the_fake_api_server() {
    let _one = ONE_MATRIX_AT_A_TIME.lock().await;
    let fake = FakeApiServer::start().await;
    let _kubelet = fake.auto_kubelet(AutoKubelet::RunUntilDeleted);
    let proxy = FaultProxy::tcp(fake.url().trim_start_matches("http://"))
        .await
        .expect("proxy");
    const PREFIX: &str = "fm-";
    let k = fake.kubelet(NS);
    let leftovers: Leftovers = Arc::new(move |id| {
        let k = k.clone();
        async move {
            let name = format!("{PREFIX}{id}");
            let ours = |n: &String| *n == name || n.starts_with(&format!("{name}-"));
            let mut left: Vec<String> = k.pod_names().into_iter().filter(|p| ours(p)).collect();
            left.extend(
                k.secrets()
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .filter(|s| ours(s)),
            );
            left
        }
        .boxed()
    });
    let report = fault_matrix(
        |p: &FaultProxy| {
            synced(
                K8sExecutorBuilder::new()
                    .with_url(p.url("http"))
                    .with_namespace(NS)
                    .with_prefix(PREFIX),
            )
        },
        &proxy,
        FaultMatrixConfig {
            first_build_id: 4_100_000,
            http: true,
            leftovers: Some(leftovers),
            ..Default::default()
        },
    )
    .await;
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_scenario_through_a_proxy_in_front_of_a_real_api_server() {
    let _one = ONE_MATRIX_AT_A_TIME.lock().await;
    let Some(cp) =
        ControlPlane::shared("every_fault_scenario_through_a_proxy_in_front_of_a_real_api_server")
    else {
        return;
    };
    const PREFIX: &str = "rfm-";
    let kubelet = Kubelet::new(&cp).await;
    kubelet.clean(PREFIX).await;
    let auto = kubelet.auto(PREFIX);
    // The limited user's kubeconfig, its server replaced by the proxy's address (the
    // API server's certificate names 127.0.0.1, whatever the port).
    let kc = kube::config::Kubeconfig::read_from(cp.limited_kubeconfig()).expect("kubeconfig");
    let server = kc.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("a server");
    let upstream = server.trim_start_matches("https://").trim_end_matches('/');
    let proxy = FaultProxy::tcp(upstream).await.expect("proxy");
    let k = kubelet.clone();
    let leftovers: Leftovers = Arc::new(move |id| {
        let k = k.clone();
        async move {
            let sel = ListParams::default().labels(&format!("sdbuild={PREFIX}{id}"));
            let mut left: Vec<String> = k
                .pods()
                .list(&sel)
                .await
                .expect("list pods")
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            // A Secret owned by a pod that is gone is the cluster's garbage collector's
            // to delete (this control plane runs none unless `up.sh --with-gc`): left
            // over is a Secret without that owner, or whose owner pod still exists.
            for secret in k.secrets().list(&sel).await.expect("list secrets").items {
                let owner = secret
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.kind == "Pod")
                    .map(|o| o.name.clone());
                let kept = match &owner {
                    Some(pod) => left.contains(pod),
                    None => true,
                };
                if kept {
                    left.extend(secret.metadata.name);
                }
            }
            left
        }
        .boxed()
    });
    let report = fault_matrix(
        |p: &FaultProxy| {
            let mut kc = kc.clone();
            for c in &mut kc.clusters {
                if let Some(c) = c.cluster.as_mut() {
                    c.server = Some(p.url("https"));
                }
            }
            async move {
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .expect("config");
                let client = kube::Client::try_from(cfg).expect("client");
                synced(
                    K8sExecutorBuilder::new()
                        .with_client(client)
                        .with_namespace(NS)
                        .with_prefix(PREFIX),
                )
                .await
            }
        },
        &proxy,
        FaultMatrixConfig {
            first_build_id: 4_200_000,
            http: false,
            leftovers: Some(leftovers),
            ..Default::default()
        },
    )
    .await;
    println!("{report}");
    auto.abort();
    kubelet.clean(PREFIX).await;
}
