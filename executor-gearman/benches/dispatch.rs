//! Builds dispatched per second through gearmand to a launcher worker wrapping the
//! FakeExecutor, and the latency from `start` to the launcher's first `WORK_DATA`, with
//! raw Gearman baselines measured in the same run through the same gearmand.
//!
//! `cargo bench -p executor-gearman --bench dispatch` (needs gearmand on
//! 127.0.0.1:4730; `BENCH_BUILDS` and `BENCH_CONCURRENCY` override the sizes).
//!
//! - raw, shared connection: one client connection, `SUBMIT_JOB` -> an echo worker that
//!   answers `WORK_DATA` then `WORK_COMPLETE` at once;
//! - raw, connection per job: the same with a fresh client connection per job (what
//!   the Gearman executor does, so a queued build can be withdrawn exactly);
//! - launcher: `GearmanExecutor::start` -> gearmand -> `LauncherWorker` -> FakeExecutor
//!   whose builds succeed at once, until the executor sees `Succeeded`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use executor_base::testkit::daemon::tcp_reachable;
use executor_base::testkit::fake::{FakeExecutor, Script};
use executor_base::{BuildStatus, Executor, StartConfig};
use executor_gearman::{
    ClientOptions, GearmanClient, GearmanExecutor, GearmanExecutorBuilder, GearmanWorker, JobEvent,
    LauncherWorker, WorkerConfig, WorkerOptions,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

const GEARMAND: &str = "127.0.0.1:4730";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Throughput and latency percentiles of one run.
struct Run {
    name: &'static str,
    per_sec: f64,
    first_data: Vec<Duration>,
    done: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Run {
    fn report(&mut self) {
        self.first_data.sort();
        self.done.sort();
        println!(
            "{:<34} {:>9.0}/s   first WORK_DATA p50 {:>7.2} ms  p99 {:>7.2} ms   done p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.name,
            self.per_sec,
            ms(pct(&self.first_data, 0.5)),
            ms(pct(&self.first_data, 0.99)),
            ms(pct(&self.done, 0.5)),
            ms(pct(&self.done, 0.99)),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `n` tasks with at most `c` in flight; returns (elapsed, per-task results).
async fn drive<F, Fut, T>(n: usize, c: usize, f: F) -> (Duration, Vec<T>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let began = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    while next < n || !inflight.is_empty() {
        while next < n && inflight.len() < c {
            inflight.push(f(next));
            next += 1;
        }
        if let Some(r) = inflight.next().await {
            out.push(r);
        }
    }
    (began.elapsed(), out)
}

async fn raw(
    name: &'static str,
    function: &str,
    n: usize,
    c: usize,
    per_job_connection: bool,
) -> Run {
    let shared = GearmanClient::connect(GEARMAND, ClientOptions::default())
        .await
        .expect("client");
    let (elapsed, times) = drive(n, c, |i| {
        let shared = shared.clone();
        async move {
            let began = Instant::now();
            let client = if per_job_connection {
                GearmanClient::connect(GEARMAND, ClientOptions::default())
                    .await
                    .expect("client")
            } else {
                shared
            };
            let mut job = client
                .submit(
                    function,
                    &format!("raw-{i}-{}", fastrand::u64(..)),
                    Bytes::from_static(b"{}"),
                )
                .await
                .expect("submit");
            let mut first = None;
            while let Some(ev) = job.events.recv().await {
                match ev {
                    JobEvent::Data(_) if first.is_none() => first = Some(began.elapsed()),
                    JobEvent::Complete(_) => break,
                    e if e.is_terminal() => panic!("raw job ended with {e:?}"),
                    _ => {}
                }
            }
            (first.unwrap_or_default(), began.elapsed())
        }
    })
    .await;
    Run {
        name,
        per_sec: n as f64 / elapsed.as_secs_f64(),
        first_data: times.iter().map(|t| t.0).collect(),
        done: times.iter().map(|t| t.1).collect(),
    }
}

async fn launcher(
    name: &'static str,
    exec: &GearmanExecutor,
    n: usize,
    c: usize,
    base_id: u64,
) -> Run {
    let (elapsed, times) = drive(n, c, |i| async move {
        let build = StartConfig::builder(
            base_id + i as u64,
            "http://127.0.0.1:9",
            "busybox:latest",
            "bench-token",
        )
        .build()
        .expect("config");
        let began = Instant::now();
        exec.start(&build).await.expect("start");
        let mut rx = exec.watch(build.build_id).expect("tracked");
        let s = rx
            .wait_for(BuildStatus::is_terminal)
            .await
            .expect("status")
            .clone();
        assert_eq!(s.phase, executor_base::Phase::Succeeded, "{s}");
        let done = began.elapsed();
        let first = exec
            .build_info(build.build_id)
            .and_then(|i| i.time_to_announcement)
            .expect("announced");
        (first, done)
    })
    .await;
    Run {
        name,
        per_sec: n as f64 / elapsed.as_secs_f64(),
        first_data: times.iter().map(|t| t.0).collect(),
        done: times.iter().map(|t| t.1).collect(),
    }
}

fn main() {
    if !tcp_reachable(GEARMAND) {
        eprintln!("dispatch bench skipped: gearmand is not reachable on {GEARMAND}");
        return;
    }
    let n = env("BENCH_BUILDS", 2000);
    let c = env("BENCH_CONCURRENCY", 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tag = format!("{}-{:06x}", std::process::id(), fastrand::u32(..) & 0xff_ffff);

        // Raw echo worker: WORK_DATA then WORK_COMPLETE at once.
        let echo_fn = format!("bench-echo-{tag}");
        let mut opts = WorkerOptions::new(GEARMAND, vec![echo_fn.clone()]);
        opts.max_jobs = c * 2;
        let echo = Arc::new(GearmanWorker::new(opts));
        let mut registered = echo.registered();
        let (stop_echo, stopped) = tokio::sync::oneshot::channel::<()>();
        let echo_task = {
            let echo = echo.clone();
            tokio::spawn(async move {
                echo.run(
                    |job| async move {
                        let _ = job.sink.data(Bytes::from_static(b"{\"number\":1}"));
                        let _ = job.sink.complete(job.data);
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
            })
        };
        registered.wait_for(|r| *r).await.expect("echo worker registered");

        // Launcher over a FakeExecutor whose builds succeed at once.
        let job = format!("bench-{tag}");
        let fake = FakeExecutor::new();
        fake.set_default_script(Script::starting_with(BuildStatus::succeeded()));
        let mut cfg = WorkerConfig::new(GEARMAND, [job.clone()]);
        cfg.max_builds = c * 2;
        let worker = Arc::new(LauncherWorker::new(Arc::new(fake.clone()) as Arc<dyn Executor>, cfg).expect("worker"));
        let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
        let worker_task = {
            let worker = worker.clone();
            tokio::spawn(async move {
                worker
                    .run(async {
                        let _ = worker_stopped.await;
                    })
                    .await
            })
        };
        worker.wait_registered().await;
        let checked = GearmanExecutorBuilder::new().with_server(GEARMAND).with_job(&job).build().await.expect("executor");
        let unchecked = GearmanExecutorBuilder::new()
            .with_server(GEARMAND)
            .with_job(&job)
            .with_check_workers(false)
            .build()
            .await
            .expect("executor");

        // Warm up every path.
        let warm = (n / 10).max(50);
        raw("warm-up", &echo_fn, warm, c, false).await;
        raw("warm-up", &echo_fn, warm, c, true).await;
        launcher("warm-up", &checked, warm, c, 1_000_000).await;

        println!("gearmand {GEARMAND}: {n} jobs per run, {c} in flight");
        let mut runs = vec![
            raw("raw Gearman, shared connection", &echo_fn, n, c, false).await,
            raw("raw Gearman, connection per job", &echo_fn, n, c, true).await,
            launcher("launcher (admin check + submit)", &checked, n, c, 2_000_000).await,
            launcher("launcher (no admin check)", &unchecked, n, c, 3_000_000).await,
        ];
        for r in &mut runs {
            r.report();
        }
        let base = &runs[1];
        for r in &runs[2..] {
            println!(
                "{:<34} throughput x{:.2} of raw per-job-connection (x{:.2} of shared); first WORK_DATA p50 x{:.2}, p99 x{:.2}",
                r.name,
                r.per_sec / base.per_sec,
                r.per_sec / runs[0].per_sec,
                ms(pct(&r.first_data, 0.5)) / ms(pct(&base.first_data, 0.5)),
                ms(pct(&r.first_data, 0.99)) / ms(pct(&base.first_data, 0.99)),
            );
        }
        assert_eq!(fake.calls().start as usize, warm + 2 * n, "every build ran exactly once");

        let _ = stop_worker.send(());
        let _ = stop_echo.send(());
        worker_task.await.expect("worker task").expect("worker");
        echo_task.await.expect("echo task").expect("echo worker");
    });
}
