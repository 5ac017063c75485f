//! `sdx gearman-worker` on the process backend against the real Gearman servers (gearmand
//! on 127.0.0.1:4730, `geard` on `$SDX_GEARD` or 127.0.0.1:4731): a plain Zuul job's
//! parameters reach the build's environment, and a worker killed with SIGKILL mid-build
//! leaves neither an orphan nor a second run: the restarted worker adopts the build
//! (gearmand re-queues the job, which then reports the one run's outcome) or stops it
//! (`geard` failed the job, nobody can receive the outcome), and the token file goes
//! with the build. A worker killed and not restarted is collected by `sdx gc`, and a
//! build's end is reported without polling.
#![cfg(feature = "gearman")]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use executor_base::testkit::daemon::{require, tcp_reachable};
use executor_gearman::{ClientOptions, GearmanClient, JobEvent, SubmittedJob};
use serde_json::{Value, json};

/// The `sdx` binary: cargo's, unless `SDX_BIN` names another (a copy that a shared
/// target directory cannot overwrite mid-run).
fn sdx_bin() -> String {
    std::env::var("SDX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sdx").to_string())
}
const TOKEN: &str = "zuul-default-token-never-on-disk-after";
const SETTLE: Duration = Duration::from_secs(30);

fn servers() -> Vec<(&'static str, String)> {
    let geard = std::env::var("SDX_GEARD").unwrap_or_else(|_| "127.0.0.1:4731".into());
    let mut out = Vec::new();
    for (name, addr) in [("gearmand", "127.0.0.1:4730".to_string()), ("geard", geard)] {
        if require(
            name,
            tcp_reachable(&addr),
            &format!("nothing listens on {addr}"),
        ) {
            out.push((name, addr));
        }
    }
    out
}

/// How the test `launch` ends by default: the launch handshake, as `sd-launch` writes
/// it, then exit 0.
const HANDSHAKE_END: &str =
    "echo \"sdx-launch-result protocol=1 build=$SD_BUILD_ID status=SUCCESS\"\nexit 0";

/// Directories of one test: job tools whose `launch` records each run and waits for
/// `<out>/go`, the process backend's state, the worker's state and the output.
struct Dirs {
    _root: tempfile::TempDir,
    tools: PathBuf,
    process: PathBuf,
    worker: PathBuf,
    out: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        Self::with_end(HANDSHAKE_END)
    }

    /// [`Dirs::new`] whose `launch` ends with `end` (after `<out>/go` appears).
    fn with_end(end: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let [tools, process, worker, out] =
            ["tools", "process", "worker", "out"].map(|d| root.path().join(d));
        for d in [&tools, &process, &worker, &out] {
            std::fs::create_dir_all(d).unwrap();
        }
        let launch = tools.join("launch");
        std::fs::write(
            &launch,
            format!(
                "#!/bin/sh\nOUT={}\nenv > \"$OUT/env-$ZUUL_UUID.tmp\"\nmv \"$OUT/env-$ZUUL_UUID.tmp\" \"$OUT/env-$ZUUL_UUID\"\necho \"$$\" >> \"$OUT/runs-$ZUUL_UUID\"\n\
                 while [ ! -f \"$OUT/go\" ]; do sleep 0.02; done\n{end}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            _root: root,
            tools,
            process,
            worker,
            out,
        }
    }

    /// `sdx gearman-worker` for `job` on `server`, with Zuul defaults for the start fields.
    fn worker(&self, server: &str, job: &str) -> Child {
        self.worker_with(server, job, &[])
    }

    /// `sdx` with this test's environment (process backend, worker state and defaults).
    fn sdx(&self) -> Command {
        let mut c = Command::new(sdx_bin());
        for var in ["SDX_CONFIG", "SDX_API", "SDX_API_TOKEN", "RUST_LOG"] {
            c.env_remove(var);
        }
        c.env("SDX_EXECUTOR", "process")
            .env("EXECUTOR_PROCESS_JOB_TOOLS", &self.tools)
            .env("EXECUTOR_PROCESS_STATE_DIR", &self.process)
            .env("EXECUTOR_GEARMAN_WORKER_STATE_DIR", &self.worker)
            .env("EXECUTOR_GEARMAN_WORKER_API_URI", "http://127.0.0.1:9")
            .env("EXECUTOR_GEARMAN_WORKER_CONTAINER", "busybox:latest")
            .env("EXECUTOR_GEARMAN_WORKER_TOKEN", TOKEN)
            .stdin(Stdio::null());
        c
    }

    /// [`Dirs::worker`] with extra environment variables.
    fn worker_with(&self, server: &str, job: &str, env: &[(&str, &str)]) -> Child {
        let mut c = self.sdx();
        c.envs(env.iter().copied())
            .args(["gearman-worker", "--server", server, "--job", job])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c.spawn().expect("sdx gearman-worker starts")
    }

    /// `sdx gc`'s output; it must succeed.
    fn gc(&self) -> String {
        let out = self.sdx().arg("gc").output().expect("sdx gc runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "sdx gc failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// The pids `launch` recorded for `uuid`, one per run.
    fn runs(&self, uuid: &str) -> Vec<u32> {
        std::fs::read_to_string(self.out.join(format!("runs-{uuid}")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// Token files still on disk under the process backend's state.
    fn token_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(builds) = std::fs::read_dir(self.process.join("builds")) {
            for b in builds.flatten() {
                let t = b.path().join("token");
                if t.exists() {
                    out.push(t);
                }
            }
        }
        out
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next(),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn zuul_args(uuid: &str) -> Value {
    json!({
        "ZUUL_UUID": uuid,
        "ZUUL_PROJECT": "org/project",
        "ZUUL_PIPELINE": "check",
        "ZUUL_BRANCH": "master",
        "ZUUL_REF": "refs/zuul/master/Z0123",
        "ZUUL_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "ZUUL_CHANGE": "42",
        "ZUUL_PATCHSET": "3",
        "ZUUL_URL": "http://zuul.example.org/p",
        "BASE_LOG_PATH": "42/42/3/check",
        "LOG_PATH": "42/42/3/check/unit/abc123",
        "OFFLINE_NODE_WHEN_COMPLETE": false,
    })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_build_leaves_no_orphan_and_no_second_run() {
    for (name, server) in servers() {
        one_server(name, &server).await;
    }
}

async fn one_server(name: &str, server: &str) {
    let d = Dirs::new();
    let job = format!("kill9-{}-{:08x}", std::process::id(), rand_u32());
    let uuid = format!(
        "{:032x}",
        u128::from(rand_u32()) << 64 | u128::from(rand_u32())
    );
    let mut first = Killed(d.worker(server, &job));

    let client = GearmanClient::connect(server, ClientOptions::default())
        .await
        .expect("client connects");
    let args = serde_json::to_vec(&zuul_args(&uuid)).unwrap();
    let submitted = client
        .submit(&format!("build:{job}"), &uuid, args.into())
        .await
        .expect("job submitted");
    eventually(&format!("{name}: the build runs"), || {
        d.runs(&uuid).len() == 1
    });
    let pid = d.runs(&uuid)[0];

    // Every Zuul parameter is in the build's environment (and the token is not).
    let env = std::fs::read_to_string(d.out.join(format!("env-{uuid}"))).unwrap();
    for (k, v) in zuul_args(&uuid).as_object().unwrap() {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert!(
            env.lines().any(|l| l == format!("{k}={v}")),
            "{name}: {k} not in env:\n{env}"
        );
    }
    assert!(
        !env.contains(TOKEN),
        "{name}: the token is in the build's environment"
    );

    // kill -9: nothing of the worker runs its shutdown.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "{name}: the build runs on without its worker");

    let _second = Killed(d.worker(server, &job));
    if name == "gearmand" {
        // gearmand re-queued the job: the restarted worker adopted the build and the job
        // is attached to it, not run again.
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(d.out.join("go"), "").unwrap();
        let (data, end) = tokio::time::timeout(SETTLE, submitted.wait())
            .await
            .expect("the job ends");
        assert!(
            matches!(end, JobEvent::Complete(_)),
            "{name}: the adopted build's job completes: {end:?}"
        );
        let last: Value = serde_json::from_slice(data.last().expect("a report")).unwrap();
        assert_eq!(last["result"], "SUCCESS", "{name}: {last}");
    } else {
        // geard failed the job when its worker died: nobody can receive the outcome, so
        // the restarted worker stops the orphan.
        let (_, end) = tokio::time::timeout(SETTLE, submitted.wait())
            .await
            .expect("the job ends");
        assert!(!matches!(end, JobEvent::Complete(_)), "{name}: {end:?}");
        eventually(&format!("{name}: the orphan is stopped"), || !alive(pid));
    }
    assert_eq!(d.runs(&uuid).len(), 1, "{name}: the build ran once");
    eventually(
        &format!("{name}: the token file goes with the build"),
        || d.token_files().is_empty(),
    );
    // The same ZUUL_UUID again, within the retention window: the recorded outcome, no run.
    let again = client
        .submit(
            &format!("build:{job}"),
            &uuid,
            serde_json::to_vec(&zuul_args(&uuid)).unwrap().into(),
        )
        .await
        .expect("job submitted");
    let (data, end) = tokio::time::timeout(SETTLE, again.wait())
        .await
        .expect("the job ends");
    let last: Value = serde_json::from_slice(data.last().expect("a report")).unwrap();
    if name == "gearmand" {
        assert!(matches!(end, JobEvent::Complete(_)), "{name}: {end:?}");
        assert_eq!(last["result"], "SUCCESS");
    } else {
        assert!(!matches!(end, JobEvent::Complete(_)), "{name}: {end:?}");
        assert_eq!(last["result"], "ABORTED", "{name}: {last}");
    }
    assert_eq!(d.runs(&uuid).len(), 1, "{name}: still one run");
}

/// A fresh job name and `ZUUL_UUID`.
fn job_and_uuid(prefix: &str) -> (String, String) {
    let job = format!("{prefix}-{}-{:08x}", std::process::id(), rand_u32());
    let uuid = format!(
        "{:032x}",
        u128::from(rand_u32()) << 64 | u128::from(rand_u32())
    );
    (job, uuid)
}

async fn submit(server: &str, job: &str, uuid: &str) -> (GearmanClient, SubmittedJob) {
    let client = GearmanClient::connect(server, ClientOptions::default())
        .await
        .expect("client connects");
    let args = serde_json::to_vec(&zuul_args(uuid)).unwrap();
    let submitted = client
        .submit(&format!("build:{job}"), uuid, args.into())
        .await
        .expect("job submitted");
    (client, submitted)
}

/// A worker killed with SIGKILL and not restarted: `sdx gc` leaves a live worker's
/// builds alone, then stops the dead one's orphan (its token file goes with it) and
/// keeps its outcome, so the job (re-queued by gearmand, or submitted again after
/// `geard` failed it) gets `ABORTED` from the next worker instead of a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdx_gc_settles_the_builds_of_a_killed_worker_that_was_not_restarted() {
    for (name, server) in servers() {
        gc_one_server(name, &server).await;
    }
}

async fn gc_one_server(name: &str, server: &str) {
    let d = Dirs::new();
    let (job, uuid) = job_and_uuid("gc");
    let mut first = Killed(d.worker(server, &job));
    let (client, submitted) = submit(server, &job, &uuid).await;
    eventually(&format!("{name}: the build runs"), || {
        d.runs(&uuid).len() == 1
    });
    let pid = d.runs(&uuid)[0];

    let out = d.gc();
    assert!(
        out.contains("in use by a running worker"),
        "{name}: gc with a live worker: {out}"
    );
    assert!(alive(pid), "{name}: gc stopped a live worker's build");

    first.0.kill().unwrap();
    first.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "{name}: the build runs on without its worker");
    assert!(
        !d.token_files().is_empty(),
        "{name}: the orphan's token file"
    );

    let out = d.gc();
    assert!(
        out.contains("gearman-worker: stopped 1") && out.contains("ABORTED"),
        "{name}: {out}"
    );
    assert!(!alive(pid), "{name}: the orphan is stopped once gc returns");
    assert!(
        d.token_files().is_empty(),
        "{name}: the token file went with the build"
    );
    let out = d.gc();
    assert!(
        out.contains("gearman-worker: nothing expired"),
        "{name}: {out}"
    );

    let _second = Killed(d.worker(server, &job));
    let (data, end) = if name == "gearmand" {
        // The re-queued job, taken by the new worker, gets the recorded outcome.
        tokio::time::timeout(SETTLE, submitted.wait())
            .await
            .expect("the job ends")
    } else {
        // geard failed the job when its worker died; the same uuid again.
        let (_, end) = tokio::time::timeout(SETTLE, submitted.wait())
            .await
            .expect("the job ends");
        assert!(!matches!(end, JobEvent::Complete(_)), "{name}: {end:?}");
        drop(client);
        let (_client, again) = submit(server, &job, &uuid).await;
        tokio::time::timeout(SETTLE, again.wait())
            .await
            .expect("the job ends")
    };
    assert!(!matches!(end, JobEvent::Complete(_)), "{name}: {end:?}");
    let last: Value = serde_json::from_slice(data.last().expect("a report")).unwrap();
    assert_eq!(last["result"], "ABORTED", "{name}: {last}");
    assert_eq!(d.runs(&uuid).len(), 1, "{name}: the build ran once");
}

/// The worker learns that a build ended from the process backend, not by polling: with
/// progress reports (`pollIntervalMs`) 10 minutes apart a trivial build is still
/// reported at once. (Before, the end was polled at that interval.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_end_is_reported_without_waiting_for_the_progress_interval() {
    for (name, server) in servers() {
        let d = Dirs::new();
        std::fs::write(d.out.join("go"), "").unwrap();
        let (job, uuid) = job_and_uuid("nopoll");
        let _worker = Killed(d.worker_with(
            server.as_str(),
            &job,
            &[("EXECUTOR_GEARMAN_WORKER_POLL_INTERVAL_MS", "600000")],
        ));
        let (_client, submitted) = submit(&server, &job, &uuid).await;
        let (data, end) = tokio::time::timeout(SETTLE, submitted.wait())
            .await
            .expect("the job ends well before the progress interval");
        assert!(matches!(end, JobEvent::Complete(_)), "{name}: {end:?}");
        let last: Value = serde_json::from_slice(data.last().expect("a report")).unwrap();
        assert_eq!(last["result"], "SUCCESS", "{name}: {last}");
        assert_eq!(d.runs(&uuid).len(), 1, "{name}");
    }
}

/// A launcher that exits 0 without the launch handshake (upstream's on an unknown flag):
/// the worker, which wraps the process backend, never reports the job `SUCCESS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_without_the_handshake_is_never_a_successful_job() {
    for (name, server) in servers() {
        let d = Dirs::with_end(
            "echo 'Incorrect Usage. flag provided but not defined: -token-file'\nexit 0",
        );
        std::fs::write(d.out.join("go"), "").unwrap();
        let (job, uuid) = job_and_uuid("nohs");
        let _worker = Killed(d.worker(server.as_str(), &job));
        let (_client, submitted) = submit(&server, &job, &uuid).await;
        let (data, end) = tokio::time::timeout(SETTLE, submitted.wait())
            .await
            .expect("the job ends");
        let last: Value = serde_json::from_slice(data.last().expect("a report")).unwrap();
        assert_eq!(last["result"], "FAILURE", "{name}: {last} ({end:?})");
        assert_eq!(d.runs(&uuid).len(), 1, "{name}");
    }
}

fn rand_u32() -> u32 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    t.subsec_nanos() ^ std::process::id().rotate_left(16) ^ n.rotate_left(24)
}
