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

mod classify;
mod hit;
#[cfg(test)]
mod tests;

use std::time::Duration;

use executor_base::FailureReason;
use serde::{Deserialize, Serialize};

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
    /// The build failed ([`Phase::Failed`](executor_base::Phase::Failed)) for `reason`.
    Fail {
        /// Why.
        reason: FailureReason,
    },
    /// The infrastructure lost the build ([`Phase::Lost`](executor_base::Phase::Lost))
    /// for `reason`; the status says whether the build's process had started.
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
}
