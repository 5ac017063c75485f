//! Token leak test: the temporary and build tokens never appear in `Debug`, `Display`,
//! error messages (or their sources) or tracing output, on success and on every failure
//! path of config parsing, token exchange and JWT verification.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use executor_base::engine::RetryPolicy;
use executor_base::jwt::{self, JwtVerifier};
use executor_base::{
    Ecosystem, Error, LaunchSpec, StartConfig, StopConfig, TokenDelivery, TokenExchange,
    TokenExchangeOptions,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A `MakeWriter` that appends everything to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything observable about an error: Display, Debug, message, context and sources.
fn render(e: &Error) -> String {
    let mut s = format!("{e}\n{e:?}\n{:#?}\n{}\n{:?}\n", e, e.message(), e.context());
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!("{inner}\n{inner:?}\n"));
        src = inner.source();
    }
    s
}

/// The strings that must never show: each token and its signature part.
fn secrets_of(tokens: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    for t in tokens {
        v.push(t.to_string());
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() > 16) {
            v.push(sig.to_string());
        }
    }
    v
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} leaks a token:\n{text}");
    }
}

fn options() -> TokenExchangeOptions {
    TokenExchangeOptions {
        request_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            max_retries: 1,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: false,
            budget: None,
        },
        ..TokenExchangeOptions::default()
    }
}

#[tokio::test]
async fn tokens_never_leak() {
    let capture = Capture::default();
    let _guard = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish()
        .set_default();

    let temporal = temporal_token();
    let build_jwt = build_token();
    let opaque = "LEAKCHECK-opaque-token-0123456789";
    let secrets = secrets_of(&[&temporal, &build_jwt, opaque]);
    let mut observed = String::new();

    // Configs and what is derived from them.
    let server = MockServer::start().await;
    let start = StartConfig::builder(42, server.uri(), "node:22", &temporal)
        .job_id(7)
        .build()
        .unwrap();
    let builder = StartConfig::builder(42, server.uri(), "node:22", &temporal);
    let stop = StopConfig::from_json(&json!({"buildId": 42, "token": &temporal})).unwrap();
    observed += &format!(
        "{start:?}\n{start:#?}\n{builder:?}\n{stop:?}\n{:?}\n",
        start.to_stop()
    );
    observed += &format!("{:?}\n", start.token);
    let eco = Ecosystem::default();
    let spec = LaunchSpec::new(&start, "/opt/sd", &eco, 90);
    observed += &format!(
        "{spec:?}\n{:?}\n{:?}\n",
        spec.native(&TokenDelivery::File("/run/sd/token".into())),
        spec.screwdriver()
    );
    tracing::info!(config = ?start, stop = ?stop, "backend received a build");

    // Config errors on token fields never echo the value.
    for bad in [
        json!({"buildId": 42, "apiUri": "http://127.0.0.1", "container": "c", "token": format!("{opaque} {temporal}")}),
        json!({"buildId": 0, "apiUri": "http://127.0.0.1", "container": "", "token": format!("{opaque}\n")}),
    ] {
        let e = StartConfig::from_json(&bad).unwrap_err();
        observed += &render(&e);
        tracing::warn!(error = %e, debug = ?e, "refused");
    }
    let e =
        StopConfig::from_json(&json!({"buildId": 42, "token": format!("\t{opaque}")})).unwrap_err();
    observed += &render(&e);

    // Token exchange: success, then every failure path, with servers echoing the token.
    let x = TokenExchange::new(options()).unwrap();
    observed += &format!("{x:?}\n");
    let echo =
        json!({"message": format!("bad credentials: Bearer {temporal}"), "token": &build_jwt});
    let answers = vec![
        ResponseTemplate::new(200).set_body_json(json!({"token": &build_jwt})),
        ResponseTemplate::new(401).set_body_json(echo.clone()),
        ResponseTemplate::new(403).set_body_string(format!("refused {temporal}")),
        ResponseTemplate::new(404).set_body_json(echo.clone()),
        ResponseTemplate::new(500).set_body_json(echo.clone()),
        ResponseTemplate::new(429)
            .set_body_json(echo.clone())
            .insert_header("retry-after", "99999"),
        ResponseTemplate::new(200).set_body_string(format!("not json {build_jwt}")),
        ResponseTemplate::new(200).set_body_json(json!({"tok": &build_jwt})),
        ResponseTemplate::new(200)
            .set_body_json(json!({"token": &build_jwt}))
            .set_delay(Duration::from_secs(10)),
    ];
    for answer in answers {
        server.reset().await;
        Mock::given(path("/v4/builds/42/token"))
            .respond_with(answer)
            .mount(&server)
            .await;
        match x.exchange(&start, 90).await {
            Ok(t) => {
                assert_eq!(t.expose_secret(), build_jwt);
                observed += &format!("{t:?}\n");
                tracing::info!(token = ?t, "exchanged");
            }
            Err(e) => {
                observed += &render(&e);
                tracing::error!(error = %e, debug = ?e, "exchange failed");
            }
        }
    }
    // Connect error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable =
        StartConfig::builder(42, format!("http://127.0.0.1:{port}"), "node:22", &temporal)
            .build()
            .unwrap();
    let e = x.exchange(&unreachable, 90).await.unwrap_err();
    observed += &render(&e);
    // Expired temporary token, opaque token.
    let expired = rs256(&claims("temporal", -30));
    let mut all_secrets = secrets.clone();
    all_secrets.extend(secrets_of(&[&expired]));
    let e = x
        .exchange(
            &StartConfig::builder(42, server.uri(), "node:22", &expired)
                .build()
                .unwrap(),
            90,
        )
        .await
        .unwrap_err();
    observed += &render(&e);
    let same = x
        .exchange(
            &StartConfig::builder(42, server.uri(), "node:22", opaque)
                .build()
                .unwrap(),
            90,
        )
        .await
        .unwrap();
    observed += &format!("{same:?}\n");
    // A returned token that fails verification.
    let verifying = TokenExchange::new(TokenExchangeOptions {
        verifier: Some(JwtVerifier::from_rsa_pem(&fixture("other_rsa_public.pem")).unwrap()),
        ..options()
    })
    .unwrap();
    server.reset().await;
    Mock::given(path("/v4/builds/42/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": &build_jwt})))
        .mount(&server)
        .await;
    let e = verifying.exchange(&start, 90).await.unwrap_err();
    observed += &render(&e);

    // JWT errors.
    let verifier = JwtVerifier::from_rsa_pem(&fixture("jwt_rsa_public.pem")).unwrap();
    for t in [&expired, &build_jwt, &temporal] {
        let token = secret(t);
        if let Err(e) = jwt::verify(
            &token,
            &JwtVerifier::from_rsa_pem(&fixture("other_rsa_public.pem")).unwrap(),
        ) {
            observed += &render(&e);
        }
        match jwt::verify(&token, &verifier) {
            Ok(c) => observed += &format!("{c:?}\n"),
            Err(e) => observed += &render(&e),
        }
    }
    let mut tampered = build_jwt.clone();
    tampered.push('x');
    all_secrets.extend(secrets_of(&[&tampered]));
    observed += &render(&jwt::verify(&secret(&tampered), &verifier).unwrap_err());
    observed += &render(&jwt::decode_unverified(&secret(&format!("{opaque}.x.y"))).unwrap_err());
    observed += &format!("{verifier:?}\n");

    drop(_guard);
    let logs = capture.text();
    assert!(
        logs.contains("exchange failed") && logs.contains("retrying"),
        "tracing was not captured:\n{logs}"
    );
    // The Screwdriver-mode command carries the token by contract, but its Debug hides it.
    assert!(spec.screwdriver().args[0].contains(&temporal));
    assert_clean("Debug/Display/errors", &observed, &all_secrets);
    assert_clean("tracing output", &logs, &all_secrets);
}

#[test]
fn start_and_stop_configs_never_serialize_the_token_unless_asked_by_name() {
    let start =
        executor_base::StartConfig::builder(42, "http://127.0.0.1:8080", "busybox", "sekrit-token")
            .build()
            .unwrap();
    for text in [
        serde_json::to_string(&start).unwrap(),
        start.to_json().to_string(),
        serde_json::to_string(&start.to_stop()).unwrap(),
        start.to_stop().to_json().to_string(),
    ] {
        assert!(!text.contains("sekrit-token"), "{text}");
        assert!(text.contains("\"buildId\":42"), "{text}");
    }
    assert_eq!(start.to_json_with_token()["token"], "sekrit-token");
    assert_eq!(
        start.to_stop().to_json_with_token()["token"],
        "sekrit-token"
    );
}
