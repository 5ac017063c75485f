//! Shared watch vs. a GET per status call, against the fake API server.
//!
//! `cargo bench -p executor-k8s --bench watch_vs_get [-- <builds>]` (default 1,000).
//!
//! The fake runs in a child process (this same binary with `SDX_K8S_BENCH_CHILD=1`, its
//! kubelet running every new pod), so the parent's counting allocator sees only the
//! executor's memory. For each mode, in one run: `builds` concurrent starts, 20 status
//! calls per build, a stop per build; then
//! - API requests per build (every HTTP request the executor's client sent, the watch's
//!   list and watch requests included),
//! - heap bytes per tracked build: what stopping the builds and forgetting them
//!   (`cleanup` with no retention) gives back, measured after a warm-up cycle so the
//!   HTTP connection pool is the same size before and after,
//! - wall time of the 20 x `builds` status calls,
//! - latency from a pod status change (written through the API) to `status()` seeing
//!   it, and the requests spent while waiting.

use std::alloc::System;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::{Executor, Phase, StartConfig, StopConfig};
use executor_k8s::fake::{AutoKubelet, FakeApiServer};
use executor_k8s::{K8sExecutor, K8sExecutorBuilder};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// Counts heap bytes (the parent process holds only the executors).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes now.
fn live() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

const CHILD: &str = "SDX_K8S_BENCH_CHILD";
const STATUS_CALLS: usize = 20;
const LATENCY_SAMPLES: usize = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(CHILD).is_some() {
        rt.block_on(child());
        return;
    }
    let builds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    rt.block_on(parent(builds));
}

/// The fake API server process: prints its URL, serves until stdin closes. A line
/// `create <namespace> <count>` on stdin creates that many build pods (as another
/// executor would), which the parent's watch then caches.
async fn child() {
    let fake = FakeApiServer::start_with(1_000_000).await;
    let _kubelet = fake.auto_kubelet(AutoKubelet::RunUntilDeleted);
    println!("{}", fake.url());
    std::io::stdout().flush().expect("flush");
    let f = fake.clone();
    tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["create", ns, count] = words.as_slice() {
                for i in 0..count.parse::<u64>().expect("count") {
                    let id = 2_000_000 + i;
                    let pod: Pod = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("other-{id}-abcde"), "labels": {
                            "app": "screwdriver", "tier": "builds", "sdbuild": format!("other-{id}"),
                            "screwdriver.cd/build-id": id.to_string()}},
                        "spec": {"containers": [{"name": format!("other-{id}"), "image": "busybox"}]}
                    }))
                    .expect("pod");
                    f.create_pod(ns, &pod).expect("create");
                    if i % 20 == 19 {
                        // Let the watcher keep up, so no stream buffer grows to a backlog.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            line.clear();
        }
    })
    .await
    .expect("stdin reader");
}

struct Figures {
    mode: &'static str,
    requests_per_build: f64,
    start_reqs: u64,
    status_reqs: u64,
    stop_reqs: u64,
    est_bytes_per_build: f64,
    status_wall: Duration,
    latency: Vec<Duration>,
    latency_reqs: u64,
}

fn config(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9/", "busybox:latest", "bench-token")
        .job_id(1)
        .build()
        .expect("start config")
}

async fn executor(url: &str, ns: &str, watch: bool) -> K8sExecutor {
    let e = K8sExecutorBuilder::new()
        .with_url(url)
        .with_namespace(ns)
        .with_prefix("bench-")
        .with_watch(watch)
        .with_rate_limit(1_000_000, 1_000_000)
        .with_retry(RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        })
        .with_breaker(BreakerConfig {
            max_failures: 0,
            call_timeout: Duration::from_secs(120),
            ..BreakerConfig::default()
        })
        .build()
        .await
        .expect("executor");
    if watch {
        e.wait_synced(Duration::from_secs(30))
            .await
            .expect("synced");
    }
    e
}

/// Waits until every build is seen `Running` (free with the watch; the baseline just
/// waits, so its cache holds nothing it did not GET).
async fn wait_running(e: &K8sExecutor, stops: &[StopConfig], watch: bool) {
    if !watch {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    }
    loop {
        let running = join_all(stops.iter().map(|b| e.status(b)))
            .await
            .into_iter()
            .filter(|s| s.as_ref().is_ok_and(|s| s.phase == Phase::Running))
            .count();
        if running == stops.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reqs(e: &K8sExecutor) -> u64 {
    e.api_requests().expect("our own client")
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn run(url: &str, mode: &'static str, watch: bool, first_id: u64, n: usize) -> Figures {
    let ns = if watch { "bench-watch" } else { "bench-get" };
    let e = executor(url, ns, watch).await;
    let ids: Vec<u64> = (first_id..first_id + n as u64).collect();
    let starts: Vec<StartConfig> = ids.iter().map(|id| config(*id)).collect();
    let stops: Vec<StopConfig> = starts.iter().map(StartConfig::to_stop).collect();
    settle().await;
    let empty = e.cache_stats();

    let r0 = reqs(&e);
    for r in join_all(starts.iter().map(|b| e.start(b))).await {
        r.expect("start");
    }
    let r1 = reqs(&e);

    wait_running(&e, &stops, watch).await;

    let r2 = reqs(&e);
    let t = Instant::now();
    for _ in 0..STATUS_CALLS {
        for s in join_all(stops.iter().map(|b| e.status(b))).await {
            assert_eq!(s.expect("status").phase, Phase::Running);
        }
    }
    let status_wall = t.elapsed();
    let r3 = reqs(&e);
    // Both modes now hold every pod: the watch cached them, the baseline kept its GETs.
    let cache = e.cache_stats();
    assert_eq!((cache.tracked_builds, cache.cached_pods), (n, n));

    // Latency of a status change: make one pod succeed through the API, poll status().
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let mut latency = Vec::with_capacity(LATENCY_SAMPLES);
    let mut latency_reqs = 0;
    for (id, b) in ids.iter().zip(&stops).take(LATENCY_SAMPLES) {
        let name = pods
            .list(&ListParams::default().labels(&format!("sdbuild=bench-{id}")))
            .await
            .expect("list")
            .items
            .remove(0)
            .metadata
            .name
            .expect("name");
        let patch = serde_json::json!({"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": format!("bench-{id}"), "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2027-01-01T00:00:00Z"}}}]}});
        let before = reqs(&e);
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
        let t = Instant::now();
        // Any terminal status: the change is seen. (Without the launch handshake in the
        // container's termination message an exit 0 is `Failed`, not `Succeeded`, since
        // native mode checks it; waiting for `Succeeded` never ended.)
        loop {
            if e.status(b).await.expect("status").is_terminal() {
                break;
            }
            tokio::task::yield_now().await;
        }
        latency.push(t.elapsed());
        latency_reqs += reqs(&e) - before;
    }

    let r4 = reqs(&e);
    for r in join_all(stops.iter().map(|b| e.stop(b))).await {
        r.expect("stop");
    }
    let r5 = reqs(&e);
    let start_reqs = r1 - r0;
    let status_reqs = r3 - r2;
    let stop_reqs = r5 - r4;
    // Everything the client sent before the first start: the shared watch's list and
    // watch requests (none without the watch), measured, not assumed.
    let setup_reqs = r0;
    latency.sort();
    Figures {
        mode,
        requests_per_build: (start_reqs + status_reqs + stop_reqs + setup_reqs) as f64 / n as f64,
        start_reqs,
        status_reqs,
        stop_reqs,
        est_bytes_per_build: (cache.estimated_bytes as f64 - empty.estimated_bytes as f64)
            / n as f64,
        status_wall,
        latency,
        latency_reqs,
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn print(f: &Figures, n: usize) {
    println!("{}:", f.mode);
    println!(
        "  API requests per build (start -> {STATUS_CALLS} status -> stop): {:.3}  (start {}, status {}, stop {} over {n} builds)",
        f.requests_per_build, f.start_reqs, f.status_reqs, f.stop_reqs
    );
    println!(
        "  status cache per tracked build: {:.0} bytes (the executor's estimate)",
        f.est_bytes_per_build
    );
    println!(
        "  {} status calls: {:?} ({:.2} us/call)",
        STATUS_CALLS * n,
        f.status_wall,
        f.status_wall.as_secs_f64() * 1e6 / (STATUS_CALLS * n) as f64
    );
    println!(
        "  status change -> status(): p50 {:?}, p95 {:?}, max {:?} ({} samples, {} requests while waiting)",
        pct(&f.latency, 0.5),
        pct(&f.latency, 0.95),
        f.latency.last().copied().unwrap_or_default(),
        f.latency.len(),
        f.latency_reqs
    );
}

/// Checks the estimator: a watch-only executor caches `n` pods created inside the fake
/// process (no requests of ours), then is dropped; what the drop gives back, minus what
/// dropping an executor with an empty cache gives back, is what the cache held.
/// Returns (measured, estimated) bytes per pod.
async fn cross_check(url: &str, stdin: &mut std::process::ChildStdin, n: usize) -> (f64, f64) {
    let empty = executor(url, "bench-empty", true).await;
    settle().await;
    let m0 = live();
    drop(empty);
    settle().await;
    let fixed = m0 - live();

    let e = executor(url, "bench-check", true).await;
    writeln!(stdin, "create bench-check {n}").expect("command the fake");
    stdin.flush().expect("flush");
    while e.cache_stats().cached_pods < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle().await;
    let estimated = e.cache_stats().estimated_bytes as f64 / n as f64;
    let m1 = live();
    drop(e);
    settle().await;
    ((m1 - live() - fixed) as f64 / n as f64, estimated)
}

async fn parent(n: usize) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the fake API server");
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("read the fake's URL");
    let url = url.trim().to_string();
    println!("k8s executor benchmark: {n} concurrent builds against the fake API server at {url}");
    let mut stdin = child.stdin.take().expect("stdin");
    let check = 5 * n;
    let (measured, estimated) = cross_check(&url, &mut stdin, check).await;
    let watch = run(&url, "shared watch (status from the cache)", true, 1, n).await;
    let get = run(&url, "baseline (GET per status call)", false, 1_000_001, n).await;
    print(&watch, n);
    print(&get, n);
    println!("ratios (baseline / watch):");
    println!(
        "  requests per build: {:.1}x",
        get.requests_per_build / watch.requests_per_build
    );
    println!(
        "  status call time: {:.1}x",
        get.status_wall.as_secs_f64() / watch.status_wall.as_secs_f64()
    );

    println!(
        "estimator check: {check} pods cached by a watch-only executor: dropping it frees {measured:.0} bytes/pod (allocator), estimate {estimated:.0} bytes/pod"
    );
    drop(stdin);
    let _ = child.wait();
}
