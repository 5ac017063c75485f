//! Jenkins' view of a build (queue item, build result) mapped onto [`BuildStatus`].
//!
//! | Jenkins | status |
//! |---|---|
//! | queue item waiting (`why`) | Pending, with Jenkins' `why` as the message |
//! | queue item `cancelled` | Canceled (Lost when the job itself is gone) |
//! | build `building` | Running (also while an abort we asked for is under way) |
//! | `SUCCESS` | Succeeded |
//! | `FAILURE` | Failed: non-zero exit (the job's script exits with the build's code) |
//! | `UNSTABLE` | Failed: non-zero exit (evidence `UNSTABLE`) |
//! | `ABORTED` with the timeout marker | TimedOut (the job's own timeout, the backstop) |
//! | `ABORTED` | Canceled (by us or in Jenkins' UI) |
//! | `NOT_BUILT` | Failed: start refused (the build never ran) |
//! | job or build gone (404) | Lost, never success |

use executor_base::{BuildStatus, FailureReason};

use crate::api::{BuildInfo, QueueItem};
use crate::job::TIMEOUT_MARKER;

/// The status of build `b` of job `job`; `stopped` says we asked it to stop.
pub(crate) fn from_build(job: &str, b: &BuildInfo, stopped: bool) -> BuildStatus {
    let at = format!("{job} #{}", b.number);
    if b.building {
        // Still running after a stop until Jenkins finishes aborting it: reporting
        // Canceled now could be contradicted by a result that was already on its way.
        let mut s = BuildStatus::running();
        s.message = if stopped {
            format!("{at} is being stopped")
        } else {
            format!("running as {at}")
        };
        return s;
    }
    let evidence = |r: &str| Some(format!("Jenkins result {r}"));
    match b.result.as_deref() {
        None => BuildStatus::pending(format!("{at} is starting")),
        Some("SUCCESS") => {
            let mut s = BuildStatus::succeeded();
            s.message = format!("{at} succeeded");
            s
        }
        Some(r @ ("FAILURE" | "UNSTABLE")) => {
            let mut s = BuildStatus::failed(
                FailureReason::NonZeroExit,
                format!("{at} finished with {r}"),
                evidence(r),
            );
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(true);
            }
            s
        }
        Some("ABORTED") => {
            let desc = b.description.as_deref().unwrap_or("");
            if desc.contains(TIMEOUT_MARKER) {
                BuildStatus::timed_out(format!("{at}: {}", desc.trim()))
            } else {
                let mut s = BuildStatus::canceled();
                s.message = if stopped {
                    format!("{at} was stopped")
                } else {
                    format!("{at} was aborted in Jenkins")
                };
                s
            }
        }
        Some(r @ "NOT_BUILT") => {
            let mut s = BuildStatus::failed(
                FailureReason::StartRefused,
                format!("{at} was not built"),
                evidence(r),
            );
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(false);
            }
            s
        }
        Some(other) => BuildStatus::failed(
            FailureReason::EngineError,
            format!("{at} finished with unknown result {other}"),
            evidence(other),
        ),
    }
}

/// The status of a queue item that has not become a build; `None` once it has
/// (`executable` set: read the build instead).
pub(crate) fn from_queue(job: &str, q: &QueueItem) -> Option<BuildStatus> {
    if q.executable.is_some() {
        return None;
    }
    if q.cancelled == Some(true) {
        let mut s = BuildStatus::canceled();
        s.message = format!("queue item {} of {job} was cancelled", q.id);
        return Some(s);
    }
    let why = q.why.as_deref().map(str::trim).filter(|w| !w.is_empty());
    Some(BuildStatus::pending(match why {
        Some(w) => w.to_string(),
        None => format!("{job} is queued"),
    }))
}

/// A build whose job (or build record) vanished behind our back.
pub(crate) fn lost(job: &str, started: Option<bool>, what: &str) -> BuildStatus {
    BuildStatus::lost(started, format!("{job}: {what}"))
}

#[cfg(test)]
mod tests {
    use executor_base::Phase;

    use super::*;
    use crate::api::Executable;

    fn b(building: bool, result: Option<&str>, desc: Option<&str>) -> BuildInfo {
        BuildInfo {
            number: 3,
            building,
            result: result.map(str::to_string),
            description: desc.map(str::to_string),
            ..BuildInfo::default()
        }
    }

    #[test]
    fn results_map_to_phases() {
        assert_eq!(
            from_build("SD-1", &b(true, None, None), false).phase,
            Phase::Running
        );
        assert!(
            from_build("SD-1", &b(true, None, None), true)
                .message
                .contains("being stopped")
        );
        assert_eq!(
            from_build("SD-1", &b(false, None, None), false).phase,
            Phase::Pending
        );
        assert_eq!(
            from_build("SD-1", &b(false, Some("SUCCESS"), None), false).phase,
            Phase::Succeeded
        );
        let f = from_build("SD-1", &b(false, Some("FAILURE"), None), false);
        assert_eq!(
            (f.phase, f.reason()),
            (Phase::Failed, Some(FailureReason::NonZeroExit))
        );
        let u = from_build("SD-1", &b(false, Some("UNSTABLE"), None), false);
        assert_eq!(
            u.failure.unwrap().evidence.as_deref(),
            Some("Jenkins result UNSTABLE")
        );
        assert_eq!(
            from_build("SD-1", &b(false, Some("ABORTED"), None), true).phase,
            Phase::Canceled
        );
        let aborted = from_build("SD-1", &b(false, Some("ABORTED"), None), false);
        assert!(aborted.message.contains("aborted in Jenkins"));
        let t = from_build(
            "SD-1",
            &b(
                false,
                Some("ABORTED"),
                Some("sdx-timeout: the job timeout of 95 minutes aborted this build"),
            ),
            false,
        );
        assert_eq!(t.phase, Phase::TimedOut);
        let nb = from_build("SD-1", &b(false, Some("NOT_BUILT"), None), false);
        assert_eq!(nb.reason(), Some(FailureReason::StartRefused));
        assert_eq!(
            from_build("SD-1", &b(false, Some("WEIRD"), None), false).reason(),
            Some(FailureReason::EngineError)
        );
    }

    #[test]
    fn queue_items_map_to_pending_or_canceled() {
        let mut q = QueueItem {
            id: 9,
            why: Some("Waiting for next available executor on ‘screwdriver’".into()),
            ..QueueItem::default()
        };
        let s = from_queue("SD-1", &q).unwrap();
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(
            s.message,
            "Waiting for next available executor on ‘screwdriver’"
        );
        q.why = None;
        assert_eq!(from_queue("SD-1", &q).unwrap().message, "SD-1 is queued");
        q.cancelled = Some(true);
        assert_eq!(from_queue("SD-1", &q).unwrap().phase, Phase::Canceled);
        q.executable = Some(Executable { number: 1 });
        assert!(from_queue("SD-1", &q).is_none());
        assert_eq!(lost("SD-1", Some(true), "job deleted").phase, Phase::Lost);
    }
}
