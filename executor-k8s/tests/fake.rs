//! The fake API server itself, through a plain kube client.

use std::time::Duration;

use executor_k8s::fake::{FakeApiServer, Fault};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

async fn setup() -> (FakeApiServer, Api<Pod>, Api<Secret>) {
    let fake = FakeApiServer::start().await;
    let client = fake.client();
    (
        fake,
        Api::namespaced(client.clone(), "ns"),
        Api::namespaced(client, "ns"),
    )
}

#[tokio::test]
async fn create_get_conflict_and_resource_versions() {
    let (_f, pods, _) = setup().await;
    let pp = PostParams::default();
    let a = pods.create(&pp, &pod("a", json!({}))).await.unwrap();
    assert!(a.uid().is_some());
    assert_eq!(a.status.unwrap().phase.as_deref(), Some("Pending"));
    let err = pods.create(&pp, &pod("a", json!({}))).await.unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        e => panic!("{e}"),
    }
    let b = pods.create(&pp, &pod("b", json!({}))).await.unwrap();
    let rv = |p: &Pod| p.resource_version().unwrap().parse::<u64>().unwrap();
    assert!(rv(&b) > rv(&pods.get("a").await.unwrap()));
    assert!(pods.get_opt("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn label_selectors() {
    let (_f, pods, _) = setup().await;
    let pp = PostParams::default();
    pods.create(
        &pp,
        &pod("x", json!({"app": "screwdriver", "tier": "builds"})),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("y", json!({"app": "screwdriver", "tier": "web"})))
        .await
        .unwrap();
    pods.create(&pp, &pod("z", json!({"app": "other"})))
        .await
        .unwrap();
    let names = |sel: &'static str| {
        let pods = pods.clone();
        async move {
            let mut n: Vec<String> = pods
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("app=screwdriver").await, ["x", "y"]);
    assert_eq!(names("app=screwdriver,tier!=web").await, ["x"]);
    assert_eq!(names("tier").await, ["x", "y"]);
    assert_eq!(names("!tier").await, ["z"]);
    assert_eq!(names("tier in (web,api)").await, ["y"]);
    assert_eq!(names("app notin (screwdriver)").await, ["z"]);
}

#[tokio::test]
async fn deletecollection_and_owner_reference_gc() {
    let (_f, pods, secrets) = setup().await;
    let pp = PostParams::default();
    let owner = pods
        .create(&pp, &pod("owner", json!({"b": "1"})))
        .await
        .unwrap();
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s", "labels": {"b": "1"}}})).unwrap();
    secrets.create(&pp, &s).await.unwrap();
    let patch = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.uid().unwrap()}]}});
    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let deleted = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("b=1"),
        )
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().items.len(), 1);
    assert!(
        secrets.get_opt("s").await.unwrap().is_none(),
        "owned secret collected"
    );

    // A Secret whose owner no longer exists is collected at once.
    let orphan: Secret =
        serde_json::from_value(json!({"metadata": {"name": "o", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "gone", "uid": "no-such-uid"}]}}))
        .unwrap();
    secrets.create(&pp, &orphan).await.unwrap();
    assert!(secrets.get_opt("o").await.unwrap().is_none());
}

#[tokio::test]
async fn metadata_lists_carry_no_data() {
    let (f, _, secrets) = setup().await;
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"token": "c2VjcmV0"}}))
            .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let list = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("s"));
    let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (code, _, body) = raw_get(&f.url(), "/api/v1/namespaces/ns/secrets", Some(accept)).await;
    assert_eq!(code, 200);
    assert!(
        body.contains("PartialObjectMetadataList") && !body.contains("c2VjcmV0"),
        "{body}"
    );
    let (_, _, full) = raw_get(&f.url(), "/api/v1/namespaces/ns/secrets", None).await;
    assert!(full.contains("c2VjcmV0"));
}

#[tokio::test]
async fn watches_replay_send_bookmarks_and_expire() {
    let (f, pods, _) = setup().await;
    f.set_bookmark_interval(Duration::from_millis(20));
    let pp = PostParams::default();
    let a = pods.create(&pp, &pod("a", json!({}))).await.unwrap();
    let from: String = a.resource_version().unwrap();
    pods.create(&pp, &pod("b", json!({}))).await.unwrap();
    let wp = WatchParams::default().timeout(5);
    let mut events = pods.watch(&wp, &from).await.unwrap().boxed();
    match events.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(p) => assert_eq!(p.name_any(), "b", "replayed from the resource version"),
        e => panic!("{e:?}"),
    }
    let mut saw_bookmark = false;
    while let Some(ev) = events.try_next().await.unwrap() {
        if let WatchEvent::Bookmark(_) = ev {
            saw_bookmark = true;
            break;
        }
    }
    assert!(saw_bookmark);

    f.compact();
    let mut old = pods.watch(&wp, &from).await.unwrap().boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(s) => assert_eq!(s.code, 410),
        e => panic!("expected 410 Gone, got {e:?}"),
    }
    assert!(old.next().await.is_none());
}

#[tokio::test]
async fn injected_faults_carry_retry_after_and_count_down() {
    let (f, pods, _) = setup().await;
    f.inject(
        Fault::status(429)
            .on("list", "pods")
            .retry_after(2)
            .times(1),
    );
    let resp = raw_get(&f.url(), "/api/v1/namespaces/ns/pods", None).await;
    assert_eq!(resp.0, 429);
    assert_eq!(resp.1.as_deref(), Some("2"));
    assert!(resp.2.contains("\"retryAfterSeconds\":2"), "{}", resp.2);
    pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(f.request_count("list pods"), 2);
}

/// A raw GET (status, Retry-After header, body) over a TCP socket.
async fn raw_get(base: &str, path: &str, accept: Option<&str>) -> (u16, Option<String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf[9..12].parse().unwrap();
    let retry = buf
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .map(|l| l[12..].trim().to_string());
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, retry, body)
}
