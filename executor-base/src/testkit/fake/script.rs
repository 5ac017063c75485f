//! [`Script`]s: the statuses a fake build goes through, and when.

use std::time::Duration;

use crate::status::{BuildStatus, FailureReason};

/// When a script step happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// This long after the previous step.
    After(Duration),
    /// Only on [`FakeExecutor::advance`](super::FakeExecutor::advance).
    Manual,
}

/// The statuses a fake build goes through, from the moment it is started.
///
/// ```
/// use std::time::Duration;
/// use executor_base::testkit::fake::Script;
/// use executor_base::BuildStatus;
/// let s = Script::starting_with(BuildStatus::pending("queued"))
///     .then_after(Duration::from_millis(5), BuildStatus::running())
///     .then_manual(BuildStatus::succeeded());
/// assert_eq!(s.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub(super) steps: Vec<(Trigger, BuildStatus)>,
}

/// The default step delay of the built-in scripts.
pub(super) const STEP: Duration = Duration::from_millis(5);

impl Script {
    /// A script whose first status (right after `start`) is `status`.
    pub fn starting_with(status: BuildStatus) -> Self {
        Self {
            steps: vec![(Trigger::After(Duration::ZERO), status)],
        }
    }

    /// Adds a step `after` the previous one.
    ///
    /// # Panics
    /// If the state machine does not allow the transition ([`crate::Phase::can_become`]).
    pub fn then_after(self, after: Duration, status: BuildStatus) -> Self {
        self.then(Trigger::After(after), status)
    }

    /// Adds a step that happens on [`FakeExecutor::advance`](super::FakeExecutor::advance).
    ///
    /// # Panics
    /// If the state machine does not allow the transition.
    pub fn then_manual(self, status: BuildStatus) -> Self {
        self.then(Trigger::Manual, status)
    }

    fn then(mut self, trigger: Trigger, status: BuildStatus) -> Self {
        let prev = &self.steps.last().expect("a script has a first step").1;
        assert!(
            prev.phase.can_become(status.phase),
            "script: {} cannot become {}",
            prev.phase,
            status.phase
        );
        self.steps.push((trigger, status));
        self
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the script has only its first step.
    pub fn is_empty(&self) -> bool {
        self.steps.len() <= 1
    }

    /// `Pending -> Pulling -> Running` a few milliseconds apart, then runs until stopped
    /// (the default; what the conformance suite needs).
    pub fn run_until_stopped() -> Self {
        Self::starting_with(BuildStatus::pending("waiting for the fake engine"))
            .then_after(STEP, BuildStatus::pulling("pulling the image"))
            .then_after(STEP, BuildStatus::running())
    }

    /// Runs, then ends with `outcome` `after` it started running.
    pub fn finish_after(after: Duration, outcome: BuildStatus) -> Self {
        Self::run_until_stopped().then_after(after, outcome)
    }

    /// Runs and succeeds (exit code 0) `after` it started running.
    pub fn succeed_after(after: Duration) -> Self {
        Self::finish_after(after, BuildStatus::succeeded())
    }

    /// The image cannot be pulled: `Pending -> Pulling -> Failed(ImagePull)`.
    pub fn image_pull_failure() -> Self {
        Self::starting_with(BuildStatus::pending("waiting for the fake engine"))
            .then_after(STEP, BuildStatus::pulling("pulling the image"))
            .then_after(
                STEP,
                BuildStatus::failed(
                    FailureReason::ImagePull,
                    "image pull failed",
                    Some("ErrImagePull: manifest unknown".into()),
                ),
            )
    }

    /// Killed for memory with exit code 0 `after` it started running.
    pub fn oom_exit_zero(after: Duration) -> Self {
        Self::finish_after(
            after,
            BuildStatus::oom(Some(0), "OOMKilled: true, ExitCode: 0"),
        )
    }

    /// Vanishes (deleted behind the executor's back) `after` it started running.
    pub fn lost_after(after: Duration) -> Self {
        Self::finish_after(
            after,
            BuildStatus::lost(Some(true), "the build's resources vanished from the engine"),
        )
    }

    /// `Pending`, then `Pulling`, `Running` and `Succeeded`, each on [`FakeExecutor::advance`](super::FakeExecutor::advance).
    pub fn manual() -> Self {
        Self::starting_with(BuildStatus::pending("waiting for the fake engine"))
            .then_manual(BuildStatus::pulling("pulling the image"))
            .then_manual(BuildStatus::running())
            .then_manual(BuildStatus::succeeded())
    }
}

impl Default for Script {
    fn default() -> Self {
        Self::run_until_stopped()
    }
}
