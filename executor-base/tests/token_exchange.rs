//! Token exchange against a wiremock API server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use executor_base::engine::RetryPolicy;
use executor_base::jwt::JwtVerifier;
use executor_base::{ErrorKind, StartConfig, TokenExchange, TokenExchangeOptions};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN_PATH: &str = "/v4/builds/42/token";

fn options() -> TokenExchangeOptions {
    TokenExchangeOptions {
        request_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
            budget: None,
        },
        ..TokenExchangeOptions::default()
    }
}

fn exchange() -> TokenExchange {
    TokenExchange::new(options()).unwrap()
}

fn build(api: &str, token: &str) -> StartConfig {
    StartConfig::builder(42, api, "node:22", token)
        .build()
        .unwrap()
}

/// A server and a build whose temporary token is `temporal`.
async fn setup() -> (MockServer, StartConfig, String) {
    let server = MockServer::start().await;
    let temporal = temporal_token();
    let b = build(&server.uri(), &temporal);
    (server, b, temporal)
}

fn ok_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "token": token }))
}

fn hapi_error(status: u16, error: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"statusCode": status, "error": error, "message": message}))
}

#[tokio::test]
async fn exchanges_a_temporal_token() {
    let (server, b, temporal) = setup().await;
    let build_jwt = build_token();
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(header(
            "authorization",
            format!("Bearer {temporal}").as_str(),
        ))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"buildTimeout": 90 + 30})))
        .respond_with(ok_answer(&build_jwt))
        .expect(1)
        .mount(&server)
        .await;
    let got = exchange().exchange(&b, 90).await.unwrap();
    assert_eq!(got.expose_secret(), build_jwt);
}

#[tokio::test]
async fn api_uri_path_prefixes_are_kept() {
    let server = MockServer::start().await;
    let b = build(&format!("{}/sd/api/", server.uri()), &temporal_token());
    Mock::given(method("POST"))
        .and(path(format!("/sd/api{TOKEN_PATH}")))
        .and(body_json(json!({"buildTimeout": 15 + 30})))
        .respond_with(ok_answer("build-token"))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        exchange().exchange(&b, 15).await.unwrap().expose_secret(),
        "build-token"
    );
}

#[tokio::test]
async fn the_buffer_is_configurable() {
    let (server, b, _) = setup().await;
    Mock::given(body_json(json!({"buildTimeout": 60})))
        .respond_with(ok_answer("t"))
        .expect(1)
        .mount(&server)
        .await;
    let x = TokenExchange::new(TokenExchangeOptions {
        buffer_minutes: 0,
        ..options()
    })
    .unwrap();
    x.exchange(&b, 60).await.unwrap();
}

/// Mounts one answer, runs the exchange, and checks the error and that no retry happened.
async fn refused(answer: ResponseTemplate) -> executor_base::Error {
    let (server, b, _) = setup().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    exchange().exchange(&b, 90).await.unwrap_err()
}

#[tokio::test]
async fn unauthorized_is_token_rejected_and_not_retried() {
    let e = refused(hapi_error(401, "Unauthorized", "Missing authentication")).await;
    assert_eq!(e.kind(), ErrorKind::TokenRejected);
    assert_eq!(e.status(), Some(401));
    assert!(e.message().contains("Missing authentication"), "{e}");
    assert!(!e.is_temporary());
}

#[tokio::test]
async fn forbidden_is_permission_denied_and_not_retried() {
    let e = refused(hapi_error(
        403,
        "Forbidden",
        "Build is already running or finished.",
    ))
    .await;
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert_eq!(e.status(), Some(403));
    assert!(
        e.message()
            .contains("Build is already running or finished."),
        "{e}"
    );
    assert_eq!(e.operation(), "token_exchange");
    assert!(e.to_string().contains("(HTTP 403)"), "{e}");
}

#[tokio::test]
async fn not_found_is_not_found_and_not_retried() {
    let e = refused(hapi_error(404, "Not Found", "Build does not exist")).await;
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.status(), Some(404));
    assert!(e.message().contains("Build does not exist"), "{e}");
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let e = refused(hapi_error(
        400,
        "Bad Request",
        "Invalid buildTimeout value: x",
    ))
    .await;
    assert_eq!(e.kind(), ErrorKind::Unexpected);
    assert_eq!(e.status(), Some(400));
    assert!(e.message().contains("Invalid buildTimeout value"), "{e}");
    // Plain-text bodies are kept as the message.
    let e = refused(ResponseTemplate::new(418).set_body_string("short and stout")).await;
    assert!(e.message().contains("short and stout"), "{e}");
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let (server, b, _) = setup().await;
    Mock::given(path(TOKEN_PATH))
        .respond_with(hapi_error(500, "Internal Server Error", "boom"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(TOKEN_PATH))
        .respond_with(ok_answer("after-retry"))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        exchange().exchange(&b, 90).await.unwrap().expose_secret(),
        "after-retry"
    );
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_retries() {
    let (server, b, _) = setup().await;
    Mock::given(path(TOKEN_PATH))
        .respond_with(hapi_error(503, "Service Unavailable", "maintenance"))
        .expect(4)
        .mount(&server)
        .await;
    let e = exchange().exchange(&b, 90).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(e.status(), Some(503));
    assert!(e.is_temporary());
    assert!(
        e.context().contains(&("attempts", "4".to_string())),
        "{e:?}"
    );
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_then_succeed() {
    let (server, b, _) = setup().await;
    Mock::given(path(TOKEN_PATH))
        .respond_with(
            hapi_error(429, "Too Many Requests", "slow down").insert_header("retry-after", "1"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(TOKEN_PATH))
        .respond_with(ok_answer("patience"))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    assert_eq!(
        exchange().exchange(&b, 90).await.unwrap().expose_secret(),
        "patience"
    );
    // The backoff alone (10-20 ms) is far below the server's one second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "did not honour Retry-After"
    );
}

#[tokio::test]
async fn retry_after_beyond_the_policy_is_handed_back() {
    let e =
        refused(hapi_error(429, "Too Many Requests", "later").insert_header("retry-after", "3600"))
            .await;
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    assert!(e.is_temporary());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_bound() {
    let (server, b, _) = setup().await;
    Mock::given(path(TOKEN_PATH))
        .respond_with(ok_answer("too-late").set_delay(Duration::from_secs(60)))
        .expect(1)
        .mount(&server)
        .await;
    // The guard only keeps a broken bound from hanging the suite.
    let e = tokio::time::timeout(Duration::from_secs(30), exchange().exchange(&b, 90))
        .await
        .expect("the request bound did not fire")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.message().contains("500 ms"), "{e}");
}

#[tokio::test]
async fn connect_errors_are_retried_then_reported() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = build(&format!("http://127.0.0.1:{port}"), &temporal_token());
    let e = exchange().exchange(&b, 90).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_temporary());
    assert!(
        e.context().contains(&("attempts", "4".to_string())),
        "{e:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_unexpected() {
    let e = refused(ResponseTemplate::new(200).set_body_string("{not json")).await;
    assert_eq!(e.kind(), ErrorKind::Unexpected);
    assert_eq!(e.status(), Some(200));
}

#[tokio::test]
async fn a_missing_token_field_is_unexpected() {
    for body in [
        json!({"jwt": "x"}),
        json!({"token": null}),
        json!({"token": ""}),
        json!(["token"]),
    ] {
        let e = refused(ResponseTemplate::new(200).set_body_json(body.clone())).await;
        assert_eq!(e.kind(), ErrorKind::Unexpected, "{body}");
    }
    let e = refused(ResponseTemplate::new(200).set_body_json(json!({"token": 5}))).await;
    assert_eq!(e.kind(), ErrorKind::Unexpected);
}

#[tokio::test]
async fn tokens_without_the_temporal_scope_are_returned_unchanged_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    for token in [build_token(), "opaque-build-token".to_string()] {
        let b = build(&server.uri(), &token);
        let got = exchange().exchange(&b, 90).await.unwrap();
        assert_eq!(got.expose_secret(), token);
    }
}

#[tokio::test]
async fn expired_temporary_tokens_are_refused_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ok_answer("x"))
        .expect(0)
        .mount(&server)
        .await;
    let b = build(&server.uri(), &rs256(&claims("temporal", -10)));
    let e = exchange().exchange(&b, 90).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TokenRejected);
}

#[tokio::test]
async fn the_returned_token_is_verified_when_a_key_is_configured() {
    let verifier = JwtVerifier::from_rsa_pem(&fixture("jwt_rsa_public.pem")).unwrap();
    let x = TokenExchange::new(TokenExchangeOptions {
        verifier: Some(verifier),
        ..options()
    })
    .unwrap();

    let (server, b, _) = setup().await;
    let good = build_token();
    Mock::given(path(TOKEN_PATH))
        .respond_with(ok_answer(&good))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    assert_eq!(x.exchange(&b, 90).await.unwrap().expose_secret(), good);

    // Signed by another key: refused.
    Mock::given(path(TOKEN_PATH))
        .respond_with(ok_answer(&es256(&claims("build", 600))))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let e = x.exchange(&b, 90).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TokenRejected);
    assert!(
        e.message().starts_with("exchanged build token refused"),
        "{e}"
    );
}

#[tokio::test]
async fn the_free_function_uses_defaults() {
    let (server, b, _) = setup().await;
    Mock::given(path(TOKEN_PATH))
        .and(body_json(json!({"buildTimeout": 120})))
        .respond_with(ok_answer("default-path"))
        .expect(1)
        .mount(&server)
        .await;
    let got: SecretString = executor_base::exchange_token_for_build(&b, 90)
        .await
        .unwrap();
    assert_eq!(got.expose_secret(), "default-path");
}
