//! `WORK_EXCEPTION` data: why a launcher could not run a build.

use executor_base::{BuildStatus, Error, ErrorKind, FailureReason};
use serde::{Deserialize, Serialize};

/// `WORK_EXCEPTION` data: why the launcher could not run the build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LauncherException {
    /// [`ErrorKind`]'s name (`invalid`, `image_pull`, `unavailable`, ...).
    pub kind: String,
    /// The error message (never contains a token).
    pub message: String,
    /// Whether trying again may succeed.
    #[serde(default)]
    pub temporary: bool,
    /// The rejected parameters of an `invalid` error: `[{field, reason}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<ExceptionField>,
}

/// One rejected parameter in a [`LauncherException`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionField {
    /// The parameter's name.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl From<&Error> for LauncherException {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind().as_str().to_string(),
            message: e.message().to_string(),
            temporary: e.is_temporary(),
            fields: e
                .field_errors()
                .iter()
                .map(|f| ExceptionField {
                    field: f.field.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }
}

impl LauncherException {
    /// Parses exception data; text that is not ours becomes an `unexpected` exception.
    pub fn from_data(data: &[u8]) -> Self {
        serde_json::from_slice(data).unwrap_or_else(|_| Self {
            kind: ErrorKind::Unexpected.as_str().to_string(),
            message: String::from_utf8_lossy(data).into_owned(),
            temporary: false,
            fields: Vec::new(),
        })
    }

    /// The build status a client records for it.
    pub fn to_status(&self) -> BuildStatus {
        let reason = match self.kind.as_str() {
            "invalid" | "config_invalid" => FailureReason::Configuration,
            "image_pull" => FailureReason::ImagePull,
            "token_rejected" | "unauthenticated" => FailureReason::TokenRejected,
            _ if self.temporary => FailureReason::EngineError,
            "unavailable" | "timeout" | "rate_limited" | "circuit_open" => {
                FailureReason::EngineError
            }
            _ => FailureReason::StartRefused,
        };
        let mut s = BuildStatus::failed(
            reason,
            format!("launcher could not run the build: {}", self.message),
            Some(self.kind.clone()),
        );
        if let Some(f) = s.failure.as_mut() {
            f.build_started = Some(false);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_map_to_typed_failures() {
        let e = Error::invalid_field("ZUUL_PROJECT", "is required");
        let x = LauncherException::from(&e);
        let wire = serde_json::to_vec(&x).unwrap();
        let s = LauncherException::from_data(&wire).to_status();
        assert_eq!(s.reason(), Some(FailureReason::Configuration));
        assert!(s.message.contains("ZUUL_PROJECT: is required"));
        let s = LauncherException::from_data(b"segfault").to_status();
        assert_eq!(s.reason(), Some(FailureReason::StartRefused));
    }
}
