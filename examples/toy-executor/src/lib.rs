//! A toy [`Executor`]: each build is a Tokio task that "pulls" for a moment, then runs
//! until it is stopped, its run time passes, or its timeout fires (the engine-side
//! backstop every real backend has). It is the smallest complete backend: options parsed
//! with the shared config types, typed errors, the status state machine, stats, gc, and
//! the conformance suite in `tests/conformance.rs`. Copy it to start a new backend.
//!
//! Dependencies: `executor-base` (the contract and shared types), `tokio` (its tasks and
//! timers are the toy "engine"), `async-trait` (the trait is async and object-safe),
//! `serde`/`serde_json` (options), `parking_lot` (a small lock that cannot be poisoned).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use executor_base::{
    BuildCounter, BuildId, BuildStatus, Error, ErrorKind, Executor, GcReport, ResourceTable,
    StartConfig, Stats, StopConfig, TimeoutPolicy,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// The backend's name, as `screwdriver.cd/executor` and the router know it.
pub const SCHEME: &str = "toy";

/// The toy engine's options (JSON/TOML, camelCase; unknown keys are refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ToyConfig {
    /// How long a build "pulls its image" before it runs, in milliseconds (default 0).
    pub pull_millis: u64,
    /// How long a build runs before it succeeds, in seconds; `None` (the default) runs it
    /// until it is stopped or times out.
    pub run_seconds: Option<u64>,
    /// Build timeouts (`screwdriver.cd/timeout`, default and cap).
    pub timeout: TimeoutPolicy,
    /// What the CPU and RAM tiers mean.
    pub resources: ResourceTable,
}

impl ToyConfig {
    /// Parses and checks the options ([`ErrorKind::ConfigInvalid`] naming the key).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Error> {
        let bad = |m: String| Error::new(ErrorKind::ConfigInvalid, m).with_executor(SCHEME);
        let c: Self =
            serde_json::from_value(value.clone()).map_err(|e| bad(format!("toy options: {e}")))?;
        match c.timeout.max_minutes {
            0 => Err(bad("timeout.maxMinutes: must be at least 1".into())),
            _ => Ok(c),
        }
    }
}

#[derive(Debug)]
struct Build {
    status: BuildStatus,
    task: Option<JoinHandle<()>>,
}

/// The "engine": the builds, each driven by its own task, and their counters.
#[derive(Debug, Clone, Default)]
struct Engine {
    builds: Arc<Mutex<HashMap<BuildId, Build>>>,
    counter: Arc<BuildCounter>,
}

impl Engine {
    /// Moves a build on, unless it already finished (a stop wins over a late step).
    fn advance(&self, id: BuildId, next: BuildStatus) {
        if let Some(b) = self
            .builds
            .lock()
            .get_mut(&id)
            .filter(|b| !b.status.is_terminal())
        {
            if next.is_terminal() {
                self.counter.finished(&next);
            }
            b.status = next;
        }
    }
}

/// The toy backend.
#[derive(Debug, Default)]
pub struct ToyExecutor {
    config: ToyConfig,
    engine: Engine,
}

impl ToyExecutor {
    /// A toy engine with these options.
    pub fn new(config: ToyConfig) -> Self {
        Self {
            config,
            engine: Engine::default(),
        }
    }
}

#[async_trait]
impl Executor for ToyExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let (id, a, res) = (build.build_id, &build.annotations, &self.config.resources);
        let mut builds = self.engine.builds.lock();
        if builds.get(&id).is_some_and(|b| !b.status.is_terminal()) {
            let e = Error::new(
                ErrorKind::AlreadyExists,
                format!("build {id} is already running"),
            );
            return Err(e.with_executor(SCHEME).with_operation("start"));
        }
        let (cpu, mib) = (res.cpu_millis(a.cpu()), res.memory_bytes(a.ram()) >> 20);
        let status = BuildStatus::pending(format!("queued with {cpu}m CPU and {mib} MiB"));
        let timeout = self.config.timeout.duration(a);
        let (work, outcome) = match self.config.run_seconds.map(Duration::from_secs) {
            Some(run) if run < timeout => (run, BuildStatus::succeeded()),
            _ => (
                timeout,
                BuildStatus::timed_out(format!("stopped by the engine after {timeout:?}")),
            ),
        };
        let (engine, pull) = (
            self.engine.clone(),
            Duration::from_millis(self.config.pull_millis),
        );
        let task = tokio::spawn(async move {
            tokio::time::sleep(pull).await;
            engine.advance(id, BuildStatus::running());
            tokio::time::sleep(work).await;
            engine.advance(id, outcome);
        });
        builds.insert(
            id,
            Build {
                status,
                task: Some(task),
            },
        );
        self.engine.counter.started();
        Ok(())
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        if let Some(b) = self
            .engine
            .builds
            .lock()
            .get_mut(&build.build_id)
            .filter(|b| !b.status.is_terminal())
        {
            if let Some(task) = b.task.take() {
                task.abort();
            }
            b.status = BuildStatus::canceled();
            self.engine.counter.stopped();
        }
        Ok(())
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        let builds = self.engine.builds.lock();
        let b = builds
            .get(&build.build_id)
            .ok_or_else(|| Error::build_not_found(build.build_id).with_executor(SCHEME))?;
        Ok(b.status.clone())
    }

    fn stats(&self) -> Stats {
        Stats {
            builds: self.engine.counter.snapshot(),
            ..Stats::default()
        }
    }

    async fn cleanup(&self) -> Result<(), Error> {
        self.gc(false).await.map(|_| ())
    }

    /// Forgets finished builds (the toy's only "resources").
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let mut builds = self.engine.builds.lock();
        let done: Vec<BuildId> = builds
            .iter()
            .filter(|(_, b)| b.status.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        if !dry_run {
            builds.retain(|_, b| !b.status.is_terminal());
        }
        Ok(GcReport {
            dry_run,
            expired: done.iter().map(|id| format!("build/{id}")).collect(),
        })
    }
}
