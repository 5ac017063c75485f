//! Running one build to its end and showing it: on the embedded API (demo, run) or a
//! remote one (run --api).

use serde_json::Value;

use crate::client::ApiClient;
use crate::embedded::Embedded;
use crate::error::{CliError, CliResult, EXIT_FAILURE};
use crate::follow;
use crate::progress::{Progress, summary};

fn submit_error(e: executor_api::HttpError) -> CliError {
    // One line: a pre-flight refusal's message names every failed check (`sdx run
    // --dry-run` shows the whole table).
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

/// How long `sdx run` waits, after its build is final, for the engine to confirm the end.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long `sdx demo` waits for the same, for the phase breakdown in its summary.
const DEMO_SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Submits `body` to the embedded API, shows the build until it is final, prints the
/// summary; returns the exit code. With `own_ids` (`sdx run`), a body without an `id`
/// gets one from [`crate::embedded::run_id`], and the command waits until the engine
/// confirmed the build's end, so nothing of it outlives `sdx run`.
pub async fn on_embedded(emb: &Embedded, body: &Value, own_ids: bool) -> CliResult<u8> {
    let state = emb.server.state();
    let rx = state.subscribe();
    let id = if own_ids && body.get("id").is_none() {
        submit_with_run_id(state, body).await?
    } else {
        state.submit_json(body).await.map_err(submit_error)?.get()
    };
    let steps = body["steps"].as_array().map_or(0, Vec::len);
    say!("build {id} submitted: {steps} step(s) on {}", emb.label());
    let mut p = Progress::new(id);
    let done = follow::local(state, rx, id, &mut p).await;
    p.finish();
    let mut build = done?;
    // `sdx demo` waits briefly: only for the phase breakdown, recorded at the end.
    let wait = if own_ids {
        SETTLE_WAIT
    } else {
        DEMO_SETTLE_WAIT
    };
    if state.wait_settled(id, wait).await {
        // Now with the timings the executor reported when the build concluded.
        build = state.build_json(id).await.unwrap_or(build);
    } else if own_ids {
        say!("build {id}: the engine has not confirmed the end of the build yet");
    }
    say!();
    say_raw!("{}", summary(&build, &emb.label()));
    Ok(exit_code(&build))
}

/// Submits with a fresh run id, trying the next one while an id is taken.
async fn submit_with_run_id(state: &executor_api::ApiState, body: &Value) -> CliResult<u64> {
    let mut id = crate::embedded::run_id();
    for _ in 0..16 {
        let mut b = body.clone();
        b["id"] = Value::from(id);
        match state.submit_json(&b).await {
            Ok(id) => return Ok(id.get()),
            Err(e) if e.status.as_u16() == 409 => id += 1,
            Err(e) => return Err(submit_error(e)),
        }
    }
    Err(CliError::failure("no free build id after 16 tries"))
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
