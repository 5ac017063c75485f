//! The restart matrix: `sdx serve` as a real child process on the process backend,
//! killed with SIGKILL at chosen points and restarted on the same state directory (and
//! the same port: running builds know the API's URL), with builds that succeed, fail,
//! time out and are stopped; and `sdx run` killed mid-build, followed by `sdx gc`.
//!
//! After every case: no build lost (every accepted build exists and is final), no
//! process of any build left (`/proc/*/environ` holding the build's `SD_PROCESS_BUILD`
//! marker), no build run twice (each build's first step appends to a file), every
//! outcome true (the API's status, step codes and message, and the executor's own view
//! of the build), and ids strictly increasing across restarts.
//!
//! Settings are the defaults a user gets (stop grace 10 s, API polls 1 s, launch retries
//! an unreachable API for 10 minutes), except where a case says otherwise beside its
//! default-settings twin: `SD_API_RETRY_SECS=1` makes `launch` give up while the server
//! is down, and `SDX_TEST_PAUSE` holds the server at a dispatch point long enough to
//! kill it there. The cases run in parallel (each has its own state directory and port);
//! the slowest is the one waiting for a 1-minute build timeout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "support/api.rs"]
mod api;
use api::Api;

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

/// `sdx` with a clean configuration and its state in `state`.
fn sdx(state: &Path) -> Command {
    let mut c = Command::new(SDX);
    for var in [
        "SDX_CONFIG",
        "SDX_EXECUTOR",
        "SDX_API",
        "SDX_API_TOKEN",
        "SDX_STORE",
        "RUST_LOG",
        "EXECUTOR_PROCESS_JOB_TOOLS",
        "SDX_TEST_PAUSE",
    ] {
        c.env_remove(var);
    }
    c.env("EXECUTOR_PROCESS_STATE_DIR", state);
    c
}

/// A free loopback port (the restarted server must listen where builds expect it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `sdx serve`.
struct Serve {
    child: Child,
}

impl Serve {
    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Api {
    fn submit(&self, body: &Value) -> Result<u64, String> {
        match self.call("POST", "/v4/builds", Some(body))? {
            (201, v) => v["id"].as_u64().ok_or_else(|| format!("no id in {v}")),
            (s, v) => Err(format!("submit answered {s}: {v}")),
        }
    }

    fn build(&self, id: u64) -> Value {
        match self.call("GET", &format!("/v4/builds/{id}"), None) {
            Ok((200, v)) => v,
            Ok((s, v)) => json!({"missing": s, "answer": v}),
            Err(e) => json!({"unreachable": e}),
        }
    }

    fn ids(&self) -> Vec<u64> {
        match self.call("GET", "/v4/builds", None) {
            Ok((200, Value::Array(a))) => a.iter().filter_map(|b| b["id"].as_u64()).collect(),
            _ => Vec::new(),
        }
    }

    fn abort(&self, id: u64) -> Result<(), String> {
        match self.call(
            "PUT",
            &format!("/v4/builds/{id}"),
            Some(&json!({"status": "ABORTED", "statusMessage": "stopped by the matrix"})),
        )? {
            (200, _) => Ok(()),
            (s, v) => Err(format!("abort of {id} answered {s}: {v}")),
        }
    }
}

/// Starts `sdx serve` on `port` over `state` with `env`; waits until it answers. Its
/// log (`-v`) goes to `serve-<n>.log` in the state directory.
fn serve(state: &Path, port: u16, env: &[(&str, &str)]) -> (Serve, Api) {
    let token_file = state.join("admin.token");
    let n = std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
        .count();
    let log = std::fs::File::create(state.join(format!("serve-{n}.log"))).unwrap();
    let mut cmd = sdx(state);
    cmd.args([
        "serve",
        "-v",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--token-file",
    ])
    .arg(&token_file)
    .stdout(Stdio::piped())
    .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("reference API at"), "serve said {first:?}");
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let api = Api {
        url: format!("http://127.0.0.1:{port}"),
        token,
        agent,
    };
    (Serve { child }, api)
}

/// What a build is meant to do, and so what its true outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Succeed,
    Fail,
    TimeOut,
    Stop,
}

impl Kind {
    /// The build's body: a first step that records every run of the build, then the work.
    fn body(self, marks: &Path, work_secs: u32) -> Value {
        let work = match self {
            Kind::Succeed => format!("sleep {work_secs}; echo done"),
            Kind::Fail => format!("sleep {work_secs}; echo failing >&2; exit 7"),
            Kind::TimeOut | Kind::Stop => "sleep 300".into(),
        };
        let mut b = json!({
            "environment": {"MARKS": marks.display().to_string()},
            "steps": [
                {"name": "mark", "command": "echo run >> \"$MARKS/$SD_BUILD_ID\""},
                {"name": "work", "command": work},
            ]
        });
        if self == Kind::TimeOut {
            b["annotations"] = json!({"screwdriver.cd/timeout": 1});
        }
        b
    }
}

/// One case's state: its directory, the builds it submitted and their kinds.
struct Case {
    name: &'static str,
    dir: tempfile::TempDir,
    keep: std::cell::Cell<bool>,
    port: u16,
    builds: Vec<(u64, Kind)>,
    last_id: u64,
    kills: u32,
}

impl Case {
    fn new(name: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("marks")).unwrap();
        Self {
            name,
            dir,
            keep: std::cell::Cell::new(false),
            port: free_port(),
            builds: Vec::new(),
            last_id: 0,
            kills: 0,
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn marks(&self) -> PathBuf {
        self.dir.path().join("marks")
    }

    fn serve(&self, env: &[(&str, &str)]) -> (Serve, Api) {
        serve(self.state(), self.port, env)
    }

    /// Submits a build of `kind`; checks its id is above every earlier one.
    fn submit(&mut self, api: &Api, kind: Kind, work_secs: u32) -> u64 {
        let id = api
            .submit(&kind.body(&self.marks(), work_secs))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        self.accept(id, kind);
        id
    }

    fn accept(&mut self, id: u64, kind: Kind) {
        assert!(
            id > self.last_id,
            "{}: id {id} after {} (ids must strictly increase)",
            self.name,
            self.last_id
        );
        self.last_id = id;
        self.builds.push((id, kind));
    }

    fn kill(&mut self, s: &mut Serve) {
        s.kill9();
        self.kills += 1;
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if self.keep.get() || std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("{}: state kept in {}", self.name, dir.keep().display());
        }
    }
}

/// Waits until `f` is true (polling), at most `within`.
fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_final(b: &Value) -> bool {
    matches!(
        b["status"].as_str(),
        Some("SUCCESS" | "FAILURE" | "ABORTED" | "UNSTABLE" | "COLLAPSED")
    )
}

fn step<'a>(b: &'a Value, name: &str) -> &'a Value {
    b["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Processes of this state directory's builds still alive (by their marker variable).
fn build_processes(state: &Path) -> Vec<(u32, String)> {
    let needle = format!("SD_PROCESS_BUILD={}/builds/", state.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if let Some(v) = env
            .split(|b| *b == 0)
            .find(|v| v.starts_with(needle.as_bytes()))
        {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|s| s == "Z" || s == "X");
            if !zombie {
                out.push((pid, String::from_utf8_lossy(v).into_owned()));
            }
        }
    }
    out
}

/// The executor's own view of a build (`sdx status ID --json`): its phase.
fn executor_phase(state: &Path, id: u64) -> String {
    let out = sdx(state)
        .args(["status", &id.to_string(), "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["phase"]
        .as_str()
        .unwrap_or("unknown")
        .to_string()
}

/// Counts of one case, for the summary.
#[derive(Debug, Default, Clone)]
struct Tally {
    builds: usize,
    kills: u32,
    lost: usize,
    orphaned: usize,
    duplicated: usize,
    wrong: usize,
    problems: Vec<String>,
    secs: f64,
}

/// Checks every build of `case` once they are final: none lost, none run twice, no
/// process left, every outcome true (API and executor).
fn verify(case: &Case, api: &Api, started: Instant) -> Tally {
    let mut t = Tally {
        builds: case.builds.len(),
        kills: case.kills,
        ..Tally::default()
    };
    let listed = api.ids();
    for (id, kind) in &case.builds {
        let id = *id;
        let mut b = api.build(id);
        let done = wait_until(Duration::from_secs(120), || {
            b = api.build(id);
            is_final(&b)
        });
        if !done || !listed.contains(&id) {
            t.lost += 1;
            t.problems
                .push(format!("build {id} ({kind:?}) lost or not final: {b}"));
            continue;
        }
        let runs = std::fs::read_to_string(case.marks().join(id.to_string()))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if runs > 1 {
            t.duplicated += 1;
            t.problems.push(format!("build {id} ran {runs} times"));
        }
        let status = b["status"].as_str().unwrap_or_default();
        let message = b["statusMessage"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        let work = step(&b, "work");
        let truth = match kind {
            Kind::Succeed => status == "SUCCESS" && work["code"] == 0 && runs == 1,
            Kind::Fail => status == "FAILURE" && work["code"] == 7,
            Kind::TimeOut => status == "FAILURE" && message.contains("timed out"),
            Kind::Stop => status == "ABORTED",
        };
        if !truth {
            t.wrong += 1;
            t.problems
                .push(format!("build {id} ({kind:?}) recorded {status}: {b}"));
        }
    }
    // The engine's side: nothing left running, and the executor agrees with the API.
    if !wait_until(Duration::from_secs(30), || {
        build_processes(case.state()).is_empty()
    }) {
        let left = build_processes(case.state());
        t.orphaned += left.len();
        t.problems.push(format!("processes left: {left:?}"));
        for (pid, _) in left {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    for (id, kind) in &case.builds {
        let want: &[&str] = match kind {
            Kind::Succeed => &["succeeded"],
            Kind::Fail => &["failed"],
            Kind::TimeOut => &["timedOut", "canceled"],
            Kind::Stop => &["canceled"],
        };
        let phase = executor_phase(case.state(), *id);
        let ok = want.contains(&phase.as_str())
            // a build whose start never reached the engine before it was aborted
            || (*kind == Kind::Stop && phase == "unknown");
        if !ok {
            t.wrong += 1;
            t.problems
                .push(format!("build {id} ({kind:?}): the executor says {phase}"));
        }
    }
    t.secs = started.elapsed().as_secs_f64();
    if !t.problems.is_empty() {
        // Keep the state directory (store, serve logs, build logs) for a look.
        case.keep.set(true);
        t.problems
            .push(format!("state kept in {}", case.state().display()));
    }
    t
}

// --- the `sdx serve` cases ------------------------------------------------------------

/// Killed after the build was stored, before the submission was answered.
fn before_the_start_is_accepted() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("before the start is accepted");
    let (mut s, api) = case.serve(&[("SDX_TEST_PAUSE", "submitted=5000")]);
    let body = Kind::Succeed.body(&case.marks(), 1);
    let client = api.clone();
    let pending = std::thread::spawn(move || client.submit(&body));
    std::thread::sleep(Duration::from_millis(1500));
    case.kill(&mut s);
    assert!(
        pending.join().unwrap().is_err(),
        "the submission was never answered"
    );
    let (_s, api) = case.serve(&[]);
    // The client never learnt an id: the build is the one the store kept (if any).
    for id in api.ids() {
        case.accept(id, Kind::Succeed);
    }
    assert_eq!(case.builds.len(), 1, "the stored submission is not lost");
    let next = case.submit(&api, Kind::Succeed, 1);
    assert!(next > case.builds[0].0);
    verify(&case, &api, started)
}

/// Killed after the submission was answered, before the executor was asked to start.
fn mid_start() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("mid-start, before the executor's start");
    let (mut s, api) = case.serve(&[("SDX_TEST_PAUSE", "starting=5000")]);
    case.submit(&api, Kind::Succeed, 1);
    case.submit(&api, Kind::Fail, 1);
    std::thread::sleep(Duration::from_millis(500));
    case.kill(&mut s);
    let (_s, api) = case.serve(&[]);
    case.submit(&api, Kind::Succeed, 1);
    verify(&case, &api, started)
}

/// Killed inside the process executor's `start`: each build's directory is claimed
/// (state and token files written), `launch` not yet spawned. After the restart each
/// build is started again and runs exactly once, with its true outcome.
fn inside_the_executors_start() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("mid-start, inside the executor's start");
    let (mut s, api) = case.serve(&[("SDX_TEST_PAUSE", "process-claimed=5000")]);
    let ok = case.submit(&api, Kind::Succeed, 1);
    let fail = case.submit(&api, Kind::Fail, 1);
    let builds = case.state().join("builds");
    assert!(
        wait_until(Duration::from_secs(4), || [ok, fail]
            .iter()
            .all(|id| builds.join(id.to_string()).join("state.json").exists())),
        "the starts never claimed their directories"
    );
    case.kill(&mut s);
    // Killed at that point: claimed, nothing spawned, no run recorded.
    assert!(
        build_processes(case.state()).is_empty(),
        "launch was spawned"
    );
    for id in [ok, fail] {
        assert!(builds.join(id.to_string()).join("token").exists());
        assert!(!case.marks().join(id.to_string()).exists());
    }
    let (_s, api) = case.serve(&[]);
    case.submit(&api, Kind::Succeed, 1);
    verify(&case, &api, started)
}

/// Killed while steps run; the server is back within a few seconds.
fn while_a_step_runs() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("while a step runs");
    let (mut s, api) = case.serve(&[]);
    let ok = case.submit(&api, Kind::Succeed, 4);
    case.submit(&api, Kind::Fail, 4);
    assert!(wait_until(Duration::from_secs(30), || step(
        &api.build(ok),
        "work"
    )["startTime"]
        .is_string()));
    case.kill(&mut s);
    std::thread::sleep(Duration::from_secs(2));
    let (_s, api) = case.serve(&[]);
    case.submit(&api, Kind::Succeed, 1);
    verify(&case, &api, started)
}

/// Killed as soon as the first step's end was recorded.
fn between_steps() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("between steps");
    let (mut s, api) = case.serve(&[]);
    let id = case.submit(&api, Kind::Succeed, 2);
    assert!(wait_until(Duration::from_secs(30), || step(
        &api.build(id),
        "mark"
    )["code"]
        == 0));
    case.kill(&mut s);
    let (_s, api) = case.serve(&[]);
    verify(&case, &api, started)
}

/// Builds end while no server runs: `launch` gives up after 1 s and exits (its reports
/// stay in the spool for the adoption), and with the default retry it is still trying
/// when the server is back and delivers them itself.
fn after_launch_exited_before_it_reported(short_retry: bool) -> Tally {
    let started = Instant::now();
    let mut case = Case::new(if short_retry {
        "after launch exited, before it reported (launch retries 1 s)"
    } else {
        "after launch exited, before it reported (default retry)"
    });
    let env: &[(&str, &str)] = if short_retry {
        &[("EXECUTOR_PROCESS_ENV_SD_API_RETRY_SECS", "1")]
    } else {
        &[]
    };
    let (mut s, api) = case.serve(env);
    let ok = case.submit(&api, Kind::Succeed, 2);
    let failing = case.submit(&api, Kind::Fail, 2);
    // Both must be running their last step when the server goes: a launch still marking
    // its build RUNNING would give up (after 1 s) before running any step.
    for id in [ok, failing] {
        assert!(wait_until(Duration::from_secs(30), || step(
            &api.build(id),
            "work"
        )["startTime"]
            .is_string()));
    }
    case.kill(&mut s);
    if short_retry {
        // Both builds end (2 s), launch retries 1 s and exits.
        let marker = format!("SD_PROCESS_BUILD={}/builds/", case.state().display());
        assert!(
            wait_until(Duration::from_secs(30), || build_processes(case.state())
                .is_empty()),
            "{marker}"
        );
    } else {
        std::thread::sleep(Duration::from_secs(4));
    }
    let (_s, api) = case.serve(env);
    verify(&case, &api, started)
}

/// Killed while a stop is under way (the step ignores SIGTERM, so the stop takes its
/// grace); the restarted server finishes the stop.
fn mid_stop() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("mid-stop");
    let (mut s, api) = case.serve(&[]);
    let id = api
        .submit(&json!({
            "environment": {"MARKS": case.marks().display().to_string()},
            "steps": [
                {"name": "mark", "command": "echo run >> \"$MARKS/$SD_BUILD_ID\""},
                {"name": "work", "command": "trap '' TERM; sleep 300"}
            ]
        }))
        .unwrap();
    case.accept(id, Kind::Stop);
    assert!(wait_until(Duration::from_secs(30), || step(
        &api.build(id),
        "work"
    )["startTime"]
        .is_string()));
    api.abort(id).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    case.kill(&mut s);
    let (_s, api) = case.serve(&[]);
    verify(&case, &api, started)
}

/// Killed just as the 1-minute timeout of a build fires (the timer service's stop and
/// launch's own timeout race); the timer store reloads the deadline.
fn while_a_timeout_fires() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("while a timeout fires");
    let (mut s, api) = case.serve(&[]);
    let id = case.submit(&api, Kind::TimeOut, 0);
    let mut b = api.build(id);
    assert!(wait_until(Duration::from_secs(30), || {
        b = api.build(id);
        b["startTime"].is_string()
    }));
    let start = chrono::DateTime::parse_from_rfc3339(b["startTime"].as_str().unwrap()).unwrap();
    let fire = start + chrono::Duration::seconds(60);
    let wait = (fire.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_millis(300));
    case.kill(&mut s);
    let (_s, api) = case.serve(&[]);
    verify(&case, &api, started)
}

/// Killed while 20 builds of every kind run; the ones to stop are stopped after the
/// restart (by the adopting server); two time out.
fn while_20_builds_run() -> Tally {
    let started = Instant::now();
    let mut case = Case::new("while 20 builds run");
    let (mut s, api) = case.serve(&[]);
    let kinds = [
        (Kind::Succeed, 9),
        (Kind::Fail, 5),
        (Kind::Stop, 4),
        (Kind::TimeOut, 2),
    ];
    let mut to_stop = Vec::new();
    for (kind, n) in kinds {
        for i in 0..n {
            let id = case.submit(&api, kind, 3 + i % 3);
            if kind == Kind::Stop {
                to_stop.push(id);
            }
        }
    }
    let first = case.builds[0].0;
    assert!(wait_until(Duration::from_secs(60), || step(
        &api.build(first),
        "work"
    )["startTime"]
        .is_string()));
    // Killed as soon as the first build works: the later ones may still be queued,
    // inside the executor's start, or running.
    case.kill(&mut s);
    let (_s, api) = case.serve(&[]);
    // Aborted once launch reported them RUNNING: an abort racing launch's own RUNNING
    // report makes launch exit 2 (the API refuses the report), which the executor calls
    // "failed" while the API rightly says ABORTED (see the README).
    for id in to_stop {
        assert!(wait_until(
            Duration::from_secs(60),
            || api.build(id)["status"] == "RUNNING"
        ));
        api.abort(id).unwrap();
    }
    verify(&case, &api, started)
}

// --- the `sdx run` cases -----------------------------------------------------------------

/// Where a case kills `sdx run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunKill {
    /// Once the build's first step ran.
    MidBuild,
    /// Held at a dispatch point by `SDX_TEST_PAUSE` (`starting`: before the executor's
    /// start; `process-claimed`: inside it, the build directory claimed, nothing spawned).
    Paused(&'static str),
    /// 1 s into the stop that Ctrl-C asked for (the step ignores SIGTERM).
    MidStop,
}

/// `sdx run` killed (SIGKILL) while its build runs, then `sdx gc`: the build is aborted
/// and stopped (nobody follows it any more), or, when it ended before gc, its true
/// outcome is recorded from launch's spool.
fn run_killed_then_gc() -> Tally {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let marks = state.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let mut t = Tally::default();
    let mut ids = Vec::new();
    // (kind, seconds of work, where it is killed). A killed run is settled by gc:
    // ABORTED when it still ran (nobody follows it) or never started, its true outcome
    // when it ended before gc.
    let plan = [
        (Kind::Stop, 300, RunKill::MidBuild),
        (Kind::Succeed, 1, RunKill::MidBuild),
        (Kind::Fail, 1, RunKill::MidBuild),
        (Kind::Stop, 300, RunKill::Paused("starting=5000")),
        (Kind::Stop, 300, RunKill::Paused("process-claimed=5000")),
        (Kind::Stop, 300, RunKill::MidStop),
    ];
    let mut expected = BTreeMap::new();
    for (kind, secs, at) in &plan {
        let mut body = kind.body(&marks, *secs);
        if *at == RunKill::MidStop {
            // The step ignores SIGTERM, so the stop takes its whole (default) grace.
            body["steps"][1]["command"] = json!("trap '' TERM; sleep 300");
        }
        let pause = match at {
            RunKill::Paused(p) => Some(*p),
            _ => None,
        };
        let (mut child, id) = spawn_run(state, &body, ids.len(), pause);
        match at {
            RunKill::Paused(_) => std::thread::sleep(Duration::from_millis(500)),
            RunKill::MidBuild | RunKill::MidStop => {
                // Once the build's first step ran.
                assert!(wait_until(Duration::from_secs(30), || marks
                    .join(id.to_string())
                    .exists()));
            }
        }
        if *at == RunKill::MidStop {
            // Ctrl-C once the work step runs: `sdx run` aborts the build and waits for the
            // stop; it is killed 1 s into it.
            std::thread::sleep(Duration::from_millis(1500));
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        t.kills += 1;
        assert!(ids.last().is_none_or(|l| id > *l), "run ids must increase");
        ids.push(id);
        expected.insert(id, *kind);
    }
    // A live run on the same state directory is not touched by gc.
    let live = sdx(state)
        .args(["run", "--step", "live=sleep 8; echo live done"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let (report, orphans) = gc(state);
    let live = live.wait_with_output().unwrap();
    let live_out = String::from_utf8_lossy(&live.stdout);
    if live.status.code() != Some(0) || !live_out.contains("SUCCESS") {
        t.wrong += 1;
        t.problems
            .push(format!("the live run was disturbed by gc: {live_out}"));
    }
    t.builds = ids.len() + 1;
    check_settled(&mut t, &marks, &expected, &report, &orphans);
    finish_runs(t, state, started)
}

/// `sdx run` with the build `body` (written to `build-<n>.json`), its reports retried
/// 1 s while its API is down, and `SDX_TEST_PAUSE=<pause>`; returns it and its build id.
fn spawn_run(state: &Path, body: &Value, n: usize, pause: Option<&str>) -> (Child, u64) {
    let (child, id, _lines) = spawn_run_lines(state, body, n, pause);
    (child, id)
}

/// [`spawn_run`], also handing over what `sdx run` prints after its first line.
fn spawn_run_lines(
    state: &Path,
    body: &Value,
    n: usize,
    pause: Option<&str>,
) -> (Child, u64, std::sync::mpsc::Receiver<String>) {
    let file = state.join(format!("build-{n}.json"));
    std::fs::write(&file, body.to_string()).unwrap();
    let mut cmd = sdx(state);
    cmd.args(["run", "--file"])
        .arg(&file)
        .env("EXECUTOR_PROCESS_ENV_SD_API_RETRY_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = pause {
        cmd.env("SDX_TEST_PAUSE", p);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let id: u64 = first
        .strip_prefix("build ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sdx run said {first:?}"));
    // Keep reading its output so it never blocks on a full pipe (also once nobody
    // listens any more).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, id, rx)
}

/// `sdx gc --json` over `state`: the report and the killed runs it settled, by id.
fn gc(state: &Path) -> (Value, BTreeMap<u64, Value>) {
    let out = sdx(state).args(["gc", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let orphans = report
        .as_array()
        .and_then(|r| r.iter().find_map(|e| e["orphanedRuns"].as_array().cloned()))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| Some((o["id"].as_u64()?, o)))
        .collect();
    (report, orphans)
}

/// Every killed run of `expected` was settled by gc with its true outcome, and ran once.
fn check_settled(
    t: &mut Tally,
    marks: &Path,
    expected: &BTreeMap<u64, Kind>,
    report: &Value,
    orphans: &BTreeMap<u64, Value>,
) {
    for (id, kind) in expected {
        let Some(o) = orphans.get(id) else {
            t.lost += 1;
            t.problems
                .push(format!("run build {id} not settled by gc: {report}"));
            continue;
        };
        let status = o["status"].as_str().unwrap_or_default();
        let message = o["statusMessage"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        let ok = match kind {
            Kind::Succeed => status == "SUCCESS",
            Kind::Fail => status == "FAILURE",
            Kind::Stop => status == "ABORTED",
            Kind::TimeOut => status == "FAILURE" && message.contains("timed out"),
        } && o["settled"] == true;
        if !ok {
            t.wrong += 1;
            t.problems.push(format!("run build {id} ({kind:?}): {o}"));
        }
        let runs = std::fs::read_to_string(marks.join(id.to_string()))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if runs > 1 {
            t.duplicated += 1;
            t.problems.push(format!("run build {id} ran {runs} times"));
        }
    }
}

/// After gc: no process of any build left, and a second gc finds nothing more to do.
fn finish_runs(mut t: Tally, state: &Path, started: Instant) -> Tally {
    if !wait_until(Duration::from_secs(30), || {
        build_processes(state).is_empty()
    }) {
        let left = build_processes(state);
        t.orphaned += left.len();
        t.problems
            .push(format!("processes left after gc: {left:?}"));
        for (pid, _) in left {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    // A second gc finds nothing more to do.
    let again = sdx(state).args(["gc"]).output().unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    if again.contains("sdx run:") {
        t.problems
            .push(format!("a second gc still found orphans: {again}"));
        t.wrong += 1;
    }
    t.secs = started.elapsed().as_secs_f64();
    t
}

/// `sdx run` killed while its build's 1-minute timeout fires (the step ignores SIGTERM,
/// so the timeout's stop takes its grace), then `sdx gc`: FAILURE, timed out.
fn run_killed_while_a_timeout_fires() -> Tally {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (state, marks) = (dir.path(), dir.path().join("marks"));
    std::fs::create_dir(&marks).unwrap();
    let mut t = Tally {
        builds: 1,
        kills: 1,
        ..Tally::default()
    };
    let mut body = Kind::TimeOut.body(&marks, 0);
    body["steps"][1]["command"] = json!("trap '' TERM; sleep 300");
    let (mut child, id, lines) = spawn_run_lines(state, &body, 0, None);
    // The first step runs after launch reported RUNNING (the timeout's start).
    assert!(wait_until(Duration::from_secs(30), || marks
        .join(id.to_string())
        .exists()));
    // Killed the moment it shows the build timed out: the timeout's stop (the step
    // ignores SIGTERM, so it takes the stop grace) is under way. A fixed delay missed
    // that window whenever the stop was quick.
    let until = Instant::now() + Duration::from_secs(120);
    let mut timed_out = false;
    while Instant::now() < until {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.to_lowercase().contains("timed out") => {
                timed_out = true;
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            _ => {}
        }
    }
    let _ = child.kill();
    let ended = child.wait().unwrap();
    let (report, orphans) = gc(state);
    if ended.code().is_some() && !orphans.contains_key(&id) {
        // `sdx run` settled the build itself before the kill reached it (`launch`'s own
        // timeout can end the build a moment before the API's timer): then it showed the
        // timeout and exited 1, and gc has nothing to do.
        if !(timed_out && ended.code() == Some(1)) {
            t.wrong += 1;
            t.problems.push(format!(
                "the run ended by itself ({ended}) without showing the timeout"
            ));
        }
        t.kills = 0;
    } else {
        check_settled(
            &mut t,
            &marks,
            &BTreeMap::from([(id, Kind::TimeOut)]),
            &report,
            &orphans,
        );
    }
    finish_runs(t, state, started)
}

/// 20 `sdx run` at once on one state directory (ids strictly increasing in the order
/// they started), all killed once every build works (or after 60 s), then `sdx gc` once
/// the 10 s builds ended: those succeeded or failed, the long ones are aborted, and a
/// build that had not started when its run was killed is aborted without running.
fn twenty_runs_killed() -> Tally {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (state, marks) = (dir.path(), dir.path().join("marks"));
    std::fs::create_dir(&marks).unwrap();
    let mut t = Tally::default();
    let kinds: Vec<Kind> = (0..20)
        .map(|i| match i % 4 {
            0 | 1 => Kind::Succeed,
            2 => Kind::Fail,
            _ => Kind::Stop,
        })
        .collect();
    let mut runs = Vec::new();
    for (n, kind) in kinds.iter().enumerate() {
        let (child, id) = spawn_run(state, &kind.body(&marks, 10), n, None);
        runs.push((child, id, *kind));
    }
    let ids: Vec<u64> = runs.iter().map(|r| r.1).collect();
    if !ids.windows(2).all(|w| w[0] < w[1]) {
        t.wrong += 1;
        t.problems
            .push(format!("run ids not strictly increasing: {ids:?}"));
    }
    wait_until(Duration::from_secs(60), || {
        ids.iter().all(|id| marks.join(id.to_string()).exists())
    });
    for (child, _, _) in &mut runs {
        let _ = child.kill();
        t.kills += 1;
    }
    for (child, _, _) in &mut runs {
        let _ = child.wait();
    }
    // The short builds end by themselves (launch gives up on the dead API after 1 s).
    let short: Vec<String> = runs
        .iter()
        .filter(|r| r.2 != Kind::Stop)
        .map(|r| format!("/builds/{}", r.1))
        .collect();
    assert!(wait_until(Duration::from_secs(90), || build_processes(
        state
    )
    .iter()
    .all(|(_, m)| !short.iter().any(|s| m.ends_with(s.as_str())))));
    let (report, orphans) = gc(state);
    t.builds = runs.len();
    let expected: BTreeMap<u64, Kind> = runs
        .iter()
        .map(|r| match marks.join(r.1.to_string()).exists() {
            true => (r.1, r.2),
            // Never ran: gc aborts it.
            false => (r.1, Kind::Stop),
        })
        .collect();
    check_settled(&mut t, &marks, &expected, &report, &orphans);
    finish_runs(t, state, started)
}

#[test]
fn restart_matrix() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: the matrix walks /proc");
        return;
    }
    type CaseFn = fn() -> Tally;
    let cases: Vec<(&str, CaseFn)> = vec![
        ("before the start is accepted", before_the_start_is_accepted),
        ("mid-start, before the executor's start", mid_start),
        (
            "mid-start, inside the executor's start",
            inside_the_executors_start,
        ),
        ("while a step runs", while_a_step_runs),
        ("between steps", between_steps),
        (
            "after launch exited, before it reported (1 s retry)",
            || after_launch_exited_before_it_reported(true),
        ),
        ("after launch exited, before it reported (default)", || {
            after_launch_exited_before_it_reported(false)
        }),
        ("mid-stop", mid_stop),
        ("while a timeout fires", while_a_timeout_fires),
        ("while 20 builds run", while_20_builds_run),
        ("sdx run killed, then sdx gc", run_killed_then_gc),
        (
            "sdx run killed while a timeout fires, then sdx gc",
            run_killed_while_a_timeout_fires,
        ),
        ("20 sdx run killed, then sdx gc", twenty_runs_killed),
    ];
    let started = Instant::now();
    let results: Mutex<Vec<(String, Result<Tally, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (name, f) in &cases {
            let results = &results;
            scope.spawn(move || {
                let r = std::panic::catch_unwind(f).map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into())
                });
                results.lock().unwrap().push((name.to_string(), r));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut failed = Vec::new();
    let mut total = Tally::default();
    eprintln!(
        "\nrestart matrix ({:.0} s, cases in parallel):",
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "{:<55} {:>6} {:>5} {:>4} {:>8} {:>10} {:>5} {:>6}",
        "case", "builds", "kills", "lost", "orphaned", "duplicated", "wrong", "secs"
    );
    for (name, r) in &results {
        match r {
            Ok(t) => {
                eprintln!(
                    "{name:<55} {:>6} {:>5} {:>4} {:>8} {:>10} {:>5} {:>6.1}",
                    t.builds, t.kills, t.lost, t.orphaned, t.duplicated, t.wrong, t.secs
                );
                total.builds += t.builds;
                total.kills += t.kills;
                total.lost += t.lost;
                total.orphaned += t.orphaned;
                total.duplicated += t.duplicated;
                total.wrong += t.wrong;
                if !t.problems.is_empty() {
                    failed.push(format!("{name}: {}", t.problems.join("; ")));
                }
            }
            Err(p) => {
                eprintln!("{name:<55} failed: {p}");
                failed.push(format!("{name}: {p}"));
            }
        }
    }
    eprintln!(
        "{:<55} {:>6} {:>5} {:>4} {:>8} {:>10} {:>5}",
        "total",
        total.builds,
        total.kills,
        total.lost,
        total.orphaned,
        total.duplicated,
        total.wrong
    );
    assert!(failed.is_empty(), "restart matrix:\n{}", failed.join("\n"));
}
