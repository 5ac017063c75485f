//! "Does any worker do this function?": gearmand's admin `status`, shared and cached.
//!
//! `status` lists every function gearmand ever saw (it never forgets one), so one answer
//! can be large; asking it per build would cost more than the build's own dispatch. The
//! executor keeps the last answer for `workerCheckTtlMs` and lets one caller at a time
//! refresh it. A function with workers in a recent answer is taken as served; a function
//! with none is checked again on a fresh answer before anyone is told "no worker", so a
//! launcher that just registered is never refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use executor_base::Error;
use executor_base::engine::{CallClass, EngineCalls, Idempotency};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Workers per function, from one admin `status` answer.
type Snapshot = Arc<HashMap<String, u64>>;

/// The cached admin `status`: workers per function, and when it was read.
#[derive(Debug)]
pub(crate) struct WorkerCheck {
    server: String,
    ttl: Duration,
    timeout: Duration,
    snapshot: Mutex<Option<(Instant, Snapshot)>>,
}

impl WorkerCheck {
    pub(crate) fn new(server: String, ttl: Duration, timeout: Duration) -> Self {
        Self {
            server,
            ttl,
            timeout,
            snapshot: Mutex::new(None),
        }
    }

    /// Workers registered for `function` (0 when none).
    pub(crate) async fn workers(
        &self,
        calls: &EngineCalls,
        operation: &'static str,
        function: &str,
    ) -> Result<u64, Error> {
        let asked = Instant::now();
        let cached = self.read(calls, operation, asked, false).await?;
        match cached.get(function).copied().unwrap_or(0) {
            0 => Ok(self
                .read(calls, operation, asked, true)
                .await?
                .get(function)
                .copied()
                .unwrap_or(0)),
            n => Ok(n),
        }
    }

    /// The functions starting with `prefix` that have workers, from an answer read now
    /// (for the `stop:<manager>` functions: a launcher that just registered counts).
    pub(crate) async fn served_with_prefix(
        &self,
        calls: &EngineCalls,
        operation: &'static str,
        prefix: &str,
    ) -> Result<Vec<String>, Error> {
        let map = self.read(calls, operation, Instant::now(), true).await?;
        let mut found: Vec<String> = map
            .iter()
            .filter(|(f, n)| f.starts_with(prefix) && **n > 0)
            .map(|(f, _)| f.clone())
            .collect();
        found.sort();
        Ok(found)
    }

    /// The snapshot: the cached one when young enough (and, with `fresh`, read after
    /// `asked`), else a new one. Concurrent callers wait for one refresh.
    async fn read(
        &self,
        calls: &EngineCalls,
        operation: &'static str,
        asked: Instant,
        fresh: bool,
    ) -> Result<Snapshot, Error> {
        let mut slot = self.snapshot.lock().await;
        if let Some((at, map)) = slot.as_ref() {
            let usable = if fresh {
                *at >= asked
            } else {
                at.elapsed() < self.ttl
            };
            if usable {
                return Ok(map.clone());
            }
        }
        let (server, timeout) = (&self.server, self.timeout);
        let list = calls
            .call_in(
                class_of(operation),
                operation,
                Idempotency::Idempotent,
                || async move {
                    crate::admin::status(server, timeout)
                        .await
                        .map_err(Error::from)
                },
            )
            .await?;
        let map: Arc<HashMap<String, u64>> =
            Arc::new(list.into_iter().map(|f| (f.function, f.workers)).collect());
        *slot = Some((Instant::now(), map.clone()));
        Ok(map)
    }
}

/// The breaker class of a Gearman call made for `operation`: a start's calls (the worker
/// check, `SUBMIT_JOB`) are [`CallClass::Start`], a stop's are [`CallClass::Stop`] (always
/// attempted, whatever the start breaker says), anything else [`CallClass::Read`].
pub(crate) fn class_of(operation: &str) -> CallClass {
    match operation {
        "start" => CallClass::Start,
        "stop" => CallClass::Stop,
        _ => CallClass::Read,
    }
}
