//! `start`: the pod and Secret it creates, in which order, and what it cleans up.

mod support;

use std::collections::BTreeMap;

use executor_base::{ErrorKind, Executor, LaunchMode, StartConfig};
use executor_k8s::HostVolumeMount;
use executor_k8s::fake::{FakeApiServer, Fault};
use k8s_openapi::api::core::v1::Toleration;
use support::*;

fn high_build(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9/", "node:22", TOKEN)
        .job_id(77)
        .annotation("screwdriver.cd/cpu", "HIGH")
        .annotation("beta.screwdriver.cd/ram", 4)
        .annotation("screwdriver.cd/timeout", 45)
        .build()
        .unwrap()
}

#[tokio::test]
async fn native_start_creates_the_pod_then_its_secret_owned_by_it() {
    let fake = FakeApiServer::start().await;
    let e = executor(
        builder(&fake)
            .with_launcher_image("registry.local/launcher", "v6")
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
            .with_pod_labels(BTreeMap::from([("team".to_string(), "ci".to_string())])),
    )
    .await;
    fake.reset_requests();
    e.start(&high_build(42)).await.unwrap();

    // Exactly two writes, in this order: the pod, then the Secret owned by it; both
    // strictly validated, with our field manager and user agent.
    assert_eq!(fake.request_log(), ["create pods", "create secrets"]);
    for r in fake.request_details() {
        assert!(
            r.query.contains("fieldValidation=Strict")
                && r.query.contains("fieldManager=sdx-executor-k8s"),
            "{r:?}"
        );
        assert_eq!(r.user_agent.as_deref(), Some(executor_k8s::USER_AGENT));
    }

    let k = fake.kubelet(NS);
    let name = pod_name(&k, 42);
    let suffix = name.strip_prefix("sd-42-").unwrap();
    assert_eq!(suffix.len(), 5);
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{name}"
    );
    let pod = k.pod(&name).unwrap();

    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "screwdriver");
    assert_eq!(labels["tier"], "builds");
    assert_eq!(labels["sdbuild"], "sd-42");
    assert_eq!(labels["screwdriver.cd/build-id"], "42");
    assert_eq!(labels["screwdriver.cd/job-id"], "77");
    assert_eq!(labels["team"], "ci");
    let expires: i64 = labels["screwdriver.cd/expires-at"].parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    // 45 min timeout + 30 min buffer.
    assert!(
        (expires - now - 75 * 60).abs() < 120,
        "expiry {expires} vs now {now}"
    );

    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.active_deadline_seconds, Some(45 * 60 + 60));
    assert_eq!(spec.service_account_name.as_deref(), Some("builder"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");

    // Node selectors: required affinity + a NoSchedule toleration each; preferred
    // affinity with weight 100; configured tolerations kept.
    let aff = spec.affinity.clone().unwrap().node_affinity.unwrap();
    let req = aff
        .required_during_scheduling_ignored_during_execution
        .unwrap();
    let expr = &req.node_selector_terms[0]
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!((expr.key.as_str(), expr.operator.as_str()), ("pool", "In"));
    assert_eq!(expr.values.as_deref(), Some(&["ci".to_string()][..]));
    let pref = &aff
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(pref.weight, 100);
    assert_eq!(
        pref.preference.match_expressions.as_ref().unwrap()[0].key,
        "disk"
    );
    let tol = spec.tolerations.clone().unwrap();
    assert!(tol.iter().any(|t| t.key.as_deref() == Some("pool")
        && t.value.as_deref() == Some("ci")
        && t.effect.as_deref() == Some("NoSchedule")
        && t.operator.as_deref() == Some("Equal")));
    assert!(tol.iter().any(|t| t.key.as_deref() == Some("gpu")));

    // Init container: launcher image, copies into the emptyDir.
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "launcher-sd-42");
    assert_eq!(init.image.as_deref(), Some("registry.local/launcher:v6"));
    assert_eq!(
        init.volume_mounts.as_ref().unwrap()[0].mount_path,
        "/opt/launcher"
    );
    let vol = &spec.volumes.as_ref().unwrap()[0];
    assert_eq!(vol.name, "sd-tools");
    assert!(vol.empty_dir.is_some());

    // Build container: the user's image running launch, tools read-only at /opt/sd.
    let c = &spec.containers[0];
    assert_eq!(c.name, "sd-42");
    assert_eq!(c.image.as_deref(), Some("node:22"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        c.command.as_deref(),
        Some(&["/opt/sd/launch".to_string()][..])
    );
    let args = c.args.clone().unwrap().join(" ");
    assert_eq!(
        args,
        "--api-uri http://127.0.0.1:9/ --store-uri http://localhost:8081/ --ui-uri http://localhost:4200/ --build-timeout 45 42"
    );
    let m = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (m.mount_path.as_str(), m.read_only),
        ("/opt/sd", Some(true))
    );
    let res = c.resources.clone().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "6000m");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "4Gi");
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "6000m");
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "4Gi");

    // SD_TOKEN through secretKeyRef, never inline; the token appears nowhere in the pod.
    let env = c.env.clone().unwrap();
    let tok = env.iter().find(|v| v.name == "SD_TOKEN").unwrap();
    assert!(tok.value.is_none());
    let secret_name = format!("{name}-token");
    let skr = tok
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (skr.name.as_str(), skr.key.as_str()),
        (secret_name.as_str(), "token")
    );
    assert!(!serde_json::to_string(&pod).unwrap().contains(TOKEN));

    // The Secret: the token, our labels, owned by the pod.
    let secrets = k.secrets();
    assert_eq!(secrets.len(), 1);
    let s = &secrets[0];
    assert_eq!(s.metadata.name.as_deref(), Some(secret_name.as_str()));
    assert_eq!(s.data.as_ref().unwrap()["token"].0, TOKEN.as_bytes());
    assert_eq!(s.metadata.labels.as_ref().unwrap()["sdbuild"], "sd-42");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Pod", name.as_str())
    );
    assert_eq!(Some(owner.uid.as_str()), pod.metadata.uid.as_deref());
}

#[tokio::test]
async fn explicit_amounts_are_capped_and_requests_follow_the_fraction() {
    let fake = FakeApiServer::start().await;
    let mut cfg = builder(&fake).config().clone();
    cfg.request_fraction = 0.5;
    let e = executor(builder(&fake).with_config(cfg)).await;
    let b = StartConfig::builder(43, "http://127.0.0.1:9/", "busybox", TOKEN)
        .annotation("screwdriver.cd/cpu", 64)
        .build()
        .unwrap();
    e.start(&b).await.unwrap();
    let k = fake.kubelet(NS);
    let pod = k.pod(&pod_name(&k, 43)).unwrap();
    let res = pod.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "12000m");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "2Gi");
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "6000m");
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "1Gi");
}

#[tokio::test]
async fn screwdriver_mode_passes_the_token_as_argument_and_creates_no_secret() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_launch_mode(LaunchMode::Screwdriver)).await;
    fake.reset_requests();
    e.start(&start_cfg(44)).await.unwrap();
    // One request (the watch may reconnect meanwhile; its requests are not the start's).
    let sent: Vec<String> = fake
        .request_log()
        .into_iter()
        .filter(|r| !r.starts_with("watch ") && !r.starts_with("list "))
        .collect();
    assert_eq!(sent, ["create pods"], "{:?}", fake.requests());
    let k = fake.kubelet(NS);
    assert!(k.secrets().is_empty());
    let c = k.pod(&pod_name(&k, 44)).unwrap().spec.unwrap().containers[0].clone();
    assert_eq!(
        c.command.as_deref(),
        Some(&["/opt/sd/launcher_entrypoint.sh".to_string()][..])
    );
    // Upstream's contract: the token is in run.sh's argument string (documented).
    assert!(c.args.unwrap()[0].contains(TOKEN));
    assert!(c.env.unwrap().iter().all(|v| v.name != "SD_TOKEN"));
}

#[tokio::test]
async fn start_of_a_live_build_is_already_exists_and_creates_nothing() {
    let (fake, k, e) = setup().await;
    e.start(&start_cfg(45)).await.unwrap();
    fake.reset_requests();
    let err = e.start(&start_cfg(45)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(fake.total_requests(), 0);
    assert_eq!(pod_name(&k, 45).len(), "sd-45-".len() + 5);
    assert_eq!(k.secrets().len(), 1);
}

#[tokio::test]
async fn a_failed_pod_create_creates_no_secret() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(500).on("create", "pods").times(1_000));
    let err = e.start(&start_cfg(46)).await.unwrap_err();
    assert!(err.is_temporary(), "{err}");
    // The pod is named by us, so a 500 is retried (a repeat cannot create two pods),
    // within the retry policy.
    assert!(fake.request_count("create pods") > 1);
    assert_eq!(fake.request_count("create secrets"), 0);
    assert!(k.pods().is_empty() && k.secrets().is_empty());
    assert!(!format!("{err} {err:?}").contains(TOKEN));
    // Nothing is left tracked: the build can be started again.
    assert!(e.status(&stop_cfg(46)).await.is_err());
    fake.clear_faults();
    e.start(&start_cfg(46)).await.unwrap();
    assert_eq!(k.pods().len(), 1);
}

#[tokio::test]
async fn a_pod_create_answered_500_once_is_retried_under_its_name() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(500).on("create", "pods"));
    e.start(&start_cfg(146)).await.unwrap();
    assert_eq!(fake.request_count("create pods"), 2);
    assert_eq!((k.pods().len(), k.secrets().len()), (1, 1));
}

/// The API server's 504 after the write reached etcd (or any answer lost on the way
/// back): the pod exists though the create failed. The retry is refused with 409, the
/// pod is read back, and its uid owns the token Secret; one pod, one Secret.
#[tokio::test]
async fn a_lost_pod_create_answer_is_read_back_and_owns_the_secret() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(504).on("create", "pods").after_applying());
    e.start(&start_cfg(147)).await.unwrap();
    assert_eq!(fake.request_count("create pods"), 2);
    assert_eq!(fake.request_count("get pods"), 1);
    let pods = k.pods();
    let secrets = k.secrets();
    assert_eq!((pods.len(), secrets.len()), (1, 1));
    let owner = &secrets[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(Some(&owner.uid), pods[0].metadata.uid.as_ref());
    // The build is the executor's own: it runs and stops as any other.
    let name = pod_name(&k, 147);
    k.run(&name);
    e.stop(&stop_cfg(147)).await.unwrap();
    assert!(k.pods().is_empty() || k.pods()[0].metadata.deletion_timestamp.is_some());
}

#[tokio::test]
async fn a_lost_secret_create_answer_is_read_back() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(504).on("create", "secrets").after_applying());
    e.start(&start_cfg(148)).await.unwrap();
    assert_eq!(fake.request_count("create secrets"), 2);
    assert_eq!((k.pods().len(), k.secrets().len()), (1, 1));
}

#[tokio::test]
async fn a_refused_secret_create_removes_the_pod_again() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(403).on("create", "secrets"));
    let err = e.start(&start_cfg(47)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(fake.request_count("create pods"), 1);
    assert!(k.pods().is_empty() && k.secrets().is_empty());
    let d = fake.deletions();
    assert_eq!(
        (d[0].verb.as_str(), d[0].grace_period_seconds),
        ("delete", Some(0))
    );
    e.start(&start_cfg(47)).await.unwrap();
    assert_eq!((k.pods().len(), k.secrets().len()), (1, 1));
}

#[tokio::test]
async fn an_invalid_pod_is_a_config_error_and_cleans_up() {
    let (fake, k, e) = setup().await;
    fake.inject(Fault::status(422).on("create", "pods"));
    let err = e.start(&start_cfg(48)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(k.secrets().is_empty());
}

#[tokio::test]
async fn upstream_pod_options_reach_the_created_pod() {
    let fake = FakeApiServer::start().await;
    fake.add_runtime_class("gvisor");
    let e = executor(
        builder(&fake)
            .with_runtime_class("gvisor")
            .with_privileged(true)
            .with_disk_speed_label("screwdriver.cd/disk-speed")
            .with_node_selector("pool", "ci")
            .with_volume_mount(HostVolumeMount {
                name: "docker-sock".into(),
                mount_path: "/var/run/docker.sock".into(),
                path: "/var/run/docker.sock".into(),
                type_: Some("Socket".into()),
                read_only: true,
            }),
    )
    .await;
    let b = StartConfig::builder(50, "http://127.0.0.1:9/", "node:22", TOKEN)
        .annotation("screwdriver.cd/terminationGracePeriodSeconds", 120)
        .annotation("screwdriver.cd/disk", "high")
        .annotation("screwdriver.cd/diskSpeed", "FAST")
        .build()
        .unwrap();
    e.start(&b).await.unwrap();
    let k = fake.kubelet(NS);
    let pod = k.pod(&pod_name(&k, 50)).unwrap();
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["screwdriver.cd/disk"],
        "HIGH"
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.termination_grace_period_seconds, Some(120));
    let c = &spec.containers[0];
    assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
    let env = c.env.clone().unwrap();
    let rc = env.iter().find(|v| v.name == "SD_RUNTIME_CLASS").unwrap();
    assert_eq!(rc.value.as_deref(), Some("gvisor"));
    let vol = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "docker-sock")
        .unwrap();
    let hp = vol.host_path.as_ref().unwrap();
    assert_eq!(
        (hp.path.as_str(), hp.type_.as_deref()),
        ("/var/run/docker.sock", Some("Socket"))
    );
    let m = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "docker-sock")
        .unwrap();
    assert_eq!(
        (m.mount_path.as_str(), m.read_only),
        ("/var/run/docker.sock", Some(true))
    );
    let req = spec
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap();
    let exprs: Vec<(String, Vec<String>)> = req.node_selector_terms[0]
        .match_expressions
        .clone()
        .unwrap()
        .into_iter()
        .map(|x| (x.key, x.values.unwrap()))
        .collect();
    assert_eq!(
        exprs,
        [
            ("pool".to_string(), vec!["ci".to_string()]),
            (
                "screwdriver.cd/disk-speed".to_string(),
                vec!["fast".to_string()]
            ),
        ]
    );
}

#[tokio::test]
async fn a_runtime_class_that_does_not_exist_is_a_config_error_naming_the_option() {
    let fake = FakeApiServer::start().await;
    let e = executor(builder(&fake).with_runtime_class("kata")).await;
    let err = e.start(&start_cfg(52)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("key: runtimeClass"), "{err}");
    assert!(
        err.message().contains("RuntimeClass \"kata\" not found"),
        "{err}"
    );
    let k = fake.kubelet(NS);
    assert!(k.pods().is_empty() && k.secrets().is_empty());
}

#[tokio::test]
async fn a_bad_grace_annotation_is_refused_before_anything_is_created() {
    let (fake, k, e) = setup().await;
    fake.reset_requests();
    for bad in [serde_json::json!(-1), serde_json::json!("later")] {
        let b = StartConfig::builder(51, "http://127.0.0.1:9/", "busybox", TOKEN)
            .annotation("screwdriver.cd/terminationGracePeriodSeconds", bad)
            .build()
            .unwrap();
        let err = e.start(&b).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert_eq!(
            err.field_errors()[0].field,
            "annotations[screwdriver.cd/terminationGracePeriodSeconds]"
        );
    }
    assert_eq!(fake.total_requests(), 0);
    assert!(k.pods().is_empty() && k.secrets().is_empty());
    // Nothing was reserved: the same build starts once its annotation is fixed.
    e.start(&start_cfg(51)).await.unwrap();
    assert_eq!(k.pods().len(), 1);
}
