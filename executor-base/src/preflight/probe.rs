//! [`bounded`]: one engine check under a timeout, so a pre-flight never hangs.

use std::future::Future;
use std::time::Duration;

use super::Finding;

/// Runs `check` for at most `timeout`; past it the answer is a [`Finding::fail`] of
/// `name` saying that `address` did not answer in time.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use executor_base::preflight::{bounded, Finding, Level};
/// let hang = std::future::pending::<Finding>();
/// let f = bounded("toy.engine", "127.0.0.1:9", Duration::from_millis(10), hang).await;
/// assert_eq!(f.level, Level::Fail);
/// assert!(f.message.contains("127.0.0.1:9"), "{}", f.message);
/// # });
/// ```
pub async fn bounded(
    name: &str,
    address: &str,
    timeout: Duration,
    check: impl Future<Output = Finding>,
) -> Finding {
    match tokio::time::timeout(timeout, check).await {
        Ok(f) => f,
        Err(_) => Finding::fail(
            name,
            format!(
                "no answer from {address} within {} ms (preflight.timeoutMs)",
                timeout.as_millis()
            ),
        ),
    }
}
