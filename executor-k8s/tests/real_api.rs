//! The executor against a real kube-apiserver (the shared control plane) as the
//! least-privilege user: every option's pod passes the server's validation with
//! `fieldValidation=Strict`, RBAC denial is `PermissionDenied`, a missing namespace is
//! `NotFound`, and gc / cleanup remove what they should and nothing else.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use executor_base::{ErrorKind, Executor, LaunchMode, StartConfig};
use executor_k8s::{HostVolumeMount, K8sExecutorBuilder};
use k8s_openapi::api::core::v1::{Pod, Secret, Toleration};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::real::{ControlPlane, Kubelet, NS};
use support::{TOKEN, start_cfg, stop_cfg};

/// A build with every annotation the pod uses.
fn annotated(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9/", "node:22", TOKEN)
        .job_id(7)
        .annotation("screwdriver.cd/cpu", "HIGH")
        .annotation("screwdriver.cd/ram", 3)
        .annotation("screwdriver.cd/timeout", 30)
        .annotation("screwdriver.cd/terminationGracePeriodSeconds", 120)
        .annotation("screwdriver.cd/disk", "high")
        .annotation("screwdriver.cd/diskSpeed", "FAST")
        .build()
        .unwrap()
}

/// Every pod option set at once.
fn every_option(b: K8sExecutorBuilder) -> K8sExecutorBuilder {
    b.with_launcher_image("registry.local/launcher", "v6")
        .with_node_selector("pool", "ci")
        .with_preferred_node_selector("disk", "ssd")
        .with_toleration(Toleration {
            key: Some("gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        })
        .with_service_account("builder")
        .with_image_pull_policy("IfNotPresent")
        .with_image_pull_secret("regcred")
        .with_runtime_class("gvisor")
        .with_privileged(true)
        .with_disk_speed_label("screwdriver.cd/disk-speed")
        .with_volume_mount(HostVolumeMount {
            name: "docker-sock".into(),
            mount_path: "/var/run/docker.sock".into(),
            path: "/var/run/docker.sock".into(),
            type_: Some("Socket".into()),
            read_only: true,
        })
        .with_pod_labels(BTreeMap::from([("team".to_string(), "ci".to_string())]))
        .with_stop_grace(Some(5), 0)
}

#[tokio::test]
async fn every_options_pod_passes_strict_validation() {
    const P: &str = "ropt-";
    let Some(cp) = ControlPlane::shared("every_options_pod_passes_strict_validation") else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    k.clean(P).await;
    // The runtime class must exist (the RuntimeClass admission plugin checks).
    let rc: Api<RuntimeClass> = Api::all(cp.admin().await);
    let gvisor: RuntimeClass = serde_json::from_value(json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "gvisor"}, "handler": "runsc"}))
    .unwrap();
    match rc.create(&PostParams::default(), &gvisor).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    let mut cfg = every_option(cp.builder(P)).config().clone();
    cfg.pod_annotations = BTreeMap::from([("owner".to_string(), "ci-team".to_string())]);
    cfg.request_fraction = 0.5;
    cfg.automount_service_account_token = true;
    let e = cp
        .builder(P)
        .with_config(cfg.clone())
        .build()
        .await
        .unwrap();
    e.start(&annotated(1)).await.unwrap();
    let pod = k.pods().get(&k.pod_name(P, 1).await).await.unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.termination_grace_period_seconds, Some(120));
    // Our field manager owns what we wrote.
    let managers: Vec<_> = pod
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(managers, [executor_k8s::FIELD_MANAGER]);
    let secret: Secret = k
        .secrets()
        .get(&format!("{}-token", pod.metadata.name.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].uid,
        pod.metadata.uid.clone().unwrap()
    );

    // Screwdriver mode: one pod, no Secret.
    cfg.launch_mode = LaunchMode::Screwdriver;
    let e2 = cp.builder(P).with_config(cfg).build().await.unwrap();
    e2.start(&annotated(2)).await.unwrap();
    k.pod_name(P, 2).await;
    for (e, id) in [(&e, 1), (&e2, 2)] {
        e.stop(&stop_cfg(id)).await.unwrap();
    }

    // A runtime class that does not exist is the option's fault, and says so.
    let e3 = cp
        .builder(P)
        .with_runtime_class("no-such-class")
        .build()
        .await
        .unwrap();
    let err = e3.start(&start_cfg(3)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("key: runtimeClass"), "{err}");
    assert!(k.pods_of(P, 3).await.is_empty());
    k.clean(P).await;
}

#[tokio::test]
async fn strict_validation_refuses_a_field_the_server_does_not_know() {
    // What Strict buys: a misspelt field is an error, not silently dropped (the fake
    // refuses it the same way: see its `validate` module).
    let Some(cp) =
        ControlPlane::shared("strict_validation_refuses_a_field_the_server_does_not_know")
    else {
        return;
    };
    let admin = cp.admin().await;
    let bad = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "rstrict-1", "labels": {"sdbuild": "rstrict-1"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicyy": "Always"}]}});
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{NS}/pods?fieldManager=sdx-executor-k8s&fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&bad).unwrap())
    .unwrap();
    let err = admin.request::<Pod>(req).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.code, 400, "{s:?}");
    assert!(s.message.contains("imagePullPolicyy"), "{s:?}");
}

#[tokio::test]
async fn rbac_denial_is_permission_denied_and_a_missing_namespace_not_found() {
    let Some(cp) =
        ControlPlane::shared("rbac_denial_is_permission_denied_and_a_missing_namespace_not_found")
    else {
        return;
    };
    // The limited user may not touch namespace `default`.
    let e = cp
        .builder("rrbac-")
        .with_namespace("default")
        .with_watch(false)
        .build()
        .await
        .unwrap();
    let err = e.start(&start_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.is_temporary());
    assert!(err.message().contains("forbidden"), "{err}");
    assert!(!format!("{err} {err:?}").contains(TOKEN));
    // Its watch is refused too: status says so instead of answering from nothing.
    let e = cp
        .builder("rrbac-")
        .with_namespace("default")
        .build()
        .await
        .unwrap();
    assert!(e.wait_synced(Duration::from_secs(2)).await.is_err());
    let err = e.status(&stop_cfg(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

    // A namespace that does not exist (as the admin, whom RBAC lets see that).
    let e = K8sExecutorBuilder::new()
        .with_kubeconfig(cp.admin_kubeconfig())
        .with_namespace("no-such-namespace")
        .with_prefix("rrbac-")
        .with_watch(false)
        .build()
        .await
        .unwrap();
    let err = e.start(&start_cfg(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("no-such-namespace"), "{err}");
}

/// Held by the tests that run a namespace-wide `gc` or leave a gone owner's pods: a gc
/// of one would collect what the other is about to look at.
static GC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn gc_and_cleanup_remove_exactly_what_they_should() {
    let _gc = GC.lock().await;
    const P: &str = "rgc-";
    let Some(cp) = ControlPlane::shared("gc_and_cleanup_remove_exactly_what_they_should") else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    k.clean(P).await;
    let past = (chrono::Utc::now().timestamp() - 60).to_string();
    let future = (chrono::Utc::now().timestamp() + 3600).to_string();
    let label = |b: &str, expires: Option<&str>, ours: bool| {
        let mut l = json!({"app": "screwdriver", "sdbuild": b});
        if ours {
            l["app.kubernetes.io/managed-by"] = json!("sdx");
        }
        if let Some(t) = expires {
            l["screwdriver.cd/expires-at"] = json!(t);
        }
        l
    };
    let cases = [
        ("expired", label("rgc-1", Some(&past), true)),
        ("fresh", label("rgc-2", Some(&future), true)),
        ("undated", label("rgc-3", None, true)),
        ("foreign", label("rgc-4", Some(&past), false)),
    ];
    for (name, l) in &cases {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("rgc-{name}"), "labels": l},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        k.pods().create(&PostParams::default(), &p).await.unwrap();
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("rgc-{name}"), "labels": l},
            "data": {"token": "c2VjcmV0"}
        }))
        .unwrap();
        k.secrets()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    let e = cp.builder(P).build().await.unwrap();
    e.wait_synced(Duration::from_secs(30)).await.unwrap();
    // Our own build, expired too.
    e.start(&start_cfg(9)).await.unwrap();
    let ours = k.pod_name(P, 9).await;
    let relabel =
        Patch::Merge(json!({"metadata": {"labels": {"screwdriver.cd/expires-at": past}}}));
    k.pods()
        .patch(&ours, &PatchParams::default(), &relabel)
        .await
        .unwrap();
    k.secrets()
        .patch(&format!("{ours}-token"), &PatchParams::default(), &relabel)
        .await
        .unwrap();

    let mine = |r: &executor_base::GcReport| -> Vec<String> {
        let mut v: Vec<String> = r
            .expired
            .iter()
            .filter(|x| x.contains("/rgc-"))
            .cloned()
            .collect();
        v.sort();
        v
    };
    let dry = e.gc(true).await.unwrap();
    let want = [
        "pod/rgc-expired".to_string(),
        format!("pod/{ours}"),
        "secret/rgc-expired".to_string(),
        format!("secret/{ours}-token"),
    ];
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(mine(&dry), want);
    assert!(
        k.pods().get_opt("rgc-expired").await.unwrap().is_some(),
        "dry run removes nothing"
    );

    // cleanup: only this executor's own build.
    e.cleanup().await.unwrap();
    assert!(k.pods().get_opt(&ours).await.unwrap().is_none());
    assert!(k.pods().get_opt("rgc-expired").await.unwrap().is_some());

    // gc: every expired object of ours in the namespace, nothing else.
    let report = e.gc(false).await.unwrap();
    assert_eq!(mine(&report), ["pod/rgc-expired", "secret/rgc-expired"]);
    for name in ["fresh", "undated", "foreign"] {
        let n = format!("rgc-{name}");
        assert!(k.pods().get_opt(&n).await.unwrap().is_some(), "{n}");
        assert!(k.secrets().get_opt(&n).await.unwrap().is_some(), "{n}");
    }
    for name in ["rgc-fresh", "rgc-undated", "rgc-foreign"] {
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = k.pods().delete(name, &dp).await;
        let _ = k.secrets().delete(name, &dp).await;
    }
    k.clean(P).await;
}

/// An owner that is certainly gone: this process's identity with another start time
/// (a recycled pid).
fn dead_owner() -> executor_base::Owner {
    match executor_base::Owner::current().expect("Linux with /proc") {
        executor_base::Owner::Process(mut p) => {
            p.start_ticks += 1;
            executor_base::Owner::Process(p)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn gc_collects_a_half_made_start_of_a_gone_owner_at_once() {
    let _gc = GC.lock().await;
    const P: &str = "rorph-";
    let Some(cp) = ControlPlane::shared("gc_collects_a_half_made_start_of_a_gone_owner_at_once")
    else {
        return;
    };
    let k = Kubelet::new(&cp).await;
    k.clean(P).await;
    let gone = cp
        .builder(P)
        .with_owner(dead_owner())
        .with_watch(false)
        .build()
        .await
        .unwrap();
    // Builds 1 and 2 of the gone owner; build 1's start "was killed" after the pod was
    // made (its Secret never came). Build 3: ours, alive, equally without its Secret.
    for id in [1, 2] {
        gone.start(&start_cfg(id)).await.unwrap();
    }
    let e = cp.builder(P).with_watch(false).build().await.unwrap();
    e.start(&start_cfg(3)).await.unwrap();
    let owner_label = |pod: &Pod| {
        pod.metadata.labels.as_ref().unwrap()[executor_base::owner::LABEL_OWNER].clone()
    };
    let p1 = k.pod_name(P, 1).await;
    let p3 = k.pod_name(P, 3).await;
    let pod1 = k.pods().get(&p1).await.unwrap();
    assert_eq!(owner_label(&pod1), dead_owner().to_label());
    assert_eq!(
        owner_label(&k.pods().get(&p3).await.unwrap()),
        e.owner().unwrap().to_label()
    );
    let now = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for p in [&p1, &p3] {
        k.secrets()
            .delete(&format!("{p}-token"), &now)
            .await
            .unwrap();
    }

    // Nothing has expired; only the gone owner's half-made build goes, at once.
    let report = e.gc(false).await.unwrap();
    let mine: Vec<&String> = report
        .expired
        .iter()
        .filter(|x| x.contains("/rorph-"))
        .collect();
    assert_eq!(mine, [&format!("pod/{p1}")]);
    assert!(k.pods_of(P, 1).await.is_empty());
    assert_eq!(k.pods_of(P, 2).await.len(), 1, "a complete build runs on");
    assert_eq!(
        k.pods_of(P, 3).await.len(),
        1,
        "a live owner's start may finish"
    );
    k.clean(P).await;
}
