//! `sdx stop`: abort a build through a remote API (`--api`) or stop it on the executor.

use executor_base::StopConfig;

use super::Ctx;
use super::status::build_id;
use crate::backends::{self, ProcessOverrides};
use crate::cli::BuildRef;
use crate::client::ApiClient;
use crate::error::{CliError, CliResult};

/// Stops the build.
pub async fn run(ctx: &Ctx, a: BuildRef) -> CliResult<u8> {
    let id = build_id(a.build_id)?;
    if let Some(api) = &a.remote.api {
        let client = ApiClient::new(api, a.remote.api_token.clone())?;
        let b = client.abort(id.get()).await?;
        if a.json {
            say!("{b:#}");
        } else {
            say!("build {id}: {}", b["status"].as_str().unwrap_or("ABORTED"));
        }
        return Ok(0);
    }
    let exec = backends::router(&ctx.executors, &ctx.file, &ProcessOverrides::default()).await?;
    exec.stop(&StopConfig::new(id))
        .await
        .map_err(|e| CliError::from(e).context(format!("stop of build {id}")))?;
    if a.json {
        say!(
            "{}",
            serde_json::json!({"buildId": id.get(), "stopped": true})
        );
    } else {
        say!("build {id}: stopped");
    }
    Ok(0)
}
