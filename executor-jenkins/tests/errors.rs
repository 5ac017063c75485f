//! Failure handling: credentials, server errors, slow answers, rate limits, and the
//! ambiguous `buildWithParameters` that must never queue a build twice.

mod common;

use std::time::Duration;

use common::*;
use executor_base::engine::BreakerConfig;
use executor_base::{Error, ErrorKind, Executor, Phase};
use executor_jenkins::fake::{FAKE_TOKEN, Fault, FaultAction};

fn texts(e: &Error) -> String {
    let mut all = format!("{e} {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        all.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    all
}

#[tokio::test]
async fn bad_credentials_name_the_user_never_the_token() {
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_credentials("screwdriver", "wrong-token-c0ffee")
        .build()
        .await
        .unwrap();
    j.clear_requests();
    let err = e.start(&build(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(!err.is_temporary());
    assert_eq!(err.status(), Some(401));
    let all = texts(&err);
    assert!(all.contains("user 'screwdriver'"), "{all}");
    assert!(
        !all.contains("wrong-token-c0ffee") && !all.contains(BUILD_TOKEN),
        "{all}"
    );
    assert_eq!(
        calls(&j),
        ["GET /pluginManager/api/json", "GET /crumbIssuer/api/json"],
        "the plugin list asked again (build() could not read it), then not retried"
    );
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(!texts(&err).contains("wrong-token-c0ffee"));
    assert!(!format!("{e:?}").contains("wrong-token-c0ffee"));
}

#[tokio::test]
async fn missing_permissions_name_the_user() {
    let (j, e) = setup().await;
    j.inject(Fault::on(
        "GET",
        "/job/SD-1/api/json",
        FaultAction::Respond {
            status: 403,
            body: "<html><body>screwdriver is missing the Job/Read permission</body></html>".into(),
            headers: vec![],
        },
    ));
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(
        err.to_string()
            .contains("Jenkins user 'screwdriver' is not allowed"),
        "{err}"
    );
    assert!(
        err.to_string().contains("missing the Job/Read permission"),
        "{err}"
    );
    assert!(!texts(&err).contains(FAKE_TOKEN));
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let (j, e) = setup().await;
    e.start(&build(1)).await.unwrap();
    j.inject(Fault::status("GET", "/queue/item/", 503).times(2));
    j.clear_requests();
    assert_eq!(status(&e, 1).await.phase, Phase::Pending);
    assert_eq!(calls(&j), ["GET /queue/item/1/api/json"; 3]);
    let r = e.stats().requests;
    assert_eq!((r.failure, r.success), (2, 3));
}

#[tokio::test]
async fn create_is_retried_because_it_cannot_create_twice() {
    let (j, e) = setup().await;
    // Jenkins created the job but the answer was lost: the retry finds it and updates it.
    j.inject(Fault::on(
        "POST",
        "/createItem",
        FaultAction::ProcessThenRespond(502),
    ));
    e.start(&build(1)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "GET /crumbIssuer/api/json",
            "POST /createItem",
            "POST /createItem",
            "GET /job/SD-1/api/json",
            "POST /job/SD-1/config.xml",
            "POST /job/SD-1/buildWithParameters"
        ]
    );
    assert_eq!(j.queue_items("SD-1").len(), 1);
}

#[tokio::test]
async fn connection_refused_is_unavailable_and_temporary() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_url(format!("http://127.0.0.1:{port}"))
        .build()
        .await
        .unwrap();
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(
        err.to_string()
            .contains(&format!("cannot reach Jenkins at http://127.0.0.1:{port}/")),
        "{err}"
    );
    assert!(
        err.context()
            .iter()
            .any(|(k, v)| *k == "attempts" && v == "4"),
        "{err:?}"
    );
    // A start that cannot connect never reached Jenkins: nothing to clean, plain error.
    let err = e.start(&build(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn slow_answers_time_out_and_reads_are_retried() {
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_request_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    e.start(&build(1)).await.unwrap();
    j.inject(Fault::on(
        "GET",
        "/queue/item/",
        FaultAction::DelayBefore(Duration::from_millis(600)),
    ));
    assert_eq!(status(&e, 1).await.phase, Phase::Pending);
    assert_eq!(e.stats().requests.timeouts, 1);
    j.inject(
        Fault::on(
            "GET",
            "/queue/item/",
            FaultAction::DelayBefore(Duration::from_millis(600)),
        )
        .times(10),
    );
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_temporary());
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let (j, e) = setup().await;
    e.start(&build(1)).await.unwrap();
    let limited = |secs: &str| FaultAction::Respond {
        status: 429,
        body: "slow down".into(),
        headers: vec![("Retry-After".into(), secs.into())],
    };
    j.inject(Fault::on("GET", "/queue/item/", limited("0")));
    assert_eq!(status(&e, 1).await.phase, Phase::Pending);
    // Longer than the policy is willing to sleep: handed back, still temporary.
    j.inject(Fault::on("GET", "/queue/item/", limited("3600")));
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn repeated_failures_open_the_breaker() {
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_breaker(BreakerConfig {
            max_failures: 2,
            reset_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
        })
        .build()
        .await
        .unwrap();
    j.inject(Fault::status("GET", "/job/", 500).times(100));
    let _ = e.status(&stop_cfg(1)).await.unwrap_err();
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    // The last real cause (a 500), with the breaker's state as context.
    assert_eq!(err.status(), Some(500), "{err}");
    assert!(executor_base::engine::refused_by_breaker(&err), "{err}");
    assert!(!e.stats().breaker.is_closed);
}

// --- buildWithParameters is never blindly repeated -----------------------------------

#[tokio::test]
async fn an_answer_lost_after_jenkins_queued_the_build_does_not_queue_it_twice() {
    let (j, e) = setup().await;
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::ProcessThenRespond(502),
    ));
    e.start(&build(1)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "GET /crumbIssuer/api/json",
            "POST /createItem",
            "POST /job/SD-1/buildWithParameters",
            "GET /job/SD-1/api/json"
        ]
    );
    assert_eq!(j.queue_items("SD-1").len(), 1);
    assert_eq!(status(&e, 1).await.phase, Phase::Pending);
    j.start_queued("SD-1").unwrap();
    assert_eq!(status(&e, 1).await.phase, Phase::Running);
}

#[tokio::test]
async fn a_timeout_after_jenkins_queued_the_build_does_not_queue_it_twice() {
    let (j, _) = setup().await;
    let e = j
        .executor_builder()
        .with_request_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::DelayAfter(Duration::from_secs(2)),
    ));
    e.start(&build(1)).await.unwrap();
    assert_eq!(j.queue_items("SD-1").len(), 1);
    assert_eq!(e.stats().requests.timeouts, 1);
}

#[tokio::test]
async fn a_build_that_already_started_is_found_by_the_check() {
    let (j, e) = setup().await;
    j.set_queue_delay(Some(Duration::ZERO));
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::ProcessThenRespond(504),
    ));
    e.start(&build(1)).await.unwrap();
    assert_eq!(j.queue_items("SD-1").len(), 1);
    j.clear_requests();
    assert_eq!(status(&e, 1).await.phase, Phase::Running);
    assert_eq!(
        calls(&j),
        ["GET /job/SD-1/1/api/json"],
        "the check learnt the build number"
    );
}

#[tokio::test]
async fn a_failure_before_jenkins_acted_is_retried_after_checking() {
    let (j, e) = setup().await;
    j.inject(Fault::status("POST", "/buildWithParameters", 502));
    e.start(&build(1)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "GET /crumbIssuer/api/json",
            "POST /createItem",
            "POST /job/SD-1/buildWithParameters",
            "GET /job/SD-1/api/json",
            "POST /job/SD-1/buildWithParameters"
        ]
    );
    assert_eq!(j.queue_items("SD-1").len(), 1);
}

#[tokio::test]
async fn a_definitive_refusal_removes_the_job() {
    let (j, e) = setup().await;
    j.inject(Fault::status("POST", "/buildWithParameters", 400));
    let err = e.start(&build(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert_eq!(err.operation(), "start");
    assert!(
        j.job_names().is_empty(),
        "the job of the failed start is gone"
    );
    assert_eq!(e.stats().builds.started, 0);
    assert_eq!(
        e.status(&stop_cfg(1)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_build_never_queued_after_every_retry_is_cleaned_up() {
    let (j, e) = setup().await;
    j.inject(Fault::status("POST", "/buildWithParameters", 503).times(100));
    let err = e.start(&build(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.is_temporary());
    let sends = calls(&j)
        .iter()
        .filter(|c| c.ends_with("/buildWithParameters"))
        .count();
    assert_eq!(sends, 4, "1 + 3 checked retries");
    assert!(j.queue_items("SD-1").is_empty());
    assert!(j.job_names().is_empty());
}

#[tokio::test]
async fn when_jenkins_cannot_be_asked_the_job_is_left_in_place() {
    let (j, e) = setup().await;
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::ProcessThenRespond(502),
    ));
    j.inject(Fault::status("GET", "/job/SD-1/api/json", 503).times(100));
    let err = e.start(&build(1)).await.unwrap_err();
    assert!(err.is_temporary());
    assert!(err.to_string().contains("outcome: unknown"), "{err}");
    assert_eq!(
        j.job_names(),
        ["SD-1"],
        "a build may be queued: nothing is removed"
    );
    assert_eq!(j.queue_items("SD-1").len(), 1, "and nothing is sent twice");
}
