//! What the API asks of the executor, as Screwdriver's models do (§9.3, §9.4):
//! `start` on submission (a start failure fails the build), `start_timer` when `launch`
//! marks the build RUNNING, `stop_timer` and (when still needed) `stop` when it reaches a
//! final status.
//!
//! Unlike upstream, a final status `launch` reported itself does not `stop` the build at
//! once: `launch` is exiting, and the executor is given `finalExitWaitMs` to see it end
//! on its own, so the executor's view is the build's outcome (succeeded, failed), not
//! "canceled". A user's abort, a timeout or a failed start stop at once. A start refused
//! with `AlreadyExists` never stops anything: the live build with that id is not this
//! submission's.
//!
//! A watcher also polls the executor's `status` while the build is open: when the engine
//! says the build ended (or lost it) for several polls in a row but `launch` never
//! reported, the API reads what `launch` spooled and otherwise records the engine's
//! outcome (see `adopt::conclude`), so a crashed launcher never leaves a build RUNNING
//! forever (upstream issue #1839) and a build that succeeded is never called failed.

use std::time::Duration;

use chrono::Utc;
use executor_base::{ApiBuildStatus, BuildId, BuildStatus, Error, ErrorKind, Phase, TimerConfig};

use crate::model::{BuildRecord, is_final};
use crate::state::{ApiState, Transition};

/// How often the executor is asked whether a build that `launch` reported final ended.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// Dispatches build `id` to the executor (a new submission).
///
/// A store that cannot answer (reading the build, checking the lease) is asked again with
/// a capped backoff: giving up would leave the build queued for good, since this instance
/// holds its lease and keeps it alive, so no other instance would ever adopt it.
pub(crate) async fn start(state: ApiState, id: BuildId) {
    crate::faults::pause("starting").await;
    let mut backoff = StoreBackoff::new();
    let b = loop {
        match state.load(id.get()).await {
            Ok(Some(b)) => break b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(build = id.get(), error = %e, "cannot read the build to start it; trying again");
                if !backoff.wait(&state, id).await {
                    return;
                }
            }
        }
    };
    if is_final(b.status) {
        // Aborted before the executor was asked: nothing was started.
        state.mark_settled(id.get()).await;
        return;
    }
    loop {
        match state.try_fence(id, "start").await {
            Ok(true) => break,
            Ok(false) => return,
            Err(()) => {
                if !backoff.wait(&state, id).await {
                    return;
                }
            }
        }
    }
    let result = match state.start_config(&b) {
        Ok(cfg) => state.executor().start(&cfg).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => accepted(state, id).await,
        Err(e) => start_failed(&state, id, e).await,
    }
}

/// Waits between attempts at a store that did not answer: 100 ms doubling to 5 s.
struct StoreBackoff(Duration);

impl StoreBackoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    /// Sleeps the next delay; `false` once the instance is shutting down.
    async fn wait(&mut self, state: &ApiState, id: BuildId) -> bool {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        if !state.accepting() {
            tracing::info!(
                build = id.get(),
                "shutting down: the build is left to the next instance"
            );
            return false;
        }
        true
    }
}

/// The executor accepted build `id`: note it and watch it (or stop it when it was
/// aborted meanwhile).
pub(crate) async fn accepted(state: ApiState, id: BuildId) {
    if state.is_final(id.get()).await == Some(true) {
        // Aborted while the executor was starting it.
        finish(&state, id, false).await;
        return;
    }
    // Only while launch has not reported yet (it may already run).
    let _ = state
        .transition_as(
            id.get(),
            true,
            None,
            Some("Accepted by the executor".into()),
            None,
            |b| match b.status {
                ApiBuildStatus::Queued | ApiBuildStatus::Blocked => Ok(()),
                _ => Err(crate::error::HttpError::conflict(
                    "already reported by launch",
                )),
            },
        )
        .await;
    watch(state, id).await;
}

/// The executor refused build `id`: fail it. Unless the refusal is `AlreadyExists`
/// (another live build has this id on the engine, which must be left alone), whatever
/// the start left behind is stopped.
pub(crate) async fn start_failed(state: &ApiState, id: BuildId, e: Error) {
    tracing::warn!(build = id.get(), error = %e, "executor start failed");
    let foreign = e.kind() == ErrorKind::AlreadyExists;
    let message = if foreign {
        format!(
            "Failed to start build by executor error: {e} (a build with this id already runs on the engine; it was left alone)"
        )
    } else {
        format!("Failed to start build by executor error: {e}")
    };
    match state
        .transition_owned(id.get(), Some(ApiBuildStatus::Failure), Some(message))
        .await
    {
        Ok(_) if foreign => {
            let _ = state.executor().stop_timer(&stop_of(state, id).await).await;
            state.mark_settled(id.get()).await;
        }
        Ok(_) => finish(state, id, false).await,
        Err(_) => {}
    }
}

async fn stop_of(state: &ApiState, id: BuildId) -> executor_base::StopConfig {
    match state.build(id.get()).await {
        Some(b) => state.stop_config(&b),
        None => executor_base::StopConfig::new(id),
    }
}

/// Reacts to a status change: timers, and ending a finished build on the engine.
pub(crate) async fn react(state: &ApiState, id: BuildId, t: Transition) {
    if t.became_running {
        arm_timer(state, id).await;
    }
    if t.became_final {
        if !state.drives(id) {
            // Another instance drives the build: its watcher sees the final status in
            // the store and ends the build on the engine.
            tracing::debug!(
                build = id.get(),
                "final status recorded; the instance holding the lease ends the build"
            );
            return;
        }
        let s = state.clone();
        let wait = t.reported_by_launch;
        state.spawn(async move { finish(&s, id, wait).await });
    }
}

/// `start_timer` for a RUNNING build (idempotent: the deadline is `startTime` + timeout).
pub(crate) async fn arm_timer(state: &ApiState, id: BuildId) {
    let Some(b) = state.build(id.get()).await else {
        return;
    };
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

/// Ends a final build on the engine: with `wait_exit`, first gives the executor
/// `finalExitWaitMs` to see the build end by itself (so a build that is still exiting is
/// not reported canceled); then `stop`, which for an ended build only removes what it left
/// on the engine (Docker's containers and volumes, k8s' pod) and keeps its outcome; then
/// `stop_timer`; then records the build as settled. A failed stop leaves it unsettled, so
/// the next adoption tries again.
pub(crate) async fn finish(state: &ApiState, id: BuildId, wait_exit: bool) {
    if !state.begin_finish(id) {
        return;
    }
    finish_once(state, id, wait_exit).await;
    state.end_finish(id);
}

async fn finish_once(state: &ApiState, id: BuildId, wait_exit: bool) {
    let Some(b) = state.build(id.get()).await else {
        return;
    };
    let cfg = state.stop_config(&b);
    if wait_exit {
        let until =
            tokio::time::Instant::now() + Duration::from_millis(state.config().final_exit_wait_ms);
        loop {
            match state.executor().status(&cfg).await {
                Ok(s) if s.is_terminal() => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                _ => {}
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }
    if !state.fence(id, "stop").await {
        return;
    }
    // Before the stop, which may remove what the engine knows (Docker's container).
    match state.executor().timings(&cfg).await {
        Ok(Some(t)) if !t.is_empty() => state.record_timings(id.get(), t).await,
        Ok(_) => {}
        Err(e) => tracing::debug!(build = id.get(), error = %e, "no timings from the executor"),
    }
    tracing::info!(build = id.get(), status = %b.status, "ending the build on the engine");
    let mut settled = true;
    if let Err(e) = state.executor().stop(&cfg).await {
        tracing::warn!(build = id.get(), error = %e, "executor stop failed");
        settled = false;
    }
    if let Err(e) = state.executor().stop_timer(&cfg).await {
        tracing::warn!(build = id.get(), error = %e, "stop_timer failed");
    }
    if settled {
        state.mark_settled(id.get()).await;
    }
}

/// When `b` ran past its timeout (from `startTime`): the message of a timed-out build.
pub(crate) fn past_deadline(state: &ApiState, b: &BuildRecord) -> Option<String> {
    let started = b.start_time?;
    let minutes = state.config().timeout.minutes(&b.annotations);
    let deadline = started + chrono::Duration::minutes(i64::from(minutes));
    (Utc::now() >= deadline).then(|| {
        format!(
            "Build timed out after {minutes} minute{} (stopped by the executor)",
            if minutes == 1 { "" } else { "s" }
        )
    })
}

/// What the engine says about a build the API still has open: `None` while it runs.
pub(crate) fn ended(status: &Result<BuildStatus, Error>) -> Option<Option<BuildStatus>> {
    match status {
        Ok(s) if s.is_terminal() => Some(Some(s.clone())),
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => Some(None),
        Err(_) => None,
    }
}

/// Polls the executor while build `id` is open; concludes it when the engine says it
/// ended for `lostAfterPolls` polls in a row.
pub(crate) async fn watch(state: ApiState, id: BuildId) {
    let every = Duration::from_millis(state.config().status_poll_ms);
    let needed = state.config().lost_after_polls;
    let mut seen = 0u32;
    loop {
        tokio::time::sleep(every).await;
        if !state.drives(id) {
            return;
        }
        let Some(b) = state.build(id.get()).await else {
            return;
        };
        if is_final(b.status) {
            if state.instance().is_some() && !b.settled {
                // Recorded by another instance (a stop, a timeout, launch's report).
                let wait =
                    b.status != ApiBuildStatus::Aborted && past_deadline(&state, &b).is_none();
                finish(&state, id, wait).await;
            }
            return;
        }
        let status = state.executor().status(&state.stop_config(&b)).await;
        if let Err(e) = &status
            && e.kind() != ErrorKind::NotFound
        {
            tracing::debug!(build = id.get(), error = %e, "status poll failed");
        }
        match ended(&status) {
            Some(engine) => {
                seen += 1;
                if seen >= needed {
                    crate::adopt::conclude(&state, id, engine).await;
                    return;
                }
            }
            None => seen = 0,
        }
    }
}

/// The API status and message that tell the truth about a build the engine says ended
/// (`None`: the engine no longer knows it) while `launch` never reported a final status.
pub(crate) fn outcome_of(
    state: &ApiState,
    b: &BuildRecord,
    engine: Option<&BuildStatus>,
) -> (ApiBuildStatus, String) {
    let timed_out = || past_deadline(state, b);
    match engine {
        None => (
            ApiBuildStatus::Failure,
            "launch ended without reporting a final status; the executor no longer knows the build"
                .into(),
        ),
        Some(s) => match s.phase {
            Phase::Succeeded => (
                ApiBuildStatus::Success,
                format!("launch could not report; the executor says: {s}"),
            ),
            Phase::TimedOut => (
                ApiBuildStatus::Failure,
                format!("Build timed out: {}", s.message),
            ),
            Phase::Canceled => match timed_out() {
                Some(m) => (ApiBuildStatus::Failure, m),
                None => (
                    ApiBuildStatus::Aborted,
                    format!("Stopped on the executor: {s}"),
                ),
            },
            _ => (
                ApiBuildStatus::Failure,
                format!("launch ended without reporting a final status; the executor says: {s}"),
            ),
        },
    }
}

/// What an instance on a shared store does when it claimed a build's deadline: it
/// records the timeout (any instance may), and the instance driving the build stops it
/// (this one at once if it drives it, else the driver's watcher).
pub(crate) async fn timed_out(state: &ApiState, e: executor_base::timer::Expired) {
    let id = e.build_id;
    let Some(b) = state.build(id.get()).await else {
        return;
    };
    if is_final(b.status) {
        return;
    }
    let m = e.timeout_minutes;
    let message = format!(
        "Build timed out after {m} minute{} (stopped by the executor)",
        if m == 1 { "" } else { "s" }
    );
    tracing::info!(
        build = id.get(),
        late_ms = e.lateness.as_millis() as u64,
        "build ran past its timeout"
    );
    if let Ok((t, _)) = state
        .transition(id.get(), Some(ApiBuildStatus::Failure), Some(message))
        .await
    {
        react(state, id, t).await;
    }
}
