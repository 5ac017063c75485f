//! Stops: the deletes of one stop, and a failed stop retried in the background until
//! garbage collection takes over.

use std::sync::{Arc, Weak};

use chrono::Utc;
use executor_base::{BuildId, Error};

use crate::SCHEME;

use super::{Inner, K8sExecutor, StopPlan};

impl K8sExecutor {
    /// The deletes of one stop: the build's pods by label, and its Secrets unless they go
    /// with the pod.
    pub(super) async fn delete_build(&self, plan: &StopPlan) -> Result<(), Error> {
        let c = &*self.writer();
        c.delete_pods(&plan.selector, plan.grace).await?;
        if !plan.collected {
            c.delete_secrets(&plan.selector).await?;
        }
        Ok(())
    }

    /// Marks a tracked build stopped (before its deletes go out, so the watch does not
    /// call the deletion someone else's) and returns whether it was live.
    pub(super) fn mark_stopping(&self, id: BuildId) -> bool {
        let mut st = self.inner.shared.state.write();
        st.tracked.get_mut(&id).is_some_and(|t| {
            let live = t.is_live();
            t.stopped = true;
            live
        })
    }

    /// Records the outcome of a stop's deletes.
    pub(super) fn stop_done(&self, plan: &StopPlan, ok: bool) {
        let i = &self.inner;
        let mut st = i.shared.state.write();
        match st.tracked.get_mut(&plan.id) {
            Some(t) if plan.was_live && !ok => t.stopped = false,
            Some(t) if plan.was_live => {
                if t.terminal.is_none() {
                    i.shared.counter.stopped();
                }
                t.finished_at.get_or_insert_with(tokio::time::Instant::now);
            }
            _ => {}
        }
    }

    /// Retries a stop that failed with a temporary error until it succeeds or the build
    /// expires (garbage collection takes over then), whatever the later attempts answer.
    /// One retrier per build; it holds the executor weakly, so dropping the executor
    /// ends it.
    pub(super) fn retry_stop_in_background(&self, plan: StopPlan) {
        let mut stops = self.inner.stops.lock();
        if stops.get(&plan.id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let policy = self.inner.cfg.retry.clone();
        let id = plan.id;
        let task = tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                let delay = policy
                    .delay(attempt, None)
                    .unwrap_or(policy.max_backoff)
                    .min(policy.max_backoff);
                // The backoff, cut short when the watch sees the API server come back.
                let Some(shared) = weak.upgrade().map(|i| i.shared.clone()) else {
                    return;
                };
                // (The shared cache does not keep the executor alive, and dropping the
                // executor aborts this task.)
                let recovered = shared.recovered.notified();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = recovered => {}
                }
                attempt = attempt.saturating_add(1);
                let Some(inner) = weak.upgrade() else { return };
                let exec = K8sExecutor { inner };
                if Utc::now() >= plan.until {
                    tracing::warn!(executor = SCHEME, build = %plan.id, "gave up stopping the build at its expiry; gc removes what is left");
                    exec.inner.stops.lock().remove(&plan.id);
                    return;
                }
                let mut plan = plan.clone();
                plan.was_live = exec.mark_stopping(plan.id) || plan.was_live;
                let r = exec.delete_build(&plan).await;
                exec.stop_done(&plan, r.is_ok());
                match r {
                    Ok(()) => {
                        tracing::info!(executor = SCHEME, build = %plan.id, attempts = attempt, "stopped the build after retrying");
                        exec.inner.stops.lock().remove(&plan.id);
                        return;
                    }
                    // Any failure is retried: an API server that is starting answers
                    // 403 or 503 until its authorizer and storage are ready, and a
                    // lasting refusal costs one request per backoff until the expiry.
                    Err(e) => {
                        tracing::debug!(executor = SCHEME, build = %plan.id, error = %e, "stop still failing; retrying");
                    }
                }
            }
        });
        stops.insert(id, task.abort_handle());
    }

    /// Stops being retried in the background (for tests and monitoring).
    pub fn pending_stops(&self) -> usize {
        self.inner
            .stops
            .lock()
            .values()
            .filter(|h| !h.is_finished())
            .count()
    }
}
