//! Pre-flight against real gearmand and geard (both answer the admin `status`): the
//! server answers, and a worker is registered for the build's function. Without a
//! worker it fails naming the function; with a launcher worker registered it passes; an
//! unreachable server fails naming its address within the check timeout.

mod common;

use std::time::{Duration, Instant};

use common::{RunningWorker, Server, build, executor_with, unique};
use executor_base::testkit::fake::FakeExecutor;
use executor_base::{Executor, Level, Preflight};
use executor_gearman::GearmanExecutorBuilder;

fn finding<'a>(p: &'a Preflight, prefix: &str) -> &'a executor_base::Finding {
    p.findings
        .iter()
        .find(|f| f.check.starts_with(prefix))
        .unwrap_or_else(|| panic!("no finding {prefix} in {p:#?}"))
}

async fn with_and_without_a_worker(server: Server) {
    let job = unique("pf");
    let e = executor_with(server, &job, |b| b.with_option("preflight.cacheMs", "0")).await;
    let p = e.preflight(&build(1)).await.unwrap();
    assert!(!p.passed(), "{p:#?}");
    assert_eq!(finding(&p, "gearman.server").level, Level::Ok);
    let w = finding(&p, "gearman.workers.");
    assert_eq!(w.check, format!("gearman.workers.build:{job}"));
    assert_eq!(w.level, Level::Fail);
    assert!(w.message.contains(&format!("build:{job}")), "{}", w.message);
    assert!(w.message.contains(&server.addr()), "{}", w.message);

    let worker = RunningWorker::start(server, &job, FakeExecutor::new(), |_| {}).await;
    let p = e.preflight(&build(2)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    let w = finding(&p, "gearman.workers.");
    assert_eq!(w.level, Level::Ok);
    assert!(w.message.starts_with("1 worker"), "{}", w.message);
    worker.kill().await;
}

#[tokio::test]
async fn gearmand_with_and_without_a_worker() {
    if let Some(s) = Server::Gearmand.require() {
        with_and_without_a_worker(s).await;
    }
}

#[tokio::test]
async fn geard_with_and_without_a_worker() {
    if let Some(s) = Server::Geard.require() {
        with_and_without_a_worker(s).await;
    }
}

#[tokio::test]
async fn an_unreachable_server_fails_naming_it_within_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let e = GearmanExecutorBuilder::new()
        .with_server(&addr)
        .with_job("pf")
        .with_option("preflight.timeoutMs", "300")
        .build()
        .await
        .unwrap();
    let t = Instant::now();
    let p = e.preflight(&build(3)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let s = finding(&p, "gearman.server");
    assert_eq!(s.level, Level::Fail);
    assert!(s.message.contains(&addr), "{}", s.message);
    assert_eq!(p.findings.len(), 1, "{p:#?}");
}
