//! The build pod and its token Secret, rendered from the config and one start request.
//!
//! Layout (see `screwdriver.md` §3.3 for upstream's): an `emptyDir` volume `sd-tools`;
//! the init container `launcher-<prefix><buildId>` runs the launcher image and copies
//! job-tools into it (mounted at `/opt/launcher`); the build container `<prefix><buildId>`
//! runs the user's image with the volume read-only at the mount point and `launch` as its
//! command. In native mode `SD_TOKEN` comes from the build's Secret through
//! `secretKeyRef`, never inline; `restartPolicy: Never`; `activeDeadlineSeconds` is the
//! build timeout plus a slack (the engine-side backstop of the launcher's own timeout).

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
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;

use crate::config::K8sConfig;

/// The key of the token in the build's Secret.
pub const TOKEN_KEY: &str = "token";
/// The job-tools volume.
const TOOLS_VOLUME: &str = "sd-tools";
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
        let mut rng = rand::rng();
        let suffix: String = (0..5)
            .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
            .collect();
        let build = labels.name();
        let pod = format!("{build}-{suffix}");
        let secret = format!("{pod}-token");
        Self { build, pod, secret }
    }
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

/// The Secret holding the build token.
pub(crate) fn secret(
    names: &Names,
    labels: BTreeMap<String, String>,
    build: &StartConfig,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names.secret.clone()),
            labels: Some(labels),
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

fn affinity(cfg: &K8sConfig) -> Option<Affinity> {
    if cfg.node_selectors.is_empty() && cfg.preferred_node_selectors.is_empty() {
        return None;
    }
    let required = (!cfg.node_selectors.is_empty()).then(|| NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: Some(
                cfg.node_selectors
                    .iter()
                    .map(|(k, v)| requirement(k, v))
                    .collect(),
            ),
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

fn tolerations(cfg: &K8sConfig) -> Option<Vec<Toleration>> {
    let mut t: Vec<Toleration> = cfg
        .node_selectors
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
    names: &Names,
    labels: BTreeMap<String, String>,
    timeout_minutes: u32,
) -> Pod {
    let spec = LaunchSpec::new(build, &cfg.mount_point, &cfg.ecosystem, timeout_minutes);
    let cmd = spec.command(cfg.launch_mode, &TokenDelivery::EnvFromSecret);
    let mut env_vars: Vec<EnvVar> = cmd.env.iter().map(|(k, v)| env(k, v.clone())).collect();
    env_vars.push(env("SD_BUILD_PREFIX", cfg.prefix.clone()));
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
        image: Some(format!("{}:{}", cfg.launcher_image, cfg.launcher_version)),
        command: Some(cfg.launcher_copy_command.clone()),
        volume_mounts: Some(vec![VolumeMount {
            name: TOOLS_VOLUME.into(),
            mount_path: TOOLS_STAGING.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let main = Container {
        name: names.build.clone(),
        image: Some(build.container.to_string()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        command: Some(vec![cmd.entrypoint.clone()]),
        args: Some(cmd.args.clone()),
        env: Some(env_vars),
        resources: Some(resources(cfg, build)),
        volume_mounts: Some(vec![VolumeMount {
            name: TOOLS_VOLUME.into(),
            mount_path: cfg.mount_point.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
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
            termination_grace_period_seconds: Some(cfg.termination_grace_period_seconds),
            image_pull_secrets: (!cfg.image_pull_secrets.is_empty()).then(|| {
                cfg.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            affinity: affinity(cfg),
            tolerations: tolerations(cfg),
            init_containers: Some(vec![init]),
            containers: vec![main],
            volumes: Some(vec![Volume {
                name: TOOLS_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }]),
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
