//! `verify`'s answer: typed for Rust callers, rendered to upstream's strings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::status::{BuildStatus, FailureReason, Phase};

/// Upstream executor-k8s's message for image problems.
pub const IMAGE_INVALID_MESSAGE: &str =
    "Build failed to start. Please check if your image is valid.";
/// Upstream executor-k8s's message for container/cluster problems.
pub const CONTACT_ADMIN_MESSAGE: &str =
    "Build failed to start. Please reach out to your cluster admin for help.";

/// Upstream's `Failed to create pod. Pod status is: <phase>` message.
pub fn pod_status_message(phase: &str) -> String {
    format!("Failed to create pod. Pod status is: {phase}")
}

/// What `verify` found.
///
/// ```
/// use executor_base::{Verdict, BuildStatus, FailureReason};
/// assert_eq!(Verdict::Healthy.to_string(), "");
/// assert_eq!(Verdict::Waiting.to_string(), "waiting");
/// let pull = BuildStatus::failed(FailureReason::ImagePull, "ErrImagePull", None);
/// assert_eq!(Verdict::from_status(&pull).to_string(),
///            "Build failed to start. Please check if your image is valid.");
/// assert!(Verdict::from_status(&pull).is_failure());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "verdict", content = "message")]
pub enum Verdict {
    /// Running or finished normally: upstream's `""`.
    Healthy,
    /// Not yet placed (no node / queued): upstream's `"waiting"` (transient).
    Waiting,
    /// Placed, starting (pulling, init containers): upstream's `"initializing"` (transient).
    Initializing,
    /// Failed to start or run: the message is the failure string.
    Failed(String),
}

impl Verdict {
    /// Derives the verdict from a status, with upstream's messages.
    pub fn from_status(s: &BuildStatus) -> Self {
        match s.phase {
            Phase::Pending => Verdict::Waiting,
            Phase::Pulling => Verdict::Initializing,
            Phase::Running | Phase::Succeeded | Phase::Canceled => Verdict::Healthy,
            Phase::Failed | Phase::Lost | Phase::TimedOut => {
                let msg = match s.reason() {
                    Some(FailureReason::ImagePull | FailureReason::InvalidImage) => {
                        IMAGE_INVALID_MESSAGE.to_string()
                    }
                    Some(FailureReason::ContainerConfig | FailureReason::CrashLoop) => {
                        CONTACT_ADMIN_MESSAGE.to_string()
                    }
                    _ => s.message.clone(),
                };
                Verdict::Failed(msg)
            }
        }
    }

    /// Whether this is a failure (not transient, not healthy).
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }

    /// Whether the build is still starting.
    pub fn is_transient(&self) -> bool {
        matches!(self, Verdict::Waiting | Verdict::Initializing)
    }

    /// The upstream string.
    pub fn as_str(&self) -> &str {
        match self {
            Verdict::Healthy => "",
            Verdict::Waiting => "waiting",
            Verdict::Initializing => "initializing",
            Verdict::Failed(m) => m,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
