//! A toy [`Executor`]: each build is a Tokio task that "pulls" for a moment, then runs
//! until it is stopped, its run time passes, or its timeout fires (the engine-side
//! backstop every real backend has). It is the smallest complete backend: options parsed
//! with the shared config types, typed errors, the status state machine, stats, gc, and
//! the conformance suite in `tests/conformance.rs`. Copy it to start a new backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use executor_base::{
    BuildCounter, BuildId, BuildStatus, Error, ErrorKind, Executor, GcReport, ResourceTable, StartConfig, Stats,
    StopConfig, TimeoutPolicy, Verdict,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// The backend's name, as `screwdriver.cd/executor` and the router know it.
pub const SCHEME: &str = "toy";

/// The toy engine's options (JSON/TOML, camelCase; unknown keys are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ToyConfig {
    /// How long a build "pulls its image" before it runs, in milliseconds.
    pub pull_millis: u64,
    /// How long a build runs before it succeeds, in seconds; `None` runs it until it is
    /// stopped or times out.
    pub run_seconds: Option<u64>,
    /// Build timeouts (`screwdriver.cd/timeout`, default and cap).
    pub timeout: TimeoutPolicy,
    /// What the CPU and RAM tiers mean.
    pub resources: ResourceTable,
}

impl Default for ToyConfig {
    fn default() -> Self {
        Self { pull_millis: 5, run_seconds: None, timeout: TimeoutPolicy::default(), resources: ResourceTable::default() }
    }
}

impl ToyConfig {
    /// Parses and checks the options ([`ErrorKind::ConfigInvalid`] naming the key).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Error> {
        let c: Self = serde_json::from_value(value.clone())
            .map_err(|e| Error::new(ErrorKind::ConfigInvalid, format!("toy options: {e}")).with_executor(SCHEME))?;
        if c.timeout.max_minutes == 0 {
            return Err(Error::new(ErrorKind::ConfigInvalid, "timeout.maxMinutes: must be at least 1").with_executor(SCHEME));
        }
        Ok(c)
    }
}

#[derive(Debug)]
struct Build {
    status: BuildStatus,
    task: Option<JoinHandle<()>>,
}

type Builds = Arc<Mutex<HashMap<BuildId, Build>>>;

/// The toy backend.
#[derive(Debug, Default)]
pub struct ToyExecutor {
    config: ToyConfig,
    builds: Builds,
    counter: Arc<BuildCounter>,
}

impl ToyExecutor {
    /// A toy engine with these options.
    pub fn new(config: ToyConfig) -> Self {
        Self { config, ..Self::default() }
    }
}

/// Moves a build on, unless it already finished (a stop wins over a late step).
fn advance(builds: &Builds, counter: &BuildCounter, id: BuildId, next: BuildStatus) {
    if let Some(b) = builds.lock().get_mut(&id).filter(|b| !b.status.is_terminal()) {
        if next.is_terminal() {
            counter.finished(&next);
        }
        b.status = next;
    }
}

/// The "engine": one task per build.
async fn run(builds: Builds, counter: Arc<BuildCounter>, id: BuildId, pull: Duration, run: Option<Duration>, timeout: Duration) {
    tokio::time::sleep(pull).await;
    advance(&builds, &counter, id, BuildStatus::running());
    let outcome = match run {
        Some(run) if run < timeout => {
            tokio::time::sleep(run).await;
            BuildStatus::succeeded()
        }
        _ => {
            tokio::time::sleep(timeout).await;
            BuildStatus::timed_out(format!("stopped by the engine after {} minutes", timeout.as_secs() / 60))
        }
    };
    advance(&builds, &counter, id, outcome);
}

#[async_trait]
impl Executor for ToyExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let id = build.build_id;
        let mut builds = self.builds.lock();
        if builds.get(&id).is_some_and(|b| !b.status.is_terminal()) {
            let e = Error::new(ErrorKind::AlreadyExists, format!("build {id} is already running"));
            return Err(e.with_executor(SCHEME).with_operation("start"));
        }
        let a = &build.annotations;
        let (cpu, mib) = (self.config.resources.cpu_millis(a.cpu()), self.config.resources.memory_bytes(a.ram()) >> 20);
        let status = BuildStatus::pending(format!("queued with {cpu}m CPU and {mib} MiB"));
        let (pull, run_for) = (Duration::from_millis(self.config.pull_millis), self.config.run_seconds.map(Duration::from_secs));
        let engine = run(self.builds.clone(), self.counter.clone(), id, pull, run_for, self.config.timeout.duration(a));
        builds.insert(id, Build { status, task: Some(tokio::spawn(engine)) });
        self.counter.started();
        Ok(())
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        if let Some(b) = self.builds.lock().get_mut(&build.build_id).filter(|b| !b.status.is_terminal()) {
            if let Some(task) = b.task.take() {
                task.abort();
            }
            b.status = BuildStatus::canceled();
            self.counter.stopped();
        }
        Ok(())
    }

    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        self.status(&build.to_stop()).await.map(|s| Verdict::from_status(&s))
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        let builds = self.builds.lock();
        let b = builds.get(&build.build_id).ok_or_else(|| Error::build_not_found(build.build_id).with_executor(SCHEME))?;
        Ok(b.status.clone())
    }

    fn stats(&self) -> Stats {
        Stats { builds: self.counter.snapshot(), ..Stats::default() }
    }

    async fn cleanup(&self) -> Result<(), Error> {
        self.gc(false).await.map(|_| ())
    }

    /// Forgets finished builds (the toy's only "resources").
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let mut builds = self.builds.lock();
        let done: Vec<BuildId> = builds.iter().filter(|(_, b)| b.status.is_terminal()).map(|(id, _)| *id).collect();
        if !dry_run {
            builds.retain(|_, b| !b.status.is_terminal());
        }
        Ok(GcReport { dry_run, expired: done.iter().map(|id| format!("build/{id}")).collect() })
    }
}
