//! `sdx gearman-worker` with trivial process builds against a raw Gearman worker that
//! spawns the same trivial shell command per job, measured in the same run through the
//! same gearmand (the target: at least half the raw worker's builds per second, and a
//! trivial build reported complete within 50 ms at the median).
//!
//! ```text
//! cargo bench -p executor-cli --bench gearman_worker
//! ```
//!
//! Needs gearmand on 127.0.0.1:4730 (`SDX_BENCH_GEARMAN` overrides it) and a Python with
//! OpenStack's `gear` (`SDX_GEAR_PYTHON`, else the venvs `.ci/run` and the dev services
//! make). `BENCH_BUILDS` (200) and `BENCH_IN_FLIGHT` (50) override the sizes.
//!
//! - **raw gear**: `BENCH_IN_FLIGHT` `gear.Worker`s (threads of one Python process), each
//!   running `/bin/sh -c 'exit 0'` per job with `subprocess.run`, then `WORK_COMPLETE`;
//! - **sdx gearman-worker**: the `sdx` binary on the process backend (`maxBuilds` =
//!   `BENCH_IN_FLIGHT`), its job tools' `launch` being `#!/bin/sh` + an `echo` of the launch handshake; each job
//!   is a plain Zuul job (`ZUUL_*` parameters; the worker's defaults fill in the rest),
//!   reported as `WORK_DATA` announcement, `WORK_STATUS`, `WORK_DATA` result and
//!   `WORK_COMPLETE`.
//!
//! Both are driven by one Gearman client connection submitting `BENCH_BUILDS` jobs with
//! `BENCH_IN_FLIGHT` in flight; the latency is `SUBMIT_JOB` to `WORK_COMPLETE`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use executor_gearman::{ClientOptions, GearmanClient, JobEvent};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// The `sdx` binary: cargo's, unless `SDX_BIN` names another (a copy that a shared
/// target directory cannot overwrite mid-run).
fn sdx_bin() -> String {
    std::env::var("SDX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sdx").to_string())
}

/// The raw worker: `n` threads with a `gear.Worker` each.
const RAW_WORKER: &str = r#"
import subprocess, sys, threading
import gear
host, port, function, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ready = threading.Barrier(n + 1)
def serve(i):
    w = gear.Worker('raw-%d' % i)
    w.addServer(host, port)
    w.waitForServer()
    w.registerFunction(function)
    ready.wait()
    while True:
        job = w.getJob()
        subprocess.run(['/bin/sh', '-c', 'exit 0'], check=False)
        job.sendWorkComplete(b'{"result": "SUCCESS"}')
for i in range(n):
    threading.Thread(target=serve, args=(i,), daemon=True).start()
ready.wait()
print('ready', flush=True)
sys.stdin.read()
"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gear_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SDX_GEAR_PYTHON") {
        return Some(PathBuf::from(p));
    }
    [
        "/tmp/sdx-ci/gear-venv/bin/python",
        "/tmp/sdx-dev/gear-venv/bin/python",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Result_ {
    name: &'static str,
    per_sec: f64,
    latencies: Vec<Duration>,
    failed: usize,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Result_ {
    fn print(&mut self) {
        self.latencies.sort();
        println!(
            "{:<22} {:>8.1} builds/s   submit->complete p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms   failed {}",
            self.name,
            self.per_sec,
            ms(pct(&self.latencies, 0.5)),
            ms(pct(&self.latencies, 0.9)),
            ms(pct(&self.latencies, 0.99)),
            self.failed,
        );
    }
}

/// Submits `n` jobs of `function` with `c` in flight; `args(i)` is job `i`'s argument.
async fn drive(
    name: &'static str,
    client: &GearmanClient,
    function: &str,
    n: usize,
    c: usize,
    args: impl Fn(usize) -> (String, Vec<u8>),
) -> Result_ {
    let began = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    let mut latencies = Vec::with_capacity(n);
    let mut failed = 0;
    let one = |i: usize| {
        let (unique, data) = args(i);
        let client = client.clone();
        let function = function.to_string();
        async move {
            let t = Instant::now();
            let job = client.submit(&function, &unique, data.into()).await;
            let end = match job {
                Ok(job) => job.wait().await.1,
                Err(_) => JobEvent::Disconnected,
            };
            (t.elapsed(), matches!(end, JobEvent::Complete(_)))
        }
    };
    while next < n.min(c) {
        pending.push(one(next));
        next += 1;
    }
    while let Some((latency, ok)) = pending.next().await {
        latencies.push(latency);
        failed += usize::from(!ok);
        if next < n {
            pending.push(one(next));
            next += 1;
        }
    }
    Result_ {
        name,
        per_sec: n as f64 / began.elapsed().as_secs_f64(),
        latencies,
        failed,
    }
}

fn write_launch(tools: &Path) {
    let launch = tools.join("launch");
    // The launch handshake, as `sd-launch` writes it: without it the build is failed.
    std::fs::write(
        &launch,
        "#!/bin/sh\necho \"sdx-launch-result protocol=1 build=$SD_BUILD_ID status=SUCCESS\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&launch, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn zuul_args(i: usize, run: u32) -> (String, Vec<u8>) {
    let uuid = format!("{run:08x}{i:024x}");
    let args = serde_json::json!({
        "ZUUL_UUID": uuid,
        "ZUUL_PROJECT": "org/project",
        "ZUUL_PIPELINE": "check",
        "ZUUL_REF": "refs/zuul/master/Z1",
        "ZUUL_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "LOG_PATH": format!("check/unit/{uuid}"),
    });
    (uuid, serde_json::to_vec(&args).unwrap())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let addr = std::env::var("SDX_BENCH_GEARMAN").unwrap_or_else(|_| "127.0.0.1:4730".into());
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let builds = env_usize("BENCH_BUILDS", 200);
    let in_flight = env_usize("BENCH_IN_FLIGHT", 50);
    let Some(python) = gear_python() else {
        eprintln!("no Python with gear: set SDX_GEAR_PYTHON (skipped)");
        return;
    };
    if std::net::TcpStream::connect(&addr).is_err() {
        eprintln!("nothing listens on {addr} (skipped)");
        return;
    }
    let run = std::process::id();
    let client = GearmanClient::connect(&addr, ClientOptions::default())
        .await
        .expect("client connects");
    println!("{builds} builds, {in_flight} in flight, through gearmand at {addr}");

    // Raw gear baseline.
    let raw_fn = format!("raw-bench-{run}");
    let mut raw = Running(
        Command::new(&python)
            .args([
                "-c",
                RAW_WORKER,
                host,
                port,
                &raw_fn,
                &in_flight.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs"),
    );
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(raw.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the raw gear worker started");
    }
    // Warm-up, then the measured run.
    drive("warm-up", &client, &raw_fn, in_flight, in_flight, |i| {
        (format!("w{run}-{i}"), b"{}".to_vec())
    })
    .await;
    let mut base = drive(
        "raw gear worker",
        &client,
        &raw_fn,
        builds,
        in_flight,
        |i| (format!("r{run}-{i}"), b"{}".to_vec()),
    )
    .await;
    drop(raw);

    // sdx gearman-worker on the process backend.
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    write_launch(&tools);
    let job = format!("sdx-bench-{run}");
    let _sdx = Running(
        Command::new(sdx_bin())
            .env_remove("SDX_CONFIG")
            .env_remove("RUST_LOG")
            .env("SDX_EXECUTOR", "process")
            .env("EXECUTOR_PROCESS_JOB_TOOLS", &tools)
            .env("EXECUTOR_PROCESS_STATE_DIR", dir.path().join("process"))
            .env(
                "EXECUTOR_GEARMAN_WORKER_STATE_DIR",
                dir.path().join("worker"),
            )
            .env("EXECUTOR_GEARMAN_WORKER_API_URI", "http://127.0.0.1:9")
            .env("EXECUTOR_GEARMAN_WORKER_CONTAINER", "busybox:latest")
            .env("EXECUTOR_GEARMAN_WORKER_TOKEN", "bench-token")
            .args(["gearman-worker", "--server", &addr, "--job", &job])
            .args(["--max-builds", &in_flight.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("sdx runs"),
    );
    let function = format!("build:{job}");
    // The warm-up jobs wait in gearmand's queue until the worker registered.
    drive("warm-up", &client, &function, in_flight, in_flight, |i| {
        zuul_args(i, run ^ 0xffff_0000)
    })
    .await;
    let mut sdx = drive(
        "sdx gearman-worker",
        &client,
        &function,
        builds,
        in_flight,
        |i| zuul_args(i, run),
    )
    .await;

    base.print();
    sdx.print();
    println!(
        "ratio sdx/raw: {:.2}x builds/s (target >= 0.5); sdx p50 {:.2} ms (target < 50)",
        sdx.per_sec / base.per_sec,
        ms(pct(&sdx.latencies, 0.5)),
    );
    // Do not let a broken run pass as a figure.
    assert_eq!(base.failed + sdx.failed, 0, "every job must complete");
}
