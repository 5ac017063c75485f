//! `status` and `verify` through the per-reason policy, driven by the fake kubelet.

mod support;

use std::time::Duration;

use executor_base::verdict::{CONTACT_ADMIN_MESSAGE, IMAGE_INVALID_MESSAGE, pod_status_message};
use executor_base::{BuildStatus, ErrorKind, Executor, FailureReason, Phase, Verdict};
use executor_k8s::K8sExecutor;
use executor_k8s::fake::{FakeApiServer, Kubelet};
use support::*;

async fn status(e: &K8sExecutor, id: u64) -> BuildStatus {
    e.status(&stop_cfg(id)).await.unwrap()
}

async fn verdict(e: &K8sExecutor, id: u64) -> Verdict {
    e.verify(&start_cfg(id)).await.unwrap()
}

/// Waits until the build's status satisfies `pred`.
async fn until(
    e: &K8sExecutor,
    id: u64,
    what: &str,
    pred: impl Fn(&BuildStatus) -> bool,
) -> BuildStatus {
    eventually(what, || async {
        let s = status(e, id).await;
        pred(&s).then_some(s)
    })
    .await
}

/// Starts build `id` and returns its pod's name.
async fn started(e: &K8sExecutor, k: &Kubelet, id: u64) -> String {
    e.start(&start_cfg(id)).await.unwrap();
    pod_name(k, id)
}

#[tokio::test]
async fn pending_then_initializing_then_running_then_succeeded() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 1).await;
    k.unschedulable(&pod, "0/3 nodes are available: 3 Insufficient cpu.");
    let s = until(&e, 1, "unschedulable seen", |s| {
        s.message.contains("Insufficient")
    })
    .await;
    assert_eq!(s.phase, Phase::Pending);
    assert_eq!(verdict(&e, 1).await, Verdict::Waiting);
    k.schedule(&pod, "node-1");
    k.init_running(&pod);
    let s = until(&e, 1, "initializing", |s| s.phase == Phase::Pulling).await;
    assert!(s.message.starts_with("initializing"), "{s}");
    assert_eq!(verdict(&e, 1).await, Verdict::Initializing);
    k.run(&pod);
    until(&e, 1, "running", |s| s.phase == Phase::Running).await;
    assert_eq!(verdict(&e, 1).await.as_str(), "");
    k.exit(&pod, 0);
    let s = until(&e, 1, "succeeded", |s| s.is_terminal()).await;
    assert_eq!((s.phase, s.exit_code), (Phase::Succeeded, Some(0)));
    assert_eq!(verdict(&e, 1).await, Verdict::Healthy);
    // The pod tells its timings: created, PodScheduled, the build container's times.
    let t = e.timings(&stop_cfg(1)).await.unwrap().unwrap();
    let (a, sc, r, f) = (
        t.accepted.unwrap(),
        t.scheduled.unwrap(),
        t.running.unwrap(),
        t.finished.unwrap(),
    );
    assert!(a <= sc && sc <= r && r <= f, "{t:?}");
    assert_eq!(
        (t.pull_started, t.peak_memory_bytes),
        (None, None),
        "no pulls nor memory without events and metrics-server"
    );
    assert_eq!(
        e.timings(&stop_cfg(2)).await.unwrap(),
        None,
        "a build without a pod has none"
    );
}

#[tokio::test]
async fn launchs_exit_3_is_timed_out_and_4_canceled() {
    let (_f, k, e) = setup().await;
    for (id, code, phase) in [(31, 3, Phase::TimedOut), (32, 4, Phase::Canceled)] {
        let pod = started(&e, &k, id).await;
        k.run(&pod);
        k.exit(&pod, code);
        let s = until(&e, id, "ended", |s| s.is_terminal()).await;
        assert_eq!((s.phase, s.exit_code), (phase, Some(code)), "{s:?}");
    }
}

#[tokio::test]
async fn non_zero_exit_fails_with_the_exit_code() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 2).await;
    k.run(&pod);
    k.exit(&pod, 5);
    let s = until(&e, 2, "failed", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.exit_code, s.reason()),
        (Phase::Failed, Some(5), Some(FailureReason::NonZeroExit))
    );
    assert_eq!(verdict(&e, 2).await.as_str(), pod_status_message("failed"));
    assert_eq!(e.stats().builds.by_reason.get("nonZeroExit"), Some(&1));
}

#[tokio::test]
async fn invalid_image_name_fails_at_once() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 3).await;
    k.schedule(&pod, "n1");
    k.waiting(
        &pod,
        false,
        "InvalidImageName",
        "couldn't parse image reference \"Bad::Image\"",
    );
    let s = until(&e, 3, "failed", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::InvalidImage));
    assert_eq!(s.failure.as_ref().unwrap().build_started, Some(false));
    assert!(
        s.failure
            .as_ref()
            .unwrap()
            .evidence
            .as_deref()
            .unwrap()
            .starts_with("InvalidImageName")
    );
    assert_eq!(verdict(&e, 3).await.as_str(), IMAGE_INVALID_MESSAGE);
}

#[tokio::test]
async fn image_pull_errors_fail_only_after_the_grace() {
    let fake = FakeApiServer::start().await;
    let k = fake.kubelet(NS);
    // A grace far beyond the test: the error is reported as a transient state.
    let patient = executor(builder(&fake).with_image_pull_grace(Duration::from_secs(3600))).await;
    let pod = started(&patient, &k, 4).await;
    k.schedule(&pod, "n1");
    k.waiting(&pod, false, "ErrImagePull", "manifest unknown");
    let s = until(&patient, 4, "pull error seen", |s| {
        s.message.contains("ErrImagePull")
    })
    .await;
    assert_eq!(s.phase, Phase::Pulling, "{s}");
    assert_eq!(verdict(&patient, 4).await, Verdict::Initializing);
    k.waiting(&pod, false, "ImagePullBackOff", "Back-off pulling image");
    let s = until(&patient, 4, "back-off seen", |s| {
        s.message.contains("ImagePullBackOff")
    })
    .await;
    assert_eq!(s.phase, Phase::Pulling);
    patient.stop(&stop_cfg(4)).await.unwrap();

    // A one-second grace: first transient, then failed with the image message.
    let brief = executor(builder(&fake).with_image_pull_grace(Duration::from_secs(1))).await;
    let pod = started(&brief, &k, 5).await;
    k.schedule(&pod, "n1");
    k.waiting(
        &pod,
        false,
        "ImagePullBackOff",
        "Back-off pulling image \"nope:1\"",
    );
    let s = until(&brief, 5, "back-off", |s| {
        s.message.contains("ImagePullBackOff")
    })
    .await;
    if !s.is_terminal() {
        assert_eq!(s.phase, Phase::Pulling);
    }
    let s = until(&brief, 5, "failed after the grace", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Failed, Some(FailureReason::ImagePull))
    );
    assert_eq!(verdict(&brief, 5).await.as_str(), IMAGE_INVALID_MESSAGE);
}

#[tokio::test]
async fn an_image_pull_error_of_the_launcher_init_container_counts_too() {
    let fake = FakeApiServer::start().await;
    let k = fake.kubelet(NS);
    let e = executor(builder(&fake).with_image_pull_grace(Duration::ZERO)).await;
    let pod = started(&e, &k, 6).await;
    k.schedule(&pod, "n1");
    k.waiting(&pod, true, "ErrImagePull", "launcher image missing");
    let s = until(&e, 6, "failed", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::ImagePull));
}

#[tokio::test]
async fn container_config_error_and_crash_loop_fail_with_the_admin_message() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 7).await;
    k.schedule(&pod, "n1");
    k.waiting(
        &pod,
        false,
        "CreateContainerConfigError",
        "secret \"x\" not found",
    );
    let s = until(&e, 7, "failed", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::ContainerConfig));
    assert_eq!(verdict(&e, 7).await.as_str(), CONTACT_ADMIN_MESSAGE);

    let pod = started(&e, &k, 8).await;
    k.run(&pod);
    k.waiting(
        &pod,
        false,
        "CrashLoopBackOff",
        "back-off 5m0s restarting failed container",
    );
    let s = until(&e, 8, "failed", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::CrashLoop));
    assert_eq!(verdict(&e, 8).await.as_str(), CONTACT_ADMIN_MESSAGE);
}

#[tokio::test]
async fn oom_killed_is_an_oom_failure_whatever_the_exit_code() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 9).await;
    k.run(&pod);
    until(&e, 9, "running", |s| s.phase == Phase::Running).await;
    k.oom(&pod, 0);
    let s = until(&e, 9, "terminal", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.reason(), s.exit_code),
        (Phase::Failed, Some(FailureReason::OutOfMemory), Some(0))
    );
    // The pod even says Succeeded; verify still reports the failure.
    assert_eq!(
        verdict(&e, 9).await,
        Verdict::Failed("killed: out of memory".into())
    );

    let pod = started(&e, &k, 10).await;
    k.run(&pod);
    k.oom(&pod, 137);
    let s = until(&e, 10, "terminal", |s| s.is_terminal()).await;
    assert_eq!(
        (s.reason(), s.exit_code),
        (Some(FailureReason::OutOfMemory), Some(137))
    );
    assert_eq!(verdict(&e, 10).await.as_str(), pod_status_message("failed"));
}

#[tokio::test]
async fn eviction_is_infrastructure_lost_and_says_whether_the_build_started() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 11).await;
    k.run(&pod);
    until(&e, 11, "running", |s| s.phase == Phase::Running).await;
    k.evict(&pod, "The node was low on resource: memory.");
    let s = until(&e, 11, "lost", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Lost, Some(FailureReason::Evicted))
    );
    let f = s.failure.as_ref().unwrap();
    assert_eq!(f.build_started, Some(true));
    assert!(
        f.evidence.as_deref().unwrap().contains("low on resource"),
        "{f:?}"
    );
    assert!(FailureReason::Evicted.retry_safe());
    assert_eq!(verdict(&e, 11).await.as_str(), pod_status_message("failed"));

    let pod = started(&e, &k, 12).await;
    k.schedule(&pod, "n1");
    k.disrupt(&pod, "PreemptionByScheduler");
    let s = until(&e, 12, "lost", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Lost, Some(FailureReason::Evicted))
    );
    assert_eq!(s.failure.as_ref().unwrap().build_started, Some(false));
}

#[tokio::test]
async fn unschedulable_fails_for_capacity_after_the_pending_timeout() {
    let fake = FakeApiServer::start().await;
    let k = fake.kubelet(NS);
    let e = executor(builder(&fake).with_pending_timeout(Duration::from_secs(1))).await;
    let pod = started(&e, &k, 13).await;
    let msg = "0/5 nodes are available: 5 node(s) didn't match Pod's node affinity/selector.";
    k.unschedulable(&pod, msg);
    let s = until(&e, 13, "capacity failure", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Failed, Some(FailureReason::Unschedulable))
    );
    assert!(s.message.contains(msg), "{s}");
    assert_eq!(
        FailureReason::Unschedulable.fault(),
        executor_base::Fault::Capacity
    );
    match verdict(&e, 13).await {
        Verdict::Failed(m) => assert!(m.contains(msg), "{m}"),
        v => panic!("expected a failure, got {v:?}"),
    }
}

#[tokio::test]
async fn deadline_exceeded_is_timed_out() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 14).await;
    k.run(&pod);
    k.deadline_exceeded(&pod);
    let s = until(&e, 14, "timed out", |s| s.is_terminal()).await;
    assert_eq!(s.phase, Phase::TimedOut);
}

#[tokio::test]
async fn a_failed_launcher_init_container_is_a_start_failure() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 15).await;
    k.schedule(&pod, "n1");
    k.init_exit(&pod, 1);
    let s = until(&e, 15, "failed", |s| s.is_terminal()).await;
    assert_eq!(s.reason(), Some(FailureReason::StartRefused));
    assert_eq!(s.failure.as_ref().unwrap().build_started, Some(false));
}

#[tokio::test]
async fn a_pod_deleted_by_someone_else_is_lost_never_success() {
    let (_f, k, e) = setup().await;
    // Deleted while running.
    let pod = started(&e, &k, 16).await;
    k.run(&pod);
    until(&e, 16, "running", |s| s.phase == Phase::Running).await;
    k.delete(&pod);
    let s = until(&e, 16, "lost", |s| s.is_terminal()).await;
    assert_eq!(
        (s.phase, s.failure.as_ref().unwrap().build_started),
        (Phase::Lost, Some(true))
    );
    assert!(
        k.secrets()
            .iter()
            .all(|s| !s.metadata.name.as_deref().unwrap().starts_with("sd-16-"))
    );
    assert!(verdict(&e, 16).await.is_failure());

    // Gracefully deleted, and the launcher then exits 0 on SIGTERM: still lost.
    let pod = started(&e, &k, 17).await;
    k.run(&pod);
    until(&e, 17, "running", |s| s.phase == Phase::Running).await;
    k.mark_deleting(&pod);
    k.exit(&pod, 0);
    let s = until(&e, 17, "lost", |s| s.is_terminal()).await;
    assert_eq!(s.phase, Phase::Lost);
    k.delete(&pod);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(status(&e, 17).await.phase, Phase::Lost, "lost is sticky");

    // Deleted before it started.
    let pod = started(&e, &k, 18).await;
    until(&e, 18, "seen", |s| {
        s.message != "pod created; waiting for the scheduler"
    })
    .await;
    k.delete(&pod);
    let s = until(&e, 18, "lost", |s| s.is_terminal()).await;
    assert_eq!(s.failure.as_ref().unwrap().build_started, Some(false));
    assert_eq!(e.stats().builds.by_reason.get("lost"), Some(&3));
}

#[tokio::test]
async fn a_node_that_stops_reporting_is_not_lost_at_once() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 19).await;
    k.run(&pod);
    until(&e, 19, "running", |s| s.phase == Phase::Running).await;
    k.lose_node(&pod);
    // The default policy gives phase Unknown 300 s before calling the build lost.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&e, 19).await.phase, Phase::Running);
}

#[tokio::test]
async fn status_of_an_unknown_build_is_not_found_and_other_executors_pods_are_read() {
    let (fake, k, e) = setup().await;
    assert_eq!(
        e.status(&stop_cfg(404)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        e.verify(&start_cfg(404)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // A pod started by another executor instance (e.g. before a restart) is still read.
    let other = executor(builder(&fake)).await;
    let pod = started(&other, &k, 20).await;
    k.run(&pod);
    // Eventually consistent: NotFound until this executor's watch delivers the pod.
    eventually("running seen by the second executor", || async {
        e.status(&stop_cfg(20))
            .await
            .ok()
            .filter(|s| s.phase == Phase::Running)
    })
    .await;
    // ... and is live, so this executor refuses to start it again.
    assert_eq!(
        e.start(&start_cfg(20)).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
}

/// Native mode: a launcher that exits 0 without the launch handshake in its termination
/// message (upstream's, on native mode's `--token-file`) is never `Succeeded`; the
/// reference launcher's handshake is. The answer stays after the pod is gone.
#[tokio::test]
async fn exit_0_without_the_handshake_is_failed_launch_protocol() {
    let (_f, k, e) = setup().await;
    let pod = started(&e, &k, 40).await;
    k.schedule(&pod, "node-1");
    k.run(&pod);
    k.exit_without_handshake(&pod, 0);
    let s = until(&e, 40, "terminal", |s| s.is_terminal()).await;
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol), "{s:?}");
    assert_eq!(s.exit_code, Some(0));
    assert!(
        s.message.contains("localhost/sdx-launcher:"),
        "{}",
        s.message
    );
    assert!(verdict(&e, 40).await.is_failure());

    let pod = started(&e, &k, 41).await;
    k.schedule(&pod, "node-1");
    k.run(&pod);
    k.exit(&pod, 0);
    let s = until(&e, 41, "terminal", |s| s.is_terminal()).await;
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
}
