//! One error type for every executor, classified by meaning and retryability.
//!
//! Modelled on OpenDAL's error struct: a [`ErrorKind`] that says what went wrong, the
//! executor and operation that failed, a `temporary` flag that says whether the same call
//! may succeed if retried, and the engine's own evidence as context. Error messages never
//! contain tokens: the types that carry tokens ([`secrecy::SecretString`]) cannot be
//! formatted, and backends build messages only from engine answers and ids.

use std::fmt;
use std::time::Duration;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Input failed validation (see [`Error::field_errors`]); nothing was sent to an engine.
    Invalid,
    /// The executor's own configuration (options, credentials, templates) is wrong.
    ConfigInvalid,
    /// The build (or engine object) does not exist.
    NotFound,
    /// A build with this id is already running on this executor.
    AlreadyExists,
    /// The engine or API refused our credentials.
    Unauthenticated,
    /// The credentials are valid but not allowed to do this.
    PermissionDenied,
    /// This executor does not support the operation.
    Unsupported,
    /// The engine asked us to slow down (HTTP 429 or equivalent).
    RateLimited,
    /// The call did not finish within its time bound.
    Timeout,
    /// The engine could not be reached (connection refused, DNS, socket missing).
    Unavailable,
    /// The circuit breaker is open: the engine failed repeatedly and calls fail fast.
    /// [`crate::engine::EngineCalls`] reports the last real cause instead (with the
    /// breaker's state as context, see [`crate::engine::refused_by_breaker`]); this kind
    /// remains for a breaker that has no cause to report.
    CircuitOpen,
    /// The build's image could not be pulled or is malformed.
    ImagePull,
    /// The token was rejected or is expired.
    TokenRejected,
    /// The engine answered with something we did not expect.
    Unexpected,
}

impl ErrorKind {
    /// A short, stable, lowercase name (`"invalid"`, `"not_found"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::ConfigInvalid => "config_invalid",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::ImagePull => "image_pull",
            ErrorKind::TokenRejected => "token_rejected",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rejected input field: its wire name (`buildId`, `annotations[screwdriver.cd/cpu]`)
/// and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the caller spelled it on the wire.
    pub field: String,
    /// Why the value was refused, e.g. `must be a positive integer`.
    pub reason: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error every [`crate::Executor`] method returns.
///
/// ```
/// use executor_base::{Error, ErrorKind};
/// let e = Error::new(ErrorKind::Unavailable, "cannot reach unix:///var/run/docker.sock")
///     .with_executor("docker")
///     .with_operation("start")
///     .temporary();
/// assert!(e.is_temporary());
/// assert_eq!(e.to_string(), "docker start: unavailable: cannot reach unix:///var/run/docker.sock");
/// ```
pub struct Error(Box<Inner>);

/// The error's fields, boxed so `Result<T, Error>` stays one pointer wide.
struct Inner {
    kind: ErrorKind,
    message: String,
    executor: &'static str,
    operation: &'static str,
    status: Option<u16>,
    temporary: bool,
    retry_after: Option<Duration>,
    fields: Vec<FieldError>,
    context: Vec<(&'static str, String)>,
    source: Option<Source>,
}

impl Error {
    /// A new, persistent error of `kind` with a human readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            executor: "",
            operation: "",
            status: None,
            temporary: false,
            retry_after: None,
            fields: Vec::new(),
            context: Vec::new(),
            source: None,
        }))
    }

    /// A validation error listing every rejected field.
    pub fn invalid(fields: Vec<FieldError>) -> Self {
        let message = fields
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(ErrorKind::Invalid, message);
        e.0.fields = fields;
        e
    }

    /// A validation error for one field.
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, reason)])
    }

    /// A `NotFound` error for a build.
    pub fn build_not_found(build_id: crate::BuildId) -> Self {
        Self::new(ErrorKind::NotFound, format!("build {build_id} not found"))
    }

    /// Sets the executor name (`docker`, `k8s`, ...).
    pub fn with_executor(mut self, executor: &'static str) -> Self {
        self.0.executor = executor;
        self
    }

    /// Sets the operation (`start`, `stop`, ...).
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.0.operation = operation;
        self
    }

    /// Records the engine's HTTP status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.0.status = Some(status);
        self
    }

    /// Adds a piece of context (`("container", "sd-42-build")`).
    pub fn with_context(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.0.context.push((key, value.into()));
        self
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// Marks the error as temporary: the same call may succeed later.
    pub fn temporary(mut self) -> Self {
        self.0.temporary = true;
        self
    }

    /// Marks the error as persistent (e.g. after retries gave up).
    pub fn persistent(mut self) -> Self {
        self.0.temporary = false;
        self
    }

    /// Says when a retry is worth it (from `Retry-After`); implies temporary.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self.0.temporary = true;
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The message, without executor/operation prefix.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The executor that failed, or `""`.
    pub fn executor(&self) -> &'static str {
        self.0.executor
    }

    /// The operation that failed, or `""`.
    pub fn operation(&self) -> &'static str {
        self.0.operation
    }

    /// The engine's HTTP status, if any.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// Whether retrying the same call may succeed.
    pub fn is_temporary(&self) -> bool {
        self.0.temporary
    }

    /// How long the engine asked us to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// The rejected fields of an [`ErrorKind::Invalid`] error.
    pub fn field_errors(&self) -> &[FieldError] {
        &self.0.fields
    }

    /// Context pairs added by the backend.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.0.context
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.executor.is_empty(), self.0.operation.is_empty()) {
            (false, false) => write!(f, "{} {}: ", self.0.executor, self.0.operation)?,
            (false, true) => write!(f, "{}: ", self.0.executor)?,
            (true, false) => write!(f, "{}: ", self.0.operation)?,
            (true, true) => {}
        }
        write!(f, "{}: {}", self.0.kind, self.0.message)?;
        if let Some(status) = self.0.status {
            write!(f, " (HTTP {status})")?;
        }
        for (k, v) in &self.0.context {
            write!(f, ", {k}: {v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("message", &self.0.message);
        if !self.0.executor.is_empty() {
            d.field("executor", &self.0.executor);
        }
        if !self.0.operation.is_empty() {
            d.field("operation", &self.0.operation);
        }
        if let Some(s) = self.0.status {
            d.field("status", &s);
        }
        d.field("temporary", &self.0.temporary);
        if let Some(r) = self.0.retry_after {
            d.field("retry_after", &r);
        }
        if !self.0.context.is_empty() {
            d.field("context", &self.0.context);
        }
        if let Some(s) = &self.0.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_stay_small() {
        // Boxed fields keep `Result<T, Error>` from tripping clippy::result_large_err in
        // every backend.
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
