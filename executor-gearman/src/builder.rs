//! [`GearmanExecutorBuilder`]: config + environment + typed setters -> executor.

use std::time::Duration;

use executor_base::Error;
use executor_base::engine::{BreakerConfig, RetryPolicy};

use crate::config::GearmanConfig;
use crate::executor::GearmanExecutor;

/// Builds a [`GearmanExecutor`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use executor_gearman::GearmanExecutorBuilder;
/// let e = GearmanExecutorBuilder::new().with_server("127.0.0.1:4730").with_job("unit").build().await.unwrap();
/// assert_eq!(executor_base::Executor::name(&e), "gearman");
/// let bad = GearmanExecutorBuilder::new().with_job("a:b").build().await.unwrap_err();
/// assert!(bad.to_string().contains("job: must not contain ':'"));
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct GearmanExecutorBuilder {
    config: GearmanConfig,
}

impl GearmanExecutorBuilder {
    /// Defaults ([`GearmanConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults overridden by `EXECUTOR_GEARMAN_SERVER`, `EXECUTOR_GEARMAN_JOB`,
    /// `EXECUTOR_GEARMAN_NODE`, `EXECUTOR_GEARMAN_PIPELINE`,
    /// `EXECUTOR_GEARMAN_QUEUE_TIMEOUT_SECS` and `EXECUTOR_GEARMAN_STOP_TIMEOUT_SECS`
    /// (an unparsable number becomes 0, which `build` refuses naming the key).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(format!("EXECUTOR_GEARMAN_{k}")).ok();
        let mut c = GearmanConfig::default();
        if let Some(v) = var("SERVER") {
            c.server = v;
        }
        if let Some(v) = var("JOB") {
            c.job = v;
        }
        c.node = var("NODE").or(c.node);
        if let Some(v) = var("PIPELINE") {
            c.pipeline = v;
        }
        if let Some(v) = var("QUEUE_TIMEOUT_SECS") {
            c.queue_timeout_secs = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = var("STOP_TIMEOUT_SECS") {
            c.stop_timeout_secs = v.trim().parse().unwrap_or(0);
        }
        Self { config: c }
    }

    /// Replaces the whole config.
    pub fn with_config(mut self, c: GearmanConfig) -> Self {
        self.config = c;
        self
    }

    /// gearmand's `host:port`.
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.config.server = server.into();
        self
    }

    /// The default Zuul job (`build:<job>`).
    pub fn with_job(mut self, job: impl Into<String>) -> Self {
        self.config.job = job.into();
        self
    }

    /// The default node (`build:<job>:<node>`).
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.config.node = Some(node.into());
        self
    }

    /// Whether to refuse starts when no worker registered the function.
    pub fn with_check_workers(mut self, check: bool) -> Self {
        self.config.check_workers = check;
        self
    }

    /// How long a build may wait for a launcher.
    pub fn with_queue_timeout(mut self, t: Duration) -> Self {
        self.config.queue_timeout_secs = t.as_secs().max(1);
        self
    }

    /// How often running builds are checked for a dead launcher.
    pub fn with_liveness_interval(mut self, t: Duration) -> Self {
        self.config.liveness_interval_ms = (t.as_millis() as u64).max(1);
        self
    }

    /// How long `stop` waits for the launcher's confirmation.
    pub fn with_stop_timeout(mut self, t: Duration) -> Self {
        self.config.stop_timeout_secs = t.as_secs().max(1);
        self
    }

    /// Retries of gearmand calls.
    pub fn with_retry(mut self, r: RetryPolicy) -> Self {
        self.config.retry = r;
        self
    }

    /// Circuit breaker of gearmand calls.
    pub fn with_breaker(mut self, b: BreakerConfig) -> Self {
        self.config.breaker = b;
        self
    }

    /// Validates the config and builds the executor. Connects lazily: gearmand need
    /// not be up yet.
    pub async fn build(self) -> Result<GearmanExecutor, Error> {
        self.config.validate()?;
        Ok(GearmanExecutor::new(self.config))
    }
}
