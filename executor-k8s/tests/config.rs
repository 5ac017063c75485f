//! Configuration: environment variables, options, and refusal of bad values by key.

mod support;

use executor_base::ErrorKind;
use executor_k8s::fake::FakeApiServer;
use executor_k8s::{HostVolumeMount, K8sConfig, K8sExecutorBuilder, ReasonPolicy};
use support::*;

async fn refused(b: K8sExecutorBuilder) -> String {
    let err = b.build().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    err.to_string()
}

fn host_mount(name: &str, mount_path: &str) -> HostVolumeMount {
    HostVolumeMount {
        name: name.into(),
        mount_path: mount_path.into(),
        path: "/var/cache/sd".into(),
        type_: None,
        read_only: false,
    }
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_key() {
    let fake = FakeApiServer::start().await;
    let b = || builder(&fake);
    let mut bad_policy = ReasonPolicy::default();
    bad_policy.rules[0].on = executor_k8s::Match::Waiting { reason: " ".into() };
    let cases: Vec<(&str, K8sExecutorBuilder)> = vec![
        ("namespace", b().with_namespace("Not_A_Namespace")),
        ("prefix", b().with_prefix("SD_")),
        ("imagePullPolicy", b().with_image_pull_policy("Sometimes")),
        ("launcherImage", b().with_launcher_image("", "v1")),
        ("launcherVersion", b().with_launcher_image("launcher", "")),
        ("qps", b().with_rate_limit(0, 10)),
        ("burst", b().with_rate_limit(10, 0)),
        ("policy", b().with_policy(bad_policy)),
        ("url", b().with_url("not a url")),
        ("serviceAccount", b().with_service_account(" ")),
        (
            "EXECUTOR_K8S_QPS",
            K8sExecutorBuilder::from_vars([("EXECUTOR_K8S_QPS", "fast")]),
        ),
        (
            "EXECUTOR_K8S_NOPE",
            K8sExecutorBuilder::from_vars([("EXECUTOR_K8S_NOPE", "1")]),
        ),
        (
            "EXECUTOR_K8S_CONFIG",
            K8sExecutorBuilder::from_vars([("EXECUTOR_K8S_CONFIG", "{")]),
        ),
        ("resources.cpu", {
            let mut c = b().config().clone();
            c.resources.cpu.low = -1.0;
            b().with_config(c)
        }),
        ("requestFraction", {
            let mut c = b().config().clone();
            c.request_fraction = 0.0;
            b().with_config(c)
        }),
        ("runtimeClass", b().with_runtime_class("Not A Class")),
        ("diskSpeedLabel", b().with_disk_speed_label(" speed")),
        (
            "volumeMounts[0].mountPath",
            b().with_volume_mount(host_mount("cache", "relative")),
        ),
        (
            "volumeMounts[1].name",
            b().with_volume_mount(host_mount("cache", "/a"))
                .with_volume_mount(host_mount("cache", "/b")),
        ),
        (
            "volumeMounts[0].mountPath",
            b().with_volume_mount(host_mount("tools", "/opt/sd")),
        ),
        (
            "volumeMounts[0].name",
            b().with_volume_mount(host_mount("sd-tools", "/x")),
        ),
        (
            "EXECUTOR_K8S_VOLUME_MOUNTS",
            K8sExecutorBuilder::from_vars([("EXECUTOR_K8S_VOLUME_MOUNTS", r#"[{"name": "x"}]"#)]),
        ),
        ("mountPoint", {
            let mut c = b().config().clone();
            c.mount_point = "relative".into();
            b().with_config(c)
        }),
    ];
    for (key, b) in cases {
        let msg = refused(b).await;
        assert!(msg.contains(key), "error for {key} does not name it: {msg}");
    }
    assert_eq!(
        fake.total_requests(),
        0,
        "bad configs never reach the API server"
    );
}

#[tokio::test]
async fn environment_variables_and_options_fill_the_config() {
    let b = K8sExecutorBuilder::from_vars([
        (
            "EXECUTOR_K8S_CONFIG",
            r#"{"prefix": "from-json-", "qps": 7}"#,
        ),
        ("EXECUTOR_K8S_PREFIX", "env-"),
        ("EXECUTOR_K8S_URL", "http://127.0.0.1:6443"),
        ("EXECUTOR_K8S_IMAGE_PULL_SECRETS", "a,b"),
        ("EXECUTOR_K8S_WATCH", "false"),
        ("EXECUTOR_K8S_STOP_GRACE_SECONDS", "5"),
        ("EXECUTOR_K8S_IMAGE_PULL_GRACE_SECONDS", "9"),
        ("EXECUTOR_K8S_RUNTIME_CLASS", "kata"),
        ("EXECUTOR_K8S_PRIVILEGED", "true"),
        ("EXECUTOR_K8S_DISK_SPEED_LABEL", "disk-speed"),
        (
            "EXECUTOR_K8S_VOLUME_MOUNTS",
            r#"[{"name": "cache", "mountPath": "/cache", "path": "/var/cache", "type": "Directory"}]"#,
        ),
        ("KUBECONFIG", "/dev/null"),
    ])
    .with_option("policy.pendingTimeoutSeconds", "33")
    .with_option("preferredNodeSelectors", "zone=a");
    let c: &K8sConfig = b.config();
    assert_eq!(
        c.prefix, "env-",
        "single variables win over EXECUTOR_K8S_CONFIG"
    );
    assert_eq!(c.qps, 7);
    assert_eq!(c.url.as_deref(), Some("http://127.0.0.1:6443"));
    assert_eq!(c.image_pull_secrets, ["a", "b"]);
    assert!(!c.watch);
    assert_eq!(c.stop_grace_seconds, Some(5));
    assert_eq!(c.policy.image_pull_grace_seconds, 9);
    assert_eq!(c.policy.pending_timeout_seconds, 33);
    assert_eq!(c.preferred_node_selectors["zone"], "a");
    assert_eq!(c.runtime_class, "kata");
    assert!(c.privileged);
    assert_eq!(c.disk_speed_label, "disk-speed");
    assert_eq!(c.volume_mounts, [host_mount_typed()]);
    // The whole config round-trips through serde.
    let json = serde_json::to_value(c).unwrap();
    let back: K8sConfig = serde_json::from_value(json).unwrap();
    assert_eq!(&back, c);
}

#[tokio::test]
async fn the_namespace_defaults_to_the_clients() {
    let fake = FakeApiServer::start().await;
    let e = K8sExecutorBuilder::new()
        .with_client(fake.client())
        .build()
        .await
        .unwrap();
    assert_eq!(e.namespace(), "default");
    assert_eq!(
        e.api_requests(),
        None,
        "an injected client is not rate limited by us"
    );
    e.wait_synced(std::time::Duration::from_secs(10))
        .await
        .unwrap();
}

fn host_mount_typed() -> HostVolumeMount {
    HostVolumeMount {
        name: "cache".into(),
        mount_path: "/cache".into(),
        path: "/var/cache".into(),
        type_: Some("Directory".into()),
        read_only: false,
    }
}

#[tokio::test]
async fn file_env_and_flags_layer_in_precedence_order_and_refuse_unknown_keys() {
    use executor_base::options::ConfigBuilder;
    let file = serde_json::json!({
        "namespace": "from-file", "prefix": "file-", "qps": 9,
        "retry": {"maxRetries": 2}, "resources": {"ram": {"high": 8}},
        "policy": {"imagePullGraceSeconds": 40},
    });
    let vars = [
        ("EXECUTOR_K8S_PREFIX", "env-"),
        ("EXECUTOR_K8S_QPS", "11"),
        ("EXECUTOR_K8S_BREAKER_MAX_FAILURES", "3"),
    ];
    let flags = [("qps".to_string(), "12".to_string())];
    let b = K8sExecutorBuilder::new().layered(Some(&file), vars, &flags);
    let c = b.config();
    assert_eq!(c.namespace.as_deref(), Some("from-file"));
    assert_eq!(c.prefix, "env-", "env over file");
    assert_eq!(c.qps, 12, "flag over env");
    assert_eq!((c.retry.max_retries, c.breaker.max_failures), (2, 3));
    assert_eq!(c.resources.ram.high, 8.0);
    assert_eq!(
        c.resources.ram.low, 2.0,
        "the other tiers keep their RAM defaults"
    );
    assert_eq!(c.policy.image_pull_grace_seconds, 40);
    assert!(
        !c.policy.rules.is_empty(),
        "merging one field keeps the rules"
    );

    let msg = refused(K8sExecutorBuilder::new().with_section(&serde_json::json!({
        "namespce": "x", "qps": "fast", "nodeSelectors": ["a"],
    })))
    .await;
    for part in [
        "namespce: unknown option of k8s; did you mean `namespace`?",
        "qps: must be an integer",
        "nodeSelectors: expected a map, got an array",
    ] {
        assert!(msg.contains(part), "{part} missing in {msg}");
    }
    let msg = refused(K8sExecutorBuilder::new().with_option("timeout.maxMinutes", "-1")).await;
    assert!(
        msg.contains("timeout.maxMinutes: must be an integer"),
        "{msg}"
    );
}
