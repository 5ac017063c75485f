//! Build timeout resolution: `screwdriver.cd/timeout` minutes, a default, a cap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::annotations::Annotations;

/// Minutes added to the build timeout for the build token's lifetime, so teardown steps
/// can still report after the build timed out (upstream launcher's constant).
pub const TOKEN_BUFFER_MINUTES: u32 = 30;

/// How a build's timeout is chosen.
///
/// ```
/// use executor_base::{Annotations, AnnotationMode, TimeoutPolicy};
/// let p = TimeoutPolicy::default();
/// let none = Annotations::default();
/// assert_eq!(p.minutes(&none), 90);
/// let long = Annotations::parse(&serde_json::json!({"screwdriver.cd/timeout": 600}), AnnotationMode::Strict).unwrap();
/// assert_eq!(p.minutes(&long), 120); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TimeoutPolicy {
    /// Used when the build has no `screwdriver.cd/timeout` (upstream: 90).
    pub default_minutes: u32,
    /// The cap for the annotation (upstream k8s/jenkins: 120).
    pub max_minutes: u32,
}

impl Default for TimeoutPolicy {
    fn default() -> Self {
        Self {
            default_minutes: 90,
            max_minutes: 120,
        }
    }
}

impl TimeoutPolicy {
    /// The build timeout in minutes.
    pub fn minutes(&self, annotations: &Annotations) -> u32 {
        annotations
            .timeout_minutes()
            .map(|m| m.min(self.max_minutes))
            .unwrap_or(self.default_minutes.min(self.max_minutes))
            .max(1)
    }

    /// The build timeout as a duration.
    pub fn duration(&self, annotations: &Annotations) -> Duration {
        Duration::from_secs(u64::from(self.minutes(annotations)) * 60)
    }

    /// The lifetime to ask for the build token: timeout plus [`TOKEN_BUFFER_MINUTES`].
    pub fn token_minutes(&self, annotations: &Annotations) -> u32 {
        self.minutes(annotations) + TOKEN_BUFFER_MINUTES
    }
}
