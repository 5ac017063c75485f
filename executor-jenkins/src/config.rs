//! The Jenkins executor's options: serde data with defaults, a `Debug` without the token,
//! and their declaration for the shared option system (`with_option`,
//! `EXECUTOR_JENKINS_*` and `JENKINS_*`, `[jenkins]` file sections,
//! `--opt jenkins.<key>=<value>`).

use std::fmt;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::launch::DEFAULT_MOUNT_POINT;
use executor_base::options::{Configurable, Kind, OptionValue, Options};
use executor_base::{Ecosystem, LaunchMode, ResourceTable, TimeoutPolicy};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The default launcher (job-tools) image: the sdx launcher image (`sdx launcher-image
/// build`, pushed where the Jenkins nodes pull from); upstream's
/// `screwdrivercd/launcher:stable` in Screwdriver launch mode.
pub const DEFAULT_LAUNCHER_IMAGE: &str = executor_base::launch_protocol::SDX_LAUNCHER_REFERENCE;
/// The default job name prefix: upstream's `SD-<buildId>`.
pub const DEFAULT_JOB_PREFIX: &str = "SD-";
/// The default Jenkins user (upstream's).
pub const DEFAULT_USERNAME: &str = "screwdriver";
/// The default node label (upstream's).
pub const DEFAULT_NODE_LABEL: &str = "screwdriver";

/// When the job's script pulls the launcher and build images before creating containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// `docker pull` both images on every build, so moving tags (`:stable`, `:latest`)
    /// are fresh: upstream's behaviour (its job runs `docker-compose pull`).
    #[default]
    Always,
    /// Pull only images the node does not have (`docker create`'s own behaviour).
    Missing,
    /// Never pull: the build fails when an image is not on the node.
    Never,
}

impl PullPolicy {
    /// Parses `always`, `missing` (also `ifnotpresent`) or `never`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Some(Self::Always),
            "missing" | "ifnotpresent" | "if-not-present" => Some(Self::Missing),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

impl OptionValue for PullPolicy {
    fn kind() -> Kind {
        Kind::OneOf(&["always", "missing", "never"])
    }
    fn parse_option(raw: &str) -> Result<Self, String> {
        Self::parse(raw).ok_or_else(|| {
            format!("unknown pull policy {raw:?}, expected always, missing or never")
        })
    }
    fn show_option(&self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

/// Options of the Jenkins executor. Every field but `url` and `apiToken` has a default;
/// [`crate::JenkinsExecutorBuilder::build`] validates them.
///
/// ```
/// use executor_jenkins::JenkinsConfig;
/// let c: JenkinsConfig = serde_json::from_value(serde_json::json!({
///     "url": "http://127.0.0.1:8080", "apiToken": "s3cret", "pathPrefix": "/jenkins"
/// })).unwrap();
/// assert_eq!(c.username, "screwdriver");
/// assert!(!format!("{c:?}").contains("s3cret"));
/// assert!(!serde_json::to_string(&c).unwrap().contains("s3cret"));
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JenkinsConfig {
    /// Jenkins' base URL (`http://jenkins.example:8080`); credentials in the URL are refused.
    pub url: String,
    /// A path Jenkins is served under (`/jenkins`), appended to `url`'s path.
    pub path_prefix: String,
    /// The Jenkins user the API token belongs to.
    pub username: String,
    /// The user's API token (or password); sent with HTTP basic auth, never logged,
    /// never serialised.
    #[serde(skip_serializing, alias = "password")]
    pub api_token: Option<SecretString>,
    /// The bound on one HTTP request, milliseconds.
    pub request_timeout_ms: u64,
    /// Job names are `<jobPrefix><buildId>`; letters, digits, `-`, `_`, `.`, starting with
    /// a letter or digit (they also name the build's Docker containers).
    pub job_prefix: String,
    /// The Jenkins folder (CloudBees Folders plugin) jobs are created in, as a path of
    /// segments separated by `/` (`ci/screwdriver`); empty: Jenkins' root. The folder must
    /// exist: sdx never creates folders.
    pub folder: String,
    /// The Jenkins node label builds run on; a build's `screwdriver.cd/nodeLabel`
    /// annotation makes it `<nodeLabel>-<annotation>` (upstream).
    pub node_label: String,
    /// The launcher (job-tools) image whose volume is mounted into the build container.
    pub launcher_image: String,
    /// Where job-tools are mounted in the build container.
    pub mount_point: String,
    /// The native launch contract (token as a file) or upstream's
    /// `launcher_entrypoint.sh` + `run.sh` (token in the container's arguments).
    pub launch_mode: LaunchMode,
    /// The Docker CLI the job runs on the Jenkins node.
    pub docker_command: String,
    /// Docker network of build containers (`--network`); default: Docker's.
    pub docker_network: Option<String>,
    /// When the job pulls the launcher and build images (`always`, upstream's default;
    /// `missing`; `never`).
    pub pull_policy: PullPolicy,
    /// A `config.xml` template replacing the built-in one.
    pub template_path: Option<PathBuf>,
    /// Refuse to build the executor when Jenkins lacks the build-timeout plugin (or the
    /// template has no timeout wrapper). Default `false`: the executor then enforces each
    /// job's timeout itself when it reads the build (see
    /// [`crate::JenkinsExecutor::timeout_backstop`]).
    pub require_timeout_plugin: bool,
    /// Build timeout default and cap (minutes).
    pub timeout: TimeoutPolicy,
    /// Minutes the job's own timeout (the engine-side backstop) adds to the build timeout,
    /// so the launcher's own timeout handling runs first.
    pub job_timeout_margin_minutes: u32,
    /// Minutes after the build timeout at which gc may delete the job.
    pub expiry_grace_minutes: u32,
    /// Store and UI URLs passed to every build (a build's own `storeUri`/`uiUri` win).
    pub ecosystem: Ecosystem,
    /// CPU (cores) and RAM (GiB) per tier, applied as `docker --cpus/--memory`.
    pub resources: ResourceTable,
    /// Retry policy of idempotent Jenkins calls.
    pub retry: RetryPolicy,
    /// Circuit breaker and per-call bound of Jenkins calls.
    pub breaker: BreakerConfig,
    /// Pre-flight cache and check timeout (`preflight.cacheMs`, `preflight.timeoutMs`).
    pub preflight: executor_base::PreflightOptions,
}

impl Default for JenkinsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            path_prefix: String::new(),
            username: DEFAULT_USERNAME.to_string(),
            api_token: None,
            request_timeout_ms: 10_000,
            job_prefix: DEFAULT_JOB_PREFIX.to_string(),
            folder: String::new(),
            node_label: DEFAULT_NODE_LABEL.to_string(),
            launcher_image: DEFAULT_LAUNCHER_IMAGE.to_string(),
            mount_point: DEFAULT_MOUNT_POINT.to_string(),
            launch_mode: LaunchMode::default(),
            docker_command: "docker".to_string(),
            docker_network: None,
            pull_policy: PullPolicy::default(),
            template_path: None,
            require_timeout_plugin: false,
            timeout: TimeoutPolicy::default(),
            job_timeout_margin_minutes: 5,
            expiry_grace_minutes: executor_base::TOKEN_BUFFER_MINUTES,
            ecosystem: Ecosystem::default(),
            resources: ResourceTable::default(),
            retry: RetryPolicy::default(),
            // One call may be a crumb fetch, the request and a resend after a crumb refresh.
            breaker: BreakerConfig {
                call_timeout: Duration::from_secs(30),
                ..BreakerConfig::default()
            },
            preflight: executor_base::PreflightOptions::default(),
        }
    }
}

impl fmt::Debug for JenkinsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JenkinsConfig")
            .field("url", &self.url)
            .field("path_prefix", &self.path_prefix)
            .field("username", &self.username)
            .field("api_token", &self.api_token.as_ref().map(|_| "[REDACTED]"))
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("job_prefix", &self.job_prefix)
            .field("folder", &self.folder)
            .field("node_label", &self.node_label)
            .field("launcher_image", &self.launcher_image)
            .field("mount_point", &self.mount_point)
            .field("launch_mode", &self.launch_mode)
            .field("docker_command", &self.docker_command)
            .field("docker_network", &self.docker_network)
            .field("pull_policy", &self.pull_policy)
            .field("template_path", &self.template_path)
            .field("require_timeout_plugin", &self.require_timeout_plugin)
            .field("timeout", &self.timeout)
            .field(
                "job_timeout_margin_minutes",
                &self.job_timeout_margin_minutes,
            )
            .field("expiry_grace_minutes", &self.expiry_grace_minutes)
            .field("ecosystem", &self.ecosystem)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl JenkinsConfig {
    /// The per-request bound.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// The Jenkins executor's options, declared once: `with_option`, `EXECUTOR_JENKINS_<KEY>`
/// (and `JENKINS_URL`, `JENKINS_USER_ID`, `JENKINS_API_TOKEN`), `[jenkins]` file sections,
/// `--opt jenkins.<key>=<value>` and the README table all come from this list.
impl Configurable for JenkinsConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<JenkinsConfig>> = LazyLock::new(declare);
        &OPTIONS
    }
}

fn declare() -> Options<JenkinsConfig> {
    Options::<JenkinsConfig>::new(crate::SCHEME)
        .field(
            "url",
            "Jenkins' base URL (`http://jenkins.example:8080`); required, no credentials in it.",
            |c| &mut c.url,
        )
        .fallback("JENKINS_URL", "url", "the Jenkins CLI's variable.")
        .field(
            "pathPrefix",
            "A path Jenkins is served under (`/jenkins`), appended to `url`'s path.",
            |c| &mut c.path_prefix,
        )
        .field(
            "username",
            "The Jenkins user the API token belongs to.",
            |c| &mut c.username,
        )
        .fallback("JENKINS_USER_ID", "username", "the Jenkins CLI's variable.")
        .field(
            "apiToken",
            "The user's API token (or password): HTTP basic auth only; required; never logged, serialised or in `Debug`.",
            |c| &mut c.api_token,
        )
        .alias("password")
        .secret()
        .fallback("JENKINS_API_TOKEN", "apiToken", "the Jenkins CLI's variable.")
        .field(
            "requestTimeoutMs",
            "Bound on one HTTP request, ms.",
            |c| &mut c.request_timeout_ms,
        )
        .field(
            "jobPrefix",
            "Job names are `<jobPrefix><buildId>`: `[A-Za-z0-9][A-Za-z0-9_.-]*` (it also names the build's containers).",
            |c| &mut c.job_prefix,
        )
        .field(
            "folder",
            "Jenkins folder the jobs live in, segments separated by `/` (`ci/screwdriver`); empty: the root. Must already exist: sdx never creates folders.",
            |c| &mut c.folder,
        )
        .field(
            "nodeLabel",
            "Node label builds run on; a build's `screwdriver.cd/nodeLabel` makes it `<nodeLabel>-<annotation>`.",
            |c| &mut c.node_label,
        )
        .field(
            "launcherImage",
            "The launcher (job-tools) image mounted into the build container: the sdx launcher image (`sdx launcher-image build --tag … --push`, where the nodes pull from); `screwdrivercd/launcher:stable` in `screwdriver` launch mode.",
            |c| &mut c.launcher_image,
        )
        .field(
            "mountPoint",
            "Where job-tools are mounted in the build container.",
            |c| &mut c.mount_point,
        )
        .field(
            "launchMode",
            "`native` (token file) or `screwdriver` (`launcher_entrypoint.sh` + `run.sh`; the token reaches the container as `SD_TOKEN` and a `run.sh` argument, as upstream needs).",
            |c| &mut c.launch_mode,
        )
        .field(
            "dockerCommand",
            "The Docker CLI the job runs on the Jenkins node.",
            |c| &mut c.docker_command,
        )
        .field(
            "dockerNetwork",
            "Docker network of build containers (`--network`); empty: Docker's default.",
            |c| &mut c.docker_network,
        )
        .field(
            "pullPolicy",
            "When the job pulls the launcher and build images: `always` (upstream's; moving tags stay fresh), `missing` or `never`.",
            |c| &mut c.pull_policy,
        )
        .field(
            "templatePath",
            "A `config.xml` template replacing the built-in one.",
            |c| &mut c.template_path,
        )
        .field(
            "requireTimeoutPlugin",
            "Refuse to build the executor when Jenkins lacks the build-timeout plugin (or the template has no timeout wrapper); `false`: the executor enforces each job's timeout itself.",
            |c| &mut c.require_timeout_plugin,
        )
        .field(
            "jobTimeoutMarginMinutes",
            "Minutes the job's own timeout (the engine-side backstop) adds to the build timeout.",
            |c| &mut c.job_timeout_margin_minutes,
        )
        .field(
            "expiryGraceMinutes",
            "Minutes after the build timeout at which gc may delete the job.",
            |c| &mut c.expiry_grace_minutes,
        )
        .resources(|c| &mut c.resources)
        .timeout(|c| &mut c.timeout)
        .ecosystem(|c| &mut c.ecosystem)
        .retry(|c| &mut c.retry)
        .breaker(|c| &mut c.breaker)
        .preflight(|c| &mut c.preflight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_upstream() {
        let c = JenkinsConfig::default();
        assert_eq!(c.username, "screwdriver");
        assert_eq!(c.node_label, "screwdriver");
        assert_eq!(c.job_prefix, "SD-");
        assert_eq!(c.timeout, TimeoutPolicy::default());
        assert_eq!(c.request_timeout(), Duration::from_secs(10));
        assert_eq!(c.launch_mode, LaunchMode::Native);
        assert_eq!(
            c.pull_policy,
            PullPolicy::Always,
            "upstream pulls on every build"
        );
        assert!(!c.require_timeout_plugin);
    }

    #[test]
    fn every_key_parses_a_sample_value() {
        let o = JenkinsConfig::options();
        let mut c = JenkinsConfig::default();
        for key in o.keys() {
            let value = match key.name() {
                "url" | "storeUri" | "uiUri" => "http://127.0.0.1:1",
                "launchMode" => "native",
                "pullPolicy" => "never",
                "requireTimeoutPlugin" => "true",
                "resources" => r#"{"cpu": {"low": 1}}"#,
                "retry.multiplier" => "1.5",
                "retry.jitter" => "false",
                k if k.ends_with("Ms") || k.ends_with("Minutes") || k.ends_with("Failures") => "7",
                "retry.maxRetries" => "7",
                _ => "x",
            };
            o.set(&mut c, key.name(), value)
                .unwrap_or_else(|e| panic!("{}: {e}", key.name()));
        }
        assert_eq!(c.timeout.max_minutes, 7);
        assert_eq!(c.template_path, Some(PathBuf::from("x")));
        assert_eq!(c.pull_policy, PullPolicy::Never);
        assert!(c.require_timeout_plugin);
        assert!(o.set(&mut c, "pullPolicy", "sometimes").is_err());
        assert!(o.set(&mut c, "requireTimeoutPlugin", "maybe").is_err());
        assert!(o.set(&mut c, "storeUri", "ftp://x").is_err());
        assert!(
            o.set(&mut c, "launchMode", "k8s")
                .unwrap_err()
                .contains("native or screwdriver")
        );
    }

    #[test]
    fn readme_table_matches_the_declarations() {
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        JenkinsConfig::options()
            .check_readme_file(&readme)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            JenkinsConfig::options().undeclared_fields(),
            Vec::<String>::new(),
            "fields of JenkinsConfig no option key declares"
        );
    }

    #[test]
    fn token_is_redacted_and_not_serialised() {
        let mut c = JenkinsConfig::default();
        JenkinsConfig::options()
            .set(&mut c, "apiToken", "tok-123")
            .unwrap();
        assert!(!format!("{c:?}").contains("tok-123"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("tok-123") && !json.contains("apiToken"),
            "{json}"
        );
        let back: JenkinsConfig = serde_json::from_str(r#"{"password":"p"}"#).unwrap();
        assert!(back.api_token.is_some());
    }
}
