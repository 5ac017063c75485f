//! SIGUSR1 and SIGTERM drain the launcher (alone in this test binary: it signals its
//! own process).

mod common;

use std::time::Duration;

use common::*;
use executor_base::testkit::fake::{FakeExecutor, Script};
use executor_base::{BuildStatus, Executor, Phase};
use executor_gearman::{LauncherWorker, WorkerConfig, shutdown_signal};

fn signal_self(sig: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_start_a_graceful_drain() {
    // SIGUSR1 (Zuul's graceful stop) resolves the shutdown future. Polled once first, so
    // its handlers are installed before the signal is sent.
    let mut usr1 = Box::pin(shutdown_signal());
    assert!(futures::poll!(&mut usr1).is_pending());
    signal_self("USR1");
    tokio::time::timeout(SETTLE, usr1)
        .await
        .expect("SIGUSR1 seen");

    if !gearmand() {
        return;
    }
    // SIGTERM: the worker stops taking builds, finishes the running one, then exits.
    let job = unique("sigterm");
    let fake = FakeExecutor::new();
    fake.set_default_script(Script::run_until_stopped());
    let mut cfg = WorkerConfig::new(GEARMAND, [job.clone()]);
    cfg.poll_interval_ms = 20;
    let worker = LauncherWorker::new(
        std::sync::Arc::new(fake.clone()) as std::sync::Arc<dyn Executor>,
        cfg,
    )
    .unwrap();
    let mut term = Box::pin(shutdown_signal());
    assert!(futures::poll!(&mut term).is_pending());
    let worker = std::sync::Arc::new(worker);
    let task = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.run(term).await })
    };
    tokio::time::timeout(SETTLE, worker.wait_registered())
        .await
        .expect("registered");
    let exec = executor(Server::Gearmand, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    signal_self("TERM");
    // Still running: the drain waits for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !task.is_finished(),
        "the worker left a running build behind"
    );
    fake.set_status(b.build_id, BuildStatus::succeeded())
        .unwrap();
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Succeeded);
    tokio::time::timeout(SETTLE, task)
        .await
        .expect("worker exited")
        .unwrap()
        .unwrap();
}
