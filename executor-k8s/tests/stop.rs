//! `stop`: deletes by label, grace by pod state, idempotent, Secret left to the GC.

mod support;

use executor_base::{Executor, Phase};
use executor_k8s::fake::{FakeApiServer, Fault};
use support::*;

async fn phase_of(e: &executor_k8s::K8sExecutor, id: u64) -> Phase {
    e.status(&stop_cfg(id)).await.unwrap().phase
}

#[tokio::test]
async fn stop_of_a_running_build_deletes_its_pods_by_label_with_the_configured_grace() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_stop_grace(Some(15), 0)).await;
    let k = fake.kubelet(NS);
    e.start(&start_cfg(10)).await.unwrap();
    let pod = pod_name(&k, 10);
    k.schedule(&pod, "n1");
    k.run(&pod);
    eventually("running", || async {
        (phase_of(&e, 10).await == Phase::Running).then_some(())
    })
    .await;
    fake.reset_requests();
    e.stop(&stop_cfg(10)).await.unwrap();
    // One request: the Secret is owned by the pod, so the GC takes it.
    assert_eq!(fake.request_log(), ["deletecollection pods"]);
    let d = fake.deletions().pop().unwrap();
    assert_eq!(
        (d.resource.as_str(), d.target.as_str()),
        ("pods", "sdbuild=sd-10")
    );
    assert_eq!(d.grace_period_seconds, Some(15));
    assert!(k.pods().is_empty());
    assert!(
        k.secrets().is_empty(),
        "owner-reference GC removes the secret"
    );
    assert_eq!(phase_of(&e, 10).await, Phase::Canceled);
    let stats = e.stats();
    assert_eq!((stats.builds.started, stats.builds.running), (1, 0));
}

#[tokio::test]
async fn stop_of_a_pending_build_uses_grace_zero() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_stop_grace(Some(15), 0)).await;
    let k = fake.kubelet(NS);
    e.start(&start_cfg(11)).await.unwrap();
    let pod = pod_name(&k, 11);
    k.schedule(&pod, "n1");
    k.waiting(&pod, false, "ContainerCreating", "");
    eventually("seen", || async {
        (phase_of(&e, 11).await == Phase::Pulling).then_some(())
    })
    .await;
    e.stop(&stop_cfg(11)).await.unwrap();
    assert_eq!(
        fake.deletions().pop().unwrap().grace_period_seconds,
        Some(0)
    );
}

#[tokio::test]
async fn without_a_configured_grace_the_pods_own_applies() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(12)).await.unwrap();
    let pod = pod_name(&k, 12);
    k.run(&pod);
    eventually("running", || async {
        (phase_of(&e, 12).await == Phase::Running).then_some(())
    })
    .await;
    e.stop(&stop_cfg(12)).await.unwrap();
    assert_eq!(fake.deletions().pop().unwrap().grace_period_seconds, None);
}

#[tokio::test]
async fn stop_is_idempotent_and_an_unknown_build_is_fine() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(13)).await.unwrap();
    e.stop(&stop_cfg(13)).await.unwrap();
    e.stop(&stop_cfg(13)).await.unwrap();
    assert_eq!(phase_of(&e, 13).await, Phase::Canceled);
    // Never started: deletes by label (pods and secrets, as it cannot know), Ok.
    fake.reset_requests();
    e.stop(&stop_cfg(999)).await.unwrap();
    assert_eq!(
        fake.request_log(),
        ["deletecollection pods", "deletecollection secrets"]
    );
    assert!(k.pods().is_empty());
    assert_eq!(e.stats().builds.running, 0);
}

#[tokio::test]
async fn stop_of_a_finished_build_keeps_its_status() {
    let (_fake, k, e) = setup().await;
    e.start(&start_cfg(14)).await.unwrap();
    let pod = pod_name(&k, 14);
    k.run(&pod);
    k.exit(&pod, 0);
    eventually("succeeded", || async {
        (phase_of(&e, 14).await == Phase::Succeeded).then_some(())
    })
    .await;
    e.stop(&stop_cfg(14)).await.unwrap();
    assert_eq!(phase_of(&e, 14).await, Phase::Succeeded);
    let b = e.stats().builds;
    assert_eq!((b.started, b.finished, b.failed, b.running), (1, 1, 0, 0));
}

#[tokio::test]
async fn stop_retries_a_5xx_and_a_failed_stop_leaves_the_build_live() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(15)).await.unwrap();
    let pod = pod_name(&k, 15);
    k.run(&pod);
    eventually("running", || async {
        (phase_of(&e, 15).await == Phase::Running).then_some(())
    })
    .await;
    // Deletes are idempotent: a 503 is retried.
    fake.inject(Fault::status(503).on("deletecollection", "pods"));
    e.stop(&stop_cfg(15)).await.unwrap();
    assert_eq!(fake.request_count("deletecollection pods"), 2);
    assert!(k.pods().is_empty());

    e.start(&start_cfg(16)).await.unwrap();
    let pod = pod_name(&k, 16);
    k.run(&pod);
    eventually("running", || async {
        (phase_of(&e, 16).await == Phase::Running).then_some(())
    })
    .await;
    fake.inject(Fault::status(403).on("deletecollection", "pods"));
    let err = e.stop(&stop_cfg(16)).await.unwrap_err();
    assert_eq!(err.kind(), executor_base::ErrorKind::PermissionDenied);
    assert_eq!(
        phase_of(&e, 16).await,
        Phase::Running,
        "a failed stop does not cancel"
    );
    e.stop(&stop_cfg(16)).await.unwrap();
    assert_eq!(phase_of(&e, 16).await, Phase::Canceled);
}
