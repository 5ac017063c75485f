//! A tiny "kubelet" the test drives: it moves pods through their lives by writing their
//! status the way a scheduler and kubelet would, each step one `MODIFIED` event.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::Shared;
use super::store::{Kind, Selector};

/// What the background kubelet does with each new pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoKubelet {
    /// Schedule, run the init container, then keep the build running until deleted.
    RunUntilDeleted,
    /// Like `RunUntilDeleted`, then exit 0 after the given time (the reference `launch`,
    /// with its launch handshake, see [`Kubelet::exit`]).
    SucceedAfter(Duration),
    /// Like `RunUntilDeleted`, then exit 0 after the given time **without** the launch
    /// handshake (see [`Kubelet::exit_without_handshake`]).
    ExitWithoutHandshakeAfter(Duration),
}

/// Drives the pods of one namespace.
#[derive(Clone)]
pub struct Kubelet {
    shared: Arc<Shared>,
    ns: String,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet").field("ns", &self.ns).finish()
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn condition(
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        last_transition_time: Some(now()),
        ..PodCondition::default()
    }
}

fn set_condition(st: &mut PodStatus, c: PodCondition) {
    let list = st.conditions.get_or_insert_with(Vec::new);
    list.retain(|x| x.type_ != c.type_);
    list.push(c);
}

fn container_status(name: &str, state: ContainerState, ready: bool) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(state),
        ready,
        restart_count: 0,
        image: String::new(),
        image_id: String::new(),
        ..ContainerStatus::default()
    }
}

/// What the reference `launch` leaves in the termination message of pod `p`'s build
/// container when it exits with `code`: the handshake line, when the container tells it
/// to write one to its `terminationMessagePath`.
fn handshake_message(p: &Pod, code: i32) -> Option<String> {
    let c = p.spec.as_ref()?.containers.first()?;
    let path = c
        .termination_message_path
        .as_deref()
        .unwrap_or("/dev/termination-log");
    let asked = c
        .env
        .as_ref()?
        .iter()
        .any(|e| e.name == "SD_LAUNCH_RESULT_FILE" && e.value.as_deref() == Some(path));
    let build_id = p
        .metadata
        .labels
        .as_ref()?
        .get(executor_base::labels::LABEL_BUILD_ID)?;
    let status = match code {
        0 => "SUCCESS",
        1 => "FAILURE",
        3 => "TIMEOUT",
        _ => "ERROR",
    };
    asked.then(|| format!("sdx-launch-result protocol=1 build={build_id} status={status}\n"))
}

fn build_name(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn init_name(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.name.clone())
}

fn set_build_state(p: &mut Pod, state: ContainerState, ready: bool) {
    let name = build_name(p);
    let st = p.status.get_or_insert_with(PodStatus::default);
    st.container_statuses = Some(vec![container_status(&name, state, ready)]);
}

fn set_init_state(p: &mut Pod, state: ContainerState) {
    if let Some(name) = init_name(p) {
        let st = p.status.get_or_insert_with(PodStatus::default);
        st.init_container_statuses = Some(vec![container_status(&name, state, false)]);
    }
}

fn terminated(code: i32, reason: &str, message: Option<&str>, started: bool) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            message: message.map(Into::into),
            started_at: started.then(now),
            finished_at: Some(now()),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(Into::into),
        }),
        ..ContainerState::default()
    }
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(now()),
        }),
        ..ContainerState::default()
    }
}

fn build_started(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| {
            s.running.is_some()
                || s.terminated
                    .as_ref()
                    .is_some_and(|t| t.started_at.is_some())
        })
}

impl Kubelet {
    pub(crate) fn new(shared: Arc<Shared>, ns: &str) -> Self {
        Self {
            shared,
            ns: ns.to_string(),
        }
    }

    /// Every pod of the namespace.
    pub fn pods(&self) -> Vec<Pod> {
        let st = self.shared.store.lock();
        st.list(
            Kind::Pods,
            &self.ns,
            &Selector::parse("").expect("empty selector"),
        )
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
    }

    /// Names of every pod of the namespace.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods()
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// One pod.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        let v = self
            .shared
            .store
            .lock()
            .get(Kind::Pods, &self.ns, name)
            .cloned()?;
        serde_json::from_value(v).ok()
    }

    /// Every Secret of the namespace.
    pub fn secrets(&self) -> Vec<Secret> {
        let st = self.shared.store.lock();
        st.list(
            Kind::Secrets,
            &self.ns,
            &Selector::parse("").expect("empty selector"),
        )
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
    }

    /// Changes a pod through its typed form (one `MODIFIED` event). `false` if absent.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut Pod)) -> bool {
        self.shared
            .store
            .lock()
            .update(Kind::Pods, &self.ns, name, |v| {
                if let Ok(mut pod) = serde_json::from_value::<Pod>(v.clone()) {
                    f(&mut pod);
                    if let Ok(nv) = serde_json::to_value(&pod) {
                        *v = nv;
                    }
                }
            })
            .is_some()
    }

    /// The scheduler placed the pod on `node`.
    pub fn schedule(&self, name: &str, node: &str) -> bool {
        self.update(name, |p| {
            p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
            let st = p.status.get_or_insert_with(PodStatus::default);
            set_condition(st, condition("PodScheduled", "True", None, None));
        })
    }

    /// The scheduler cannot place the pod.
    pub fn unschedulable(&self, name: &str, message: &str) -> bool {
        self.update(name, |p| {
            let st = p.status.get_or_insert_with(PodStatus::default);
            set_condition(
                st,
                condition(
                    "PodScheduled",
                    "False",
                    Some("Unschedulable"),
                    Some(message),
                ),
            );
        })
    }

    /// The launcher init container is running.
    pub fn init_running(&self, name: &str) -> bool {
        self.update(name, |p| set_init_state(p, running()))
    }

    /// The launcher init container exited with `code`; non-zero fails the pod.
    pub fn init_exit(&self, name: &str, code: i32) -> bool {
        self.update(name, |p| {
            set_init_state(
                p,
                terminated(
                    code,
                    if code == 0 { "Completed" } else { "Error" },
                    None,
                    true,
                ),
            );
            if code != 0 {
                p.status.get_or_insert_with(PodStatus::default).phase = Some("Failed".into());
            }
        })
    }

    /// A container (the init container if `init`, else the build container) waits for
    /// `reason` (`ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`, ...).
    pub fn waiting(&self, name: &str, init: bool, reason: &str, message: &str) -> bool {
        let msg = (!message.is_empty()).then_some(message);
        self.update(name, |p| {
            if init {
                set_init_state(p, waiting(reason, msg));
            } else {
                set_build_state(p, waiting(reason, msg), false);
            }
        })
    }

    /// The build container runs (init done, phase `Running`).
    pub fn run(&self, name: &str) -> bool {
        self.update(name, |p| {
            set_init_state(p, terminated(0, "Completed", None, true));
            set_build_state(p, running(), true);
            let st = p.status.get_or_insert_with(PodStatus::default);
            st.phase = Some("Running".into());
            st.start_time = Some(now());
            set_condition(st, condition("Ready", "True", None, None));
        })
    }

    /// The build container's `launch` (the reference one) exits with `code` (phase
    /// `Succeeded` or `Failed`). As the real pair does, when the container names a result
    /// file (`SD_LAUNCH_RESULT_FILE`, native mode) that is its `terminationMessagePath`,
    /// `launch` wrote the launch handshake there and the kubelet reports it as the
    /// termination message.
    pub fn exit(&self, name: &str, code: i32) -> bool {
        self.exit_as(name, code, true)
    }

    /// The build container exits with `code` and writes no termination message: a
    /// launcher that does not speak the launch protocol (upstream's, on native mode's
    /// `--token-file`, prints its usage and exits 0).
    pub fn exit_without_handshake(&self, name: &str, code: i32) -> bool {
        self.exit_as(name, code, false)
    }

    fn exit_as(&self, name: &str, code: i32, handshake: bool) -> bool {
        self.update(name, |p| {
            let started = build_started(p);
            let message = handshake.then(|| handshake_message(p, code)).flatten();
            set_build_state(
                p,
                terminated(
                    code,
                    if code == 0 { "Completed" } else { "Error" },
                    message.as_deref(),
                    started || code == 0,
                ),
                false,
            );
            p.status.get_or_insert_with(PodStatus::default).phase =
                Some(if code == 0 { "Succeeded" } else { "Failed" }.into());
        })
    }

    /// The build container is OOM-killed, reporting `exit_code` (which may be 0).
    pub fn oom(&self, name: &str, exit_code: i32) -> bool {
        self.update(name, |p| {
            set_build_state(p, terminated(exit_code, "OOMKilled", None, true), false);
            p.status.get_or_insert_with(PodStatus::default).phase = Some(
                if exit_code == 0 {
                    "Succeeded"
                } else {
                    "Failed"
                }
                .into(),
            );
        })
    }

    /// The kubelet evicts the pod (node pressure): `DisruptionTarget`, phase `Failed`,
    /// reason `Evicted`.
    pub fn evict(&self, name: &str, message: &str) -> bool {
        self.update(name, |p| {
            let started = build_started(p);
            if started {
                set_build_state(p, terminated(137, "Error", None, true), false);
            }
            let st = p.status.get_or_insert_with(PodStatus::default);
            set_condition(
                st,
                condition(
                    "DisruptionTarget",
                    "True",
                    Some("TerminationByKubelet"),
                    Some(message),
                ),
            );
            st.phase = Some("Failed".into());
            st.reason = Some("Evicted".into());
            st.message = Some(message.into());
        })
    }

    /// Only the `DisruptionTarget=True` condition (preemption or drain announced).
    pub fn disrupt(&self, name: &str, reason: &str) -> bool {
        self.update(name, |p| {
            let st = p.status.get_or_insert_with(PodStatus::default);
            set_condition(
                st,
                condition("DisruptionTarget", "True", Some(reason), None),
            );
        })
    }

    /// `activeDeadlineSeconds` passed: phase `Failed`, reason `DeadlineExceeded`.
    pub fn deadline_exceeded(&self, name: &str) -> bool {
        self.update(name, |p| {
            if build_started(p) {
                set_build_state(p, terminated(137, "Error", None, true), false);
            }
            let st = p.status.get_or_insert_with(PodStatus::default);
            st.phase = Some("Failed".into());
            st.reason = Some("DeadlineExceeded".into());
            st.message =
                Some("Pod was active on the node longer than the specified deadline".into());
        })
    }

    /// The node stopped reporting: phase `Unknown`.
    pub fn lose_node(&self, name: &str) -> bool {
        self.update(name, |p| {
            p.status.get_or_insert_with(PodStatus::default).phase = Some("Unknown".into());
        })
    }

    /// Someone started a graceful delete (`deletionTimestamp` set, pod still there).
    pub fn mark_deleting(&self, name: &str) -> bool {
        self.update(name, |p| {
            p.metadata.deletion_timestamp = Some(now());
            p.metadata.deletion_grace_period_seconds = Some(30);
        })
    }

    /// Someone deleted the pod behind the executor's back (gone at once; the garbage
    /// collector takes the Secrets it owns).
    pub fn delete(&self, name: &str) -> bool {
        self.shared
            .store
            .lock()
            .delete(Kind::Pods, &self.ns, name)
            .is_ok()
    }

    /// Schedules and runs every pod of the namespace still `Pending`.
    pub fn run_pending(&self) -> usize {
        let names: Vec<String> = self
            .pods()
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
            .filter_map(|p| p.metadata.name)
            .collect();
        for n in &names {
            self.schedule(n, "node-1");
            self.init_running(n);
            self.run(n);
        }
        names.len()
    }
}

/// The background kubelet: follows the change feed, runs each new pod.
pub(crate) fn spawn_auto(shared: Arc<Shared>, mode: AutoKubelet) -> tokio::task::JoinHandle<()> {
    let mut rx = shared.store.lock().subscribe();
    tokio::spawn(async move {
        loop {
            let change = match rx.recv().await {
                Ok(c) => c,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            if change.kind != Kind::Pods || change.event != "ADDED" {
                continue;
            }
            let Some(name) = change.object["metadata"]["name"]
                .as_str()
                .map(str::to_string)
            else {
                continue;
            };
            let kubelet = Kubelet::new(shared.clone(), &change.ns);
            kubelet.schedule(&name, "node-1");
            kubelet.init_running(&name);
            kubelet.run(&name);
            match mode {
                AutoKubelet::RunUntilDeleted => {}
                AutoKubelet::SucceedAfter(d) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        kubelet.exit(&name, 0);
                    });
                }
                AutoKubelet::ExitWithoutHandshakeAfter(d) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        kubelet.exit_without_handshake(&name, 0);
                    });
                }
            }
        }
    })
}
