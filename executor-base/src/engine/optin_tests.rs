//! The opt-ins: retry budget, health probe, per-call timeout (paused tokio time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::FutureExt;

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

fn down() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "cannot reach the Docker daemon at unix:///var/run/docker.sock: connection refused",
    )
    .temporary()
}

async fn failing(calls: &EngineCalls, class: CallClass, n: &AtomicU32) -> Result<(), Error> {
    calls
        .call_in(class, "inspect", Idempotency::Idempotent, || {
            n.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(down()) }
        })
        .await
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_bounds_the_time_a_call_spends_on_a_down_engine() {
    let calls = EngineCalls::new("docker", policy(5), BreakerConfig::default())
        .with_retry_budget(Duration::from_secs(3));
    let n = AtomicU32::new(0);
    let t0 = Instant::now();
    let e = failing(&calls, CallClass::Read, &n).await.unwrap_err();
    // Attempts at 0 s, 1 s and 3 s; the next wait (4 s) would pass the budget.
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("docker.sock"), "{e}");
    assert!(
        e.context()
            .iter()
            .any(|(k, v)| *k == "attempts" && v == "3")
    );

    // Without a budget the whole series runs: 1 + 2 + 4 + 8 + 16 s.
    let calls = EngineCalls::new("docker", policy(5), BreakerConfig::default());
    let t0 = Instant::now();
    failing(&calls, CallClass::Read, &AtomicU32::new(0))
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_secs(31));
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_bounds_a_call_on_an_engine_that_swallows_connections() {
    // Every attempt hangs until the 10 s call timeout (a blackholed engine). Defaults
    // only: past the 5 s budget after the first attempt, no retry starts, so the call
    // fails within budget + one call timeout, not after the 91 s the full series of 5
    // retries would take.
    let calls = EngineCalls::with_defaults("jenkins");
    assert_eq!(calls.retry_budget(), Some(DEFAULT_RETRY_BUDGET));
    let n = AtomicU32::new(0);
    let t0 = Instant::now();
    let e = calls
        .call_in(CallClass::Start, "create", Idempotency::Idempotent, || {
            n.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Error>>()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let took = t0.elapsed();
    let bound = DEFAULT_RETRY_BUDGET + BreakerConfig::default().call_timeout;
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert_eq!(n.load(Ordering::SeqCst), 1, "no retry after the budget");

    // `retry.budgetMs=0` (no budget) restores the whole series.
    let calls = EngineCalls::new(
        "jenkins",
        RetryPolicy {
            budget: None,
            jitter: false,
            ..RetryPolicy::default()
        },
        BreakerConfig {
            max_failures: 0,
            ..BreakerConfig::default()
        },
    );
    let t0 = Instant::now();
    calls
        .call_in(CallClass::Start, "create", Idempotency::Idempotent, || {
            std::future::pending::<Result<(), Error>>()
        })
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_secs(6 * 10 + 31));
}

#[tokio::test(start_paused = true)]
async fn a_health_probe_lets_the_first_call_after_the_engine_returns_through() {
    let up = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicU32::new(0));
    let (u, p) = (up.clone(), probes.clone());
    let calls = EngineCalls::new(
        "docker",
        policy(0),
        BreakerConfig {
            max_failures: 2,
            ..BreakerConfig::default()
        },
    )
    .with_health_probe(
        Duration::from_secs(1),
        Arc::new(move || {
            p.fetch_add(1, Ordering::SeqCst);
            let answered = u.load(Ordering::SeqCst);
            async move { answered }.boxed()
        }),
    );
    let n = AtomicU32::new(0);
    for _ in 0..2 {
        failing(&calls, CallClass::Start, &n).await.unwrap_err();
    }
    assert!(matches!(
        calls.breaker_state(CallClass::Start),
        BreakerState::Open { .. }
    ));
    assert_eq!(probes.load(Ordering::SeqCst), 0, "no probe while closed");

    // Still down: the probe fails, the call is refused with the real cause.
    let e = failing(&calls, CallClass::Start, &n).await.unwrap_err();
    assert_eq!(n.load(Ordering::SeqCst), 2, "refused without calling");
    assert!(refused_by_breaker(&e));
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    // At most one probe per interval.
    failing(&calls, CallClass::Start, &n).await.unwrap_err();
    assert_eq!(probes.load(Ordering::SeqCst), 1);

    // The engine is back: the next call (long before the 30 s reset) goes through.
    up.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = calls
        .call_in(
            CallClass::Start,
            "create",
            Idempotency::NotIdempotent,
            || async { Ok(5) },
        )
        .await;
    assert_eq!(r.unwrap(), 5);
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn a_call_can_have_its_own_attempt_bound() {
    let calls = EngineCalls::new("docker", policy(0), BreakerConfig::default());
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(1)
    };
    let e = calls
        .call_in(CallClass::Start, "pull", Idempotency::Idempotent, slow)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let v = calls
        .call_with_timeout(
            CallClass::Start,
            "pull",
            Idempotency::Idempotent,
            Duration::from_secs(600),
            slow,
        )
        .await
        .unwrap();
    assert_eq!(v, 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_wait_for_the_probe_in_flight() {
    let probes = Arc::new(AtomicU32::new(0));
    let p = probes.clone();
    let calls = EngineCalls::new(
        "docker",
        policy(0),
        BreakerConfig {
            max_failures: 1,
            ..BreakerConfig::default()
        },
    )
    .with_health_probe(
        Duration::from_secs(1),
        Arc::new(move || {
            p.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                true
            }
            .boxed()
        }),
    );
    failing(&calls, CallClass::Start, &AtomicU32::new(0))
        .await
        .unwrap_err();
    let ok = || {
        calls.call_in(
            CallClass::Start,
            "create",
            Idempotency::NotIdempotent,
            || async { Ok(1) },
        )
    };
    // Two creates at once (a launcher and a build container): both go through.
    let (a, b) = tokio::join!(ok(), ok());
    assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
    assert_eq!(probes.load(Ordering::SeqCst), 1);
}
