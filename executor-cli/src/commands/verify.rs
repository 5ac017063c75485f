//! `sdx verify`: the executor's health check of a build, as upstream's verify string.

use executor_base::{ErrorKind, StartConfig, Verdict};

use super::Ctx;
use super::status::build_id;
use crate::cli::VerifyArgs;
use crate::error::{CliError, CliResult, EXIT_FAILURE};

/// `verify` reads the engine's state only; the start config's required token is this
/// placeholder when none is given.
const NO_TOKEN: &str = "unused-by-verify";

fn start_config(a: &VerifyArgs) -> CliResult<StartConfig> {
    if let Some(p) = &a.start_config {
        let text = std::fs::read_to_string(p)
            .map_err(|e| CliError::usage(format!("--start-config {}: {e}", p.display())))?;
        return StartConfig::from_json_str(&text)
            .map_err(|e| CliError::from(e).context(format!("--start-config {}", p.display())));
    }
    let id = build_id(a.build_id.unwrap_or(0))?;
    StartConfig::builder(id.get(), "http://127.0.0.1:8080", &a.container, NO_TOKEN)
        .build()
        .map_err(CliError::from)
}

/// Verifies the build; exit 1 when the verdict is a failure.
pub async fn run(ctx: &Ctx, a: VerifyArgs) -> CliResult<u8> {
    let cfg = start_config(&a)?;
    let mut verdict = None;
    for run in [false, true] {
        // A server's build, else one of `sdx run`'s.
        let exec = super::status::executor(ctx, run).await?;
        match exec.verify(&cfg).await {
            Ok(v) => {
                verdict = Some(v);
                break;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CliError::from(e).context(format!("verify of build {}", cfg.build_id)));
            }
        }
    }
    let Some(v) = verdict else {
        return Err(super::status::not_found(cfg.build_id, ctx));
    };
    if a.json {
        say!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else {
        let text = match &v {
            Verdict::Healthy => "healthy".to_string(),
            other => other.to_string(),
        };
        say!("build {}: {text}", cfg.build_id);
    }
    Ok(if v.is_failure() { EXIT_FAILURE } else { 0 })
}
