//! Mapping of kube errors to [`executor_base::Error`].
//!
//! Statuses and transport failures go through the shared mapping of
//! [`executor_base::http`] (404 `NotFound`, 409 `AlreadyExists`, 429 `RateLimited`, 503
//! `Unavailable`, 504 `Timeout`, other 5xx temporary; connection refused `Unavailable`,
//! so even a create may be retried). Kubernetes' own cases: 400/422 are `ConfigInvalid`
//! (the API refused a manifest built from our config); a 429's wait comes from the
//! status' `retryAfterSeconds` (1 s when absent); an unreadable answer is a persistent
//! `Unexpected`.

use std::time::Duration;

use executor_base::http::{Transport, status_error, transport_error};
use executor_base::{Error, ErrorKind};

use crate::SCHEME;

/// Wait used for a 429 that carries no `retryAfterSeconds`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Maps a kube client error.
pub(crate) fn map(e: kube::Error) -> Error {
    map_ref(&e)
}

/// Maps a kube client error held by reference (a watcher's).
pub(crate) fn map_ref(e: &kube::Error) -> Error {
    match e {
        kube::Error::Api(status) => {
            let code = status.code;
            let msg = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            let err = match code {
                400 | 422 => Error::new(ErrorKind::ConfigInvalid, msg).with_status(code),
                429 => {
                    let secs = status
                        .details
                        .as_ref()
                        .map(|d| d.retry_after_seconds)
                        .filter(|s| *s > 0);
                    let after = secs.map_or(DEFAULT_RETRY_AFTER, |s| Duration::from_secs(s.into()));
                    status_error(code, msg, Some(after))
                }
                _ => status_error(code, msg, None),
            };
            if status.reason.is_empty() {
                err
            } else {
                err.with_context("reason", status.reason.clone())
            }
        }
        other => transport(other),
    }
}

fn transport(e: &kube::Error) -> Error {
    let text = e.to_string();
    if matches!(e, kube::Error::SerdeError(_)) {
        return Error::new(
            ErrorKind::Unexpected,
            format!("unreadable API answer: {text}"),
        )
        .with_executor(SCHEME);
    }
    // A broken connection may or may not have delivered the request: temporary, but a
    // non-idempotent call is not retried on it.
    let t = match Transport::classify(e) {
        Transport::Broken if failed_to_connect(e) => Transport::Connect,
        t => t,
    };
    let message = match t {
        Transport::Connect => format!("cannot reach the API server: {text}"),
        _ => text,
    };
    transport_error(t, message).with_executor(SCHEME)
}

/// Whether the client failed before a request went out: hyper's connect phase (TCP
/// connect and TLS handshake), whatever the I/O error (a handshake cut by a restarting
/// API server or a proxy is a reset, not a refusal). Nothing reached the server, so it
/// is `Unavailable` and safe to retry, like a refused connection.
fn failed_to_connect(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper_util::client::legacy::Error>() {
            return h.is_connect();
        }
        source = s.source();
    }
    false
}

/// A refused pod create, explained where the refusal is about our configuration rather
/// than our rights: the RuntimeClass admission plugin answers `403` for a
/// `runtimeClassName` that does not exist, which is the `runtimeClass` option's fault.
pub(crate) fn explain_pod_create(e: Error) -> Error {
    let m = e.message();
    if e.kind() == ErrorKind::PermissionDenied
        && m.contains("RuntimeClass")
        && m.contains("not found")
    {
        let msg = m.to_string();
        return config("runtimeClass", msg).with_status(403);
    }
    e
}

/// A `ConfigInvalid` error naming the configuration key.
pub(crate) fn config(key: &str, reason: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ConfigInvalid, format!("{key}: {reason}"))
        .with_executor(SCHEME)
        .with_context("key", key)
}

#[cfg(test)]
mod tests {
    use kube::core::{Status, response::StatusDetails};

    use super::*;

    fn api(code: u16, retry: u32) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            message: "msg".into(),
            reason: "Reason".into(),
            details: (retry > 0).then(|| StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: retry,
            }),
            ..Status::default()
        }))
    }

    #[test]
    fn statuses_map_to_kinds_and_retryability() {
        let cases = [
            (404, ErrorKind::NotFound, false),
            (401, ErrorKind::Unauthenticated, false),
            (403, ErrorKind::PermissionDenied, false),
            (409, ErrorKind::AlreadyExists, false),
            (422, ErrorKind::ConfigInvalid, false),
            (500, ErrorKind::Unexpected, true),
            (502, ErrorKind::Unexpected, true),
            (503, ErrorKind::Unavailable, true),
            (504, ErrorKind::Timeout, true),
        ];
        for (code, kind, temporary) in cases {
            let e = map(api(code, 0));
            assert_eq!(
                (e.kind(), e.is_temporary(), e.status()),
                (kind, temporary, Some(code)),
                "{code}"
            );
        }
        let e = map(api(429, 7));
        assert_eq!(
            (e.kind(), e.retry_after()),
            (ErrorKind::RateLimited, Some(Duration::from_secs(7)))
        );
        assert_eq!(map(api(429, 0)).retry_after(), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(
            config("qps", "must be positive").to_string(),
            "k8s: config_invalid: qps: must be positive, key: qps"
        );
        let rc = explain_pod_create(map(kube::Error::Api(Box::new(Status {
            code: 403,
            message: "pods \"p\" is forbidden: pod rejected: RuntimeClass \"gvisor\" not found"
                .into(),
            reason: "Forbidden".into(),
            ..Status::default()
        }))));
        assert_eq!(rc.kind(), ErrorKind::ConfigInvalid, "{rc}");
        assert!(rc.to_string().contains("key: runtimeClass"), "{rc}");
        let rbac = explain_pod_create(map(api(403, 0)));
        assert_eq!(rbac.kind(), ErrorKind::PermissionDenied);
    }
}
