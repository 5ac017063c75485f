//! Pre-flight against a real kube-apiserver (the shared control plane) and the fake:
//! the namespace exists, one `SelfSubjectAccessReview` per verb the executor uses, and
//! a server-side dry run (`dryRun=All`, `fieldValidation=Strict`) of the build's pod and
//! token Secret that leaves nothing behind. A namespace that does not exist, RBAC denied
//! and an API server nobody answers on are each a `fail` naming the resource or address.

mod support;

use std::time::{Duration, Instant};

use executor_base::{Executor, Level, Preflight, StartConfig};
use executor_k8s::K8sExecutorBuilder;
use executor_k8s::fake::FakeApiServer;
use executor_k8s::preflight::NEEDED;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use support::real::{ControlPlane, NS};
use support::{TOKEN, start_cfg};

fn finding<'a>(p: &'a Preflight, check: &str) -> &'a executor_base::Finding {
    p.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no finding {check} in {p:#?}"))
}

fn levels(p: &Preflight, prefix: &str) -> Vec<Level> {
    p.findings
        .iter()
        .filter(|f| f.check.starts_with(prefix))
        .map(|f| f.level)
        .collect()
}

#[tokio::test]
async fn real_api_server_reviews_every_verb_and_dry_runs_the_pod() {
    let Some(cp) = ControlPlane::shared("real_api_server_reviews_every_verb_and_dry_runs_the_pod")
    else {
        return;
    };
    let prefix = "rpf-";
    // The least-privilege user of `up.sh` in its namespace, every other option default.
    let e = cp.builder(prefix).build().await.unwrap();
    let p = e.preflight(&start_cfg(901)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(
        levels(&p, "k8s.rbac."),
        vec![Level::Ok; NEEDED.len()],
        "{p:#?}"
    );
    assert_eq!(finding(&p, "k8s.dryRun.pod").level, Level::Ok);
    assert!(
        finding(&p, "k8s.dryRun.pod")
            .message
            .contains("token Secret")
    );
    // The limited user may not read namespaces (cluster-scoped): a warning, not a failure.
    assert_eq!(finding(&p, "k8s.namespace").level, Level::Warn, "{p:#?}");
    // The dry run persisted nothing.
    let admin = cp.admin().await;
    let sel = ListParams::default().labels(&format!("sdbuild={prefix}901"));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    assert!(pods.list(&sel).await.unwrap().items.is_empty());
    assert!(secrets.list(&sel).await.unwrap().items.is_empty());
    // The audit log shows the dry runs and reviews as such.
    let audit = cp.audit();
    assert!(
        audit.iter().any(|a| a["verb"] == "create"
            && a["requestURI"]
                .as_str()
                .is_some_and(|u| u.contains("/pods?")
                    && u.contains("dryRun=All")
                    && u.contains("fieldValidation=Strict"))),
        "no dry-run pod create in the audit log"
    );

    // As admin, the namespace is read and exists.
    let admin_e = K8sExecutorBuilder::new()
        .with_kubeconfig(cp.admin_kubeconfig())
        .with_namespace(NS)
        .with_prefix(prefix)
        .build()
        .await
        .unwrap();
    let p = admin_e.preflight(&start_cfg(902)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(finding(&p, "k8s.namespace").level, Level::Ok);
}

#[tokio::test]
async fn real_api_server_missing_namespace_and_denied_rbac_fail_naming_them() {
    let Some(cp) =
        ControlPlane::shared("real_api_server_missing_namespace_and_denied_rbac_fail_naming_them")
    else {
        return;
    };
    let missing = K8sExecutorBuilder::new()
        .with_kubeconfig(cp.admin_kubeconfig())
        .with_namespace("sdx-no-such-namespace")
        .build()
        .await
        .unwrap();
    let p = missing.preflight(&start_cfg(903)).await.unwrap();
    assert!(!p.passed());
    let n = finding(&p, "k8s.namespace");
    assert_eq!(n.level, Level::Fail);
    assert!(n.message.contains("sdx-no-such-namespace"), "{}", n.message);
    assert!(n.message.contains("does not exist"), "{}", n.message);
    let d = finding(&p, "k8s.dryRun.pod");
    assert_eq!(d.level, Level::Fail);
    assert!(d.message.contains("not found"), "{}", d.message);

    // The limited user outside its namespace: every verb denied, each one named.
    let denied = K8sExecutorBuilder::new()
        .with_kubeconfig(cp.limited_kubeconfig())
        .with_namespace("default")
        .build()
        .await
        .unwrap();
    let p = denied.preflight(&start_cfg(904)).await.unwrap();
    assert!(!p.passed());
    for (resource, verb) in NEEDED {
        let f = finding(&p, &format!("k8s.rbac.{resource}.{verb}"));
        assert_eq!(f.level, Level::Fail, "{f:?}");
        assert!(
            f.message.contains(&format!(
                "RBAC denies {verb} on {resource} in namespace default"
            )),
            "{}",
            f.message
        );
    }
    assert_eq!(finding(&p, "k8s.dryRun.pod").level, Level::Fail);
}

#[tokio::test]
async fn fake_answers_reviews_dry_runs_and_denials() {
    let fake = FakeApiServer::start().await;
    let e = support::executor(support::builder(&fake)).await;
    let p = e.preflight(&start_cfg(905)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(finding(&p, "k8s.namespace").level, Level::Ok);
    assert_eq!(fake.request_count("create pods"), 1, "the dry run");
    assert!(
        fake.request_details()
            .iter()
            .any(|r| r.verb_resource == "create pods" && r.query.contains("dryRun=All")),
    );
    assert!(
        fake.kubelet(support::NS).pods().is_empty(),
        "nothing stored"
    );

    // Cached: the same build shape asks nothing again.
    let before = fake.total_requests();
    let again = e.preflight(&start_cfg(906)).await.unwrap();
    assert_eq!(again, p);
    assert_eq!(fake.total_requests(), before);

    fake.deny("deletecollection", "secrets");
    let fresh =
        support::executor(support::builder(&fake).with_option("preflight.cacheMs", "0")).await;
    let p = fresh.preflight(&start_cfg(907)).await.unwrap();
    assert!(!p.passed());
    let f = finding(&p, "k8s.rbac.secrets.deletecollection");
    assert_eq!(f.level, Level::Fail);
    assert!(
        f.message.contains("deletecollection on secrets"),
        "{}",
        f.message
    );
    assert_eq!(
        levels(&p, "k8s.rbac.")
            .iter()
            .filter(|l| **l == Level::Fail)
            .count(),
        1
    );

    fake.remove_namespace(support::NS);
    let p = fresh.preflight(&start_cfg(908)).await.unwrap();
    assert_eq!(finding(&p, "k8s.namespace").level, Level::Fail);
    assert_eq!(finding(&p, "k8s.dryRun.pod").level, Level::Fail);

    // A bad annotation is a finding naming it, not a panic or an error.
    let bad = StartConfig::builder(909, "http://127.0.0.1:9/", "busybox:latest", TOKEN)
        .annotation("screwdriver.cd/terminationGracePeriodSeconds", "soon")
        .build()
        .unwrap();
    let p = fresh.preflight(&bad).await.unwrap();
    let f = finding(&p, "k8s.dryRun.pod");
    assert_eq!(f.level, Level::Fail);
    assert!(
        f.message.contains("terminationGracePeriodSeconds"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn an_unreachable_api_server_fails_naming_it_within_the_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let e = K8sExecutorBuilder::new()
        .with_url(&url)
        .with_namespace(NS)
        .with_watch(false)
        .with_option("preflight.timeoutMs", "500")
        .build()
        .await
        .unwrap();
    let t = Instant::now();
    let p = e.preflight(&start_cfg(910)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let n = finding(&p, "k8s.namespace");
    assert_eq!(n.level, Level::Fail);
    assert!(n.message.contains(&url), "{}", n.message);
}
