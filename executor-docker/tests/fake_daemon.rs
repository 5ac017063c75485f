//! The executor against a fake Docker Engine API (wiremock over HTTP): failures the real
//! daemon does not produce on demand. Runs everywhere, no daemon needed.

use std::time::Duration;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::{ErrorKind, Executor, Phase, StartConfig};
use executor_docker::{DockerExecutor, DockerExecutorBuilder, PullPolicy, TokenMode};
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "fake-daemon-secret-token";

fn retry(n: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries: n,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        multiplier: 2.0,
        jitter: false,
        budget: None,
    }
}

/// A daemon answering version/info/volume/container calls successfully.
async fn daemon() -> MockServer {
    let server = MockServer::start().await;
    let ok = |p: &str, m: &str, status: u16, body: serde_json::Value| {
        Mock::given(method(m))
            .and(path_regex(p))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
    };
    ok(
        r"/version$",
        "GET",
        200,
        json!({"ApiVersion": "1.41", "Version": "20.10.24"}),
    )
    .mount(&server)
    .await;
    ok(r"/info$", "GET", 200, json!({"NCPU": 2}))
        .mount(&server)
        .await;
    ok(
        r"/containers/create$",
        "POST",
        201,
        json!({"Id": "c0ffee", "Warnings": []}),
    )
    .with_priority(5)
    .mount(&server)
    .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/attach$"))
        .respond_with(
            ResponseTemplate::new(101)
                .insert_header("Connection", "Upgrade")
                .insert_header("Upgrade", "tcp"),
        )
        .mount(&server)
        .await;
    ok(r"/containers/[^/]+/archive$", "PUT", 200, json!({}))
        .mount(&server)
        .await;
    ok(r"/containers/[^/]+$", "DELETE", 204, json!({}))
        .mount(&server)
        .await;
    ok(r"/volumes/[^/]+$", "DELETE", 204, json!({}))
        .mount(&server)
        .await;
    ok(r"/containers/json$", "GET", 200, json!([]))
        .mount(&server)
        .await;
    ok(
        r"/volumes$",
        "GET",
        200,
        json!({"Volumes": [], "Warnings": []}),
    )
    .mount(&server)
    .await;
    server
}

/// The daemon answers the first `verb` on `path` with 503 "busy" (a transient error).
async fn busy_once(server: &MockServer, verb: &str, path: &str) {
    Mock::given(method(verb))
        .and(path_regex(path))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "busy"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
}

async fn executor(server: &MockServer, retries: u32, policy: PullPolicy) -> DockerExecutor {
    executor_with(server, retries, policy, TokenMode::Stdin).await
}

async fn executor_with(
    server: &MockServer,
    retries: u32,
    policy: PullPolicy,
    mode: TokenMode,
) -> DockerExecutor {
    DockerExecutorBuilder::new()
        .with_token_mode(mode)
        .with_host(server.uri())
        .with_launcher_image("sdx-test/launcher", "fake")
        .with_prefix("fake-")
        .with_pull_policy(policy)
        .with_retry(retry(retries))
        .with_breaker(BreakerConfig {
            max_failures: 0,
            ..BreakerConfig::default()
        })
        .build()
        .await
        .expect("executor")
}

fn build(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", TOKEN)
        .build()
        .unwrap()
}

async fn calls(server: &MockServer, verb: &str, suffix: &str) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r: &Request| r.method.as_str() == verb && r.url.path().ends_with(suffix))
        .map(|r| {
            r.url
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_refused_container_start_removes_what_start_created() {
    let server = daemon().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        // What Docker 20.10 answers when the entry point is missing.
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": "failed to create shim task: OCI runtime create failed: exec: \"/opt/sd/launch\": no such file or directory: unknown"
        })))
        .mount(&server)
        .await;
    let exec = executor(&server, 0, PullPolicy::Never).await;
    let e = exec.start(&build(41)).await.unwrap_err();
    assert!(e.message().contains("failed to start"), "{e}");
    assert!(!format!("{e} {e:?}").contains(TOKEN));

    let mut removed = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path().rsplit('/').next().unwrap().to_string())
        .collect::<Vec<_>>();
    removed.sort();
    assert_eq!(removed, ["fake-41-build", "fake-41-init", "fake-41-tools"]);
    // The container removals asked for force and anonymous volumes.
    let delete_query: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE" && r.url.path().contains("/containers/"))
        .map(|r| r.url.query().unwrap_or_default().to_string())
        .collect();
    assert!(
        delete_query
            .iter()
            .all(|q| q.contains("force=true") && q.contains("v=true")),
        "{delete_query:?}"
    );

    // The refusal is remembered as a start failure of the build.
    let s = exec.status(&build(41).to_stop()).await.unwrap();
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.failure.unwrap().build_started, Some(false));
}

#[tokio::test]
async fn a_transient_attach_failure_is_retried_and_a_refused_one_cleans_up() {
    let server = daemon().await;
    busy_once(&server, "POST", r"/containers/fake-43-build/attach$").await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/fake-44-build/attach$"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "attach failed"})))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let exec = executor(&server, 3, PullPolicy::Never).await;
    exec.start(&build(43))
        .await
        .expect("start succeeds after a retried attach");
    let attaches = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path().ends_with("/containers/fake-43-build/attach"))
        .collect::<Vec<_>>();
    assert_eq!(attaches.len(), 2, "one refused, one retried");
    let q = attaches[1].url.query().unwrap_or_default();
    assert!(
        q.contains("stdin=true") && q.contains("stdout=false"),
        "{q}"
    );
    // Attached before the start, and nothing was uploaded (no token volume in this mode).
    let order: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.url.path().to_string())
        .filter(|p| p.contains("fake-43-build/"))
        .collect();
    assert_eq!(
        order
            .iter()
            .map(|p| p.rsplit('/').next().unwrap())
            .collect::<Vec<_>>(),
        ["attach", "attach", "start"]
    );
    assert!(calls(&server, "PUT", "/archive").await.is_empty());

    // A persistent attach failure: the start fails and nothing stays behind; the daemon's
    // words are in the error, the token is not.
    let e = exec.start(&build(44)).await.unwrap_err();
    assert!(e.message().contains("attach failed"), "{e}");
    assert!(!format!("{e} {e:?}").contains(TOKEN));
    let mut removed: Vec<String> = calls(&server, "DELETE", "")
        .await
        .into_iter()
        .filter(|n| n.starts_with("fake-44-"))
        .collect();
    removed.sort();
    assert_eq!(removed, ["fake-44-build", "fake-44-init", "fake-44-tools"]);
    assert!(
        !server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .any(|r| r.url.path().ends_with("/containers/fake-44-build/start")),
        "never started"
    );
    for r in server.received_requests().await.unwrap() {
        assert!(!String::from_utf8_lossy(&r.body).contains(TOKEN));
        assert!(!r.url.as_str().contains(TOKEN));
    }
}

#[tokio::test]
async fn a_transient_daemon_error_is_retried() {
    let server = daemon().await;
    busy_once(&server, "PUT", r"/archive$").await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let exec = executor_with(&server, 3, PullPolicy::Never, TokenMode::File).await;
    exec.start(&build(42))
        .await
        .expect("start succeeds after a retry");
    let stats = exec.stats();
    assert!(stats.requests.failure >= 1, "{stats:?}");
    assert_eq!(stats.builds.started, 1);
    // The token went to the token volume through the init container, in a tar archive.
    let uploads = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PUT")
        .collect::<Vec<_>>();
    assert_eq!(uploads.len(), 2, "one refused, one retried");
    assert!(
        uploads[0]
            .url
            .path()
            .ends_with("/containers/fake-42-init/archive")
    );
    assert!(
        uploads[0]
            .url
            .query()
            .unwrap_or_default()
            .contains("path=%2Frun%2Fsd")
    );
    assert!(String::from_utf8_lossy(&uploads[0].body).contains(TOKEN));
    // ... and never into a container's config.
    for r in server.received_requests().await.unwrap() {
        if r.url.path().ends_with("/containers/create") {
            assert!(!String::from_utf8_lossy(&r.body).contains(TOKEN));
        }
    }
}

#[tokio::test]
async fn status_reports_pulling_while_a_missing_image_is_pulled() {
    let server = daemon().await;
    // The build image is absent once, then present after the pull.
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/create$"))
        .and(|r: &Request| r.url.query().unwrap_or_default().contains("fake-43-build"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": "No such image: busybox:latest"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/images/create$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(
                    "{\"status\":\"Pulling from library/busybox\",\"id\":\"latest\"}\n{\"status\":\"Pull complete\",\"id\":\"abc\"}\n",
                    "application/json",
                )
                .set_delay(Duration::from_millis(600)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let exec = executor(&server, 0, PullPolicy::Missing).await;
    let b = build(43);
    let starting = {
        let exec = exec.clone();
        let b = b.clone();
        tokio::spawn(async move { exec.start(&b).await })
    };
    let mut saw_pulling = false;
    for _ in 0..100 {
        if exec.status(&b.to_stop()).await.unwrap().phase == Phase::Pulling {
            saw_pulling = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    starting.await.unwrap().expect("start after the pull");
    assert!(saw_pulling, "status never said Pulling during the pull");
    assert_eq!(exec.pull_stats().success, 1);
    let pulls = calls(&server, "POST", "/images/create").await;
    assert_eq!(pulls.len(), 1);
    let q = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path().ends_with("/images/create"))
        .unwrap()
        .url
        .query()
        .unwrap_or_default()
        .to_string();
    assert!(
        q.contains("fromImage=busybox") && q.contains("tag=latest"),
        "{q}"
    );
}

#[tokio::test]
async fn a_pull_error_in_the_progress_stream_is_an_image_pull_failure() {
    let server = daemon().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/create$"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": "No such image: busybox:latest"})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/images/create$"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "{\"errorDetail\":{\"message\":\"toomanyrequests: rate limit\"},\"error\":\"toomanyrequests: rate limit\"}\n",
            "application/json",
        ))
        .mount(&server)
        .await;
    let exec = executor(&server, 0, PullPolicy::Missing).await;
    let e = exec.start(&build(44)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImagePull, "{e}");
    assert!(e.message().contains("toomanyrequests"), "{e}");
    assert_eq!(
        exec.verify(&build(44)).await.unwrap().as_str(),
        executor_base::verdict::IMAGE_INVALID_MESSAGE
    );
}

#[tokio::test]
async fn an_abandoned_start_is_cleaned_up_and_forgotten() {
    let server = daemon().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let exec = executor(&server, 0, PullPolicy::Never).await;
    let b = build(45);
    // The caller gives up while the daemon is still starting the container.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), exec.start(&b))
            .await
            .is_err()
    );
    let mut removed = Vec::new();
    for _ in 0..100 {
        removed = calls(&server, "DELETE", "").await;
        if removed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    removed.sort();
    assert_eq!(removed, ["fake-45-build", "fake-45-init", "fake-45-tools"]);
    // Not left as "starting" forever: unknown again (the fake daemon lists nothing).
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// The daemon answers `GET /containers/<name>/json` with a container in `state`.
async fn container_in_state(server: &MockServer, name: &str, state: &str) {
    Mock::given(method("GET"))
        .and(path_regex(format!(r"/containers/{name}/json$")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Id": "c0ffee",
            "Name": format!("/{name}"),
            "State": {"Status": state, "Running": state == "running", "ExitCode": 0},
            "Config": {"Labels": {}},
        })))
        .mount(server)
        .await;
}

/// The daemon answers the first start of any container after `delay`, later ones at once.
async fn first_start_answered_after(server: &MockServer, delay: Duration) {
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204).set_delay(delay))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

/// A fake daemon that answers the first start after 4 s (past a 1 s `startTimeoutSecs`:
/// its answer is lost) and reports container `name` in `state` afterwards.
async fn daemon_losing_the_first_start(name: &str, state: &str) -> MockServer {
    let server = daemon().await;
    first_start_answered_after(&server, Duration::from_secs(4)).await;
    container_in_state(&server, name, state).await;
    server
}

/// An executor with every default but the endpoint and what the fake daemon needs.
async fn executor_with_defaults(server: &MockServer, options: &[(&str, &str)]) -> DockerExecutor {
    let mut b = DockerExecutorBuilder::new()
        .with_token_mode(TokenMode::File)
        .with_host(server.uri())
        .with_launcher_image("sdx-test/launcher", "fake")
        .with_prefix("fake-")
        .with_pull_policy(PullPolicy::Never);
    for (k, v) in options {
        b = b.with_option(k, v);
    }
    b.build().await.expect("executor")
}

/// The issue: on a daemon loaded by other executors (three instances starting 24
/// containers at once on the project's CI), one start was answered after the 10 s call
/// timeout and its build failed. With the defaults a start has 120 s.
#[tokio::test]
async fn a_start_answered_late_past_the_call_timeout_succeeds_with_the_defaults() {
    let server = daemon().await;
    first_start_answered_after(&server, Duration::from_secs(11)).await;
    let exec = executor_with_defaults(&server, &[]).await;
    exec.start(&build(46))
        .await
        .expect("a late answer within startTimeoutSecs is a start");
    assert_eq!(
        calls(&server, "POST", "/start").await,
        ["start"],
        "one start"
    );
    assert_eq!(exec.stats().builds.started, 1);
}

/// A start whose answer was lost, of a container that then ran and exited: Docker would
/// run an exited container again, so the start is not repeated.
#[tokio::test]
async fn a_lost_start_of_a_container_that_ran_is_not_repeated() {
    let server = daemon_losing_the_first_start("fake-47-build", "exited").await;
    let exec = executor_with_defaults(&server, &[("startTimeoutSecs", "1")]).await;
    exec.start(&build(47))
        .await
        .expect("the lost attempt started it");
    assert_eq!(
        calls(&server, "POST", "/start").await.len(),
        1,
        "never repeated"
    );
    assert_eq!(
        calls(&server, "GET", "fake-47-build/json").await.len(),
        1,
        "looked before repeating"
    );
}

/// The same with no retry left (the budget spent on the lost attempt): the container is
/// still inspected before the start is reported failed.
#[tokio::test]
async fn a_lost_start_on_the_last_attempt_is_checked_before_it_fails() {
    let server = daemon_losing_the_first_start("fake-48-build", "running").await;
    let exec = executor_with_defaults(
        &server,
        &[("startTimeoutSecs", "1"), ("retry.maxRetries", "0")],
    )
    .await;
    exec.start(&build(48)).await.expect("it is running");
    assert_eq!(calls(&server, "POST", "/start").await.len(), 1);

    // A container still `created` after the last attempt: the start failed, temporary,
    // and what it created is removed.
    let server = daemon_losing_the_first_start("fake-49-build", "created").await;
    let exec = executor_with_defaults(
        &server,
        &[("startTimeoutSecs", "1"), ("retry.maxRetries", "0")],
    )
    .await;
    let e = exec.start(&build(49)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_temporary(), "{e}");
    let mut removed = calls(&server, "DELETE", "").await;
    removed.sort();
    assert_eq!(
        removed,
        [
            "fake-49-build",
            "fake-49-init",
            "fake-49-token",
            "fake-49-tools"
        ]
    );
}

/// A lost start of a container still `created` is repeated (Docker answers a repeat
/// that meets the first still in flight with 304 once it has run).
#[tokio::test]
async fn a_lost_start_of_a_container_still_created_is_repeated() {
    let server = daemon_losing_the_first_start("fake-50-build", "created").await;
    let exec = executor_with_defaults(&server, &[("startTimeoutSecs", "1")]).await;
    exec.start(&build(50)).await.expect("the repeat started it");
    assert_eq!(calls(&server, "POST", "/start").await.len(), 2);
}

#[tokio::test]
async fn start_timeout_secs_must_be_positive() {
    let e = DockerExecutorBuilder::new()
        .with_option("startTimeoutSecs", "0")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    assert!(e.message().contains("startTimeoutSecs"), "{e}");
}

/// The other calls of a start have the same bound: an attach (token mode `stdin`, the
/// default) answered after the 10 s call timeout is still an attach.
#[tokio::test]
async fn an_attach_answered_late_past_the_call_timeout_succeeds_with_the_defaults() {
    let server = daemon().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/attach$"))
        .respond_with(
            ResponseTemplate::new(101)
                .insert_header("Connection", "Upgrade")
                .insert_header("Upgrade", "tcp")
                .set_delay(Duration::from_secs(11)),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/containers/[^/]+/start$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let exec = DockerExecutorBuilder::new()
        .with_host(server.uri())
        .with_launcher_image("sdx-test/launcher", "fake")
        .with_prefix("fake-")
        .with_pull_policy(PullPolicy::Never)
        .build()
        .await
        .expect("executor");
    let r = exec.start(&build(51)).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(calls(&server, "POST", "/attach").await.len(), 1, "{r:?}");
    assert_eq!(calls(&server, "POST", "/start").await.len(), 1, "{r:?}");
}
