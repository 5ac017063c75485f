//! The API refuses a build whose executor pre-flight fails: 422 with the findings in the
//! JSON body, nothing stored, nothing started; `?dryRun=true` answers the pre-flight
//! without storing or starting anything.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use executor_api::{ApiConfig, ApiState, router};
use executor_base::secrecy::SecretString;
use executor_base::testkit::fake::FakeExecutor;
use executor_base::{Executor, Finding};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn app(fake: &FakeExecutor) -> axum::Router {
    let config = ApiConfig {
        user_token: Some(SecretString::from("admin-token")),
        ..ApiConfig::default()
    };
    let state = ApiState::builder(Arc::new(fake.clone()) as Arc<dyn Executor>, config)
        .build()
        .await
        .unwrap();
    router(state)
}

async fn post(app: &axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::AUTHORIZATION, "Bearer admin-token")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn body() -> Value {
    json!({"steps": [{"name": "one", "command": "true"}], "container": "busybox:latest"})
}

#[tokio::test]
async fn a_failed_preflight_is_422_with_the_findings_and_nothing_is_started() {
    let fake = FakeExecutor::named("docker");
    fake.set_preflight(vec![
        Finding::ok(
            "docker.daemon",
            "Docker 20.10 at unix:///var/run/docker.sock",
        ),
        Finding::fail(
            "docker.launcherImage",
            "launcher image stock:1 has no cd.screwdriver.sdx.launch-protocol label",
        ),
    ]);
    let app = app(&fake).await;
    let (s, v) = post(&app, "/v4/builds", body()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["statusCode"], 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("docker.launcherImage"),
        "{v}"
    );
    assert_eq!(v["preflight"]["backend"], "docker");
    assert_eq!(v["preflight"]["passed"], false);
    assert_eq!(
        v["preflight"]["findings"][1]["check"],
        "docker.launcherImage"
    );
    assert_eq!(v["preflight"]["findings"][1]["level"], "fail");
    assert_eq!(fake.calls().start, 0, "never started");
    let list = {
        let req = Request::builder()
            .uri("/v4/builds")
            .header(header::AUTHORIZATION, "Bearer admin-token")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    assert_eq!(list, json!([]), "nothing stored");

    // Warnings do not refuse: the build is created and started.
    fake.set_preflight(vec![Finding::warn(
        "docker.launchMode",
        "launchMode=screwdriver: success cannot be proven",
    )]);
    let (s, v) = post(&app, "/v4/builds", body()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn dry_run_answers_the_preflight_and_stores_nothing() {
    let fake = FakeExecutor::named("k8s");
    fake.set_preflight(vec![Finding::fail(
        "k8s.rbac.pods.create",
        "RBAC denies create on pods in namespace builds",
    )]);
    let app = app(&fake).await;
    let (s, v) = post(&app, "/v4/builds?dryRun=true", body()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["backend"], "k8s");
    assert_eq!(v["passed"], false);
    assert_eq!(v["findings"][0]["check"], "k8s.rbac.pods.create");
    assert_eq!(fake.calls().start, 0);
    fake.set_preflight(Vec::new());
    let (s, v) = post(&app, "/v4/builds?dryRun=true", body()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"backend": "k8s", "passed": true, "findings": []}));
    // A bad body is refused as a submission would be.
    let (s, _) = post(&app, "/v4/builds?dryRun=true", json!({"steps": []})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}
