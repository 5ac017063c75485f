//! [`GearmanConfig`]: how the Gearman executor reaches gearmand and names its jobs.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::options::{Configurable, Options};
use executor_base::{Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::codec::DEFAULT_MAX_PACKET_SIZE;
use crate::launcher::config::check_name;

/// The annotation naming the Zuul job of a build (`build:<job>`).
pub const JOB_ANNOTATION: &str = "gearmanJob";
/// The annotation naming the node of a build (`build:<job>:<node>`).
pub const NODE_ANNOTATION: &str = "gearmanNode";

/// The Gearman executor's options. Every field has a default; see each field.
///
/// ```
/// use executor_gearman::GearmanConfig;
/// let c: GearmanConfig = serde_json::from_value(serde_json::json!({"job": "unit", "queueTimeoutSecs": 60})).unwrap();
/// assert_eq!(c.server, "127.0.0.1:4730");
/// assert_eq!(c.function("unit", None), "build:unit");
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GearmanConfig {
    /// gearmand's `host:port` (default `127.0.0.1:4730`).
    pub server: String,
    /// The Zuul job builds are submitted to (`build:<job>`) unless the build's
    /// `screwdriver.cd/gearmanJob` annotation names another (default `screwdriver`).
    pub job: String,
    /// When set, builds go to `build:<job>:<node>`; the annotation
    /// `screwdriver.cd/gearmanNode` overrides it.
    pub node: Option<String>,
    /// `ZUUL_PIPELINE` sent with every build (default `screwdriver`).
    pub pipeline: String,
    /// `ZUUL_PROJECT` for builds whose start config names no repository (default
    /// `screwdriver`).
    pub project: String,
    /// `ZUUL_URL` sent with every build, if set.
    pub zuul_url: Option<String>,
    /// Before submitting, ask gearmand (admin `status`) whether any worker registered
    /// the build's function, and refuse the start when none did (default true).
    pub check_workers: bool,
    /// How long an admin `status` answer is reused for that check, in milliseconds
    /// (default 1000). An answer without workers is always re-read before a start is
    /// refused.
    pub worker_check_ttl_ms: u64,
    /// How long a build may wait in gearmand's queue for a launcher before it is failed
    /// (`Failed(unschedulable)`) and withdrawn, in seconds (default 900).
    pub queue_timeout_secs: u64,
    /// How often a running build's job is checked with `GET_STATUS`, which detects a
    /// launcher that died mid-build, in milliseconds (default 2000).
    pub liveness_interval_ms: u64,
    /// How long `stop` waits for the launcher to confirm, in seconds (default 30).
    pub stop_timeout_secs: u64,
    /// Bound on each TCP connect, in milliseconds (default 5000).
    pub connect_timeout_ms: u64,
    /// Bound on each request's answer, in milliseconds (default 10000).
    pub request_timeout_ms: u64,
    /// Largest Gearman packet body accepted or sent (default 16 MiB).
    pub max_packet_size: usize,
    /// How long finished builds stay queryable by `status`, in seconds (default 3600).
    pub retain_finished_secs: u64,
    /// Retries of gearmand calls.
    pub retry: RetryPolicy,
    /// Circuit breaker of gearmand calls.
    pub breaker: BreakerConfig,
    /// Pre-flight cache and check timeout (`preflight.cacheMs`, `preflight.timeoutMs`).
    pub preflight: executor_base::PreflightOptions,
}

impl Default for GearmanConfig {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:4730".into(),
            job: "screwdriver".into(),
            node: None,
            pipeline: "screwdriver".into(),
            project: "screwdriver".into(),
            zuul_url: None,
            check_workers: true,
            worker_check_ttl_ms: 1000,
            queue_timeout_secs: 900,
            liveness_interval_ms: 2000,
            stop_timeout_secs: 30,
            connect_timeout_ms: 5000,
            request_timeout_ms: 10_000,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            retain_finished_secs: 3600,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            preflight: executor_base::PreflightOptions::default(),
        }
    }
}

impl fmt::Debug for GearmanConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No secrets here, but spelled out so one added later is not printed by accident.
        f.debug_struct("GearmanConfig")
            .field("server", &self.server)
            .field("job", &self.job)
            .field("node", &self.node)
            .field("pipeline", &self.pipeline)
            .field("check_workers", &self.check_workers)
            .field("worker_check_ttl_ms", &self.worker_check_ttl_ms)
            .field("queue_timeout_secs", &self.queue_timeout_secs)
            .field("liveness_interval_ms", &self.liveness_interval_ms)
            .field("stop_timeout_secs", &self.stop_timeout_secs)
            .finish_non_exhaustive()
    }
}

impl GearmanConfig {
    /// The Gearman function for a job and node.
    pub fn function(&self, job: &str, node: Option<&str>) -> String {
        match node {
            Some(n) => format!("build:{job}:{n}"),
            None => format!("build:{job}"),
        }
    }

    /// Checks every field; [`ErrorKind::ConfigInvalid`] naming the bad key.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, why: &str| {
            Error::new(ErrorKind::ConfigInvalid, format!("{key}: {why}")).with_context("key", key)
        };
        if self.server.trim().is_empty() || !self.server.contains(':') {
            return Err(bad("server", "must be host:port"));
        }
        check_name(&self.job).map_err(|w| bad("job", &w))?;
        if let Some(n) = &self.node {
            check_name(n).map_err(|w| bad("node", &w))?;
        }
        for (key, v) in [("pipeline", &self.pipeline), ("project", &self.project)] {
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                return Err(bad(key, "must be a non-empty string"));
            }
        }
        if let Some(u) = &self.zuul_url
            && url::Url::parse(u).is_err()
        {
            return Err(bad("zuulUrl", "must be a URL"));
        }
        for (key, v) in [
            ("queueTimeoutSecs", self.queue_timeout_secs),
            ("livenessIntervalMs", self.liveness_interval_ms),
            ("stopTimeoutSecs", self.stop_timeout_secs),
            ("connectTimeoutMs", self.connect_timeout_ms),
            ("requestTimeoutMs", self.request_timeout_ms),
        ] {
            if v == 0 {
                return Err(bad(key, "must be positive"));
            }
        }
        if self.max_packet_size < 1024 {
            return Err(bad("maxPacketSize", "must be at least 1024 bytes"));
        }
        Ok(())
    }

    pub(crate) fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout_secs)
    }

    pub(crate) fn liveness_interval(&self) -> Duration {
        Duration::from_millis(self.liveness_interval_ms)
    }

    pub(crate) fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout_secs)
    }

    pub(crate) fn client_options(&self) -> crate::client::ClientOptions {
        crate::client::ClientOptions {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_packet_size: self.max_packet_size,
            exceptions: true,
        }
    }
}

/// The Gearman executor's options, declared once: `with_option`, `EXECUTOR_GEARMAN_<KEY>`,
/// `[gearman]` file sections, `--opt gearman.<key>=<value>` and the README table all come
/// from this list.
impl Configurable for GearmanConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<GearmanConfig>> = LazyLock::new(declare);
        &OPTIONS
    }
}

fn declare() -> Options<GearmanConfig> {
    Options::<GearmanConfig>::new(crate::SCHEME)
        .foreign_env_prefix("EXECUTOR_GEARMAN_WORKER_")
        .field("server", "gearmand's `host:port`.", |c| &mut c.server)
        .field(
            "job",
            "The Zuul job builds are submitted to (`build:<job>`) unless the build's `screwdriver.cd/gearmanJob` names another.",
            |c| &mut c.job,
        )
        .field(
            "node",
            "When set, builds go to `build:<job>:<node>` (the annotation `screwdriver.cd/gearmanNode` overrides it).",
            |c| &mut c.node,
        )
        .field("pipeline", "`ZUUL_PIPELINE` sent with every build.", |c| {
            &mut c.pipeline
        })
        .field(
            "project",
            "`ZUUL_PROJECT` for builds whose start config names no repository.",
            |c| &mut c.project,
        )
        .field("zuulUrl", "`ZUUL_URL` sent with every build, if set.", |c| {
            &mut c.zuul_url
        })
        .field(
            "checkWorkers",
            "Refuse a start when no worker registered the build's function (admin `status`).",
            |c| &mut c.check_workers,
        )
        .field(
            "workerCheckTtlMs",
            "How long an admin `status` answer is reused for that check, ms.",
            |c| &mut c.worker_check_ttl_ms,
        )
        .field(
            "queueTimeoutSecs",
            "How long a build may wait in gearmand's queue for a launcher before it fails (`unschedulable`).",
            |c| &mut c.queue_timeout_secs,
        )
        .field(
            "livenessIntervalMs",
            "How often a running build's job is checked with `GET_STATUS` (detects a dead launcher), ms.",
            |c| &mut c.liveness_interval_ms,
        )
        .field(
            "stopTimeoutSecs",
            "How long `stop` waits for the launcher to confirm, seconds.",
            |c| &mut c.stop_timeout_secs,
        )
        .field("connectTimeoutMs", "Bound on each TCP connect, ms.", |c| {
            &mut c.connect_timeout_ms
        })
        .field(
            "requestTimeoutMs",
            "Bound on each request's answer, ms.",
            |c| &mut c.request_timeout_ms,
        )
        .field(
            "maxPacketSize",
            "Largest Gearman packet body accepted or sent, bytes.",
            |c| &mut c.max_packet_size,
        )
        .field(
            "retainFinishedSecs",
            "How long finished builds stay queryable by `status`, seconds.",
            |c| &mut c.retain_finished_secs,
        )
        .retry(|c| &mut c.retry)
        .breaker(|c| &mut c.breaker)
        .preflight(|c| &mut c.preflight)
}
