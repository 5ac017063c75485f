//! The conformance suite passes the FakeExecutor (plain, slow, behind the timeout wrapper)
//! and fails every backend that breaks one of its rules.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use executor_base::secrecy::ExposeSecret;
use executor_base::testkit::conformance::{self, ConformanceConfig, LoseBuild, conformance};
use executor_base::testkit::fake::FakeExecutor;
use executor_base::{
    BuildId, BuildStatus, Error, ErrorKind, Executor, Phase, StartConfig, Stats, StopConfig,
    Verdict,
};
use futures::FutureExt;
use parking_lot::Mutex;

fn cfg(first: u64) -> ConformanceConfig {
    ConformanceConfig {
        first_build_id: first,
        concurrent_builds: 8,
        settle: Duration::from_secs(5),
        ..Default::default()
    }
}

fn lose_with(fake: &FakeExecutor) -> LoseBuild {
    let fake = fake.clone();
    Arc::new(move |id: BuildId| {
        let fake = fake.clone();
        async move { fake.lose(id).expect("the build exists") }.boxed()
    })
}

#[tokio::test]
async fn fake_executor_passes() {
    conformance(
        || async { Arc::new(FakeExecutor::new()) as Arc<dyn Executor> },
        ConformanceConfig {
            first_build_id: 1,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_fake_with_lost_builds_passes_and_leaves_nothing_running() {
    let fake = FakeExecutor::new();
    fake.set_latency(Duration::from_millis(3));
    let exec: Arc<dyn Executor> = Arc::new(fake.clone());
    let mut c = cfg(1000);
    c.lose_build = Some(lose_with(&fake));
    conformance(
        move || {
            let e = exec.clone();
            async move { e }
        },
        c,
    )
    .await;
    assert!(fake.live_builds().is_empty());
    assert!(fake.calls().stop >= 8);
}

/// Ways a backend can break the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    LeaksTokenInError,
    LeaksTokenInLog,
    LeaksTokenInStatus,
    ErrorsOnSecondStop,
    ErrorsOnStopOfUnknown,
    StatusOfUnknownIsPending,
    AcceptsSecondStart,
    IgnoresStop,
    StopStopsEveryBuild,
    LostIsSuccess,
    CleanupTwiceFails,
    CleanupStopsLiveBuilds,
    GoesBackwardsAfterStop,
    FailsVerifyOfRunning,
}

#[derive(Debug)]
struct Broken {
    fake: FakeExecutor,
    flaw: Flaw,
    stopped: Mutex<HashSet<BuildId>>,
    cleanups: Mutex<u32>,
}

impl Broken {
    fn new(fake: FakeExecutor, flaw: Flaw) -> Self {
        Self {
            fake,
            flaw,
            stopped: Mutex::default(),
            cleanups: Mutex::default(),
        }
    }
    fn has(&self, f: Flaw) -> bool {
        self.flaw == f
    }
}

#[async_trait]
impl Executor for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        if self.has(Flaw::LeaksTokenInLog) {
            tracing::trace!(token = build.token.expose_secret(), "starting");
        }
        match self.fake.start(build).await {
            Err(e)
                if e.kind() == ErrorKind::AlreadyExists && self.has(Flaw::AcceptsSecondStart) =>
            {
                Ok(())
            }
            Err(e) if self.has(Flaw::LeaksTokenInError) => Err(Error::new(
                e.kind(),
                format!("{} (token {})", e.message(), build.token.expose_secret()),
            )),
            r => r,
        }
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let id = build.build_id;
        let first = self.stopped.lock().insert(id);
        if self.has(Flaw::ErrorsOnSecondStop) && !first {
            return Err(Error::new(ErrorKind::Unexpected, "already stopped"));
        }
        if self.has(Flaw::ErrorsOnStopOfUnknown) && self.fake.status(build).await.is_err() {
            return Err(Error::build_not_found(id));
        }
        if self.has(Flaw::IgnoresStop) {
            return Ok(());
        }
        if self.has(Flaw::StopStopsEveryBuild) {
            for other in self.fake.live_builds() {
                self.fake.stop(&StopConfig::new(other)).await?;
            }
        }
        self.fake.stop(build).await
    }

    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        let v = self.fake.verify(build).await?;
        if self.has(Flaw::FailsVerifyOfRunning) && v == Verdict::Healthy {
            return Ok(Verdict::Failed("no idea".into()));
        }
        Ok(v)
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        let r = self.fake.status(build).await;
        match (self.flaw, r) {
            (Flaw::StatusOfUnknownIsPending, Err(e)) if e.kind() == ErrorKind::NotFound => {
                Ok(BuildStatus::pending("queued"))
            }
            (Flaw::LostIsSuccess, Ok(s)) if s.phase == Phase::Lost => Ok(BuildStatus::succeeded()),
            (Flaw::LeaksTokenInStatus, Ok(mut s)) => {
                if let Some(t) = &build.token {
                    s.message = format!("{} for {}", s.message, t.expose_secret());
                }
                Ok(s)
            }
            (Flaw::GoesBackwardsAfterStop, Ok(s))
                if s.phase == Phase::Canceled && self.stopped.lock().remove(&build.build_id) =>
            {
                Ok(BuildStatus::pending("restarting"))
            }
            (_, r) => r,
        }
    }

    fn stats(&self) -> Stats {
        self.fake.stats()
    }

    async fn cleanup(&self) -> Result<(), Error> {
        let n = {
            let mut n = self.cleanups.lock();
            *n += 1;
            *n
        };
        if self.has(Flaw::CleanupStopsLiveBuilds) {
            for other in self.fake.live_builds() {
                self.fake.stop(&StopConfig::new(other)).await?;
            }
        }
        if self.has(Flaw::CleanupTwiceFails) && n > 1 {
            return Err(Error::new(
                ErrorKind::Unexpected,
                "connection already closed",
            ));
        }
        Ok(())
    }
}

/// Runs the whole suite over a broken backend; it must panic naming `rule`, and (unless
/// the backend ignores stops) leave no build running.
async fn assert_fails(flaw: Flaw, rule: &str, first: u64) {
    let fake = FakeExecutor::new();
    let exec: Arc<dyn Executor> = Arc::new(Broken::new(fake.clone(), flaw));
    let mut c = cfg(first);
    c.lose_build = Some(lose_with(&fake));
    let run = tokio::spawn(async move {
        conformance(
            move || {
                let e = exec.clone();
                async move { e }
            },
            c,
        )
        .await
    });
    let err = run
        .await
        .expect_err(&format!("the suite passed a backend with {flaw:?}"));
    assert!(err.is_panic());
    let payload = err.into_panic();
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains(&format!("rule `{rule}` broken")),
        "{flaw:?}: expected rule {rule}, got: {msg}"
    );
    if flaw != Flaw::IgnoresStop {
        assert!(
            fake.live_builds().is_empty(),
            "{flaw:?}: the suite left {:?} running",
            fake.live_builds()
        );
    }
}

#[tokio::test]
async fn fails_a_backend_that_leaks_the_token_in_an_error() {
    assert_fails(Flaw::LeaksTokenInError, "tokens_never_leak", 2000).await;
}

#[tokio::test]
async fn fails_a_backend_that_leaks_the_token_in_a_log_line() {
    assert_fails(Flaw::LeaksTokenInLog, "tokens_never_leak", 3000).await;
}

#[tokio::test]
async fn fails_a_backend_that_leaks_the_token_in_a_status() {
    assert_fails(Flaw::LeaksTokenInStatus, "tokens_never_leak", 4000).await;
}

#[tokio::test]
async fn fails_a_backend_that_errors_on_a_second_stop() {
    assert_fails(Flaw::ErrorsOnSecondStop, "stop_is_idempotent", 5000).await;
}

#[tokio::test]
async fn fails_a_backend_that_errors_on_stop_of_an_unknown_build() {
    assert_fails(Flaw::ErrorsOnStopOfUnknown, "stop_is_idempotent", 6000).await;
}

#[tokio::test]
async fn fails_a_backend_that_invents_unknown_builds() {
    assert_fails(
        Flaw::StatusOfUnknownIsPending,
        "invalid_config_is_refused",
        7000,
    )
    .await;
    // The dedicated check catches it on its own too.
    let exec: Arc<dyn Executor> = Arc::new(Broken::new(
        FakeExecutor::new(),
        Flaw::StatusOfUnknownIsPending,
    ));
    let r =
        tokio::spawn(
            async move { conformance::status_of_unknown_is_not_found(exec, &cfg(7100)).await },
        )
        .await;
    assert!(r.unwrap_err().is_panic());
}

#[tokio::test]
async fn fails_a_backend_that_accepts_a_second_start() {
    assert_fails(
        Flaw::AcceptsSecondStart,
        "start_of_live_build_is_already_exists",
        8000,
    )
    .await;
}

#[tokio::test]
async fn fails_a_backend_that_ignores_stop() {
    assert_fails(Flaw::IgnoresStop, "start_status_stop", 9000).await;
}

#[tokio::test]
async fn fails_a_backend_whose_stop_stops_every_build() {
    assert_fails(
        Flaw::StopStopsEveryBuild,
        "concurrent_starts_do_not_interfere",
        10000,
    )
    .await;
}

#[tokio::test]
async fn fails_a_backend_that_reports_success_for_a_lost_build() {
    assert_fails(Flaw::LostIsSuccess, "lost_build_is_never_success", 11000).await;
}

#[tokio::test]
async fn fails_a_backend_whose_second_cleanup_fails() {
    assert_fails(Flaw::CleanupTwiceFails, "cleanup_keeps_live_builds", 12000).await;
}

#[tokio::test]
async fn fails_a_backend_whose_cleanup_stops_live_builds() {
    assert_fails(
        Flaw::CleanupStopsLiveBuilds,
        "cleanup_keeps_live_builds",
        19000,
    )
    .await;
}

#[tokio::test]
async fn fails_a_backend_whose_status_breaks_the_state_machine() {
    assert_fails(Flaw::GoesBackwardsAfterStop, "start_status_stop", 13000).await;
}

#[tokio::test]
async fn fails_a_backend_whose_verify_fails_running_builds() {
    assert_fails(Flaw::FailsVerifyOfRunning, "start_status_stop", 14000).await;
}

#[tokio::test]
async fn fails_a_backend_that_ignores_stop_in_the_timeout_check() {
    // Run only the timeout check: the wrapper reports TimedOut, but the build never stops.
    let exec: Arc<dyn Executor> = Arc::new(Broken::new(FakeExecutor::new(), Flaw::IgnoresStop));
    let mut c = cfg(15000);
    c.settle = Duration::from_secs(1);
    let r =
        tokio::spawn(async move { conformance::timed_out_build_is_stopped(exec, &c).await }).await;
    let msg = r
        .unwrap_err()
        .into_panic()
        .downcast::<String>()
        .map(|b| *b)
        .unwrap_or_default();
    assert!(
        msg.contains("rule `timed_out_build_is_stopped` broken"),
        "{msg}"
    );
}

/// A fake whose every build's launcher exits 0: with `handshake_checked`, as a backend
/// that reads the launch handshake reports it (failed, `launchProtocol`); without, as a
/// backend that trusts exit 0 (succeeded).
fn silent(handshake_checked: bool) -> conformance::SilentLauncher {
    use executor_base::launch_protocol::exit_zero_status;
    use executor_base::testkit::fake::Script;
    let fake = FakeExecutor::new();
    let end = if handshake_checked {
        exit_zero_status(
            executor_base::LaunchMode::Native,
            1,
            None,
            "stock-launcher:stand-in",
        )
    } else {
        BuildStatus::succeeded()
    };
    fake.set_default_script(Script::finish_after(Duration::from_millis(20), end));
    conformance::SilentLauncher {
        executor: Arc::new(move || {
            let e: Arc<dyn Executor> = Arc::new(fake.clone());
            async move { e }.boxed()
        }),
        api_uri: None,
        reason: Some(executor_base::FailureReason::LaunchProtocol),
    }
}

#[tokio::test]
async fn a_backend_that_checks_the_handshake_passes_the_silent_launcher_rule() {
    let mut c = cfg(5000);
    c.silent_launcher = Some(silent(true));
    conformance::silent_launcher_is_never_success(&c).await;
}

#[tokio::test]
async fn fails_a_backend_that_trusts_exit_0_without_the_handshake() {
    let mut c = cfg(5100);
    c.silent_launcher = Some(silent(false));
    let err = tokio::spawn(async move { conformance::silent_launcher_is_never_success(&c).await })
        .await
        .expect_err("the rule passed a backend that reports success without the handshake");
    let payload = err.into_panic();
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        msg.contains("rule `silent_launcher_is_never_success` broken"),
        "{msg}"
    );
}
