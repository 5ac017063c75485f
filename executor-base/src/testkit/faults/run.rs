//! One scenario's run: the executor under test, the proxy in front of its engine, and
//! the checks every scenario makes (the right error within the bound, a build that runs,
//! a stop that reaches the engine, recovery, no orphan, no token in any output).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FaultMatrixConfig;
use crate::config::StartConfig;
use crate::engine::refused_by_breaker;
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::status::{BuildStatus, FailureReason, Phase};
use crate::testkit::proxy::{FaultMode, FaultProxy};

/// One scenario's run (builds `first .. first + 10`).
pub(super) struct Run {
    pub(super) exec: Arc<dyn Executor>,
    pub(super) proxy: FaultProxy,
    pub(super) cfg: FaultMatrixConfig,
    pub(super) name: String,
    pub(super) nonce: String,
    pub(super) first: u64,
}

/// What a fault may answer: kinds that say "the engine did not do it (or we cannot
/// tell)", never a judgement on the build or its config.
fn allowed_kinds(m: &FaultMode) -> &'static [ErrorKind] {
    use ErrorKind::*;
    match m {
        FaultMode::Refuse => &[Unavailable],
        FaultMode::Blackhole | FaultMode::Delay(_) => &[Timeout, Unavailable],
        FaultMode::Status { code: 429, .. } => &[RateLimited],
        FaultMode::Status { .. } => &[Unavailable, Unexpected],
        _ => &[Unavailable, Timeout, Unexpected],
    }
}

/// Whether the fault lets calls through unharmed (a short delay).
pub(super) fn harmless(m: &FaultMode, cfg: &FaultMatrixConfig) -> bool {
    matches!(m, FaultMode::Pass) || matches!(m, FaultMode::Delay(d) if *d < cfg.call_timeout)
}

impl Run {
    pub(super) fn config(&self, n: u64) -> StartConfig {
        let id = self.first + n;
        StartConfig::builder(id, &self.cfg.api_uri, &self.cfg.container, self.token(id))
            .job_id(1)
            .build()
            .unwrap_or_else(|e| panic!("fault matrix: config is not usable: {e}"))
    }

    pub(super) fn token(&self, id: u64) -> String {
        format!("sdx-fault-matrix-secret-{}-{id}", self.nonce)
    }

    pub(super) fn look(&self, what: &str, text: &str) {
        if text.contains(&self.nonce) {
            broken!(self.name, "a token appears in {what}: {text}");
        }
    }

    pub(super) fn look_error(&self, e: &Error) {
        self.look("an error", &e.to_string());
        self.look("an error", &format!("{e:?}"));
    }

    pub(super) fn look_status(&self, s: &BuildStatus) {
        self.look("a status", &s.to_string());
        self.look("a status", &format!("{s:?}"));
        if s.phase == Phase::Succeeded {
            broken!(self.name, "a build that runs until stopped is reported {s}");
        }
    }

    /// A fault's error: temporary, of an allowed kind, never `CircuitOpen`.
    pub(super) fn check_fault_error(&self, m: &FaultMode, what: &str, e: &Error) {
        self.look_error(e);
        if e.kind() == ErrorKind::CircuitOpen {
            broken!(
                self.name,
                "{what} answered CircuitOpen, not the real cause: {e}"
            );
        }
        if !allowed_kinds(m).contains(&e.kind()) && !refused_by_breaker(e) {
            broken!(
                self.name,
                "{what} answered {:?} (allowed: {:?}): {e}",
                e.kind(),
                allowed_kinds(m)
            );
        }
        if !e.is_temporary() {
            broken!(
                self.name,
                "{what} answered a permanent error for an engine fault: {e}"
            );
        }
        if e.message().is_empty() {
            broken!(self.name, "{what} answered an error without a message");
        }
    }

    pub(super) async fn timed<T>(&self, what: &str, f: impl Future<Output = T>) -> (T, Duration) {
        let t = Instant::now();
        let r = f.await;
        let d = t.elapsed();
        if d > self.cfg.call_bound {
            broken!(
                self.name,
                "{what} took {d:?} (bound {:?})",
                self.cfg.call_bound
            );
        }
        (r, d)
    }

    pub(super) async fn start_ok(&self, b: &StartConfig) {
        if let Err(e) = self.exec.start(b).await {
            self.look_error(&e);
            broken!(self.name, "start without a fault failed: {e}");
        }
        self.wait_running(b).await;
    }

    pub(super) async fn wait_running(&self, b: &StartConfig) {
        self.wait_running_or_lost(b, false).await;
    }

    /// Whether `s` is the outcome a fault that broke the backend's connection may cause
    /// ([`FaultMatrixConfig::lost_on_disconnect`]).
    pub(super) fn lost_to_fault(&self, s: &BuildStatus, faulty: bool) -> bool {
        faulty
            && self.cfg.lost_on_disconnect
            && s.reason() == Some(FailureReason::InfrastructureLost)
    }

    /// Waits until build `b` runs; returns `false` instead when it was lost to the fault
    /// (`faulty`: the scenario's fault may have broken the backend's connection).
    pub(super) async fn wait_running_or_lost(&self, b: &StartConfig, faulty: bool) -> bool {
        let t = Instant::now();
        loop {
            match self.exec.status(&b.to_stop()).await {
                Ok(s) => {
                    self.look_status(&s);
                    if s.phase == Phase::Running {
                        return true;
                    }
                    if self.lost_to_fault(&s, faulty) {
                        return false;
                    }
                    if s.is_terminal() {
                        broken!(self.name, "build {} ended: {s}", b.build_id);
                    }
                }
                Err(e) => self.look_error(&e),
            }
            if t.elapsed() > self.cfg.recovery_bound {
                broken!(
                    self.name,
                    "build {} not Running within {:?}",
                    b.build_id,
                    self.cfg.recovery_bound
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// With the engine back: the build is stopped (retried within the recovery bound),
    /// never reported succeeded, and after gc nothing of it is left.
    pub(super) async fn stop_clean(&self, b: &StartConfig) {
        let t = Instant::now();
        loop {
            match self.exec.stop(&b.to_stop()).await {
                Ok(()) => break,
                Err(e) => {
                    self.look_error(&e);
                    if t.elapsed() > self.cfg.recovery_bound {
                        broken!(
                            self.name,
                            "stop of build {} still fails once the engine is back: {e}",
                            b.build_id
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A stop may be asynchronous on the engine (Jenkins aborts a build in its own
        // time): the build must have ended within the recovery bound.
        loop {
            match self.exec.status(&b.to_stop()).await {
                Ok(s) => {
                    self.look_status(&s);
                    if !matches!(s.phase, Phase::Running | Phase::Pending | Phase::Pulling) {
                        return;
                    }
                    if t.elapsed() > self.cfg.recovery_bound {
                        broken!(self.name, "build {} still {s} after stop", b.build_id);
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                Err(e) => {
                    // A backend may still be reconnecting (a watch re-listing): fine
                    // while temporary and within the recovery bound.
                    self.look_error(&e);
                    if !e.is_temporary() || t.elapsed() > self.cfg.recovery_bound {
                        broken!(self.name, "status after stop failed: {e}");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After stop, `gc` leaves nothing of `builds`: a request a killed start had already
    /// sent may land on the engine after the first `gc` (a busy daemon creates the
    /// container a moment later), so `gc` runs again until nothing is left or the
    /// recovery bound has passed, as a periodic `gc` would.
    pub(super) async fn no_orphans(&self, builds: &[&StartConfig]) {
        let t = Instant::now();
        loop {
            if let Err(e) = self.exec.gc(false).await {
                self.look_error(&e);
                broken!(self.name, "gc failed once the engine is back: {e}");
            }
            let Some(left) = &self.cfg.leftovers else {
                break;
            };
            let mut found = Vec::new();
            for b in builds {
                let l = left(b.build_id).await;
                if !l.is_empty() {
                    found.push((b.build_id, l));
                }
            }
            let Some((id, l)) = found.into_iter().next() else {
                break;
            };
            if t.elapsed() > self.cfg.recovery_bound {
                broken!(self.name, "build {id} left {l:?} after stop and gc");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats = self.exec.stats();
        self.look("stats", &format!("{stats:?}"));
    }

    /// With the engine back, a new build starts at once (retried within the bound).
    pub(super) async fn recovers(&self, n: u64) -> Duration {
        let b = self.config(n);
        let t = Instant::now();
        loop {
            match self.exec.start(&b).await {
                Ok(()) => break,
                Err(e) => {
                    self.look_error(&e);
                    if t.elapsed() > self.cfg.recovery_bound {
                        broken!(
                            self.name,
                            "no start works {:?} after the engine is back: {e}",
                            t.elapsed()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let d = t.elapsed();
        self.wait_running(&b).await;
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        d
    }
}
