//! The launcher worker: makes any [`Executor`] a Zuul-compatible Gearman launcher.
//!
//! Two worker connections to gearmand:
//!
//! - the **build** connection registers `build:<job>` and `build:<job>:<node>` and runs up
//!   to `maxBuilds` builds at once (see [`build`](self) for the life of one build);
//! - the **control** connection registers `stop:<manager>` and
//!   `set_description:<manager>`. It is separate so a stop is taken even while every
//!   build slot is busy, and it stays up during a drain so running builds can still be
//!   stopped.
//!
//! Each build runs in a driver task of its own ([`driver`](self)), holding one of the
//! `maxBuilds` slots; the jobs of its `ZUUL_UUID` are attached to it and report it
//! ([`build`](self)). A build survives its job's connection: gearmand re-queues the job
//! and the next job of that uuid is attached to the running build, never a second run.
//! With a `stateDir` ([`state`](self)) the worker records its builds, and a restarted
//! worker adopts or stops the previous incarnation's builds before it takes work
//! ([`adopt`](self)); `sdx gc` settles the builds of a worker that was not restarted
//! ([`gc`]).
//!
//! Draining (SIGTERM/SIGUSR1 through [`shutdown_signal`], or a build with
//! `OFFLINE_NODE_WHEN_COMPLETE`): the build connection stops grabbing jobs, the running
//! builds finish and report, then both connections unregister (`RESET_ABILITIES`) and
//! close. The build functions are *not* unregistered while builds run, because gearmand
//! re-queues a worker's running jobs of a function it sends `CANT_DO` for; until the
//! worker exits, new jobs for its functions wait in gearmand's queue for another
//! launcher. With `drainTimeoutSecs`, builds still running when it passes are stopped
//! and reported `ABORTED`.

mod adopt;
mod build;
pub mod config;
mod control;
mod driver;
pub mod gc;
mod registry;
mod state;

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use executor_base::{Error, Executor};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::GearmanClient;
use crate::gearman_worker::{GearmanWorker, WorkerOptions};
use config::{ValidWorkerConfig, WorkerConfig};
use registry::Registry;
use state::StateDir;

/// How many recorded build descriptions are kept.
const MAX_DESCRIPTIONS: usize = 1000;

/// A launcher worker; see the module docs.
///
/// ```no_run
/// # async fn demo(executor: std::sync::Arc<dyn executor_base::Executor>) -> Result<(), executor_base::Error> {
/// use executor_gearman::{LauncherWorker, WorkerConfig, shutdown_signal};
/// let worker = LauncherWorker::new(executor, WorkerConfig::new("127.0.0.1:4730", ["unit"]))?;
/// println!("stop function: stop:{}", worker.manager());
/// worker.run(shutdown_signal()).await
/// # }
/// ```
#[derive(Debug)]
pub struct LauncherWorker {
    launcher: Arc<Launcher>,
    builds: GearmanWorker,
    control: GearmanWorker,
}

/// Runs a launcher worker over `executor` until `shutdown` resolves and the running
/// builds are finished (see [`LauncherWorker`]). The entry point of `sdx gearman-worker`.
pub async fn run_worker(
    executor: Arc<dyn Executor>,
    cfg: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    LauncherWorker::new(executor, cfg)?.run(shutdown).await
}

/// Resolves on SIGTERM, SIGUSR1 (Zuul's graceful-stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let usr1 = signal(SignalKind::user_defined1());
        if let (Ok(mut term), Ok(mut usr1)) = (term, usr1) {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = usr1.recv() => tracing::info!("SIGUSR1: draining"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
            }
            return;
        }
    }
    // Without Unix signals, Ctrl-C alone; if even that cannot be watched, never resolve.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl LauncherWorker {
    /// A launcher over `executor`; validates `cfg` ([`executor_base::ErrorKind::ConfigInvalid`]
    /// naming the key).
    ///
    /// With a `stateDir`, the directory is locked here (a second worker on it is
    /// refused) and the manager name kept there is used unless one is configured.
    pub fn new(executor: Arc<dyn Executor>, cfg: WorkerConfig) -> Result<Self, Error> {
        let mut cfg = cfg.validate()?;
        let state = match &cfg.raw.state_dir {
            Some(dir) => Some(Arc::new(StateDir::open(Path::new(dir))?)),
            None => None,
        };
        if let Some(state) = &state
            && !cfg.manager_configured
        {
            cfg.manager = state.manager(config::default_manager)?;
            cfg.stop_function = format!("stop:{}", cfg.manager);
            cfg.description_function = format!("set_description:{}", cfg.manager);
        }
        let options = |functions: Vec<String>, max_jobs: usize, role: &str| WorkerOptions {
            client_id: Some(format!("{}:{role}", cfg.manager)),
            max_jobs,
            connect_timeout: cfg.connect_timeout,
            max_packet_size: cfg.raw.max_packet_size,
            ..WorkerOptions::new(cfg.raw.server.clone(), functions)
        };
        let builds =
            GearmanWorker::new(options(cfg.functions.clone(), cfg.raw.max_builds, "builds"));
        let control = GearmanWorker::new(options(
            vec![cfg.stop_function.clone(), cfg.description_function.clone()],
            16,
            "control",
        ));
        let launcher = Arc::new(Launcher {
            executor,
            number: AtomicU64::new(first_number()),
            registry: Mutex::new(Registry::default()),
            descriptions: Mutex::new(VecDeque::new()),
            offline: CancellationToken::new(),
            abort: CancellationToken::new(),
            watcher: OnceLock::new(),
            unique_unanswered: AtomicBool::new(false),
            manager: cfg.manager.clone(),
            state,
            cfg,
        });
        Ok(Self {
            launcher,
            builds,
            control,
        })
    }

    /// The manager name (`stop:<manager>` stops this worker's builds).
    pub fn manager(&self) -> &str {
        &self.launcher.cfg.manager
    }

    /// The `build:` functions this worker registers.
    pub fn functions(&self) -> &[String] {
        &self.launcher.cfg.functions
    }

    /// Resolves once both connections are up with every function registered.
    pub async fn wait_registered(&self) {
        let mut a = self.builds.registered();
        let mut b = self.control.registered();
        // `wait_for` only fails when the sender is dropped, which outlives `self`.
        let _ = a.wait_for(|r| *r).await;
        let _ = b.wait_for(|r| *r).await;
    }

    /// `true` while the build connection is up and registered.
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.builds.registered()
    }

    /// Builds running now (also those whose job's connection dropped).
    pub fn running(&self) -> usize {
        self.launcher.registry.lock().running()
    }

    /// The last HTML description `set_description:<manager>` recorded for a build.
    pub fn description(&self, name: &str, number: u64) -> Option<String> {
        self.launcher
            .descriptions
            .lock()
            .iter()
            .rev()
            .find(|(n, k, _)| n == name && *k == number)
            .map(|(_, _, d)| d.clone())
    }

    /// Takes jobs until `shutdown` resolves (or a build asks to take the node offline),
    /// then drains: see the module docs.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let l = &self.launcher;
        let drain = CancellationToken::new();
        let builds_done = CancellationToken::new();
        tracing::info!(
            manager = %l.cfg.manager,
            functions = ?l.cfg.functions,
            executor = l.executor.name(),
            state_dir = ?l.cfg.raw.state_dir,
            "gearman launcher starting"
        );
        // The previous incarnation's builds first: adopted or stopped before any job.
        let adopted = l.adopt(|| self.builds.try_slot()).await;
        if adopted > 0 {
            tracing::info!(adopted, "adopted running builds of the previous worker");
        }
        let build_side = async {
            let stop_taking = async {
                tokio::select! {
                    _ = shutdown => {}
                    _ = l.offline.cancelled() => tracing::info!("a build asked to take the node offline: draining"),
                }
                drain.cancel();
            };
            let launcher = l.clone();
            let r = self
                .builds
                .run(move |job| launcher.clone().run_build(job), stop_taking)
                .await;
            builds_done.cancel();
            r
        };
        let control_side = {
            let launcher = l.clone();
            self.control.run(
                move |job| launcher.clone().run_control(job),
                builds_done.cancelled(),
            )
        };
        let drain_bound = async {
            drain.cancelled().await;
            if let Some(t) = l.cfg.drain_timeout {
                tokio::select! {
                    _ = tokio::time::sleep(t) => {
                        tracing::warn!(running = l.registry.lock().running(), "drain timeout: stopping running builds");
                        l.abort.cancel();
                    }
                    _ = builds_done.cancelled() => {}
                }
            }
        };
        let drain_bound = async {
            tokio::select! {
                _ = drain_bound => {}
                _ = builds_done.cancelled() => {}
            }
        };
        let (b, c, ()) = tokio::join!(build_side, control_side, drain_bound);
        b.and(c).map_err(Error::from)?;
        tracing::info!(manager = %l.cfg.manager, "gearman launcher stopped");
        Ok(())
    }
}

/// A random start for build numbers, so numbers of different workers (and restarts)
/// do not collide; below 2^52 so they stay exact in JSON numbers everywhere.
fn first_number() -> u64 {
    (fastrand::u64(..) >> 13) | 1
}

/// State shared by the worker's job handlers and build drivers.
#[derive(Debug)]
struct Launcher {
    executor: Arc<dyn Executor>,
    cfg: ValidWorkerConfig,
    /// The manager name (`stop:<manager>`).
    manager: String,
    /// The next build number.
    number: AtomicU64,
    /// Running and recently finished builds.
    registry: Mutex<Registry>,
    /// Recorded descriptions, oldest first: (job name, number, HTML).
    descriptions: Mutex<VecDeque<(String, u64, String)>>,
    /// Cancelled by a build with `OFFLINE_NODE_WHEN_COMPLETE`: stop taking builds.
    offline: CancellationToken,
    /// Cancelled when the drain timeout passes: stop the running builds.
    abort: CancellationToken,
    /// A client connection for job checks (`GET_STATUS`), made on first use.
    watcher: OnceLock<GearmanClient>,
    /// Set once the server is seen not to answer `GET_STATUS_UNIQUE` (`geard`).
    unique_unanswered: AtomicBool,
    /// Where builds are recorded, if anywhere (shared with the blocking threads that
    /// write the records).
    state: Option<Arc<StateDir>>,
}

impl Launcher {
    fn next_number(&self) -> u64 {
        self.number.fetch_add(1, Ordering::Relaxed)
    }

    fn record_description(&self, name: String, number: u64, html: String) {
        let mut d = self.descriptions.lock();
        d.retain(|(n, k, _)| !(n == &name && *k == number));
        d.push_back((name, number, html));
        while d.len() > MAX_DESCRIPTIONS {
            d.pop_front();
        }
    }
}
