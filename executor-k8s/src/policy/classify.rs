//! Classification: the first rule whose grace has passed decides, else the pod's phase.

use std::time::Duration;

use chrono::{DateTime, Utc};
use executor_base::{BuildStatus, Failure, FailureReason, Phase};

use super::hit::{Hit, evidence};
use super::{Outcome, ReasonPolicy};
use crate::view::{PodPhase, PodView};

impl ReasonPolicy {
    /// The status of a build whose pod looks like `pod` at `now`.
    pub(crate) fn classify(&self, pod: &PodView, now: DateTime<Utc>) -> BuildStatus {
        let mut within_grace: Option<(Hit, Duration)> = None;
        for rule in &self.rules {
            let Some(hit) = rule.on.hit(pod) else {
                continue;
            };
            let grace = self.grace(rule.grace);
            let elapsed = hit
                .since
                .map(|s| (now - s).to_std().unwrap_or_default())
                .unwrap_or_default();
            if grace.is_zero() || elapsed >= grace {
                return outcome(rule.then, hit, pod);
            }
            if within_grace.is_none() {
                within_grace = Some((hit, grace - elapsed));
            }
        }
        by_phase(pod, within_grace)
    }
}

fn outcome(then: Outcome, hit: Hit, pod: &PodView) -> BuildStatus {
    let started = pod.build_started();
    let exit_code = pod.build.terminated().map(|t| t.0);
    match then {
        Outcome::Fail {
            reason: FailureReason::OutOfMemory,
        } => BuildStatus::oom(exit_code, hit.evidence),
        Outcome::Fail { reason } => {
            let message = match reason {
                FailureReason::Unschedulable => format!(
                    "build could not be scheduled: {}",
                    hit.detail.as_deref().unwrap_or(&hit.evidence)
                ),
                _ => hit.evidence.clone(),
            };
            let mut s = BuildStatus::failed(reason, message, Some(hit.evidence));
            s.exit_code = exit_code;
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(started);
            }
            s
        }
        Outcome::Lost { reason } => BuildStatus {
            phase: Phase::Lost,
            message: format!(
                "pod lost ({}); the build {}",
                hit.evidence,
                if started {
                    "had started"
                } else {
                    "had not started"
                }
            ),
            exit_code,
            failure: Some(Failure {
                reason,
                evidence: Some(hit.evidence),
                build_started: Some(started),
            }),
        },
        Outcome::TimedOut => {
            let mut s =
                BuildStatus::timed_out(format!("build ran past its deadline ({})", hit.evidence));
            s.exit_code = exit_code;
            s
        }
    }
}

/// A rule still inside its grace, as the message shows it: `<evidence> (fails in 42s)`
/// (rounded up, so it never reads "fails in 0s" before it fails).
fn grace_note(within_grace: Option<(Hit, Duration)>) -> Option<String> {
    within_grace.map(|(hit, left)| {
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        format!("{} (fails in {secs}s)", hit.evidence)
    })
}

fn by_phase(pod: &PodView, within_grace: Option<(Hit, Duration)>) -> BuildStatus {
    let note = grace_note(within_grace);
    if let Some((code, reason, msg)) = pod.build.terminated() {
        let mut s = BuildStatus::exited(code);
        if code != 0
            && let Some(r) = reason
        {
            s.message = format!("exited with code {code} ({})", evidence(r, msg));
        }
        return s;
    }
    match pod.phase {
        PodPhase::Succeeded => BuildStatus::succeeded(),
        PodPhase::Failed => {
            if let Some((code, reason, msg)) = pod.init.terminated().filter(|t| t.0 != 0) {
                let ev = format!(
                    "launcher init container exited with code {code}{}",
                    reason
                        .map(|r| format!(" ({})", evidence(r, msg)))
                        .unwrap_or_default()
                );
                let mut s = BuildStatus::failed(FailureReason::StartRefused, ev.clone(), Some(ev));
                if let Some(f) = s.failure.as_mut() {
                    f.build_started = Some(false);
                }
                return s;
            }
            let ev = evidence(
                pod.reason.as_deref().unwrap_or("Failed"),
                pod.message.as_deref(),
            );
            let mut s = BuildStatus::failed(
                FailureReason::EngineError,
                format!("pod failed: {ev}"),
                Some(ev),
            );
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(pod.build_started());
            }
            s
        }
        PodPhase::Running | PodPhase::Unknown if pod.build_started() => {
            let mut s = BuildStatus::running();
            if let Some(note) = note {
                s.message = format!("{}: {note}", s.message);
            }
            s
        }
        _ => {
            if pod.node_assigned {
                let waiting = pod
                    .init
                    .waiting()
                    .or_else(|| pod.build.waiting())
                    .map(|(r, _, _)| r.to_string());
                BuildStatus::pulling(
                    note.or(waiting)
                        .map(|m| format!("initializing: {m}"))
                        .unwrap_or_else(|| "initializing".to_string()),
                )
            } else {
                BuildStatus::pending(
                    note.map(|m| format!("waiting for a node: {m}"))
                        .unwrap_or_else(|| "waiting for a node".to_string()),
                )
            }
        }
    }
}
