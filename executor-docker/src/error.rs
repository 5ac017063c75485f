//! Mapping of bollard's errors to [`executor_base::Error`].
//!
//! 404 -> `NotFound`, 401 -> `Unauthenticated`, 403 -> `PermissionDenied`, 409 ->
//! `AlreadyExists`, 429 -> `RateLimited`, other 5xx -> temporary `Unexpected`; a daemon that
//! cannot be reached (socket missing, connection refused) is a temporary `Unavailable`
//! whose message names the endpoint, so an operator sees *which* daemon is down.

use executor_base::{Error, ErrorKind};

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
            return from_status(status_code, message);
        }
        B::SocketNotFoundError(path) => {
            unreachable(endpoint, format!("socket {path} does not exist"))
        }
        B::HyperLegacyError { err } => {
            if err.is_connect() {
                unreachable(endpoint, err.to_string())
            } else {
                Error::new(
                    ErrorKind::Unexpected,
                    format!("transport error talking to {endpoint}: {err}"),
                )
                .temporary()
            }
        }
        B::IOError { err } => match err.kind() {
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::AddrNotAvailable => unreachable(endpoint, err.to_string()),
            _ => Error::new(
                ErrorKind::Unexpected,
                format!("I/O error talking to {endpoint}: {err}"),
            )
            .temporary(),
        },
        B::RequestTimeoutError => Error::new(
            ErrorKind::Timeout,
            format!("request to {endpoint} timed out"),
        )
        .temporary(),
        B::HyperResponseError { err } => Error::new(
            ErrorKind::Unexpected,
            format!("broken response from {endpoint}: {err}"),
        )
        .temporary(),
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
    Error::new(
        ErrorKind::Unavailable,
        format!("cannot reach the Docker daemon at {endpoint}: {detail}"),
    )
    .temporary()
}

fn from_status(status: u16, message: String) -> Error {
    let kind = match status {
        404 => ErrorKind::NotFound,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        409 => ErrorKind::AlreadyExists,
        429 => ErrorKind::RateLimited,
        _ => ErrorKind::Unexpected,
    };
    let e = Error::new(kind, message).with_status(status);
    if status == 429 || status >= 500 {
        e.temporary()
    } else {
        e
    }
}

/// Whether a 404 from container creation means the image is not present locally.
pub(crate) fn is_missing_image(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound && e.message().to_ascii_lowercase().contains("no such image")
}

/// Turns an image-related failure into an [`ErrorKind::ImagePull`] error (persistent
/// unless the daemon itself could not be reached), keeping the daemon's words.
pub(crate) fn image_pull(image: &str, e: Error) -> Error {
    if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::CircuitOpen)
        || executor_base::engine::refused_by_breaker(&e)
    {
        return e;
    }
    let mut out = Error::new(
        ErrorKind::ImagePull,
        format!("cannot pull image {image}: {}", e.message()),
    )
    .with_context("image", image);
    if let Some(s) = e.status() {
        out = out.with_status(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let e = from_status(404, "No such image: x:1".into());
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(is_missing_image(&e));
        assert!(!e.is_temporary());
        assert_eq!(
            from_status(409, "conflict".into()).kind(),
            ErrorKind::AlreadyExists
        );
        assert!(from_status(500, "boom".into()).is_temporary());
        assert!(from_status(429, "slow".into()).is_temporary());
        assert_eq!(
            from_status(401, "who".into()).kind(),
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
    fn pull_failures_keep_the_daemon_words() {
        let e = image_pull(
            "127.0.0.1:5000/x:1",
            from_status(404, "manifest unknown".into()),
        );
        assert_eq!(e.kind(), ErrorKind::ImagePull);
        assert!(e.message().contains("manifest unknown"));
        let down = unreachable("unix:///x", "refused".into());
        assert_eq!(image_pull("x", down).kind(), ErrorKind::Unavailable);
    }
}
