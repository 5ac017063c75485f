//! Error helpers: every failure becomes an [`executor_base::Error`] tagged with this
//! backend's name, the operation and the path or option involved (never a token).

use std::io;
use std::path::Path;

use executor_base::{Error, ErrorKind};

use crate::SCHEME;

/// An [`ErrorKind::ConfigInvalid`] error naming the option `key`.
pub(crate) fn config_invalid(
    operation: &'static str,
    key: &str,
    reason: impl std::fmt::Display,
) -> Error {
    Error::new(ErrorKind::ConfigInvalid, format!("{key}: {reason}"))
        .with_executor(SCHEME)
        .with_operation(operation)
}

/// An I/O failure on `path` while doing `what`.
pub(crate) fn io(operation: &'static str, what: &str, path: &Path, err: io::Error) -> Error {
    let kind = match err.kind() {
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        _ => ErrorKind::Unexpected,
    };
    let e = Error::new(kind, format!("{what}: {err}"))
        .with_executor(SCHEME)
        .with_operation(operation)
        .with_context("path", path.display().to_string());
    let e = if is_temporary(&err) { e.temporary() } else { e };
    e.with_source(err)
}

/// Failure to spawn `launch`: a missing or non-executable program is the operator's
/// configuration (`jobTools`); resource exhaustion (EAGAIN, ENOMEM) may pass.
pub(crate) fn spawn(program: &Path, err: io::Error) -> Error {
    let e = match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => config_invalid(
            "start",
            "jobTools",
            format!("cannot execute {}: {err}", program.display()),
        ),
        _ if is_temporary(&err) => Error::new(
            ErrorKind::Unavailable,
            format!("cannot spawn {}: {err}", program.display()),
        )
        .with_executor(SCHEME)
        .with_operation("start")
        .temporary(),
        _ => Error::new(
            ErrorKind::Unexpected,
            format!("cannot spawn {}: {err}", program.display()),
        )
        .with_executor(SCHEME)
        .with_operation("start"),
    };
    e.with_source(err)
}

/// Whether an I/O error may pass on its own (out of processes, memory or file handles).
fn is_temporary(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EINTR)
    ) || matches!(
        err.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_errors_are_classified() {
        let p = Path::new("/nowhere/launch");
        let e = spawn(p, io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("jobTools"), "{e}");
        let e = spawn(p, io::Error::from_raw_os_error(libc::EAGAIN));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
        let e = io(
            "start",
            "writing the token file",
            p,
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("/nowhere/launch"));
    }
}
