//! Validated build configs: parse, don't validate.
//!
//! Untrusted input (JSON from the API server, CLI flags) becomes a [`StartConfig`],
//! [`StopConfig`] or [`TimerConfig`] only through one parsing step that checks every field
//! and reports each bad one by its wire name. Backends receive only these types, so they
//! cannot be called with an unvalidated build. Wire names are Screwdriver's camelCase;
//! unknown fields are allowed (and kept in `extra`), as upstream's schemas allow them.

mod fields;
mod start;
mod stop;
mod timer;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::annotations::AnnotationMode;

pub use fields::parse_http_url;
pub use start::{StartConfig, StartConfigBuilder};
pub use stop::StopConfig;
pub use timer::TimerConfig;

/// Options of the parsing step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// How unknown annotation values are treated.
    pub annotation_mode: AnnotationMode,
}

/// The build statuses of Screwdriver's data model (`buildStatus` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiBuildStatus {
    /// `ABORTED`
    Aborted,
    /// `CREATED`
    Created,
    /// `FAILURE`
    Failure,
    /// `QUEUED`
    Queued,
    /// `RUNNING`
    Running,
    /// `SUCCESS`
    Success,
    /// `BLOCKED`
    Blocked,
    /// `UNSTABLE`
    Unstable,
    /// `COLLAPSED`
    Collapsed,
    /// `FROZEN`
    Frozen,
}

impl ApiBuildStatus {
    /// Every status, in the data model's order.
    pub const ALL: [ApiBuildStatus; 10] = [
        Self::Aborted,
        Self::Created,
        Self::Failure,
        Self::Queued,
        Self::Running,
        Self::Success,
        Self::Blocked,
        Self::Unstable,
        Self::Collapsed,
        Self::Frozen,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aborted => "ABORTED",
            Self::Created => "CREATED",
            Self::Failure => "FAILURE",
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Success => "SUCCESS",
            Self::Blocked => "BLOCKED",
            Self::Unstable => "UNSTABLE",
            Self::Collapsed => "COLLAPSED",
            Self::Frozen => "FROZEN",
        }
    }

    /// Parses the wire name (exact, upper case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for ApiBuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
