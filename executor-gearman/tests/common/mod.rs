//! Shared helpers of the tests against the real Gearman servers: gearmand 1.1 on
//! 127.0.0.1:4730 and OpenStack's `geard` (PyPI `gear`) on 127.0.0.1:4731 (`SDX_GEARD`
//! overrides it). [`on_both_servers!`] runs a test against each.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use executor_base::engine::RetryPolicy;
use executor_base::testkit::daemon::{require, tcp_reachable};
use executor_base::testkit::fake::FakeExecutor;
use executor_base::{BuildStatus, Executor, StartConfig};
use executor_gearman::{GearmanExecutor, GearmanExecutorBuilder, LauncherWorker, WorkerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const GEARMAND: &str = "127.0.0.1:4730";

/// The Gearman server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// gearmand 1.1.
    Gearmand,
    /// `geard` from OpenStack's `gear` (Zuul's recommended server).
    Geard,
}

impl Server {
    /// `host:port`.
    pub fn addr(self) -> String {
        match self {
            Server::Gearmand => GEARMAND.to_string(),
            Server::Geard => std::env::var("SDX_GEARD").unwrap_or_else(|_| "127.0.0.1:4731".into()),
        }
    }

    /// Whether the server is reachable (skip outside CI, fail in CI).
    pub fn require(self) -> Option<Self> {
        init_tracing();
        let addr = self.addr();
        let hint = match self {
            Server::Gearmand => format!(
                "nothing listens on {addr} (start: gearmand --listen=127.0.0.1 --port=4730 --log-file=stderr)"
            ),
            Server::Geard => format!(
                "nothing listens on {addr} (start: python3 -m venv v && v/bin/pip install gear==0.16.0 && v/bin/geard -d --listen-address 127.0.0.1 -p 4731)"
            ),
        };
        let name = match self {
            Server::Gearmand => "gearmand",
            Server::Geard => "geard",
        };
        require(name, tcp_reachable(&addr), &hint).then_some(self)
    }

    /// Whether the server re-queues a job whose worker's connection drops (gearmand);
    /// `geard` fails it to its client instead.
    pub fn requeues(self) -> bool {
        self == Server::Gearmand
    }
}

/// Runs an `async fn name(server: Server)` test body against gearmand and against
/// `geard`, as `name::gearmand` and `name::geard`.
#[allow(unused_macros)]
macro_rules! on_both_servers {
    ($(#[$attr:meta])* async fn $name:ident($server:ident: Server) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn gearmand() {
                if let Some(s) = crate::common::Server::Gearmand.require() {
                    body(s).await
                }
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn geard() {
                if let Some(s) = crate::common::Server::Geard.require() {
                    body(s).await
                }
            }

            async fn body($server: crate::common::Server) $body
        }
    };
}

/// The longest any test waits for a status change.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Logs to the test output, filtered by `RUST_LOG` (nothing when it is unset).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Whether gearmand is reachable (skip outside CI, fail in CI).
pub fn gearmand() -> bool {
    require(
        "gearmand",
        tcp_reachable(GEARMAND),
        "nothing listens on 127.0.0.1:4730 (start: gearmand --listen=127.0.0.1 --port=4730 --log-file=stderr)",
    )
}

/// A job name no other test (or test run) uses, so tests never take each other's jobs.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// A running launcher worker in a task of its own.
pub struct RunningWorker {
    pub worker: Arc<LauncherWorker>,
    pub fake: FakeExecutor,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), executor_base::Error>>,
}

impl RunningWorker {
    /// Starts a worker for `job` over `fake`, `tweak`ing its config; returns once its
    /// functions are registered on gearmand.
    pub async fn start(
        server: Server,
        job: &str,
        fake: FakeExecutor,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> Self {
        let mut cfg = WorkerConfig::new(server.addr(), [job]);
        cfg.max_builds = 64;
        cfg.poll_interval_ms = 20;
        cfg.abandon_check_ms = 100;
        tweak(&mut cfg);
        let worker = Arc::new(
            LauncherWorker::new(Arc::new(fake.clone()) as Arc<dyn Executor>, cfg)
                .expect("worker config"),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let w = worker.clone();
        let task = tokio::spawn(async move {
            w.run(async {
                let _ = rx.await;
            })
            .await
        });
        tokio::time::timeout(SETTLE, worker.wait_registered())
            .await
            .expect("worker registered on gearmand");
        Self {
            worker,
            fake,
            shutdown: Some(tx),
            task,
        }
    }

    /// Asks the worker to drain (as SIGTERM does).
    pub fn drain(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Kills the worker: its task and every connection it holds are dropped at once.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A Gearman executor for `job` with test-friendly timings.
pub async fn executor(server: Server, job: &str) -> GearmanExecutor {
    executor_with(server, job, |b| b).await
}

/// A Gearman executor for `job`, `tweak`ed.
pub async fn executor_with(
    server: Server,
    job: &str,
    tweak: impl FnOnce(GearmanExecutorBuilder) -> GearmanExecutorBuilder,
) -> GearmanExecutor {
    let b = GearmanExecutorBuilder::new()
        .with_server(server.addr())
        .with_job(job)
        .with_liveness_interval(Duration::from_millis(100))
        .with_stop_timeout(Duration::from_secs(10))
        .with_retry(RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        });
    tweak(b).build().await.expect("executor config")
}

/// A start config for build `id`.
pub fn build(id: u64) -> StartConfig {
    StartConfig::builder(
        id,
        "http://127.0.0.1:9",
        "busybox:latest",
        format!("secret-token-{id}"),
    )
    .job_id(7)
    .pipeline_id(3)
    .field("uiUri", "http://127.0.0.1:4200")
    .build()
    .expect("valid start config")
}

/// A random build id (builds of different tests never share an id on the fake).
pub fn build_id() -> u64 {
    u64::from(fastrand::u32(..)) + 1
}

/// Waits until the build's status satisfies `pred`; panics with the last status after
/// [`SETTLE`].
pub async fn wait_for(
    exec: &GearmanExecutor,
    b: &StartConfig,
    pred: impl Fn(&BuildStatus) -> bool,
    what: &str,
) -> BuildStatus {
    let mut rx = exec.watch(b.build_id).expect("a tracked build");
    let r = tokio::time::timeout(SETTLE, rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!(
            "build {} did not reach {what}; last status: {}",
            b.build_id,
            *rx.borrow()
        ),
    }
}

/// Polls the fake until it runs none of `ids`.
pub async fn wait_not_live(fake: &FakeExecutor, ids: &[executor_base::BuildId]) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let live = fake.live_builds();
        if !live.iter().any(|id| ids.contains(id)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still live on the fake: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the fake until `pred` holds for the build's status there.
pub async fn wait_on_fake(
    fake: &FakeExecutor,
    id: u64,
    pred: impl Fn(&BuildStatus) -> bool,
    what: &str,
) -> BuildStatus {
    let stop = executor_base::StopConfig::new(executor_base::BuildId::new(id).expect("positive"));
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let s = fake.status(&stop).await;
        if let Ok(s) = &s
            && pred(s)
        {
            return s.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fake build {id} did not reach {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
