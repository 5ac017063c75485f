//! Gearman pre-flight: the server answers its admin `status` (gearmand and geard both
//! speak it), and at least one worker is registered for the build's function
//! (`build:<job>` or `build:<job>:<node>`). Asked directly, once, within the check
//! timeout: no retry, so an unreachable server is a `fail` naming it within
//! `preflight.timeoutMs`.

use std::time::Duration;

use executor_base::preflight::{Finding, Preflight};
use executor_base::{Error, Level};

/// Runs the checks against `server` for `function` (uncached).
pub(crate) async fn run(
    server: &str,
    function: &str,
    timeout: Duration,
) -> Result<Preflight, Error> {
    let mut p = Preflight::new(crate::SCHEME);
    let answer = match tokio::time::timeout(timeout, crate::admin::status(server, timeout)).await {
        Ok(a) => a.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms (preflight.timeoutMs)",
            timeout.as_millis()
        )),
    };
    let functions = match answer {
        Ok(f) => f,
        Err(e) => {
            p.push(Finding::fail(
                "gearman.server",
                format!("the Gearman server at {server} did not answer its admin status: {e}"),
            ));
            return Ok(p);
        }
    };
    p.push(Finding::ok(
        "gearman.server",
        format!(
            "the Gearman server at {server} answered ({} functions known)",
            functions.len()
        ),
    ));
    let workers = functions
        .iter()
        .find(|f| f.function == function)
        .map_or(0, |f| f.workers);
    let check = format!("gearman.workers.{function}");
    p.push(if workers > 0 {
        Finding::ok(check, format!("{workers} worker(s) registered for {function}"))
    } else {
        Finding::new(
            check,
            Level::Fail,
            format!(
                "no worker is registered for {function} at {server}: start a launcher (`sdx gearman-worker`) for job `{}` or check the `job`/`node` options and the build's screwdriver.cd/gearmanJob and gearmanNode annotations",
                function.trim_start_matches("build:")
            ),
        )
    });
    Ok(p)
}
