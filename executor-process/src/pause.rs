//! Test hook: a pause at a named point inside `start`, so a restart test can kill the
//! process running the executor (`sdx serve`, `sdx run`) with SIGKILL at exactly that
//! point.
//!
//! `SDX_TEST_PAUSE=<point>=<ms>[,<point>=<ms>...]` (the variable `executor-api`'s dispatch
//! pauses read too; read once per process) makes [`pause`] sleep at `<point>`. Unset
//! (always, outside tests) it does nothing. The point of this crate is [`CLAIMED`].

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// The variable the pauses are read from.
const PAUSE_ENV: &str = "SDX_TEST_PAUSE";

/// In `start`, after the build's directory (state file, token file, log) was claimed and
/// before `launch` is spawned.
pub(crate) const CLAIMED: &str = "process-claimed";

fn pauses() -> &'static HashMap<String, Duration> {
    static PAUSES: OnceLock<HashMap<String, Duration>> = OnceLock::new();
    PAUSES.get_or_init(|| parse(&std::env::var(PAUSE_ENV).unwrap_or_default()))
}

/// `a=10,b=20` -> {a: 10 ms, b: 20 ms}; malformed entries are ignored.
fn parse(spec: &str) -> HashMap<String, Duration> {
    spec.split(',')
        .filter_map(|p| {
            let (name, ms) = p.split_once('=')?;
            Some((
                name.trim().to_string(),
                Duration::from_millis(ms.trim().parse().ok()?),
            ))
        })
        .collect()
}

/// Sleeps as long as `SDX_TEST_PAUSE` asks at `point` (not at all normally).
pub(crate) async fn pause(point: &str) {
    if let Some(d) = pauses().get(point) {
        tracing::info!(point, ms = d.as_millis() as u64, "test pause");
        tokio::time::sleep(*d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_ignores_garbage() {
        let p = parse("starting=5000, process-claimed = 20,bad,x=y");
        assert_eq!(p.len(), 2);
        assert_eq!(p["process-claimed"], Duration::from_millis(20));
        assert_eq!(p["starting"], Duration::from_secs(5));
        assert!(parse("").is_empty());
    }
}
