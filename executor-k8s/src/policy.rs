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
                waiting("CreateContainerConfigError", R::ContainerConfig, Grace::Immediate),
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
            Match::PodReason { reason } => (pod.reason.as_deref() == Some(reason.as_str())).then(|| Hit {
                evidence: evidence(reason, pod.message.as_deref()),
                detail: pod.message.as_deref().map(str::to_string),
                since: pod.created,
            }),
            Match::PodPhase { phase } => (pod.phase.as_str() == phase).then(|| Hit {
                evidence: format!("pod phase {phase}"),
                detail: pod.message.as_deref().map(str::to_string),
                since: pod.created,
            }),
            Match::Condition { type_, status, reason } => pod
                .conditions
                .iter()
                .find(|c| {
                    *c.type_ == **type_
                        && *c.status == **status
                        && reason.as_deref().is_none_or(|r| c.reason.as_deref() == Some(r))
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

    /// The condition type this rule needs the cache to keep, if any.
    fn condition_type(&self) -> Option<&str> {
        match self {
            Match::Condition { type_, .. } => Some(type_),
            _ => None,
        }
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

    /// Whether the cache must keep conditions of type `t`.
    pub(crate) fn wants_condition(&self, t: &str) -> bool {
        self.rules.iter().any(|r| r.on.condition_type() == Some(t))
    }

    /// Checks the table: every reason names something.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let empty = match &r.on {
                Match::Waiting { reason } | Match::Terminated { reason } | Match::PodReason { reason } => {
                    reason.trim().is_empty()
                }
                Match::PodPhase { phase } => phase.trim().is_empty(),
                Match::Condition { type_, status, .. } => type_.trim().is_empty() || status.trim().is_empty(),
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
            let Some(hit) = rule.on.hit(pod) else { continue };
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
                if started { "had started" } else { "had not started" }
            ),
            exit_code,
            failure: Some(Failure {
                reason,
                evidence: Some(hit.evidence),
                build_started: Some(started),
            }),
        },
        Outcome::TimedOut => {
            let mut s = BuildStatus::timed_out(format!("build ran past its deadline ({})", hit.evidence));
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
                    reason.map(|r| format!(" ({})", evidence(r, msg))).unwrap_or_default()
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
            let mut s = BuildStatus::failed(FailureReason::EngineError, format!("pod failed: {ev}"), Some(ev));
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(pod.build_started());
            }
            s
        }
        PodPhase::Running | PodPhase::Unknown if pod.build_started() => BuildStatus::running(),
        _ => {
            let note = within_grace.map(|(hit, left)| format!("{} (fails in {}s)", hit.evidence, left.as_secs()));
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
