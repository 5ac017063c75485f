//! Adoption: taking over the builds a previous process left unsettled in the store.
//!
//! On start, `sdx serve` adopts its own builds ([`Adoption::Resume`]); `sdx gc` adopts the
//! builds of `sdx run` processes that died ([`Adoption::Abort`]). For each build:
//!
//! * final but not settled (the process died between recording the outcome and the
//!   engine's confirmation, e.g. mid-stop): the executor is given the usual wait to see
//!   it end, then it is stopped (again) and settled;
//! * open, and the engine says it ended (or never heard of a build `launch` reported
//!   RUNNING for): it is concluded — what `launch` spooled is replayed, and otherwise the
//!   engine's outcome is recorded (a build that ended while no API ran gets its true
//!   outcome, never "lost" for a success);
//! * open and QUEUED, unknown to the engine, or known only as a start that never ran
//!   anything (the process died inside the executor's `start`): the
//!   build never ran; `Resume` starts it now (once: nothing of it runs), `Abort` aborts it;
//! * open and running: `Resume` re-arms its timer (the durable timer store also reloads
//!   it; overdue deadlines fire at once) and watches it again; `Abort` aborts and stops it
//!   (records it timed out, FAILURE, when it is past its timeout).

use executor_base::{ApiBuildStatus, BuildId, BuildStatus, Error, ErrorKind, Phase};
use sd_launch::spool::{self, Entry};
use serde_json::json;

use crate::auth::Caller;
use crate::dispatch::{self, ended, outcome_of};
use crate::keys::{Claims, SCOPE_BUILD};
use crate::model::{BuildRecord, is_final};
use crate::state::ApiState;

/// What to do with the open builds an adoption takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Carry on: start what never started, watch what runs (a restarted `sdx serve`).
    Resume,
    /// Abort what still runs, with this message (the builds of a dead `sdx run`, which
    /// nobody follows any more); record the outcome of what ended.
    Abort(String),
}

/// The owner of builds submitted by this `sdx run` process: `run:<pid>:<start time>`
/// (the start time tells a live owner from a reused pid).
pub fn run_owner() -> String {
    let pid = std::process::id();
    format!("run:{pid}:{}", proc_start(pid).unwrap_or(0))
}

/// Whether `owner` is an `sdx run` process that no longer runs.
pub fn is_dead_run(owner: &str) -> bool {
    let Some(rest) = owner.strip_prefix("run:") else {
        return false;
    };
    let mut parts = rest.split(':');
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return true;
    };
    match proc_start(pid) {
        Some(now) => start != 0 && now != start,
        None => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22);
/// `None` for a process that is gone or a zombie.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl ApiState {
    /// Takes over every unsettled build that `select` picks, in the background (see the
    /// [module docs](self)); returns their ids. Wait for them with
    /// [`ApiState::wait_settled`].
    pub async fn adopt(
        &self,
        select: impl Fn(&BuildRecord) -> bool,
        how: Adoption,
    ) -> Result<Vec<BuildId>, Error> {
        let builds = self.store().unsettled().await?;
        let mut ids = Vec::new();
        for b in builds.into_iter().filter(|b| select(b)) {
            ids.push(b.id);
            tracing::info!(build = b.id.get(), status = %b.status, owner = %b.owner, "adopting");
            let (state, how) = (self.clone(), how.clone());
            self.spawn(async move { adopt_one(state, b, how).await });
        }
        Ok(ids)
    }

    /// Adopts this state's own unsettled builds with [`Adoption::Resume`]. With a shared
    /// store, only those whose lease is free or expired (taking their leases; see
    /// [`crate::lease`]), and the lease task goes on adopting as other instances die.
    pub async fn adopt_own(&self) -> Result<Vec<BuildId>, Error> {
        if self.instance().is_some() {
            return self.adopt_free().await;
        }
        let owner = self.owner().to_string();
        self.adopt(move |b| b.owner == owner, Adoption::Resume)
            .await
    }
}

pub(crate) async fn adopt_one(state: ApiState, b: BuildRecord, how: Adoption) {
    let id = b.id;
    if is_final(b.status) {
        // An abort or a timeout is carried out at once; a final status launch reported
        // gives the build the usual time to end by itself.
        let wait =
            b.status != ApiBuildStatus::Aborted && dispatch::past_deadline(&state, &b).is_none();
        dispatch::finish(&state, id, wait).await;
        return;
    }
    let status = state.executor().status(&state.stop_config(&b)).await;
    let queued = matches!(
        b.status,
        ApiBuildStatus::Queued | ApiBuildStatus::Blocked | ApiBuildStatus::Created
    );
    match ended(&status) {
        // Unknown to the engine, or known as a start that never ran anything (the server
        // died inside the executor's `start`): nothing of the build ran, so it is started
        // now, exactly once.
        Some(engine) if queued && engine.as_ref().is_none_or(never_started) => match how {
            Adoption::Resume => start_again(state, &b, engine.is_some()).await,
            Adoption::Abort(why) => {
                let _ = state
                    .transition_owned(id.get(), Some(ApiBuildStatus::Aborted), Some(why))
                    .await;
                state.mark_settled(id.get()).await;
            }
        },
        Some(engine) => conclude(&state, id, engine).await,
        None => match how {
            Adoption::Resume => {
                if b.status == ApiBuildStatus::Running {
                    dispatch::arm_timer(&state, id).await;
                }
                dispatch::watch(state, id).await;
            }
            Adoption::Abort(why) => {
                // A build past its timeout (its follower died while the timeout's stop was
                // under way) timed out; it was not aborted.
                let (status, message) = match dispatch::past_deadline(&state, &b) {
                    Some(timed_out) => (ApiBuildStatus::Failure, timed_out),
                    None => (ApiBuildStatus::Aborted, why),
                };
                if let Ok((t, _)) = state
                    .transition_owned(id.get(), Some(status), Some(message))
                    .await
                {
                    dispatch::react(&state, id, t).await;
                }
            }
        },
    }
}

/// Whether the engine says the build's own process never started (`Lost` with
/// `build_started: false`, e.g. the process backend's "launch was never spawned"): a
/// start of it again cannot run it twice.
pub(crate) fn never_started(s: &BuildStatus) -> bool {
    s.phase == Phase::Lost && s.failure.as_ref().and_then(|f| f.build_started) == Some(false)
}

/// Starts a build whose start never reached the engine. `AlreadyExists` means it did
/// after all (the process died after the engine accepted it): then it is watched. With
/// `leftovers` (the engine holds what the dead start created, which never ran: a
/// container created and never started), they are removed first, so the new start does
/// not collide with them.
async fn start_again(state: ApiState, b: &BuildRecord, leftovers: bool) {
    if !state.fence(b.id, "start").await {
        return;
    }
    if leftovers && let Err(e) = state.executor().stop(&state.stop_config(b)).await {
        tracing::warn!(build = %b.id, error = %e,
            "cannot remove what a dead start of the build left; starting it anyway");
    }
    let result = match state.start_config(b) {
        Ok(cfg) => state.executor().start(&cfg).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => dispatch::accepted(state, b.id).await,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => dispatch::watch(state, b.id).await,
        Err(e) => dispatch::start_failed(&state, b.id, e).await,
    }
}

/// Records the outcome of a build the engine says ended (`engine`: its status, `None`
/// when it no longer knows the build) while the API still has it open: first what
/// `launch` spooled, then, if that held no final status, the engine's outcome.
pub(crate) async fn conclude(state: &ApiState, id: BuildId, engine: Option<BuildStatus>) {
    let spooled = replay_spool(state, id).await;
    let Some(b) = state.build(id.get()).await else {
        return;
    };
    if is_final(b.status) {
        return;
    }
    let (status, message) = outcome_of(state, &b, engine.as_ref());
    tracing::info!(build = id.get(), %status, spooled, "recording the outcome the engine saw");
    if let Ok((t, _)) = state
        .transition_owned(id.get(), Some(status), Some(message))
        .await
    {
        dispatch::react(state, id, t).await;
    }
}

/// Applies what `launch` spooled for build `id`, as `launch` would have reported it;
/// returns how many entries there were.
async fn replay_spool(state: &ApiState, id: BuildId) -> usize {
    let Some(path) = state.inner.spool.as_ref().and_then(|f| f(id)) else {
        return 0;
    };
    let entries = tokio::task::spawn_blocking(move || spool::read(&path))
        .await
        .unwrap_or_default();
    let caller = Caller::Build(Claims::for_build(id.get(), SCOPE_BUILD, 60));
    let n = entries.len();
    for e in entries {
        let r = match &e {
            Entry::Status { status, message } => {
                let mut body = json!({"status": status});
                if let Some(m) = message {
                    body["statusMessage"] = json!(m);
                }
                state.op_update(&caller, id.get(), &body).await.map(drop)
            }
            Entry::StepStart { step, start_time } => state
                .op_step_update(&caller, id.get(), step, &json!({"startTime": start_time}))
                .await
                .map(drop),
            Entry::StepEnd {
                step,
                end_time,
                code,
            } => state
                .op_step_update(
                    &caller,
                    id.get(),
                    step,
                    &json!({"endTime": end_time, "code": code}),
                )
                .await
                .map(drop),
            Entry::Logs { step, lines } => {
                let body = serde_json::Value::Array(
                    lines
                        .iter()
                        .map(|l| json!({"t": l.t, "m": l.m, "n": l.n}))
                        .collect(),
                );
                state.op_logs_post(&caller, id.get(), step, &body).await
            }
        };
        if let Err(err) = r {
            tracing::debug!(build = id.get(), entry = ?e, error = %err, "spooled report not applied");
        }
    }
    if n > 0 {
        tracing::info!(
            build = id.get(),
            entries = n,
            "replayed what launch spooled"
        );
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_owners_are_alive_while_their_process_is() {
        let me = run_owner();
        assert!(me.starts_with(&format!("run:{}:", std::process::id())));
        assert!(!is_dead_run(&me));
        assert!(!is_dead_run("serve"));
        assert!(is_dead_run("run:garbage"));
        // A pid that exists with another start time is a reused pid: dead.
        let reused = format!("run:{}:1", std::process::id());
        assert!(is_dead_run(&reused));
        assert!(is_dead_run("run:4194999:5"));
    }
}
