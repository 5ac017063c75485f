//! A real kube-apiserver v1.28.7 for tests: the shared control plane (dev machine or
//! `.ci/run`), or a private one a test may stop and restart, started from the shared
//! scripts (`up.sh`, `down.sh`; see `../shared/k8s/README.md`).
//!
//! Where the shared control plane lives: `$SDX_TEST_K8S_DIR` (`.ci/run` sets it), else
//! `$TMPDIR/sdx-test-k8s` (start one there with `up.sh`). The scripts: `$SDX_K8S_SCRIPTS`
//! (`.ci/run` sets it), else `<repo>/../shared/k8s`. Without them a test is skipped with
//! a message, except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use executor_k8s::K8sExecutorBuilder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};

/// The namespace `up.sh` creates and the limited user may use.
pub const NS: &str = "builds";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns `None`) with a message, or fails under `CI=true`.
fn missing<T>(test: &str, what: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true and {what}: the real-server test {test} cannot run");
    }
    eprintln!("Skipping {test}: {what} (see executor-k8s/README.md, \"Testing\")");
    None
}

/// The directory of `up.sh`, `down.sh` and `kubelet.sh`.
pub fn scripts() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("SDX_K8S_SCRIPTS")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo.join("../shared/k8s")])
        .find(|d| d.join("up.sh").is_file())
}

/// A free loopback port whose successor is free too (etcd uses both).
fn free_port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// Its state directory (`kubeconfig`, `kubeconfig-limited`, `pki/`, `logs/`).
    pub dir: PathBuf,
    /// Started by (and stopped with) this test, on its own ports.
    private: Option<PrivatePorts>,
}

#[derive(Debug)]
struct PrivatePorts {
    api: u16,
    etcd: u16,
    scripts: PathBuf,
}

impl ControlPlane {
    /// The shared control plane, if one runs.
    pub fn shared(test: &str) -> Option<Self> {
        let dir = std::env::var_os("SDX_TEST_K8S_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("sdx-test-k8s"));
        let ok = dir.join("kubeconfig-limited").is_file()
            && std::fs::read_to_string(dir.join("apiserver.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !ok {
            return missing(
                test,
                &format!(
                    "no kube-apiserver runs with state in {} (start one with ../shared/k8s/up.sh DIR and set SDX_TEST_K8S_DIR=DIR)",
                    dir.display()
                ),
            );
        }
        Some(Self { dir, private: None })
    }

    /// A private control plane on free ports in a fresh directory (about 5-15 s).
    pub async fn private(test: &str) -> Option<Self> {
        let Some(scripts) = scripts() else {
            return missing(
                test,
                "the control-plane scripts were not found (set SDX_K8S_SCRIPTS)",
            );
        };
        if Command::new("etcd").arg("--version").output().is_err() {
            return missing(test, "etcd is not installed (apt-get install etcd-server)");
        }
        let dir = std::env::temp_dir().join(format!(
            "sdx-k8s-{test}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let cp = Self {
            dir,
            private: Some(PrivatePorts {
                api: free_port(),
                etcd: free_port_pair(),
                scripts,
            }),
        };
        cp.up().await;
        Some(cp)
    }

    fn script(&self, name: &str) -> Command {
        let p = self.private.as_ref().expect("a private control plane");
        let mut c = Command::new(p.scripts.join(name));
        c.env("SDX_TEST_APISERVER_PORT", p.api.to_string())
            .env("SDX_TEST_ETCD_PORT", p.etcd.to_string())
            .arg(&self.dir);
        c
    }

    /// Starts (or, after [`ControlPlane::stop_apiserver`], restarts) the private control
    /// plane on its directory and waits until it is ready.
    pub async fn up(&self) {
        let mut c = self.script("up.sh");
        let out = tokio::task::spawn_blocking(move || c.output())
            .await
            .unwrap()
            .expect("run up.sh");
        assert!(
            out.status.success(),
            "up.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the private control plane's API server (etcd keeps running, with every object).
    pub async fn stop_apiserver(&self) {
        let pid: i32 = std::fs::read_to_string(self.dir.join("apiserver.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Command::new("kill")
            .arg(pid.to_string())
            .status()
            .expect("kill");
        for _ in 0..200 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let _ = std::fs::remove_file(self.dir.join("apiserver.pid"));
    }

    /// The least-privilege kubeconfig (user `executor`: pods, pods/log, secrets in `builds`).
    pub fn limited_kubeconfig(&self) -> String {
        self.dir
            .join("kubeconfig-limited")
            .to_string_lossy()
            .into_owned()
    }

    /// The admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> String {
        self.dir.join("kubeconfig").to_string_lossy().into_owned()
    }

    /// An admin client (the test's kubelet and scheduler).
    pub async fn admin(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(self.admin_kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    }

    /// An executor builder as a user would set it up: the limited kubeconfig, namespace
    /// `builds`, every other option at its default, and names prefixed with `prefix`.
    pub fn builder(&self, prefix: &str) -> K8sExecutorBuilder {
        K8sExecutorBuilder::new()
            .with_kubeconfig(self.limited_kubeconfig())
            .with_namespace(NS)
            .with_prefix(prefix)
    }

    /// The audit log's entries so far (one JSON object per request).
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("logs/audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.private.is_some() {
            let _ = self.script("down.sh").arg("--wipe").output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn rand_suffix() -> String {
    (0..6)
        .map(|_| char::from(b'a' + fastrand::u8(..26)))
        .collect()
}

/// Now as the API writes it.
pub fn now() -> String {
    ago(0)
}

/// `secs` seconds ago, as the API writes times.
pub fn ago(secs: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Plays the scheduler and kubelet for pods of namespace `builds`, with the same PATCHes
/// as `kubelet.sh` (merge-patches of `pods/POD/status`) and the `binding` subresource.
#[derive(Clone)]
pub struct Kubelet {
    pods: Api<Pod>,
    secrets: Api<Secret>,
}

impl Kubelet {
    /// The kubelet of `cp` (admin credentials).
    pub async fn new(cp: &ControlPlane) -> Self {
        let c = cp.admin().await;
        Self {
            pods: Api::namespaced(c.clone(), NS),
            secrets: Api::namespaced(c, NS),
        }
    }

    /// The pods API (admin).
    pub fn pods(&self) -> &Api<Pod> {
        &self.pods
    }

    /// The Secrets API (admin).
    pub fn secrets(&self) -> &Api<Secret> {
        &self.secrets
    }

    /// The pods of build `<prefix><id>`.
    pub async fn pods_of(&self, prefix: &str, id: u64) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels(&format!("sdbuild={prefix}{id}")))
            .await
            .unwrap()
            .items
    }

    /// The one pod of build `<prefix><id>`.
    pub async fn pod_name(&self, prefix: &str, id: u64) -> String {
        let pods = self.pods_of(prefix, id).await;
        assert_eq!(pods.len(), 1, "pods of {prefix}{id}");
        pods[0].metadata.name.clone().unwrap()
    }

    /// What the scheduler does: binds the pod to `node1`.
    pub async fn bind(&self, pod: &str) {
        self.try_bind(pod).await.unwrap();
    }

    async fn try_bind(&self, pod: &str) -> kube::Result<()> {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node1"}});
        self.pods
            .create_subresource::<Value, Value>("binding", pod, &PostParams::default(), &binding)
            .await
            .map(drop)
    }

    /// Merge-patches the pod's status.
    pub async fn status(&self, pod: &str, status: Value) {
        self.pods
            .patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
    }

    async fn container(&self, pod: &str) -> String {
        let p = self.pods.get(pod).await.unwrap();
        p.spec.unwrap().containers[0].name.clone()
    }

    async fn build_state(&self, pod: &str, phase: &str, ready: bool, state: Value) {
        let name = self.container(pod).await;
        self.status(
            pod,
            json!({"phase": phase, "containerStatuses": [{"name": name, "image": "x",
                "imageID": "", "ready": ready, "restartCount": 0, "state": state}]}),
        )
        .await;
    }

    /// Phase Running, build container running (`kubelet.sh POD running`).
    pub async fn running(&self, pod: &str) {
        self.build_state(
            pod,
            "Running",
            true,
            json!({"running": {"startedAt": now()}}),
        )
        .await;
    }

    /// Phase Succeeded, exit 0, after the reference `launch` wrote the launch handshake
    /// to the termination message file (as it does when the pod's build container names
    /// it in `SD_LAUNCH_RESULT_FILE`; the kubelet copies the file into the status).
    pub async fn succeeded(&self, pod: &str) {
        let p = self.pods.get(pod).await.unwrap();
        let id = p.metadata.labels.as_ref().unwrap()["screwdriver.cd/build-id"].clone();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let path = c.termination_message_path.clone().unwrap_or_default();
        let asked = c.env.iter().flatten().any(|e| {
            e.name == "SD_LAUNCH_RESULT_FILE" && e.value.as_deref() == Some(path.as_str())
        });
        let message =
            asked.then(|| format!("sdx-launch-result protocol=1 build={id} status=SUCCESS\n"));
        self.exit_0(pod, message).await;
    }

    /// Phase Succeeded, exit 0, no termination message: a launcher that does not speak
    /// the launch protocol (upstream's prints its usage on `--token-file` and exits 0).
    pub async fn succeeded_without_handshake(&self, pod: &str) {
        self.exit_0(pod, None).await;
    }

    async fn exit_0(&self, pod: &str, message: Option<String>) {
        let t = now();
        self.build_state(
            pod,
            "Succeeded",
            false,
            json!({"terminated": {"exitCode": 0, "message": message,
            "reason": "Completed", "startedAt": t, "finishedAt": t}}),
        )
        .await;
    }

    /// Phase Failed, exit `code`.
    pub async fn failed(&self, pod: &str, code: i32) {
        let t = now();
        self.build_state(
            pod,
            "Failed",
            false,
            json!({"terminated": {"exitCode": code,
            "reason": "Error", "startedAt": t, "finishedAt": t}}),
        )
        .await;
    }

    /// Build container OOM-killed with exit `code`; the phase stays Running.
    pub async fn oom(&self, pod: &str, code: i32) {
        let t = now();
        self.build_state(
            pod,
            "Running",
            false,
            json!({"terminated": {"exitCode": code,
            "reason": "OOMKilled", "startedAt": t, "finishedAt": t}}),
        )
        .await;
    }

    /// Build container waiting with `reason`.
    pub async fn waiting(&self, pod: &str, reason: &str, message: &str) {
        self.build_state(
            pod,
            "Pending",
            false,
            json!({"waiting": {"reason": reason, "message": message}}),
        )
        .await;
    }

    /// Just the phase.
    pub async fn phase(&self, pod: &str, phase: &str) {
        self.status(pod, json!({"phase": phase})).await;
    }

    /// `PodScheduled=False/Unschedulable` with the scheduler's message.
    pub async fn unschedulable(&self, pod: &str, message: &str) {
        self.status(
            pod,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": now()}]}),
        )
        .await;
    }

    /// Deletes the pod as someone else would (`kubectl delete pod`).
    pub async fn delete(&self, pod: &str) {
        let _ = self.pods.delete(pod, &DeleteParams::default()).await;
    }

    /// Deletes every pod and Secret of builds named `<prefix>...`, at once.
    pub async fn clean(&self, prefix: &str) {
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let ours = |l: Option<&std::collections::BTreeMap<String, String>>| {
            l.and_then(|l| l.get("sdbuild"))
                .is_some_and(|b| b.starts_with(prefix))
        };
        for p in self.pods.list(&ListParams::default()).await.unwrap().items {
            if ours(p.metadata.labels.as_ref()) {
                let _ = self
                    .pods
                    .delete(p.metadata.name.as_deref().unwrap(), &now)
                    .await;
            }
        }
        for s in self
            .secrets
            .list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
        {
            if ours(s.metadata.labels.as_ref()) {
                let _ = self
                    .secrets
                    .delete(s.metadata.name.as_deref().unwrap(), &now)
                    .await;
            }
        }
    }

    /// A background kubelet for builds named `<prefix>...` whose launcher exits 0 without
    /// the launch handshake: binds each pod and ends its build container with exit 0 and
    /// no termination message (polling every 50 ms); finishes graceful deletions.
    pub fn auto_exit_without_handshake(&self, prefix: &str) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            loop {
                let lp = ListParams::default().labels("app=screwdriver");
                for p in me.pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                    let ours = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("sdbuild"))
                        .is_some_and(|b| b.starts_with(&prefix));
                    let Some(name) = p.metadata.name.clone().filter(|_| ours) else {
                        continue;
                    };
                    if p.metadata.deletion_timestamp.is_some() {
                        let now = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..DeleteParams::default()
                        };
                        let _ = me.pods.delete(&name, &now).await;
                        continue;
                    }
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    if phase.as_deref() == Some("Succeeded") {
                        continue;
                    }
                    let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                    if !bound && me.try_bind(&name).await.is_err() {
                        continue;
                    }
                    let c = p.spec.as_ref().unwrap().containers[0].name.clone();
                    let t = now();
                    let _ = me
                        .pods
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"phase": "Succeeded",
                                "containerStatuses": [{"name": c, "image": "x",
                                "imageID": "", "ready": false, "restartCount": 0,
                                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                "startedAt": t, "finishedAt": t}}}]}})),
                        )
                        .await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    }

    /// A background kubelet for builds named `<prefix>...`: binds and runs every new pod,
    /// and finishes graceful deletions at once (what a node's kubelet confirms), as a
    /// cluster would. Stops when the handle is aborted.
    pub fn auto(&self, prefix: &str) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let wc = watcher::Config::default().labels("app=screwdriver");
            let stream = watcher::watcher(me.pods.clone(), wc);
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let pod = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                    _ => continue,
                };
                let ours = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("sdbuild"))
                    .is_some_and(|b| b.starts_with(&prefix));
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                if !ours {
                    continue;
                }
                if pod.metadata.deletion_timestamp.is_some() {
                    let _ = me
                        .pods
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..DeleteParams::default()
                            },
                        )
                        .await;
                    continue;
                }
                let bound = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some();
                if !bound {
                    let me = me.clone();
                    tokio::spawn(async move {
                        // The pod may be deleted meanwhile: then there is nothing to run.
                        if me.try_bind(&name).await.is_ok()
                            && let Ok(p) = me.pods.get(&name).await
                        {
                            let c = p.spec.unwrap().containers[0].name.clone();
                            let _ = me
                                .pods
                                .patch_status(
                                    &name,
                                    &PatchParams::default(),
                                    &Patch::Merge(json!({"status": {"phase": "Running",
                                        "containerStatuses": [{"name": c, "image": "x",
                                        "imageID": "", "ready": true, "restartCount": 0,
                                        "state": {"running": {"startedAt": now()}}}]}})),
                                )
                                .await;
                        }
                    });
                }
            }
        })
    }
}
