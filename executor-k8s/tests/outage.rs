//! The API server goes away and comes back (the fake's front door closes and reopens on
//! the same port, as a restarted kube-apiserver does): status is never answered from a
//! stale cache, the cache is right again within seconds, a stop is retried until it
//! succeeds, and the first start after the outage works.

mod support;

use std::time::{Duration, Instant};

use executor_base::engine::BreakerConfig;
use executor_base::{ErrorKind, Executor, Phase};
use executor_k8s::fake::{FakeApiServer, Fault};
use support::*;

async fn running(e: &executor_k8s::K8sExecutor, id: u64) {
    eventually("running", || async {
        let s = e.status(&stop_cfg(id)).await.ok()?;
        (s.phase == Phase::Running).then_some(())
    })
    .await;
}

#[tokio::test]
async fn while_the_api_server_is_down_status_is_unavailable_never_stale() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(1)).await.unwrap();
    let pod = pod_name(&k, 1);
    k.run(&pod);
    running(&e, 1).await;
    assert_eq!(e.stats().cache.unwrap().age_ms, 0);

    fake.go_down();
    // The build finishes while nobody can see it: the cache still says running.
    k.exit(&pod, 0);
    let err = eventually("unavailable", || async {
        match e.status(&stop_cfg(1)).await {
            Ok(s) => {
                assert_eq!(s.phase, Phase::Running, "only the old answer or an error");
                None
            }
            Err(e) => Some(e),
        }
    })
    .await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary() && err.retry_after().is_some(), "{err:?}");
    assert!(err.message().contains("reconnecting"), "{err}");
    assert!(e.verify(&start_cfg(1)).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cache = e.stats().cache.unwrap();
    assert!(!cache.synced && cache.age_ms >= 300, "{cache:?}");
    assert!(cache.errors >= 1);

    fake.come_back();
    let back = Instant::now();
    eventually("succeeded", || async {
        let s = e.status(&stop_cfg(1)).await.ok()?;
        (s.phase == Phase::Succeeded).then_some(())
    })
    .await;
    let took = back.elapsed();
    assert!(took < Duration::from_secs(5), "right again after {took:?}");
    let cache = e.stats().cache.unwrap();
    assert!(
        cache.synced && cache.age_ms == 0 && cache.relists >= 2,
        "{cache:?}"
    );
}

#[tokio::test]
async fn each_outage_recovers_as_fast_as_the_first() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(2)).await.unwrap();
    let pod = pod_name(&k, 2);
    for round in 0..2 {
        fake.go_down();
        // Long enough for several failed reconnects (the backoff grows to its cap).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!e.is_synced());
        fake.come_back();
        let back = Instant::now();
        e.wait_synced(Duration::from_secs(10)).await.unwrap();
        let took = back.elapsed();
        assert!(took < Duration::from_secs(4), "round {round}: {took:?}");
    }
    k.run(&pod);
    running(&e, 2).await;
}

#[tokio::test]
async fn when_only_the_watch_fails_status_reads_the_pod_directly() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(3)).await.unwrap();
    let pod = pod_name(&k, 3);
    k.run(&pod);
    running(&e, 3).await;
    // The server answers, but not to the watch (an RBAC change, say).
    fake.inject(Fault::status(403).on("list", "pods").times(1_000));
    fake.inject(Fault::status(403).on("watch", "pods").times(1_000));
    fake.disconnect_watches();
    eventually("not synced", || async { (!e.is_synced()).then_some(()) }).await;
    k.exit(&pod, 5);
    let gets = fake.request_count("get pods");
    let s = e.status(&stop_cfg(3)).await.unwrap();
    assert_eq!((s.phase, s.exit_code), (Phase::Failed, Some(5)));
    assert_eq!(fake.request_count("get pods"), gets + 1);
}

#[tokio::test]
async fn a_stop_while_the_api_server_is_down_is_retried_until_it_succeeds() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(4)).await.unwrap();
    k.run(&pod_name(&k, 4));
    running(&e, 4).await;
    fake.go_down();
    let err = e.stop(&stop_cfg(4)).await.unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert!(
        err.to_string().contains("retrying in the background"),
        "{err}"
    );
    assert_eq!(e.pending_stops(), 1);
    // The caller is told the truth meanwhile: not canceled, not running.
    assert!(e.status(&stop_cfg(4)).await.is_err());
    fake.come_back();
    eventually("stopped", || async {
        (k.pods().is_empty() && e.pending_stops() == 0).then_some(())
    })
    .await;
    let s = e.status(&stop_cfg(4)).await.unwrap();
    assert_eq!(s.phase, Phase::Canceled);
    assert_eq!(e.stats().builds.running, 0);
}

#[tokio::test]
async fn after_the_api_server_returns_the_next_start_works_at_once() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_breaker(BreakerConfig {
        max_failures: 2,
        reset_timeout: Duration::from_secs(600),
        ..BreakerConfig::default()
    }))
    .await;
    fake.go_down();
    for id in [5, 6] {
        let err = e.start(&start_cfg(id)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    assert!(!e.stats().breaker.is_closed);
    let err = e.start(&start_cfg(7)).await.unwrap_err();
    assert!(
        executor_base::engine::refused_by_breaker(&err),
        "fails fast with the real cause: {err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    fake.come_back();
    e.wait_synced(Duration::from_secs(10)).await.unwrap();
    // The watch's fresh list proved the server is back: no 10-minute wait for a probe.
    assert!(e.stats().breaker.is_closed);
    e.start(&start_cfg(7)).await.unwrap();
}
