//! The build status state machine and typed failure reasons.
//!
//! `Pending -> Pulling -> Running -> Succeeded | Failed | Canceled | TimedOut | Lost`.
//! Failures carry a [`FailureReason`] that says whose fault it is ([`Fault`]) and whether a
//! retry is safe, plus the engine's own evidence. Backends classify on engine reasons, not
//! exit codes: an OOM kill with exit code 0 is [`FailureReason::OutOfMemory`], and a build
//! whose pod or container vanished behind our back is [`Phase::Lost`], never success.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ApiBuildStatus;

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Accepted by the engine, not yet running (queued, scheduling, waiting for a node).
    Pending,
    /// The engine is fetching the image.
    Pulling,
    /// The build's process is running.
    Running,
    /// Finished with success.
    Succeeded,
    /// Finished with a failure; see [`BuildStatus::failure`].
    Failed,
    /// Stopped on request.
    Canceled,
    /// Stopped because it ran past its timeout.
    TimedOut,
    /// The engine lost it (deleted behind our back, node gone, worker died).
    Lost,
}

impl Phase {
    /// Whether no further transition can happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Canceled | Phase::TimedOut | Phase::Lost
        )
    }

    /// Whether the state machine allows `self -> next`. Staying put is allowed.
    ///
    /// ```
    /// use executor_base::Phase;
    /// assert!(Phase::Pending.can_become(Phase::Running));
    /// assert!(Phase::Running.can_become(Phase::Lost));
    /// assert!(!Phase::Succeeded.can_become(Phase::Running));
    /// assert!(!Phase::Running.can_become(Phase::Pulling));
    /// ```
    pub fn can_become(self, next: Phase) -> bool {
        if self == next {
            return true;
        }
        match self {
            Phase::Pending => true,
            Phase::Pulling => next != Phase::Pending,
            Phase::Running => next.is_terminal(),
            _ => false,
        }
    }

    /// A lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Pulling => "pulling",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Canceled => "canceled",
            Phase::TimedOut => "timed_out",
            Phase::Lost => "lost",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// The build itself: bad image, failing steps, too much memory.
    User,
    /// The executor's or cluster's configuration.
    Configuration,
    /// A transient engine problem.
    Engine,
    /// Not enough capacity (unschedulable, quota).
    Capacity,
    /// The infrastructure lost the build (node died, evicted, deleted).
    Infrastructure,
}

/// Why a build failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailureReason {
    /// The build's process exited non-zero.
    NonZeroExit,
    /// Killed for memory (whatever the exit code).
    OutOfMemory,
    /// The image could not be pulled (missing, registry refused, back-off).
    ImagePull,
    /// The image reference is malformed.
    InvalidImage,
    /// The container could not be created from its configuration (bad secret ref, ...).
    ContainerConfig,
    /// The container keeps crashing at start.
    CrashLoop,
    /// No node can take the build.
    Unschedulable,
    /// Evicted or disrupted by the engine (node pressure, preemption).
    Evicted,
    /// The build vanished (deleted behind our back, worker died).
    InfrastructureLost,
    /// The engine failed in a way that may pass (5xx, timeouts).
    EngineError,
    /// The executor's configuration is wrong.
    Configuration,
    /// The API refused the token.
    TokenRejected,
    /// The engine refused to start the build.
    StartRefused,
    /// The launcher exited 0 without proving it ran the build (no launch handshake): an
    /// image whose `launch` does not speak the configured launch mode, such as upstream's
    /// `screwdrivercd/launcher` in native mode, which prints its usage and exits 0.
    LaunchProtocol,
}

impl FailureReason {
    /// Whose fault this is.
    pub fn fault(self) -> Fault {
        use FailureReason::*;
        match self {
            NonZeroExit | OutOfMemory | ImagePull | InvalidImage | CrashLoop => Fault::User,
            ContainerConfig | Configuration | TokenRejected | StartRefused | LaunchProtocol => {
                Fault::Configuration
            }
            Unschedulable => Fault::Capacity,
            Evicted | InfrastructureLost => Fault::Infrastructure,
            EngineError => Fault::Engine,
        }
    }

    /// Whether running the same build again is safe and may succeed without changes.
    pub fn retry_safe(self) -> bool {
        matches!(
            self.fault(),
            Fault::Engine | Fault::Capacity | Fault::Infrastructure
        )
    }

    /// A stable camelCase name.
    pub fn as_str(self) -> &'static str {
        use FailureReason::*;
        match self {
            NonZeroExit => "nonZeroExit",
            OutOfMemory => "outOfMemory",
            ImagePull => "imagePull",
            InvalidImage => "invalidImage",
            ContainerConfig => "containerConfig",
            CrashLoop => "crashLoop",
            Unschedulable => "unschedulable",
            Evicted => "evicted",
            InfrastructureLost => "infrastructureLost",
            EngineError => "engineError",
            Configuration => "configuration",
            TokenRejected => "tokenRejected",
            StartRefused => "startRefused",
            LaunchProtocol => "launchProtocol",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Details of a failed or lost build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Why.
    pub reason: FailureReason,
    /// The engine's own words (`OOMKilled`, `ImagePullBackOff: ...`), if any.
    pub evidence: Option<String>,
    /// Whether the build's own process ever started (matters for retries).
    pub build_started: Option<bool>,
}

/// A build's status as an executor sees it.
///
/// ```
/// use executor_base::{BuildStatus, Phase, FailureReason};
/// let s = BuildStatus::oom(Some(0), "OOMKilled");
/// assert_eq!(s.phase, Phase::Failed);
/// assert_eq!(s.failure.as_ref().unwrap().reason, FailureReason::OutOfMemory);
/// assert_eq!(s.api_status().as_str(), "FAILURE");
/// assert!(BuildStatus::lost(Some(true), "pod deleted").is_terminal());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    /// Where the build is.
    pub phase: Phase,
    /// A human readable message.
    pub message: String,
    /// The build process's exit code, when known.
    pub exit_code: Option<i32>,
    /// Set for `Failed` and `Lost` (and `TimedOut` when the engine said so).
    pub failure: Option<Failure>,
}

impl BuildStatus {
    fn simple(phase: Phase, message: impl Into<String>) -> Self {
        Self {
            phase,
            message: message.into(),
            exit_code: None,
            failure: None,
        }
    }

    /// Waiting for the engine (queued, scheduling).
    pub fn pending(message: impl Into<String>) -> Self {
        Self::simple(Phase::Pending, message)
    }

    /// Fetching the image.
    pub fn pulling(message: impl Into<String>) -> Self {
        Self::simple(Phase::Pulling, message)
    }

    /// Running.
    pub fn running() -> Self {
        Self::simple(Phase::Running, "running")
    }

    /// Finished successfully (exit code 0).
    pub fn succeeded() -> Self {
        Self {
            exit_code: Some(0),
            ..Self::simple(Phase::Succeeded, "succeeded")
        }
    }

    /// Finished from an exit code: 0 is success, anything else [`FailureReason::NonZeroExit`].
    pub fn exited(code: i32) -> Self {
        if code == 0 {
            Self::succeeded()
        } else {
            let mut s = Self::failed(
                FailureReason::NonZeroExit,
                format!("exited with code {code}"),
                None,
            );
            s.exit_code = Some(code);
            if let Some(f) = s.failure.as_mut() {
                f.build_started = Some(true);
            }
            s
        }
    }

    /// Failed for `reason`.
    pub fn failed(
        reason: FailureReason,
        message: impl Into<String>,
        evidence: Option<String>,
    ) -> Self {
        Self {
            failure: Some(Failure {
                reason,
                evidence,
                build_started: None,
            }),
            ..Self::simple(Phase::Failed, message)
        }
    }

    /// Killed for memory, whatever the exit code.
    pub fn oom(exit_code: Option<i32>, evidence: impl Into<String>) -> Self {
        let mut s = Self::failed(
            FailureReason::OutOfMemory,
            "killed: out of memory",
            Some(evidence.into()),
        );
        s.exit_code = exit_code;
        if let Some(f) = s.failure.as_mut() {
            f.build_started = Some(true);
        }
        s
    }

    /// Lost by the engine.
    pub fn lost(build_started: Option<bool>, message: impl Into<String>) -> Self {
        Self {
            failure: Some(Failure {
                reason: FailureReason::InfrastructureLost,
                evidence: None,
                build_started,
            }),
            ..Self::simple(Phase::Lost, message)
        }
    }

    /// Stopped on request.
    pub fn canceled() -> Self {
        Self::simple(Phase::Canceled, "canceled")
    }

    /// Stopped for running past its timeout.
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self::simple(Phase::TimedOut, message)
    }

    /// Whether the build is finished.
    pub fn is_terminal(&self) -> bool {
        self.phase.is_terminal()
    }

    /// The reason of a failure, if any.
    pub fn reason(&self) -> Option<FailureReason> {
        self.failure.as_ref().map(|f| f.reason)
    }

    /// The closest status in Screwdriver's data model.
    pub fn api_status(&self) -> ApiBuildStatus {
        match self.phase {
            Phase::Pending | Phase::Pulling => ApiBuildStatus::Queued,
            Phase::Running => ApiBuildStatus::Running,
            Phase::Succeeded => ApiBuildStatus::Success,
            Phase::Canceled => ApiBuildStatus::Aborted,
            Phase::Failed | Phase::TimedOut | Phase::Lost => ApiBuildStatus::Failure,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.phase)?;
        if let Some(fl) = &self.failure {
            write!(f, " ({})", fl.reason)?;
        }
        if !self.message.is_empty() && self.message != self.phase.as_str() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}
