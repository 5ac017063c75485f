//! The per-reason failure policy: a table of data, not code.
//!
//! Kubernetes tells *why* a pod is stuck or gone through container waiting reasons
//! (`ErrImagePull`, `CreateContainerConfigError`, ...), termination reasons (`OOMKilled`),
//! the pod's own reason (`Evicted`, `DeadlineExceeded`), its phase and its conditions
//! (`PodScheduled=False/Unschedulable`, `DisruptionTarget=True`). A [`ReasonPolicy`] maps
//! each of those to an [`Outcome`] after a [`Grace`]: the first rule (in table order) whose
//! grace has passed decides the build's status; a matching rule still inside its grace
//! only colours the transient status's message. Operators change the table in config
//! (serde), not in code.
//!
//! ```
//! use executor_k8s::{ReasonPolicy, ReasonRule, Match, Outcome, Grace};
//! use executor_base::FailureReason;
//! let mut p = ReasonPolicy::default();
//! // Treat a missing secret as a configuration failure only after 30 s.
//! p.rules.insert(0, ReasonRule {
//!     on: Match::Waiting { reason: "CreateContainerConfigError".into() },
//!     then: Outcome::Fail { reason: FailureReason::ContainerConfig },
//!     grace: Grace::Seconds(30),
//! });
//! let json = serde_json::to_value(&p).unwrap();
//! assert_eq!(json["rules"][0]["on"]["waiting"]["reason"], "CreateContainerConfigError");
//! let back: ReasonPolicy = serde_json::from_value(json).unwrap();
//! assert_eq!(back, p);
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use executor_base::{BuildStatus, Failure, FailureReason, Phase};
use serde::{Deserialize, Serialize};

use crate::view::{PodPhase, PodView};

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Match {
    /// A container (init or build) waiting with this reason (`ErrImagePull`).
    Waiting {
        /// The waiting reason.
        reason: String,
    },
    /// A container (init or build) terminated with this reason (`OOMKilled`).
    Terminated {
        /// The termination reason.
        reason: String,
    },
    /// The pod's `status.reason` (`Evicted`, `DeadlineExceeded`).
    PodReason {
        /// The pod reason.
        reason: String,
    },
    /// The pod's `status.phase` (`Unknown`).
    PodPhase {
        /// The phase as the API spells it.
        phase: String,
    },
    /// A pod condition with this type and status, and reason when given.
    Condition {
        /// The condition type (`PodScheduled`, `DisruptionTarget`).
        #[serde(rename = "type")]
        type_: String,
        /// `"True"`, `"False"` or `"Unknown"`.
        status: String,
        /// The condition reason (`Unschedulable`); any when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// What a matching rule does once its grace has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum Outcome {
    /// The build failed ([`Phase::Failed`]) for `reason`.
    Fail {
        /// Why.
        reason: FailureReason,
    },
    /// The infrastructure lost the build ([`Phase::Lost`]) for `reason`; the status says
    /// whether the build's process had started.
    Lost {
        /// Why.
        reason: FailureReason,
    },
    /// The engine-side deadline (`activeDeadlineSeconds`) ended the build.
    TimedOut,
}

/// How long a rule waits before it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Grace {
    /// Decide at once.
    Immediate,
    /// [`ReasonPolicy::image_pull_grace_seconds`], from when the reason was first seen.
    ImagePull,
    /// [`ReasonPolicy::pending_timeout_seconds`], from the condition's transition time.
    Pending,
    /// A fixed number of seconds.
    Seconds(u64),
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonRule {
    /// What the rule looks at.
    pub on: Match,
    /// What it decides.
    pub then: Outcome,
    /// How long it waits first.
    pub grace: Grace,
}

impl ReasonRule {
    /// A rule.
    pub fn new(on: Match, then: Outcome, grace: Grace) -> Self {
        Self { on, then, grace }
    }
}

/// The per-reason policy. `Default` is the table in the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReasonPolicy {
    /// How long `ErrImagePull` / `ImagePullBackOff` may last before the build fails
    /// (default 60 s: registries hiccup; a missing image does not heal).
    pub image_pull_grace_seconds: u64,
    /// How long a pod may stay unschedulable before the build fails for capacity
    /// (default 600 s).
    pub pending_timeout_seconds: u64,
    /// The rules, first match (whose grace passed) wins.
    pub rules: Vec<ReasonRule>,
}

fn waiting(reason: &str, then: FailureReason, grace: Grace) -> ReasonRule {
    ReasonRule::new(
        Match::Waiting {
            reason: reason.into(),
        },
        Outcome::Fail { reason: then },
        grace,
    )
}

fn terminated(reason: &str, then: FailureReason) -> ReasonRule {
    ReasonRule::new(
        Match::Terminated {
            reason: reason.into(),
        },
        Outcome::Fail { reason: then },
        Grace::Immediate,
    )
}

impl Default for ReasonPolicy {
    fn default() -> Self {
        use FailureReason as R;
        Self {
            image_pull_grace_seconds: 60,
            pending_timeout_seconds: 600,
            rules: vec![
                terminated("OOMKilled", R::OutOfMemory),
                ReasonRule::new(
                    Match::PodReason {
                        reason: "Evicted".into(),
                    },
                    Outcome::Lost { reason: R::Evicted },
                    Grace::Immediate,
                ),
                ReasonRule::new(
                    Match::Condition {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                        reason: None,
                    },
                    Outcome::Lost { reason: R::Evicted },
                    Grace::Immediate,
                ),
                ReasonRule::new(
                    Match::PodReason {
                        reason: "DeadlineExceeded".into(),
                    },
                    Outcome::TimedOut,
                    Grace::Immediate,
                ),
                waiting("InvalidImageName", R::InvalidImage, Grace::Immediate),
                waiting("ErrImageNeverPull", R::ImagePull, Grace::Immediate),
                waiting("ErrImagePull", R::ImagePull, Grace::ImagePull),
                waiting("ImagePullBackOff", R::ImagePull, Grace::ImagePull),
                waiting(
                    "CreateContainerConfigError",
                    R::ContainerConfig,
                    Grace::Immediate,
                ),
                waiting("CreateContainerError", R::ContainerConfig, Grace::Immediate),
                waiting("RunContainerError", R::ContainerConfig, Grace::Immediate),
                waiting("CrashLoopBackOff", R::CrashLoop, Grace::Immediate),
                terminated("StartError", R::ContainerConfig),
                terminated("ContainerCannotRun", R::ContainerConfig),
                ReasonRule::new(
                    Match::Condition {
                        type_: "PodScheduled".into(),
                        status: "False".into(),
                        reason: Some("Unschedulable".into()),
                    },
                    Outcome::Fail {
                        reason: R::Unschedulable,
                    },
                    Grace::Pending,
                ),
                ReasonRule::new(
                    Match::PodPhase {
                        phase: "Unknown".into(),
                    },
                    Outcome::Lost {
                        reason: R::InfrastructureLost,
                    },
                    Grace::Seconds(300),
                ),
            ],
        }
    }
}

/// A rule's match on a pod: the evidence and when the condition began.
struct Hit {
    evidence: String,
    detail: Option<String>,
    since: Option<DateTime<Utc>>,
}

impl Match {
    fn hit(&self, pod: &PodView) -> Option<Hit> {
        let containers = [&pod.init, &pod.build];
        match self {
            Match::Waiting { reason } => containers.iter().find_map(|c| {
                let (r, msg, since) = c.waiting()?;
                (r == reason).then(|| Hit {
                    evidence: evidence(r, msg),
                    detail: msg.map(str::to_string),
                    since: Some(since),
                })
            }),
            Match::Terminated { reason } => containers.iter().find_map(|c| {
                let (code, r, msg) = c.terminated()?;
                (r == Some(reason.as_str())).then(|| Hit {
                    evidence: format!("{} (exit code {code})", evidence(reason, msg)),
                    detail: msg.map(str::to_string),
                    since: pod.created,
                })
            }),
            Match::PodReason { reason } => {
                (pod.reason.as_deref() == Some(reason.as_str())).then(|| Hit {
                    evidence: evidence(reason, pod.message.as_deref()),
                    detail: pod.message.as_deref().map(str::to_string),
                    since: pod.created,
                })
            }
            Match::PodPhase { phase } => (pod.phase.as_str() == phase).then(|| Hit {
                evidence: format!("pod phase {phase}"),
                detail: pod.message.as_deref().map(str::to_string),
                since: pod.created,
            }),
            Match::Condition {
                type_,
                status,
                reason,
            } => pod
                .conditions
                .iter()
                .find(|c| {
                    *c.type_ == **type_
                        && *c.status == **status
                        && reason
                            .as_deref()
                            .is_none_or(|r| c.reason.as_deref() == Some(r))
                })
                .map(|c| Hit {
                    evidence: format!(
                        "{}={}{}",
                        c.type_,
                        c.status,
                        c.reason
                            .as_deref()
                            .map(|r| format!(" ({})", evidence(r, c.message.as_deref())))
                            .unwrap_or_default()
                    ),
                    detail: c.message.as_deref().map(str::to_string),
                    since: c.since.or(pod.created),
                }),
        }
    }

    /// Whether this rule needs the cache to keep a condition of this type and status.
    fn wants_condition(&self, t: &str, st: &str) -> bool {
        matches!(self, Match::Condition { type_, status, .. } if type_ == t && status == st)
    }
}

fn evidence(reason: &str, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("{reason}: {m}"),
        _ => reason.to_string(),
    }
}

impl ReasonPolicy {
    /// The grace of `g` under this policy.
    pub fn grace(&self, g: Grace) -> Duration {
        match g {
            Grace::Immediate => Duration::ZERO,
            Grace::ImagePull => Duration::from_secs(self.image_pull_grace_seconds),
            Grace::Pending => Duration::from_secs(self.pending_timeout_seconds),
            Grace::Seconds(s) => Duration::from_secs(s),
        }
    }

    /// Whether the cache must keep a condition of type `t` and status `st` (only those a
    /// rule looks at, so a healthy pod keeps none).
    pub(crate) fn wants_condition(&self, t: &str, st: &str) -> bool {
        self.rules.iter().any(|r| r.on.wants_condition(t, st))
    }

    /// Checks the table: every reason names something.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let empty = match &r.on {
                Match::Waiting { reason }
                | Match::Terminated { reason }
                | Match::PodReason { reason } => reason.trim().is_empty(),
                Match::PodPhase { phase } => phase.trim().is_empty(),
                Match::Condition { type_, status, .. } => {
                    type_.trim().is_empty() || status.trim().is_empty()
                }
            };
            if empty {
                return Err(format!("rules[{i}]: empty reason, phase or condition"));
            }
        }
        Ok(())
    }

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

fn by_phase(pod: &PodView, within_grace: Option<(Hit, Duration)>) -> BuildStatus {
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
        PodPhase::Running | PodPhase::Unknown if pod.build_started() => BuildStatus::running(),
        _ => {
            let note = within_grace
                .map(|(hit, left)| format!("{} (fails in {}s)", hit.evidence, left.as_secs()));
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn base(status: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "sd-1-abcde", "creationTimestamp": "2027-01-15T08:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "sd-1"}], "initContainers": [{"name": "launcher-sd-1"}]},
            "status": status,
        }))
    }

    fn view(p: &Pod, prev: Option<&PodView>, now: DateTime<Utc>, policy: &ReasonPolicy) -> PodView {
        PodView::from_pod(p, prev, now, |c, st| policy.wants_condition(c, st))
    }

    fn waiting(reason: &str) -> Pod {
        base(
            serde_json::json!({"phase": "Pending", "containerStatuses": [
            {"name": "sd-1", "ready": false, "restartCount": 0, "image": "", "imageID": "",
             "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
        )
    }

    #[test]
    fn image_pull_grace_counts_from_when_the_reason_was_first_seen() {
        let p = ReasonPolicy {
            image_pull_grace_seconds: 60,
            ..ReasonPolicy::default()
        };
        let first = view(&waiting("ErrImagePull"), None, t(0), &p);
        let s = p.classify(&first, t(10));
        assert_eq!(s.phase, Phase::Pulling);
        assert!(s.message.contains("ErrImagePull: m (fails in 50s)"), "{s}");
        // The same reason later keeps its first-seen time ...
        let later = view(&waiting("ErrImagePull"), Some(&first), t(59), &p);
        assert_eq!(p.classify(&later, t(59)).phase, Phase::Pulling);
        let s = p.classify(&later, t(60));
        assert_eq!(
            (s.phase, s.reason()),
            (Phase::Failed, Some(FailureReason::ImagePull))
        );
        // ... a new reason restarts it.
        let backoff = view(&waiting("ImagePullBackOff"), Some(&later), t(61), &p);
        assert_eq!(p.classify(&backoff, t(100)).phase, Phase::Pulling);
        assert!(p.classify(&backoff, t(121)).is_terminal());
    }

    #[test]
    fn immediate_reasons_fail_at_once() {
        let p = ReasonPolicy::default();
        for (reason, want) in [
            ("InvalidImageName", FailureReason::InvalidImage),
            ("ErrImageNeverPull", FailureReason::ImagePull),
            ("CreateContainerConfigError", FailureReason::ContainerConfig),
            ("CreateContainerError", FailureReason::ContainerConfig),
            ("CrashLoopBackOff", FailureReason::CrashLoop),
        ] {
            let v = view(&waiting(reason), None, t(0), &p);
            assert_eq!(p.classify(&v, t(0)).reason(), Some(want), "{reason}");
        }
        // A reason the table does not know is just "initializing".
        let v = view(&waiting("ContainerCreating"), None, t(0), &p);
        let s = p.classify(&v, t(1000));
        assert_eq!(
            (s.phase, s.message.as_str()),
            (Phase::Pulling, "initializing: ContainerCreating")
        );
    }

    #[test]
    fn the_table_is_data_first_match_wins_and_can_be_changed() {
        let mut p = ReasonPolicy::default();
        // Make CrashLoopBackOff transient for 30 s by putting a rule before the default.
        p.rules.insert(
            0,
            ReasonRule::new(
                Match::Waiting {
                    reason: "CrashLoopBackOff".into(),
                },
                Outcome::Fail {
                    reason: FailureReason::CrashLoop,
                },
                Grace::Seconds(30),
            ),
        );
        p.rules.retain(|r| {
            !(r.on
                == Match::Waiting {
                    reason: "CrashLoopBackOff".into(),
                }
                && r.grace == Grace::Immediate)
        });
        let v = view(&waiting("CrashLoopBackOff"), None, t(0), &p);
        assert!(!p.classify(&v, t(29)).is_terminal());
        assert!(p.classify(&v, t(30)).is_terminal());
        // An empty table: only phases and exit codes count.
        let none = ReasonPolicy {
            rules: vec![],
            ..ReasonPolicy::default()
        };
        assert!(
            !none
                .classify(
                    &view(&waiting("InvalidImageName"), None, t(0), &none),
                    t(999)
                )
                .is_terminal()
        );
        assert!(none.validate().is_ok());
    }

    #[test]
    fn unschedulable_fails_after_the_pending_timeout_with_the_schedulers_message() {
        let p = ReasonPolicy {
            pending_timeout_seconds: 300,
            ..ReasonPolicy::default()
        };
        let mut pd = pod(serde_json::json!({
            "metadata": {"name": "sd-1-abcde", "creationTimestamp": "2027-01-15T08:00:00Z"},
            "spec": {"containers": [{"name": "sd-1"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory.",
                "lastTransitionTime": "2027-01-15T08:00:00Z"}]}
        }));
        let since = crate::view::to_chrono(
            pd.status.as_ref().unwrap().conditions.as_ref().unwrap()[0]
                .last_transition_time
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let v = view(&pd, None, since, &p);
        let s = p.classify(&v, since + chrono::Duration::seconds(299));
        assert_eq!(s.phase, Phase::Pending);
        assert!(s.message.contains("Insufficient memory"), "{s}");
        let s = p.classify(&v, since + chrono::Duration::seconds(300));
        assert_eq!(
            (s.phase, s.reason()),
            (Phase::Failed, Some(FailureReason::Unschedulable))
        );
        assert_eq!(
            s.message,
            "build could not be scheduled: 0/3 nodes are available: 3 Insufficient memory."
        );
        // Scheduled after all: no longer matches.
        pd.status.as_mut().unwrap().conditions = None;
        assert_eq!(
            p.classify(
                &view(&pd, Some(&v), since, &p),
                since + chrono::Duration::seconds(900)
            )
            .phase,
            Phase::Pending
        );
    }

    #[test]
    fn phase_unknown_is_lost_after_its_grace() {
        let p = ReasonPolicy::default();
        let pd = base(
            serde_json::json!({"phase": "Unknown", "containerStatuses": [
            {"name": "sd-1", "ready": true, "restartCount": 0, "image": "", "imageID": "",
             "state": {"running": {"startedAt": "2027-01-15T08:00:01Z"}}}]}),
        );
        let v = view(&pd, None, t(0), &p);
        let created = v.created.unwrap();
        assert_eq!(
            p.classify(&v, created + chrono::Duration::seconds(299))
                .phase,
            Phase::Running
        );
        let s = p.classify(&v, created + chrono::Duration::seconds(300));
        assert_eq!(
            (s.phase, s.failure.unwrap().build_started),
            (Phase::Lost, Some(true))
        );
    }

    #[test]
    fn oom_with_exit_code_zero_is_still_oom() {
        let p = ReasonPolicy::default();
        let pd = base(
            serde_json::json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "sd-1", "ready": false, "restartCount": 0, "image": "", "imageID": "",
             "state": {"terminated": {"exitCode": 0, "reason": "OOMKilled", "startedAt": "2027-01-15T08:00:01Z"}}}]}),
        );
        let s = p.classify(&view(&pd, None, t(0), &p), t(0));
        assert_eq!(
            (s.reason(), s.exit_code),
            (Some(FailureReason::OutOfMemory), Some(0))
        );
    }

    #[test]
    fn the_default_table_serialises_readably() {
        let v = serde_json::to_value(ReasonPolicy::default()).unwrap();
        assert_eq!(
            v["rules"][0],
            serde_json::json!({
                "on": {"terminated": {"reason": "OOMKilled"}},
                "then": {"status": "fail", "reason": "outOfMemory"},
                "grace": "immediate"
            })
        );
        assert_eq!(v["rules"][6]["grace"], "imagePull");
        assert_eq!(
            v["rules"].as_array().unwrap().last().unwrap()["grace"],
            serde_json::json!({"seconds": 300})
        );
    }
}
