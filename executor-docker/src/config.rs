//! [`DockerConfig`]: the executor's options as serde data, and their declaration for the
//! shared option system (`with_option`, `EXECUTOR_DOCKER_*`, `[docker]` file sections,
//! `--opt docker.<key>=<value>`).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, DEFAULT_RETRY_BUDGET, RetryPolicy};
use executor_base::launch::DEFAULT_MOUNT_POINT;
use executor_base::options::{Configurable, Kind, OptionValue, Options};
use executor_base::{Ecosystem, LaunchMode, ResourceRequest, ResourceTable, TimeoutPolicy};
use serde::{Deserialize, Serialize};

/// The default Docker socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The default launcher (job-tools) image repository: the sdx launcher image that
/// `sdx launcher-image build` makes (upstream's `screwdrivercd/launcher` in Screwdriver
/// launch mode, see [`DockerConfig::launcher_reference`]).
pub const DEFAULT_LAUNCHER_IMAGE: &str = executor_base::launch_protocol::SDX_LAUNCHER_IMAGE;
/// The default launcher image tag: the sdx version.
pub const DEFAULT_LAUNCHER_VERSION: &str = executor_base::launch_protocol::SDX_LAUNCHER_TAG;
/// Where the per-build token volume is mounted in the build container.
pub const DEFAULT_TOKEN_DIR: &str = "/run/sd";

/// Default of [`DockerConfig::max_concurrent_starts`]: enough to keep a daemon busy,
/// few enough that each of its answers comes within the per-call timeout (300 builds
/// submitted at once to three instances on a 2-core host: starts timed out at 10 s
/// without a limit).
pub const DEFAULT_MAX_CONCURRENT_STARTS: usize = 8;

/// Default of [`DockerConfig::start_timeout_secs`]: kubelet's bound on every
/// container-runtime call (`--runtime-request-timeout`, 2 min). The limit on concurrent
/// starts keeps the daemon's answers short on its own host, not on a daemon other
/// executors load too (three instances sharing a 2-core daemon: a start answered in
/// more than 10 s failed its build before this bound existed).
pub const DEFAULT_START_TIMEOUT_SECS: u64 = 120;

/// When images are pulled before a build starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull only when the image is not present locally (default).
    #[default]
    Missing,
    /// Pull on every start, as upstream executor-docker does.
    Always,
    /// Never pull: a missing image fails the build with an image-pull failure.
    Never,
}

impl PullPolicy {
    /// Parses `missing`, `always` or `never` (case-insensitive; `ifnotpresent` is `missing`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "missing" | "ifnotpresent" | "if-not-present" => Some(Self::Missing),
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

/// How the native launcher receives the build token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// Fed to the build container's stdin through an attach made before its start, read by
    /// the launcher as `--token-file /dev/stdin` (default). The token is never in the
    /// container's config (`docker inspect`), never on disk, and costs no extra container
    /// or volume; the write happens after the start, off the critical path.
    #[default]
    Stdin,
    /// A file on a per-build volume (`<name>-token`), written through the launcher
    /// container's archive API and passed as `--token-file`. Not in `docker inspect`
    /// either, but the token rests on the daemon's disk for the build's life and the write
    /// (Docker re-executes itself to unpack the archive) delays the start by ~30 ms.
    File,
    /// The `SD_TOKEN` environment variable. **Visible in `docker inspect`**; only for
    /// launchers that cannot read a token file.
    Env,
}

impl TokenMode {
    /// Parses `stdin`, `file` or `env`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stdin" => Some(Self::Stdin),
            "file" => Some(Self::File),
            "env" => Some(Self::Env),
            _ => None,
        }
    }
}

/// Options of the Docker executor. Every field has a default; see
/// [`crate::DockerExecutorBuilder`] for validation and environment overrides.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DockerConfig {
    /// Docker endpoint in `DOCKER_HOST` form: `unix:///path`, `tcp://host:port` or
    /// `http://host:port`. Default: the socket path below.
    pub host: Option<String>,
    /// Path of the Docker socket (a shortcut for `host = unix://<path>`); default
    /// `/var/run/docker.sock`. Conflicts with `host`.
    pub socket_path: Option<String>,
    /// The launcher (job-tools) image repository.
    pub launcher_image: String,
    /// The launcher image tag.
    pub launcher_version: String,
    /// Where job-tools live in the launcher image and are mounted (read-only) in the build
    /// container.
    pub mount_point: String,
    /// Where the per-build token volume is mounted (read-only) in the build container
    /// (token mode `file`).
    pub token_dir: String,
    /// When images are pulled.
    pub pull_policy: PullPolicy,
    /// The native launch contract or upstream's `launcher_entrypoint.sh` + `run.sh`
    /// (which passes the token as an argument, visible in `docker inspect`).
    pub launch_mode: LaunchMode,
    /// How the native launcher gets the token.
    pub token_mode: TokenMode,
    /// CPU (cores) and RAM (GiB) per tier.
    pub resources: ResourceTable,
    /// CPU request used when a build has no `screwdriver.cd/cpu` annotation (default `LOW`).
    pub default_cpu: Option<ResourceRequest>,
    /// RAM request used when a build has no `screwdriver.cd/ram` annotation (default `LOW`).
    pub default_ram: Option<ResourceRequest>,
    /// Prepended to container/volume names and the `sdbuild` label value.
    pub prefix: String,
    /// Docker network mode of build containers (`none`, `host`, a network name);
    /// default: the daemon's default.
    pub network: Option<String>,
    /// Build timeout default and cap (minutes).
    pub timeout: TimeoutPolicy,
    /// Minutes added to the build timeout for the expiry label the GC honours.
    pub expiry_grace_minutes: u32,
    /// Store and UI URLs passed to every build (a build's own `storeUri`/`uiUri` win).
    pub ecosystem: Ecosystem,
    /// Retry policy of Docker API calls (its budget, `retry.budgetMs`, is what makes a
    /// call on a daemon that is down answer `Unavailable` within seconds).
    pub retry: RetryPolicy,
    /// Circuit breaker and per-call timeout of Docker API calls (except pulls).
    pub breaker: BreakerConfig,
    /// Bound on one image pull, seconds.
    pub pull_timeout_secs: u64,
    /// Bound on each call that sets up and starts a build's containers (create, attach,
    /// upload, start), seconds (default 120, kubelet's bound on container-runtime calls).
    /// The daemon does real work for these (a container's writable layer, its runtime
    /// task); a loaded daemon answers them long after the per-call timeout that suits
    /// reads (`breaker.callTimeoutMs`).
    pub start_timeout_secs: u64,
    /// Builds of this executor creating and starting their containers at once (after
    /// their images are there); the others wait their turn (`0`: no limit). A daemon
    /// asked to start a hundred containers at once answers each one late, past the
    /// per-call timeout, and the starts fail.
    pub max_concurrent_starts: usize,
    /// Pre-flight cache and check timeout (`preflight.cacheMs`, `preflight.timeoutMs`).
    pub preflight: executor_base::PreflightOptions,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            socket_path: None,
            launcher_image: DEFAULT_LAUNCHER_IMAGE.to_string(),
            launcher_version: DEFAULT_LAUNCHER_VERSION.to_string(),
            mount_point: DEFAULT_MOUNT_POINT.to_string(),
            token_dir: DEFAULT_TOKEN_DIR.to_string(),
            pull_policy: PullPolicy::default(),
            launch_mode: LaunchMode::default(),
            token_mode: TokenMode::default(),
            resources: ResourceTable::default(),
            default_cpu: None,
            default_ram: None,
            prefix: String::new(),
            network: None,
            timeout: TimeoutPolicy::default(),
            expiry_grace_minutes: executor_base::TOKEN_BUFFER_MINUTES,
            ecosystem: Ecosystem::default(),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            pull_timeout_secs: 600,
            start_timeout_secs: DEFAULT_START_TIMEOUT_SECS,
            max_concurrent_starts: DEFAULT_MAX_CONCURRENT_STARTS,
            preflight: executor_base::PreflightOptions::default(),
        }
    }
}

impl fmt::Debug for DockerConfig {
    // Hand-written so a future secret field cannot leak by accident; nothing here is secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("endpoint", &self.endpoint())
            .field("launcher", &self.launcher_reference())
            .field("mount_point", &self.mount_point)
            .field("token_dir", &self.token_dir)
            .field("pull_policy", &self.pull_policy)
            .field("launch_mode", &self.launch_mode)
            .field("token_mode", &self.token_mode)
            .field("resources", &self.resources)
            .field("default_cpu", &self.default_cpu)
            .field("default_ram", &self.default_ram)
            .field("prefix", &self.prefix)
            .field("network", &self.network)
            .field("timeout", &self.timeout)
            .field("expiry_grace_minutes", &self.expiry_grace_minutes)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl DockerConfig {
    /// The endpoint this config connects to, in `DOCKER_HOST` form.
    pub fn endpoint(&self) -> String {
        match (&self.host, &self.socket_path) {
            (Some(h), _) => h.clone(),
            (None, Some(p)) => format!("unix://{p}"),
            (None, None) => format!("unix://{DEFAULT_SOCKET}"),
        }
    }

    /// `<launcherImage>:<launcherVersion>`; left at their defaults in Screwdriver launch
    /// mode, upstream's `screwdrivercd/launcher:stable`.
    pub fn launcher_reference(&self) -> String {
        executor_base::launch_protocol::launcher_for_mode(
            &format!("{}:{}", self.launcher_image, self.launcher_version),
            self.launch_mode,
        )
    }

    /// The bound on one pull.
    pub fn pull_timeout(&self) -> Duration {
        Duration::from_secs(self.pull_timeout_secs.max(1))
    }

    /// The bound on one call that sets up or starts a container.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.start_timeout_secs.max(1))
    }
}

impl OptionValue for PullPolicy {
    fn kind() -> Kind {
        Kind::OneOf(&["missing", "always", "never"])
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        Self::parse(raw).ok_or_else(|| {
            format!("unknown pull policy {raw:?}, expected missing, always or never")
        })
    }
    fn show_option(&self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

impl OptionValue for TokenMode {
    fn kind() -> Kind {
        Kind::OneOf(&["stdin", "file", "env"])
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        Self::parse(raw)
            .ok_or_else(|| format!("unknown token mode {raw:?}, expected stdin, file or env"))
    }
    fn show_option(&self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

/// The Docker executor's options, declared once: `with_option`, `EXECUTOR_DOCKER_<KEY>`
/// (and `DOCKER_HOST`), `[docker]` file sections, `--opt docker.<key>=<value>` and the
/// README table all come from this list.
impl Configurable for DockerConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<DockerConfig>> = LazyLock::new(|| {
            Options::<DockerConfig>::new(crate::SCHEME)
                .field(
                    "host",
                    "Docker endpoint: `unix:///path`, `tcp://host:port` or `http://host:port`; default `unix:///var/run/docker.sock`.",
                    |c| &mut c.host,
                )
                .conflicts_with("socketPath")
                .fallback("DOCKER_HOST", "host", "Docker's own variable, when no `EXECUTOR_DOCKER_HOST`/`SOCKET_PATH` is set.")
                .field(
                    "socketPath",
                    "Path of the Docker socket (shortcut for `host = unix://<path>`).",
                    |c| &mut c.socket_path,
                )
                .field(
                    "launcherImage",
                    "The launcher (job-tools) image repository; the default is the image `sdx launcher-image build` makes (left at the defaults in `screwdriver` launch mode: upstream's `screwdrivercd/launcher:stable`).",
                    |c| &mut c.launcher_image,
                )
                .field("launcherVersion", "The launcher image tag; default: the sdx version.", |c| {
                    &mut c.launcher_version
                })
                .field(
                    "mountPoint",
                    "Where job-tools are mounted (read-only) in the build container.",
                    |c| &mut c.mount_point,
                )
                .field(
                    "tokenDir",
                    "Where the per-build token volume is mounted (token mode `file`).",
                    |c| &mut c.token_dir,
                )
                .field("pullPolicy", "When images are pulled.", |c| {
                    &mut c.pull_policy
                })
                .field(
                    "launchMode",
                    "`native` launch, or upstream's `launcher_entrypoint.sh` + `run.sh` (token visible in `docker inspect`).",
                    |c| &mut c.launch_mode,
                )
                .field(
                    "tokenMode",
                    "How the native launcher gets the token: `stdin` (attached stdin), `file` (a per-build volume), `env` (`SD_TOKEN`, visible in `docker inspect`).",
                    |c| &mut c.token_mode,
                )
                .resources(|c| &mut c.resources)
                .field(
                    "defaultCpu",
                    "CPU tier or cores of builds without `screwdriver.cd/cpu` (empty: `LOW`).",
                    |c| &mut c.default_cpu,
                )
                .field(
                    "defaultRam",
                    "RAM tier or GiB of builds without `screwdriver.cd/ram` (empty: `LOW`).",
                    |c| &mut c.default_ram,
                )
                .field(
                    "prefix",
                    "Prepended to container and volume names and the `sdbuild` label value.",
                    |c| &mut c.prefix,
                )
                .field(
                    "network",
                    "Network mode of build containers: `none` (also `NetworkDisabled`: no libnetwork sandbox), `host`, a network name; empty: the daemon's default.",
                    |c| &mut c.network,
                )
                .field(
                    "expiryGraceMinutes",
                    "Minutes added to the build timeout for the expiry label gc honours.",
                    |c| &mut c.expiry_grace_minutes,
                )
                .field("pullTimeoutSecs", "Bound on one image pull, seconds.", |c| {
                    &mut c.pull_timeout_secs
                })
                .field(
                    "startTimeoutSecs",
                    "Bound on each call that sets up and starts a build's containers (create, attach, upload, start), seconds: the calls a loaded daemon answers late (default 120, as kubelet's `--runtime-request-timeout`).",
                    |c| &mut c.start_timeout_secs,
                )
                .field(
                    "maxConcurrentStarts",
                    "Builds creating and starting their containers at once (after their images are there); others wait (`0`: no limit).",
                    |c| &mut c.max_concurrent_starts,
                )
                .custom(
                    "retryBudgetSecs",
                    "Deprecated spelling of `retry.budgetMs` in seconds (`0`: no budget).",
                    Kind::Integer,
                    |c, raw| {
                        let secs = u64::parse_option(raw)?;
                        c.retry.budget = (secs > 0).then(|| Duration::from_secs(secs));
                        Ok(())
                    },
                    |c| c.retry.budget.map_or(0, |d| d.as_secs()).to_string(),
                    |c| c.retry.budget = Some(DEFAULT_RETRY_BUDGET),
                )
                .timeout(|c| &mut c.timeout)
                .ecosystem(|c| &mut c.ecosystem)
                .retry(|c| &mut c.retry)
                .breaker(|c| &mut c.breaker)
                .preflight(|c| &mut c.preflight)
        });
        &OPTIONS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_upstream() {
        let mut c = DockerConfig::default();
        assert_eq!(
            c.launcher_reference(),
            format!("localhost/sdx-launcher:{}", env!("CARGO_PKG_VERSION"))
        );
        let o = DockerConfig::options();
        o.set(&mut c, "launchMode", "screwdriver").unwrap();
        assert_eq!(c.launcher_reference(), "screwdrivercd/launcher:stable");
        o.set(&mut c, "launcherVersion", "v6").unwrap();
        assert_eq!(c.launcher_reference(), "localhost/sdx-launcher:v6");
        assert_eq!(c.endpoint(), "unix:///var/run/docker.sock");
        assert_eq!(c.mount_point, "/opt/sd");
        assert_eq!(c.pull_policy, PullPolicy::Missing);
        assert_eq!(c.token_mode, TokenMode::Stdin);
    }

    #[test]
    fn options_parse_and_name_problems() {
        let o = DockerConfig::options();
        let mut c = DockerConfig::default();
        o.set(&mut c, "pullPolicy", "Always").unwrap();
        o.set(&mut c, "defaultRam", "high").unwrap();
        o.set(&mut c, "defaultCpu", "3").unwrap();
        o.set(&mut c, "host", "tcp://127.0.0.1:2375").unwrap();
        o.set(&mut c, "socketPath", "/tmp/d.sock").unwrap();
        assert_eq!(c.pull_policy, PullPolicy::Always);
        assert_eq!(
            c.default_ram,
            Some(ResourceRequest::Tier(executor_base::Tier::High))
        );
        assert_eq!(c.default_cpu, Some(ResourceRequest::Amount(3)));
        assert_eq!(c.endpoint(), "unix:///tmp/d.sock", "socketPath reset host");
        assert!(
            o.set(&mut c, "pullPolicy", "sometimes")
                .unwrap_err()
                .contains("sometimes")
        );
        assert!(
            o.set(&mut c, "pulPolicy", "x")
                .unwrap_err()
                .contains("did you mean `pullPolicy`")
        );
        assert!(o.set(&mut c, "uiUri", "ftp://x").is_err());
        o.set(&mut c, "timeoutDefaultMinutes", "7").unwrap();
        assert_eq!(c.timeout.default_minutes, 7, "old spelling still accepted");

        assert_eq!(c.retry.budget, Some(Duration::from_secs(5)), "5 s");
        o.set(&mut c, "retry.budgetMs", "2500").unwrap();
        assert_eq!(c.retry.budget, Some(Duration::from_millis(2500)));
        o.set(&mut c, "retryBudgetSecs", "7").unwrap();
        assert_eq!(c.retry.budget, Some(Duration::from_secs(7)), "old spelling");
        o.set(&mut c, "retry.budgetMs", "0").unwrap();
        assert_eq!(c.retry.budget, None, "0: no budget");
    }

    #[test]
    fn readme_table_matches_the_declarations() {
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        DockerConfig::options()
            .check_readme_file(&readme)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            DockerConfig::options().undeclared_fields(),
            Vec::<String>::new(),
            "fields of DockerConfig no option key declares"
        );
    }

    #[test]
    fn a_config_overriding_one_ram_tier_keeps_the_ram_defaults_of_the_others() {
        let c: DockerConfig =
            serde_json::from_value(serde_json::json!({"resources": {"ram": {"turbo": 24}}}))
                .unwrap();
        let gib = |t| c.resources.memory_bytes(Some(ResourceRequest::Tier(t))) >> 30;
        use executor_base::Tier::*;
        assert_eq!(
            [gib(Micro), gib(Low), gib(High), gib(Turbo), gib(Max)],
            [1, 2, 12, 24, 16]
        );
        assert_eq!(c.resources.cpu, executor_base::TierTable::CPU_DEFAULT);
    }

    #[test]
    fn serde_round_trip_is_camel_case() {
        let c: DockerConfig = serde_json::from_value(
            serde_json::json!({"pullPolicy": "never", "tokenMode": "env", "prefix": "ci-"}),
        )
        .unwrap();
        assert_eq!(c.pull_policy, PullPolicy::Never);
        assert_eq!(c.token_mode, TokenMode::Env);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["launcherImage"], "localhost/sdx-launcher");
        assert_eq!(v["prefix"], "ci-");
    }
}
