//! `sdx status`: a build's status from a remote API (`--api`) or from the executor.

use executor_base::{BuildId, StopConfig};

use super::Ctx;
use crate::backends::{self, ProcessOverrides};
use crate::cli::BuildRef;
use crate::client::ApiClient;
use crate::error::{CliError, CliResult};
use crate::progress::summary;

/// The build id as a typed id.
pub fn build_id(id: u64) -> CliResult<BuildId> {
    BuildId::new(id).ok_or_else(|| CliError::usage("BUILD_ID: must be a positive integer"))
}

/// Shows the status.
pub async fn run(ctx: &Ctx, a: BuildRef) -> CliResult<u8> {
    let id = build_id(a.build_id)?;
    if let Some(api) = &a.remote.api {
        let client = ApiClient::new(api, a.remote.api_token.clone())?;
        let b = client.build(id.get()).await?;
        if a.json {
            say!("{b:#}");
        } else {
            say_raw!("{}", summary(&b, api));
        }
        return Ok(0);
    }
    let exec = backends::router(&ctx.executors, &ctx.file, &ProcessOverrides::default()).await?;
    let s = exec
        .status(&StopConfig::new(id))
        .await
        .map_err(|e| CliError::from(e).context(format!("status of build {id}")))?;
    if a.json {
        say!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        let code = s
            .exit_code
            .map(|c| format!(", exit code {c}"))
            .unwrap_or_default();
        say!("build {id}: {s}{code}");
    }
    Ok(0)
}
