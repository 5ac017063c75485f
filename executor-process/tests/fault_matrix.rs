//! The testkit's fault matrix (issue #17) for the process backend: the scenarios that
//! apply. The process backend has no engine on the other side of a connection (it forks
//! `launch` itself), so the proxy's connection and HTTP faults have nothing to stand
//! between; what applies is a start dropped half-way (its future cancelled 0 to 30 ms in:
//! a local start takes a few ms, so the points fall before the claim, between the claim
//! and the spawn, and after the spawn), then stop and gc: nothing may be left running or
//! on disk (no token file), and the next build must start.
//!
//! A start killed with its *process* (SIGKILL of `sdx serve` inside `start`) is the
//! restart matrix's "inside the executor's start" case (`executor-cli/tests/restart.rs`).
//!
//! Default settings (only the job tools and the state directory are set). Every wait is
//! bounded: a scenario that does not end within [`SCENARIO_BOUND`] fails, naming itself,
//! instead of hanging the run.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use executor_base::testkit::faults::{FaultMatrixConfig, Leftovers, Scenario, run_scenario};
use executor_base::testkit::proxy::FaultProxy;
use executor_base::{ErrorKind, Executor, Phase};
use executor_process::ProcessExecutorBuilder;
use futures::FutureExt;

/// The longest one scenario (start, stop, gc, a recovery build) may take.
const SCENARIO_BOUND: Duration = Duration::from_secs(60);
/// The longest a `status` of a build whose start was cancelled may take.
const STATUS_BOUND: Duration = Duration::from_secs(5);

/// Pids of live processes carrying build `dir`'s `SD_PROCESS_BUILD` marker.
fn marked(dir: &Path) -> Vec<String> {
    let marker = format!("SD_PROCESS_BUILD={}", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
        })
        .map(|pid| format!("process {pid}"))
        .collect()
}

/// What is left of build `id` under `builds`: live marked processes, its token file, and
/// the temporary directory of a start that never claimed its id.
fn leftovers_of(builds: &Path, id: u64) -> Vec<String> {
    let dir = builds.join(id.to_string());
    let mut left = marked(&dir);
    if dir.join("token").exists() {
        left.push(format!("token file {}", dir.join("token").display()));
    }
    let tmp = format!(".{id}.");
    for e in std::fs::read_dir(builds).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&tmp) {
            left.push(format!("unclaimed start {}", e.path().display()));
        }
    }
    left
}

async fn executor(tools: &Path, state: &Path) -> Arc<dyn Executor> {
    Arc::new(
        // From the environment first: CI runs this again with `EXECUTOR_PROCESS_ZYGOTE=false`.
        ProcessExecutorBuilder::from_env()
            .with_job_tools(tools)
            .with_state_dir(state)
            .build()
            .await
            .expect("valid options"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_dropped_half_way_leaves_nothing_after_stop_and_gc() {
    let tools = common::job_tools("exec sleep 3600");
    let state = tempfile::tempdir().unwrap();
    let builds = state.path().join("builds");
    let leftovers: Leftovers = Arc::new(move |id| {
        let builds = builds.clone();
        async move { leftovers_of(&builds, id.get()) }.boxed()
    });
    // Nothing goes through it: the process backend has no engine connection.
    let proxy = FaultProxy::tcp("127.0.0.1:9").await.expect("proxy");
    let cfg = FaultMatrixConfig {
        first_build_id: 6_100_000,
        http: false,
        leftovers: Some(leftovers),
        ..Default::default()
    };
    let mut table = Vec::new();
    for (i, us) in [0u64, 50, 200, 1_000, 3_000, 10_000, 30_000]
        .into_iter()
        .enumerate()
    {
        let exec = executor(tools.path(), state.path()).await;
        let sc = Scenario::CrashMidStart(Duration::from_micros(us));
        let first = cfg.first_build_id + 10 * i as u64;
        let o = tokio::time::timeout(SCENARIO_BOUND, run_scenario(exec, &proxy, &cfg, &sc, first))
            .await
            .unwrap_or_else(|_| {
                panic!("fault matrix: {sc}: did not end within {SCENARIO_BOUND:?}")
            });
        table.push(format!(
            "| {} | {} | {:.1} s | {:.1} s |",
            o.scenario,
            o.answered,
            o.call.as_secs_f64(),
            o.recovery.as_secs_f64()
        ));
    }
    println!("{}", table.join("\n"));
}

/// A start whose future is dropped at many points: `status` answers at once (pending or
/// running, never a hang), the build is either fully started or not at all (never a
/// claimed directory without a process), `stop` ends it within the default grace, and
/// `gc` leaves nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_start_is_whole_status_answers_and_stop_and_gc_clean_up() {
    let tools = common::job_tools("exec sleep 3600");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path()).await;
    let builds = state.path().join("builds");
    for (i, us) in [0u64, 20, 100, 300, 1_000, 2_000, 5_000]
        .into_iter()
        .enumerate()
    {
        let b = common::build(6_200_000 + i as u64, "a-secret-token");
        let stop = b.to_stop();
        let (e, bb) = (exec.clone(), b.clone());
        // Set in the poll that calls `start` (which hands the start to a task of its own
        // in that same poll): a task aborted before its first poll started nothing.
        let polled = Arc::new(AtomicBool::new(false));
        let p = polled.clone();
        let task = tokio::spawn(async move {
            p.store(true, Ordering::SeqCst);
            e.start(&bb).await
        });
        tokio::time::sleep(Duration::from_micros(us)).await;
        task.abort();
        let _ = task.await;
        let t = Instant::now();
        let s = tokio::time::timeout(STATUS_BOUND, exec.status(&stop))
            .await
            .unwrap_or_else(|_| panic!("{us} µs: status did not answer within {STATUS_BOUND:?}"));
        match s {
            Ok(s) => assert!(
                matches!(s.phase, Phase::Pending | Phase::Running),
                "{us} µs: a dropped start is {s}"
            ),
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{us} µs: {e}"),
        }
        if !polled.load(Ordering::SeqCst) {
            // Dropped before it began: nothing of it may exist.
            assert_eq!(
                exec.status(&stop).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            let left = leftovers_of(&builds, b.build_id.get());
            assert!(left.is_empty(), "{us} µs: left {left:?}");
            assert!(!builds.join(b.build_id.to_string()).exists());
            continue;
        }
        // The start completed in the background: the build runs, watched by a reaper.
        let running = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(s) = exec.status(&stop).await
                    && s.phase == Phase::Running
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(running.is_ok(), "{us} µs: the build never ran");
        tokio::time::timeout(Duration::from_secs(30), exec.stop(&stop))
            .await
            .unwrap_or_else(|_| panic!("{us} µs: stop hung"))
            .unwrap();
        let s = tokio::time::timeout(STATUS_BOUND, exec.status(&stop))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.phase, Phase::Canceled, "{us} µs: {s}");
        assert!(t.elapsed() < Duration::from_secs(30));
        exec.gc(false).await.unwrap();
        let left = leftovers_of(&builds, b.build_id.get());
        assert!(left.is_empty(), "{us} µs: left {left:?}");
    }
}
