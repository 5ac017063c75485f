//! `sdx gc [--dry-run]`: remove (or list) engine resources whose expiry label passed, on
//! each requested backend.

use serde_json::json;

use super::Ctx;
use crate::backends::{self, ProcessOverrides};
use crate::cli::GcArgs;
use crate::error::{CliResult, EXIT_FAILURE};

/// Collects garbage; exit 1 when a backend could not be built or collected.
pub async fn run(ctx: &Ctx, a: GcArgs) -> CliResult<u8> {
    let mut failed = false;
    let mut reports = Vec::new();
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
        say!("{:#}", serde_json::Value::Array(reports));
    }
    Ok(if failed { EXIT_FAILURE } else { 0 })
}
