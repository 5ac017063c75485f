//! [`BuildTimings`] of a Docker build: its build container's inspect answer, and what
//! this process saw itself.
//!
//! Docker keeps `Created`, `State.StartedAt` and `State.FinishedAt` for as long as the
//! container exists (`stop` removes it, so read them before). When `start` was called and
//! when its image pulls began and ended only this process knows (kept in memory with the
//! build, so lost with the process). Peak memory comes from the daemon's stats stream,
//! followed from the start until the container exits: a container's cgroup (with its
//! own peak) goes with it, so the last sample is the latest figure to be had. On cgroup
//! v1 each sample carries the cgroup's `max_usage` (the true peak up to that sample); on
//! cgroup v2 only the current usage, so the peak is the largest of the ~1 s samples.
//!
//! Docker records `StartedAt` once its start call returns, so a launcher that exits at
//! once can read as finished a few milliseconds before it started; the phase breakdown
//! counts that as no time running.

use bollard::models::ContainerInspectResponse;
use chrono::{DateTime, Utc};
use executor_base::BuildTimings;

use crate::state::Acct;

/// A Docker timestamp, `None` for Docker's zero time (`0001-01-01T00:00:00Z`: not yet).
fn time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

/// Scheduled when the build container was created, running when it started, finished
/// when it exited.
pub(crate) fn from_inspect(c: &ContainerInspectResponse) -> BuildTimings {
    let state = c.state.as_ref();
    BuildTimings {
        scheduled: time(c.created.as_deref()),
        running: time(state.and_then(|s| s.started_at.as_deref())),
        finished: time(state.and_then(|s| s.finished_at.as_deref())),
        ..BuildTimings::default()
    }
}

/// The container's timings with what this process saw; `None` when neither knows the
/// build.
pub(crate) fn merge(
    container: Option<&ContainerInspectResponse>,
    seen: Option<Acct>,
) -> Option<BuildTimings> {
    if container.is_none() && seen.is_none() {
        return None;
    }
    let mut t = container.map(from_inspect).unwrap_or_default();
    if let Some(a) = seen {
        a.fill(&mut t);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use bollard::models::ContainerState;

    use super::*;

    #[test]
    fn zero_times_are_unknown_and_the_others_parse() {
        let c = ContainerInspectResponse {
            created: Some("2026-12-03T10:00:00.5Z".into()),
            state: Some(ContainerState {
                started_at: Some("2026-12-03T10:00:01.25Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..ContainerState::default()
            }),
            ..ContainerInspectResponse::default()
        };
        let t = from_inspect(&c);
        assert_eq!(t.to_string(), "starting 0.8s");
        assert_eq!(t.finished, None);
        assert!(t.accepted.is_none() && t.peak_memory_bytes.is_none());

        // With what this process saw: accepted, a pull, the peak of the stats samples.
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let seen = Acct {
            accepted: at("2026-12-03T09:59:58Z"),
            pull_started: at("2026-12-03T09:59:58.1Z"),
            pull_finished: at("2026-12-03T10:00:00.1Z"),
            peak_memory_bytes: Some(5 << 20),
        };
        let t = merge(Some(&c), Some(seen)).unwrap();
        assert_eq!(
            t.to_string(),
            "queued 0.1s, pulling 2.0s, starting 1.1s; peak memory 5.0 MiB"
        );
        // The container gone, what this process saw remains; nothing known is `None`.
        assert_eq!(merge(None, Some(seen)).unwrap().scheduled, None);
        assert_eq!(merge(None, None), None);
    }
}
