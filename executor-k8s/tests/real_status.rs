//! The whole pod-state table against a real kube-apiserver (the shared control plane):
//! the test binds pods and writes their status with the same PATCHes a scheduler and
//! kubelet send, and the executor (least-privilege user, default options) reports what
//! the README's table says.

mod support;

use std::time::Duration;

use executor_base::verdict::{CONTACT_ADMIN_MESSAGE, IMAGE_INVALID_MESSAGE, pod_status_message};
use executor_base::{BuildStatus, Executor, FailureReason, Phase, Verdict};
use executor_k8s::K8sExecutor;
use futures::FutureExt;
use serde_json::json;
use support::real::{ControlPlane, Kubelet, ago};
use support::{start_cfg, stop_cfg};

/// Waits (up to 15 s) until build `id`'s status satisfies `pred`.
async fn until(
    e: &K8sExecutor,
    id: u64,
    what: &str,
    pred: impl Fn(&BuildStatus) -> bool,
) -> BuildStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let last = match e.status(&stop_cfg(id)).await {
            Ok(s) if pred(&s) => return s,
            other => other,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "build {id}: timed out waiting for {what}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn verdict(e: &K8sExecutor, id: u64) -> Verdict {
    e.verify(&start_cfg(id)).await.unwrap()
}

/// Starts build `id` and returns its pod.
async fn start(e: &K8sExecutor, k: &Kubelet, prefix: &str, id: u64) -> String {
    e.start(&start_cfg(id)).await.unwrap();
    k.pod_name(prefix, id).await
}

/// One row of the table: the build's pod goes through `drive`, and the status must
/// satisfy `want`.
macro_rules! row {
    ($e:expr, $k:expr, $prefix:expr, $id:expr, |$pod:ident| $drive:block, $what:expr, |$s:ident| $want:expr) => {{
        let (e, k) = ($e, $k);
        async move {
            let $pod = start(e, k, $prefix, $id).await;
            $drive;
            let $s = until(e, $id, $what, |$s| $want).await;
            ($id, $s)
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_state_table_on_a_real_api_server() {
    const P: &str = "rstat-";
    let Some(cp) = ControlPlane::shared("the_pod_state_table_on_a_real_api_server") else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    k.clean(P).await;
    let e = cp.builder(P).build().await.unwrap();
    e.wait_synced(Duration::from_secs(30)).await.unwrap();
    // References, so each row's future can copy them.
    let (e, k) = (&e, &k);

    let rows = futures::future::join_all([
        row!(e, k, P, 1, |_pod| {}, "pending", |s| s.phase
            == Phase::Pending
            && s.message == "waiting for a node")
        .boxed_local(),
        row!(
            e,
            k,
            P,
            2,
            |pod| { k.bind(&pod).await },
            "initializing",
            |s| s.phase == Phase::Pulling && s.message.starts_with("initializing")
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            3,
            |pod| {
                k.unschedulable(&pod, "0/1 nodes are available: 1 Insufficient cpu.")
                    .await
            },
            "unschedulable, within its grace",
            |s| s.phase == Phase::Pending
                && s.message.contains("Insufficient cpu")
                && s.message.contains("(fails in")
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            4,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await
            },
            "running",
            |s| s.phase == Phase::Running
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            5,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.succeeded(&pod).await
            },
            "succeeded",
            |s| s.phase == Phase::Succeeded && s.exit_code == Some(0)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            6,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.failed(&pod, 5).await
            },
            "failed 5",
            |s| s.reason() == Some(FailureReason::NonZeroExit) && s.exit_code == Some(5)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            17,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.failed(&pod, 3).await
            },
            "launch's timeout (exit 3)",
            |s| s.phase == Phase::TimedOut && s.exit_code == Some(3)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            7,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.oom(&pod, 0).await
            },
            "oom",
            |s| s.reason() == Some(FailureReason::OutOfMemory) && s.exit_code == Some(0)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            8,
            |pod| {
                k.bind(&pod).await;
                k.waiting(&pod, "ErrImagePull", "manifest unknown").await
            },
            "image pull, within its grace",
            |s| s.phase == Phase::Pulling
                && s.message
                    .contains("ErrImagePull: manifest unknown (fails in")
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            9,
            |pod| {
                k.bind(&pod).await;
                k.waiting(&pod, "InvalidImageName", "bad").await
            },
            "invalid image",
            |s| s.reason() == Some(FailureReason::InvalidImage)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            10,
            |pod| {
                k.bind(&pod).await;
                k.waiting(&pod, "CrashLoopBackOff", "back-off").await
            },
            "crash loop",
            |s| s.reason() == Some(FailureReason::CrashLoop)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            11,
            |pod| {
                k.bind(&pod).await;
                k.waiting(&pod, "CreateContainerConfigError", "no secret")
                    .await
            },
            "container config",
            |s| s.reason() == Some(FailureReason::ContainerConfig)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            12,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.phase(&pod, "Unknown").await
            },
            "unknown, within its grace",
            |s| s.phase == Phase::Running && s.message.contains("pod phase Unknown (fails in")
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            13,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.status(
                    &pod,
                    json!({"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory."}),
                )
                .await
            },
            "evicted",
            |s| s.phase == Phase::Lost && s.reason() == Some(FailureReason::Evicted)
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            14,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.status(
                    &pod,
                    json!({"phase": "Failed", "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline"}),
                )
                .await
            },
            "deadline",
            |s| s.phase == Phase::TimedOut
        )
        .boxed_local(),
        row!(
            e,
            k,
            P,
            15,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.delete(&pod).await
            },
            "deleted by someone else",
            |s| s.phase == Phase::Lost
                && s.failure.as_ref().and_then(|f| f.build_started) == Some(true)
        )
        .boxed_local(),
        // Native mode: a launcher that exits 0 without writing the launch handshake to
        // the termination message never ran the build (upstream's on `--token-file`).
        row!(
            e,
            k,
            P,
            16,
            |pod| {
                k.bind(&pod).await;
                k.running(&pod).await;
                k.succeeded_without_handshake(&pod).await
            },
            "exit 0 without the handshake",
            |s| s.phase == Phase::Failed
                && s.reason() == Some(FailureReason::LaunchProtocol)
                && s.exit_code == Some(0)
        )
        .boxed_local(),
    ])
    .await;
    assert_eq!(rows.len(), 17);

    // The verify strings of a few of them.
    assert_eq!(verdict(e, 1).await, Verdict::Waiting);
    assert_eq!(verdict(e, 2).await, Verdict::Initializing);
    assert_eq!(verdict(e, 4).await, Verdict::Healthy);
    assert_eq!(verdict(e, 6).await.as_str(), pod_status_message("failed"));
    assert_eq!(verdict(e, 9).await.as_str(), IMAGE_INVALID_MESSAGE);
    assert_eq!(verdict(e, 10).await.as_str(), CONTACT_ADMIN_MESSAGE);

    // A stop: canceled, and the pod (bound, so gracefully deleted) is on its way out.
    e.stop(&stop_cfg(4)).await.unwrap();
    assert_eq!(
        until(e, 4, "canceled", |s| s.is_terminal()).await.phase,
        Phase::Canceled
    );
    let pods = k.pods_of(P, 4).await;
    assert!(
        pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()),
        "{pods:?}"
    );
    k.clean(P).await;
}

#[tokio::test]
async fn graces_end_in_failures_on_a_real_api_server() {
    const P: &str = "rgrace-";
    let Some(cp) = ControlPlane::shared("graces_end_in_failures_on_a_real_api_server") else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    k.clean(P).await;
    // Test-only short graces (the default-settings rows above show them pending).
    let e = cp
        .builder(P)
        .with_image_pull_grace(Duration::from_secs(2))
        .with_pending_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    e.wait_synced(Duration::from_secs(30)).await.unwrap();
    let pod = start(&e, &k, P, 1).await;
    k.bind(&pod).await;
    k.waiting(&pod, "ImagePullBackOff", "Back-off pulling image")
        .await;
    let s = until(&e, 1, "image pull failure", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::ImagePull), "{s}");
    assert_eq!(verdict(&e, 1).await.as_str(), IMAGE_INVALID_MESSAGE);

    let pod = start(&e, &k, P, 2).await;
    k.unschedulable(&pod, "0/1 nodes are available: 1 Insufficient memory.")
        .await;
    let s = until(&e, 2, "unschedulable failure", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::Unschedulable), "{s}");
    assert!(s.message.contains("Insufficient memory"), "{s}");
    k.clean(P).await;
}

#[tokio::test]
async fn the_image_pull_grace_survives_an_executor_restart() {
    const P: &str = "rpull-";
    let Some(cp) = ControlPlane::shared("the_image_pull_grace_survives_an_executor_restart") else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    k.clean(P).await;
    let e = cp.builder(P).build().await.unwrap();
    e.wait_synced(Duration::from_secs(30)).await.unwrap();
    let pod = start(&e, &k, P, 1).await;
    k.bind(&pod).await;
    // The kubelet started the pod 50 s ago and its init container finished 45 s ago;
    // the build image has failed to pull since.
    let c = k.pods().get(&pod).await.unwrap().spec.unwrap().containers[0]
        .name
        .clone();
    k.status(&pod, json!({"phase": "Pending", "startTime": ago(50),
        "conditions": [{"type": "Initialized", "status": "True", "lastTransitionTime": ago(45)}],
        "containerStatuses": [{"name": c, "image": "x", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": "timeout"}}}]}))
        .await;
    drop(e);
    // A new executor (a restarted server) counts from the pod's own timestamps: about
    // 15 s left of the 60 s grace, not a fresh 60 s.
    let e = cp.builder(P).build().await.unwrap();
    e.wait_synced(Duration::from_secs(30)).await.unwrap();
    let s = e.status(&stop_cfg(1)).await.unwrap();
    let left: u64 = s
        .message
        .split("(fails in ")
        .nth(1)
        .and_then(|r| r.strip_suffix("s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no grace note in {s}"));
    assert!((10..=16).contains(&left), "{s}");
    k.clean(P).await;
}
