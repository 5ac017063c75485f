//! [`BuildTimings`] of a Kubernetes build, from its pod.
//!
//! Accepted when the pod was created, scheduled when `PodScheduled` turned true, running
//! and finished from the build container's state (`running.startedAt`,
//! `terminated.startedAt` / `finishedAt`). Pulls are not separated (the kubelet reports
//! them only as events), and peak memory is not known: the API server has no memory
//! figures without metrics-server, which this backend does not require.

use executor_base::BuildTimings;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::view::{became_true, to_chrono};

/// The build container's status (the pod's first container).
fn build_container(pod: &Pod) -> Option<&ContainerStatus> {
    let name = pod.spec.as_ref()?.containers.first()?.name.as_str();
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// What `pod` tells of its build's timings.
pub(crate) fn from_pod(pod: &Pod) -> BuildTimings {
    let state = build_container(pod).and_then(|c| c.state.as_ref());
    let running = state
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    BuildTimings {
        accepted: pod.metadata.creation_timestamp.as_ref().and_then(to_chrono),
        scheduled: became_true(pod, "PodScheduled"),
        running: running
            .or(terminated.and_then(|t| t.started_at.as_ref()))
            .and_then(to_chrono),
        finished: terminated
            .and_then(|t| t.finished_at.as_ref())
            .and_then(to_chrono),
        ..BuildTimings::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn a_finished_pod_tells_every_phase_but_pulls_and_memory() {
        let pod = Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(t("2026-12-03T10:00:00Z")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "build".into(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    last_transition_time: Some(t("2026-12-03T10:00:02Z")),
                    ..PodCondition::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "build".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            started_at: Some(t("2026-12-03T10:00:05Z")),
                            finished_at: Some(t("2026-12-03T10:01:05Z")),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        };
        let timings = from_pod(&pod);
        assert_eq!(
            timings.to_string(),
            "queued 2.0s, starting 3.0s, running 60.0s"
        );
        assert_eq!(timings.peak_memory_bytes, None);
    }
}
