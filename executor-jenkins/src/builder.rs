//! [`JenkinsExecutorBuilder`]: options in, validated executor out.

use std::path::PathBuf;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, EngineCalls, RetryPolicy};
use executor_base::{
    Ecosystem, Error, ErrorKind, ImageRef, LaunchMode, ResourceTable, TimeoutPolicy,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::SCHEME;
use crate::client::Client;
use executor_base::options::{ConfigBuilder, Problems};

use crate::config::JenkinsConfig;
use crate::executor::JenkinsExecutor;
use crate::folder::Folder;
use crate::job::JobSettings;
use crate::template::{JobTemplate, check_xml_chars};

/// Builds a [`JenkinsExecutor`]: a [`JenkinsConfig`] plus injections (template, HTTP
/// client). Everything is validated in [`JenkinsExecutorBuilder::build`].
///
/// ```
/// use executor_jenkins::JenkinsExecutorBuilder;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let e = JenkinsExecutorBuilder::new()
///     .with_url("http://127.0.0.1:8080")
///     .with_path_prefix("/jenkins")
///     .with_credentials("screwdriver", "api-token")
///     .build()
///     .await
///     .unwrap();
/// assert_eq!(e.base_url().as_str(), "http://127.0.0.1:8080/jenkins/");
///
/// let err = JenkinsExecutorBuilder::new().with_url("ftp://x").build().await.unwrap_err();
/// assert!(err.to_string().contains("url: must be an http(s) URL"), "{err}");
/// assert!(err.to_string().contains("apiToken: is required"), "{err}");
/// # });
/// ```
#[derive(Debug, Default)]
pub struct JenkinsExecutorBuilder {
    config: JenkinsConfig,
    template: Option<JobTemplate>,
    http: Option<reqwest::Client>,
    problems: Problems,
}

/// `with_option`, `with_vars`, `with_section`, `from_env` and `layered`, from
/// [`JenkinsConfig`]'s declared options.
impl ConfigBuilder for JenkinsExecutorBuilder {
    type Config = JenkinsConfig;
    fn option_parts(&mut self) -> (&mut JenkinsConfig, &mut Problems) {
        (&mut self.config, &mut self.problems)
    }
}

impl JenkinsExecutorBuilder {
    /// Defaults (no URL or token yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults overridden by `EXECUTOR_JENKINS_<KEY>` variables (`EXECUTOR_JENKINS_URL`,
    /// `EXECUTOR_JENKINS_API_TOKEN`, `EXECUTOR_JENKINS_REQUEST_TIMEOUT_MS`, ... one per key
    /// of the README's table or `sdx options jenkins`) and, where those are unset, Jenkins'
    /// own `JENKINS_URL`, `JENKINS_USER_ID` and `JENKINS_API_TOKEN`. Bad values and unknown
    /// `EXECUTOR_JENKINS_*` variables are reported by `build()`.
    pub fn from_env() -> Self {
        <Self as ConfigBuilder>::from_env()
    }

    /// Sets one option by key; a bad key or value is reported by `build()`.
    pub fn with_option(self, key: &str, value: &str) -> Self {
        <Self as ConfigBuilder>::with_option(self, key, value)
    }

    /// Replaces the whole config.
    pub fn with_config(mut self, config: JenkinsConfig) -> Self {
        self.config = config;
        self
    }

    /// Jenkins' base URL.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }

    /// The path Jenkins is served under (`/jenkins`).
    pub fn with_path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.path_prefix = prefix.into();
        self
    }

    /// The user and their API token (basic auth).
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        api_token: impl Into<String>,
    ) -> Self {
        self.config.username = username.into();
        self.config.api_token = Some(SecretString::from(api_token.into()));
        self
    }

    /// The user's API token, already secret.
    pub fn with_api_token(mut self, api_token: SecretString) -> Self {
        self.config.api_token = Some(api_token);
        self
    }

    /// The bound on one HTTP request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout_ms = timeout.as_millis().min(u128::from(u64::MAX)) as u64;
        self
    }

    /// Job names are `<prefix><buildId>`.
    pub fn with_job_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.job_prefix = prefix.into();
        self
    }

    /// The Jenkins folder jobs are created in (`ci/screwdriver`; empty: the root). It must
    /// exist: sdx does not create folders.
    pub fn with_folder(mut self, folder: impl Into<String>) -> Self {
        self.config.folder = folder.into();
        self
    }

    /// The node label builds run on.
    pub fn with_node_label(mut self, label: impl Into<String>) -> Self {
        self.config.node_label = label.into();
        self
    }

    /// The launcher (job-tools) image.
    pub fn with_launcher_image(mut self, image: impl Into<String>) -> Self {
        self.config.launcher_image = image.into();
        self
    }

    /// Where job-tools are mounted in the build container.
    pub fn with_mount_point(mut self, path: impl Into<String>) -> Self {
        self.config.mount_point = path.into();
        self
    }

    /// Native or Screwdriver launch contract.
    pub fn with_launch_mode(mut self, mode: LaunchMode) -> Self {
        self.config.launch_mode = mode;
        self
    }

    /// The Docker CLI the job runs.
    pub fn with_docker_command(mut self, command: impl Into<String>) -> Self {
        self.config.docker_command = command.into();
        self
    }

    /// When the job pulls the launcher and build images (default: always, as upstream).
    pub fn with_pull_policy(mut self, policy: crate::PullPolicy) -> Self {
        self.config.pull_policy = policy;
        self
    }

    /// Refuse to build when Jenkins lacks the build-timeout plugin (default: the executor
    /// enforces job timeouts itself then).
    pub fn with_require_timeout_plugin(mut self, require: bool) -> Self {
        self.config.require_timeout_plugin = require;
        self
    }

    /// The Docker network of build containers.
    pub fn with_docker_network(mut self, network: impl Into<String>) -> Self {
        self.config.docker_network = Some(network.into());
        self
    }

    /// A `config.xml` template file replacing the built-in one.
    pub fn with_template_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.template_path = Some(path.into());
        self
    }

    /// A parsed template (wins over `templatePath`).
    pub fn with_template(mut self, template: JobTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// Build timeout default and cap.
    pub fn with_timeout_policy(mut self, policy: TimeoutPolicy) -> Self {
        self.config.timeout = policy;
        self
    }

    /// Store and UI URLs.
    pub fn with_ecosystem(mut self, ecosystem: Ecosystem) -> Self {
        self.config.ecosystem = ecosystem;
        self
    }

    /// CPU/RAM tier table.
    pub fn with_resources(mut self, resources: ResourceTable) -> Self {
        self.config.resources = resources;
        self
    }

    /// Retry policy of idempotent calls (and of the checked `buildWithParameters` retry).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Circuit breaker and per-call bound.
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// A preconfigured HTTP client (proxies, TLS roots). It should not follow redirects;
    /// the request timeout option is not applied to it. reqwest is built here without a
    /// crypto provider of its own: call [`executor_base::tls::install_default_provider`]
    /// (or install another rustls provider) before building the client.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Validates everything and builds the executor. It makes one request: Jenkins'
    /// plugin list, to learn whether the build-timeout plugin enforces each job's own
    /// timeout (see [`JenkinsExecutor::timeout_backstop`]); a Jenkins that cannot be
    /// asked does not fail the build (it is asked again at the first start), a missing
    /// plugin fails it only with [`JenkinsExecutorBuilder::with_require_timeout_plugin`].
    pub async fn build(self) -> Result<JenkinsExecutor, Error> {
        let Self {
            config: c,
            template,
            http,
            problems,
        } = self;
        let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let mut problem = |key: &str, reason: &str| problems.push(format!("{key}: {reason}"));

        let base = if c.url.trim().is_empty() {
            problem("url", "is required");
            None
        } else {
            match executor_base::config::parse_http_url(&c.url) {
                Ok(u) => match with_prefix(u, &c.path_prefix) {
                    Ok(u) => Some(u),
                    Err(r) => {
                        problem("pathPrefix", &r);
                        None
                    }
                },
                Err(r) => {
                    problem("url", &r);
                    None
                }
            }
        };
        if c.username.is_empty()
            || c.username.contains(':')
            || c.username.chars().any(char::is_control)
        {
            problem(
                "username",
                "must be a non-empty user name without ':' or control characters",
            );
        }
        match &c.api_token {
            None => problem("apiToken", "is required"),
            Some(t) if t.expose_secret().trim().is_empty() => {
                problem("apiToken", "must not be empty")
            }
            Some(t) if t.expose_secret().chars().any(char::is_control) => {
                problem("apiToken", "must not contain control characters")
            }
            Some(_) => {}
        }
        if c.request_timeout_ms == 0 {
            problem("requestTimeoutMs", "must be positive");
        }
        if let Err(r) = check_job_prefix(&c.job_prefix) {
            problem("jobPrefix", &r);
        }
        let folder = Folder::parse(&c.folder).unwrap_or_else(|r| {
            problem("folder", &r);
            Folder::default()
        });
        if c.node_label.trim().is_empty() || check_xml_chars("nodeLabel", &c.node_label).is_err() {
            problem(
                "nodeLabel",
                "must be a non-empty label without control characters",
            );
        }
        if let Err(r) = ImageRef::parse(&c.launcher_image) {
            problem("launcherImage", &r);
        }
        if !c.mount_point.starts_with('/') || c.mount_point.chars().any(char::is_control) {
            problem("mountPoint", "must be an absolute path");
        }
        if c.docker_command.trim().is_empty() || c.docker_command.chars().any(char::is_control) {
            problem(
                "dockerCommand",
                "must be a command without control characters",
            );
        }
        if c.docker_network.as_deref().is_some_and(|n| {
            n.is_empty() || n.chars().any(|ch| ch.is_control() || ch.is_whitespace())
        }) {
            problem(
                "dockerNetwork",
                "must be a network name without white space",
            );
        }
        if c.timeout.max_minutes == 0 {
            problem("timeoutMaxMinutes", "must be positive");
        }
        let template = match (template, &c.template_path) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => match JobTemplate::from_file(p) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(e.message().to_string());
                    None
                }
            },
            (None, None) => Some(JobTemplate::builtin()),
        };
        let http = match http {
            Some(h) => Some(h),
            None => match Client::http_client(c.request_timeout()) {
                Ok(h) => Some(h),
                Err(e) => {
                    problems.push(format!("http client: {e}"));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(Error::new(ErrorKind::ConfigInvalid, problems.join("; "))
                .with_executor(SCHEME)
                .with_operation("build"));
        }
        let (Some(base), Some(template), Some(http), Some(token)) =
            (base, template, http, c.api_token)
        else {
            unreachable!("every missing piece is reported as a problem above");
        };
        let calls = EngineCalls::new(SCHEME, c.retry, c.breaker).with_endpoint(base.as_str());
        let executor = JenkinsExecutor::new(
            Client::new(http, base, c.username, token).with_folder(folder),
            calls,
            JobSettings {
                job_prefix: c.job_prefix,
                node_label: c.node_label,
                launcher_image: executor_base::launch_protocol::launcher_for_mode(
                    &c.launcher_image,
                    c.launch_mode,
                ),
                mount_point: c.mount_point,
                launch_mode: c.launch_mode,
                docker_command: c.docker_command,
                docker_network: c.docker_network,
                pull_policy: c.pull_policy,
                timeout: c.timeout,
                job_timeout_margin_minutes: c.job_timeout_margin_minutes,
                expiry_grace_minutes: c.expiry_grace_minutes,
                ecosystem: c.ecosystem,
                resources: c.resources,
                template,
            },
            c.require_timeout_plugin,
            c.preflight,
        );
        executor
            .check_plugins()
            .await
            .map_err(|e| e.with_operation("build"))?;
        Ok(executor)
    }
}

/// Options from `key=value` pairs (the keys of the README's table); bad keys or values
/// are reported by `build()`.
///
/// ```
/// use executor_jenkins::JenkinsExecutorBuilder;
/// let b = JenkinsExecutorBuilder::from_iter([("url", "http://127.0.0.1:8080"), ("jobPrefix", "ci-")]);
/// assert!(format!("{b:?}").contains("ci-"));
/// ```
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for JenkinsExecutorBuilder {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self::new().with_options(pairs)
    }
}

/// The base URL with the path prefix, ending in `/`.
fn with_prefix(mut u: Url, prefix: &str) -> Result<Url, String> {
    if prefix.contains(['?', '#', '\\']) || prefix.split('/').any(|s| s == "..") {
        return Err("must be a plain path like /jenkins".into());
    }
    u.set_query(None);
    u.set_fragment(None);
    let path = format!(
        "{}/{}",
        u.path().trim_end_matches('/'),
        prefix.trim_matches('/')
    );
    let path = format!("{}/", path.trim_end_matches('/'));
    u.set_path(&path);
    Ok(u)
}

/// Job prefixes also name Docker containers: `[A-Za-z0-9][A-Za-z0-9_.-]*` (or empty).
fn check_job_prefix(p: &str) -> Result<(), String> {
    let ok_first = p.chars().next().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok_first
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && p.len() <= 64
    {
        Ok(())
    } else {
        Err(format!(
            "{p:?} must start with a letter or digit and hold only letters, digits, '_', '.', '-' (at most 64)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_job_prefixes() {
        let u = |s: &str, p: &str| with_prefix(Url::parse(s).unwrap(), p).unwrap().to_string();
        assert_eq!(u("http://h:8080", ""), "http://h:8080/");
        assert_eq!(u("http://h:8080/", "/jenkins"), "http://h:8080/jenkins/");
        assert_eq!(u("http://h/ci/", "jenkins/"), "http://h/ci/jenkins/");
        assert!(with_prefix(Url::parse("http://h").unwrap(), "/../x").is_err());
        assert!(check_job_prefix("SD-").is_ok());
        assert!(check_job_prefix("").is_ok());
        assert!(check_job_prefix("-x").is_err());
        assert!(check_job_prefix("a b").is_err());
    }

    #[tokio::test]
    async fn from_env_reads_our_and_jenkins_variables() {
        let vars = [
            ("JENKINS_URL", "http://127.0.0.1:8080/"),
            ("JENKINS_USER_ID", "ci"),
            ("EXECUTOR_JENKINS_USERNAME", "sd"),
            ("JENKINS_API_TOKEN", "tok-env"),
            ("EXECUTOR_JENKINS_JOB_PREFIX", "build-"),
            ("EXECUTOR_JENKINS_FOLDER", "ci/screwdriver"),
        ];
        let e = JenkinsExecutorBuilder::new()
            .with_vars(vars)
            .build()
            .await
            .unwrap();
        assert_eq!(e.base_url().as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            e.job_name(executor_base::BuildId::new(5).unwrap()),
            "build-5"
        );
        assert!(format!("{e:?}").contains("\"sd\""));
        assert_eq!(e.folder(), "ci/screwdriver");
        assert!(!format!("{e:?}").contains("tok-env"));
    }

    #[tokio::test]
    async fn file_env_and_flags_layer_in_precedence_order() {
        let file = serde_json::json!({
            "url": "http://127.0.0.1:1/", "apiToken": "file-token", "jobPrefix": "file-",
            "timeoutMaxMinutes": 60, "retry": {"maxRetries": 2},
        });
        let vars = [
            ("JENKINS_URL", "http://127.0.0.1:2/"),
            ("EXECUTOR_JENKINS_JOB_PREFIX", "env-"),
        ];
        let flags = [("jobPrefix".to_string(), "flag-".to_string())];
        let b = JenkinsExecutorBuilder::new().layered(Some(&file), vars, &flags);
        assert_eq!(
            b.config.timeout.max_minutes, 60,
            "old spelling from the file"
        );
        assert_eq!(b.config.retry.max_retries, 2);
        let e = b.build().await.unwrap();
        assert_eq!(
            e.base_url().as_str(),
            "http://127.0.0.1:2/",
            "JENKINS_URL over the file"
        );
        assert_eq!(
            e.job_name(executor_base::BuildId::new(5).unwrap()),
            "flag-5"
        );

        let err = JenkinsExecutorBuilder::new()
            .with_section(&serde_json::json!({"requestTimeoutMs": "soon", "nodelabel": "x"}))
            .with_vars([("EXECUTOR_JENKINS_API_TOKN", "t")])
            .build()
            .await
            .unwrap_err();
        let msg = err.to_string();
        for part in [
            "requestTimeoutMs: must be an integer",
            "nodelabel: unknown option of jenkins; did you mean `nodeLabel`?",
            "did you mean EXECUTOR_JENKINS_API_TOKEN? (from EXECUTOR_JENKINS_API_TOKN)",
        ] {
            assert!(msg.contains(part), "{part} missing in {msg}");
        }
    }

    #[tokio::test]
    async fn every_problem_is_named() {
        let err = JenkinsExecutorBuilder::from_iter([
            ("url", "http://u:p@127.0.0.1"),
            ("requestTimeoutMs", "0"),
            ("jobPrefix", "bad prefix"),
            ("launcherImage", ""),
            ("mountPoint", "opt/sd"),
            ("apiToken", " "),
            ("folder", "ci//sd"),
            ("colour", "blue"),
        ])
        .build()
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        let msg = err.to_string();
        for key in [
            "url:",
            "requestTimeoutMs:",
            "jobPrefix:",
            "launcherImage:",
            "mountPoint:",
            "apiToken:",
            "folder:",
            "colour:",
        ] {
            assert!(msg.contains(key), "{key} missing in {msg}");
        }
        let bad_template = JenkinsExecutorBuilder::new()
            .with_url("http://127.0.0.1")
            .with_credentials("u", "t")
            .with_template_path("/nonexistent.xml")
            .build()
            .await
            .unwrap_err();
        assert!(
            bad_template
                .to_string()
                .contains("templatePath: /nonexistent.xml"),
            "{bad_template}"
        );
    }
}
