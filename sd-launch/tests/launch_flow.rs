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
            st.requests.push(Req {
                method: method.clone(),
                path: path.clone(),
                auth,
                body,
            });
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
                    json!({"id": 42, "jobId": 7, "environment": {"GREETING": "hi"}, "steps": st.steps}),
                ),
                _ => (200, json!({})),
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
