//! `sdx status`: a build's status from a remote API (`--api`) or from the executor.

use executor_base::{BuildId, ErrorKind, StopConfig};

use super::Ctx;
use crate::backends::{self, ProcessOverrides, Timers};
use crate::cli::BuildRef;
use crate::client::ApiClient;
use crate::error::{CliError, CliResult};
use crate::progress::summary;

/// The build id as a typed id.
pub fn build_id(id: u64) -> CliResult<BuildId> {
    BuildId::new(id).ok_or_else(|| CliError::usage("BUILD_ID: must be a positive integer"))
}

/// The error for a build the executor does not know: it may live on a running API.
pub fn not_found(id: BuildId, ctx: &Ctx) -> CliError {
    let state = backends::state_dir(&ctx.file)
        .map(|d| format!(", state directory {}", d.display()))
        .unwrap_or_default();
    CliError::failure(format!(
        "build {id} not found on the {} executor{state}; to ask a running sdx serve, give --api URL (or SDX_API) and --api-token (or SDX_API_TOKEN)",
        ctx.executors.join(", ")
    ))
}

/// The error for a build a remote API does not know.
pub fn not_found_at(id: BuildId, api: &str) -> CliError {
    CliError::failure(format!(
        "build {id} not found at {api}; `sdx status` without --api asks the executor directly"
    ))
}

/// Whether `e` is a remote API's 404.
pub fn is_remote_404(e: &CliError) -> bool {
    e.message.contains("answered 404")
}

/// The configured executors, with the names and labels of a server's builds or (with
/// `run`) of `sdx run`'s own ([`backends::RUN_PREFIX`]).
pub async fn executor(
    ctx: &Ctx,
    run: bool,
) -> CliResult<std::sync::Arc<dyn executor_base::Executor>> {
    let overrides = ProcessOverrides {
        run_prefix: run,
        ..ProcessOverrides::default()
    };
    Ok(
        backends::router(&ctx.executors, &ctx.file, &overrides, Timers::Memory)
            .await?
            .executor,
    )
}

/// The executor's status of build `id` (a server's build, else one of `sdx run`'s), or
/// the "not found" error with its hint.
pub async fn executor_status(
    ctx: &Ctx,
    id: BuildId,
) -> CliResult<(
    std::sync::Arc<dyn executor_base::Executor>,
    executor_base::BuildStatus,
)> {
    for run in [false, true] {
        let exec = executor(ctx, run).await?;
        match exec.status(&StopConfig::new(id)).await {
            Ok(s) => return Ok((exec, s)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::from(e).context(format!("status of build {id}"))),
        }
    }
    Err(not_found(id, ctx))
}

/// Shows the status.
pub async fn run(ctx: &Ctx, a: BuildRef) -> CliResult<u8> {
    let id = build_id(a.build_id)?;
    if let Some(api) = &a.remote.api {
        let client = ApiClient::new(api, a.remote.api_token.clone())?;
        let b = client.build(id.get()).await.map_err(|e| {
            if is_remote_404(&e) {
                not_found_at(id, api)
            } else {
                e
            }
        })?;
        if a.json {
            say!("{b:#}");
        } else {
            say_raw!("{}", summary(&b, api));
        }
        return Ok(0);
    }
    let (_, s) = executor_status(ctx, id).await?;
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
