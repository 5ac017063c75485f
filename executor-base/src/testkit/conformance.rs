//! The conformance suite every backend runs in its own tests.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use executor_base::Executor;
//! use executor_base::testkit::conformance::{conformance, ConformanceConfig};
//! use executor_base::testkit::fake::FakeExecutor;
//! conformance(
//!     || async { Arc::new(FakeExecutor::new()) as Arc<dyn Executor> },
//!     ConformanceConfig { first_build_id: 1000, ..Default::default() },
//! )
//! .await;
//! # }
//! ```
//!
//! Each rule of the [`Executor`] contract is one public async check (all take a fresh
//! executor from the factory and the config): [`invalid_config_is_refused`],
//! [`status_of_unknown_is_not_found`], [`start_status_stop`], [`stop_is_idempotent`],
//! [`start_of_live_build_is_already_exists`], [`tokens_never_leak`],
//! [`concurrent_starts_do_not_interfere`], [`timed_out_build_is_stopped`],
//! [`lost_build_is_never_success`] (only with [`ConformanceConfig::lose_build`]) and
//! [`cleanup_is_idempotent`]. A broken rule panics with `conformance: rule `<name>` broken:
//! ...`. Every check stops each build it started, also when it fails.
//!
//! Throughout, a capturing `tracing` layer watches every event and span field (at every
//! level) for the suite's tokens, and every error, status, verdict and `stats()` seen is
//! checked through its `Display`, `Debug` and JSON forms. The capture is installed as the
//! global subscriber when none is set yet, and always for the suite's own future; events
//! from tasks a backend spawns are seen only through the global one.
//!
//! Not API-stable: it grows as the contract does.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tracing::instrument::WithSubscriber;

use crate::annotations::{AnnotationMode, Annotations};
use crate::config::{ApiBuildStatus, StartConfig, StopConfig, TimerConfig};
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::ids::BuildId;
use crate::status::{BuildStatus, Phase};
use crate::timer::{TimedExecutor, TimerService};
use crate::verdict::Verdict;

/// A hook that makes a build vanish behind the executor's back (remove its container,
/// delete its pod), for [`lost_build_is_never_success`].
pub type LoseBuild = Arc<dyn Fn(BuildId) -> BoxFuture<'static, ()> + Send + Sync>;

/// Settings of the suite.
#[derive(Clone)]
pub struct ConformanceConfig {
    /// `apiUri` put in the start configs (default `http://127.0.0.1:9`, where nothing listens).
    pub api_uri: String,
    /// An image reference the backend can run (default `busybox:latest`).
    pub container: String,
    /// Build ids used are `first_build_id ..= first_build_id + 100 + concurrent_builds`
    /// (pick a range no one else uses on a shared engine).
    pub first_build_id: u64,
    /// How many builds are started at once (default 50).
    pub concurrent_builds: usize,
    /// The longest wait for a status change (default 30 s).
    pub settle: Duration,
    /// Optional: how to lose a build behind the executor's back; without it
    /// [`lost_build_is_never_success`] is skipped.
    pub lose_build: Option<LoseBuild>,
}

impl Default for ConformanceConfig {
    fn default() -> Self {
        Self {
            api_uri: "http://127.0.0.1:9".into(),
            container: "busybox:latest".into(),
            first_build_id: 9_000_000,
            concurrent_builds: 50,
            settle: Duration::from_secs(30),
            lose_build: None,
        }
    }
}

impl std::fmt::Debug for ConformanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConformanceConfig")
            .field("api_uri", &self.api_uri)
            .field("container", &self.container)
            .field("first_build_id", &self.first_build_id)
            .field("concurrent_builds", &self.concurrent_builds)
            .field("settle", &self.settle)
            .field("lose_build", &self.lose_build.is_some())
            .finish()
    }
}

/// Offsets of each check's build ids from [`ConformanceConfig::first_build_id`].
mod ids {
    pub const START_STATUS_STOP: u64 = 0;
    pub const STOP_TWICE: u64 = 1;
    pub const NEVER_STARTED: u64 = 2;
    pub const UNKNOWN: u64 = 3;
    pub const ALREADY_EXISTS: u64 = 4;
    pub const INVALID: u64 = 5;
    pub const TIMED_OUT: u64 = 6;
    pub const LOST: u64 = 7;
    pub const LEAK: u64 = 8;
    pub const CONCURRENT: u64 = 100;
}

/// Fails the suite naming the broken rule.
macro_rules! broken {
    ($rule:expr, $($arg:tt)*) => {
        panic!("conformance: rule `{}` broken: {}", $rule, format!($($arg)*))
    };
}

/// Runs every check, each on a fresh executor from `factory`.
///
/// The factory's executors must run builds that keep running until stopped (configure
/// the backend's launcher or fake for that), so stop-while-running and timeouts can be
/// tested. Panics with a message naming the first broken rule.
pub async fn conformance<F, Fut>(factory: F, cfg: ConformanceConfig)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Executor>>,
{
    invalid_config_is_refused(factory().await, &cfg).await;
    status_of_unknown_is_not_found(factory().await, &cfg).await;
    start_status_stop(factory().await, &cfg).await;
    stop_is_idempotent(factory().await, &cfg).await;
    start_of_live_build_is_already_exists(factory().await, &cfg).await;
    tokens_never_leak(factory().await, &cfg).await;
    concurrent_starts_do_not_interfere(factory().await, &cfg).await;
    timed_out_build_is_stopped(factory().await, &cfg).await;
    lost_build_is_never_success(factory().await, &cfg).await;
    cleanup_is_idempotent(factory().await, &cfg).await;
}

/// `start`, then `status` moves through `Pending`/`Pulling` to `Running` along the state
/// machine, `verify` is not a failure, and after `stop` the build is `Canceled` (or
/// another terminal status, never `Succeeded` or `Lost`).
pub async fn start_status_stop(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "start_status_stop";
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::START_STATUS_STOP);
        let before = p.exec.stats().builds.started;
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        let first = p.status(&build).await;
        match first {
            Ok(s) if !s.is_terminal() => {}
            Ok(s) => broken!(
                RULE,
                "a build that runs until stopped is {s} right after start"
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {} // eventually consistent engines
            Err(e) if e.is_temporary() => {}
            Err(e) => broken!(RULE, "status right after start failed: {e}"),
        }
        p.wait_for(RULE, &build, |s| s.phase == Phase::Running, "Running")
            .await;
        let started = p.exec.stats().builds.started;
        if started <= before {
            broken!(
                RULE,
                "stats().builds.started did not count the start ({before} -> {started})"
            );
        }
        match p.verify(&build).await {
            Ok(v) if v.is_failure() => broken!(RULE, "verify of a running build is a failure: {v}"),
            Ok(_) => {}
            Err(e) => broken!(RULE, "verify of a running build failed: {e}"),
        }
        p.stop(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "stop failed: {e}"));
        p.expect_stopped(RULE, &build).await;
    })
    .await;
}

/// `stop` twice is `Ok` both times, the build stays stopped, and `stop` of a build that
/// was never started is `Ok`.
pub async fn stop_is_idempotent(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "stop_is_idempotent";
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::STOP_TWICE);
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        p.wait_for(RULE, &build, |s| s.phase == Phase::Running, "Running")
            .await;
        for n in ["first", "second"] {
            if let Err(e) = p.stop(&build).await {
                broken!(RULE, "the {n} stop failed: {e}");
            }
        }
        p.expect_stopped(RULE, &build).await;
        if let Err(e) = p.stop(&build).await {
            broken!(RULE, "a third stop failed: {e}");
        }
        let never = p.config(ids::NEVER_STARTED);
        if let Err(e) = p.stop(&never).await {
            broken!(RULE, "stop of a never-started build failed: {e}");
        }
    })
    .await;
}

/// `status` of a build the executor never knew is [`ErrorKind::NotFound`].
pub async fn status_of_unknown_is_not_found(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "status_of_unknown_is_not_found";
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::UNKNOWN);
        match p.status(&build).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => broken!(RULE, "expected NotFound, got the error {e}"),
            Ok(s) => broken!(RULE, "expected NotFound, got the status {s}"),
        }
    })
    .await;
}

/// `start` of a build id that is live is [`ErrorKind::AlreadyExists`], and leaves the
/// running build alone.
pub async fn start_of_live_build_is_already_exists(
    exec: Arc<dyn Executor>,
    cfg: &ConformanceConfig,
) {
    const RULE: &str = "start_of_live_build_is_already_exists";
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::ALREADY_EXISTS);
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        p.wait_for(RULE, &build, |s| !s.is_terminal(), "a live status")
            .await;
        match p.start(&build).await {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => broken!(RULE, "expected AlreadyExists, got {e}"),
            Ok(()) => broken!(RULE, "a second start of a live build id was accepted"),
        }
        p.wait_for(
            RULE,
            &build,
            |s| s.phase == Phase::Running,
            "Running (the first build untouched)",
        )
        .await;
        p.stop(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "stop failed: {e}"));
        p.expect_stopped(RULE, &build).await;
    })
    .await;
}

/// Invalid configs are refused by the parsing step with an error naming the field (and
/// never the token), before any engine call: the executor's request and build counters do
/// not move, and the build id of the refused config stays unknown to the executor.
pub async fn invalid_config_is_refused(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "invalid_config_is_refused";
    check(RULE, exec, cfg, |p| async move {
        let id = p.id(ids::INVALID);
        let token = p.token(id);
        let good = json!({"buildId": id, "apiUri": cfg.api_uri, "container": cfg.container, "token": token});
        let cases: Vec<(&str, Value)> = vec![
            ("buildId", with(&good, "buildId", json!(0))),
            ("apiUri", with(&good, "apiUri", json!("ftp://127.0.0.1/x"))),
            ("container", with(&good, "container", json!(""))),
            ("token", with(&good, "token", Value::Null)),
            ("token", with(&good, "token", json!(format!("{token} with spaces")))),
            ("annotations[screwdriver.cd/cpu]", with(&good, "annotations", json!({"screwdriver.cd/cpu": "HUGE"}))),
            ("annotations[screwdriver.cd/timeout]", with(&good, "annotations", json!({"screwdriver.cd/timeout": -5}))),
        ];
        let before = p.exec.stats();
        for (field, bad) in &cases {
            match StartConfig::from_json(bad) {
                Ok(_) => broken!(RULE, "a start config with a bad {field} was accepted"),
                Err(e) => {
                    p.look_error("a parse error", &e);
                    if e.kind() != ErrorKind::Invalid || !e.field_errors().iter().any(|f| f.field == *field) {
                        broken!(RULE, "the parse error does not name {field}: {e}");
                    }
                }
            }
        }
        let stop_bad = StopConfig::from_json(&json!({"buildId": "x", "token": token}));
        match stop_bad {
            Ok(_) => broken!(RULE, "a stop config with buildId \"x\" was accepted"),
            Err(e) => {
                p.look_error("a parse error", &e);
                if !e.field_errors().iter().any(|f| f.field == "buildId") {
                    broken!(RULE, "the stop parse error does not name buildId: {e}");
                }
            }
        }
        let after = p.exec.stats();
        if after.requests.total != before.requests.total || after.builds.started != before.builds.started {
            broken!(
                RULE,
                "refused configs moved the executor's counters (requests {} -> {}, started {} -> {})",
                before.requests.total,
                after.requests.total,
                before.builds.started,
                after.builds.started
            );
        }
        match p.status(&p.config(ids::INVALID)).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => broken!(RULE, "status of the refused build: expected NotFound, got {e}"),
            Ok(s) => broken!(RULE, "the executor knows the refused build: {s}"),
        }
    })
    .await;
}

fn with(base: &Value, key: &str, v: Value) -> Value {
    let mut out = base.clone();
    out[key] = v;
    out
}

/// No token appears in any error (also on error paths: a second start, an unknown build),
/// status, verdict, `stats()` or captured log line.
pub async fn tokens_never_leak(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "tokens_never_leak";
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::LEAK);
        let unknown = p.config(ids::LEAK + 50);
        let _ = p.status(&unknown).await;
        let _ = p.verify(&unknown).await;
        let _ = p.stop(&unknown).await;
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        let _ = p.start(&build).await;
        p.wait_for(RULE, &build, |s| !s.is_terminal(), "a live status")
            .await;
        let _ = p.verify(&build).await;
        p.look_stats();
        let _ = p.stop(&build).await;
        let _ = p.stop(&build).await;
        let _ = p.status(&build).await;
        p.look_stats();
    })
    .await;
}

/// `concurrent_builds` builds started at once all start, keep their own statuses, and
/// stopping half of them leaves the other half running; then all are stopped.
pub async fn concurrent_starts_do_not_interfere(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "concurrent_starts_do_not_interfere";
    check(RULE, exec, cfg, |p| async move {
        let n = cfg.concurrent_builds.max(2) as u64;
        let builds: Vec<StartConfig> = (0..n).map(|i| p.config(ids::CONCURRENT + i)).collect();
        let before = p.exec.stats().builds.started;
        let results = join_all(builds.iter().map(|b| p.start(b))).await;
        for (b, r) in builds.iter().zip(&results) {
            if let Err(e) = r {
                broken!(
                    RULE,
                    "start of build {} (of {n} at once) failed: {e}",
                    b.build_id
                );
            }
        }
        let started = p.exec.stats().builds.started;
        if started < before + n {
            broken!(
                RULE,
                "stats().builds.started counted {} of {n} starts",
                started - before
            );
        }
        join_all(
            builds
                .iter()
                .map(|b| p.wait_for(RULE, b, |s| !s.is_terminal(), "a live status")),
        )
        .await;
        let (first, second) = builds.split_at(builds.len() / 2);
        for (b, r) in first
            .iter()
            .zip(join_all(first.iter().map(|b| p.stop(b))).await)
        {
            if let Err(e) = r {
                broken!(RULE, "stop of build {} failed: {e}", b.build_id);
            }
        }
        join_all(first.iter().map(|b| p.expect_stopped(RULE, b))).await;
        for b in second {
            match p.status(b).await {
                Ok(s) if !s.is_terminal() => {}
                Ok(s) => broken!(
                    RULE,
                    "stopping other builds changed build {} to {s}",
                    b.build_id
                ),
                Err(e) => broken!(
                    RULE,
                    "status of build {} after stopping others: {e}",
                    b.build_id
                ),
            }
        }
        for (b, r) in second
            .iter()
            .zip(join_all(second.iter().map(|b| p.stop(b))).await)
        {
            if let Err(e) = r {
                broken!(RULE, "stop of build {} failed: {e}", b.build_id);
            }
        }
        join_all(second.iter().map(|b| p.expect_stopped(RULE, b))).await;
    })
    .await;
}

/// A build that runs past its deadline is stopped on the executor and reported
/// [`Phase::TimedOut`] (through a [`TimedExecutor`] over the executor, with a
/// `startTime` in the past so the deadline passes within a second). A timer for a
/// build that is not `RUNNING` is a no-op.
pub async fn timed_out_build_is_stopped(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "timed_out_build_is_stopped";
    check(RULE, exec, cfg, |p| async move {
        let timers = TimerService::builder()
            .build()
            .await
            .unwrap_or_else(|e| broken!(RULE, "timer service: {e}"));
        let timed = Arc::new(TimedExecutor::new(p.exec.clone(), timers.clone()));
        let build = p.config(ids::TIMED_OUT);
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        p.wait_for(RULE, &build, |s| s.phase == Phase::Running, "Running")
            .await;
        let annotations = Annotations::parse(
            &json!({"screwdriver.cd/timeout": 1}),
            AnnotationMode::Strict,
        )
        .expect("valid annotations");
        let job = crate::ids::JobId::new(1).expect("positive");
        let start_time = chrono::Utc::now() - chrono::Duration::seconds(60)
            + chrono::Duration::milliseconds(300);
        let queued = TimerConfig::new(
            build.build_id,
            job,
            ApiBuildStatus::Queued,
            start_time,
            annotations.clone(),
        );
        timed
            .start_timer(&queued)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start_timer: {e}"));
        if timers.pending() != 0 {
            broken!(RULE, "start_timer armed a timer for a QUEUED build");
        }
        let running = TimerConfig::new(
            build.build_id,
            job,
            ApiBuildStatus::Running,
            start_time,
            annotations,
        );
        timed
            .start_timer(&running)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start_timer: {e}"));
        let deadline = tokio::time::Instant::now() + cfg.settle;
        loop {
            match timed.status(&build.to_stop()).await {
                Ok(s) if s.phase == Phase::TimedOut => {
                    p.look_status(&s);
                    break;
                }
                Ok(s) => p.look_status(&s),
                Err(e) => p.look_error("a status error", &e),
            }
            if tokio::time::Instant::now() >= deadline {
                broken!(
                    RULE,
                    "the build was not reported TimedOut within {:?}",
                    cfg.settle
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The timer service stopped the build on the executor itself.
        p.expect_stopped(RULE, &build).await;
        timed
            .stop_timer(&build.to_stop())
            .await
            .unwrap_or_else(|e| broken!(RULE, "stop_timer: {e}"));
    })
    .await;
}

/// A build that vanishes behind the executor's back reports [`Phase::Lost`] (never
/// `Succeeded`), and `stop` of it is `Ok`. Needs [`ConformanceConfig::lose_build`];
/// skipped (with a message) without it.
pub async fn lost_build_is_never_success(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "lost_build_is_never_success";
    let Some(lose) = cfg.lose_build.clone() else {
        eprintln!("conformance: skipping {RULE}: ConformanceConfig::lose_build is not set");
        return;
    };
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::LOST);
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        p.wait_for(RULE, &build, |s| s.phase == Phase::Running, "Running")
            .await;
        lose(build.build_id).await;
        let s = p
            .wait_for(RULE, &build, |s| s.is_terminal(), "a terminal status")
            .await;
        if s.phase != Phase::Lost {
            broken!(
                RULE,
                "a build lost behind the executor's back reports {s}, expected lost"
            );
        }
        match p.verify(&build).await {
            Ok(v) if v.is_failure() => {}
            Ok(v) => broken!(RULE, "verify of a lost build is not a failure: {v:?}"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => broken!(RULE, "verify of a lost build failed: {e}"),
        }
        if let Err(e) = p.stop(&build).await {
            broken!(RULE, "stop of a lost build failed: {e}");
        }
    })
    .await;
}

/// `cleanup` twice is `Ok` both times.
pub async fn cleanup_is_idempotent(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "cleanup_is_idempotent";
    check(RULE, exec, cfg, |p| async move {
        for n in ["first", "second"] {
            if let Err(e) = p.exec.cleanup().await {
                p.look_error("a cleanup error", &e);
                broken!(RULE, "the {n} cleanup failed: {e}");
            }
        }
    })
    .await;
}

/// What one check uses: the executor, its tokens, the builds it started.
struct Probe {
    rule: &'static str,
    exec: Arc<dyn Executor>,
    cfg: ConformanceConfig,
    nonce: String,
    started: Mutex<Vec<StopConfig>>,
    /// The last phase seen per build: every change must follow the state machine.
    phases: Mutex<HashMap<BuildId, Phase>>,
}

impl Probe {
    fn id(&self, offset: u64) -> u64 {
        self.cfg.first_build_id + offset
    }

    /// A distinctive token per build: `sdx-conformance-secret-<nonce>-<id>`.
    fn token(&self, id: u64) -> String {
        format!("sdx-conformance-secret-{}-{id}", self.nonce)
    }

    fn config(&self, offset: u64) -> StartConfig {
        let id = self.id(offset);
        StartConfig::builder(id, &self.cfg.api_uri, &self.cfg.container, self.token(id))
            .job_id(1)
            .build()
            .unwrap_or_else(|e| panic!("conformance: ConformanceConfig is not usable: {e}"))
    }

    /// Panics when `text` (something the executor produced) contains a token.
    fn look(&self, what: &str, text: &str) {
        if text.contains(&self.nonce) {
            broken!("tokens_never_leak", "a token appears in {what}: {text}");
        }
    }

    fn look_error(&self, what: &str, e: &Error) {
        self.look(what, &e.to_string());
        self.look(what, &format!("{e:?}"));
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            self.look(what, &s.to_string());
            source = s.source();
        }
    }

    fn look_status(&self, s: &BuildStatus) {
        self.look("a status", &s.to_string());
        self.look("a status", &format!("{s:?}"));
        self.look("a status", &serde_json::to_string(s).unwrap_or_default());
    }

    fn look_stats(&self) {
        let s = self.exec.stats();
        self.look("stats()", &format!("{s:?}"));
        self.look("stats()", &serde_json::to_string(&s).unwrap_or_default());
    }

    fn seen<T>(&self, what: &str, r: &Result<T, Error>) {
        if let Err(e) = r {
            self.look_error(what, e);
        }
    }

    async fn start(&self, b: &StartConfig) -> Result<(), Error> {
        let r = self.exec.start(b).await;
        self.seen("a start error", &r);
        // Tracked even when start failed: the suite stops what may have been created.
        self.started.lock().push(b.to_stop());
        r
    }

    async fn stop(&self, b: &StartConfig) -> Result<(), Error> {
        let r = self.exec.stop(&b.to_stop()).await;
        self.seen("a stop error", &r);
        r
    }

    async fn status(&self, b: &StartConfig) -> Result<BuildStatus, Error> {
        let r = self.exec.status(&b.to_stop()).await;
        self.seen("a status error", &r);
        if let Ok(s) = &r {
            self.look_status(s);
            let prev = self.phases.lock().insert(b.build_id, s.phase);
            if let Some(prev) = prev
                && !prev.can_become(s.phase)
            {
                broken!(
                    self.rule,
                    "build {} went from {prev} to {}, which the state machine forbids",
                    b.build_id,
                    s.phase
                );
            }
        }
        r
    }

    async fn verify(&self, b: &StartConfig) -> Result<Verdict, Error> {
        let r = self.exec.verify(b).await;
        self.seen("a verify error", &r);
        if let Ok(v) = &r {
            self.look("a verdict", &format!("{v} {v:?}"));
        }
        r
    }

    /// Polls `status` until `pred` holds.
    async fn wait_for(
        &self,
        rule: &str,
        b: &StartConfig,
        pred: impl Fn(&BuildStatus) -> bool,
        what: &str,
    ) -> BuildStatus {
        let deadline = tokio::time::Instant::now() + self.cfg.settle;
        let mut every = Duration::from_millis(10);
        let mut last: Option<BuildStatus> = None;
        let mut last_err: Option<String> = None;
        loop {
            match self.status(b).await {
                Ok(s) => {
                    if pred(&s) {
                        return s;
                    }
                    if s.is_terminal() {
                        broken!(
                            rule,
                            "build {} became {s} while waiting for {what}",
                            b.build_id
                        );
                    }
                    last = Some(s);
                }
                Err(e) if e.kind() == ErrorKind::NotFound || e.is_temporary() => {
                    last_err = Some(e.to_string())
                }
                Err(e) => broken!(rule, "status of build {} failed: {e}", b.build_id),
            }
            if tokio::time::Instant::now() >= deadline {
                broken!(
                    rule,
                    "build {} did not reach {what} within {:?} (last status: {}, last error: {})",
                    b.build_id,
                    self.cfg.settle,
                    last.map_or("none".into(), |s| s.to_string()),
                    last_err.unwrap_or_else(|| "none".into())
                );
            }
            tokio::time::sleep(every).await;
            every = (every * 2).min(Duration::from_millis(250));
        }
    }

    /// After `stop`, `status` must settle on a terminal status other than `Succeeded`
    /// and `Lost` (the build was running until stopped).
    async fn expect_stopped(&self, rule: &str, b: &StartConfig) {
        let deadline = tokio::time::Instant::now() + self.cfg.settle;
        loop {
            match self.status(b).await {
                Ok(s) if s.is_terminal() => {
                    if matches!(s.phase, Phase::Succeeded | Phase::Lost) {
                        broken!(
                            rule,
                            "build {} stopped while running reports {s}, expected canceled",
                            b.build_id
                        );
                    }
                    return;
                }
                Ok(s) if tokio::time::Instant::now() >= deadline => {
                    broken!(
                        rule,
                        "build {} still {s} {:?} after stop",
                        b.build_id,
                        self.cfg.settle
                    )
                }
                Ok(_) => {}
                Err(e) if e.is_temporary() && tokio::time::Instant::now() < deadline => {}
                Err(e) => broken!(
                    rule,
                    "status of build {} after stop: expected canceled, got {e}",
                    b.build_id
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs one check: capture on, the body, then stop every build it started (also when
/// the body panicked), then no captured log line may hold a token.
async fn check<F, Fut>(
    rule: &'static str,
    exec: Arc<dyn Executor>,
    cfg: &ConformanceConfig,
    body: F,
) where
    F: FnOnce(Arc<Probe>) -> Fut,
    Fut: Future<Output = ()>,
{
    let nonce = format!("{:016x}", fastrand::u64(..));
    let probe = Arc::new(Probe {
        rule,
        exec,
        cfg: cfg.clone(),
        nonce: nonce.clone(),
        started: Mutex::new(Vec::new()),
        phases: Mutex::new(HashMap::new()),
    });
    let dispatch = capture::install(&nonce);
    let outcome = AssertUnwindSafe(body(probe.clone()))
        .catch_unwind()
        .with_subscriber(dispatch.clone())
        .await;
    let started: Vec<StopConfig> = std::mem::take(&mut *probe.started.lock());
    let stops = join_all(started.iter().map(|s| probe.exec.stop(s)))
        .with_subscriber(dispatch)
        .await;
    let leaks = capture::finish(&nonce);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    for (s, r) in started.iter().zip(stops) {
        if let Err(e) = r {
            probe.look_error("a stop error", &e);
            broken!(
                "stop_is_idempotent",
                "stop of build {} at the end of `{rule}` failed: {e}",
                s.build_id
            );
        }
    }
    if let Some(line) = leaks.first() {
        broken!(
            "tokens_never_leak",
            "a token appears in a log line captured during `{rule}`: {line}"
        );
    }
}

/// A `tracing` layer that looks for the running checks' tokens in every event and span.
pub(crate) mod capture {
    use std::fmt::Write as _;
    use std::sync::OnceLock;

    use parking_lot::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::{Dispatch, Event, Subscriber, span};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    /// (nonce, leaked lines) of the checks running now.
    static WATCHED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());
    static DISPATCH: OnceLock<Dispatch> = OnceLock::new();

    struct Capture;

    #[derive(Default)]
    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
        fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
            let _ = write!(self.0, " {}={} ({:?})", field.name(), value, value);
        }
    }

    fn inspect(target: &str, line: Line) {
        let mut w = WATCHED.lock();
        for (nonce, leaks) in w.iter_mut() {
            if line.0.contains(nonce.as_str()) {
                leaks.push(format!("[{target}]{}", line.0));
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut line = Line::default();
            event.record(&mut line);
            inspect(event.metadata().target(), line);
        }
        fn on_new_span(&self, attrs: &span::Attributes<'_>, _id: &span::Id, _ctx: Context<'_, S>) {
            let mut line = Line(format!(" span {}", attrs.metadata().name()));
            attrs.record(&mut line);
            inspect(attrs.metadata().target(), line);
        }
        fn on_record(&self, _id: &span::Id, values: &span::Record<'_>, _ctx: Context<'_, S>) {
            let mut line = Line::default();
            values.record(&mut line);
            inspect("span", line);
        }
    }

    /// Watches for `nonce`; returns the capturing dispatcher (also made the global
    /// default when no global subscriber was set yet).
    pub(crate) fn install(nonce: &str) -> Dispatch {
        let d = DISPATCH
            .get_or_init(|| {
                let d = Dispatch::new(tracing_subscriber::registry().with(Capture));
                let _ = tracing::dispatcher::set_global_default(d.clone());
                d
            })
            .clone();
        WATCHED.lock().push((nonce.to_string(), Vec::new()));
        d
    }

    /// Stops watching `nonce`; returns the lines that contained it.
    pub(crate) fn finish(nonce: &str) -> Vec<String> {
        let mut w = WATCHED.lock();
        match w.iter().position(|(n, _)| n == nonce) {
            Some(i) => w.swap_remove(i).1,
            None => Vec::new(),
        }
    }
}
