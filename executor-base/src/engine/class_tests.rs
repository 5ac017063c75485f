//! The per-class breaker rules, under paused tokio time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(30),
        multiplier: 2.0,
        jitter: false,
        budget: None,
    }
}

fn engine(max_failures: u32) -> EngineCalls {
    EngineCalls::new(
        "docker",
        policy(0),
        BreakerConfig {
            max_failures,
            reset_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
        },
    )
}

fn refused_conn() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "cannot connect to unix:///var/run/docker.sock: connection refused",
    )
    .temporary()
}

/// One call of `class` whose single attempt answers `outcome`; returns the result and
/// whether the engine was called.
async fn one(
    calls: &EngineCalls,
    class: CallClass,
    op: &'static str,
    outcome: Result<(), Error>,
) -> (Result<(), Error>, bool) {
    let called = Arc::new(AtomicU32::new(0));
    let c = called.clone();
    let outcome = parking_lot::Mutex::new(Some(outcome));
    let r = calls
        .call_in(class, op, Idempotency::Idempotent, || {
            c.fetch_add(1, Ordering::SeqCst);
            let o = outcome.lock().take().unwrap_or(Ok(()));
            async move { o }
        })
        .await;
    (r, called.load(Ordering::SeqCst) == 1)
}

async fn trip(calls: &EngineCalls, class: CallClass, times: u32) {
    for _ in 0..times {
        let (r, called) = one(calls, class, "create container", Err(refused_conn())).await;
        assert!(r.is_err() && called);
    }
    assert!(matches!(
        calls.breaker_state(class),
        BreakerState::Open { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failing_start_never_blocks_a_stop() {
    let calls = engine(2);
    trip(&calls, CallClass::Start, 2).await;
    // Starts now fail fast ...
    let (r, called) = one(&calls, CallClass::Start, "create container", Ok(())).await;
    assert!(r.is_err() && !called);
    // ... but a stop goes to the engine, whether it then fails or succeeds.
    for _ in 0..10 {
        let (r, called) = one(&calls, CallClass::Stop, "kill", Err(refused_conn())).await;
        let e = r.unwrap_err();
        assert!(called, "a stop is always attempted");
        assert!(!refused_by_breaker(&e), "{e}");
        assert_eq!(e.operation(), "kill");
    }
    let (r, called) = one(&calls, CallClass::Stop, "kill", Ok(())).await;
    assert!(r.is_ok() && called);
}

#[tokio::test(start_paused = true)]
async fn failing_stops_trip_no_breaker() {
    let calls = engine(2);
    for _ in 0..20 {
        let (r, called) = one(&calls, CallClass::Stop, "delete", Err(refused_conn())).await;
        assert!(r.is_err() && called);
    }
    assert!(calls.breaker_stats().is_closed);
    for class in CallClass::ALL {
        assert_eq!(calls.breaker_state(class), BreakerState::Closed);
        let (r, called) = one(&calls, class, "x", Ok(())).await;
        assert!(r.is_ok() && called, "{class}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_class_has_its_own_breaker() {
    let calls = engine(3);
    trip(&calls, CallClass::Start, 3).await;
    assert!(!calls.breaker_stats().is_closed);
    for class in [CallClass::Read, CallClass::General] {
        assert_eq!(calls.breaker_state(class), BreakerState::Closed);
        // A failure here is this class's first, not the fourth of the engine's.
        let (r, called) = one(&calls, class, "inspect", Err(refused_conn())).await;
        assert!(called && !refused_by_breaker(&r.unwrap_err()));
        assert_eq!(calls.breaker_state(class), BreakerState::Closed);
    }
    trip(&calls, CallClass::Read, 2).await;
    assert_eq!(
        calls.breaker_state(CallClass::General),
        BreakerState::Closed
    );
    assert_eq!(calls.breaker_state(CallClass::Stop), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_with_the_last_real_cause_and_its_state_as_context() {
    let calls = engine(2);
    let cause = || {
        Error::new(ErrorKind::Unexpected, "registry answered 503")
            .with_status(503)
            .with_context("image", "busybox")
            .temporary()
    };
    assert!(
        one(&calls, CallClass::Start, "pull", Err(refused_conn()))
            .await
            .0
            .is_err()
    );
    assert!(
        one(&calls, CallClass::Start, "pull", Err(cause()))
            .await
            .0
            .is_err()
    );
    tokio::time::advance(Duration::from_millis(2_500)).await;
    let (r, called) = one(&calls, CallClass::Start, "create container", Ok(())).await;
    assert!(!called);
    let e = r.unwrap_err();
    assert_eq!(
        (e.kind(), e.message(), e.status()),
        (ErrorKind::Unexpected, "registry answered 503", Some(503))
    );
    assert!(e.is_temporary());
    assert_eq!(
        (e.executor(), e.operation()),
        ("docker", "create container")
    );
    assert_eq!(e.retry_after(), Some(Duration::from_millis(27_500)));
    assert_eq!(
        e.to_string(),
        "docker create container: unexpected: registry answered 503 (HTTP 503), image: busybox, \
         breaker: open after 2 consecutive failures of start calls (last: pull); next probe in 28s"
    );
    assert!(refused_by_breaker(&e));
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_stays_unavailable_when_the_breaker_is_open() {
    let calls = engine(1);
    trip(&calls, CallClass::Read, 1).await;
    let (r, _) = one(&calls, CallClass::Read, "inspect", Ok(())).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string().starts_with(
            "docker inspect: unavailable: cannot connect to unix:///var/run/docker.sock"
        ),
        "{e}"
    );
    // Never the bare circuit-open kind.
    assert_ne!(e.kind(), ErrorKind::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn a_successful_half_open_probe_closes_the_breaker() {
    let calls = engine(2);
    trip(&calls, CallClass::Start, 2).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        calls.breaker_state(CallClass::Start),
        BreakerState::Open {
            retry_in: Duration::from_secs(20)
        }
    );
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(
        calls.breaker_state(CallClass::Start),
        BreakerState::HalfOpen
    );
    let (r, called) = one(&calls, CallClass::Start, "create", Ok(())).await;
    assert!(r.is_ok() && called);
    assert_eq!(calls.breaker_state(CallClass::Start), BreakerState::Closed);
    assert!(calls.breaker_stats().is_closed);
    // Closed means a fresh count: one failure does not re-open it.
    assert!(
        one(&calls, CallClass::Start, "create", Err(refused_conn()))
            .await
            .0
            .is_err()
    );
    assert_eq!(calls.breaker_state(CallClass::Start), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn once_the_engine_answers_any_call_the_next_call_of_every_class_works() {
    let calls = engine(2);
    trip(&calls, CallClass::Start, 2).await;
    trip(&calls, CallClass::Read, 2).await;
    trip(&calls, CallClass::General, 2).await;
    // The engine is back; a stop (always attempted) reaches it. No time passes.
    let (r, called) = one(&calls, CallClass::Stop, "kill", Ok(())).await;
    assert!(r.is_ok() && called);
    for class in CallClass::ALL {
        let (r, called) = one(&calls, class, "x", Ok(())).await;
        assert!(r.is_ok() && called, "{class} works at once");
    }
    // A persistent answer (404) is proof of life too.
    trip(&calls, CallClass::Start, 2).await;
    let (r, _) = one(
        &calls,
        CallClass::Read,
        "inspect",
        Err(Error::new(ErrorKind::NotFound, "no such container")),
    )
    .await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(calls.breaker_state(CallClass::Start), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn report_healthy_closes_every_breaker() {
    let calls = engine(1);
    trip(&calls, CallClass::Start, 1).await;
    trip(&calls, CallClass::Read, 1).await;
    calls.clone().report_healthy();
    assert!(calls.breaker_stats().is_closed);
    let (r, called) = one(&calls, CallClass::Start, "create", Ok(())).await;
    assert!(r.is_ok() && called);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_only_its_class() {
    let calls = engine(1);
    trip(&calls, CallClass::Start, 1).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    let (r, called) = one(&calls, CallClass::Start, "create", Err(refused_conn())).await;
    assert!(called && !refused_by_breaker(&r.unwrap_err()));
    assert_eq!(
        calls.breaker_state(CallClass::Start),
        BreakerState::Open {
            retry_in: Duration::from_secs(30)
        }
    );
    let (r, _) = one(&calls, CallClass::Start, "create", Ok(())).await;
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("open after 2 consecutive failures of start calls"),
    );
    assert_eq!(calls.breaker_state(CallClass::Read), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stop_is_retried_by_the_policy_even_while_other_breakers_are_open() {
    let calls = EngineCalls::new(
        "k8s",
        policy(3),
        BreakerConfig {
            max_failures: 1,
            ..BreakerConfig::default()
        },
    );
    trip(&calls, CallClass::Start, 1).await;
    let n = Arc::new(AtomicU32::new(0));
    let c = n.clone();
    let started = tokio::time::Instant::now();
    calls
        .call_in(
            CallClass::Stop,
            "delete pods",
            Idempotency::Idempotent,
            move || {
                let k = c.fetch_add(1, Ordering::SeqCst);
                async move { if k < 2 { Err(refused_conn()) } else { Ok(()) } }
            },
        )
        .await
        .unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_sibling_shares_counters_but_not_breakers() {
    let daemon = engine(1);
    let registry = daemon.sibling(policy(0), BreakerConfig::default());
    for _ in 0..5 {
        assert!(
            one(&registry, CallClass::Start, "pull", Err(refused_conn()))
                .await
                .0
                .is_err()
        );
    }
    assert!(!registry.breaker_stats().is_closed);
    assert!(daemon.breaker_stats().is_closed);
    let (r, called) = one(&daemon, CallClass::Start, "create", Ok(())).await;
    assert!(r.is_ok() && called);
    assert_eq!(daemon.request_stats().total, 6);
    assert_eq!(registry.request_stats().failure, 5);
}

#[tokio::test(start_paused = true)]
async fn another_retry_policy_shares_the_breakers_and_counters() {
    let calls = EngineCalls::new(
        "k8s",
        policy(5),
        BreakerConfig {
            max_failures: 2,
            ..BreakerConfig::default()
        },
    );
    let once = calls.with_retry_policy(RetryPolicy::none());
    let started = tokio::time::Instant::now();
    let (r, called) = one(&once, CallClass::Start, "create", Err(refused_conn())).await;
    assert!(r.is_err() && called);
    assert_eq!(started.elapsed(), Duration::ZERO, "one attempt, no waiting");
    assert!(
        one(&once, CallClass::Start, "create", Err(refused_conn()))
            .await
            .0
            .is_err()
    );
    // Two failures through the one-shot view opened the engine's breaker.
    assert!(!calls.breaker_stats().is_closed);
    assert_eq!(calls.request_stats().failure, 2);
}
