//! `sdx gc [--dry-run]`: stop the builds of `sdx run` processes that were killed
//! (recording each one's true outcome in the run store), then remove (or list) engine
//! resources whose expiry label has passed, on each requested backend.
//!
//! A killed `sdx run` leaves its build running with nobody following it. `gc` finds such
//! builds in `run.db` (their owner process is gone), records the outcome of those that
//! ended meanwhile (from what `launch` spooled, else from the engine), and aborts and
//! stops the others. It touches no build of a live `sdx run` and none of `sdx serve`.
//! Likewise the builds of a killed `sdx gearman-worker` that was not restarted (its
//! state directory unlocked) are stopped or settled, and their outcomes kept for the
//! re-queued jobs (see `commands::gearman::gc`).

use std::sync::Arc;
use std::time::Duration;

use executor_api::adopt::is_dead_run;
use executor_api::{Adoption, ApiState, BuildStore, SqliteBuildStore};
use serde_json::{Value, json};

use super::Ctx;
use crate::backends::{self, ProcessOverrides, Timers};
use crate::cli::GcArgs;
use crate::embedded::{api_config, run_store, spool_locator};
use crate::error::{CliError, CliResult, EXIT_FAILURE};

/// How long gc waits for one orphaned build to be stopped and settled.
const ORPHAN_WAIT: Duration = Duration::from_secs(120);

/// Settles the builds of killed `sdx run` processes; returns `[{"id", "status",
/// "statusMessage"}]` (with `dry_run`, only lists them).
async fn orphaned_runs(ctx: &Ctx, dry_run: bool) -> CliResult<Vec<Value>> {
    let state_dir = backends::state_dir(&ctx.file)?;
    let Some(db) = run_store(&state_dir) else {
        return Ok(Vec::new());
    };
    let store = SqliteBuildStore::open(&db)
        .await
        .map_err(|e| CliError::from(e).context("run store"))?;
    let orphans: Vec<u64> = store
        .unsettled()
        .await
        .map_err(CliError::from)?
        .into_iter()
        .filter(|b| is_dead_run(&b.owner))
        .map(|b| b.id.get())
        .collect();
    if orphans.is_empty() || dry_run {
        return Ok(orphans.into_iter().map(|id| json!({"id": id})).collect());
    }
    let overrides = ProcessOverrides {
        run_prefix: true,
        ..ProcessOverrides::default()
    };
    let routed = backends::router(&ctx.executors, &ctx.file, &overrides, Timers::Memory).await?;
    let mut builder = ApiState::builder(routed.executor, api_config(&ctx.file)?)
        .store(Arc::new(store))
        .owner("gc");
    if let Some(p) = &routed.process {
        builder = builder.spool(spool_locator(p));
    }
    let state = builder.build().await.map_err(CliError::from)?;
    let ids = state
        .adopt(
            |b| is_dead_run(&b.owner),
            Adoption::Abort(
                "Aborted by sdx gc: the sdx run that followed this build is gone".into(),
            ),
        )
        .await
        .map_err(CliError::from)?;
    let mut out = Vec::new();
    for id in ids {
        let settled = state.wait_settled(id.get(), ORPHAN_WAIT).await;
        let b = state.build(id.get()).await;
        out.push(json!({
            "id": id.get(),
            "status": b.as_ref().map(|b| b.status.as_str()),
            "statusMessage": b.as_ref().and_then(|b| b.status_message.clone()),
            "settled": settled,
        }));
    }
    Ok(out)
}

/// Collects garbage; exit 1 when a backend could not be built or collected.
pub async fn run(ctx: &Ctx, a: GcArgs) -> CliResult<u8> {
    let mut failed = false;
    let mut reports = Vec::new();
    match orphaned_runs(ctx, a.dry_run).await {
        Ok(orphans) if orphans.is_empty() => {}
        Ok(orphans) => {
            if !a.json {
                let list: Vec<String> = orphans
                    .iter()
                    .map(|o| match o["status"].as_str() {
                        Some(s) => format!("{} {s}", o["id"]),
                        None => o["id"].to_string(),
                    })
                    .collect();
                let verb = if a.dry_run { "would settle" } else { "settled" };
                say!(
                    "sdx run: {verb} {} build(s) of killed runs: {}",
                    orphans.len(),
                    list.join(", ")
                );
            }
            failed |= orphans.iter().any(|o| o["settled"] == false);
            reports.push(json!({"orphanedRuns": orphans, "dryRun": a.dry_run}));
        }
        Err(e) => {
            failed = true;
            if !a.json {
                eprintln!("sdx: gc of killed sdx run builds: {e}");
            }
            reports.push(json!({"orphanedRuns": null, "error": e.to_string()}));
        }
    }
    // Builds of a killed `sdx gearman-worker` first, so their directories are collected below.
    #[cfg(feature = "gearman")]
    match super::gearman::gc(ctx, a.dry_run, a.json).await {
        Ok(Some(report)) => reports.push(report),
        Ok(None) => {}
        Err(e) => {
            failed = true;
            if !a.json {
                eprintln!("sdx: gc of the gearman worker's builds: {e}");
            }
            reports.push(json!({"gearmanWorker": null, "error": e}));
        }
    }
    for name in &ctx.executors {
        let result = match backends::build(name, &ctx.file, &ProcessOverrides::default()).await {
            Ok(exec) => exec.gc(a.dry_run).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(r) => {
                if !a.json {
                    let verb = if a.dry_run { "would remove" } else { "removed" };
                    if r.expired.is_empty() {
                        say!("{name}: nothing expired");
                    } else {
                        say!(
                            "{name}: {verb} {}: {}",
                            r.expired.len(),
                            r.expired.join(", ")
                        );
                    }
                }
                reports.push(json!({"executor": name, "dryRun": r.dry_run, "expired": r.expired}));
            }
            Err(e) => {
                failed = true;
                if !a.json {
                    eprintln!("sdx: gc on {name}: {e}");
                }
                reports.push(json!({"executor": name, "error": e}));
            }
        }
    }
    if a.json {
        say!("{:#}", Value::Array(reports));
    }
    Ok(if failed { EXIT_FAILURE } else { 0 })
}
