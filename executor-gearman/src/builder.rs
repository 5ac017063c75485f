//! [`GearmanExecutorBuilder`]: config + environment + typed setters -> executor.

use std::time::Duration;

use executor_base::Error;
use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::options::{ConfigBuilder, Problems};

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
    problems: Problems,
}

/// `with_option`, `with_vars`, `with_section`, `from_env` and `layered`, from
/// [`GearmanConfig`]'s declared options.
impl ConfigBuilder for GearmanExecutorBuilder {
    type Config = GearmanConfig;
    fn option_parts(&mut self) -> (&mut GearmanConfig, &mut Problems) {
        (&mut self.config, &mut self.problems)
    }
}

impl GearmanExecutorBuilder {
    /// Defaults ([`GearmanConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults overridden by `EXECUTOR_GEARMAN_<KEY>` variables, one per key of the
    /// README's table or `sdx options gearman` (`EXECUTOR_GEARMAN_SERVER`,
    /// `EXECUTOR_GEARMAN_CHECK_WORKERS`, `EXECUTOR_GEARMAN_LIVENESS_INTERVAL_MS`, ...). Bad
    /// values and unknown `EXECUTOR_GEARMAN_*` variables (other than the launcher worker's
    /// `EXECUTOR_GEARMAN_WORKER_*`) are reported by [`Self::build`].
    pub fn from_env() -> Self {
        <Self as ConfigBuilder>::from_env()
    }

    /// Sets one option by key (`checkWorkers`, `retry.maxRetries`, ...); a bad key or
    /// value is reported by [`Self::build`].
    pub fn with_option(self, key: &str, value: &str) -> Self {
        <Self as ConfigBuilder>::with_option(self, key, value)
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
        self.problems.check(crate::SCHEME)?;
        self.config.validate()?;
        Ok(GearmanExecutor::new(self.config))
    }
}

/// Builds from key/value pairs (`("checkWorkers", "false")`); bad pairs are reported by
/// [`GearmanExecutorBuilder::build`].
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for GearmanExecutorBuilder {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self::new().with_options(pairs)
    }
}
