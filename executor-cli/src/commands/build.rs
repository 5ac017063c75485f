//! Running one build to its end and showing it: on the embedded API (demo, run) or a
//! remote one (run --api).

use serde_json::Value;

use crate::client::ApiClient;
use crate::embedded::Embedded;
use crate::error::{CliError, CliResult, EXIT_FAILURE};
use crate::follow;
use crate::progress::{Progress, summary};

fn submit_error(e: executor_api::HttpError) -> CliError {
    let msg = format!(
        "the build was refused ({}): {}",
        e.status.as_u16(),
        e.message
    );
    if e.status.is_client_error() {
        CliError::usage(msg)
    } else {
        CliError::failure(msg)
    }
}

/// The exit code of a finished build: 0 only for SUCCESS.
pub fn exit_code(build: &Value) -> u8 {
    if build["status"] == "SUCCESS" {
        0
    } else {
        EXIT_FAILURE
    }
}

/// Submits `body` to the embedded API, shows the build until it is final, prints the
/// summary; returns the exit code.
pub async fn on_embedded(emb: &Embedded, body: &Value) -> CliResult<u8> {
    let state = emb.server.state();
    let rx = state.subscribe();
    let id = state.submit_json(body).map_err(submit_error)?.get();
    let steps = body["steps"].as_array().map_or(0, Vec::len);
    say!("build {id} submitted: {steps} step(s) on {}", emb.label());
    let mut p = Progress::new(id);
    let done = follow::local(state, rx, id, &mut p).await;
    p.finish();
    let build = done?;
    say!();
    say_raw!("{}", summary(&build, &emb.label()));
    Ok(exit_code(&build))
}

/// Submits `body` to a remote API and follows it.
pub async fn on_remote(client: &ApiClient, body: &Value, api: &str) -> CliResult<u8> {
    let id = client.submit(body).await?;
    say!("build {id} submitted to {api}");
    let mut p = Progress::new(id);
    let done = follow::remote(client, id, &mut p).await;
    p.finish();
    let build = done?;
    say!();
    say_raw!("{}", summary(&build, api));
    Ok(exit_code(&build))
}
