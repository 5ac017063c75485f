//! The rules, one public function each, run by [`super::conformance`] in turn.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::annotations::{AnnotationMode, Annotations};
use crate::config::{ApiBuildStatus, StartConfig, StopConfig, TimerConfig};
use crate::error::ErrorKind;
use crate::executor::Executor;
use crate::status::Phase;
use crate::timer::{TimedExecutor, TimerService};

use super::harness::check;
use super::{ConformanceConfig, ids};

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

/// `cleanup` twice is `Ok` both times and **never stops a live build** (a server calls
/// it on shutdown and its builds keep running); `stop_all`, where supported, is the
/// explicit way to stop them and names the build it stopped.
pub async fn cleanup_keeps_live_builds(exec: Arc<dyn Executor>, cfg: &ConformanceConfig) {
    const RULE: &str = "cleanup_keeps_live_builds";
    check(RULE, exec, cfg, |p| async move {
        let build = p.config(ids::CLEANUP);
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        p.wait_for(RULE, &build, |s| s.phase == Phase::Running, "Running")
            .await;
        for n in ["first", "second"] {
            if let Err(e) = p.exec.cleanup().await {
                p.look_error("a cleanup error", &e);
                broken!(RULE, "the {n} cleanup failed: {e}");
            }
        }
        match p.status(&build).await {
            Ok(s) if s.phase == Phase::Running => {}
            Ok(s) => broken!(RULE, "a running build is {s} after cleanup"),
            Err(e) => broken!(RULE, "status after cleanup failed: {e}"),
        }
        match p.exec.stop_all().await {
            Ok(ids) => {
                if !ids.contains(&build.build_id) {
                    broken!(
                        RULE,
                        "stop_all stopped {ids:?}, not the live build {}",
                        build.build_id
                    );
                }
                p.expect_stopped(RULE, &build).await;
            }
            Err(e) if e.kind() == ErrorKind::Unsupported => p
                .stop(&build)
                .await
                .unwrap_or_else(|e| broken!(RULE, "stop failed: {e}")),
            Err(e) => {
                p.look_error("a stop_all error", &e);
                broken!(RULE, "stop_all failed: {e}");
            }
        }
    })
    .await;
}

/// A build whose launcher exits 0 **without** the launch handshake (native mode: it never
/// proved it ran the build, as upstream's launcher does on an unknown flag) is **never**
/// `Succeeded`: it ends failed (with [`SilentLauncher::reason`](super::SilentLauncher::reason) when given), its API
/// status is not `SUCCESS`, verify calls it a failure, and stop still works.
pub async fn silent_launcher_is_never_success(cfg: &ConformanceConfig) {
    const RULE: &str = "silent_launcher_is_never_success";
    let Some(silent) = cfg.silent_launcher.clone() else {
        eprintln!("conformance: skipping {RULE}: ConformanceConfig::silent_launcher is not set");
        return;
    };
    let mut c = cfg.clone();
    if let Some(api) = &silent.api_uri {
        c.api_uri = api.clone();
    }
    let exec = (silent.executor)().await;
    check(RULE, exec, &c, |p| async move {
        let build = p.config(ids::SILENT);
        p.start(&build)
            .await
            .unwrap_or_else(|e| broken!(RULE, "start failed: {e}"));
        let s = p
            .wait_for(RULE, &build, |s| s.is_terminal(), "a terminal status")
            .await;
        if s.phase != Phase::Failed {
            broken!(
                RULE,
                "a launcher that exited 0 without the launch handshake reports {s}, expected failed"
            );
        }
        if s.api_status().as_str() == "SUCCESS" {
            broken!(RULE, "the API status of {s} is SUCCESS");
        }
        if let Some(want) = silent.reason
            && s.reason() != Some(want)
        {
            broken!(
                RULE,
                "the failure reason is {:?}, expected {want:?}: {s}",
                s.reason()
            );
        }
        match p.verify(&build).await {
            Ok(v) if v.is_failure() => {}
            Ok(v) => broken!(RULE, "verify of the build is not a failure: {v:?}"),
            Err(e) => broken!(RULE, "verify failed: {e}"),
        }
        if let Err(e) = p.stop(&build).await {
            broken!(RULE, "stop failed: {e}");
        }
    })
    .await;
}
