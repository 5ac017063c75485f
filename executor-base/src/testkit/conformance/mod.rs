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
//! [`lost_build_is_never_success`] (only with [`ConformanceConfig::lose_build`]),
//! [`cleanup_keeps_live_builds`] and [`silent_launcher_is_never_success`] (only with
//! [`ConformanceConfig::silent_launcher`]). A broken rule panics with `conformance: rule <name> broken:
//! ...`. Every check stops each build it started, also when it fails.
//!
//! Throughout, a capturing `tracing` layer watches every event and span field (at every
//! level) for the suite's tokens, and every error, status, verdict and `stats()` seen is
//! checked through its `Display`, `Debug` and JSON forms. The capture is installed as the
//! global subscriber when none is set yet, and always for the suite's own future; events
//! from tasks a backend spawns are seen only through the global one.
//!
//! Not API-stable: it grows as the contract does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::executor::Executor;
use crate::ids::BuildId;

/// A factory of executors whose launcher exits 0 **without** the launch handshake (a
/// stand-in for upstream's launcher given native mode's flags), for
/// [`silent_launcher_is_never_success`].
pub type SilentFactory = Arc<dyn Fn() -> BoxFuture<'static, Arc<dyn Executor>> + Send + Sync>;

/// How a backend runs a launcher that exits 0 without the launch handshake.
#[derive(Clone)]
pub struct SilentLauncher {
    /// Executors (of the backend under test) whose builds end that way.
    pub executor: SilentFactory,
    /// The `apiUri` of the build, when the misbehaviour is picked by it (the Docker test
    /// launcher's `/exit/0`); `None`: [`ConformanceConfig::api_uri`].
    pub api_uri: Option<String>,
    /// The failure reason the backend must report; `None`: any failure (a relay such as
    /// Gearman's, whose wire result has no reason).
    pub reason: Option<crate::FailureReason>,
}

impl std::fmt::Debug for SilentLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SilentLauncher")
            .field("api_uri", &self.api_uri)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

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
    /// Optional: executors whose launcher exits 0 without the launch handshake; without
    /// it [`silent_launcher_is_never_success`] is skipped (loudly).
    pub silent_launcher: Option<SilentLauncher>,
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
            silent_launcher: None,
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
            .field("silent_launcher", &self.silent_launcher)
            .finish()
    }
}

/// Offsets of each check's build ids from [`ConformanceConfig::first_build_id`].
pub(crate) mod ids {
    pub const START_STATUS_STOP: u64 = 0;
    pub const STOP_TWICE: u64 = 1;
    pub const NEVER_STARTED: u64 = 2;
    pub const UNKNOWN: u64 = 3;
    pub const ALREADY_EXISTS: u64 = 4;
    pub const INVALID: u64 = 5;
    pub const TIMED_OUT: u64 = 6;
    pub const LOST: u64 = 7;
    pub const LEAK: u64 = 8;
    pub const CLEANUP: u64 = 9;
    pub const SILENT: u64 = 10;
    pub const CONCURRENT: u64 = 100;
}

/// Fails the suite naming the broken rule.
macro_rules! broken {
    ($rule:expr, $($arg:tt)*) => {
        panic!("conformance: rule `{}` broken: {}", $rule, format!($($arg)*))
    };
}

mod harness;
mod rules;

pub(crate) use harness::capture;
pub use rules::*;

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
    cleanup_keeps_live_builds(factory().await, &cfg).await;
    silent_launcher_is_never_success(&cfg).await;
}
