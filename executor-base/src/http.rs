//! One mapping of HTTP statuses and transport failures to [`Error`], for every backend
//! that talks HTTP to its engine (Docker, Kubernetes, Jenkins) and for token exchange.
//!
//! | answer | kind | temporary |
//! |---|---|---|
//! | 401 | [`ErrorKind::Unauthenticated`] | no |
//! | 403 | [`ErrorKind::PermissionDenied`] | no |
//! | 404 | [`ErrorKind::NotFound`] | no |
//! | 408 | [`ErrorKind::Timeout`] | yes |
//! | 409 | [`ErrorKind::AlreadyExists`] | no |
//! | 429 | [`ErrorKind::RateLimited`], with `Retry-After` | yes |
//! | 503 | [`ErrorKind::Unavailable`] (the engine did not act on the request) | yes |
//! | 504 | [`ErrorKind::Timeout`] (the request may have been applied) | yes |
//! | 502 | [`ErrorKind::Unexpected`] (a gateway got a bad answer: the engine may have acted) | yes |
//! | other 5xx | [`ErrorKind::Unexpected`] | yes |
//! | other 4xx | [`ErrorKind::Unexpected`] | no |
//! | no connection ([`Transport::Connect`]) | [`ErrorKind::Unavailable`] (the request never left) | yes |
//! | no answer in time ([`Transport::Timeout`]) | [`ErrorKind::Timeout`] | yes |
//! | connection broken mid-request ([`Transport::Broken`]) | [`ErrorKind::Unexpected`] | yes |
//!
//! A `Retry-After` on any answer is kept ([`Error::retry_after`]). `Unavailable` is the
//! one kind [`crate::Idempotency::NotIdempotent`] calls are retried on besides
//! `RateLimited`: it promises the engine did nothing. (A create under a name of the
//! caller's own is retried on any temporary error: [`crate::engine::EngineCalls::create_named`].) A backend adds only its engine's
//! own cases on top (Kubernetes' 400/422 for a refused manifest, token exchange's 401 for
//! a refused temporary token, Jenkins' folder 404) and its own wording of the message.

use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind};

/// The error for a non-success HTTP `status` with `message` (the engine's words; never a
/// token) and the answer's `Retry-After`, if any.
///
/// ```
/// use std::time::Duration;
/// use executor_base::{ErrorKind, http::status_error};
/// let e = status_error(503, "maintenance", Some(Duration::from_secs(5)));
/// assert_eq!((e.kind(), e.is_temporary(), e.status()), (ErrorKind::Unavailable, true, Some(503)));
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
/// assert_eq!(status_error(404, "no such container", None).kind(), ErrorKind::NotFound);
/// assert!(!status_error(400, "bad parameter", None).is_temporary());
/// ```
pub fn status_error(
    status: u16,
    message: impl Into<String>,
    retry_after: Option<Duration>,
) -> Error {
    let (kind, temporary) = match status {
        401 => (ErrorKind::Unauthenticated, false),
        403 => (ErrorKind::PermissionDenied, false),
        404 => (ErrorKind::NotFound, false),
        408 => (ErrorKind::Timeout, true),
        409 => (ErrorKind::AlreadyExists, false),
        429 => (ErrorKind::RateLimited, true),
        503 => (ErrorKind::Unavailable, true),
        504 => (ErrorKind::Timeout, true),
        500..=599 => (ErrorKind::Unexpected, true),
        _ => (ErrorKind::Unexpected, false),
    };
    let mut e = Error::new(kind, message).with_status(status);
    if temporary {
        e = e.temporary();
    }
    match retry_after {
        Some(d) if temporary => e.with_retry_after(d),
        _ => e,
    }
}

/// What happened to a request that got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No connection was made: the request never reached the engine.
    Connect,
    /// The request went out but no answer came in time.
    Timeout,
    /// The connection broke after the request may have reached the engine.
    Broken,
}

impl Transport {
    /// Classifies a client error by the first [`std::io::Error`] in its source chain:
    /// refused, missing socket or unroutable address is [`Transport::Connect`], a time-out
    /// is [`Transport::Timeout`], anything else [`Transport::Broken`]. A client that knows
    /// better (reqwest's `is_connect`/`is_timeout`) says so itself.
    pub fn classify(error: &(dyn std::error::Error + 'static)) -> Transport {
        use std::io::ErrorKind as Io;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    Io::ConnectionRefused | Io::NotFound | Io::AddrNotAvailable => {
                        Transport::Connect
                    }
                    Io::TimedOut => Transport::Timeout,
                    _ => Transport::Broken,
                };
            }
            source = s.source();
        }
        Transport::Broken
    }
}

/// The error for a request that got no answer; always temporary.
///
/// ```
/// use executor_base::{ErrorKind, http::{Transport, transport_error}};
/// let e = transport_error(Transport::Connect, "cannot reach the Docker daemon at unix:///x");
/// assert_eq!((e.kind(), e.is_temporary()), (ErrorKind::Unavailable, true));
/// assert_eq!(transport_error(Transport::Broken, "reset").kind(), ErrorKind::Unexpected);
/// ```
pub fn transport_error(transport: Transport, message: impl Into<String>) -> Error {
    let kind = match transport {
        Transport::Connect => ErrorKind::Unavailable,
        Transport::Timeout => ErrorKind::Timeout,
        Transport::Broken => ErrorKind::Unexpected,
    };
    Error::new(kind, message).temporary()
}

/// A `Retry-After` value as delay-seconds or an HTTP date (RFC 9110 §10.2.3), relative to
/// `now`; `None` when it is neither.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use executor_base::http::parse_retry_after;
/// assert_eq!(parse_retry_after(" 7 ", SystemTime::now()), Some(Duration::from_secs(7)));
/// assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(date.timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_class() {
        let cases = [
            (400, ErrorKind::Unexpected, false),
            (401, ErrorKind::Unauthenticated, false),
            (403, ErrorKind::PermissionDenied, false),
            (404, ErrorKind::NotFound, false),
            (408, ErrorKind::Timeout, true),
            (409, ErrorKind::AlreadyExists, false),
            (422, ErrorKind::Unexpected, false),
            (429, ErrorKind::RateLimited, true),
            (500, ErrorKind::Unexpected, true),
            (502, ErrorKind::Unexpected, true),
            (503, ErrorKind::Unavailable, true),
            (504, ErrorKind::Timeout, true),
        ];
        for (code, kind, temporary) in cases {
            let e = status_error(code, "m", Some(Duration::from_secs(3)));
            assert_eq!(
                (e.kind(), e.is_temporary(), e.status()),
                (kind, temporary, Some(code)),
                "{code}"
            );
            assert_eq!(
                e.retry_after().is_some(),
                temporary,
                "{code}: Retry-After kept only when temporary"
            );
        }
        assert_eq!(status_error(429, "m", None).retry_after(), None);
    }

    #[test]
    fn transports_classify_by_io_kind() {
        let io = |k| std::io::Error::new(k, "x");
        assert_eq!(
            Transport::classify(&io(std::io::ErrorKind::ConnectionRefused)),
            Transport::Connect
        );
        assert_eq!(
            Transport::classify(&io(std::io::ErrorKind::NotFound)),
            Transport::Connect
        );
        assert_eq!(
            Transport::classify(&io(std::io::ErrorKind::TimedOut)),
            Transport::Timeout
        );
        assert_eq!(
            Transport::classify(&io(std::io::ErrorKind::ConnectionReset)),
            Transport::Broken
        );
        let fmt = std::fmt::Error;
        assert_eq!(Transport::classify(&fmt), Transport::Broken);
    }

    #[test]
    fn retry_after_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 07:28:00 GMT
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
    }
}
