//! Kubernetes pre-flight ([`executor_base::Executor::preflight`]): the namespace exists,
//! the credentials may do every verb the executor uses (one `SelfSubjectAccessReview`
//! each, [`NEEDED`]), and the pod (and, in native mode, the token Secret) it would create
//! pass a server-side dry run (`dryRun=All`, `fieldValidation=Strict`): the API server's
//! own validation, admission, quotas and LimitRanges, with nothing persisted.

use chrono::Utc;
use executor_base::labels::BuildLabels;
use executor_base::preflight::{Finding, Preflight, bounded, launch_mode_finding};
use executor_base::{Error, LaunchMode, StartConfig};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde::de::DeserializeOwned;

use crate::SCHEME;
use crate::client::create_request;
use crate::executor::K8sExecutor;
use crate::manifest::{self, Names};
use crate::pod_extras::PodExtras;

/// The `(resource, verb)`s the executor uses: start creates the pod and its token
/// Secret; status reads and watches pods; stop deletes pods (one, or by label) and
/// Secrets; gc lists both and deletes by label.
pub const NEEDED: &[(&str, &str)] = &[
    ("pods", "create"),
    ("pods", "get"),
    ("pods", "list"),
    ("pods", "watch"),
    ("pods", "delete"),
    ("pods", "deletecollection"),
    ("secrets", "create"),
    ("secrets", "delete"),
    ("secrets", "deletecollection"),
    ("secrets", "list"),
];

/// The key the findings of `build` depend on (the cache key).
pub(crate) fn key(exec: &K8sExecutor, build: &StartConfig) -> String {
    format!(
        "{}|{}|{}",
        exec.namespace(),
        build.container,
        serde_json::to_string(&build.annotations.raw()).unwrap_or_default()
    )
}

/// Runs the checks (uncached).
pub(crate) async fn run(exec: &K8sExecutor, build: &StartConfig) -> Result<Preflight, Error> {
    let cfg = exec.config();
    let ns = exec.namespace().to_string();
    let client = exec.kube_client();
    let address = exec.api_url();
    let timeout = cfg.preflight.check_timeout;
    let mut p = Preflight::new(SCHEME);
    p.push(launch_mode_finding("k8s.launchMode", cfg.launch_mode));

    let answered = std::sync::atomic::AtomicBool::new(false);
    let f = bounded("k8s.namespace", &address, timeout, async {
        let (reached, f) = namespace(&client, &ns, &address).await;
        answered.store(reached, std::sync::atomic::Ordering::SeqCst);
        f
    })
    .await;
    p.push(f);
    if !answered.load(std::sync::atomic::Ordering::SeqCst) {
        // Nothing more to learn from a server that did not answer.
        return Ok(p);
    }
    for (resource, verb) in NEEDED {
        let check = format!("k8s.rbac.{resource}.{verb}");
        let f = bounded(
            &check,
            &address,
            timeout,
            access(&client, &ns, resource, verb, &check),
        )
        .await;
        p.push(f);
    }
    let f = bounded("k8s.dryRun.pod", &address, timeout, dry_run(exec, build)).await;
    p.push(f);
    Ok(p)
}

/// A request's failure as a message: the API server's own for an answer, else the
/// transport error naming the server.
fn describe(e: &kube::Error, address: &str) -> (bool, String) {
    match e {
        kube::Error::Api(s) => (false, format!("{} ({})", s.message, s.code)),
        other => (
            true,
            format!("cannot reach the API server at {address}: {other}"),
        ),
    }
}

/// The namespace finding, and whether the API server answered at all.
async fn namespace(client: &kube::Client, ns: &str, address: &str) -> (bool, Finding) {
    const CHECK: &str = "k8s.namespace";
    let answer = Api::<Namespace>::all(client.clone()).get(ns).await;
    let reached = !matches!(&answer, Err(e) if describe(e, address).0);
    let f = match answer {
        Ok(_) => Finding::ok(CHECK, format!("namespace {ns} exists")),
        Err(kube::Error::Api(s)) if s.code == 404 => Finding::fail(
            CHECK,
            format!(
                "namespace {ns} does not exist (option `namespace`): create it or choose another"
            ),
        ),
        Err(kube::Error::Api(s)) if s.code == 403 => Finding::warn(
            CHECK,
            format!(
                "these credentials may not read namespace {ns} (a cluster-scoped get, not needed to run builds); the dry run below shows whether it exists"
            ),
        ),
        Err(e) => {
            let (unreachable, m) = describe(&e, address);
            if unreachable {
                Finding::fail(CHECK, m)
            } else {
                Finding::fail(CHECK, format!("reading namespace {ns} failed: {m}"))
            }
        }
    };
    (reached, f)
}

async fn access(
    client: &kube::Client,
    ns: &str,
    resource: &str,
    verb: &str,
    check: &str,
) -> Finding {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                verb: Some(verb.to_string()),
                resource: Some(resource.to_string()),
                group: Some(String::new()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => match r.status {
            Some(s) if s.allowed => {
                Finding::ok(check, format!("may {verb} {resource} in namespace {ns}"))
            }
            Some(s) => Finding::fail(
                check,
                format!(
                    "RBAC denies {verb} on {resource} in namespace {ns}{}: grant it to these credentials (a Role with resources [\"{resource}\"], verbs [\"{verb}\"])",
                    s.reason
                        .filter(|r| !r.is_empty())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
            ),
            None => Finding::fail(check, "the access review answered no status"),
        },
        Err(e) => Finding::fail(
            check,
            format!(
                "the access review of {verb} {resource} failed: {}",
                describe(&e, "the API server").1
            ),
        ),
    }
}

/// Creates `obj` with `dryRun=All` and strict field validation.
async fn create_dry<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    client.request::<K>(create_request(ns, obj, true)?).await
}

async fn dry_run(exec: &K8sExecutor, build: &StartConfig) -> Finding {
    const CHECK: &str = "k8s.dryRun.pod";
    let cfg = exec.config();
    let ns = exec.namespace();
    let client = exec.kube_client();
    let extras = match PodExtras::from_annotations(&build.annotations) {
        Ok(x) => x,
        Err(e) => return Finding::fail(CHECK, format!("the build's annotations: {e}")),
    };
    let timeout = cfg.timeout.minutes(&build.annotations);
    let expires = manifest::expiry(cfg, timeout, Utc::now());
    let labels = BuildLabels::new(&cfg.prefix, build.build_id, build.job_id, expires)
        .with_owner(exec.owner().cloned());
    let names = Names::new(&labels);
    let label_map = manifest::labels(&labels, &cfg.pod_labels);
    let pod = manifest::pod(cfg, build, &extras, &names, label_map.clone(), timeout);
    if let Err(e) = create_dry::<Pod>(&client, ns, &pod).await {
        return Finding::fail(
            CHECK,
            format!(
                "the API server refused the build's pod in a dry run (namespace {ns}): {}",
                describe(&e, &exec.api_url()).1
            ),
        );
    }
    if cfg.launch_mode == LaunchMode::Native {
        let secret = manifest::secret(&names, label_map, build, None);
        if let Err(e) = create_dry::<Secret>(&client, ns, &secret).await {
            return Finding::fail(
                "k8s.dryRun.secret",
                format!(
                    "the API server refused the build's token Secret in a dry run (namespace {ns}): {}",
                    describe(&e, &exec.api_url()).1
                ),
            );
        }
    }
    Finding::ok(
        CHECK,
        format!(
            "the build's pod{} pass a server-side dry run in namespace {ns} (strict field validation, admission, quotas)",
            if cfg.launch_mode == LaunchMode::Native {
                " and token Secret"
            } else {
                ""
            }
        ),
    )
}
