//! [`DockerExecutorBuilder`]: config + injections, validated once in `build()`.

use std::sync::Arc;

use bollard::Docker;
use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::{
    Ecosystem, Error, ErrorKind, ImageRef, LaunchMode, Owner, ResourceRequest, ResourceTable,
    TimeoutPolicy,
};

use crate::client::{Connect, Engine, Policies};
use executor_base::options::{ConfigBuilder, Configurable, Problems};

use crate::config::{DockerConfig, PullPolicy, TokenMode};
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
    problems: Problems,
    client: Option<Docker>,
    fault: Option<crate::FaultHook>,
    owner: Option<Owner>,
}

impl std::fmt::Debug for DockerExecutorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutorBuilder")
            .field("config", &self.config)
            .field("problems", &self.problems)
            .field("client", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// `EXECUTOR_DOCKER_<KEY>` for a camelCase key.
pub fn env_var_name(key: &str) -> String {
    DockerConfig::options().env_var(key)
}

/// `with_option`, `with_vars`, `with_section`, `from_env` and `layered`, from
/// [`DockerConfig`]'s declared options.
impl ConfigBuilder for DockerExecutorBuilder {
    type Config = DockerConfig;
    fn option_parts(&mut self) -> (&mut DockerConfig, &mut Problems) {
        (&mut self.config, &mut self.problems)
    }
}

impl Default for DockerExecutorBuilder {
    fn default() -> Self {
        Self {
            config: DockerConfig::default(),
            problems: Problems::default(),
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

    /// The config so far.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Defaults overridden by the environment: `EXECUTOR_DOCKER_<KEY>` for every key (see
    /// the README's table or `sdx options docker`) and, when neither
    /// `EXECUTOR_DOCKER_HOST` nor `EXECUTOR_DOCKER_SOCKET_PATH` is set, Docker's own
    /// `DOCKER_HOST`. Bad values and unknown `EXECUTOR_DOCKER_*` variables are reported by
    /// [`Self::build`].
    pub fn from_env() -> Self {
        <Self as ConfigBuilder>::from_env()
    }

    /// Replaces the whole config.
    pub fn with_config(mut self, config: DockerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets one option by key (`pullPolicy`, `retry.maxRetries`, ...); a bad key or value
    /// is reported by [`Self::build`].
    pub fn with_option(self, key: &str, value: &str) -> Self {
        <Self as ConfigBuilder>::with_option(self, key, value)
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
        let mut problems: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
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
            None => Connect::Endpoint,
        };
        let policies = Policies {
            retry: c.retry.clone(),
            breaker: c.breaker.clone(),
            pull_timeout: c.pull_timeout(),
            start_timeout: c.start_timeout(),
        };
        let engine = Engine::new(c.endpoint(), connect, policies);
        let c_slots = c.max_concurrent_starts;
        Ok(DockerExecutor {
            launcher: launcher.expect("checked"),
            preflight: Arc::new(executor_base::PreflightCache::new(c.preflight.cache_ttl)),
            cfg: Arc::new(c),
            engine,
            builds: Arc::new(Builds::default()),
            fault: self.fault,
            owner: self.owner,
            start_slots: (c_slots > 0).then(|| Arc::new(tokio::sync::Semaphore::new(c_slots))),
        })
    }
}

/// Builds from key/value pairs (`("pullPolicy", "never")`); bad pairs are reported by
/// [`DockerExecutorBuilder::build`].
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for DockerExecutorBuilder {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self::new().with_options(pairs)
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
    if c.start_timeout_secs == 0 {
        bad("startTimeoutSecs", "must be positive");
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
        let vars = [
            ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
            ("EXECUTOR_DOCKER_PULL_POLICY", "never"),
            ("EXECUTOR_DOCKER_LAUNCHER_VERSION", "v6"),
            ("EXECUTOR_DOCKER_NETWORK", "host"),
        ];
        let e = DockerExecutorBuilder::new()
            .with_vars(vars)
            .build()
            .await
            .unwrap();
        assert_eq!(e.endpoint(), "tcp://127.0.0.1:2375");
        assert_eq!(e.config().pull_policy, PullPolicy::Never);
        assert_eq!(e.config().launcher_reference(), "localhost/sdx-launcher:v6");
        assert_eq!(e.config().network.as_deref(), Some("host"));

        let vars = [
            ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
            ("EXECUTOR_DOCKER_SOCKET_PATH", "/tmp/d.sock"),
        ];
        let e = DockerExecutorBuilder::new()
            .with_vars(vars)
            .build()
            .await
            .unwrap();
        assert_eq!(e.endpoint(), "unix:///tmp/d.sock");
        assert_eq!(env_var_name("socketPath"), "EXECUTOR_DOCKER_SOCKET_PATH");
    }

    #[tokio::test]
    async fn options_from_file_env_and_flags_in_precedence_order() {
        let file = serde_json::json!({
            "prefix": "file-", "pullPolicy": "always", "socketPath": "/from/file.sock",
            "retry": {"maxRetries": 1}, "timeout": {"maxMinutes": 60},
        });
        let vars = [
            ("EXECUTOR_DOCKER_PULL_POLICY", "never"),
            ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
        ];
        let flags = [("prefix".to_string(), "flag-".to_string())];
        let e = DockerExecutorBuilder::new()
            .layered(Some(&file), vars, &flags)
            .build()
            .await
            .unwrap();
        let c = e.config();
        assert_eq!(c.prefix, "flag-", "flag over file");
        assert_eq!(c.pull_policy, PullPolicy::Never, "env over file");
        assert_eq!(
            e.endpoint(),
            "tcp://127.0.0.1:2375",
            "DOCKER_HOST over the file"
        );
        assert_eq!((c.retry.max_retries, c.timeout.max_minutes), (1, 60));

        let m = build_err(
            DockerExecutorBuilder::new()
                .with_section(&serde_json::json!({"pullPolicy": ["x"], "prefx": "a"})),
        )
        .await;
        assert!(
            m.contains("pullPolicy: expected one of missing|always|never, got an array"),
            "{m}"
        );
        assert!(
            m.contains("prefx: unknown option of docker; did you mean `prefix`?"),
            "{m}"
        );
        let m = build_err(
            DockerExecutorBuilder::new().with_vars([("EXECUTOR_DOCKER_PULL_TIMEOUT_SECS", "soon")]),
        )
        .await;
        assert!(
            m.starts_with("pullTimeoutSecs: must be an integer")
                && m.ends_with("(from EXECUTOR_DOCKER_PULL_TIMEOUT_SECS)"),
            "{m}"
        );
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
                .starts_with("colour: unknown option of docker")
        );
    }
}
