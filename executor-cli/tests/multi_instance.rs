//! Several `sdx serve` instances on one PostgreSQL database (`SDX_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped loudly without one, a failure
//! under `CI=true`), as real child processes on the process backend sharing one state
//! directory, behind a small round-robin TCP balancer that `launch` reports through (as a
//! load balancer in front of the instances would).
//!
//! * Three instances with the default lease settings (15 s, renewed every 5 s): builds
//!   submitted round robin (succeeding, failing, timing out after 1 minute, and aborted),
//!   one instance killed with SIGKILL mid-build and another stopped with SIGTERM; the
//!   survivor adopts their builds. Checked: no build lost (all final), none started twice
//!   (each build's first step appends to a file), every outcome true, every timeout
//!   fired by exactly one instance (counted in the instances' logs), no build process
//!   left.
//! * A partition (short leases: 2 s, renewed every 500 ms): the instance driving a build
//!   is paused with SIGSTOP until another took the lease over and stopped the build on an
//!   abort, then resumed with SIGCONT: it never acts on the build again (no stop of its
//!   own reaches the engine; its fenced checks and writes are refused).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use executor_base::testkit::daemon::require;
use executor_base::testkit::postgres::TestDb;
use executor_docker::testing;
use futures::StreamExt;
use serde_json::{Value, json};

#[path = "support/api.rs"]
mod api;
use api::Api;

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

fn test_db(prefix: &str) -> Option<TestDb> {
    block_on(TestDb::create(prefix))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A round-robin TCP balancer on loopback: each connection goes to the next backend that
/// accepts it.
fn balancer(backends: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (backends, next) = (backends.clone(), next.clone());
            std::thread::spawn(move || {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let upstream = (0..backends.len()).find_map(|i| {
                    let p = backends[(start + i) % backends.len()];
                    TcpStream::connect_timeout(
                        &format!("127.0.0.1:{p}").parse().unwrap(),
                        Duration::from_millis(300),
                    )
                    .ok()
                });
                let Some(up) = upstream else {
                    return;
                };
                let (mut c_read, mut u_write) =
                    (conn.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut u_read, mut c_write) = (up, conn);
                let t = std::thread::spawn(move || {
                    let _ = copy(&mut c_read, &mut u_write);
                    let _ = u_write.shutdown(std::net::Shutdown::Write);
                });
                let _ = copy(&mut u_read, &mut c_write);
                let _ = c_write.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    port
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n])?;
    }
}

/// One `sdx serve` child.
struct Instance {
    child: Child,
    log: PathBuf,
    api: Api,
}

impl Instance {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) {
        self.signal("-TERM");
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sdx serve did not exit on SIGTERM");
    }

    /// The instance's log, without colours.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        self.kill9();
    }
}

impl Api {
    fn submit(&self, body: &Value) -> u64 {
        match self.call("POST", "/v4/builds", Some(body)).unwrap() {
            (201, v) => v["id"].as_u64().unwrap(),
            (s, v) => panic!("submit answered {s}: {v}"),
        }
    }

    fn build(&self, id: u64) -> Value {
        match self.call("GET", &format!("/v4/builds/{id}"), None) {
            Ok((200, v)) => v,
            Ok((s, v)) => json!({"missing": s, "answer": v}),
            Err(e) => json!({"unreachable": e}),
        }
    }

    fn abort(&self, id: u64) {
        let (s, v) = self
            .call(
                "PUT",
                &format!("/v4/builds/{id}"),
                Some(&json!({"status": "ABORTED", "statusMessage": "stopped by the test"})),
            )
            .unwrap();
        // A build that already ended cannot be aborted (403): its outcome is checked
        // with the others.
        assert!(s == 200 || s == 403, "abort of {id}: {s} {v}");
    }
}

/// Starts `sdx serve` #`n` on `port` over `state` and the database; waits until it
/// answers. Its log (`-v`) goes to `serve-<n>.log` in the state directory.
fn serve(
    engine: &Engine,
    state: &Path,
    n: usize,
    port: u16,
    db: &str,
    public: u16,
    config: Option<&Path>,
) -> Instance {
    let token_file = state.join(format!("admin-{n}.token"));
    let log = state.join(format!("serve-{n}.log"));
    let mut cmd = Command::new(SDX);
    for var in [
        "SDX_CONFIG",
        "SDX_EXECUTOR",
        "SDX_API",
        "SDX_STORE",
        "RUST_LOG",
        "SDX_TEST_PAUSE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("EXECUTOR_PROCESS_STATE_DIR", state)
        .env("SDX_API_TOKEN", "multi-instance-admin")
        .args(["serve", "-v", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--public-uri", &format!("http://127.0.0.1:{public}")])
        .args(["--store", db, "--token-file"])
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    engine.configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.contains("reference API at"),
        "serve said {first:?}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    Instance {
        child,
        log,
        api: Api {
            url: format!("http://127.0.0.1:{port}"),
            token: "multi-instance-admin".into(),
            agent,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Succeed,
    Fail,
    TimeOut,
    Stop,
}

/// Where the builds run, and how the test sees them there.
enum Engine {
    /// The process backend on the shared state directory; a build's runs are the lines
    /// its first step appends to `marks/<id>`.
    Process {
        /// The marks directory.
        marks: PathBuf,
    },
    /// The shared dockerd (`-e docker`, host network, the default sdx launcher image
    /// built by `sdx launcher-image build`); a build's runs are the daemon's `create`
    /// events of its build container.
    Docker {
        /// The instances' container name prefix.
        prefix: String,
        /// The build image.
        image: String,
        /// Build container starts per build id, from the daemon's event stream.
        starts: Arc<Mutex<HashMap<u64, usize>>>,
    },
}

impl Engine {
    /// The options of every instance.
    fn configure(&self, cmd: &mut Command) {
        if let Engine::Docker { prefix, .. } = self {
            cmd.env("EXECUTOR_DOCKER_HOST", testing::docker_host())
                .env("DOCKER_HOST", testing::docker_host())
                .env("EXECUTOR_DOCKER_PREFIX", prefix)
                .env("EXECUTOR_DOCKER_NETWORK", "host")
                .args(["-e", "docker"]);
        }
    }

    /// The submission of a build of `kind`: a first step that marks the run, then the
    /// work.
    fn body(&self, kind: Kind) -> Value {
        let work = match kind {
            Kind::Succeed => "sleep 12; echo done",
            Kind::Fail => "sleep 12; echo failing >&2; exit 7",
            Kind::TimeOut | Kind::Stop => "sleep 300",
        };
        let mut b = match self {
            Engine::Process { marks } => json!({
                "environment": {"MARKS": marks.display().to_string()},
                "steps": [
                    {"name": "mark", "command": "echo run >> \"$MARKS/$SD_BUILD_ID\""},
                    {"name": "work", "command": work},
                ]
            }),
            Engine::Docker { image, .. } => json!({
                "container": image,
                "steps": [
                    {"name": "mark", "command": "echo run"},
                    {"name": "work", "command": work},
                ]
            }),
        };
        if kind == Kind::TimeOut {
            b["annotations"] = json!({"screwdriver.cd/timeout": 1});
        }
        b
    }

    /// How many times build `id` was started on the engine.
    fn runs(&self, id: u64) -> usize {
        match self {
            Engine::Process { marks } => std::fs::read_to_string(marks.join(id.to_string()))
                .map(|s| s.lines().count())
                .unwrap_or(0),
            Engine::Docker { starts, .. } => starts.lock().unwrap().get(&id).copied().unwrap_or(0),
        }
    }

    /// Whether build `id` was started on the engine.
    fn ran(&self, id: u64) -> bool {
        self.runs(id) >= 1
    }

    /// Builds still running on the engine: live processes of the state directory's
    /// builds (by their marker variable), or running containers of the prefix.
    fn left(&self, state: &Path) -> usize {
        match self {
            Engine::Process { .. } => {
                let needle = format!("SD_PROCESS_BUILD={}/builds/", state.display());
                std::fs::read_dir("/proc")
                    .unwrap()
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    })
                    .filter(|e| {
                        std::fs::read(e.path().join("environ"))
                            .map(|env| String::from_utf8_lossy(&env).contains(&needle))
                            .unwrap_or(false)
                    })
                    .count()
            }
            Engine::Docker { prefix, .. } => block_on(async {
                let docker = testing::docker().await;
                let filters = HashMap::from([("name".to_string(), vec![prefix.clone()])]);
                docker
                    .list_containers(Some(
                        ListContainersOptionsBuilder::new()
                            .filters(&filters)
                            .build(),
                    ))
                    .await
                    .expect("list containers")
                    .len()
            }),
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Counts the daemon's `start` events of build containers whose name starts with
/// `prefix`, per build id, from `since` (Unix seconds) on, in a thread of its own.
fn count_starts(prefix: &str, since: i64) -> Arc<Mutex<HashMap<u64, usize>>> {
    let starts: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let (out, prefix) = (starts.clone(), prefix.to_string());
    std::thread::spawn(move || {
        block_on(async move {
            let docker = testing::docker().await;
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("event".to_string(), vec!["start".to_string()]),
                (
                    "label".to_string(),
                    vec!["screwdriver.cd/docker-role=build".to_string()],
                ),
            ]);
            let opts = EventsOptionsBuilder::new()
                .since(&since.to_string())
                .filters(&filters)
                .build();
            let mut events = docker.events(Some(opts));
            while let Some(Ok(e)) = events.next().await {
                let attrs = e.actor.and_then(|a| a.attributes).unwrap_or_default();
                let ours = attrs.get("name").is_some_and(|n| n.starts_with(&prefix));
                let id = attrs
                    .get("screwdriver.cd/build-id")
                    .and_then(|v| v.parse::<u64>().ok());
                if let (true, Some(id)) = (ours, id) {
                    *out.lock().unwrap().entry(id).or_default() += 1;
                }
            }
        });
    });
    starts
}

fn is_final(b: &Value) -> bool {
    matches!(
        b["status"].as_str(),
        Some("SUCCESS" | "FAILURE" | "ABORTED" | "UNSTABLE" | "COLLAPSED")
    )
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many lines of `log` carry `what` for build `id`.
fn log_count(log: &str, what: &str, id: u64) -> usize {
    let field = format!("build={id}");
    log.lines()
        .filter(|l| l.contains(what) && l.split_whitespace().any(|w| w == field))
        .count()
}

/// Three instances with the default lease settings share `total` builds submitted round
/// robin (succeeding, failing, timing out after a minute, aborted); once every build ran
/// its first step one instance is SIGKILLed and another stopped with SIGTERM. The
/// survivor must finish every build with its true outcome, each run once, each timeout
/// fired once, and no build process left.
fn three_instances_one_killed_one_stopped(
    db: &TestDb,
    state: &Path,
    engine: &Engine,
    total: usize,
) {
    let ports = [free_port(), free_port(), free_port()];
    let lb = balancer(ports.to_vec());
    let mut inst: Vec<Instance> = (0..3)
        .map(|n| serve(engine, state, n, ports[n], db.uri(), lb, None))
        .collect();
    let kinds = [Kind::Succeed, Kind::Fail, Kind::TimeOut, Kind::Stop];
    let mut builds: Vec<(u64, Kind, usize)> = Vec::new();
    for i in 0..total {
        let kind = kinds[i % 4];
        let n = i % 3;
        builds.push((inst[n].api.submit(&engine.body(kind)), kind, n));
    }
    // Every build's launch has marked it before the instances go.
    // Generous for a loaded 2-core machine: 300 builds are ~900 processes.
    let scale = Duration::from_millis(500) * total as u32;
    let started = Instant::now();
    // Running on the engine, and `launch` told the API so (it has its token and runs):
    // no start is left in flight on the instances about to go.
    let mut running = std::collections::HashSet::new();
    let all_ran = wait_until(Duration::from_secs(90) + scale, || {
        for (id, _, n) in &builds {
            if !running.contains(id)
                && engine.ran(*id)
                && matches!(
                    inst[*n].api.build(*id)["status"].as_str(),
                    Some("RUNNING" | "SUCCESS" | "FAILURE" | "ABORTED")
                )
            {
                running.insert(*id);
            }
        }
        running.len() == builds.len()
    });
    let waiting: Vec<(u64, Value)> = builds
        .iter()
        .filter(|(id, _, _)| !engine.ran(*id))
        .take(5)
        .map(|(id, _, _)| (*id, inst[2].api.build(*id)))
        .collect();
    assert!(
        all_ran,
        "every build ran its first step within {:?}; {} did not, e.g. {waiting:#?}\n{}",
        started.elapsed(),
        builds.iter().filter(|(id, _, _)| !engine.ran(*id)).count(),
        inst.iter()
            .flat_map(|i| {
                i.log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .take(60)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{total} builds ran their first step {:?} after the last submission",
        started.elapsed()
    );
    inst[0].kill9();
    inst[1].stop();
    let survivor = inst[2].api.clone();
    for (id, kind, _) in &builds {
        if *kind == Kind::Stop {
            survivor.abort(*id);
        }
    }
    let all_final = wait_until(Duration::from_secs(240) + scale, || {
        builds
            .iter()
            .all(|(id, _, _)| is_final(&survivor.build(*id)))
    });
    let report: BTreeMap<u64, Value> = builds
        .iter()
        .map(|(id, _, _)| (*id, survivor.build(*id)))
        .collect();
    assert!(
        all_final,
        "not every build ended: {report:#?}\n{}",
        inst[2].log()
    );
    let logs: String = inst
        .iter()
        .map(Instance::log)
        .collect::<Vec<_>>()
        .join("\n");
    for (id, kind, n) in &builds {
        let b = &report[id];
        let (status, msg) = (
            b["status"].as_str().unwrap(),
            b["statusMessage"].as_str().unwrap_or(""),
        );
        let ok = match kind {
            Kind::Succeed => status == "SUCCESS",
            Kind::Fail => status == "FAILURE" && !msg.contains("timed out"),
            Kind::TimeOut => status == "FAILURE" && msg.contains("timed out"),
            Kind::Stop => status == "ABORTED",
        };
        assert!(
            ok,
            "build {id} ({kind:?}, submitted to #{n}) ended {status}: {msg}"
        );
        assert_eq!(engine.runs(*id), 1, "build {id} ran exactly once");
        if *kind == Kind::TimeOut {
            // The API's timer and `launch` both end the build at its timeout: whichever
            // is first. The timer fires at most once across the instances, and when it
            // did not fire, `launch` reported its own timeout.
            let fired = log_count(&logs, "build ran past its timeout", *id);
            assert!(
                fired == 1 || (fired == 0 && msg.contains("step work was killed")),
                "the timeout of build {id} fired {fired} times across the instances ({msg})"
            );
        }
    }
    // The survivor adopted the builds of both others.
    for (id, _, n) in &builds {
        if *n != 2 && !matches!(report[id]["status"].as_str(), Some("SUCCESS" | "FAILURE")) {
            assert!(
                log_count(&inst[2].log(), "adopting", *id) >= 1,
                "build {id} of #{n} adopted by the survivor"
            );
        }
    }
    assert!(
        wait_until(Duration::from_secs(30) + scale, || engine.left(state) == 0),
        "no build left running"
    );
}

#[test]
fn three_instances_share_300_builds_one_killed_one_stopped_default_leases() {
    let Some(db) = test_db("multi3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    three_instances_one_killed_one_stopped(&db, dir.path(), &Engine::Process { marks }, 300);
}

/// The same on the shared dockerd, with the defaults a user gets: the sdx launcher
/// image as `sdx launcher-image build` makes it, pre-flight on, default leases. The
/// builds of the killed and the stopped instance keep running in their containers and
/// must be adopted, not taken for orphans of a dead process.
#[cfg(feature = "docker")]
#[test]
fn three_instances_share_300_docker_builds_one_killed_one_stopped_default_leases() {
    if !require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket (DOCKER_HOST or /var/run/docker.sock)",
    ) {
        return;
    }
    let Some(db) = test_db("multi3docker") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let built = Command::new(SDX)
        .args(["launcher-image", "build"])
        .env("DOCKER_HOST", testing::docker_host())
        .env_remove("SDX_CONFIG")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "sdx launcher-image build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = block_on(testing::test_images()).build;
    let prefix = format!("sdx-multi-{}-", std::process::id());
    let since = chrono_now_secs() - 1;
    let engine = Engine::Docker {
        starts: count_starts(&prefix, since),
        prefix,
        image,
    };
    three_instances_one_killed_one_stopped(&db, dir.path(), &engine, 300);
    // Nothing of the builds is left once they are over (the survivor removed them).
    let Engine::Docker { prefix, .. } = &engine else {
        unreachable!()
    };
    let label = "app.kubernetes.io/managed-by=sdx";
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (c, _) =
                block_on(async { testing::labelled(&testing::docker().await, label).await });
            c.iter().all(|n| !n.starts_with(prefix.as_str()))
        }),
        "containers of the builds left after they ended"
    );
}

fn chrono_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_paused_instance_whose_lease_was_taken_never_acts_again() {
    let Some(db) = test_db("multipause") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (state, marks) = (dir.path().to_path_buf(), dir.path().join("marks"));
    std::fs::create_dir(&marks).unwrap();
    let engine = Engine::Process { marks };
    let config = state.join("sdx.toml");
    std::fs::write(&config, "[api]\nleaseTtlMs = 2000\nleaseRenewMs = 500\n").unwrap();
    let ports = [free_port(), free_port()];
    let lb = balancer(ports.to_vec());
    let a = serve(&engine, &state, 0, ports[0], db.uri(), lb, Some(&config));
    let b = serve(&engine, &state, 1, ports[1], db.uri(), lb, Some(&config));
    let id = a.api.submit(&engine.body(Kind::Stop));
    assert!(wait_until(Duration::from_secs(60), || engine.runs(id) == 1));
    a.signal("-STOP");
    assert!(
        wait_until(Duration::from_secs(30), || log_count(
            &b.log(),
            "took over the build's lease",
            id
        ) == 1),
        "the other instance takes the lease over: {}",
        b.log()
    );
    b.api.abort(id);
    assert!(
        wait_until(Duration::from_secs(60), || b.api.build(id)["status"]
            == "ABORTED"
            && log_count(&b.log(), "ending the build on the engine", id) == 1
            && engine.left(&state) == 0),
        "stopped by the new holder: {}",
        b.log()
    );
    a.signal("-CONT");
    // Long enough for the woken instance's watcher, renewal and adoption to run.
    std::thread::sleep(Duration::from_secs(5));
    let a_log = a.log();
    assert_eq!(
        log_count(&a_log, "ending the build on the engine", id),
        0,
        "the paused instance stopped the build after it lost the lease: {a_log}"
    );
    assert!(
        log_count(&a_log, "lost the lease", id) + log_count(&a_log, "not acting", id) >= 1,
        "the paused instance noticed it lost the lease: {a_log}"
    );
    assert_eq!(engine.runs(id), 1);
    assert_eq!(a.api.build(id)["status"], "ABORTED");
}
