//! The raw API calls, each through [`EngineCalls`] (retry, breaker, counters).
//!
//! Creates name their objects (a random suffix per pod), so they go through
//! [`EngineCalls::create_named`]: retried on any temporary error, a lost answer read back
//! by name. Reads, deletes and the owner patch are `Idempotent` (5xx retried with
//! backoff).
//! Deleting something already gone is success.
//!
//! Breaker classes ([`CallClass`]): the start's creates and owner patch are `Start`,
//! status reads `Read`, and every delete plus garbage collection's metadata lists `Stop`,
//! which no breaker ever refuses: a run of failing starts cannot keep a stop from
//! reaching the API server.

use std::sync::Arc;

use executor_base::engine::{CallClass, Created, EngineCalls, Idempotency};
use executor_base::{Error, ErrorKind};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error;
use crate::throttle::Throttle;

/// The field manager of every object this executor writes (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "sdx-executor-k8s";

/// Pod and Secret APIs of one namespace.
#[derive(Clone)]
pub(crate) struct K8sClient {
    pub(crate) client: kube::Client,
    pub(crate) namespace: String,
    pub(crate) pods: Api<Pod>,
    pub(crate) secrets: Api<Secret>,
    pub(crate) calls: EngineCalls,
    pub(crate) throttle: Option<Arc<Throttle>>,
}

/// A create of `obj` in `ns` with our field manager and `fieldValidation=Strict`: the API
/// server refuses (400) a manifest with a field it does not know instead of silently
/// dropping it. (kube's `PostParams` has no field validation, so the request is built
/// here.)
pub(crate) fn create_request<K>(
    ns: &str,
    obj: &K,
    dry_run: bool,
) -> Result<http::Request<Vec<u8>>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize,
{
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    http::Request::post(format!(
        "{}?fieldManager={FIELD_MANAGER}&fieldValidation=Strict{}",
        K::url_path(&(), Some(ns)),
        if dry_run { "&dryRun=All" } else { "" }
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(body)
    .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))
}

fn gone_is_ok(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl K8sClient {
    /// The same client making one attempt per call (no retries).
    pub(crate) fn single_attempt(&self) -> Self {
        Self {
            calls: self
                .calls
                .with_retry_policy(executor_base::engine::RetryPolicy::none()),
            ..self.clone()
        }
    }

    /// Creates `obj` under its own name (pods and Secrets carry a random suffix no one
    /// else uses), so the create is retried on any temporary error like a read: a
    /// kept-alive connection that a restarting API server closed under the request, or a
    /// 5xx, cannot leave the start failed for a pod that was in fact created. A retry
    /// refused with 409 means the lost attempt created it; the object is read back
    /// (its uid owns the token Secret) and must carry our labels.
    async fn create<K>(&self, operation: &'static str, obj: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + std::fmt::Debug
            + Send
            + Sync,
    {
        let (client, ns) = (&self.client, self.namespace.as_str());
        let created = self
            .calls
            .create_named(CallClass::Start, operation, || async move {
                let req = create_request(ns, obj, false).map_err(error::map)?;
                client.request::<K>(req).await.map_err(error::map)
            })
            .await?;
        match created {
            Created::Now(k) => Ok(k),
            Created::Earlier => self.read_back(operation, obj).await,
        }
    }

    /// The object a lost create attempt made, read by name; refused unless its labels
    /// are the ones we sent.
    async fn read_back<K>(&self, operation: &'static str, sent: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + DeserializeOwned
            + Clone
            + std::fmt::Debug
            + Send
            + Sync,
    {
        let name = sent.meta().name.as_deref().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let api = &api;
        let found = self
            .calls
            .call_in(
                CallClass::Start,
                operation,
                Idempotency::Idempotent,
                || async move { api.get(name).await.map_err(error::map) },
            )
            .await?;
        if found.meta().labels != sent.meta().labels {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{name} already exists and is not the object this start created"),
            )
            .with_executor(crate::SCHEME)
            .with_operation(operation));
        }
        tracing::info!(
            executor = crate::SCHEME,
            name,
            operation,
            "the answer to a create was lost; the object it created was read back"
        );
        Ok(found)
    }

    pub(crate) async fn create_secret(&self, secret: &Secret) -> Result<Secret, Error> {
        self.create("create secret", secret).await
    }

    pub(crate) async fn create_pod(&self, pod: &Pod) -> Result<Pod, Error> {
        self.create("create pod", pod).await
    }

    pub(crate) async fn delete_secret(&self, name: &str) -> Result<(), Error> {
        let (api, dp) = (&self.secrets, &DeleteParams::default());
        gone_is_ok(
            self.calls
                .call_in(
                    CallClass::Stop,
                    "delete secret",
                    Idempotency::Idempotent,
                    || async move { api.delete(name, dp).await.map(|_| ()).map_err(error::map) },
                )
                .await,
        )
    }

    pub(crate) async fn delete_pod(&self, name: &str, grace: Option<u32>) -> Result<(), Error> {
        let dp = &DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        let api = &self.pods;
        gone_is_ok(
            self.calls
                .call_in(
                    CallClass::Stop,
                    "delete pod",
                    Idempotency::Idempotent,
                    || async move { api.delete(name, dp).await.map(|_| ()).map_err(error::map) },
                )
                .await,
        )
    }

    /// Deletes every pod matching `selector` (one deletecollection request).
    pub(crate) async fn delete_pods(
        &self,
        selector: &str,
        grace: Option<u32>,
    ) -> Result<(), Error> {
        let dp = &DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        let (api, lp) = (&self.pods, &ListParams::default().labels(selector));
        gone_is_ok(
            self.calls
                .call_in(
                    CallClass::Stop,
                    "delete pods",
                    Idempotency::Idempotent,
                    || async move {
                        api.delete_collection(dp, lp)
                            .await
                            .map(|_| ())
                            .map_err(error::map)
                    },
                )
                .await,
        )
    }

    /// Deletes every Secret matching `selector`.
    pub(crate) async fn delete_secrets(&self, selector: &str) -> Result<(), Error> {
        let dp = &DeleteParams::default();
        let (api, lp) = (&self.secrets, &ListParams::default().labels(selector));
        gone_is_ok(
            self.calls
                .call_in(
                    CallClass::Stop,
                    "delete secrets",
                    Idempotency::Idempotent,
                    || async move {
                        api.delete_collection(dp, lp)
                            .await
                            .map(|_| ())
                            .map_err(error::map)
                    },
                )
                .await,
        )
    }

    pub(crate) async fn get_pod(&self, name: &str) -> Result<Option<Pod>, Error> {
        let api = &self.pods;
        self.calls
            .call_in(
                CallClass::Read,
                "get pod",
                Idempotency::Idempotent,
                || async move { api.get_opt(name).await.map_err(error::map) },
            )
            .await
    }

    pub(crate) async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, Error> {
        let (api, lp) = (&self.pods, &ListParams::default().labels(selector));
        self.calls
            .call_in(
                CallClass::Read,
                "list pods",
                Idempotency::Idempotent,
                || async move { api.list(lp).await.map(|l| l.items).map_err(error::map) },
            )
            .await
    }

    /// Metadata (never the data) of the Secrets matching `selector` (for garbage
    /// collection, so in the never-refused `Stop` class).
    pub(crate) async fn list_secret_metadata(
        &self,
        selector: &str,
    ) -> Result<Vec<ObjectMeta>, Error> {
        let (api, lp) = (&self.secrets, &ListParams::default().labels(selector));
        self.calls
            .call_in(
                CallClass::Stop,
                "list secrets",
                Idempotency::Idempotent,
                || async move {
                    api.list_metadata(lp)
                        .await
                        .map(|l| l.items.into_iter().map(|m| m.metadata).collect())
                        .map_err(error::map)
                },
            )
            .await
    }

    /// Metadata of the pods matching `selector` (for garbage collection, `Stop` class).
    pub(crate) async fn list_pod_metadata(&self, selector: &str) -> Result<Vec<ObjectMeta>, Error> {
        let (api, lp) = (&self.pods, &ListParams::default().labels(selector));
        self.calls
            .call_in(
                CallClass::Stop,
                "list pod metadata",
                Idempotency::Idempotent,
                || async move {
                    api.list_metadata(lp)
                        .await
                        .map(|l| l.items.into_iter().map(|m| m.metadata).collect())
                        .map_err(error::map)
                },
            )
            .await
    }
}
