//! `sdx gearman-worker`: a Zuul-style Gearman launcher worker whose builds run on the
//! configured backend(s) (see `executor_gearman::run_worker`).

use executor_gearman::{WorkerConfig, run_worker, shutdown_signal};

use super::Ctx;
use crate::backends::{self, JobTools, ProcessOverrides};
use crate::cli::GearmanWorkerArgs;
use crate::error::{CliError, CliResult};

/// Runs the worker until SIGTERM, SIGUSR1 or Ctrl-C, then drains.
pub async fn run(ctx: &Ctx, a: GearmanWorkerArgs) -> CliResult<u8> {
    let mut cfg: WorkerConfig = ctx.file.config()?;
    if let Some(s) = a.server {
        cfg.server = s;
    }
    if !a.jobs.is_empty() {
        cfg.jobs = a.jobs;
    }
    if !a.nodes.is_empty() {
        cfg.nodes = a.nodes;
    }
    if let Some(n) = a.max_builds {
        cfg.max_builds = n;
    }
    if a.api_uri.is_some() {
        cfg.default_api_uri = a.api_uri;
    }
    if a.container.is_some() {
        cfg.default_container = a.container;
    }
    if cfg.state_dir.is_none() {
        // Builds are recorded so that a restarted worker (even after kill -9) adopts or
        // stops what the previous one ran instead of running it twice.
        let dir = executor_process::default_state_dir().join("gearman-worker");
        cfg.state_dir = Some(dir.display().to_string());
    }
    if cfg.jobs.is_empty() {
        return Err(CliError::usage(
            "gearman-worker: no jobs: give --job NAME (or EXECUTOR_GEARMAN_WORKER_JOBS)",
        ));
    }
    let tools = JobTools::create()?;
    let overrides = ProcessOverrides {
        job_tools: Some(tools.path().to_path_buf()),
        ..ProcessOverrides::default()
    };
    let exec = backends::router(
        &ctx.executors,
        &ctx.file,
        &overrides,
        backends::Timers::Memory,
    )
    .await?
    .executor;
    say!(
        "sdx gearman-worker: gearmand {} jobs {} on {}",
        cfg.server,
        cfg.jobs.join(","),
        ctx.executors.join(",")
    );
    run_worker(exec, cfg, shutdown_signal())
        .await
        .map_err(|e| CliError::from(e).context("gearman worker"))?;
    drop(tools);
    Ok(0)
}
