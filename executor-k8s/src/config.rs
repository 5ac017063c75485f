//! [`K8sConfig`]: the executor's options as serde data, with upstream's defaults, and
//! their declaration for the shared option system (`with_option`, `EXECUTOR_K8S_*`,
//! `[k8s]` file sections, `--opt k8s.<key>=<value>`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::launch::DEFAULT_MOUNT_POINT;
use executor_base::options::{Configurable, Options};
use executor_base::{Ecosystem, LaunchMode, ResourceTable, TimeoutPolicy};
use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

use crate::policy::ReasonPolicy;
use crate::volumes::HostVolumeMount;

/// Options of the Kubernetes executor. Every field has a default (upstream
/// executor-k8s's where it has one); see [`crate::K8sExecutorBuilder`] for setters and
/// environment variables.
///
/// ```
/// let c: executor_k8s::K8sConfig = serde_json::from_value(serde_json::json!({
///     "namespace": "builds", "prefix": "sd-", "nodeSelectors": {"pool": "ci"},
///     "policy": {"imagePullGraceSeconds": 30}
/// })).unwrap();
/// assert_eq!(c.namespace.as_deref(), Some("builds"));
/// assert_eq!(c.policy.image_pull_grace_seconds, 30);
/// // Native mode's default launcher: the sdx launcher image (`sdx launcher-image build`).
/// assert_eq!(c.launcher_reference(), executor_base::launch_protocol::SDX_LAUNCHER_REFERENCE);
/// assert_eq!(c.copy_command()[1], "install");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct K8sConfig {
    /// An explicit API server URL (`http://127.0.0.1:6443` for a fake or a proxy). Unset:
    /// `kubeconfig`, else kube's inference (`KUBECONFIG` / `~/.kube/config`, then
    /// in-cluster).
    pub url: Option<String>,
    /// Path of a kubeconfig file to use (its current context), instead of `KUBECONFIG` /
    /// `~/.kube/config` / in-cluster inference.
    pub kubeconfig: Option<String>,
    /// The namespace builds run in. Unset: the kubeconfig context's (or the service
    /// account's) namespace, else `default`.
    pub namespace: Option<String>,
    /// Prefix of every name and of the `sdbuild` label (`<prefix><buildId>`).
    pub prefix: String,
    /// The launcher (job-tools) image (upstream `launchImage`); default the sdx launcher
    /// image (upstream's `screwdrivercd/launcher` in Screwdriver launch mode, see
    /// [`K8sConfig::launcher_reference`]).
    pub launcher_image: String,
    /// Its tag (upstream `launchVersion`).
    pub launcher_version: String,
    /// The init container's command, which copies job-tools from the launcher image into
    /// the shared volume mounted at `/opt/launcher`. Empty (default): by launch mode, see
    /// [`K8sConfig::copy_command`].
    pub launcher_copy_command: Vec<String>,
    /// Native `launch` (token through a Secret) or Screwdriver's `run.sh` contract (token
    /// in the argument string, visible in the pod spec: for upstream's image only).
    pub launch_mode: LaunchMode,
    /// Where job-tools are mounted in the build container.
    pub mount_point: String,
    /// Store and UI URLs passed to `launch`.
    pub ecosystem: Ecosystem,
    /// Build timeout default and cap (minutes).
    pub timeout: TimeoutPolicy,
    /// Added to the build timeout for `activeDeadlineSeconds`, so the launcher's own
    /// timeout (which reports to the API) fires first and the deadline is the backstop.
    pub deadline_slack_seconds: u32,
    /// Minutes added to the build timeout for the `screwdriver.cd/expires-at` label that
    /// garbage collection honours.
    pub expiry_buffer_minutes: u32,
    /// CPU (cores) and memory (GiB) per tier.
    pub resources: ResourceTable,
    /// Requests as a fraction of limits (1.0: requests = limits, Guaranteed QoS).
    pub request_fraction: f64,
    /// Required node labels; each also becomes a `NoSchedule` toleration of the same
    /// key/value (upstream §3.3: dedicated build nodes are tainted and labelled alike).
    pub node_selectors: BTreeMap<String, String>,
    /// Preferred node labels (one preferred affinity term, weight 100).
    pub preferred_node_selectors: BTreeMap<String, String>,
    /// Extra tolerations.
    pub tolerations: Vec<Toleration>,
    /// The node label key the `screwdriver.cd/diskSpeed` annotation selects on
    /// (upstream `resources.disk.speed`): a build annotated `diskSpeed: FAST` gets the
    /// required node label `<diskSpeedLabel>=fast` (and its toleration), merged before
    /// `nodeSelectors`, which win on conflict. Empty (default): the annotation is ignored.
    pub disk_speed_label: String,
    /// `serviceAccountName` of build pods.
    pub service_account: String,
    /// Whether the service account token is mounted into build pods.
    pub automount_service_account_token: bool,
    /// `imagePullPolicy` of the build container: `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// Names of image pull secrets.
    pub image_pull_secrets: Vec<String>,
    /// `terminationGracePeriodSeconds` of build pods; a larger
    /// `screwdriver.cd/terminationGracePeriodSeconds` annotation wins.
    pub termination_grace_period_seconds: i64,
    /// `runtimeClassName` of build pods (e.g. `gvisor`, `kata`); empty (default): the
    /// cluster's default. Always exported to the build as `SD_RUNTIME_CLASS`.
    pub runtime_class: String,
    /// Run the build container privileged (`securityContext.privileged`; default false).
    pub privileged: bool,
    /// Node paths mounted into the build container (`hostPath` volumes).
    pub volume_mounts: Vec<HostVolumeMount>,
    /// Grace period of `stop` for pods that started; unset: the pod's own.
    pub stop_grace_seconds: Option<u32>,
    /// Grace period of `stop` for pods still `Pending` (default 0: nothing to shut down).
    pub pending_stop_grace_seconds: u32,
    /// Extra labels on build pods (ours win on conflict).
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations on build pods.
    pub pod_annotations: BTreeMap<String, String>,
    /// The per-reason failure policy.
    pub policy: ReasonPolicy,
    /// Serve `status`/`verify` from one shared watch (default). `false` makes every call
    /// GET the build's pod by name (a LIST by label for a build this executor did not
    /// start): upstream's way, and the benchmark's baseline.
    pub watch: bool,
    /// Server-side timeout of each watch request (seconds); the watcher reconnects.
    pub watch_timeout_seconds: u32,
    /// How long a pod `start` created may be missing from the watch before `status`
    /// GETs it once (a `404` then means it was deleted behind our back).
    pub watch_lag_grace_seconds: u64,
    /// How long a finished or stopped build's status is remembered (seconds).
    pub retain_finished_seconds: u64,
    /// Client-wide request rate (requests per second, shared by every call and the watch).
    pub qps: u32,
    /// Client-wide burst above `qps` (200: the two requests each of 100 concurrent
    /// starts go out at once; the API server's priority and fairness, whose 429s are
    /// honoured, protects it beyond that).
    pub burst: u32,
    /// Retries of API calls (5xx only for idempotent calls; 429 waits for `Retry-After`).
    pub retry: RetryPolicy,
    /// Circuit breaker of API calls.
    pub breaker: BreakerConfig,
    /// Pre-flight cache and check timeout (`preflight.cacheMs`, `preflight.timeoutMs`).
    pub preflight: executor_base::PreflightOptions,
    /// Accept invalid TLS certificates of the API server (upstream always did; off by default).
    pub accept_invalid_certs: bool,
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self {
            url: None,
            kubeconfig: None,
            namespace: None,
            prefix: String::new(),
            launcher_image: executor_base::launch_protocol::SDX_LAUNCHER_IMAGE.into(),
            launcher_version: executor_base::launch_protocol::SDX_LAUNCHER_TAG.into(),
            launcher_copy_command: Vec::new(),
            launch_mode: LaunchMode::Native,
            mount_point: DEFAULT_MOUNT_POINT.into(),
            ecosystem: Ecosystem::default(),
            timeout: TimeoutPolicy::default(),
            deadline_slack_seconds: 60,
            expiry_buffer_minutes: executor_base::TOKEN_BUFFER_MINUTES,
            resources: ResourceTable::default(),
            request_fraction: 1.0,
            node_selectors: BTreeMap::new(),
            preferred_node_selectors: BTreeMap::new(),
            tolerations: Vec::new(),
            disk_speed_label: String::new(),
            service_account: "default".into(),
            automount_service_account_token: false,
            image_pull_policy: "Always".into(),
            image_pull_secrets: Vec::new(),
            termination_grace_period_seconds: 30,
            runtime_class: String::new(),
            privileged: false,
            volume_mounts: Vec::new(),
            stop_grace_seconds: None,
            pending_stop_grace_seconds: 0,
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
            policy: ReasonPolicy::default(),
            watch: true,
            watch_timeout_seconds: 290,
            watch_lag_grace_seconds: 10,
            retain_finished_seconds: 3600,
            qps: 50,
            burst: 200,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            preflight: executor_base::PreflightOptions::default(),
            accept_invalid_certs: false,
        }
    }
}

/// Upstream's init container command: a shell copy (its launcher image has a shell).
pub const SHELL_COPY_COMMAND: [&str; 3] = [
    "/bin/sh",
    "-c",
    "cp -a /opt/sd/. /opt/launcher/ && ([ ! -d /hab ] || cp -a /hab /opt/launcher/hab)",
];

/// Where the build container writes its termination message: `launch` writes the launch
/// handshake there (`SD_LAUNCH_RESULT_FILE`), and the kubelet puts it in the container's
/// `state.terminated.message`, where the executor reads it without log access.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

impl K8sConfig {
    /// `<launcherImage>:<launcherVersion>`; left at their defaults in Screwdriver launch
    /// mode, upstream's `screwdrivercd/launcher:stable`.
    pub fn launcher_reference(&self) -> String {
        executor_base::launch_protocol::launcher_for_mode(
            &format!("{}:{}", self.launcher_image, self.launcher_version),
            self.launch_mode,
        )
    }

    /// The init container's command: `launcherCopyCommand` when set; else, in native
    /// mode, `<mountPoint>/launch install /opt/launcher` (the sdx launcher image is `FROM
    /// scratch`: no shell, so `launch` copies job-tools itself), and in Screwdriver mode
    /// upstream's shell copy ([`SHELL_COPY_COMMAND`]).
    pub fn copy_command(&self) -> Vec<String> {
        if !self.launcher_copy_command.is_empty() {
            return self.launcher_copy_command.clone();
        }
        match self.launch_mode {
            LaunchMode::Native => vec![
                format!("{}/launch", DEFAULT_MOUNT_POINT),
                "install".into(),
                "/opt/launcher".into(),
            ],
            LaunchMode::Screwdriver => SHELL_COPY_COMMAND.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The Kubernetes executor's options, declared once: `with_option`, `EXECUTOR_K8S_<KEY>`,
/// `[k8s]` file sections, `--opt k8s.<key>=<value>` and the README table all come from
/// this list.
impl Configurable for K8sConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<K8sConfig>> = LazyLock::new(declare);
        &OPTIONS
    }
}

fn declare() -> Options<K8sConfig> {
    Options::<K8sConfig>::new(crate::SCHEME)
        .field(
            "url",
            "API server URL (`https://127.0.0.1:6443`); empty: `kubeconfig`, else kube's inference (`KUBECONFIG`, `~/.kube/config`, in-cluster).",
            |c| &mut c.url,
        )
        .field(
            "kubeconfig",
            "Path of a kubeconfig file whose current context to use, instead of kube's inference.",
            |c| &mut c.kubeconfig,
        )
        .engine_variable(
            "KUBECONFIG",
            "read by kube's config inference when `url` and `kubeconfig` are empty (then `~/.kube/config`, then the in-cluster service account).",
        )
        .field(
            "namespace",
            "Namespace builds run in; empty: the kubeconfig context's, else `default`.",
            |c| &mut c.namespace,
        )
        .field(
            "prefix",
            "Prefix of pod and secret names and of the `sdbuild` label.",
            |c| &mut c.prefix,
        )
        .field(
            "launcherImage",
            "The launcher (job-tools) image (upstream `launchImage`): the sdx launcher image (`sdx launcher-image build`, pushed where the cluster pulls from); `screwdrivercd/launcher` in `screwdriver` launch mode.",
            |c| &mut c.launcher_image,
        )
        .field(
            "launcherVersion",
            "The launcher image tag (upstream `launchVersion`): the sdx version; `stable` in `screwdriver` launch mode.",
            |c| &mut c.launcher_version,
        )
        .json(
            "launcherCopyCommand",
            "The init container's command (a JSON array) copying job-tools to `/opt/launcher`; empty: `/opt/sd/launch install /opt/launcher` in native mode (no shell in the sdx image), upstream's `/bin/sh -c 'cp -a /opt/sd/. /opt/launcher/ ...'` in `screwdriver` mode.",
            |c| &mut c.launcher_copy_command,
        )
        .field(
            "launchMode",
            "`native` launch (token from a Secret) or upstream's `run.sh` (token in the pod spec).",
            |c| &mut c.launch_mode,
        )
        .field(
            "mountPoint",
            "Where job-tools are mounted in the build container.",
            |c| &mut c.mount_point,
        )
        .field(
            "deadlineSlackSeconds",
            "Added to the build timeout for `activeDeadlineSeconds` (the engine-side backstop).",
            |c| &mut c.deadline_slack_seconds,
        )
        .field(
            "expiryBufferMinutes",
            "Added to the build timeout for the expiry label gc honours.",
            |c| &mut c.expiry_buffer_minutes,
        )
        .resources(|c| &mut c.resources)
        .field(
            "requestFraction",
            "Requests as a fraction of limits (1.0: Guaranteed QoS).",
            |c| &mut c.request_fraction,
        )
        .field(
            "nodeSelectors",
            "Required node labels (`k=v,k=v`); each also tolerates a `NoSchedule` taint of the same key and value.",
            |c| &mut c.node_selectors,
        )
        .field(
            "preferredNodeSelectors",
            "Preferred node labels (`k=v,k=v`; one preferred affinity term, weight 100).",
            |c| &mut c.preferred_node_selectors,
        )
        .json(
            "tolerations",
            "Extra tolerations (a JSON array of Kubernetes tolerations).",
            |c| &mut c.tolerations,
        )
        .field(
            "diskSpeedLabel",
            "Node label key the `screwdriver.cd/diskSpeed` annotation selects on; empty: ignored.",
            |c| &mut c.disk_speed_label,
        )
        .field(
            "serviceAccount",
            "`serviceAccountName` of build pods.",
            |c| &mut c.service_account,
        )
        .field(
            "automountServiceAccountToken",
            "Mount the service account token into build pods.",
            |c| &mut c.automount_service_account_token,
        )
        .field(
            "imagePullPolicy",
            "`imagePullPolicy` of the build container: `Always`, `IfNotPresent` or `Never`.",
            |c| &mut c.image_pull_policy,
        )
        .field(
            "imagePullSecrets",
            "Names of image pull secrets (`a,b`).",
            |c| &mut c.image_pull_secrets,
        )
        .field(
            "terminationGracePeriodSeconds",
            "`terminationGracePeriodSeconds` of build pods (a larger annotation wins).",
            |c| &mut c.termination_grace_period_seconds,
        )
        .field(
            "runtimeClass",
            "`runtimeClassName` of build pods (`gvisor`, `kata`); empty: the cluster's default.",
            |c| &mut c.runtime_class,
        )
        .field(
            "privileged",
            "Run the build container privileged.",
            |c| &mut c.privileged,
        )
        .json(
            "volumeMounts",
            "Node paths mounted into the build container (a JSON array of `{name, mountPath, path, type, readOnly}`).",
            |c| &mut c.volume_mounts,
        )
        .field(
            "stopGraceSeconds",
            "Grace period of `stop` for pods that started; empty: the pod's own.",
            |c| &mut c.stop_grace_seconds,
        )
        .field(
            "pendingStopGraceSeconds",
            "Grace period of `stop` for pods still `Pending`.",
            |c| &mut c.pending_stop_grace_seconds,
        )
        .field(
            "podLabels",
            "Extra labels on build pods (`k=v,k=v`; ours win on conflict).",
            |c| &mut c.pod_labels,
        )
        .field(
            "podAnnotations",
            "Annotations on build pods (`k=v,k=v`).",
            |c| &mut c.pod_annotations,
        )
        .field(
            "imagePullGraceSeconds",
            "How long an image pull may back off before the build fails.",
            |c| &mut c.policy.image_pull_grace_seconds,
        )
        .alias("policy.imagePullGraceSeconds")
        .field(
            "pendingTimeoutSeconds",
            "How long a pod may stay `Pending` (unschedulable) before the build fails.",
            |c| &mut c.policy.pending_timeout_seconds,
        )
        .alias("policy.pendingTimeoutSeconds")
        .json(
            "policy",
            "The whole per-reason failure policy (JSON: `imagePullGraceSeconds`, `pendingTimeoutSeconds`, `rules`).",
            |c| &mut c.policy,
        )
        .field(
            "watch",
            "Serve `status` from one shared watch; `false`: a LIST per call (upstream's way).",
            |c| &mut c.watch,
        )
        .field(
            "watchTimeoutSeconds",
            "Server-side timeout of each watch request; the watcher reconnects.",
            |c| &mut c.watch_timeout_seconds,
        )
        .field(
            "watchLagGraceSeconds",
            "How long a started pod may be missing from the watch before `status` GETs it.",
            |c| &mut c.watch_lag_grace_seconds,
        )
        .field(
            "retainFinishedSeconds",
            "How long a finished build's status is remembered.",
            |c| &mut c.retain_finished_seconds,
        )
        .field(
            "qps",
            "Client-wide requests per second (every call and the watch).",
            |c| &mut c.qps,
        )
        .field("burst", "Client-wide burst above `qps`.", |c| &mut c.burst)
        .field(
            "acceptInvalidCerts",
            "Accept an invalid TLS certificate of the API server.",
            |c| &mut c.accept_invalid_certs,
        )
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
    fn readme_table_matches_the_declarations() {
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        K8sConfig::options()
            .check_readme_file(&readme)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            K8sConfig::options().undeclared_fields(),
            Vec::<String>::new(),
            "fields of K8sConfig no option key declares"
        );
    }
}
