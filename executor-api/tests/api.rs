//! The reference API through its router (`tower::ServiceExt::oneshot`), with a recording
//! fake executor: every endpoint and every error code path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use executor_api::keys::{Claims, SCOPE_BUILD, SCOPE_TEMPORAL, SCOPE_USER};
use executor_api::{
    ApiConfig, ApiState, BuildEvent, BuildStore, MemoryBuildStore, Shutdown, router,
};
use executor_base::secrecy::{ExposeSecret, SecretString};
use executor_base::testkit::fake::{FakeExecutor, Script};
use executor_base::{
    ApiBuildStatus, BuildStatus, BuildTimings, Error, ErrorKind, Executor, GcReport, StartConfig,
    Stats, StopConfig, TimerConfig, Verdict,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A fake executor that also records starts (with their tokens), stops and timer calls.
#[derive(Debug)]
struct Recorder {
    fake: FakeExecutor,
    starts: Mutex<Vec<StartConfig>>,
    log: Mutex<Vec<String>>,
}

#[async_trait]
impl Executor for Recorder {
    fn name(&self) -> &str {
        "fake"
    }
    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        self.fake.start(build).await?;
        self.starts.lock().push(build.clone());
        self.log.lock().push(format!("start {}", build.build_id));
        Ok(())
    }
    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        self.log.lock().push(format!("stop {}", build.build_id));
        self.fake.stop(build).await
    }
    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        self.fake.verify(build).await
    }
    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        self.fake.status(build).await
    }
    fn stats(&self) -> Stats {
        self.fake.stats()
    }
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        self.fake.gc(dry_run).await
    }
    async fn cleanup(&self) -> Result<(), Error> {
        self.fake.cleanup().await
    }
    async fn start_timer(&self, t: &TimerConfig) -> Result<(), Error> {
        self.log
            .lock()
            .push(format!("start_timer {} {}", t.build_id, t.build_status));
        Ok(())
    }
    async fn stop_timer(&self, build: &StopConfig) -> Result<(), Error> {
        self.log
            .lock()
            .push(format!("stop_timer {}", build.build_id));
        Ok(())
    }
    async fn timings(&self, build: &StopConfig) -> Result<Option<BuildTimings>, Error> {
        self.log.lock().push(format!("timings {}", build.build_id));
        Ok(Some(recorded_timings()))
    }
}

/// What the recorder reports as every build's timings.
fn recorded_timings() -> BuildTimings {
    let t0 = chrono::DateTime::from_timestamp_millis(1_764_700_000_000).unwrap();
    BuildTimings {
        accepted: Some(t0),
        running: Some(t0 + chrono::Duration::milliseconds(1_250)),
        finished: Some(t0 + chrono::Duration::seconds(5)),
        peak_memory_bytes: Some(42 << 20),
        ..BuildTimings::default()
    }
}

fn test_config() -> ApiConfig {
    ApiConfig {
        user_token: Some(SecretString::from("admin-token")),
        status_poll_ms: 20,
        lost_after_polls: 2,
        final_exit_wait_ms: 200,
        ..ApiConfig::default()
    }
}

struct Harness {
    state: ApiState,
    exec: Arc<Recorder>,
    app: axum::Router,
}

impl Harness {
    /// Short polls and a short wait for launch's exit after a final status (the default
    /// wait is covered by `a_final_status_from_launch_lets_the_build_end_before_anything_is_stopped`).
    async fn new() -> Self {
        Self::with(test_config()).await
    }

    async fn with(config: ApiConfig) -> Self {
        Self::build(config, Arc::new(MemoryBuildStore::new())).await
    }

    async fn on_store(store: Arc<dyn BuildStore>) -> Self {
        Self::build(test_config(), store).await
    }

    async fn build(config: ApiConfig, store: Arc<dyn BuildStore>) -> Self {
        let exec = Arc::new(Recorder {
            fake: FakeExecutor::new(),
            starts: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let state = ApiState::builder(exec.clone(), config)
            .store(store)
            .build()
            .await
            .unwrap();
        let app = router(state.clone());
        Self { state, exec, app }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.call(method, path, token, Some(&body.to_string()))
            .await
    }

    /// Submits a two-step build and returns its id.
    async fn submit(&self) -> u64 {
        let (s, v) = self
            .json(
                "POST",
                "/v4/builds",
                Some("admin-token"),
                json!({"steps": [{"name": "one", "command": "true"}, {"name": "two", "command": "true"}], "jobId": 7}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_u64().unwrap()
    }

    /// The temporary token the executor received for build `id`.
    async fn temporal_token(&self, id: u64) -> String {
        for _ in 0..500 {
            if let Some(c) = self
                .exec
                .starts
                .lock()
                .iter()
                .find(|c| c.build_id.get() == id)
            {
                return c.token.expose_secret().to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("build {id} was never started on the executor");
    }

    fn mint(&self, claims: &Claims) -> String {
        self.state.issuer().mint(claims).unwrap()
    }

    async fn status_of(&self, id: u64) -> String {
        let (_, v) = self
            .call(
                "GET",
                &format!("/v4/builds/{id}"),
                Some("admin-token"),
                None,
            )
            .await;
        v["status"].as_str().unwrap_or_default().to_string()
    }

    async fn wait_for_log(&self, entry: &str) {
        for _ in 0..500 {
            if self.exec.log.lock().iter().any(|l| l == entry) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("executor never saw {entry:?}: {:?}", self.exec.log.lock());
    }

    async fn wait_for_status(&self, id: u64, status: &str) -> Value {
        for _ in 0..500 {
            let (_, v) = self
                .call(
                    "GET",
                    &format!("/v4/builds/{id}"),
                    Some("admin-token"),
                    None,
                )
                .await;
            if v["status"] == status {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("build {id} never reached {status}");
    }
}

fn assert_error(v: &Value, status: StatusCode, message_part: &str) {
    assert_eq!(v["statusCode"], status.as_u16(), "{v}");
    assert_eq!(v["error"], status.canonical_reason().unwrap(), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains(message_part),
        "{v} lacks {message_part:?}"
    );
}

#[tokio::test]
async fn submission_answers_201_and_the_build_is_dispatched_with_a_temporal_token() {
    let h = Harness::new().await;
    let mut events = h.state.subscribe();
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds",
            Some("admin-token"),
            json!({"steps": [{"name": "hello", "command": "echo hi"}], "executor": "fake", "environment": {"X": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_u64().unwrap();
    let token = h.temporal_token(id).await;
    let claims = h.state.issuer().verify(&token).unwrap();
    assert_eq!(claims.username, id.to_string());
    assert_eq!(claims.scope, [SCOPE_TEMPORAL]);
    assert_eq!(claims.job_id, Some(1));
    let started = h.exec.starts.lock()[0].clone();
    assert_eq!(started.api_uri.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(started.container.as_str(), "busybox:latest");
    assert_eq!(started.annotations.executor(), Some("fake"));
    assert!(!format!("{started:?}").contains(&token));

    let (s, b) = h
        .call(
            "GET",
            &format!("/v4/builds/{id}"),
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["state"], "wait");
    assert_eq!(b["status"], "QUEUED");
    assert_eq!(b["steps"][0]["name"], "hello");
    assert_eq!(b["steps"][0]["command"], "echo hi");
    assert_eq!(b["environment"]["X"], "1");
    let (s, list) = h.call("GET", "/v4/builds", Some("admin-token"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list,
        json!([{"id": id, "state": "wait", "status": "QUEUED"}])
    );
    match events.recv().await.unwrap() {
        BuildEvent::Status {
            build_id,
            status,
            state,
            ..
        } => {
            assert_eq!(
                (build_id, status, state),
                (id, ApiBuildStatus::Queued, "wait")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn submission_errors_are_json() {
    let h = Harness::new().await;
    let (s, v) = h.call("POST", "/v4/builds", None, Some("{}")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, s, "Missing authentication");
    let (s, v) = h
        .call("POST", "/v4/builds", Some("wrong"), Some("{}"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, s, "Invalid token");
    let (s, v) = h
        .call("POST", "/v4/builds", Some("admin-token"), Some("{not json"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "Invalid JSON body");
    let (s, v) = h
        .call("POST", "/v4/builds", Some("admin-token"), Some("[1]"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "must be a JSON object");
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds",
            Some("admin-token"),
            json!({"steps": [{"name": "a b"}], "container": "Bad Image"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&v, s, "steps[0].name");
    let fields: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["container", "steps[0].name", "steps[0].command"]);

    let body = json!({"id": 500, "steps": [{"name": "a", "command": "true"}]});
    let (s, v) = h
        .json("POST", "/v4/builds", Some("admin-token"), body.clone())
        .await;
    assert_eq!((s, v["id"].as_u64()), (StatusCode::CREATED, Some(500)));
    let (s, v) = h
        .json("POST", "/v4/builds", Some("admin-token"), body)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, s, "Build 500 already exists");

    let build_token = h.mint(&Claims::for_build(500, SCOPE_BUILD, 5));
    let (s, v) = h
        .json("POST", "/v4/builds", Some(&build_token), json!({}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Insufficient scope");
    let (s, _) = h.call("GET", "/v4/builds", Some(&build_token), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ids_outside_1_to_2_pow_53_are_422_not_a_panic() {
    // Before: "id": 18446744073709551615 overflowed the id counter and the handler panicked.
    let h = Harness::new().await;
    for bad in [
        json!(18446744073709551615u64),
        json!(9007199254740993u64),
        json!(0),
        json!(-1),
        json!("18446744073709551615"),
    ] {
        let (s, v) = h
            .json(
                "POST",
                "/v4/builds",
                Some("admin-token"),
                json!({"id": bad, "steps": [{"name": "a", "command": "true"}]}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_eq!(v["fields"][0]["field"], "id", "{v}");
    }
    for (field, bad) in [("jobId", json!(1u64 << 60)), ("eventId", json!(0))] {
        let (s, v) = h
            .json(
                "POST",
                "/v4/builds",
                Some("admin-token"),
                json!({field: bad, "steps": [{"name": "a", "command": "true"}]}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["fields"][0]["field"], field, "{v}");
    }
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds",
            Some("admin-token"),
            json!({"id": 9007199254740992u64, "steps": [{"name": "a", "command": "true"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The API still answers.
    assert_eq!(h.status_of(9007199254740992).await, "QUEUED");
}

#[tokio::test]
async fn unknown_fields_are_refused_naming_the_field_and_the_closest_one() {
    // Before: "anotations" was silently dropped and the build ran without them.
    let h = Harness::new().await;
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds",
            Some("admin-token"),
            json!({"anotations": {"screwdriver.cd/cpu": "HIGH"}, "steps": [{"name": "a", "command": "true", "comand": "x"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["fields"],
        json!([
            {"field": "anotations", "reason": "unknown field; did you mean \"annotations\"?"},
            {"field": "steps[0].comand", "reason": "unknown field; did you mean \"command\"?"},
        ])
    );
    assert!(h.exec.starts.lock().is_empty(), "nothing was started");

    let id = h.submit().await;
    let (s, v) = h
        .json(
            "PUT",
            &format!("/v4/builds/{id}"),
            Some("admin-token"),
            json!({"status": "ABORTED", "statusMesage": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["fields"][0]["field"], "statusMesage");
    assert!(
        v["fields"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("statusMessage")
    );
    assert_eq!(
        h.status_of(id).await,
        "QUEUED",
        "a refused update changes nothing"
    );
    let build_token = h.mint(&Claims::for_build(id, SCOPE_BUILD, 5));
    let (s, v) = h
        .json(
            "PUT",
            &format!("/v4/builds/{id}/steps/one"),
            Some(&build_token),
            json!({"startTime": "2025-01-01T00:00:00Z", "starttime": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["fields"][0]["field"], "starttime");
    let (s, v) = h
        .json(
            "POST",
            &format!("/v4/builds/{id}/steps/one/logs"),
            Some(&build_token),
            json!([{"t": 1, "m": "x", "n": 0, "msg": "y"}]),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["fields"][0]["field"], "[0].msg");
    let temporal = h.temporal_token(id).await;
    let (s, v) = h
        .json(
            "POST",
            &format!("/v4/builds/{id}/token"),
            Some(&temporal),
            json!({"buildTimout": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("buildTimeout"),
        "{v}"
    );
}

#[tokio::test]
async fn reserved_sd_variables_cannot_be_set_by_the_environment() {
    // Before: "environment": {"SD_TOKEN": ...} overrode the build's own token in its steps.
    let h = Harness::new().await;
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds",
            Some("admin-token"),
            json!({"environment": {"SD_TOKEN": "x", "SD_API_URL": "http://evil/", "OK": "1"},
                   "steps": [{"name": "a", "command": "true"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let fields: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["environment.SD_API_URL", "environment.SD_TOKEN"]);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_json() {
    // Before: axum's plain-text "length limit exceeded".
    let h = Harness::new().await;
    let big = format!(
        "{{\"steps\": [{{\"name\": \"a\", \"command\": \"{}\"}}]}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let (s, v) = h
        .call("POST", "/v4/builds", Some("admin-token"), Some(&big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, s, "");
}

#[tokio::test]
async fn token_exchange_follows_upstream_rules() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let other = h.submit().await;
    let temporal = h.temporal_token(id).await;
    let path = format!("/v4/builds/{id}/token");

    let (s, v) = h
        .json("POST", &path, None, json!({"buildTimeout": 60}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, s, "Missing authentication");
    let expired = h.mint(&Claims::for_build(id, SCOPE_TEMPORAL, -10));
    let (s, v) = h
        .json("POST", &path, Some(&expired), json!({"buildTimeout": 60}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, s, "token expired");
    let forged = executor_api::TokenIssuer::generate()
        .unwrap()
        .mint(&Claims::for_build(id, SCOPE_TEMPORAL, 10))
        .unwrap();
    let (s, v) = h
        .json("POST", &path, Some(&forged), json!({"buildTimeout": 60}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, s, "invalid token signature");
    let build_scope = h.mint(&Claims::for_build(id, SCOPE_BUILD, 10));
    let (s, v) = h
        .json(
            "POST",
            &path,
            Some(&build_scope),
            json!({"buildTimeout": 60}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "temporal");
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds/999/token",
            Some(&temporal),
            json!({"buildTimeout": 60}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Build does not exist");
    let (s, v) = h
        .json(
            "POST",
            &format!("/v4/builds/{other}/token"),
            Some(&temporal),
            json!({"buildTimeout": 60}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Build Id parameter and token does not match");
    let (s, v) = h
        .json(
            "POST",
            &path,
            Some(&temporal),
            json!({"buildTimeout": "soon"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "Invalid buildTimeout value");
    let (s, v) = h
        .call("POST", "/v4/builds/abc/token", Some(&temporal), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "id: must be a positive integer");

    let (s, v) = h
        .json("POST", &path, Some(&temporal), json!({"buildTimeout": 60}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let build_token = v["token"].as_str().unwrap().to_string();
    let c = h.state.issuer().verify(&build_token).unwrap();
    assert_eq!(c.scope, [SCOPE_BUILD]);
    assert_eq!(c.username, id.to_string());
    assert_eq!(c.job_id, Some(7));
    let lifetime = c.exp - c.iat;
    assert_eq!(lifetime, 3600);
    // A null buildTimeout gets the policy's timeout plus the 30-minute buffer.
    let (s, v) = h.call("POST", &path, Some(&temporal), None).await;
    assert_eq!(s, StatusCode::OK);
    let c = h
        .state
        .issuer()
        .verify(v["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(c.exp - c.iat, 120 * 60);

    let (s, _) = h
        .json(
            "PUT",
            &format!("/v4/builds/{id}"),
            Some(&build_token),
            json!({"status": "RUNNING"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .json("POST", &path, Some(&temporal), json!({"buildTimeout": 60}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Build is already running or finished.");
}

#[tokio::test]
async fn launch_flow_runs_timers_and_stops_the_executor_at_the_end() {
    let h = Harness::new().await;
    let id = h.submit().await;
    h.temporal_token(id).await;
    let token = h.mint(&Claims::for_build(id, SCOPE_BUILD, 10));
    let b = format!("/v4/builds/{id}");
    let mut events = h.state.subscribe();

    let (s, v) = h
        .json(
            "PUT",
            &b,
            Some(&token),
            json!({"status": "RUNNING", "meta": {"a": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["state"].as_str()),
        (Some("RUNNING"), Some("build"))
    );
    assert!(v["startTime"].is_string());
    h.wait_for_log(&format!("start_timer {id} RUNNING")).await;
    let (s, v) = h
        .json("PUT", &b, Some(&token), json!({"status": "RUNNING"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Can not update status to RUNNING");

    let step = format!("{b}/steps/one");
    let (s, v) = h
        .json(
            "PUT",
            &step,
            Some(&token),
            json!({"startTime": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h
        .json(
            "POST",
            &format!("{step}/logs"),
            Some(&token),
            json!([{"t": 1, "m": "line 0", "n": 0}, {"t": 2, "m": "line 1", "n": 1}]),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // A retried batch is not stored twice.
    let (s, _) = h
        .json(
            "POST",
            &format!("{step}/logs"),
            Some(&token),
            json!([{"t": 2, "m": "line 1", "n": 1}, {"t": 3, "m": "line 2", "n": 2}]),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, lines) = h
        .call(
            "GET",
            &format!("{step}/logs?from=1"),
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        lines,
        json!([{"t": 2, "m": "line 1", "n": 1}, {"t": 3, "m": "line 2", "n": 2}])
    );
    let (s, v) = h
        .json(
            "PUT",
            &step,
            Some(&token),
            json!({"endTime": "2026-01-01T00:00:01Z", "code": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["code"].as_i64(), v["lines"].as_u64()),
        (Some(0), Some(3))
    );
    let (s, steps) = h
        .call("GET", &format!("{b}/steps"), Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(steps.as_array().unwrap().len(), 2);

    let (s, v) = h
        .json("PUT", &b, Some(&token), json!({"status": "SUCCESS"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "done");
    assert!(v["endTime"].is_string());
    h.wait_for_log(&format!("stop_timer {id}")).await;
    let log = h.exec.log.lock().clone();
    let stop = log.iter().position(|l| *l == format!("stop {id}")).unwrap();
    let stop_timer = log
        .iter()
        .position(|l| *l == format!("stop_timer {id}"))
        .unwrap();
    assert!(stop < stop_timer, "stop, then stop_timer: {log:?}");

    let (s, v) = h
        .json("PUT", &b, Some(&token), json!({"status": "FAILURE"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "already SUCCESS");
    let (s, _) = h.json("PUT", &step, Some(&token), json!({"code": 1})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(match e {
            BuildEvent::Status { status, .. } => format!("status {status}"),
            BuildEvent::StepStarted { step, .. } => format!("started {step}"),
            BuildEvent::StepFinished { step, code, .. } => format!("finished {step} {code}"),
            BuildEvent::Log { lines, .. } => format!("log {}", lines.len()),
        });
    }
    assert_eq!(
        seen,
        [
            "status RUNNING",
            "started one",
            "log 2",
            "log 1",
            "finished one 0",
            "status SUCCESS"
        ]
    );
}

#[tokio::test]
async fn update_rules_by_caller() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let other = h.submit().await;
    let b = format!("/v4/builds/{id}");
    let token = h.mint(&Claims::for_build(id, SCOPE_BUILD, 10));
    let foreign = h.mint(&Claims::for_build(other, SCOPE_BUILD, 10));
    let mut user = Claims::for_build(1, SCOPE_USER, 10);
    user.username = "alice".into();
    let user = h.mint(&user);

    let (s, v) = h
        .json("PUT", &b, Some(&foreign), json!({"status": "FAILURE"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, &format!("Credential only valid for {other}"));
    let (s, v) = h.call("GET", &b, Some(&foreign), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Credential only valid for");
    let (s, v) = h
        .json("PUT", &b, Some(&token), json!({"status": "QUEUED"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Can not update status to QUEUED");
    let (s, v) = h
        .json("PUT", &b, Some(&token), json!({"status": "DONE"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "status: unknown status");
    let (s, v) = h.json("PUT", &b, Some(&token), json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "Nothing to update");
    let (s, _) = h
        .json("PUT", &b, Some(&token), json!({"statusMessage": 5}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h
        .json("PUT", &b, Some(&user), json!({"status": "SUCCESS"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Users may only set the status ABORTED");
    let (s, v) = h
        .json("PUT", &b, Some("admin-token"), json!({"status": "SUCCESS"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "administrators may set ABORTED or FAILURE");
    let (s, v) = h
        .json(
            "PUT",
            "/v4/builds/999",
            Some("admin-token"),
            json!({"status": "ABORTED"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Build does not exist");
    let (s, v) = h
        .json("PUT", &b, Some(&user), json!({"status": "ABORTED"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["statusMessage"].as_str()),
        (Some("ABORTED"), Some("Aborted by user"))
    );
    h.wait_for_log(&format!("stop {id}")).await;
}

#[tokio::test]
async fn step_and_log_errors() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let token = h.mint(&Claims::for_build(id, SCOPE_BUILD, 10));
    let mut user = Claims::for_build(1, SCOPE_USER, 10);
    user.username = "bob".into();
    let user = h.mint(&user);
    let step = format!("/v4/builds/{id}/steps/one");

    let (s, v) = h
        .json(
            "PUT",
            &format!("/v4/builds/{id}/steps/nope"),
            Some(&token),
            json!({"code": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Step does not exist");
    let (s, v) = h
        .call(
            "GET",
            &format!("/v4/builds/{id}/steps/nope"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Step does not exist");
    let (s, v) = h
        .json(
            "PUT",
            &step,
            Some(&token),
            json!({"startTime": "yesterday"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "startTime: must be an ISO 8601 time");
    let (s, v) = h
        .json("PUT", &step, Some(&token), json!({"code": "zero"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "code: must be an integer");
    let (s, _) = h.json("PUT", &step, Some(&token), json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h.json("PUT", &step, Some(&user), json!({"code": 0})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, s, "Insufficient scope");
    let (s, v) = h
        .json(
            "POST",
            &format!("{step}/logs"),
            Some(&token),
            json!({"m": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "array");
    let (s, v) = h
        .json(
            "POST",
            &format!("{step}/logs"),
            Some(&token),
            json!([{"m": 1, "n": 0}]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "[0].m: must be a string");
    let (s, v) = h
        .json(
            "POST",
            &format!("{step}/logs"),
            Some(&token),
            json!([{"m": "x", "n": -1}]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "[0].n");
    let (s, v) = h
        .call("GET", &format!("{step}/logs?from=x"), Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "from: must be a line number");
    let (s, v) = h
        .call(
            "GET",
            "/v4/builds/999/steps/one/logs",
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Build does not exist");
    let (s, v) = h
        .call("GET", "/v4/builds/abc", Some("admin-token"), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, s, "id: must be a positive integer");
    for bad in ["0", "9007199254740993", "18446744073709551616"] {
        let (s, v) = h
            .call(
                "GET",
                &format!("/v4/builds/{bad}"),
                Some("admin-token"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_error(&v, s, "id: must be an integer from 1 to 9007199254740992");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_and_public_endpoints_answer() {
    let h = Harness::new().await;
    let (s, v) = h.call("GET", "/nowhere", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, s, "Not Found");
    let (s, v) = h
        .call("DELETE", "/v4/builds", Some("admin-token"), None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&v, s, "Method Not Allowed");
    let (s, v) = h.call("GET", "/v4/status", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, json!("OK")));
    let (s, v) = h.call("GET", "/v4/auth/key", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let point = executor_base::jwt::pem::public_key(
        v["key"].as_str().unwrap().as_bytes(),
        executor_base::jwt::pem::KeyFamily::Ec,
    )
    .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_der(&point);
    let t = h.mint(&Claims::for_build(3, SCOPE_BUILD, 5));
    let claims: Claims = jsonwebtoken::decode(
        &t,
        &key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256),
    )
    .unwrap()
    .claims;
    assert_eq!(claims.username, "3");
}

#[tokio::test]
async fn a_refused_start_fails_the_build_and_stops_it() {
    let h = Harness::new().await;
    h.exec.fake.refuse_start(ErrorKind::ImagePull);
    let id = h.submit().await;
    let v = h.wait_for_status(id, "FAILURE").await;
    let msg = v["statusMessage"].as_str().unwrap();
    assert!(
        msg.starts_with("Failed to start build by executor error"),
        "{msg}"
    );
    assert_eq!(v["state"], "failed");
    h.wait_for_log(&format!("stop {id}")).await;
}

#[tokio::test]
async fn a_build_that_ends_on_the_engine_without_reporting_gets_the_engines_outcome() {
    // Before: every such build was FAILURE, a success included.
    let h = Harness::new().await;
    h.exec
        .fake
        .set_default_script(Script::succeed_after(Duration::from_millis(5)));
    let ok = h.submit().await;
    let v = h.wait_for_status(ok, "SUCCESS").await;
    let msg = v["statusMessage"].as_str().unwrap();
    assert!(msg.contains("launch could not report"), "{msg}");
    h.exec.fake.set_default_script(Script::finish_after(
        Duration::from_millis(5),
        BuildStatus::exited(4),
    ));
    let failed = h.submit().await;
    let v = h.wait_for_status(failed, "FAILURE").await;
    let msg = v["statusMessage"].as_str().unwrap();
    assert!(
        msg.contains("launch ended without reporting a final status"),
        "{msg}"
    );
    h.exec
        .fake
        .set_default_script(Script::lost_after(Duration::from_millis(5)));
    let lost = h.submit().await;
    h.wait_for_status(lost, "FAILURE").await;
}

#[tokio::test]
async fn a_concluded_build_keeps_the_timings_its_executor_reported_before_the_stop() {
    let h = Harness::new().await;
    h.exec
        .fake
        .set_default_script(Script::succeed_after(Duration::from_millis(5)));
    let id = h.submit().await;
    h.wait_for_status(id, "SUCCESS").await;
    h.wait_for_log(&format!("stop {id}")).await;
    // Asked before the stop that removes what the engine knows.
    let log = h.exec.log.lock().clone();
    let asked = log.iter().position(|l| *l == format!("timings {id}"));
    let stopped = log.iter().position(|l| *l == format!("stop {id}"));
    assert!(asked.is_some() && asked < stopped, "{log:?}");
    let mut timings = Value::Null;
    for _ in 0..500 {
        let (_, v) = h
            .call(
                "GET",
                &format!("/v4/builds/{id}"),
                Some("admin-token"),
                None,
            )
            .await;
        timings = v["timings"].clone();
        if !timings.as_object().is_none_or(|o| o.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        timings,
        json!({
            "accepted": "2025-12-02T18:26:40Z",
            "running": "2025-12-02T18:26:41.250Z",
            "finished": "2025-12-02T18:26:45Z",
            "peakMemoryBytes": 44040192u64,
        })
    );
    assert_eq!(
        serde_json::from_value::<BuildTimings>(timings).unwrap(),
        recorded_timings()
    );
}

#[tokio::test]
async fn shutdown_with_cancel_on_exit_aborts_open_builds_and_cleans_up() {
    let h = Harness::new().await;
    let id = h.submit().await;
    h.temporal_token(id).await;
    h.state
        .shutdown(Shutdown::CancelOpen, Duration::from_secs(5))
        .await;
    let b = h.state.build_json(id).await.unwrap();
    assert_eq!(
        (b["status"].as_str(), b["statusMessage"].as_str()),
        (Some("ABORTED"), Some("The API shut down"))
    );
    assert!(h.exec.log.lock().contains(&format!("stop {id}")));
    assert!(h.exec.fake.live_builds().is_empty());
    let (s, v) = h
        .json(
            "POST",
            "/v4/builds",
            Some("admin-token"),
            json!({"steps": [{"name": "a", "command": "true"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

#[tokio::test]
async fn shutdown_leaves_builds_running_and_the_next_state_adopts_them() {
    // Before: every shutdown aborted every running build.
    let store: Arc<dyn BuildStore> = Arc::new(MemoryBuildStore::new());
    let h = Harness::on_store(store.clone()).await;
    let id = h.submit().await;
    h.temporal_token(id).await;
    h.state
        .shutdown(Shutdown::LeaveRunning, Duration::from_secs(5))
        .await;
    assert!(!h.exec.log.lock().contains(&format!("stop {id}")));
    assert_eq!(h.exec.fake.live_builds().len(), 1);
    assert_eq!(h.state.build_json(id).await.unwrap()["status"], "QUEUED");
    // The next server on the same store and engine watches it again: when the engine
    // says it ended, the outcome is recorded.
    let next = ApiState::builder(h.exec.clone(), test_config())
        .store(store)
        .build()
        .await
        .unwrap();
    assert_eq!(next.adopt_own().await.unwrap().len(), 1);
    h.exec
        .fake
        .set_status(
            executor_base::BuildId::new(id).unwrap(),
            BuildStatus::exited(1),
        )
        .unwrap();
    for _ in 0..500 {
        if next.is_settled(id).await == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = next.build(id).await.unwrap();
    assert_eq!(b.status, ApiBuildStatus::Failure);
    assert!(b.settled);
    assert_eq!(
        h.exec
            .log
            .lock()
            .iter()
            .filter(|l| *l == &format!("start {id}"))
            .count(),
        1,
        "adoption never starts a build twice"
    );
}

/// Adopts `id` on a fresh state over `store` and the same engine, after the engine was
/// made to say `engine` about it; returns the new state.
async fn adopt_after(
    h: &Harness,
    store: Arc<dyn BuildStore>,
    id: u64,
    engine: BuildStatus,
) -> ApiState {
    h.state
        .shutdown(Shutdown::LeaveRunning, Duration::from_secs(5))
        .await;
    assert_eq!(h.state.build_json(id).await.unwrap()["status"], "QUEUED");
    h.exec
        .fake
        .set_status(executor_base::BuildId::new(id).unwrap(), engine)
        .unwrap();
    let next = ApiState::builder(h.exec.clone(), test_config())
        .store(store)
        .build()
        .await
        .unwrap();
    assert_eq!(
        next.adopt_own().await.unwrap(),
        [executor_base::BuildId::new(id).unwrap()]
    );
    next
}

fn starts_of(h: &Harness, id: u64) -> usize {
    h.exec
        .log
        .lock()
        .iter()
        .filter(|l| *l == &format!("start {id}"))
        .count()
}

#[tokio::test]
async fn adoption_starts_again_a_build_whose_start_never_ran_anything() {
    // Before: a server killed inside the executor's start left the build FAILURE ("launch
    // was never spawned") although nothing of it ran.
    let store: Arc<dyn BuildStore> = Arc::new(MemoryBuildStore::new());
    let h = Harness::on_store(store.clone()).await;
    let id = h.submit().await;
    h.temporal_token(id).await;
    let never = BuildStatus::lost(Some(false), "launch was never spawned: interrupted");
    let next = adopt_after(&h, store, id, never).await;
    for _ in 0..500 {
        if starts_of(&h, id) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(starts_of(&h, id), 2, "started again exactly once");
    // It runs again: open until the engine says how it ended, then that outcome.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(next.build(id).await.unwrap().status, ApiBuildStatus::Queued);
    h.exec
        .fake
        .set_status(
            executor_base::BuildId::new(id).unwrap(),
            BuildStatus::succeeded(),
        )
        .unwrap();
    for _ in 0..500 {
        if next.is_settled(id).await == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = next.build(id).await.unwrap();
    assert_eq!(b.status, ApiBuildStatus::Success, "{:?}", b.status_message);
    assert_eq!(starts_of(&h, id), 2);
}

#[tokio::test]
async fn adoption_never_starts_again_a_build_that_may_have_run() {
    // The twin: lost with its process started (or unknown) is concluded, never re-run.
    let store: Arc<dyn BuildStore> = Arc::new(MemoryBuildStore::new());
    let h = Harness::on_store(store.clone()).await;
    let id = h.submit().await;
    h.temporal_token(id).await;
    let lost = BuildStatus::lost(Some(true), "the build's resources vanished");
    let next = adopt_after(&h, store, id, lost).await;
    for _ in 0..500 {
        if next.is_settled(id).await == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = next.build(id).await.unwrap();
    assert_eq!(b.status, ApiBuildStatus::Failure);
    assert_eq!(
        starts_of(&h, id),
        1,
        "a build that may have run is never run again"
    );
}

#[tokio::test]
async fn a_start_refused_as_already_exists_never_stops_the_live_build() {
    // Before: the failed start was followed by a stop, which killed the other build.
    let h = Harness::new().await;
    h.exec.fake.refuse_start(ErrorKind::AlreadyExists);
    let id = h.submit().await;
    let v = h.wait_for_status(id, "FAILURE").await;
    assert!(
        v["statusMessage"].as_str().unwrap().contains("left alone"),
        "{v}"
    );
    for _ in 0..50 {
        if h.state.is_settled(id).await == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.state.is_settled(id).await, Some(true));
    assert!(
        !h.exec.log.lock().contains(&format!("stop {id}")),
        "{:?}",
        h.exec.log.lock()
    );
}

#[tokio::test]
async fn a_duplicate_submission_is_409_and_changes_nothing() {
    let h = Harness::new().await;
    let body = json!({"id": 500, "steps": [{"name": "a", "command": "true"}]});
    let (s, _) = h
        .json("POST", "/v4/builds", Some("admin-token"), body.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED);
    h.temporal_token(500).await;
    let before = h.state.build_json(500).await.unwrap();
    let (s, v) = h
        .json("POST", "/v4/builds", Some("admin-token"), body)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_error(&v, StatusCode::CONFLICT, "Build 500 already exists");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = h.state.build_json(500).await.unwrap();
    assert_eq!(before["createTime"], after["createTime"]);
    assert_eq!(h.exec.starts.lock().len(), 1);
    assert!(!h.exec.log.lock().contains(&"stop 500".to_string()));
    // The sequence moved past the client's id.
    assert_eq!(h.submit().await, 501);
}

#[tokio::test]
async fn a_final_status_from_launch_lets_the_build_end_before_anything_is_stopped() {
    // Before: the API stopped the build on every final status, so the executor reported
    // "canceled" for a build that succeeded. Default wait for launch's exit.
    let h = Harness::with(ApiConfig {
        final_exit_wait_ms: ApiConfig::default().final_exit_wait_ms,
        ..test_config()
    })
    .await;
    let id = h.submit().await;
    let temporal = h.temporal_token(id).await;
    let (_, v) = h
        .json(
            "POST",
            &format!("/v4/builds/{id}/token"),
            Some(&temporal),
            json!({}),
        )
        .await;
    let token = v["token"].as_str().unwrap().to_string();
    let bid = executor_base::BuildId::new(id).unwrap();
    for status in ["RUNNING", "SUCCESS"] {
        let (s, v) = h
            .json(
                "PUT",
                &format!("/v4/builds/{id}"),
                Some(&token),
                json!({"status": status}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // launch exits 0 a moment later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.exec
        .fake
        .set_status(bid, BuildStatus::succeeded())
        .unwrap();
    h.wait_for_log(&format!("stop_timer {id}")).await;
    // The stop that follows only removes what the ended build left on the engine: the
    // executor's outcome stays Succeeded (a stop while launch was exiting made it Canceled).
    assert_eq!(
        h.exec
            .fake
            .status(&StopConfig::new(bid))
            .await
            .unwrap()
            .phase,
        executor_base::Phase::Succeeded
    );
    assert!(h.state.wait_settled(id, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_server_on_loopback_serves_the_same_router() {
    let exec: Arc<dyn Executor> = Arc::new(FakeExecutor::new());
    let server =
        executor_api::ApiServer::start(exec, ApiConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert_eq!(server.state().api_uri(), server.url());
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /v4/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("OK"),
        "{out}"
    );
    server
        .shutdown(Shutdown::LeaveRunning, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn adoption_replays_what_launch_spooled_for_a_build_that_ended_meanwhile() {
    use sd_launch::spool::{Entry, Spool};
    let store: Arc<dyn BuildStore> = Arc::new(MemoryBuildStore::new());
    let h = Harness::on_store(store.clone()).await;
    let id = h.submit().await;
    let temporal = h.temporal_token(id).await;
    let (_, v) = h
        .json(
            "POST",
            &format!("/v4/builds/{id}/token"),
            Some(&temporal),
            json!({}),
        )
        .await;
    let token = v["token"].as_str().unwrap().to_string();
    let (s, _) = h
        .json(
            "PUT",
            &format!("/v4/builds/{id}"),
            Some(&token),
            json!({"status": "RUNNING"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    h.state
        .shutdown(Shutdown::LeaveRunning, Duration::from_secs(5))
        .await;
    // While no API ran, launch ran both steps, spooled every report and exited 0.
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool.jsonl"));
    for e in [
        Entry::StepStart {
            step: "one".into(),
            start_time: "2025-01-01T00:00:00.000Z".into(),
        },
        Entry::Logs {
            step: "one".into(),
            lines: vec![sd_launch::api::LogLine {
                t: 1,
                m: "hello".into(),
                n: 0,
            }],
        },
        Entry::StepEnd {
            step: "one".into(),
            end_time: "2025-01-01T00:00:01.000Z".into(),
            code: 0,
        },
        Entry::Status {
            status: "SUCCESS".into(),
            message: None,
        },
    ] {
        spool.append(&e).unwrap();
    }
    let bid = executor_base::BuildId::new(id).unwrap();
    h.exec
        .fake
        .set_status(bid, BuildStatus::succeeded())
        .unwrap();
    let path = spool.path().to_path_buf();
    let next = ApiState::builder(h.exec.clone(), test_config())
        .store(store)
        .spool(Arc::new(move |_| Some(path.clone())))
        .build()
        .await
        .unwrap();
    next.adopt_own().await.unwrap();
    assert!(next.wait_settled(id, Duration::from_secs(5)).await);
    let b = next.build_json(id).await.unwrap();
    assert_eq!(b["status"], "SUCCESS", "{b}");
    assert_eq!(b["steps"][0]["code"], 0);
    assert_eq!(b["steps"][0]["lines"], 1);
    assert_eq!(
        h.exec
            .fake
            .status(&StopConfig::new(executor_base::BuildId::new(id).unwrap()))
            .await
            .unwrap()
            .phase,
        executor_base::Phase::Succeeded,
        "the cleanup stop keeps the ended build's outcome"
    );
}
