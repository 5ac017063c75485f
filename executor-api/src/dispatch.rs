//! What the API asks of the executor, as Screwdriver's models do (§9.3, §9.4):
//! `start` on submission (a start failure fails the build), `start_timer` when `launch`
//! marks the build RUNNING, `stop` then `stop_timer` when it reaches a final status.
//!
//! A watcher also polls the executor's `status` while the build is open: when the engine
//! says the build ended (or lost it) for several polls in a row but `launch` never
//! reported, the API fails the build with the executor's words, so a crashed launcher
//! never leaves a build RUNNING forever (upstream issue #1839).

use std::time::Duration;

use chrono::Utc;
use executor_base::{ApiBuildStatus, BuildId, ErrorKind, Phase, TimerConfig};

use crate::state::{ApiState, Transition};

/// Dispatches build `id` to the executor.
pub(crate) async fn start(state: ApiState, id: BuildId) {
    let result = match state.start_config(id) {
        Ok(cfg) => state.executor().start(&cfg).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            if state.is_final(id.get()) == Some(true) {
                // Aborted while the executor was starting it.
                stop(&state, id).await;
                return;
            }
            // Only while launch has not reported yet (it may already run).
            let _ = state.transition_checked(
                id.get(),
                None,
                Some("Accepted by the executor".into()),
                None,
                |b| match b.status {
                    ApiBuildStatus::Queued | ApiBuildStatus::Blocked => Ok(()),
                    _ => Err(crate::error::HttpError::conflict(
                        "already reported by launch",
                    )),
                },
            );
            watch(state, id).await;
        }
        Err(e) => {
            tracing::warn!(build = id.get(), error = %e, "executor start failed");
            let message = format!("Failed to start build by executor error: {e}");
            if let Ok((t, _)) =
                state.transition(id.get(), Some(ApiBuildStatus::Failure), Some(message), None)
            {
                react(&state, id, t);
            }
        }
    }
}

/// Reacts to a status change: timers, and stopping a finished build.
pub(crate) fn react(state: &ApiState, id: BuildId, t: Transition) {
    if t.became_running
        && let Some(b) = state.build(id.get())
    {
        let timer = TimerConfig::new(
            id,
            b.job_id,
            ApiBuildStatus::Running,
            b.start_time.unwrap_or_else(Utc::now),
            b.annotations.clone(),
        );
        let s = state.clone();
        state.spawn(async move {
            if let Err(e) = s.executor().start_timer(&timer).await {
                tracing::warn!(build = id.get(), error = %e, "start_timer failed");
            }
        });
    }
    if t.became_final {
        let s = state.clone();
        state.spawn(async move { stop(&s, id).await });
    }
}

/// `stop` then `stop_timer` on the executor; failures are logged (the build is final).
pub(crate) async fn stop(state: &ApiState, id: BuildId) {
    let cfg = state.stop_config(id);
    if let Err(e) = state.executor().stop(&cfg).await {
        tracing::warn!(build = id.get(), error = %e, "executor stop failed");
    }
    if let Err(e) = state.executor().stop_timer(&cfg).await {
        tracing::warn!(build = id.get(), error = %e, "stop_timer failed");
    }
}

async fn watch(state: ApiState, id: BuildId) {
    let every = Duration::from_millis(state.config().status_poll_ms);
    let needed = state.config().lost_after_polls;
    let cfg = state.stop_config(id);
    let mut ended = 0u32;
    loop {
        tokio::time::sleep(every).await;
        if state.is_final(id.get()) != Some(false) {
            return;
        }
        let seen = match state.executor().status(&cfg).await {
            Ok(s) if s.is_terminal() => Some(match s.phase {
                Phase::TimedOut => format!("Build timed out: {}", s.message),
                _ => format!("launch ended without reporting a final status; the executor says: {s}"),
            }),
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Some("launch ended without reporting a final status; the executor no longer knows the build".into())
            }
            Err(e) => {
                tracing::debug!(build = id.get(), error = %e, "status poll failed");
                ended = 0;
                continue;
            }
        };
        match seen {
            Some(message) => {
                ended += 1;
                if ended >= needed {
                    if let Ok((t, _)) = state.transition(
                        id.get(),
                        Some(ApiBuildStatus::Failure),
                        Some(message),
                        None,
                    ) {
                        react(&state, id, t);
                    }
                    return;
                }
            }
            None => ended = 0,
        }
    }
}
