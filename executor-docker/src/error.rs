//! Mapping of bollard's errors to [`executor_base::Error`].
//!
//! Statuses and transport failures go through the shared mapping of
//! [`executor_base::http`] (404 `NotFound`, 409 `AlreadyExists`, 503 `Unavailable`, 5xx
//! temporary, ...). Docker's own cases: every 409 is `AlreadyExists` (a name already in
//! use, and also "container not running" / "removal already in progress", which the
//! callers treat as done); a socket the process may not open is an unreachable daemon
//! like a missing one; and the message names the endpoint, so an operator sees *which*
//! daemon is down.

use executor_base::http::{Transport, status_error, transport_error};
use executor_base::{Error, ErrorKind, ImageRef};

/// The executor name errors are tagged with.
pub(crate) const EXECUTOR: &str = crate::SCHEME;

/// Maps a bollard error of a call to the daemon at `endpoint`.
pub(crate) fn map(err: bollard::errors::Error, endpoint: &str) -> Error {
    use bollard::errors::Error as B;
    let e = match err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => {
            return status_error(status_code, message, None);
        }
        B::SocketNotFoundError(path) => {
            unreachable(endpoint, format!("socket {path} does not exist"))
        }
        B::HyperLegacyError { err } => {
            if err.is_connect() {
                unreachable(endpoint, err.to_string())
            } else {
                transport_error(
                    Transport::classify(&err),
                    format!("transport error talking to {endpoint}: {err}"),
                )
            }
        }
        B::IOError { err } => match err.kind() {
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::AddrNotAvailable => unreachable(endpoint, err.to_string()),
            _ => transport_error(
                Transport::classify(&err),
                format!("I/O error talking to {endpoint}: {err}"),
            ),
        },
        B::RequestTimeoutError => transport_error(
            Transport::Timeout,
            format!("request to {endpoint} timed out"),
        ),
        B::HyperResponseError { err } => transport_error(
            Transport::Broken,
            format!("broken response from {endpoint}: {err}"),
        ),
        B::UnsupportedURISchemeError { uri } => Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "host: unsupported Docker endpoint {uri:?}, expected unix://, tcp:// or http://"
            ),
        ),
        B::DockerStreamError { error } => Error::new(ErrorKind::Unexpected, error),
        other => Error::new(ErrorKind::Unexpected, other.to_string()),
    };
    e.with_context("endpoint", endpoint)
}

fn unreachable(endpoint: &str, detail: String) -> Error {
    transport_error(
        Transport::Connect,
        format!("cannot reach the Docker daemon at {endpoint}: {detail}"),
    )
}

/// Whether a 404 from container creation means the image is not present locally.
pub(crate) fn is_missing_image(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound && e.message().to_ascii_lowercase().contains("no such image")
}

/// Whether a bollard error is the daemon's own answer (an error status, or an error in an
/// answer's stream) rather than a failure to talk to it.
pub(crate) fn daemon_answered(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as B;
    matches!(
        e,
        B::DockerResponseServerError { .. } | B::DockerStreamError { .. }
    )
}

/// The context key naming the registry of a failed pull.
pub(crate) const REGISTRY_CONTEXT: &str = "registry";
/// The context key saying whether the registry was unreachable or overloaded
/// (`transient`) or answered that the image cannot be had (`answered`).
const REGISTRY_FAULT: &str = "registryFault";

/// Daemon messages of a pull that mean the registry could not be reached or was
/// overloaded, not that the image does not exist.
const TRANSIENT_REGISTRY: &[&str] = &[
    "connection refused",
    "no such host",
    "i/o timeout",
    "timeout",
    "timed out",
    "connection reset",
    "eof",
    "no route to host",
    "network is unreachable",
    "toomanyrequests",
    "too many requests",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway",
    "unexpected http status: 5",
];

/// A pull the daemon answered with an error (or that ran past its bound): the build's
/// [`ErrorKind::ImagePull`] failure, naming the registry and keeping the daemon's words.
///
/// Always persistent here, so the engine-call layer neither retries it nor counts it
/// against the daemon (see [`transient_registry_failure_is_temporary`]).
pub(crate) fn registry_failure(image: &ImageRef, registry: &str, cause: Error) -> Error {
    let words = cause.message().to_string();
    let lower = words.to_ascii_lowercase();
    let transient =
        cause.kind() == ErrorKind::Timeout || TRANSIENT_REGISTRY.iter().any(|p| lower.contains(p));
    let what = if transient {
        format!("registry {registry} is unreachable or overloaded")
    } else {
        format!("registry {registry} answered")
    };
    let mut out = Error::new(
        ErrorKind::ImagePull,
        format!("cannot pull image {image}: {what}: {words}"),
    )
    .with_context("image", image.as_str())
    .with_context(REGISTRY_CONTEXT, registry)
    .with_context(
        REGISTRY_FAULT,
        if transient { "transient" } else { "answered" },
    );
    if let Some(s) = cause.status() {
        out = out.with_status(s);
    }
    out
}

/// After the engine-call layer: a pull failure because the registry was unreachable or
/// overloaded is temporary for the caller (retrying the build later may work).
pub(crate) fn transient_registry_failure_is_temporary(e: Error) -> Error {
    let transient = e
        .context()
        .iter()
        .any(|(k, v)| *k == REGISTRY_FAULT && v == "transient");
    if transient && !e.is_temporary() {
        e.temporary()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let e = status_error(404, "No such image: x:1", None);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(is_missing_image(&e));
        assert!(!e.is_temporary());
        assert_eq!(
            status_error(409, "conflict", None).kind(),
            ErrorKind::AlreadyExists
        );
        assert!(status_error(500, "boom", None).is_temporary());
        assert!(status_error(429, "slow", None).is_temporary());
        let e = status_error(503, "down", None);
        assert_eq!((e.kind(), e.is_temporary()), (ErrorKind::Unavailable, true));
        assert_eq!(
            status_error(401, "who", None).kind(),
            ErrorKind::Unauthenticated
        );
    }

    #[test]
    fn missing_socket_is_unavailable_and_names_endpoint() {
        let e = map(
            bollard::errors::Error::SocketNotFoundError("/nope.sock".into()),
            "unix:///nope.sock",
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
        assert!(e.to_string().contains("unix:///nope.sock"), "{e}");
    }

    #[test]
    fn pull_failures_name_the_registry_and_keep_the_daemon_words() {
        let image = ImageRef::parse("127.0.0.1:5000/x:1").unwrap();
        let e = registry_failure(
            &image,
            "127.0.0.1:5000",
            status_error(404, "manifest unknown", None),
        );
        assert_eq!(e.kind(), ErrorKind::ImagePull);
        assert!(e.message().contains("manifest unknown"), "{e}");
        assert!(
            e.message().contains("registry 127.0.0.1:5000 answered"),
            "{e}"
        );
        assert!(!transient_registry_failure_is_temporary(e).is_temporary());

        let refused = status_error(
            500,
            "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
            None,
        );
        let e = registry_failure(&image, "127.0.0.1:5999", refused);
        assert!(!e.is_temporary(), "persistent for the engine-call layer");
        assert!(
            e.message()
                .contains("registry 127.0.0.1:5999 is unreachable or overloaded"),
            "{e}"
        );
        assert!(e.message().contains("connection refused"), "{e}");
        let e = transient_registry_failure_is_temporary(e);
        assert!(e.is_temporary());
        assert_eq!(e.kind(), ErrorKind::ImagePull);
    }
}
