//! A private kube-apiserver (its own etcd, ports and state directory) that the test may
//! count, stop and restart: the requests of one build's whole life, read from the audit
//! log; then the API server stopped mid-test and restarted on the same state: status is
//! never stale, right again within 5 s of the server being ready, a stop sent meanwhile
//! is retried until it lands, and the next start works at once.

mod support;

use std::time::{Duration, Instant};

use executor_base::{ErrorKind, Executor, Phase};
use executor_k8s::K8sExecutor;
use serde_json::Value;
use support::real::{ControlPlane, Kubelet};
use support::{start_cfg, stop_cfg};

const P: &str = "rrst-";

/// The audit entries of the executor's user, once the log has settled.
async fn executor_requests(cp: &ControlPlane) -> Vec<Value> {
    let mut last = usize::MAX;
    loop {
        let ours: Vec<Value> = cp
            .audit()
            .into_iter()
            .filter(|e| e["user"]["username"] == "executor")
            .collect();
        if ours.len() == last {
            return ours;
        }
        last = ours.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn describe(e: &Value) -> String {
    format!(
        "{} {}",
        e["verb"].as_str().unwrap_or_default(),
        e["objectRef"]["resource"].as_str().unwrap_or_default()
    )
}

async fn wait_for(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

async fn phase(e: &K8sExecutor, id: u64) -> Option<Phase> {
    e.status(&stop_cfg(id)).await.ok().map(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counts_and_an_api_server_restart() {
    let t0 = Instant::now();
    let Some(cp) = ControlPlane::private("request_counts_and_an_api_server_restart").await else {
        return;
    };
    eprintln!("private control plane up in {:?}", t0.elapsed());
    let k = Kubelet::new(&cp).await;
    let e = cp.builder(P).build().await.unwrap();
    e.wait_synced(Duration::from_secs(30)).await.unwrap();

    // --- one build's life, counted by the API server ----------------------------------
    let before = executor_requests(&cp).await;
    let watch: Vec<String> = before.iter().map(describe).collect();
    assert_eq!(watch, ["list pods", "watch pods"], "the shared watch");
    e.start(&start_cfg(1)).await.unwrap();
    let pod = k.pod_name(P, 1).await;
    k.bind(&pod).await;
    k.running(&pod).await;
    wait_for("running", Duration::from_secs(10), async || {
        phase(&e, 1).await == Some(Phase::Running)
    })
    .await;
    for _ in 0..20 {
        assert_eq!(phase(&e, 1).await, Some(Phase::Running));
        e.verify(&start_cfg(1)).await.unwrap();
    }
    e.stop(&stop_cfg(1)).await.unwrap();
    let all = executor_requests(&cp).await;
    let life: Vec<String> = all[before.len()..].iter().map(describe).collect();
    assert_eq!(
        life,
        ["create pods", "create secrets", "deletecollection pods"],
        "start 2, 20 status + 20 verify 0, stop 1"
    );
    for r in &all {
        assert_eq!(r["userAgent"], executor_k8s::USER_AGENT, "{r}");
        if r["verb"] == "create" {
            let uri = r["requestURI"].as_str().unwrap();
            assert!(
                uri.contains("fieldManager=sdx-executor-k8s")
                    && uri.contains("fieldValidation=Strict"),
                "{uri}"
            );
        }
    }
    eprintln!(
        "audit log: {} requests for one build (start + 20 status + 20 verify + stop), {} for the watch",
        life.len(),
        watch.len()
    );

    // --- the API server goes away mid-build ---------------------------------------------
    for id in [2, 3] {
        e.start(&start_cfg(id)).await.unwrap();
        let pod = k.pod_name(P, id).await;
        k.bind(&pod).await;
        k.running(&pod).await;
    }
    wait_for("both running", Duration::from_secs(10), async || {
        phase(&e, 2).await == Some(Phase::Running) && phase(&e, 3).await == Some(Phase::Running)
    })
    .await;
    cp.stop_apiserver().await;
    // Never the old answer as if it were fresh: a temporary Unavailable.
    wait_for("unavailable", Duration::from_secs(10), async || {
        match e.status(&stop_cfg(2)).await {
            Ok(s) => {
                assert_eq!(s.phase, Phase::Running);
                false
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
                assert!(err.is_temporary());
                true
            }
        }
    })
    .await;
    assert!(!e.stats().cache.unwrap().synced);
    // A stop while the server is down: a temporary error, and retried until it lands.
    let err = e.stop(&stop_cfg(3)).await.unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert_eq!(e.pending_stops(), 1);
    // New starts fail with the real reason (and fail fast once the breaker is open).
    let err = e.start(&start_cfg(4)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    // --- back on the same state directory ------------------------------------------------
    let t1 = Instant::now();
    cp.up().await; // returns once /readyz says ok
    eprintln!("API server restarted in {:?}", t1.elapsed());
    let ready = Instant::now();
    let right = wait_for("status right again", Duration::from_secs(30), async || {
        phase(&e, 2).await == Some(Phase::Running)
    })
    .await;
    eprintln!("status right {right:?} after the restarted API server was ready (target: 5 s)");
    assert!(right < Duration::from_secs(5), "{right:?}");
    // The change made now reaches the cache through the watch.
    k.succeeded(&k.pod_name(P, 2).await).await;
    wait_for("succeeded", Duration::from_secs(5), async || {
        phase(&e, 2).await == Some(Phase::Succeeded)
    })
    .await;
    // The watch started over with a fresh list (the old resource version is gone
    // after a restart) and is synced again.
    e.wait_synced(Duration::from_secs(5)).await.unwrap();
    let cache = e.stats().cache.unwrap();
    assert!(
        cache.synced && cache.age_ms == 0 && cache.relists >= 2 && cache.errors >= 1,
        "{cache:?}"
    );
    // The stop sent during the outage landed.
    wait_for("the retried stop", Duration::from_secs(60), async || {
        e.pending_stops() == 0
    })
    .await;
    let pods = k.pods_of(P, 3).await;
    assert!(
        pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()),
        "{pods:?}"
    );
    assert_eq!(phase(&e, 3).await, Some(Phase::Canceled));
    // And the next start works at once: the watch's fresh list closed the breakers.
    e.start(&start_cfg(5)).await.unwrap();
    eprintln!("recovered {:?} after ready", ready.elapsed());
}
