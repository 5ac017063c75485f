//! Gating tests on real daemons: skip loudly on a developer machine without the daemon,
//! fail in CI (`CI=true`), where `.ci/run` starts every daemon the tests need.

/// Whether we run under CI (`CI=true` or `CI=1`), where an absent daemon is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `true` when the test should run. When the daemon `name` is not `reachable`,
/// prints that the test is skipped and returns `false`, or panics in CI.
///
/// ```no_run
/// use executor_base::testkit::daemon::{require, tcp_reachable};
/// let up = tcp_reachable("127.0.0.1:4730");
/// if !require("gearmand", up, "nothing listens on 127.0.0.1:4730") {
///     return; // skipped (outside CI); under CI=true `require` panicked instead
/// }
/// // ... the test against gearmand ...
/// ```
pub fn require(name: &str, reachable: bool, why: &str) -> bool {
    if reachable {
        return true;
    }
    if in_ci() {
        panic!("{name} is required in CI (CI=true) but is not reachable: {why}");
    }
    eprintln!("Skipping: {name} is not reachable ({why}); .ci/run starts it");
    false
}

/// Whether a TCP connection to `addr` succeeds within 500 ms.
pub fn tcp_reachable(addr: &str) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}
