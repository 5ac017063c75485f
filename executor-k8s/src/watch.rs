//! The shared watch: one kube-runtime [`watcher::watcher`] per executor (one namespace), with our
//! own recovery policy, feeding the cache in [`crate::cache`].
//!
//! The watcher (label-selected `app=screwdriver`, bookmarks on) lists, then watches from
//! the list's resource version, resuming from the last one it saw when a watch request
//! ends. Its errors are handled here, because how fast the cache is right again after an
//! outage depends on it:
//!
//! - **`410 Gone`** (the resource version expired, as after every API server restart):
//!   re-list at once, no backoff.
//! - **Any other error** (connection refused, reset, 5xx, 403): the cache is marked not
//!   synced (so `status()` stops answering from it), then after a capped, jittered
//!   backoff ([`reconnect_policy`]: 200 ms doubling to 3 s, each wait drawn from the upper
//!   half) the watch starts over with a fresh list, whose end marks the cache synced
//!   again. A fresh list is what proves the cache current: a watch that merely resumes
//!   sends nothing until something changes.
//! - **A complete list** resets the backoff, closes the engine-call breakers (the API
//!   server answers again, so the next start need not wait for a probe) and logs the
//!   recovery.
//! - **The client's buffer worker is gone** (the runtime is shutting down, as at the end
//!   of a one-shot CLI command): the watch ends quietly.
//!
//! With a 3 s cap, the cache is right again at most ~3 s plus one list after the API
//! server is back and ready.

use std::sync::Arc;
use std::time::Duration;

use executor_base::engine::{EngineCalls, RetryPolicy};
use executor_base::metrics::record as metrics;
use executor_base::{Error, ErrorKind};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;

use crate::SCHEME;
use crate::cache::{Shared, WatchFailure};

/// The watch's reconnect backoff: 200 ms doubling to 3 s, jittered within the upper half
/// of each wait.
pub(crate) fn reconnect_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: u32::MAX,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(3),
        multiplier: 2.0,
        jitter: true,
        budget: None,
    }
}

/// What the watch needs besides the API.
#[derive(Debug, Clone)]
pub(crate) struct WatchSettings {
    /// Server-side timeout of each watch request.
    pub(crate) timeout_seconds: u32,
    /// How long finished builds are remembered (pruned on a timer here).
    pub(crate) retain: Duration,
    /// The namespace watched (the metrics' `namespace` label).
    pub(crate) namespace: String,
}

/// Now as unix seconds, for the cache-synced timestamp metric.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The kube client error inside a watcher error.
fn client_error(e: &watcher::Error) -> Option<&kube::Error> {
    match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => Some(k),
        _ => None,
    }
}

/// `410 Gone`: the resource version is too old; only a fresh list helps.
fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        other => matches!(client_error(other), Some(kube::Error::Api(s)) if s.code == 410),
    }
}

/// The kube client's buffer worker has stopped: its runtime is shutting down.
fn client_closed(e: &watcher::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<tower::buffer::error::Closed>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The watcher error as an executor error.
fn classify(e: &watcher::Error) -> Error {
    match e {
        watcher::Error::WatchError(s) => crate::error::map(kube::Error::Api(s.clone())),
        other => match client_error(other) {
            Some(k) => crate::error::map_ref(k),
            None => Error::new(ErrorKind::Unexpected, other.to_string()),
        },
    }
}

/// Runs the shared watch until the executor is dropped (or its runtime shuts down).
pub(crate) async fn run_watch(
    api: Api<Pod>,
    shared: Arc<Shared>,
    calls: EngineCalls,
    settings: WatchSettings,
) {
    let wc = watcher::Config::default()
        .labels("app=screwdriver")
        .timeout(settings.timeout_seconds);
    let backoff = reconnect_policy();
    let retain = settings.retain;
    let mut prune =
        tokio::time::interval(Duration::from_secs(60).min(retain.max(Duration::from_secs(1))));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures: u32 = 0;
    let mut outage: Option<Instant> = None;
    let ns = settings.namespace.as_str();
    // Metrics: never synced yet, so the cache is as old as the executor.
    let mut synced = false;
    metrics::k8s_watch_state(ns, false, Some(unix_now()));
    loop {
        let stream = watcher::watcher(api.clone(), wc.clone());
        futures::pin_mut!(stream);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = prune.tick() => {
                    shared.prune(retain);
                    continue;
                }
            };
            let e = match ev {
                Some(Ok(event)) => {
                    let listed = matches!(event, Event::InitDone);
                    shared.apply(event);
                    if listed {
                        synced = true;
                        metrics::k8s_watch_relist(ns);
                        metrics::k8s_watch_state(ns, true, Some(unix_now()));
                        calls.report_healthy();
                        if let Some(since) = outage.take() {
                            shared.recovered.notify_waiters();
                            tracing::info!(
                                executor = SCHEME,
                                after_ms = since.elapsed().as_millis() as u64,
                                failed_attempts = failures,
                                "pod watch is back and the cache is synced"
                            );
                        }
                        failures = 0;
                    }
                    continue;
                }
                Some(Err(e)) => e,
                // A watcher stream does not end; if it ever does, start over.
                None => break,
            };
            if client_closed(&e) {
                tracing::debug!(executor = SCHEME, "kube client closed; pod watch ends");
                return;
            }
            let gone = is_gone(&e);
            let delay = if gone {
                Duration::ZERO
            } else {
                let d = backoff.delay(failures, None).unwrap_or(backoff.max_backoff);
                failures = failures.saturating_add(1);
                d
            };
            let err = classify(&e);
            metrics::k8s_watch_error(ns);
            if std::mem::take(&mut synced) {
                metrics::k8s_watch_state(ns, false, Some(unix_now()));
            }
            shared.watch_failed(WatchFailure {
                message: err.message().to_string(),
                unreachable: err.status().is_none() && err.is_temporary(),
                retry_at: Instant::now() + delay,
            });
            if gone {
                tracing::debug!(executor = SCHEME, error = %e, "pod watch: resource version expired; re-listing");
                // The watcher itself re-lists after a 410 in the stream; a 410 answering
                // the watch request needs a fresh watcher.
                if matches!(e, watcher::Error::WatchError(_)) {
                    continue;
                }
                break;
            }
            if outage.is_none() {
                outage = Some(Instant::now());
                tracing::warn!(executor = SCHEME, error = %err,
                    "pod watch failed; status reads the API server directly (or reports it unavailable) until the watch has re-listed");
            } else {
                tracing::debug!(executor = SCHEME, error = %err, attempt = failures, "pod watch still failing");
            }
            tokio::time::sleep(delay).await;
            // Start over with a fresh list: only a complete list proves the cache current.
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_status(code: u16) -> Box<kube::core::Status> {
        Box::new(kube::core::Status {
            code,
            ..kube::core::Status::default()
        })
    }

    #[test]
    fn gone_is_recognised_in_the_stream_and_on_the_request() {
        assert!(is_gone(&watcher::Error::WatchError(api_status(410))));
        assert!(is_gone(&watcher::Error::WatchStartFailed(
            kube::Error::Api(api_status(410))
        )));
        assert!(!is_gone(&watcher::Error::WatchError(api_status(500))));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }

    #[tokio::test]
    async fn a_closed_client_is_recognised_through_the_error_chain() {
        use tower::ServiceExt;
        let svc = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
        let (buffer, worker) = tower::buffer::Buffer::pair(svc, 1);
        drop(worker);
        let err = buffer.oneshot(()).await.unwrap_err();
        let closed = watcher::Error::WatchFailed(kube::Error::Service(err));
        assert!(client_closed(&closed));
        assert!(!client_closed(&watcher::Error::WatchError(api_status(500))));
    }

    #[test]
    fn reconnects_are_capped_at_three_seconds() {
        let p = reconnect_policy();
        for attempt in [0, 1, 5, 50, u32::MAX] {
            let d = p.delay(attempt, None).unwrap();
            assert!(d <= Duration::from_secs(3), "{attempt}: {d:?}");
        }
        assert!(p.delay(0, None).unwrap() >= Duration::from_millis(100));
        assert!(p.delay(20, None).unwrap() >= Duration::from_millis(1500));
    }
}
