//! Retry and breaker rules, under paused tokio time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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

fn breaker(max_failures: u32) -> BreakerConfig {
    BreakerConfig {
        max_failures,
        reset_timeout: Duration::from_secs(30),
        call_timeout: Duration::from_secs(10),
    }
}

fn unavailable() -> Error {
    Error::new(ErrorKind::Unavailable, "connection refused").temporary()
}

/// Runs a call whose attempts fail with `errors` (in order) and then succeed; returns the
/// result, the number of attempts and the virtual time spent.
async fn run_script(
    calls: &EngineCalls,
    idem: Idempotency,
    errors: Vec<Error>,
) -> (Result<u32, Error>, u32, Duration) {
    let attempts = Arc::new(AtomicU32::new(0));
    let errors = Arc::new(parking_lot::Mutex::new(errors.into_iter()));
    let start = Instant::now();
    let a = attempts.clone();
    let r = calls
        .call("op", idem, move || {
            let n = a.fetch_add(1, Ordering::SeqCst);
            let next = errors.lock().next();
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok(n),
                }
            }
        })
        .await;
    (r, attempts.load(Ordering::SeqCst), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn success_is_counted_once() {
    let calls = EngineCalls::new("test", policy(3), breaker(5));
    let (r, n, waited) = run_script(&calls, Idempotency::Idempotent, vec![]).await;
    assert_eq!(r.unwrap(), 0);
    assert_eq!((n, waited), (1, Duration::ZERO));
    let s = calls.request_stats();
    assert_eq!((s.total, s.success, s.failure, s.concurrent), (1, 1, 0, 0));
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn temporary_errors_are_retried_with_exponential_backoff() {
    let calls = EngineCalls::new("test", policy(5), breaker(0));
    let errors = vec![unavailable(), unavailable(), unavailable()];
    let (r, n, waited) = run_script(&calls, Idempotency::Idempotent, errors).await;
    assert_eq!(r.unwrap(), 3);
    assert_eq!(n, 4);
    // 1 s + 2 s + 4 s
    assert_eq!(waited, Duration::from_secs(7));
    let s = calls.request_stats();
    assert_eq!((s.total, s.success, s.failure), (4, 1, 3));
}

#[tokio::test(start_paused = true)]
async fn persistent_errors_are_not_retried() {
    let calls = EngineCalls::new("test", policy(5), breaker(5));
    let errors = vec![Error::new(ErrorKind::NotFound, "no such container")];
    let (r, n, waited) = run_script(&calls, Idempotency::Idempotent, errors).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!((n, waited), (1, Duration::ZERO));
    assert!(
        e.context().is_empty(),
        "no attempts context without retries"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_retries() {
    let calls = EngineCalls::new("test", policy(2), breaker(0));
    let errors = (0..10).map(|_| unavailable()).collect();
    let (r, n, waited) = run_script(&calls, Idempotency::Idempotent, errors).await;
    let e = r.unwrap_err();
    assert_eq!(n, 3);
    assert_eq!(waited, Duration::from_secs(3));
    assert!(e.is_temporary());
    assert_eq!(e.context(), &[("attempts", "3".to_string())]);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped_by_max_backoff() {
    let mut p = policy(4);
    p.max_backoff = Duration::from_secs(3);
    let calls = EngineCalls::new("test", p, breaker(0));
    let errors = (0..4).map(|_| unavailable()).collect();
    let (r, _, waited) = run_script(&calls, Idempotency::Idempotent, errors).await;
    assert!(r.is_ok());
    // 1 + 2 + 3 + 3
    assert_eq!(waited, Duration::from_secs(9));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_lower_bound_on_the_wait() {
    let calls = EngineCalls::new("test", policy(3), breaker(0));
    let errors = vec![
        Error::new(ErrorKind::RateLimited, "slow down").with_retry_after(Duration::from_secs(5)),
    ];
    let (r, n, waited) = run_script(&calls, Idempotency::Idempotent, errors).await;
    assert!(r.is_ok());
    assert_eq!((n, waited), (2, Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_max_backoff_is_handed_back() {
    let calls = EngineCalls::new("test", policy(3), breaker(0));
    let errors = vec![
        Error::new(ErrorKind::RateLimited, "slow down").with_retry_after(Duration::from_secs(3600)),
    ];
    let (r, n, waited) = run_script(&calls, Idempotency::Idempotent, errors).await;
    let e = r.unwrap_err();
    assert_eq!((n, waited), (1, Duration::ZERO));
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
}

#[tokio::test(start_paused = true)]
async fn not_idempotent_calls_retry_only_when_the_request_never_arrived() {
    let calls = EngineCalls::new("test", policy(3), breaker(0));
    for kind in [ErrorKind::Unavailable, ErrorKind::RateLimited] {
        let errors = vec![Error::new(kind, "x").temporary()];
        let (r, n, _) = run_script(&calls, Idempotency::NotIdempotent, errors).await;
        assert!(r.is_ok(), "{kind} must be retried");
        assert_eq!(n, 2);
    }
    for kind in [ErrorKind::Timeout, ErrorKind::Unexpected] {
        let errors = vec![Error::new(kind, "x").temporary()];
        let (r, n, _) = run_script(&calls, Idempotency::NotIdempotent, errors).await;
        assert_eq!(r.unwrap_err().kind(), kind, "{kind} must not be retried");
        assert_eq!(n, 1);
        // The same errors are retried for idempotent calls.
        let errors = vec![Error::new(kind, "x").temporary()];
        let (r, n, _) = run_script(&calls, Idempotency::Idempotent, errors).await;
        assert!(r.is_ok());
        assert_eq!(n, 2);
    }
    // A 503 is an answer: the request arrived and may have been applied.
    let errors = vec![
        Error::new(ErrorKind::Unavailable, "x")
            .with_status(503)
            .temporary(),
    ];
    let (r, n, _) = run_script(&calls, Idempotency::NotIdempotent, errors).await;
    assert_eq!((r.unwrap_err().status(), n), (Some(503), 1));
}

#[tokio::test(start_paused = true)]
async fn slow_attempts_time_out_as_temporary_errors() {
    let calls = EngineCalls::new("test", policy(0), breaker(5));
    let start = Instant::now();
    let e = calls
        .call("hang", Idempotency::Idempotent, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.is_temporary());
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let s = calls.request_stats();
    assert_eq!((s.total, s.timeouts, s.failure, s.concurrent), (1, 1, 1, 0));
    assert_eq!(s.average_time, 10_000.0);
    assert!(
        e.to_string()
            .contains("hang did not finish within 10000 ms"),
        "{e}"
    );
}

/// A timeout names the endpoint the calls were given, in every clone, and only that.
#[tokio::test(start_paused = true)]
async fn timeouts_name_the_endpoint() {
    let calls = EngineCalls::new("test", policy(0), breaker(5)).with_endpoint("tcp://engine:2375");
    let other = calls.with_retry_policy(policy(0));
    for c in [&calls, &other] {
        let e = c
            .call("info", Idempotency::Idempotent, || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(
            e.to_string()
                .contains("tcp://engine:2375 did not answer info within 10000 ms"),
            "{e}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timed_out_idempotent_calls_are_retried() {
    let calls = EngineCalls::new("test", policy(1), breaker(0));
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let r = calls
        .call("slow-once", Idempotency::Idempotent, move || {
            let n = a.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(n)
            }
        })
        .await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(calls.request_stats().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_fails_fast_half_opens_and_closes() {
    let calls = EngineCalls::new("test", policy(0), breaker(3));
    for _ in 0..3 {
        let (r, _, _) = run_script(&calls, Idempotency::Idempotent, vec![unavailable()]).await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Unavailable);
    }
    assert!(!calls.breaker_stats().is_closed);

    // Open: fails fast without calling the engine, with the last real cause.
    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![]).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(refused_by_breaker(&e), "{e}");
    assert!(e.is_temporary());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(n, 0);
    assert_eq!(e.executor(), "test");

    // Half-open after reset_timeout: a failing probe opens it again.
    tokio::time::advance(Duration::from_secs(30)).await;
    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![unavailable()]).await;
    assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::Unavailable, 1));
    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![]).await;
    let e = r.unwrap_err();
    assert_eq!(
        (e.kind(), refused_by_breaker(&e), n),
        (ErrorKind::Unavailable, true, 0)
    );

    // A successful probe closes it.
    tokio::time::advance(Duration::from_secs(30)).await;
    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![]).await;
    assert_eq!((r.unwrap(), n), (0, 1));
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_stops_retries() {
    let calls = EngineCalls::new("test", policy(10), breaker(2));
    let errors = (0..10).map(|_| unavailable()).collect();
    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, errors).await;
    let e = r.unwrap_err();
    assert_eq!(
        (e.kind(), refused_by_breaker(&e)),
        (ErrorKind::Unavailable, true)
    );
    assert_eq!(n, 2);
    assert_eq!(e.context().last().unwrap(), &("attempts", "3".to_string()));
}

#[tokio::test(start_paused = true)]
async fn only_consecutive_temporary_failures_count() {
    let calls = EngineCalls::new("test", policy(0), breaker(2));
    assert!(
        run_script(&calls, Idempotency::Idempotent, vec![unavailable()])
            .await
            .0
            .is_err()
    );
    // An answer like 404 proves the engine is up: the failure count resets.
    assert!(
        run_script(
            &calls,
            Idempotency::Idempotent,
            vec![Error::new(ErrorKind::NotFound, "gone")]
        )
        .await
        .0
        .is_err()
    );
    assert!(
        run_script(&calls, Idempotency::Idempotent, vec![unavailable()])
            .await
            .0
            .is_err()
    );
    assert!(calls.breaker_stats().is_closed);
    for _ in 0..5 {
        let (r, _, _) = run_script(
            &calls,
            Idempotency::Idempotent,
            vec![Error::new(ErrorKind::NotFound, "gone")],
        )
        .await;
        assert!(r.is_err());
    }
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_at_a_time() {
    let calls = EngineCalls::new("test", policy(0), breaker(1));
    assert!(
        run_script(&calls, Idempotency::Idempotent, vec![unavailable()])
            .await
            .0
            .is_err()
    );
    assert!(!calls.breaker_stats().is_closed);
    tokio::time::advance(Duration::from_secs(30)).await;

    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = Arc::new(parking_lot::Mutex::new(Some(release_rx)));
    let probe_calls = calls.clone();
    let probe = tokio::spawn(async move {
        probe_calls
            .call("probe", Idempotency::Idempotent, move || {
                let rx = release_rx.lock().take();
                async move {
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    Ok(())
                }
            })
            .await
    });
    tokio::task::yield_now().await;
    assert_eq!(calls.request_stats().concurrent, 1);
    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![]).await;
    let e = r.unwrap_err();
    assert_eq!((refused_by_breaker(&e), n), (true, 0));
    assert!(e.to_string().contains("half-open"), "{e}");
    assert_eq!(e.retry_after(), None);

    release_tx.send(()).unwrap();
    probe.await.unwrap().unwrap();
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_releases_the_half_open_slot() {
    let calls = EngineCalls::new("test", policy(0), breaker(1));
    assert!(
        run_script(&calls, Idempotency::Idempotent, vec![unavailable()])
            .await
            .0
            .is_err()
    );
    assert!(!calls.breaker_stats().is_closed);
    tokio::time::advance(Duration::from_secs(30)).await;

    let never = calls.call("probe", Idempotency::Idempotent, || {
        std::future::pending::<Result<(), Error>>()
    });
    // Drop the probe before it finishes.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), never)
            .await
            .is_err()
    );
    assert_eq!(calls.request_stats().concurrent, 0);

    let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![]).await;
    assert_eq!((r.unwrap(), n), (0, 1));
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn zero_max_failures_disables_the_breaker() {
    let calls = EngineCalls::new("test", policy(0), breaker(0));
    for _ in 0..20 {
        let (r, n, _) = run_script(&calls, Idempotency::Idempotent, vec![unavailable()]).await;
        assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::Unavailable, 1));
    }
    assert!(calls.breaker_stats().is_closed);
}

#[tokio::test(start_paused = true)]
async fn average_time_is_the_mean_of_finished_attempts() {
    let calls = EngineCalls::new("test", policy(0), breaker(5));
    for ms in [100, 300] {
        calls
            .call("sleep", Idempotency::Idempotent, move || async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            })
            .await
            .unwrap();
    }
    let s = calls.request_stats();
    assert_eq!((s.total, s.success), (2, 2));
    assert_eq!(s.average_time, 200.0);
}

#[tokio::test(start_paused = true)]
async fn errors_are_tagged_with_executor_and_operation() {
    let calls = EngineCalls::new("docker", policy(0), breaker(5));
    let e = calls
        .call("start", Idempotency::NotIdempotent, || async {
            Err::<(), _>(Error::new(ErrorKind::NotFound, "no such image"))
        })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "docker start: not_found: no such image");
    let e = calls
        .call("start", Idempotency::NotIdempotent, || async {
            Err::<(), _>(
                Error::new(ErrorKind::NotFound, "x")
                    .with_executor("k8s")
                    .with_operation("create"),
            )
        })
        .await
        .unwrap_err();
    assert_eq!((e.executor(), e.operation()), ("k8s", "create"));
}

#[test]
fn jittered_delays_stay_in_the_upper_half_and_respect_retry_after() {
    let p = RetryPolicy {
        jitter: true,
        ..policy(5)
    };
    for attempt in 0..6 {
        let full = p.backoff(attempt);
        for _ in 0..50 {
            let d = p.delay(attempt, None).unwrap();
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }
    let d = p.delay(0, Some(Duration::from_secs(20))).unwrap();
    assert!(d >= Duration::from_secs(20));
    assert_eq!(p.delay(0, Some(Duration::from_secs(31))), None);
}

#[test]
fn backoff_handles_degenerate_policies() {
    let p = RetryPolicy {
        multiplier: 0.5,
        ..policy(5)
    };
    assert_eq!(p.backoff(4), Duration::from_secs(1));
    let p = RetryPolicy {
        multiplier: f64::MAX,
        ..policy(5)
    };
    assert_eq!(p.backoff(64), p.max_backoff);
    let p = RetryPolicy {
        initial_backoff: Duration::ZERO,
        jitter: true,
        ..policy(5)
    };
    assert_eq!(p.delay(3, None), Some(Duration::ZERO));
    assert_eq!(RetryPolicy::none().max_retries, 0);
}

#[test]
fn policies_round_trip_through_json_in_milliseconds() {
    let p = RetryPolicy::default();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["initialBackoff"], 1000);
    assert_eq!(serde_json::from_value::<RetryPolicy>(v).unwrap(), p);
    let b: BreakerConfig = serde_json::from_value(serde_json::json!({"callTimeout": 250})).unwrap();
    assert_eq!(b.call_timeout, Duration::from_millis(250));
    assert_eq!(b.max_failures, 5);
}

#[test]
fn debug_names_the_executor() {
    let calls = EngineCalls::with_defaults("jenkins");
    let s = format!("{calls:?}");
    assert!(
        s.contains("jenkins") && s.contains("is_closed: true"),
        "{s}"
    );
    assert_eq!(calls.executor(), "jenkins");
    assert_eq!(calls.retry_policy(), &RetryPolicy::default());
    assert_eq!(calls.breaker_config(), &BreakerConfig::default());
}
