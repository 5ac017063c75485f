//! `sdx gearman-worker`: a Zuul-style Gearman launcher worker whose builds run on the
//! configured backend(s) (see `executor_gearman::run_worker`).

use std::path::PathBuf;
use std::time::Duration;

use executor_gearman::{WorkerConfig, WorkerGc, WorkerGcReport, run_worker, shutdown_signal};
use serde_json::Value;

use super::Ctx;
use crate::backends::{self, JobTools, ProcessOverrides};
use crate::cli::GearmanWorkerArgs;
use crate::error::{CliError, CliResult};

/// The worker's config (flags aside: option flags > environment > file > defaults),
/// with its `stateDir` defaulted.
fn worker_config(ctx: &Ctx) -> CliResult<WorkerConfig> {
    let mut cfg: WorkerConfig = ctx.file.config()?;
    if cfg.state_dir.is_none() {
        // Builds are recorded so that a restarted worker (even after kill -9) adopts or
        // stops what the previous one ran instead of running it twice.
        let dir = executor_process::default_state_dir().join("gearman-worker");
        cfg.state_dir = Some(dir.display().to_string());
    }
    Ok(cfg)
}

/// `sdx gc`'s part for the worker: settles the builds of a worker that is gone (killed
/// and not restarted) and removes records past `retainFinishedSecs` (see
/// `executor_gearman::WorkerGc`). Prints what it did unless `json`; returns the report,
/// or the error as text.
pub async fn gc(ctx: &Ctx, dry_run: bool, json: bool) -> Result<Option<Value>, String> {
    let collected = async {
        let cfg = worker_config(ctx)?;
        let dir = PathBuf::from(cfg.state_dir.clone().unwrap_or_default());
        let target = WorkerGc::open(&dir).map_err(CliError::from)?;
        let report = match &target {
            WorkerGc::Absent => return Ok(None),
            WorkerGc::InUse(_) => WorkerGcReport::default(),
            WorkerGc::Ready(_) => {
                let exec = backends::router(
                    &ctx.executors,
                    &ctx.file,
                    &ProcessOverrides::default(),
                    backends::Timers::Memory,
                )
                .await?
                .executor;
                let retain = Duration::from_secs(cfg.retain_finished_secs);
                target
                    .collect(exec.as_ref(), retain, dry_run)
                    .await
                    .map_err(CliError::from)?
            }
        };
        let report = match target {
            WorkerGc::InUse(pid) => WorkerGcReport {
                dry_run,
                in_use_by: Some(pid),
                ..report
            },
            _ => report,
        };
        CliResult::Ok(Some((dir, report)))
    };
    let (dir, report) = match collected.await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !json {
        let verb = |done: &str, would: &str| {
            if dry_run {
                would.to_string()
            } else {
                done.to_string()
            }
        };
        if let Some(pid) = &report.in_use_by {
            say!(
                "gearman-worker: {} is in use by a running worker (pid {pid}): its builds are its own",
                dir.display()
            );
        } else if report.is_empty() {
            say!("gearman-worker: nothing expired");
        }
        for (list, what) in [
            (&report.stopped, verb("stopped", "would stop")),
            (&report.settled, verb("settled", "would settle")),
            (&report.expired, verb("removed", "would remove")),
        ] {
            if !list.is_empty() {
                say!("gearman-worker: {what} {}: {}", list.len(), list.join("; "));
            }
        }
    }
    let mut v = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    v["gearmanWorker"] = Value::String(dir.display().to_string());
    Ok(Some(v))
}

/// Runs the worker until SIGTERM, SIGUSR1 or Ctrl-C, then drains.
pub async fn run(ctx: &Ctx, a: GearmanWorkerArgs) -> CliResult<u8> {
    let mut cfg = worker_config(ctx)?;
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
    if cfg.jobs.is_empty() {
        return Err(CliError::usage(
            "gearman-worker: no jobs: give --job NAME (or EXECUTOR_GEARMAN_WORKER_JOBS)",
        ));
    }
    let tools = JobTools::create()?;
    // The worker's builds outlive its process: a restarted worker on the same stateDir
    // adopts them, so Docker and Kubernetes resources belong to the worker's stateDir,
    // not to this process (which would make them orphans the moment it was killed).
    let state_dir = cfg.state_dir.clone().unwrap_or_default();
    let state_key = std::path::absolute(&state_dir)
        .map(|p| p.display().to_string())
        .unwrap_or(state_dir);
    let overrides = ProcessOverrides {
        job_tools: Some(tools.path().to_path_buf()),
        owner: Some(executor_base::Owner::deployment(
            "gearman-worker",
            &state_key,
        )),
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
