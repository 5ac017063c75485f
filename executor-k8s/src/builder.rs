//! [`K8sExecutorBuilder`]: config + injections, validated in `build()`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, EngineCalls, RetryPolicy};
use executor_base::options::{ConfigBuilder, Problems};
use executor_base::{Ecosystem, Error, LaunchMode, Owner, ResourceTable, TimeoutPolicy};
use k8s_openapi::api::core::v1::Toleration;
use kube::client::ClientBuilder;

use crate::SCHEME;
use crate::cache::Shared;
use crate::client::K8sClient;
use crate::config::K8sConfig;
use crate::error::config as config_error;
use crate::executor::{Inner, K8sExecutor};
use crate::manifest::TOOLS_VOLUME;
use crate::names;
use crate::policy::ReasonPolicy;
use crate::throttle::{Throttle, ThrottleLayer};
use crate::user_agent::UserAgentLayer;
use crate::volumes::{self, HostVolumeMount};
use crate::watch::{WatchSettings, run_watch};

/// Prefix of the environment variables [`K8sExecutorBuilder::from_env`] reads.
pub const ENV_PREFIX: &str = "EXECUTOR_K8S_";

/// Builds a [`K8sExecutor`].
///
/// ```
/// use std::time::Duration;
/// use executor_k8s::K8sExecutorBuilder;
/// let b = K8sExecutorBuilder::from_vars([
///     ("EXECUTOR_K8S_NAMESPACE", "builds"),
///     ("EXECUTOR_K8S_NODE_SELECTORS", "pool=ci,disk=ssd"),
///     ("EXECUTOR_K8S_PENDING_TIMEOUT_SECONDS", "120"),
///     ("HOME", "/root"), // not ours: ignored
/// ])
/// .with_prefix("sd-")
/// .with_image_pull_grace(Duration::from_secs(30));
/// let c = b.config();
/// assert_eq!(c.namespace.as_deref(), Some("builds"));
/// assert_eq!(c.node_selectors["disk"], "ssd");
/// assert_eq!(c.policy.pending_timeout_seconds, 120);
/// assert_eq!(c.policy.image_pull_grace_seconds, 30);
/// ```
#[derive(Default)]
pub struct K8sExecutorBuilder {
    config: K8sConfig,
    client: Option<kube::Client>,
    owner: Option<Owner>,
    problems: Problems,
}

impl std::fmt::Debug for K8sExecutorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sExecutorBuilder")
            .field("config", &self.config)
            .field("client", &self.client.is_some())
            .field("owner", &self.owner)
            .field("problems", &self.problems)
            .finish()
    }
}

/// `with_option`, `with_vars`, `with_section`, `from_env` and `layered`, from
/// [`K8sConfig`]'s declared options.
impl ConfigBuilder for K8sExecutorBuilder {
    type Config = K8sConfig;
    fn option_parts(&mut self) -> (&mut K8sConfig, &mut Problems) {
        (&mut self.config, &mut self.problems)
    }
}

impl K8sExecutorBuilder {
    /// Defaults; the API connection is inferred from `KUBECONFIG`/in-cluster at `build()`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults overridden by `EXECUTOR_K8S_<KEY>` variables (one per key of the README's
    /// table or `sdx options k8s`: `EXECUTOR_K8S_NAMESPACE`,
    /// `EXECUTOR_K8S_NODE_SELECTORS=k=v,...`, `EXECUTOR_K8S_IMAGE_PULL_GRACE_SECONDS`, ...),
    /// after `EXECUTOR_K8S_CONFIG` holding a whole section as JSON. kube itself reads
    /// `KUBECONFIG` at `build()` when `url` is unset. Bad values and unknown
    /// `EXECUTOR_K8S_*` variables are reported by `build()`.
    pub fn from_env() -> Self {
        <Self as ConfigBuilder>::from_env()
    }

    /// Like [`Self::from_env`], from the given variables (others are ignored).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::new().with_vars(vars)
    }

    /// Sets one option by key (camelCase; dots for nested keys such as
    /// `retry.maxRetries` or `resources.ram.high`) from a string, as
    /// `sdx --opt k8s.<key>=<value>`. A bad key or value is reported by `build()`.
    pub fn with_option(self, key: &str, value: &str) -> Self {
        <Self as ConfigBuilder>::with_option(self, key, value)
    }

    /// The config so far.
    pub fn config(&self) -> &K8sConfig {
        &self.config
    }

    /// Replaces the whole config.
    pub fn with_config(mut self, config: K8sConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses this client instead of building one (tests, custom TLS). The client-wide rate
    /// limit and the `User-Agent` are then the caller's business: they apply only to
    /// clients built here.
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Talks to the API server at `url` (skips kubeconfig inference).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(url.into());
        self
    }

    /// Connects as the current context of this kubeconfig file says (instead of
    /// `KUBECONFIG` / `~/.kube/config` / in-cluster inference).
    pub fn with_kubeconfig(mut self, path: impl Into<String>) -> Self {
        self.config.kubeconfig = Some(path.into());
        self
    }

    /// The namespace builds run in.
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.config.namespace = Some(ns.into());
        self
    }

    /// The name prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The launcher image and tag.
    pub fn with_launcher_image(
        mut self,
        image: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.config.launcher_image = image.into();
        self.config.launcher_version = version.into();
        self
    }

    /// The init container's copy command (empty: the launch mode's, see
    /// [`K8sConfig::copy_command`](crate::K8sConfig::copy_command)).
    pub fn with_launcher_copy_command(mut self, cmd: Vec<String>) -> Self {
        self.config.launcher_copy_command = cmd;
        self
    }

    /// Native (default) or Screwdriver launch contract.
    pub fn with_launch_mode(mut self, mode: LaunchMode) -> Self {
        self.config.launch_mode = mode;
        self
    }

    /// Store and UI URLs.
    pub fn with_ecosystem(mut self, eco: Ecosystem) -> Self {
        self.config.ecosystem = eco;
        self
    }

    /// Build timeout default and cap.
    pub fn with_timeout_policy(mut self, t: TimeoutPolicy) -> Self {
        self.config.timeout = t;
        self
    }

    /// CPU/RAM tier tables.
    pub fn with_tiers(mut self, t: ResourceTable) -> Self {
        self.config.resources = t;
        self
    }

    /// Adds a required node label (and its `NoSchedule` toleration).
    pub fn with_node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.node_selectors.insert(key.into(), value.into());
        self
    }

    /// Adds a preferred node label.
    pub fn with_preferred_node_selector(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.config
            .preferred_node_selectors
            .insert(key.into(), value.into());
        self
    }

    /// Adds a toleration.
    pub fn with_toleration(mut self, t: Toleration) -> Self {
        self.config.tolerations.push(t);
        self
    }

    /// Who owns the pods and Secrets this executor creates, written on them as the
    /// `screwdriver.cd/owner` label (default: this process, [`Owner::current`]); see
    /// [`executor_base::owner`] and the README's "Garbage collection".
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// The pods' service account.
    pub fn with_service_account(mut self, sa: impl Into<String>) -> Self {
        self.config.service_account = sa.into();
        self
    }

    /// `Always`, `IfNotPresent` or `Never`.
    pub fn with_image_pull_policy(mut self, p: impl Into<String>) -> Self {
        self.config.image_pull_policy = p.into();
        self
    }

    /// Adds an image pull secret.
    pub fn with_image_pull_secret(mut self, name: impl Into<String>) -> Self {
        self.config.image_pull_secrets.push(name.into());
        self
    }

    /// The pods' `runtimeClassName` (empty: the cluster's default).
    pub fn with_runtime_class(mut self, class: impl Into<String>) -> Self {
        self.config.runtime_class = class.into();
        self
    }

    /// Runs the build container privileged.
    pub fn with_privileged(mut self, on: bool) -> Self {
        self.config.privileged = on;
        self
    }

    /// Adds a `hostPath` volume mounted into the build container.
    pub fn with_volume_mount(mut self, m: HostVolumeMount) -> Self {
        self.config.volume_mounts.push(m);
        self
    }

    /// The node label key the `screwdriver.cd/diskSpeed` annotation selects on.
    pub fn with_disk_speed_label(mut self, key: impl Into<String>) -> Self {
        self.config.disk_speed_label = key.into();
        self
    }

    /// Extra pod labels.
    pub fn with_pod_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.config.pod_labels = labels;
        self
    }

    /// The per-reason policy.
    pub fn with_policy(mut self, p: ReasonPolicy) -> Self {
        self.config.policy = p;
        self
    }

    /// How long image pull errors may last before the build fails.
    pub fn with_image_pull_grace(mut self, d: Duration) -> Self {
        self.config.policy.image_pull_grace_seconds = d.as_secs();
        self
    }

    /// How long a pod may stay unschedulable before the build fails.
    pub fn with_pending_timeout(mut self, d: Duration) -> Self {
        self.config.policy.pending_timeout_seconds = d.as_secs();
        self
    }

    /// Grace of `stop` for started pods (`None`: the pod's own) and for pending ones.
    pub fn with_stop_grace(mut self, running: Option<u32>, pending: u32) -> Self {
        self.config.stop_grace_seconds = running;
        self.config.pending_stop_grace_seconds = pending;
        self
    }

    /// Serve status from the shared watch (default) or LIST/GET per call.
    pub fn with_watch(mut self, on: bool) -> Self {
        self.config.watch = on;
        self
    }

    /// Client-wide request rate and burst.
    pub fn with_rate_limit(mut self, qps: u32, burst: u32) -> Self {
        self.config.qps = qps;
        self.config.burst = burst;
        self
    }

    /// Retry policy of API calls.
    pub fn with_retry(mut self, r: RetryPolicy) -> Self {
        self.config.retry = r;
        self
    }

    /// Circuit breaker of API calls.
    pub fn with_breaker(mut self, b: BreakerConfig) -> Self {
        self.config.breaker = b;
        self
    }

    /// Validates and connects (the watch starts in the background; see
    /// [`K8sExecutor::wait_synced`]). Errors are [`executor_base::ErrorKind::ConfigInvalid`]
    /// naming the key.
    pub async fn build(self) -> Result<K8sExecutor, Error> {
        self.problems.check(SCHEME)?;
        let cfg = self.config;
        validate(&cfg)?;
        let (client, namespace, throttle, api_url) = match self.client {
            Some(c) => {
                let ns = cfg
                    .namespace
                    .clone()
                    .unwrap_or_else(|| c.default_namespace().to_string());
                let url = cfg
                    .url
                    .clone()
                    .unwrap_or_else(|| "the API server of the given client".to_string());
                (c, ns, None, url)
            }
            None => connect(&cfg).await?,
        };
        check_name("namespace", &namespace, 63)?;
        let calls = EngineCalls::new(SCHEME, cfg.retry.clone(), cfg.breaker.clone())
            .with_endpoint(api_url.clone());
        let k = K8sClient {
            pods: kube::Api::namespaced(client.clone(), &namespace),
            secrets: kube::Api::namespaced(client.clone(), &namespace),
            client,
            namespace: namespace.clone(),
            calls,
            throttle,
        };
        let shared = Arc::new(Shared::new(
            cfg.policy.clone(),
            cfg.prefix.clone(),
            crate::handshake::HandshakeCheck::new(&cfg),
        ));
        let watch = cfg.watch.then(|| {
            tokio::spawn(run_watch(
                k.pods.clone(),
                shared.clone(),
                k.calls.clone(),
                WatchSettings {
                    timeout_seconds: cfg.watch_timeout_seconds,
                    retain: Duration::from_secs(cfg.retain_finished_seconds),
                    namespace: namespace.clone(),
                },
            ))
            .abort_handle()
        });
        Ok(K8sExecutor::from_inner(Inner {
            preflight: executor_base::PreflightCache::new(cfg.preflight.cache_ttl),
            api_url,
            cfg,
            namespace,
            client: k,
            shared,
            watch,
            stops: Default::default(),
            owner: self.owner.or_else(Owner::current),
        }))
    }
}

/// What [`connect`] makes: the client, the namespace, the throttle and the API server's URL.
type Connected = (kube::Client, String, Option<Arc<Throttle>>, String);

async fn connect(cfg: &K8sConfig) -> Result<Connected, Error> {
    executor_base::tls::install_default_provider();
    let mut kc = match (&cfg.url, &cfg.kubeconfig) {
        (Some(u), _) => {
            kube::Config::new(u.parse::<http::Uri>().map_err(|e| config_error("url", e))?)
        }
        (None, Some(path)) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| config_error("kubeconfig", e))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| config_error("kubeconfig", e))?
        }
        (None, None) => kube::Config::infer().await.map_err(|e| {
            config_error(
                "url",
                format!("no API server configured and none inferred: {e}"),
            )
        })?,
    };
    // Retries are ours (EngineCalls): kube's default layer would also retry creates on 503.
    kc.default_retry = false;
    kc.accept_invalid_certs |= cfg.accept_invalid_certs;
    let namespace = cfg
        .namespace
        .clone()
        .unwrap_or_else(|| kc.default_namespace.clone());
    let qps = NonZeroU32::new(cfg.qps).ok_or_else(|| config_error("qps", "must be positive"))?;
    let burst =
        NonZeroU32::new(cfg.burst).ok_or_else(|| config_error("burst", "must be positive"))?;
    let throttle = Throttle::new(qps, burst);
    let api_url = kc.cluster_url.to_string();
    let client = ClientBuilder::try_from(kc)
        .map_err(|e| config_error("url", e))?
        .with_layer(&ThrottleLayer(throttle.clone()))
        .with_layer(&UserAgentLayer)
        .build();
    Ok((client, namespace, Some(throttle), api_url))
}

/// A DNS-label-like name: lowercase alphanumerics and `-`, at most `max` characters.
fn check_name(key: &str, v: &str, max: usize) -> Result<(), Error> {
    if names::is_dns_label(v, max) {
        Ok(())
    } else {
        Err(config_error(
            key,
            format!(
                "{v:?} must be 1-{max} lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        ))
    }
}

fn validate(c: &K8sConfig) -> Result<(), Error> {
    if let Some(ns) = &c.namespace {
        check_name("namespace", ns, 63)?;
    }
    // `<prefix><buildId>` is a container name (a DNS label) and a label value; leave room
    // for a 20-digit id.
    if !c.prefix.is_empty()
        && (c.prefix.len() > 40
            || !c
                .prefix
                .starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            || !c
                .prefix
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'))
    {
        return Err(config_error(
            "prefix",
            "must be at most 40 lowercase letters, digits or '-', starting with a letter or digit",
        ));
    }
    if c.launcher_image.trim().is_empty() || c.launcher_image.contains(char::is_whitespace) {
        return Err(config_error("launcherImage", "must be an image name"));
    }
    if c.launcher_version.trim().is_empty() || c.launcher_version.contains(char::is_whitespace) {
        return Err(config_error("launcherVersion", "must be an image tag"));
    }
    if c.launcher_copy_command
        .first()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err(config_error(
            "launcherCopyCommand",
            "the program (first word) must not be empty; an empty list picks the launch mode's default",
        ));
    }
    if !c.mount_point.starts_with('/') || c.mount_point.len() < 2 {
        return Err(config_error(
            "mountPoint",
            "must be an absolute path other than /",
        ));
    }
    if !["Always", "IfNotPresent", "Never"].contains(&c.image_pull_policy.as_str()) {
        return Err(config_error(
            "imagePullPolicy",
            format!(
                "{:?}: expected Always, IfNotPresent or Never",
                c.image_pull_policy
            ),
        ));
    }
    if c.service_account.trim().is_empty() {
        return Err(config_error("serviceAccount", "must not be empty"));
    }
    for (k, v) in c.node_selectors.iter().chain(&c.preferred_node_selectors) {
        if k.trim().is_empty() || k.len() > 317 || v.len() > 63 {
            return Err(config_error(
                "nodeSelectors",
                format!("bad label {k:?}={v:?}"),
            ));
        }
    }
    for (name, t) in [
        ("resources.cpu", &c.resources.cpu),
        ("resources.ram", &c.resources.ram),
    ] {
        let all = [t.micro, t.low, t.high, t.turbo, t.max];
        if all.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(config_error(name, "every tier must be a positive number"));
        }
    }
    if !(c.request_fraction > 0.0 && c.request_fraction <= 1.0) {
        return Err(config_error("requestFraction", "must be in (0, 1]"));
    }
    if c.termination_grace_period_seconds < 0 {
        return Err(config_error(
            "terminationGracePeriodSeconds",
            "must not be negative",
        ));
    }
    if !c.runtime_class.is_empty() && !names::is_dns_subdomain(&c.runtime_class) {
        return Err(config_error(
            "runtimeClass",
            format!(
                "{:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.')",
                c.runtime_class
            ),
        ));
    }
    if c.disk_speed_label != c.disk_speed_label.trim() || c.disk_speed_label.len() > 317 {
        return Err(config_error(
            "diskSpeedLabel",
            format!("bad label key {:?}", c.disk_speed_label),
        ));
    }
    volumes::validate(&c.volume_mounts, &[TOOLS_VOLUME], &[&c.mount_point])?;
    if c.qps == 0 {
        return Err(config_error("qps", "must be positive"));
    }
    if c.burst == 0 {
        return Err(config_error("burst", "must be positive"));
    }
    if c.watch_timeout_seconds == 0 {
        return Err(config_error("watchTimeoutSeconds", "must be positive"));
    }
    c.policy.validate().map_err(|e| config_error("policy", e))?;
    Ok(())
}
