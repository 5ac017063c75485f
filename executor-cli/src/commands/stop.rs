//! `sdx stop`: abort a build through a remote API (`--api`) or stop it on the executor.
//! A build nobody knows is an error (exit 1), not "stopped".

use executor_base::StopConfig;

use super::Ctx;
use super::status::{build_id, executor_status, is_remote_404, not_found_at};
use crate::cli::BuildRef;
use crate::client::ApiClient;
use crate::error::{CliError, CliResult};

/// Stops the build.
pub async fn run(ctx: &Ctx, a: BuildRef) -> CliResult<u8> {
    let id = build_id(a.build_id)?;
    if let Some(api) = &a.remote.api {
        let client = ApiClient::new(api, a.remote.api_token.clone())?;
        let b = client.abort(id.get()).await.map_err(|e| {
            if is_remote_404(&e) {
                not_found_at(id, api)
            } else {
                e
            }
        })?;
        if a.json {
            say!("{b:#}");
        } else {
            say!("build {id}: {}", b["status"].as_str().unwrap_or("ABORTED"));
        }
        return Ok(0);
    }
    let (exec, before) = executor_status(ctx, id).await?;
    exec.stop(&StopConfig::new(id))
        .await
        .map_err(|e| CliError::from(e).context(format!("stop of build {id}")))?;
    let after = exec
        .status(&StopConfig::new(id))
        .await
        .unwrap_or(before.clone());
    let was = if before.is_terminal() {
        format!("already ended ({before})")
    } else {
        "stopped".to_string()
    };
    if a.json {
        say!(
            "{}",
            serde_json::json!({"buildId": id.get(), "stopped": !before.is_terminal(), "status": after})
        );
    } else {
        say!("build {id}: {was}");
    }
    Ok(0)
}
