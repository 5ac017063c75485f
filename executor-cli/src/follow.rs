//! Following a build to its end: from the embedded API's event stream, or by polling a
//! remote API. Ctrl-C (or SIGTERM) while following aborts the build (and keeps following until the
//! API has it final).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use executor_api::model::{is_final, module_state};
use executor_api::{ApiState, BuildEvent};
use executor_base::ApiBuildStatus;
use serde_json::Value;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::client::ApiClient;
use crate::error::{CliError, CliResult};
use crate::progress::Progress;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Lines per page of `GET .../logs` (the reference API's page size).
const MAX_LINES_PER_PAGE: usize = 1000;

/// How often a remote API is polled.
pub const POLL: Duration = Duration::from_millis(300);

/// Follows build `id` of the embedded API until it is final; returns its wire form.
/// `rx` must have subscribed before the build was submitted.
pub async fn local(
    state: &ApiState,
    mut rx: Receiver<BuildEvent>,
    id: u64,
    p: &mut Progress,
) -> CliResult<Value> {
    let mut interrupted = false;
    let signal = signalled();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if e.build_id() == id => {
                    p.on_event(&e);
                    if let BuildEvent::Status { status, .. } = e && is_final(status) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    p.line(&format!("(display fell behind: {n} events skipped)"));
                    if state.is_final(id).await == Some(true) {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            _ = &mut signal, if !interrupted => {
                interrupted = true;
                p.line("interrupted: aborting the build");
                if let Err(e) = state.abort(id, "Aborted from sdx (interrupted)").await {
                    p.line(&format!("cannot abort: {}", e.message));
                }
            }
        }
    }
    state
        .build_json(id)
        .await
        .ok_or_else(|| CliError::failure(format!("build {id} vanished from the API")))
}

fn status_of(b: &Value) -> Option<ApiBuildStatus> {
    b["status"].as_str().and_then(ApiBuildStatus::parse)
}

/// Follows build `id` on a remote API by polling it until it is final.
pub async fn remote(client: &ApiClient, id: u64, p: &mut Progress) -> CliResult<Value> {
    let mut last: Option<(ApiBuildStatus, Option<String>)> = None;
    let mut started: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut next_line: HashMap<String, u64> = HashMap::new();
    let mut interrupted = false;
    let signal = signalled();
    tokio::pin!(signal);
    loop {
        let b = client.build(id).await?;
        let status = status_of(&b)
            .ok_or_else(|| CliError::failure(format!("build {id}: the API sent no status")))?;
        let message = b["statusMessage"].as_str().map(String::from);
        let status_event = BuildEvent::Status {
            build_id: id,
            status,
            state: module_state(status),
            message: message.clone(),
        };
        let changed = last.as_ref() != Some(&(status, message.clone()));
        if changed && !is_final(status) {
            p.on_event(&status_event);
        }
        for s in b["steps"].as_array().cloned().unwrap_or_default() {
            let Some(name) = s["name"].as_str().map(String::from) else {
                continue;
            };
            if s["startTime"].is_string() && started.insert(name.clone()) {
                p.on_event(&BuildEvent::StepStarted {
                    build_id: id,
                    step: name.clone(),
                });
            }
            if !started.contains(&name) || finished.contains(&name) {
                continue;
            }
            loop {
                let from = next_line.get(&name).copied().unwrap_or(0);
                let lines = client.logs(id, &name, from).await?;
                let full_page = lines.len() >= MAX_LINES_PER_PAGE;
                match lines.last() {
                    Some(l) => {
                        next_line.insert(name.clone(), l.n + 1);
                        p.on_event(&BuildEvent::Log {
                            build_id: id,
                            step: name.clone(),
                            lines,
                        });
                    }
                    None => break,
                }
                if !full_page {
                    break;
                }
            }
            if let Some(code) = s["code"].as_i64() {
                finished.insert(name.clone());
                p.on_event(&BuildEvent::StepFinished {
                    build_id: id,
                    step: name,
                    code: code as i32,
                });
            }
        }
        if changed {
            last = Some((status, message));
            if is_final(status) {
                p.on_event(&status_event);
                return Ok(b);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut signal, if !interrupted => {
                interrupted = true;
                p.line("interrupted: aborting the build");
                if let Err(e) = client.abort(id).await {
                    p.line(&format!("cannot abort: {e}"));
                }
            }
        }
    }
}
