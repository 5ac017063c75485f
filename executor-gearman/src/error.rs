//! Protocol-level errors and their mapping to [`executor_base::Error`].

use executor_base::{Error, ErrorKind};

use crate::codec::CodecError;

/// The executor name errors are tagged with.
pub(crate) const EXECUTOR: &str = crate::SCHEME;

/// What went wrong talking to gearmand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GearmanError {
    /// The TCP connection could not be made (the request never reached gearmand).
    #[error("cannot connect to gearmand at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or gearmand sent garbage.
    #[error("gearman protocol error: {0}")]
    Codec(#[from] CodecError),
    /// The connection closed while a request was outstanding.
    #[error("connection to gearmand closed")]
    Disconnected,
    /// gearmand answered with an `ERROR` packet.
    #[error("gearmand error {code}: {text}")]
    Server {
        /// The error code (`JOB_NOT_FOUND`, ...).
        code: String,
        /// The error text.
        text: String,
    },
    /// No answer within the time bound.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// gearmand answered something the protocol does not allow here.
    #[error("unexpected answer from gearmand: {0}")]
    Unexpected(String),
    /// The client or worker was closed by its owner.
    #[error("closed")]
    Closed,
    /// The server answered a later request first: it does not answer this one (`geard`
    /// answers neither `ECHO_REQ`, `OPTION_REQ` nor `GET_STATUS_UNIQUE`).
    #[error("the server does not answer {0}")]
    Unanswered(&'static str),
    /// The answer could not be read (the codec skipped it).
    #[error("unreadable answer from gearmand: {0}")]
    Unreadable(String),
}

impl GearmanError {
    /// Whether retrying the same call may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            GearmanError::Connect { .. }
                | GearmanError::Disconnected
                | GearmanError::Timeout(_)
                | GearmanError::Codec(CodecError::Io(_))
        )
    }
}

impl From<GearmanError> for Error {
    fn from(e: GearmanError) -> Self {
        let kind = match &e {
            // Only a connect failure proves the request never reached gearmand, so only it
            // is `Unavailable` (which non-idempotent calls may retry).
            GearmanError::Connect { .. } => ErrorKind::Unavailable,
            GearmanError::Timeout(_) => ErrorKind::Timeout,
            GearmanError::Unanswered(_) => ErrorKind::Unsupported,
            _ => ErrorKind::Unexpected,
        };
        let temporary = e.is_temporary();
        let err = Error::new(kind, e.to_string()).with_executor(EXECUTOR);
        let err = if temporary { err.temporary() } else { err };
        err.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_unavailable_and_temporary() {
        let e: Error = GearmanError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
        assert_eq!(e.executor(), "gearman");
    }

    #[test]
    fn a_broken_connection_is_temporary_but_not_unavailable() {
        let e: Error = GearmanError::Disconnected.into();
        assert_eq!(e.kind(), ErrorKind::Unexpected);
        assert!(e.is_temporary());
        let e: Error = GearmanError::Server {
            code: "JOB_NOT_FOUND".into(),
            text: "x".into(),
        }
        .into();
        assert!(!e.is_temporary());
    }
}
