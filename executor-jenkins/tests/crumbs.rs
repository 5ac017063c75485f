//! The CSRF crumb: fetched once, refreshed once when Jenkins rejects it, optional.
//! Jenkins checks crumbs only on requests authenticated with the user's password (API
//! tokens are exempt, core `ApiCrumbExclusion`), so these tests log in with the password.

mod common;

use std::time::Duration;

use common::*;
use executor_base::{ErrorKind, Executor, Phase};
use executor_jenkins::JenkinsExecutor;
use executor_jenkins::fake::{FAKE_USER, FakeJenkins, FakeOptions, Fault, FaultAction};
use futures::future::join_all;

/// A fake plus an executor that logs in with the user's password (crumbs enforced).
async fn with_password() -> (FakeJenkins, JenkinsExecutor) {
    let j = FakeJenkins::start().await;
    let e = j
        .executor_builder()
        .with_credentials(FAKE_USER, j.password())
        .build()
        .await
        .unwrap();
    j.clear_requests();
    (j, e)
}

#[tokio::test]
async fn the_crumb_is_fetched_once_for_many_posts() {
    let (j, e) = with_password().await;
    let builds: Vec<_> = (1..=20).map(build).collect();
    let results = join_all(builds.iter().map(|b| e.start(b))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        j.crumbs_issued(),
        1,
        "one crumb shared by 20 concurrent starts"
    );
    let posts: Vec<_> = j
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 40);
    assert!(posts.iter().all(|r| r.with_crumb));
}

#[tokio::test]
async fn a_rejected_crumb_is_refreshed_once_and_the_request_resent() {
    let (j, e) = with_password().await;
    e.start(&build(1)).await.unwrap();
    assert_eq!(j.crumbs_issued(), 1);
    j.expire_crumbs(); // e.g. Jenkins restarted: the session is gone
    j.clear_requests();
    e.start(&build(2)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "POST /createItem",
            "GET /crumbIssuer/api/json",
            "POST /createItem",
            "POST /job/SD-2/buildWithParameters"
        ]
    );
    assert_eq!(j.crumbs_issued(), 2);
    assert_eq!(j.queue_items("SD-2").len(), 1);
}

#[tokio::test]
async fn build_with_parameters_is_resent_after_a_crumb_rejection_and_queued_once() {
    let (j, e) = with_password().await;
    e.start(&build(1)).await.unwrap();
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::Respond {
            status: 403,
            body: "<html><body>HTTP ERROR 403 No valid crumb was included in the request</body></html>".into(),
            headers: vec![],
        },
    ));
    j.clear_requests();
    e.start(&build(2)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "POST /createItem",
            "POST /job/SD-2/buildWithParameters",
            "GET /crumbIssuer/api/json",
            "POST /job/SD-2/buildWithParameters"
        ]
    );
    assert_eq!(j.queue_items("SD-2").len(), 1);
}

#[tokio::test]
async fn crumbs_that_expire_with_age_are_refreshed() {
    let (j, e) = with_password().await;
    j.set_crumb_ttl(Some(Duration::from_millis(50)));
    e.start(&build(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    e.stop(&stop_cfg(2)).await.unwrap();
    assert_eq!(j.crumbs_issued(), 2);
    assert!(j.queue_items("SD-2")[0].cancelled);
}

#[tokio::test]
async fn a_crumb_rejected_twice_is_not_refreshed_in_a_loop() {
    let (j, e) = with_password().await;
    e.start(&build(1)).await.unwrap();
    let crumb_403 = FaultAction::Respond {
        status: 403,
        body: "No valid crumb was included in the request".into(),
        headers: vec![],
    };
    j.inject(Fault::on("POST", "/createItem", crumb_403).times(2));
    let err = e.start(&build(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(j.crumbs_issued(), 2, "exactly one refresh");
    assert!(j.job_names().iter().all(|n| n != "SD-2"));
}

#[tokio::test]
async fn jenkins_without_a_crumb_issuer_works() {
    let (j, e) = setup_with(FakeOptions {
        crumb_issuer: false,
        ..FakeOptions::default()
    })
    .await;
    e.start(&build(1)).await.unwrap();
    e.start(&build(2)).await.unwrap();
    j.start_queued("SD-1").unwrap();
    assert_eq!(status(&e, 1).await.phase, Phase::Running);
    e.stop(&stop_cfg(1)).await.unwrap();
    e.stop(&stop_cfg(2)).await.unwrap();
    let crumb_gets = calls(&j)
        .iter()
        .filter(|c| c.contains("crumbIssuer"))
        .count();
    assert_eq!(crumb_gets, 1, "the missing issuer is remembered");
    assert!(j.requests().iter().all(|r| !r.with_crumb));
    wait_for_phase(&e, 1, Phase::Canceled).await;
    wait_for_phase(&e, 2, Phase::Canceled).await;
}
