//! Test hooks: pauses at named points of a build's dispatch, so a restart test can kill
//! the server with SIGKILL at exactly that point.
//!
//! `SDX_TEST_PAUSE=<point>=<ms>[,<point>=<ms>...]` (read once per process) makes
//! [`pause`] sleep at `<point>`. Unset (always, outside tests) it does nothing. Points:
//! `submitted` (the build is stored, the submission not yet answered) and `starting`
//! (the submission was answered, the executor's `start` not yet called).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// The variable the pauses are read from.
pub const PAUSE_ENV: &str = "SDX_TEST_PAUSE";

fn pauses() -> &'static HashMap<String, Duration> {
    static PAUSES: OnceLock<HashMap<String, Duration>> = OnceLock::new();
    PAUSES.get_or_init(|| {
        std::env::var(PAUSE_ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (name, ms) = p.split_once('=')?;
                Some((
                    name.trim().to_string(),
                    Duration::from_millis(ms.trim().parse().ok()?),
                ))
            })
            .collect()
    })
}

/// Sleeps as long as `SDX_TEST_PAUSE` asks at `point` (not at all normally).
pub async fn pause(point: &str) {
    if let Some(d) = pauses().get(point) {
        tracing::info!(point, ms = d.as_millis() as u64, "test pause");
        tokio::time::sleep(*d).await;
    }
}
