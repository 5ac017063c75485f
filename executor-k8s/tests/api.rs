//! Respecting the API server: 429 + Retry-After, 5xx only retried when idempotent,
//! refused connections, the circuit breaker, and the client-wide rate limit.

mod support;

use std::time::{Duration, Instant};

use executor_base::engine::{BreakerConfig, refused_by_breaker};
use executor_base::{ErrorKind, Executor, Phase};
use executor_k8s::K8sExecutorBuilder;
use executor_k8s::fake::{FakeApiServer, Fault};
use support::*;

#[tokio::test]
async fn a_429_waits_for_retry_after_then_the_create_goes_through() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(429).on("create", "pods").retry_after(1));
    e.start(&start_cfg(1)).await.unwrap();
    // A create is not idempotent, but a 429 proves it was not applied: retried once.
    assert_eq!(fake.request_count("create pods"), 2);
    assert_eq!(k.pods().len(), 1);
    assert_eq!(k.secrets().len(), 1);
    let r = e.stats().requests;
    assert_eq!((r.failure, r.success), (1, 2), "{r:?}");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_backoff_cap_is_handed_back() {
    let fake = FakeApiServer::start().await;
    let mut retry = fast_retry();
    retry.max_backoff = Duration::from_millis(500);
    let e = executor(builder(&fake).with_retry(retry)).await;
    fake.inject(Fault::status(429).on("create", "pods").retry_after(30));
    let err = e.start(&start_cfg(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.is_temporary());
    assert!(fake.kubelet(NS).pods().is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_for_named_creates_and_idempotent_calls() {
    let (fake, k, e) = setup().await;
    // A create under our own name is retried on a 503 (a repeat cannot create twice);
    // when every attempt fails, the pod goes again.
    fake.inject(Fault::status(503).on("create", "secrets").times(1_000));
    assert!(e.start(&start_cfg(3)).await.unwrap_err().is_temporary());
    assert!(fake.request_count("create secrets") > 1);
    assert!(k.pods().is_empty(), "the pod went again");
    fake.clear_faults();
    // Idempotent: a stop's delete is retried through two 500s.
    e.start(&start_cfg(4)).await.unwrap();
    assert!(k.secrets()[0].metadata.owner_references.is_some());
    fake.inject(Fault::status(500).on("deletecollection", "pods").times(2));
    e.stop(&stop_cfg(4)).await.unwrap();
    assert_eq!(fake.request_count("deletecollection pods"), 3);
    assert!(k.pods().is_empty() && k.secrets().is_empty());
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_after_retries() {
    // Nothing listens on port 1 of loopback.
    let e = K8sExecutorBuilder::new()
        .with_url("http://127.0.0.1:1")
        .with_namespace(NS)
        .with_watch(false)
        .with_retry(fast_retry())
        .build()
        .await
        .unwrap();
    let err = e.start(&start_cfg(5)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    // The request never left: even the create was retried.
    assert!(
        err.context()
            .iter()
            .any(|(k, v)| *k == "attempts" && v == "5"),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[tokio::test]
async fn the_read_breaker_opens_after_repeated_failures_and_fails_fast_with_the_cause() {
    let fake = FakeApiServer::start().await;
    let e = executor(
        builder(&fake)
            .with_watch(false)
            .with_retry(executor_base::engine::RetryPolicy::none())
            .with_breaker(BreakerConfig {
                max_failures: 3,
                reset_timeout: Duration::from_secs(60),
                ..BreakerConfig::default()
            }),
    )
    .await;
    let k = fake.kubelet(NS);
    e.start(&start_cfg(6)).await.unwrap();
    k.run(&pod_name(&k, 6));
    fake.inject(Fault::status(500).on("get", "pods").times(100));
    for _ in 0..3 {
        assert!(e.status(&stop_cfg(6)).await.unwrap_err().is_temporary());
    }
    assert!(!e.stats().breaker.is_closed);
    let before = fake.request_count("get pods");
    let err = e.status(&stop_cfg(6)).await.unwrap_err();
    // The last real cause (the server's 500), with the breaker's state as context.
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::Unexpected, Some(500)),
        "{err}"
    );
    assert!(refused_by_breaker(&err), "{err}");
    assert!(err.to_string().contains("read calls"), "{err}");
    assert_eq!(
        fake.request_count("get pods"),
        before,
        "an open breaker sends nothing"
    );
    // Stops are not reads: the stop goes out and removes the pod.
    e.stop(&stop_cfg(6)).await.unwrap();
    assert!(k.pods().is_empty());
}

#[tokio::test]
async fn a_failing_start_never_prevents_a_stop() {
    let fake = FakeApiServer::start().await;
    let e = executor(
        builder(&fake)
            .with_retry(executor_base::engine::RetryPolicy::none())
            .with_breaker(BreakerConfig {
                max_failures: 3,
                reset_timeout: Duration::from_secs(60),
                ..BreakerConfig::default()
            }),
    )
    .await;
    let k = fake.kubelet(NS);
    e.start(&start_cfg(20)).await.unwrap();
    k.run(&pod_name(&k, 20));
    fake.inject(Fault::status(503).on("create", "pods").times(100));
    for id in 21..24 {
        assert!(e.start(&start_cfg(id)).await.is_err());
    }
    // The start breaker is open: the next start fails fast with the server's answer ...
    let sent = fake.request_count("create pods");
    let err = e.start(&start_cfg(24)).await.unwrap_err();
    assert_eq!(fake.request_count("create pods"), sent);
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(refused_by_breaker(&err) && err.is_temporary(), "{err}");
    // ... while status reads and the stop go to the API server.
    eventually("the build runs", || async {
        (e.status(&stop_cfg(20)).await.unwrap().phase == Phase::Running).then_some(())
    })
    .await;
    let deletes = fake.request_count("deletecollection pods");
    e.stop(&stop_cfg(20)).await.unwrap();
    assert_eq!(fake.request_count("deletecollection pods"), deletes + 1);
    assert!(k.pods().is_empty());
}

#[tokio::test]
async fn one_rate_limit_covers_every_request_of_the_client() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_watch(false).with_rate_limit(20, 1)).await;
    let k = fake.kubelet(NS);
    e.start(&start_cfg(7)).await.unwrap();
    k.run(&pod_name(&k, 7));
    let before = e.api_requests().unwrap();
    let t = Instant::now();
    // 21 GETs at 20/s with a burst of 1 cannot finish in less than one second.
    let stop = stop_cfg(7);
    let calls = (0..21).map(|_| e.status(&stop));
    for s in futures::future::join_all(calls).await {
        assert_eq!(s.unwrap().phase, Phase::Running);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(e.api_requests().unwrap() - before, 21);
}
