//! The raw API calls, each through [`EngineCalls`] (retry, breaker, counters).
//!
//! Creates are `NotIdempotent` (retried only after a refused connection or a 429);
//! reads, deletes and the owner patch are `Idempotent` (5xx retried with backoff).
//! Deleting something already gone is success.
//!
//! Breaker classes ([`CallClass`]): the start's creates and owner patch are `Start`,
//! status reads `Read`, and every delete plus garbage collection's metadata lists `Stop`,
//! which no breaker ever refuses: a run of failing starts cannot keep a stop from
//! reaching the API server.

use std::sync::Arc;

use executor_base::engine::{CallClass, EngineCalls, Idempotency};
use executor_base::{Error, ErrorKind};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::error;
use crate::throttle::Throttle;

/// Pod and Secret APIs of one namespace.
#[derive(Clone)]
pub(crate) struct K8sClient {
    pub(crate) pods: Api<Pod>,
    pub(crate) secrets: Api<Secret>,
    pub(crate) calls: EngineCalls,
    pub(crate) throttle: Option<Arc<Throttle>>,
}

impl std::fmt::Debug for K8sClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sClient")
            .field("calls", &self.calls)
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

fn gone_is_ok(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl K8sClient {
    pub(crate) async fn create_secret(&self, secret: &Secret) -> Result<Secret, Error> {
        let (api, pp) = (&self.secrets, &PostParams::default());
        self.calls
            .call_in(
                CallClass::Start,
                "create secret",
                Idempotency::NotIdempotent,
                || async move { api.create(pp, secret).await.map_err(error::map) },
            )
            .await
    }

    pub(crate) async fn create_pod(&self, pod: &Pod) -> Result<Pod, Error> {
        let (api, pp) = (&self.pods, &PostParams::default());
        self.calls
            .call_in(
                CallClass::Start,
                "create pod",
                Idempotency::NotIdempotent,
                || async move { api.create(pp, pod).await.map_err(error::map) },
            )
            .await
    }

    /// Makes the pod the Secret's owner, so the garbage collector removes the Secret
    /// with the pod.
    pub(crate) async fn own_secret(&self, secret: &str, pod: &str, uid: &str) -> Result<(), Error> {
        let patch = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid,
        }]}});
        let (api, pp, patch) = (&self.secrets, &PatchParams::default(), &Patch::Merge(patch));
        self.calls
            .call_in(
                CallClass::Start,
                "own secret",
                Idempotency::Idempotent,
                || async move {
                    api.patch(secret, pp, patch)
                        .await
                        .map(|_| ())
                        .map_err(error::map)
                },
            )
            .await
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
