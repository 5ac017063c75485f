//! [`DockerExecutorBuilder`]: config + injections, validated once in `build()`.

use std::sync::Arc;

use bollard::Docker;
use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::{
    Ecosystem, Error, ErrorKind, ImageRef, LaunchMode, Owner, ResourceRequest, ResourceTable,
    TimeoutPolicy,
};

use crate::client::{Connect, Engine, Policies};
use crate::config::{DockerConfig, KEYS, PullPolicy, TokenMode};
use crate::executor::DockerExecutor;
use crate::state::Builds;

/// Builds a [`DockerExecutor`].
///
/// ```
/// use executor_docker::{DockerExecutorBuilder, PullPolicy};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let exec = DockerExecutorBuilder::new()
///     .with_socket_path("/var/run/docker.sock")
///     .with_launcher_image("screwdrivercd/launcher", "v6.0.0")
///     .with_pull_policy(PullPolicy::Never)
///     .with_prefix("ci-")
///     .build()
///     .await
///     .unwrap(); // no daemon needed yet: it is contacted on first use
/// assert_eq!(exec.endpoint(), "unix:///var/run/docker.sock");
///
/// let err = DockerExecutorBuilder::new().with_option("mountPoint", "relative/path").build().await.unwrap_err();
/// assert_eq!(err.kind(), executor_base::ErrorKind::ConfigInvalid);
/// assert!(err.message().starts_with("mountPoint: "));
/// # });
/// ```
pub struct DockerExecutorBuilder {
    config: DockerConfig,
    errors: Vec<String>,
    client: Option<Docker>,
    fault: Option<crate::FaultHook>,
    owner: Option<Owner>,
}

impl std::fmt::Debug for DockerExecutorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutorBuilder")
            .field("config", &self.config)
            .field("errors", &self.errors)
            .field("client", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// `EXECUTOR_DOCKER_<KEY>` for a camelCase key.
pub fn env_var_name(key: &str) -> String {
    executor_base::options::env_var_name(crate::SCHEME, key)
}

impl Default for DockerExecutorBuilder {
    fn default() -> Self {
        Self {
            config: DockerConfig::default(),
            errors: Vec::new(),
            client: None,
            fault: None,
            owner: Owner::current(),
        }
    }
}

impl DockerExecutorBuilder {
    /// Defaults; the resources it creates belong to this process ([`Owner::current`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults overridden by `EXECUTOR_DOCKER_<KEY>` variables (`EXECUTOR_DOCKER_PULL_POLICY`,
    /// `EXECUTOR_DOCKER_SOCKET_PATH`, ... one per key of [`crate::config::KEYS`]) and, when
    /// neither `EXECUTOR_DOCKER_HOST` nor `EXECUTOR_DOCKER_SOCKET_PATH` is set, Docker's own
    /// `DOCKER_HOST`. Bad values are reported by [`Self::build`].
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut b = Self::new();
        let explicit_endpoint = ["host", "socketPath"]
            .iter()
            .any(|k| get(&env_var_name(k)).is_some_and(|v| !v.trim().is_empty()));
        if !explicit_endpoint && let Some(h) = get("DOCKER_HOST").filter(|v| !v.trim().is_empty()) {
            b = b.with_option("host", &h);
        }
        for key in KEYS {
            if let Some(v) = get(&env_var_name(key)) {
                b = b.with_option(key, &v);
            }
        }
        b
    }

    /// Replaces the whole config.
    pub fn with_config(mut self, config: DockerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets one option by key; a bad key or value is reported by [`Self::build`].
    pub fn with_option(mut self, key: &str, value: &str) -> Self {
        if let Err(reason) = self.config.set(key, value) {
            self.errors.push(format!("{key}: {reason}"));
        }
        self
    }

    /// The Docker endpoint (`unix:///…`, `tcp://host:port`, `http://host:port`).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.config.host = Some(host.into());
        self.config.socket_path = None;
        self
    }

    /// The Docker socket path.
    pub fn with_socket_path(mut self, path: impl Into<String>) -> Self {
        self.config.socket_path = Some(path.into());
        self.config.host = None;
        self
    }

    /// The launcher (job-tools) image and tag.
    pub fn with_launcher_image(
        mut self,
        image: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.config.launcher_image = image.into();
        self.config.launcher_version = version.into();
        self
    }

    /// Where job-tools are mounted (default `/opt/sd`).
    pub fn with_mount_point(mut self, path: impl Into<String>) -> Self {
        self.config.mount_point = path.into();
        self
    }

    /// When images are pulled.
    pub fn with_pull_policy(mut self, policy: PullPolicy) -> Self {
        self.config.pull_policy = policy;
        self
    }

    /// The launch contract.
    pub fn with_launch_mode(mut self, mode: LaunchMode) -> Self {
        self.config.launch_mode = mode;
        self
    }

    /// How the native launcher gets the token.
    pub fn with_token_mode(mut self, mode: TokenMode) -> Self {
        self.config.token_mode = mode;
        self
    }

    /// The CPU/RAM tier table.
    pub fn with_resources(mut self, table: ResourceTable) -> Self {
        self.config.resources = table;
        self
    }

    /// CPU and RAM requests for builds without `screwdriver.cd/cpu` / `ram` annotations.
    pub fn with_default_resources(
        mut self,
        cpu: Option<ResourceRequest>,
        ram: Option<ResourceRequest>,
    ) -> Self {
        self.config.default_cpu = cpu;
        self.config.default_ram = ram;
        self
    }

    /// Name and label prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// Network mode of build containers (`none`, `host`, a network name).
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.config.network = Some(network.into());
        self
    }

    /// Build timeout default and cap.
    pub fn with_timeout(mut self, timeout: TimeoutPolicy) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Store and UI URLs passed to builds.
    pub fn with_ecosystem(mut self, ecosystem: Ecosystem) -> Self {
        self.config.ecosystem = ecosystem;
        self
    }

    /// Retry policy of Docker API calls.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Circuit breaker and per-call timeout of Docker API calls.
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// Who the resources belong to (default: this process). A server that adopts its
    /// builds after a restart passes its [`Owner::Instance`], so the garbage collector
    /// does not take a restart for the end of its builds; see [`executor_base::owner`].
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Uses this bollard client instead of connecting to the configured endpoint (its
    /// API version is still negotiated on first use).
    pub fn with_client(mut self, client: Docker) -> Self {
        self.client = Some(client);
        self
    }

    /// Calls `hook` at each [`crate::StartStep`] of `start`; an `Err` fails the start
    /// there (fault injection for tests of the rollback).
    #[cfg(feature = "test-support")]
    pub fn with_fault_hook(mut self, hook: crate::FaultHook) -> Self {
        self.fault = Some(hook);
        self
    }

    /// Validates the options and builds the executor. Does not contact the daemon.
    pub async fn build(self) -> Result<DockerExecutor, Error> {
        let mut problems = self.errors;
        let c = self.config;
        validate(&c, &mut problems);
        let launcher = match ImageRef::parse(&c.launcher_reference()) {
            Ok(r) => Some(r),
            Err(reason) => {
                problems.push(format!("launcherImage: {reason}"));
                None
            }
        };
        if !problems.is_empty() {
            return Err(Error::new(ErrorKind::ConfigInvalid, problems.join("; "))
                .with_executor(crate::SCHEME)
                .with_operation("build"));
        }
        let connect = match self.client {
            Some(d) => Connect::Given(d),
            None => Connect::Endpoint {
                timeout_secs: c
                    .pull_timeout_secs
                    .max(c.breaker.call_timeout.as_secs())
                    .max(1),
            },
        };
        let policies = Policies {
            retry: c.retry.clone(),
            breaker: c.breaker.clone(),
            retry_budget: c.retry_budget(),
            pull_timeout: c.pull_timeout(),
        };
        let engine = Engine::new(c.endpoint(), connect, policies);
        Ok(DockerExecutor {
            launcher: launcher.expect("checked"),
            cfg: Arc::new(c),
            engine,
            builds: Arc::new(Builds::default()),
            fault: self.fault,
            owner: self.owner,
        })
    }
}

/// Builds from key/value pairs (`--opt key=value`), as [`DockerConfig::set`] reads them;
/// bad pairs are reported by [`DockerExecutorBuilder::build`].
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for DockerExecutorBuilder {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        pairs.into_iter().fold(Self::new(), |b, (k, v)| {
            b.with_option(k.as_ref(), v.as_ref())
        })
    }
}

fn validate(c: &DockerConfig, problems: &mut Vec<String>) {
    let mut bad = |key: &str, reason: &str| problems.push(format!("{key}: {reason}"));
    if c.host.is_some() && c.socket_path.is_some() {
        bad("socketPath", "conflicts with host; set one of them");
    }
    if let Some(h) = &c.host
        && !["unix:///", "tcp://", "http://"]
            .iter()
            .any(|p| h.starts_with(p))
    {
        bad(
            "host",
            "must be unix:///path, tcp://host:port or http://host:port",
        );
    }
    if let Some(p) = &c.socket_path
        && !p.starts_with('/')
    {
        bad("socketPath", "must be an absolute path");
    }
    for (key, path) in [("mountPoint", &c.mount_point), ("tokenDir", &c.token_dir)] {
        if !path.starts_with('/') || path.trim_end_matches('/').is_empty() {
            bad(key, "must be an absolute path other than /");
        } else if path
            .chars()
            .any(|ch| ch == ':' || ch == ',' || ch.is_whitespace())
        {
            bad(key, "must not contain ':', ',' or white space");
        }
    }
    if c.mount_point.trim_end_matches('/') == c.token_dir.trim_end_matches('/') {
        bad("tokenDir", "must differ from mountPoint");
    }
    let prefix_ok = c.prefix.len() <= 64
        && c.prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
        && c.prefix
            .chars()
            .next()
            .is_none_or(|ch| ch.is_ascii_alphanumeric());
    if !prefix_ok {
        bad(
            "prefix",
            "must be at most 64 of letters, digits, '_', '.', '-', starting with a letter or digit",
        );
    }
    if let Some(n) = &c.network
        && (n.is_empty() || n.chars().any(char::is_whitespace))
    {
        bad(
            "network",
            "must be a network mode or name without white space",
        );
    }
    for (key, t) in [
        ("resources.cpu", &c.resources.cpu),
        ("resources.ram", &c.resources.ram),
    ] {
        for (tier, v) in [
            ("micro", t.micro),
            ("low", t.low),
            ("high", t.high),
            ("turbo", t.turbo),
            ("max", t.max),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bad(&format!("{key}.{tier}"), "must be a positive number");
            }
        }
    }
    // Docker refuses memory limits below 6 MiB.
    let min_gib = 6.0 / 1024.0;
    let r = &c.resources.ram;
    for (tier, v) in [
        ("micro", r.micro),
        ("low", r.low),
        ("high", r.high),
        ("turbo", r.turbo),
        ("max", r.max),
    ] {
        if v.is_finite() && v > 0.0 && v < min_gib {
            bad(
                &format!("resources.ram.{tier}"),
                "must be at least 6 MiB (Docker's minimum)",
            );
        }
    }
    if c.timeout.default_minutes == 0 || c.timeout.max_minutes == 0 {
        bad("timeout", "default and max minutes must be positive");
    }
    if c.pull_timeout_secs == 0 {
        bad("pullTimeoutSecs", "must be positive");
    }
    if c.launcher_image.trim().is_empty() {
        bad("launcherImage", "must not be empty");
    }
    if c.launcher_version.trim().is_empty() {
        bad("launcherVersion", "must not be empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn build_err(b: DockerExecutorBuilder) -> String {
        let e = b.build().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        e.message().to_string()
    }

    #[tokio::test]
    async fn validation_names_each_bad_key() {
        let m = build_err(
            DockerExecutorBuilder::new()
                .with_prefix("-bad prefix")
                .with_mount_point("/")
                .with_launcher_image("Upper/Case", "x")
                .with_option("pullPolicy", "sometimes"),
        )
        .await;
        for key in [
            "prefix: ",
            "mountPoint: ",
            "launcherImage: ",
            "pullPolicy: ",
        ] {
            assert!(m.contains(key), "{key} missing in {m}");
        }
        let m = build_err(DockerExecutorBuilder::new().with_host("ssh://x")).await;
        assert!(m.starts_with("host: "), "{m}");
        let mut c = DockerConfig::default();
        c.resources.ram.micro = 0.001;
        assert!(
            build_err(DockerExecutorBuilder::new().with_config(c))
                .await
                .contains("resources.ram.micro")
        );
    }

    #[tokio::test]
    async fn env_overrides_and_docker_host() {
        let vars = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://127.0.0.1:2375".to_string()),
            "EXECUTOR_DOCKER_PULL_POLICY" => Some("never".to_string()),
            "EXECUTOR_DOCKER_LAUNCHER_VERSION" => Some("v6".to_string()),
            "EXECUTOR_DOCKER_NETWORK" => Some("host".to_string()),
            _ => None,
        };
        let e = DockerExecutorBuilder::from_vars(vars)
            .build()
            .await
            .unwrap();
        assert_eq!(e.endpoint(), "tcp://127.0.0.1:2375");
        assert_eq!(e.config().pull_policy, PullPolicy::Never);
        assert_eq!(e.config().launcher_reference(), "localhost/sdx-launcher:v6");
        assert_eq!(e.config().network.as_deref(), Some("host"));

        let vars = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://127.0.0.1:2375".to_string()),
            "EXECUTOR_DOCKER_SOCKET_PATH" => Some("/tmp/d.sock".to_string()),
            _ => None,
        };
        let e = DockerExecutorBuilder::from_vars(vars)
            .build()
            .await
            .unwrap();
        assert_eq!(e.endpoint(), "unix:///tmp/d.sock");
        assert_eq!(env_var_name("socketPath"), "EXECUTOR_DOCKER_SOCKET_PATH");
    }

    #[tokio::test]
    async fn from_iter_reads_cli_pairs() {
        let e = DockerExecutorBuilder::from_iter([("prefix", "ci-"), ("tokenMode", "env")])
            .build()
            .await
            .unwrap();
        assert_eq!(e.config().prefix, "ci-");
        assert_eq!(e.config().token_mode, TokenMode::Env);
        assert!(
            build_err(DockerExecutorBuilder::from_iter([("colour", "blue")]))
                .await
                .starts_with("colour: unknown option")
        );
    }
}
