//! `EngineCalls` from a backend's point of view: real HTTP calls to a fake engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use executor_base::{
    BreakerConfig, EngineCalls, Error, ErrorKind, Idempotency, RetryPolicy, Stats,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn calls(max_retries: u32, max_failures: u32) -> EngineCalls {
    EngineCalls::new(
        "fake",
        RetryPolicy {
            max_retries,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: true,
            budget: None,
        },
        BreakerConfig {
            max_failures,
            reset_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_millis(500),
        },
    )
}

/// How a backend maps its engine's HTTP answers (COMMON contract).
/// A client over the workspace's TLS provider (reqwest is built without one of its own).
fn client() -> reqwest::Client {
    executor_base::tls::install_default_provider();
    reqwest::Client::new()
}

async fn get(client: &reqwest::Client, url: String) -> Result<String, Error> {
    let r = client.get(&url).send().await.map_err(|e| {
        if e.is_connect() {
            Error::new(ErrorKind::Unavailable, "cannot connect").temporary()
        } else {
            Error::new(ErrorKind::Unexpected, "request failed").temporary()
        }
    })?;
    let status = r.status().as_u16();
    match status {
        200 => Ok(r.text().await.unwrap_or_default()),
        404 => Err(Error::new(ErrorKind::NotFound, "no such object").with_status(404)),
        500..=599 => Err(Error::new(ErrorKind::Unexpected, "engine error")
            .with_status(status)
            .temporary()),
        _ => Err(Error::new(ErrorKind::Unexpected, "unexpected").with_status(status)),
    }
}

#[tokio::test]
async fn flaky_engines_are_retried_and_counted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/containers/1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/containers/1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("running"))
        .mount(&server)
        .await;
    let client = client();
    let engine = calls(5, 10);
    let url = format!("{}/containers/1", server.uri());
    let state = engine
        .call("inspect", Idempotency::Idempotent, || {
            get(&client, url.clone())
        })
        .await
        .unwrap();
    assert_eq!(state, "running");
    let s = engine.request_stats();
    assert_eq!(
        (s.total, s.success, s.failure, s.timeouts, s.concurrent),
        (3, 1, 2, 0, 0)
    );
    assert!(s.average_time >= 0.0);

    // A 404 is an answer: not retried, and it does not count against the breaker.
    let missing = format!("{}/containers/2", server.uri());
    let e = engine
        .call("inspect", Idempotency::Idempotent, || {
            get(&client, missing.clone())
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        "fake inspect: not_found: no such object (HTTP 404)"
    );
    assert_eq!(engine.request_stats().total, 4);
    assert!(engine.breaker_stats().is_closed);
}

#[tokio::test]
async fn a_dead_engine_opens_the_breaker_and_calls_fail_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/containers/create");
    let client = client();
    let engine = calls(2, 3);
    let shared = engine.clone();

    let e = engine
        .call("create", Idempotency::NotIdempotent, || {
            get(&client, url.clone())
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(
        engine.request_stats().total,
        3,
        "connect errors are retried even when not idempotent"
    );
    assert!(
        !shared.breaker_stats().is_closed,
        "clones share the breaker"
    );

    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let e = shared
        .call("create", Idempotency::NotIdempotent, move || {
            a.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Error>(()) }
        })
        .await
        .unwrap_err();
    // Failing fast with the last real cause, the breaker's state as context.
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(executor_base::engine::refused_by_breaker(&e), "{e}");
    assert!(e.retry_after().is_some());
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        0,
        "an open breaker never calls the engine"
    );

    let stats = Stats {
        requests: engine.request_stats(),
        breaker: engine.breaker_stats(),
        ..Stats::default()
    };
    let v = serde_json::to_value(&stats).unwrap();
    assert_eq!(v["breaker"]["isClosed"], false);
    assert_eq!(v["requests"]["failure"], 3);
    for key in [
        "total",
        "timeouts",
        "success",
        "failure",
        "concurrent",
        "averageTime",
    ] {
        assert!(v["requests"].get(key).is_some(), "missing requests.{key}");
    }
}

#[tokio::test]
async fn engine_server_errors_on_posts_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let client = client();
    let engine = calls(5, 10);
    let url = format!("{}/containers/create", server.uri());
    let e = engine
        .call("create", Idempotency::NotIdempotent, || {
            get(&client, url.clone())
        })
        .await
        .unwrap_err();
    // The request reached the engine, which may have acted on it.
    assert_eq!((e.kind(), e.status()), (ErrorKind::Unexpected, Some(500)));
}

#[tokio::test]
async fn concurrent_calls_are_counted_while_in_flight() {
    let engine = calls(0, 5);
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let engine = engine.clone();
        let released = released.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .call("wait", Idempotency::Idempotent, move || {
                    let mut released = released.clone();
                    async move {
                        let _ = released.wait_for(|r| *r).await;
                        Ok::<_, Error>(())
                    }
                })
                .await
        }));
    }
    // Wait (bounded) until all eight are in flight.
    let mut in_flight = 0;
    for _ in 0..400 {
        in_flight = engine.request_stats().concurrent;
        if in_flight == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    release.send(true).unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(in_flight, 8);
    let s = engine.request_stats();
    assert_eq!((s.total, s.success, s.concurrent), (8, 8, 0));
}
