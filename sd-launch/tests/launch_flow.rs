//! `launch` against a small, stateful fake of the API (std TCP, HTTP/1.1 keep-alive).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sd_launch::args::{Args, Parsed};
use sd_launch::{Launcher, Outcome};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    auth: String,
    body: Value,
}

#[derive(Default)]
struct State {
    requests: Vec<Req>,
    steps: Value,
    exchange_status: u16,
    /// Answer 503 to everything (and record nothing): the API is "down".
    down: bool,
    /// The GET of the build answers with this `environment`.
    environment: Value,
    /// Apply the first `PUT status RUNNING` and close the connection without answering
    /// (an API killed after its write); later ones are refused as the real API does.
    lose_running_answer: bool,
    /// The build's status as the GET answers it (set by an applied RUNNING).
    status: String,
}

struct FakeApi {
    url: String,
    state: Arc<Mutex<State>>,
}

fn jwt(claims: Value) -> String {
    format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

impl FakeApi {
    fn start(steps: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            steps,
            exchange_status: 200,
            environment: json!({"GREETING": "hi"}),
            status: "QUEUED".into(),
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Self { url, state }
    }

    fn requests(&self) -> Vec<Req> {
        self.state.lock().unwrap().requests.clone()
    }

    fn find(&self, method: &str, path: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    fn statuses(&self) -> Vec<String> {
        self.find("PUT", "/v4/builds/42")
            .iter()
            .map(|r| r.body["status"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn log_lines(&self, step: &str) -> Vec<String> {
        self.find("POST", &format!("/v4/builds/42/steps/{step}/logs"))
            .iter()
            .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
            .map(|l| l["m"].as_str().unwrap().to_string())
            .collect()
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let (mut len, mut auth) = (0usize, String::new());
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "authorization" => auth = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = {
            let mut st = state.lock().unwrap();
            if st.down {
                let text = r#"{"message": "down"}"#;
                write!(
                    out,
                    "HTTP/1.1 503 X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
                .unwrap();
                continue;
            }
            let running = method == "PUT" && path == "/v4/builds/42" && body["status"] == "RUNNING";
            st.requests.push(Req {
                method: method.clone(),
                path: path.clone(),
                auth,
                body,
            });
            if running && st.status == "ABORTED" {
                (
                    403,
                    json!({"message": "Can not update status to RUNNING: the build is already ABORTED"}),
                )
            } else if running && st.lose_running_answer {
                if st.status == "RUNNING" {
                    (
                        403,
                        json!({"message": "Can not update status to RUNNING: the build is already RUNNING"}),
                    )
                } else {
                    st.status = "RUNNING".into();
                    return; // applied, never answered
                }
            } else {
                match (method.as_str(), path.as_str()) {
                    ("POST", "/v4/builds/42/token") if st.exchange_status == 200 => (
                        200,
                        json!({"token": jwt(json!({"username": "42", "scope": ["build"]}))}),
                    ),
                    ("POST", "/v4/builds/42/token") => (
                        st.exchange_status,
                        json!({"message": "Build is already running or finished."}),
                    ),
                    ("GET", "/v4/builds/42") => (
                        200,
                        json!({"id": 42, "jobId": 7, "status": st.status, "environment": st.environment, "steps": st.steps}),
                    ),
                    _ => (200, json!({})),
                }
            }
        };
        let text = answer.to_string();
        write!(
            out,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .unwrap();
    }
}

fn args(api: &FakeApi, ws: &std::path::Path, timeout: Duration) -> Args {
    let Parsed::Run(mut a) = Args::parse([
        "--api-uri",
        api.url.as_str(),
        "--workspace",
        ws.to_str().unwrap(),
        "42",
    ])
    .unwrap() else {
        panic!("not a run");
    };
    a.build_timeout = timeout;
    a.spool_file = ws.join("spool.jsonl");
    a
}

#[test]
fn successful_build_exchanges_the_token_and_reports_everything() {
    let api = FakeApi::start(json!([
        {"name": "hello", "command": "echo $GREETING from $SD_BUILD_ID; echo err >&2"},
        {"name": "check", "command": "test \"$SD_JOB_ID\" = 7 && pwd"}
    ]));
    let ws = tempfile::tempdir().unwrap();
    let temporal = jwt(json!({"username": "42", "scope": ["temporal"]}));
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(300)))
        .with_env_token(Some(temporal.clone()))
        .run();
    assert_eq!(out, Outcome::Success);

    let reqs = api.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v4/builds/42/token");
    assert_eq!(reqs[0].auth, format!("Bearer {temporal}"));
    assert_eq!(reqs[0].body, json!({"buildTimeout": 35}));
    assert!(
        reqs[1..]
            .iter()
            .all(|r| r.auth != format!("Bearer {temporal}")),
        "build token used after the exchange"
    );
    assert_eq!(api.statuses(), ["RUNNING", "SUCCESS"]);

    let hello = api.find("PUT", "/v4/builds/42/steps/hello");
    assert!(hello[0].body["startTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(hello[1].body["code"], 0);
    let mut lines = api.log_lines("hello");
    lines.sort();
    assert_eq!(lines, ["err", "hi from 42"]);
    let ws_path = std::fs::canonicalize(ws.path()).unwrap();
    assert_eq!(api.log_lines("check"), [ws_path.display().to_string()]);
    assert!(ws.path().join("artifacts").is_dir());
}

#[test]
fn failed_step_skips_the_rest_but_runs_teardown() {
    let api = FakeApi::start(json!([
        {"name": "build", "command": "echo compiling; exit 4"},
        {"name": "publish", "command": "echo never"},
        {"name": "sd-teardown-report", "command": "echo teardown saw $SD_STEP_EXIT_CODE"}
    ]));
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(300)))
        .with_env_token(Some("already-a-build-token".into()))
        .run();
    assert_eq!(out, Outcome::StepFailed);
    assert_eq!(out.exit_code(), 1);
    assert!(
        api.find("POST", "/v4/builds/42/token").is_empty(),
        "a non-temporal token is used as is"
    );
    assert_eq!(api.statuses(), ["RUNNING", "FAILURE"]);
    let last = api.find("PUT", "/v4/builds/42").pop().unwrap();
    assert_eq!(
        last.body["statusMessage"],
        "step build failed with exit code 4"
    );
    assert_eq!(
        api.find("PUT", "/v4/builds/42/steps/build")[1].body["code"],
        4
    );
    assert!(api.find("PUT", "/v4/builds/42/steps/publish").is_empty());
    assert_eq!(api.log_lines("sd-teardown-report"), ["teardown saw 4"]);
}

#[test]
fn timeout_kills_the_step_and_exits_3() {
    let api = FakeApi::start(json!([
        {"name": "slow", "command": "echo start; sleep 30"},
        {"name": "after", "command": "echo never"}
    ]));
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(1)))
        .with_env_token(Some("build-token".into()))
        .run();
    assert_eq!(out, Outcome::TimedOut);
    assert_eq!(out.exit_code(), 3);
    assert_eq!(api.statuses(), ["RUNNING", "FAILURE"]);
    let last = api.find("PUT", "/v4/builds/42").pop().unwrap();
    assert_eq!(
        last.body["statusMessage"],
        "Build timed out after 1 second (step slow was killed)"
    );
    assert_eq!(
        api.find("PUT", "/v4/builds/42/steps/slow")[1].body["code"],
        3
    );
    let lines = api.log_lines("slow");
    assert_eq!(lines[0], "start");
    assert!(
        lines[1].contains("build timeout of 1 second reached"),
        "{lines:?}"
    );
    assert!(api.find("PUT", "/v4/builds/42/steps/after").is_empty());
}

#[test]
fn refused_exchange_reports_failure_with_the_temporary_token() {
    let api = FakeApi::start(json!([]));
    api.state.lock().unwrap().exchange_status = 403;
    let ws = tempfile::tempdir().unwrap();
    let temporal = jwt(json!({"username": "42", "scope": ["temporal"]}));
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(Some(temporal.clone()))
        .run();
    assert_eq!(out, Outcome::UsageOrApiError);
    assert_eq!(
        api.find("POST", "/v4/builds/42/token").len(),
        1,
        "a 4xx exchange is never retried"
    );
    let put = api.find("PUT", "/v4/builds/42");
    assert_eq!(put.len(), 1);
    assert_eq!(put[0].body["status"], "FAILURE");
    assert_eq!(put[0].auth, format!("Bearer {temporal}"));
    let msg = put[0].body["statusMessage"].as_str().unwrap();
    assert!(
        msg.contains("HTTP 403") && msg.contains("already running"),
        "{msg}"
    );
}

#[test]
fn invalid_steps_fail_the_build_naming_the_field() {
    let api = FakeApi::start(json!([{"name": "x"}]));
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(Some("t".into()))
        .run();
    assert_eq!(out, Outcome::UsageOrApiError);
    let last = api.find("PUT", "/v4/builds/42").pop().unwrap();
    assert_eq!(
        last.body["statusMessage"],
        "the build's steps are invalid: steps[0].command: must be a string"
    );
}

#[test]
fn missing_token_is_a_usage_error() {
    let api = FakeApi::start(json!([]));
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(None)
        .run();
    assert_eq!(out, Outcome::UsageOrApiError);
    assert!(api.requests().is_empty());
}

#[test]
fn binary_without_arguments_prints_usage_and_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_launch"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BUILD_ID: is required") && err.contains("usage: launch"),
        "{err}"
    );
}

#[test]
fn binary_only_fetch_token_prints_the_build_token() {
    let api = FakeApi::start(json!([]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, jwt(json!({"username": "42", "scope": ["temporal"]}))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_launch"))
        .env_clear()
        .args([
            "--api-uri",
            &api.url,
            "--build-timeout",
            "1",
            "--only-fetch-token",
            "--token-file",
        ])
        .arg(&file)
        .arg("42")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        jwt(json!({"username": "42", "scope": ["build"]}))
    );
    assert_eq!(
        api.find("POST", "/v4/builds/42/token")[0].body,
        json!({"buildTimeout": 31})
    );
}

#[test]
fn binary_on_sigterm_kills_the_step_and_reports_aborted() {
    let api = FakeApi::start(json!([
        {"name": "long", "command": "echo started; sleep 60"},
        {"name": "after", "command": "echo never"}
    ]));
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_launch"))
        .env_clear()
        .env("SD_TOKEN", "build-token")
        .args(["--api-uri", &api.url, "--workspace"])
        .arg(dir.path())
        .arg("42")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the step has started (its start was reported).
    for _ in 0..500 {
        if !api.find("PUT", "/v4/builds/42/steps/long").is_empty()
            && !api.log_lines("long").is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(api.statuses(), ["RUNNING", "ABORTED"]);
    let last = api.find("PUT", "/v4/builds/42").pop().unwrap();
    assert_eq!(
        last.body["statusMessage"],
        "aborted by signal 15 during step long"
    );
    assert_eq!(
        api.find("PUT", "/v4/builds/42/steps/long")[1].body["code"],
        143
    );
    assert!(api.find("PUT", "/v4/builds/42/steps/after").is_empty());
}

#[test]
fn steps_that_succeed_while_the_api_is_down_exit_0_and_leave_everything_in_the_spool() {
    // Before: the final report failed, so launch exited 2 and the build was called failed.
    let api = FakeApi::start(json!([
        {"name": "first", "command": "echo one"},
        {"name": "second", "command": "echo two"}
    ]));
    let ws = tempfile::tempdir().unwrap();
    let mut a = args(&api, ws.path(), Duration::from_secs(60));
    a.api_retry = Duration::from_millis(500);
    let spool = a.spool_file.clone();
    // Down from the first step on: the "RUNNING" and the steps were fetched.
    let state = api.state.clone();
    let watcher = std::thread::spawn(move || {
        for _ in 0..1000 {
            {
                let mut st = state.lock().unwrap();
                if st.requests.iter().any(|r| r.method == "GET") {
                    st.down = true;
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let out = Launcher::new(a)
        .with_env_token(Some("build-token".into()))
        .run();
    watcher.join().unwrap();
    assert_eq!(out, Outcome::Success);
    assert_eq!(out.exit_code(), 0);
    let spooled = sd_launch::spool::read(&spool);
    let ops: Vec<String> = spooled
        .iter()
        .map(|e| e.to_json()["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ops,
        [
            "stepStart",
            "logs",
            "stepEnd",
            "stepStart",
            "logs",
            "stepEnd",
            "status"
        ],
        "{spooled:?}"
    );
    assert_eq!(
        spooled.last().unwrap().to_json(),
        json!({"op": "status", "status": "SUCCESS"})
    );
}

#[test]
fn reports_made_while_the_api_is_down_are_delivered_in_order_when_it_returns() {
    let api = FakeApi::start(json!([
        {"name": "first", "command": "echo one; sleep 1; echo two"},
        {"name": "second", "command": "echo three"}
    ]));
    let ws = tempfile::tempdir().unwrap();
    let a = args(&api, ws.path(), Duration::from_secs(60));
    let spool = a.spool_file.clone();
    let state = api.state.clone();
    // Down for a second and a half from the start of the first step.
    let outage = std::thread::spawn(move || {
        for _ in 0..5000 {
            {
                let mut st = state.lock().unwrap();
                if st.requests.iter().any(|r| r.method == "GET") {
                    st.down = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(1500));
        state.lock().unwrap().down = false;
    });
    let out = Launcher::new(a)
        .with_env_token(Some("build-token".into()))
        .run();
    outage.join().unwrap();
    assert_eq!(out, Outcome::Success);
    assert_eq!(api.statuses(), ["RUNNING", "SUCCESS"]);
    assert_eq!(api.log_lines("first"), ["one", "two"]);
    assert_eq!(api.log_lines("second"), ["three"]);
    let order: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        order,
        [
            "PUT /v4/builds/42",
            "PUT /v4/builds/42/steps/first",
            "POST /v4/builds/42/steps/first/logs",
            "POST /v4/builds/42/steps/first/logs",
            "PUT /v4/builds/42/steps/first",
            "PUT /v4/builds/42/steps/second",
            "POST /v4/builds/42/steps/second/logs",
            "PUT /v4/builds/42/steps/second",
            "PUT /v4/builds/42",
        ]
    );
    assert!(!spool.exists(), "a delivered spool is removed");
}

#[test]
fn the_builds_environment_cannot_override_sd_variables() {
    let api = FakeApi::start(json!([
        {"name": "show", "command": "echo \"$SD_API_URL $SD_BUILD_ID $MINE\""}
    ]));
    api.state.lock().unwrap().environment =
        json!({"SD_API_URL": "http://evil.example/", "SD_BUILD_ID": "1", "MINE": "ok"});
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(Some("t".into()))
        .run();
    assert_eq!(out, Outcome::Success);
    assert_eq!(api.log_lines("show"), [format!("{}/v4/ 42 ok", api.url)]);
}

#[test]
fn binary_gives_the_step_the_executors_stop_grace() {
    // Before: launch killed an aborted step after a hard-coded 2 s whatever the executor's
    // grace. With a 20 s grace the step gets 15 s.
    let api = FakeApi::start(json!([
        {"name": "stubborn", "command": "trap 'echo got TERM' TERM; echo $$ > pid; while :; do sleep 0.1; done"}
    ]));
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_launch"))
        .env_clear()
        .env("SD_TOKEN", "build-token")
        .env("SD_STOP_GRACE_MS", "20000")
        .env("SD_SPOOL_FILE", dir.path().join("spool.jsonl"))
        .args(["--api-uri", &api.url, "--workspace"])
        .arg(dir.path())
        .arg("42")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    for _ in 0..500 {
        if std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let step: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let launch = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(launch, nix::sys::signal::Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let step_alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(step), None).is_ok();
    let launch_running = child.try_wait().unwrap().is_none();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(step),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        step_alive && launch_running,
        "the step was killed before its share of the grace"
    );
}

#[test]
fn a_running_mark_whose_answer_was_lost_is_not_a_second_launch() {
    // Before: the API applied RUNNING and died before answering; the retry was refused
    // ("already RUNNING") and launch gave up with exit 2, after the build had been
    // counted as started, so a build that should have run was reported failed.
    let api = FakeApi::start(json!([{"name": "hello", "command": "echo hi"}]));
    api.state.lock().unwrap().lose_running_answer = true;
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(Some(jwt(json!({"username": "42", "scope": ["build"]}))))
        .run();
    assert_eq!(out, Outcome::Success);
    assert_eq!(api.statuses(), ["RUNNING", "RUNNING", "SUCCESS"]);
    assert_eq!(api.log_lines("hello"), ["hi"]);

    // A refusal with no lost answer before it stays a refusal.
    let api = FakeApi::start(json!([{"name": "hello", "command": "echo hi"}]));
    {
        let mut st = api.state.lock().unwrap();
        st.lose_running_answer = true;
        st.status = "RUNNING".into();
    }
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(Some(jwt(json!({"username": "42", "scope": ["build"]}))))
        .run();
    assert_eq!(out, Outcome::UsageOrApiError);
    assert!(
        api.find("POST", "/v4/builds/42/steps/hello/logs")
            .is_empty(),
        "no step ran"
    );
}

#[test]
fn a_build_aborted_before_it_started_exits_4_and_runs_nothing() {
    // Before: the abort raced the start; RUNNING was refused and launch exited 2 (usage or
    // API error), so the process executor called the build failed while the API said
    // ABORTED.
    let api = FakeApi::start(json!([{"name": "hello", "command": "echo hi"}]));
    api.state.lock().unwrap().status = "ABORTED".into();
    let ws = tempfile::tempdir().unwrap();
    let out = Launcher::new(args(&api, ws.path(), Duration::from_secs(60)))
        .with_env_token(Some(jwt(json!({"username": "42", "scope": ["build"]}))))
        .run();
    assert_eq!(out, Outcome::AbortedByApi);
    assert_eq!(out.exit_code(), 4);
    assert_eq!(api.statuses(), ["RUNNING"], "no final status is reported");
    assert!(
        api.find("POST", "/v4/builds/42/steps/hello/logs")
            .is_empty(),
        "no step ran"
    );
    assert!(sd_launch::handshake::line(42, out).ends_with("status=ABORTED"));
}

#[test]
fn binary_writes_the_handshake_to_stdout_and_to_the_result_file() {
    let api = FakeApi::start(json!([{"name": "one", "command": "echo one"}]));
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("termination-log");
    // A stale content (a step or an earlier run) is replaced, not appended to.
    std::fs::write(&result, "stale\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_launch"))
        .env_clear()
        .env("SD_TOKEN", "build-token")
        .env(sd_launch::handshake::RESULT_FILE_ENV, &result)
        .args(["--api-uri", &api.url, "--workspace"])
        .arg(dir.path().join("ws"))
        .arg("42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = "sdx-launch-result protocol=1 build=42 status=SUCCESS";
    assert_eq!(stdout.lines().last(), Some(want), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        format!("{want}\n")
    );
}

#[test]
fn binary_with_an_unwritable_result_file_still_exits_with_the_build_outcome() {
    let api = FakeApi::start(json!([{"name": "one", "command": "exit 4"}]));
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_launch"))
        .env_clear()
        .env("SD_TOKEN", "build-token")
        .env(
            sd_launch::handshake::RESULT_FILE_ENV,
            dir.path().join("missing/dir/file"),
        )
        .args(["--api-uri", &api.url, "--workspace"])
        .arg(dir.path().join("ws"))
        .arg("42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SD_LAUNCH_RESULT_FILE"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("status=FAILURE\n"));
}

#[test]
fn binary_install_copies_job_tools_without_a_shell() {
    // The binary's own directory is job-tools: copy it into a fresh one beside it.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_launch"));
    let tools = tempfile::tempdir().unwrap();
    let launch = tools.path().join("launch");
    std::fs::copy(bin, &launch).unwrap();
    std::fs::write(tools.path().join("extra.txt"), "x").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&launch)
        .env_clear()
        .arg("install")
        .arg(dest.path().join("opt-launcher"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = dest.path().join("opt-launcher/launch");
    // The copy runs: it is the same launch.
    let v = std::process::Command::new(&copied)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("launch "));
    assert_eq!(
        std::fs::read_to_string(dest.path().join("opt-launcher/extra.txt")).unwrap(),
        "x"
    );
}
