//! `gc` and `cleanup`: expired pods and Secrets carrying our labels go, nothing else.

mod support;

use executor_base::Executor;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::*;

fn labels(expires: Option<i64>, ours: bool) -> serde_json::Value {
    let mut l = json!({"app": "screwdriver", "sdbuild": "sd-1"});
    if ours {
        l["app.kubernetes.io/managed-by"] = json!("sdx");
    }
    if let Some(t) = expires {
        l["screwdriver.cd/expires-at"] = json!(t.to_string());
    }
    l
}

#[tokio::test]
async fn gc_removes_only_our_expired_objects_and_dry_run_removes_nothing() {
    let (fake, k, e) = setup().await;
    let now = chrono::Utc::now().timestamp();
    let pods: Api<Pod> = Api::namespaced(fake.client(), NS);
    let secrets: Api<Secret> = Api::namespaced(fake.client(), NS);
    let cases = [
        ("expired", labels(Some(now - 60), true)),
        ("fresh", labels(Some(now + 3600), true)),
        ("undated", labels(None, true)),
        ("foreign", labels(Some(now - 60), false)),
    ];
    for (name, l) in &cases {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("pod-{name}"), "labels": l},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("secret-{name}"), "labels": l},
            "data": {"token": "c2VjcmV0"}
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let report = e.gc(true).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.expired, ["pod/pod-expired", "secret/secret-expired"]);
    assert_eq!(k.pods().len(), 4);
    assert_eq!(k.secrets().len(), 4);

    let report = e.gc(false).await.unwrap();
    assert_eq!(report.expired, ["pod/pod-expired", "secret/secret-expired"]);
    let mut left = k.pod_names();
    left.sort();
    assert_eq!(left, ["pod-foreign", "pod-fresh", "pod-undated"]);
    assert_eq!(k.secrets().len(), 3);
    // The metadata lists never carried the Secrets' data.
    assert!(fake.requests().contains_key("list secrets"));

    e.cleanup().await.unwrap();
    e.cleanup().await.unwrap();
    assert_eq!(k.pods().len(), 3);
}

#[tokio::test]
async fn cleanup_collects_only_what_this_executor_started() {
    let (fake, k, e) = setup().await;
    let past = (chrono::Utc::now().timestamp() - 60).to_string();
    // Someone else's expired pod in the same namespace (another server, another run).
    let pods: Api<Pod> = Api::namespaced(fake.client(), NS);
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pod-other", "labels": labels(Some(0), true)},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    // Our build, expired (its label moved into the past).
    e.start(&start_cfg(3)).await.unwrap();
    let ours = pod_name(&k, 3);
    let relabel = json!({"metadata": {"labels": {"screwdriver.cd/expires-at": past}}});
    let pp = kube::api::PatchParams::default();
    pods.patch(&ours, &pp, &kube::api::Patch::Merge(&relabel))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(fake.client(), NS);
    let secret = k.secrets()[0].metadata.name.clone().unwrap();
    secrets
        .patch(&secret, &pp, &kube::api::Patch::Merge(&relabel))
        .await
        .unwrap();

    e.cleanup().await.unwrap();
    assert_eq!(
        k.pod_names(),
        ["pod-other"],
        "only our own expired pod went"
    );
    assert!(k.secrets().is_empty());
    // An explicit gc is namespace-wide.
    assert_eq!(e.gc(false).await.unwrap().expired, ["pod/pod-other"]);
}

#[tokio::test]
async fn a_started_build_is_not_collected_before_it_expires() {
    let (_fake, k, e) = setup().await;
    e.start(&start_cfg(2)).await.unwrap();
    assert!(e.gc(false).await.unwrap().expired.is_empty());
    assert_eq!((k.pods().len(), k.secrets().len()), (1, 1));
}
