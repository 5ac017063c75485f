//! The build pod and its token Secret, rendered from the config and one start request.
//!
//! Layout (see `screwdriver.md` §3.3 for upstream's): an `emptyDir` volume `sd-tools`;
//! the init container `launcher-<prefix><buildId>` runs the launcher image and copies
//! job-tools into it (mounted at `/opt/launcher`); the build container `<prefix><buildId>`
//! runs the user's image with the volume read-only at the mount point and `launch` as its
//! command. In native mode `SD_TOKEN` comes from the build's Secret through
//! `secretKeyRef`, never inline; `restartPolicy: Never`; `activeDeadlineSeconds` is the
//! build timeout plus a slack (the engine-side backstop of the launcher's own timeout).
//! Upstream's extras: `runtimeClassName` (and `SD_RUNTIME_CLASS`), a privileged build
//! container, configured `hostPath` mounts, the `screwdriver.cd/disk` label, the disk
//! speed node selector and the annotation's termination grace ([`PodExtras`]).
//!
//! Native mode: the init container runs `launch install /opt/launcher` from the `FROM
//! scratch` sdx launcher image (no shell), and the build container gets
//! `SD_LAUNCH_RESULT_FILE` = its `terminationMessagePath`, so the launch handshake comes
//! back in `state.terminated.message` (see `executor::handshake`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use executor_base::labels::BuildLabels;
use executor_base::launch::{TOKEN_ENV, expose_token};
use executor_base::{LaunchMode, LaunchSpec, StartConfig, TokenDelivery};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Affinity, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference,
    NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    Pod, PodSpec, PreferredSchedulingTerm, ResourceRequirements, Secret, SecretKeySelector,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::config::{K8sConfig, TERMINATION_MESSAGE_PATH};
use crate::pod_extras::{DISK_LABEL, PodExtras};
use crate::volumes;

/// The variable naming the file `launch` writes its handshake to (`sd_launch`'s).
pub(crate) const LAUNCH_RESULT_FILE_ENV: &str = "SD_LAUNCH_RESULT_FILE";

/// The key of the token in the build's Secret.
pub const TOKEN_KEY: &str = "token";
/// The job-tools volume.
pub(crate) const TOOLS_VOLUME: &str = "sd-tools";
/// Where the init container sees the job-tools volume.
const TOOLS_STAGING: &str = "/opt/launcher";

/// The names of one build's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `<prefix><buildId>`: the build container and the `sdbuild` label.
    pub(crate) build: String,
    /// `<build>-<5 random lowercase alphanumerics>`.
    pub(crate) pod: String,
    /// `<pod>-token`.
    pub(crate) secret: String,
}

impl Names {
    /// Fresh names for a build (random pod suffix, as upstream).
    pub(crate) fn new(labels: &BuildLabels) -> Self {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let suffix: String = (0..5)
            .map(|_| ALNUM[fastrand::usize(..ALNUM.len())] as char)
            .collect();
        let build = labels.name();
        let pod = format!("{build}-{suffix}");
        let secret = secret_name(&pod);
        Self { build, pod, secret }
    }
}

/// The name of the token Secret of pod `pod`: `<pod>-token`.
pub(crate) fn secret_name(pod: &str) -> String {
    format!("{pod}-token")
}

/// Renders `bytes` as a Kubernetes quantity (`2Gi`, `512Mi`, or plain bytes).
pub(crate) fn memory_quantity(bytes: u64) -> String {
    const MI: u64 = 1024 * 1024;
    const GI: u64 = 1024 * MI;
    if bytes > 0 && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

/// The label map of a build's objects: ours (from [`BuildLabels`]) over `extra`.
pub(crate) fn labels(
    build: &BuildLabels,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut m = extra.clone();
    for (k, v) in build.to_pairs() {
        m.insert(k.to_string(), v);
    }
    m
}

/// The expiry of a build's objects: start + timeout + buffer.
pub(crate) fn expiry(cfg: &K8sConfig, timeout_minutes: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::minutes(
        i64::from(timeout_minutes) + i64::from(cfg.expiry_buffer_minutes),
    )
}

/// The Secret holding the build token, owned by the pod with `owner_uid` when given.
pub(crate) fn secret(
    names: &Names,
    labels: BTreeMap<String, String>,
    build: &StartConfig,
    owner_uid: Option<&str>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names.secret.clone()),
            labels: Some(labels),
            // Owned by its pod from birth: Kubernetes' garbage collector deletes it with
            // the pod, so `stop` needs one request and no token outlives its build.
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: names.pod.clone(),
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(expose_token(&build.token).as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn requirement(k: &str, v: &str) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: k.into(),
        operator: "In".into(),
        values: Some(vec![v.into()]),
    }
}

/// The required node labels: the disk speed selector (when `diskSpeedLabel` is set and
/// the build asks for a speed) under the configured `nodeSelectors`, which win.
fn node_selectors(cfg: &K8sConfig, extras: &PodExtras) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if !cfg.disk_speed_label.is_empty()
        && let Some(speed) = &extras.disk_speed
    {
        m.insert(cfg.disk_speed_label.clone(), speed.clone());
    }
    m.extend(cfg.node_selectors.clone());
    m
}

fn affinity(cfg: &K8sConfig, selectors: &BTreeMap<String, String>) -> Option<Affinity> {
    if selectors.is_empty() && cfg.preferred_node_selectors.is_empty() {
        return None;
    }
    let required = (!selectors.is_empty()).then(|| NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: Some(selectors.iter().map(|(k, v)| requirement(k, v)).collect()),
            match_fields: None,
        }],
    });
    let preferred = (!cfg.preferred_node_selectors.is_empty()).then(|| {
        vec![PreferredSchedulingTerm {
            weight: 100,
            preference: NodeSelectorTerm {
                match_expressions: Some(
                    cfg.preferred_node_selectors
                        .iter()
                        .map(|(k, v)| requirement(k, v))
                        .collect(),
                ),
                match_fields: None,
            },
        }]
    });
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: required,
            preferred_during_scheduling_ignored_during_execution: preferred,
        }),
        ..Affinity::default()
    })
}

fn tolerations(cfg: &K8sConfig, selectors: &BTreeMap<String, String>) -> Option<Vec<Toleration>> {
    let mut t: Vec<Toleration> = selectors
        .iter()
        .map(|(k, v)| Toleration {
            key: Some(k.clone()),
            operator: Some("Equal".into()),
            value: Some(v.clone()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        })
        .collect();
    t.extend(cfg.tolerations.iter().cloned());
    (!t.is_empty()).then_some(t)
}

fn resources(cfg: &K8sConfig, build: &StartConfig) -> ResourceRequirements {
    let cpu = cfg.resources.cpu_millis(build.annotations.cpu());
    let mem = cfg.resources.memory_bytes(build.annotations.ram());
    let limits = BTreeMap::from([
        ("cpu".to_string(), Quantity(format!("{cpu}m"))),
        ("memory".to_string(), Quantity(memory_quantity(mem))),
    ]);
    let f = cfg.request_fraction.clamp(0.0, 1.0);
    let requests = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(format!("{}m", ((cpu as f64) * f).round() as u64)),
        ),
        (
            "memory".to_string(),
            Quantity(memory_quantity(((mem as f64) * f).round() as u64)),
        ),
    ]);
    ResourceRequirements {
        limits: Some(limits),
        requests: Some(requests),
        claims: None,
    }
}

/// The build pod. `secret` is the token Secret's name in native mode.
pub(crate) fn pod(
    cfg: &K8sConfig,
    build: &StartConfig,
    extras: &PodExtras,
    names: &Names,
    mut labels: BTreeMap<String, String>,
    timeout_minutes: u32,
) -> Pod {
    let spec = LaunchSpec::new(build, &cfg.mount_point, &cfg.ecosystem, timeout_minutes);
    let cmd = spec.command(cfg.launch_mode, &TokenDelivery::EnvFromSecret);
    let mut env_vars: Vec<EnvVar> = cmd.env.iter().map(|(k, v)| env(k, v.clone())).collect();
    env_vars.push(env("SD_BUILD_PREFIX", cfg.prefix.clone()));
    env_vars.push(env("SD_RUNTIME_CLASS", cfg.runtime_class.clone()));
    env_vars.push(EnvVar {
        name: "NODE_ID".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "spec.nodeName".into(),
            }),
            ..EnvVarSource::default()
        }),
    });
    if cfg.launch_mode == LaunchMode::Native {
        // `launch` writes its handshake to the termination message too.
        env_vars.push(env(LAUNCH_RESULT_FILE_ENV, TERMINATION_MESSAGE_PATH));
        env_vars.push(EnvVar {
            name: TOKEN_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names.secret.clone(),
                    key: TOKEN_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    let init = Container {
        name: format!("launcher-{}", names.build),
        image: Some(cfg.launcher_reference()),
        command: Some(cfg.copy_command()),
        volume_mounts: Some(vec![VolumeMount {
            name: TOOLS_VOLUME.into(),
            mount_path: TOOLS_STAGING.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let (host_volumes, host_mounts) = volumes::render(&cfg.volume_mounts);
    let mut mounts = vec![VolumeMount {
        name: TOOLS_VOLUME.into(),
        mount_path: cfg.mount_point.clone(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    mounts.extend(host_mounts);
    let mut pod_volumes = vec![Volume {
        name: TOOLS_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    pod_volumes.extend(host_volumes);
    let main = Container {
        name: names.build.clone(),
        image: Some(build.container.to_string()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        command: Some(vec![cmd.entrypoint.clone()]),
        args: Some(cmd.args.clone()),
        env: Some(env_vars),
        resources: Some(resources(cfg, build)),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            privileged: Some(cfg.privileged),
            ..SecurityContext::default()
        }),
        // Only what `launch` writes there: never the log tail (`FallbackToLogsOnError`
        // would copy a failed build's last output, which may hold secrets a step printed,
        // into the pod's status, readable by anyone who can get pods).
        termination_message_path: Some(TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    };
    // Upstream: `podLabels` override the disk label.
    labels
        .entry(DISK_LABEL.to_string())
        .or_insert_with(|| extras.disk.to_string());
    let selectors = node_selectors(cfg, extras);
    let deadline = i64::from(timeout_minutes) * 60 + i64::from(cfg.deadline_slack_seconds);
    Pod {
        metadata: ObjectMeta {
            name: Some(names.pod.clone()),
            labels: Some(labels),
            annotations: (!cfg.pod_annotations.is_empty()).then(|| cfg.pod_annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(deadline),
            service_account_name: Some(cfg.service_account.clone()),
            automount_service_account_token: Some(cfg.automount_service_account_token),
            termination_grace_period_seconds: Some(
                extras.grace(cfg.termination_grace_period_seconds),
            ),
            runtime_class_name: (!cfg.runtime_class.is_empty()).then(|| cfg.runtime_class.clone()),
            image_pull_secrets: (!cfg.image_pull_secrets.is_empty()).then(|| {
                cfg.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            affinity: affinity(cfg, &selectors),
            tolerations: tolerations(cfg, &selectors),
            init_containers: Some(vec![init]),
            containers: vec![main],
            volumes: Some(pod_volumes),
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_quantity(2 * 1024 * 1024 * 1024), "2Gi");
        assert_eq!(memory_quantity(512 * 1024 * 1024), "512Mi");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    /// The pod of build 42 under `cfg`, with `annotations`.
    fn render(cfg: &K8sConfig, annotations: serde_json::Value) -> Pod {
        let mut b = StartConfig::builder(42, "http://127.0.0.1:9", "node:22", "tok");
        for (k, v) in annotations.as_object().unwrap() {
            b = b.annotation(k.clone(), v.clone());
        }
        let build = b.build().unwrap();
        let extras = PodExtras::from_annotations(&build.annotations).unwrap();
        let l = BuildLabels::new(&cfg.prefix, build.build_id, None, Utc::now());
        let names = Names::new(&l);
        pod(
            cfg,
            &build,
            &extras,
            &names,
            labels(&l, &cfg.pod_labels),
            60,
        )
    }

    fn env_of(p: &Pod, name: &str) -> Option<String> {
        p.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone().unwrap_or_default())
    }

    #[test]
    fn runtime_class_and_its_env() {
        let p = render(&K8sConfig::default(), serde_json::json!({}));
        assert_eq!(p.spec.as_ref().unwrap().runtime_class_name, None);
        assert_eq!(env_of(&p, "SD_RUNTIME_CLASS").as_deref(), Some(""));
        let cfg = K8sConfig {
            runtime_class: "gvisor".into(),
            ..K8sConfig::default()
        };
        let p = render(&cfg, serde_json::json!({}));
        assert_eq!(
            p.spec.as_ref().unwrap().runtime_class_name.as_deref(),
            Some("gvisor")
        );
        assert_eq!(env_of(&p, "SD_RUNTIME_CLASS").as_deref(), Some("gvisor"));
    }

    #[test]
    fn privileged_flag_on_the_build_container_only() {
        for on in [false, true] {
            let cfg = K8sConfig {
                privileged: on,
                ..K8sConfig::default()
            };
            let spec = render(&cfg, serde_json::json!({})).spec.unwrap();
            let sc = spec.containers[0].security_context.clone().unwrap();
            assert_eq!(sc.privileged, Some(on));
            assert!(spec.init_containers.unwrap()[0].security_context.is_none());
        }
    }

    #[test]
    fn termination_grace_takes_the_larger_annotation() {
        let cfg = K8sConfig::default();
        let grace = |a| {
            render(&cfg, a)
                .spec
                .unwrap()
                .termination_grace_period_seconds
        };
        assert_eq!(grace(serde_json::json!({})), Some(30));
        let key = "screwdriver.cd/terminationGracePeriodSeconds";
        assert_eq!(grace(serde_json::json!({ key: 90 })), Some(90));
        assert_eq!(grace(serde_json::json!({ key: "10" })), Some(30));
        assert_eq!(grace(serde_json::json!({ key: 0 })), Some(30));
    }

    #[test]
    fn host_volume_mounts_follow_the_tools_volume() {
        let cfg = K8sConfig {
            volume_mounts: vec![crate::HostVolumeMount {
                name: "cache".into(),
                mount_path: "/cache".into(),
                path: "/var/cache/sd".into(),
                type_: Some("DirectoryOrCreate".into()),
                read_only: false,
            }],
            ..K8sConfig::default()
        };
        let spec = render(&cfg, serde_json::json!({})).spec.unwrap();
        let vols = spec.volumes.unwrap();
        assert_eq!(
            vols.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["sd-tools", "cache"]
        );
        let hp = vols[1].host_path.as_ref().unwrap();
        assert_eq!(hp.path, "/var/cache/sd");
        assert_eq!(hp.type_.as_deref(), Some("DirectoryOrCreate"));
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mounts[0].mount_path, "/opt/sd");
        assert_eq!(
            (
                mounts[1].name.as_str(),
                mounts[1].mount_path.as_str(),
                mounts[1].read_only
            ),
            ("cache", "/cache", Some(false))
        );
        // Not on the init container.
        assert_eq!(
            spec.init_containers.unwrap()[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn disk_label_defaults_to_low_and_pod_labels_override_it() {
        let p = render(&K8sConfig::default(), serde_json::json!({}));
        assert_eq!(p.metadata.labels.unwrap()[DISK_LABEL], "LOW");
        let p = render(
            &K8sConfig::default(),
            serde_json::json!({"screwdriver.cd/disk": "turbo"}),
        );
        assert_eq!(p.metadata.labels.unwrap()[DISK_LABEL], "TURBO");
        let cfg = K8sConfig {
            pod_labels: BTreeMap::from([(DISK_LABEL.to_string(), "ssd".to_string())]),
            ..K8sConfig::default()
        };
        let p = render(&cfg, serde_json::json!({"screwdriver.cd/disk": "HIGH"}));
        assert_eq!(p.metadata.labels.unwrap()[DISK_LABEL], "ssd");
    }

    fn required(p: &Pod) -> Vec<(String, String)> {
        let Some(aff) = p.spec.as_ref().unwrap().affinity.clone() else {
            return Vec::new();
        };
        aff.node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .map(|r| {
                r.node_selector_terms[0]
                    .match_expressions
                    .clone()
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.key, e.values.unwrap()[0].clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn disk_speed_selects_nodes_only_with_a_label_key_and_config_wins() {
        let fast = serde_json::json!({"screwdriver.cd/diskSpeed": "FAST"});
        // No label key configured: ignored.
        assert!(required(&render(&K8sConfig::default(), fast.clone())).is_empty());
        let mut cfg = K8sConfig {
            disk_speed_label: "disk-speed".into(),
            ..K8sConfig::default()
        };
        let p = render(&cfg, fast.clone());
        assert_eq!(required(&p), [("disk-speed".into(), "fast".into())]);
        let tol = p.spec.unwrap().tolerations.unwrap();
        assert_eq!(tol[0].key.as_deref(), Some("disk-speed"));
        assert_eq!(tol[0].value.as_deref(), Some("fast"));
        // No annotation: no selector.
        assert!(required(&render(&cfg, serde_json::json!({}))).is_empty());
        // Configured nodeSelectors are merged over it.
        cfg.node_selectors = BTreeMap::from([
            ("disk-speed".to_string(), "slow".to_string()),
            ("pool".to_string(), "ci".to_string()),
        ]);
        assert_eq!(
            required(&render(&cfg, fast)),
            [
                ("disk-speed".into(), "slow".into()),
                ("pool".into(), "ci".into())
            ]
        );
    }

    #[test]
    fn native_mode_uses_the_sdx_launcher_without_a_shell_and_asks_for_the_handshake() {
        let spec = render(&K8sConfig::default(), serde_json::json!({}))
            .spec
            .unwrap();
        let init = &spec.init_containers.unwrap()[0];
        assert_eq!(
            init.image.as_deref(),
            Some(executor_base::launch_protocol::SDX_LAUNCHER_REFERENCE)
        );
        assert_eq!(
            init.command.clone().unwrap(),
            ["/opt/sd/launch", "install", "/opt/launcher"]
        );
        let main = &spec.containers[0];
        assert_eq!(
            main.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(main.termination_message_policy.as_deref(), Some("File"));
        let p = render(&K8sConfig::default(), serde_json::json!({}));
        assert_eq!(
            env_of(&p, "SD_LAUNCH_RESULT_FILE").as_deref(),
            Some("/dev/termination-log")
        );
        // Screwdriver mode: upstream's image and its shell copy, no result file.
        let cfg = K8sConfig {
            launch_mode: LaunchMode::Screwdriver,
            ..K8sConfig::default()
        };
        let p = render(&cfg, serde_json::json!({}));
        let init = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("screwdrivercd/launcher:stable"));
        assert_eq!(init.command.clone().unwrap()[0], "/bin/sh");
        assert_eq!(env_of(&p, "SD_LAUNCH_RESULT_FILE"), None);
        // A configured command wins.
        let cfg = K8sConfig {
            launcher_copy_command: vec!["/busybox/cp".into()],
            ..K8sConfig::default()
        };
        let spec = render(&cfg, serde_json::json!({})).spec.unwrap();
        assert_eq!(
            spec.init_containers.unwrap()[0].command.clone().unwrap(),
            ["/busybox/cp"]
        );
    }

    #[test]
    fn names_follow_upstream() {
        let l = BuildLabels::new(
            "sd-",
            executor_base::BuildId::new(42).unwrap(),
            None,
            Utc::now(),
        );
        let n = Names::new(&l);
        assert_eq!(n.build, "sd-42");
        assert!(n.pod.starts_with("sd-42-") && n.pod.len() == "sd-42-".len() + 5);
        assert_eq!(n.secret, format!("{}-token", n.pod));
        assert_ne!(
            Names::new(&l).pod,
            Names::new(&l).pod,
            "random suffix (1 in 60 million to collide)"
        );
    }
}
