//! The shared watch: status without requests, bookmarks, replay, 410 re-lists, and
//! deletions behind our back across gaps.

mod support;

use std::time::Duration;

use executor_base::{Executor, FailureReason, Phase};
use executor_k8s::fake::FakeApiServer;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use support::*;

async fn phase_of(e: &executor_k8s::K8sExecutor, id: u64) -> Phase {
    e.status(&stop_cfg(id)).await.unwrap().phase
}

#[tokio::test]
async fn status_and_verify_are_served_from_the_cache_without_requests() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(1)).await.unwrap();
    let pod = pod_name(&k, 1);
    k.run(&pod);
    eventually("running", || async {
        (phase_of(&e, 1).await == Phase::Running).then_some(())
    })
    .await;
    fake.reset_requests();
    let before = e.api_requests().unwrap();
    for _ in 0..20 {
        assert_eq!(phase_of(&e, 1).await, Phase::Running);
        assert!(!e.verify(&start_cfg(1)).await.unwrap().is_failure());
    }
    assert_eq!(fake.total_requests(), 0, "{:?}", fake.requests());
    assert_eq!(e.api_requests().unwrap(), before);
    // One watch, label-selected, with bookmarks.
    let q = fake.watch_queries();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].contains("allowWatchBookmarks=true"), "{}", q[0]);
    assert!(q[0].contains("labelSelector=app%3Dscrewdriver"), "{}", q[0]);
}

#[tokio::test]
async fn without_the_watch_each_status_gets_the_pod() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_watch(false)).await;
    let k = fake.kubelet(NS);
    e.start(&start_cfg(2)).await.unwrap();
    let pod = pod_name(&k, 2);
    k.run(&pod);
    fake.reset_requests();
    for _ in 0..20 {
        assert_eq!(phase_of(&e, 2).await, Phase::Running);
    }
    assert_eq!(fake.request_log(), vec!["get pods"; 20]);
    assert!(fake.watch_queries().is_empty());
    k.delete(&pod);
    let s = e.status(&stop_cfg(2)).await.unwrap();
    assert_eq!(
        (s.phase, s.failure.unwrap().build_started),
        (Phase::Lost, Some(true))
    );
    // An unknown build is looked up by label.
    fake.reset_requests();
    assert!(e.status(&stop_cfg(3)).await.is_err());
    assert_eq!(fake.request_log(), ["list pods"]);
}

#[tokio::test]
async fn changes_made_while_the_watch_is_away_are_replayed_without_a_relist() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(4)).await.unwrap();
    let pod = pod_name(&k, 4);
    eventually("seen", || async {
        (phase_of(&e, 4).await == Phase::Pending).then_some(())
    })
    .await;
    let lists = fake.request_count("list pods");
    fake.pause_watches();
    k.schedule(&pod, "n1");
    k.run(&pod);
    fake.resume_watches();
    eventually("running", || async {
        (phase_of(&e, 4).await == Phase::Running).then_some(())
    })
    .await;
    assert_eq!(
        fake.request_count("list pods"),
        lists,
        "resumed from its resource version"
    );
    assert!(fake.request_count("watch pods") >= 2);
}

#[tokio::test]
async fn after_410_gone_the_watch_relists_and_a_pod_deleted_meanwhile_is_lost() {
    let (fake, k, e) = setup().await;
    for id in [5, 6] {
        e.start(&start_cfg(id)).await.unwrap();
        k.run(&pod_name(&k, id));
    }
    for id in [5, 6] {
        eventually("running", || async {
            (phase_of(&e, id).await == Phase::Running).then_some(())
        })
        .await;
    }
    assert_eq!(fake.request_count("list pods"), 1);
    fake.pause_watches();
    let gone = pod_name(&k, 5);
    k.delete(&gone);
    k.exit(&pod_name(&k, 6), 0);
    fake.compact();
    fake.resume_watches();
    let s = eventually("lost", || async {
        let s = e.status(&stop_cfg(5)).await.unwrap();
        s.is_terminal().then_some(s)
    })
    .await;
    assert_eq!(s.phase, Phase::Lost);
    assert_eq!(s.reason(), Some(FailureReason::InfrastructureLost));
    assert!(s.message.contains("re-listing"), "{s}");
    eventually("succeeded", || async {
        (phase_of(&e, 6).await == Phase::Succeeded).then_some(())
    })
    .await;
    assert_eq!(
        fake.request_count("list pods"),
        2,
        "410 Gone forced one re-list"
    );
}

#[tokio::test]
async fn bookmarks_keep_the_resume_point_fresh_so_no_relist_is_needed() {
    let fake = FakeApiServer::start().await;
    fake.set_bookmark_interval(Duration::from_millis(20));
    let e = executor(builder(&fake)).await;
    // Traffic the watch does not select moves the resource version on...
    let other: Api<Pod> = Api::namespaced(fake.client(), "elsewhere");
    for i in 0..5 {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("unrelated-{i}")},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        other.create(&PostParams::default(), &p).await.unwrap();
    }
    // ...and only bookmarks tell the watcher about it. Give it a few of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.pause_watches();
    fake.compact();
    fake.resume_watches();
    e.start(&start_cfg(7)).await.unwrap();
    let k = fake.kubelet(NS);
    k.run(&pod_name(&k, 7));
    eventually("running", || async {
        (phase_of(&e, 7).await == Phase::Running).then_some(())
    })
    .await;
    assert_eq!(
        fake.request_count("list pods"),
        1,
        "resumed at the bookmark: no 410, no re-list"
    );
}

#[tokio::test]
async fn a_pod_the_watch_has_not_delivered_is_fetched_once() {
    let fake = FakeApiServer::start().await;
    let mut cfg = builder(&fake).config().clone();
    cfg.watch_lag_grace_seconds = 0;
    let e = executor(builder(&fake).with_config(cfg)).await;
    let k = fake.kubelet(NS);
    fake.pause_watches();

    // Unseen past the grace: one GET answers, later calls use what it found.
    e.start(&start_cfg(8)).await.unwrap();
    let pod = pod_name(&k, 8);
    fake.reset_requests();
    assert_eq!(phase_of(&e, 8).await, Phase::Pending);
    assert_eq!(phase_of(&e, 8).await, Phase::Pending);
    assert_eq!(fake.request_log(), ["get pods"]);

    // Created and deleted while the watch was away: the GET's 404 makes it lost.
    e.start(&start_cfg(9)).await.unwrap();
    k.delete(&pod_name(&k, 9));
    let s = e.status(&stop_cfg(9)).await.unwrap();
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Lost, Some(FailureReason::InfrastructureLost))
    );

    // Once the watch is back, the first build's deletion arrives too.
    k.delete(&pod);
    fake.resume_watches();
    eventually("lost", || async {
        (phase_of(&e, 8).await == Phase::Lost).then_some(())
    })
    .await;
}
