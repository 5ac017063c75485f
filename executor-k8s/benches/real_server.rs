//! The executor against a real kube-apiserver, beside a same-run baseline of the same
//! requests sent with a plain `kube::Client`.
//!
//! `cargo bench -p executor-k8s --bench real_server [-- <builds>]` (default 50), with a
//! control plane from `../shared/k8s/up.sh DIR` and `SDX_TEST_K8S_DIR=DIR` (see the
//! README, "Testing against a real kube-apiserver"); without one it says so and exits.
//! Both sides connect as the least-privilege user of `kubeconfig-limited`; the executor
//! runs with its default options.
//!
//! 1. Sequentially, `builds` times: `start`, 20 `status` calls, `stop` (p50 and p95 of
//!    each). Baseline: the same pod and Secret created, the pod read 20 times (a GET per
//!    status call, as upstream's executors do) and deleted by label, with a plain client.
//! 2. 100 concurrent starts (p50, p95, max, wall time), with the default client rate
//!    limit (`qps` 50, `burst` 200) and with the former default burst of 100; the
//!    baseline creates the same 100 pods and Secrets concurrently, unthrottled.
//!
//! No scheduler or kubelet runs, so the pods stay Pending; status answers come from the
//! executor's cache either way.

#[path = "../tests/support/real.rs"]
#[allow(dead_code)]
mod real;

use std::time::{Duration, Instant};

use executor_base::{Executor, StartConfig, StopConfig};
use executor_k8s::K8sExecutor;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use real::{ControlPlane, Kubelet, NS};

const TOKEN: &str = "bench-token-not-a-secret";
const STATUS_CALLS: usize = 20;
const CONCURRENT: usize = 100;

fn start_cfg(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9/", "busybox", TOKEN)
        .build()
        .expect("start config")
}

fn stop_cfg(id: u64) -> StopConfig {
    start_cfg(id).to_stop()
}

/// p50, p95 and max of `v`, in milliseconds.
fn summary(v: &mut [Duration]) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    format!(
        "p50 {:7.2} ms  p95 {:7.2} ms  max {:7.2} ms",
        at(0.5),
        at(0.95),
        at(1.0)
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let builds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    rt.block_on(run(builds));
}

/// A plain client as the limited user (no rate limit of ours, kube's defaults).
async fn plain(cp: &ControlPlane) -> Client {
    let kc = kube::config::Kubeconfig::read_from(cp.limited_kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

/// The baseline's copy of the executor's pod and Secret for build `name`.
fn copies(template: &Pod, secret: &Secret, name: &str) -> (Pod, Secret) {
    let mut p = template.clone();
    p.metadata = kube::api::ObjectMeta {
        name: Some(name.to_string()),
        labels: Some([("sdbuild".to_string(), name.to_string())].into()),
        ..Default::default()
    };
    p.status = None;
    let mut s = secret.clone();
    s.metadata = kube::api::ObjectMeta {
        name: Some(format!("{name}-token")),
        labels: Some([("sdbuild".to_string(), name.to_string())].into()),
        ..Default::default()
    };
    (p, s)
}

async fn run(builds: u64) {
    let Some(cp) = ControlPlane::shared("the real_server benchmark") else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    for p in ["rbx-", "rbb-", "rbc-", "rbd-", "rbe-"] {
        k.clean(p).await;
    }
    let e = cp.builder("rbx-").build().await.expect("executor");
    e.wait_synced(Duration::from_secs(30))
        .await
        .expect("synced");

    // --- 1. sequential: the executor ----------------------------------------------------
    let (mut start, mut status, mut stop) = (vec![], vec![], vec![]);
    let before = e.api_requests().unwrap_or(0);
    for id in 1..=builds {
        let t = Instant::now();
        e.start(&start_cfg(id)).await.expect("start");
        start.push(t.elapsed());
        for _ in 0..STATUS_CALLS {
            let t = Instant::now();
            e.status(&stop_cfg(id)).await.expect("status");
            status.push(t.elapsed());
        }
        let t = Instant::now();
        e.stop(&stop_cfg(id)).await.expect("stop");
        stop.push(t.elapsed());
    }
    let per_build = (e.api_requests().unwrap_or(0) - before) as f64 / builds as f64;
    // The baseline sends the executor's own pod and Secret (from one more start).
    e.start(&start_cfg(builds + 1)).await.expect("start");
    let template = k
        .pods()
        .get(&k.pod_name("rbx-", builds + 1).await)
        .await
        .expect("pod");
    let secret = k
        .secrets()
        .get(&format!(
            "{}-token",
            template.metadata.name.as_deref().unwrap()
        ))
        .await
        .expect("secret");
    e.stop(&stop_cfg(builds + 1)).await.expect("stop");

    // --- 1. sequential: the baseline --------------------------------------------------
    let client = plain(&cp).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let (mut b_start, mut b_status, mut b_stop) = (vec![], vec![], vec![]);
    for id in 1..=builds {
        let name = format!("rbb-{id}");
        let (p, s) = copies(&template, &secret, &name);
        let t = Instant::now();
        pods.create(&PostParams::default(), &p).await.expect("pod");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
        b_start.push(t.elapsed());
        for _ in 0..STATUS_CALLS {
            let t = Instant::now();
            pods.get(&name).await.expect("get");
            b_status.push(t.elapsed());
        }
        let t = Instant::now();
        pods.delete_collection(
            &now,
            &ListParams::default().labels(&format!("sdbuild={name}")),
        )
        .await
        .expect("delete");
        b_stop.push(t.elapsed());
    }
    k.clean("rbb-").await;
    k.clean("rbx-").await;

    println!("executor-k8s against kube-apiserver v1.28.7 ({builds} builds, sequential)");
    println!("  start   executor {}", summary(&mut start));
    println!("          baseline {}", summary(&mut b_start));
    println!("  status  executor {}", summary(&mut status));
    println!(
        "          baseline {}  (a GET per call)",
        summary(&mut b_status)
    );
    println!("  stop    executor {}", summary(&mut stop));
    println!("          baseline {}", summary(&mut b_stop));
    println!(
        "  API requests per build (start + {STATUS_CALLS} status + stop): executor {per_build:.2}, baseline {}",
        2 + STATUS_CALLS + 1
    );

    // --- 2. 100 concurrent starts --------------------------------------------------------
    for (label, prefix, burst) in [
        ("default rate limit (qps 50, burst 200)", "rbc-", None),
        ("the former default (qps 50, burst 100)", "rbd-", Some(100)),
    ] {
        let mut b = cp.builder(prefix);
        if let Some(burst) = burst {
            b = b.with_rate_limit(50, burst);
        }
        let e: K8sExecutor = b.build().await.expect("executor");
        e.wait_synced(Duration::from_secs(30))
            .await
            .expect("synced");
        let t0 = Instant::now();
        let mut took: Vec<Duration> = join_all((1..=CONCURRENT as u64).map(|id| {
            let e = &e;
            async move {
                let t = Instant::now();
                e.start(&start_cfg(id)).await.expect("start");
                t.elapsed()
            }
        }))
        .await;
        let wall = t0.elapsed();
        println!(
            "{CONCURRENT} concurrent starts, {label}: {}  wall {:.0} ms",
            summary(&mut took),
            wall.as_secs_f64() * 1e3
        );
        join_all((1..=CONCURRENT as u64).map(|id| {
            let e = &e;
            async move { e.stop(&stop_cfg(id)).await }
        }))
        .await;
        k.clean(prefix).await;
    }
    let t0 = Instant::now();
    let mut took: Vec<Duration> = join_all((1..=CONCURRENT as u64).map(|id| {
        let (pods, secrets) = (pods.clone(), secrets.clone());
        let (p, s) = copies(&template, &secret, &format!("rbe-{id}"));
        async move {
            let t = Instant::now();
            pods.create(&PostParams::default(), &p).await.expect("pod");
            secrets
                .create(&PostParams::default(), &s)
                .await
                .expect("secret");
            t.elapsed()
        }
    }))
    .await;
    let wall = t0.elapsed();
    println!(
        "{CONCURRENT} concurrent starts, baseline (plain client, unthrottled): {}  wall {:.0} ms",
        summary(&mut took),
        wall.as_secs_f64() * 1e3
    );
    k.clean("rbe-").await;
}
