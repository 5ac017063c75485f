//! Build events for subscribers (the CLI's progress display): status changes, step starts
//! and ends, and step output, in the order the API accepted them.

use executor_base::ApiBuildStatus;
use serde::Serialize;

use crate::model::LogLine;

/// One change to a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum BuildEvent {
    /// The build's status (or status message) changed.
    Status {
        /// The build.
        build_id: u64,
        /// The new status.
        status: ApiBuildStatus,
        /// The orchestrator-style state (`wait`, `build`, `done`, `failed`).
        state: &'static str,
        /// The status message, if any.
        message: Option<String>,
    },
    /// A step started.
    StepStarted {
        /// The build.
        build_id: u64,
        /// The step.
        step: String,
    },
    /// A step ended.
    StepFinished {
        /// The build.
        build_id: u64,
        /// The step.
        step: String,
        /// Its exit code.
        code: i32,
    },
    /// Lines of a step's output.
    Log {
        /// The build.
        build_id: u64,
        /// The step.
        step: String,
        /// The lines, in order.
        lines: Vec<LogLine>,
    },
}

impl BuildEvent {
    /// The build the event is about.
    pub fn build_id(&self) -> u64 {
        match self {
            BuildEvent::Status { build_id, .. }
            | BuildEvent::StepStarted { build_id, .. }
            | BuildEvent::StepFinished { build_id, .. }
            | BuildEvent::Log { build_id, .. } => *build_id,
        }
    }
}
