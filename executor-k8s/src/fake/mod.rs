//! A stateful fake Kubernetes API server for tests and benchmarks (feature `fake`; not
//! API-stable).
//!
//! It serves the core/v1 `pods` and `secrets` endpoints kube-rs uses over plain HTTP on
//! `127.0.0.1:<random port>`, so the real `kube::Client` (and the executor's watch) talk
//! to it unchanged: create (201, 409 on duplicate names), get, list and deletecollection
//! with label selectors, delete, merge patch, metadata-only lists, resource versions, and
//! watches with bookmarks, replay from a resource version and `410 Gone` once the history
//! is compacted. The owner-reference garbage collector removes a Secret when its owning
//! pod goes (or at once, if the owner no longer exists). Faults are injectable per verb
//! and resource (429 with `Retry-After`, 5xx, or a lost answer: the request carried out
//! and its answer replaced by a 5xx), watches can be cut, and every request is counted. A small [`Kubelet`] moves pods through their lives on the test's command,
//! or automatically ([`FakeApiServer::auto_kubelet`]).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use executor_k8s::fake::FakeApiServer;
//! let fake = FakeApiServer::start().await;
//! assert!(fake.url().starts_with("http://127.0.0.1:"));
//! assert_eq!(fake.kubelet("default").pods().len(), 0);
//! # });
//! ```

mod http;
mod kubelet;
mod outage;
mod store;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

pub use kubelet::{AutoKubelet, Kubelet};
pub use store::Kind;

/// An injected failure: the next `times` requests matching `verb` and `resource` get
/// `status` (with `Retry-After` when set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `create`, `get`, `list`, `watch`, `delete`, `deletecollection`, `patch`; any if `None`.
    pub verb: Option<String>,
    /// `pods` or `secrets`; any if `None`.
    pub resource: Option<String>,
    /// The HTTP status to answer.
    pub status: u16,
    /// `Retry-After` seconds (header and `details.retryAfterSeconds`).
    pub retry_after: Option<u64>,
    /// How many requests it hits.
    pub times: u32,
    /// The request is carried out and only its answer is replaced by `status`: the API
    /// server's `504` when its handler timed out after the write reached etcd, or any
    /// answer lost on the way back.
    pub applied: bool,
}

impl Fault {
    /// A fault answering `status` once, for any request.
    pub fn status(status: u16) -> Self {
        Self {
            verb: None,
            resource: None,
            status,
            retry_after: None,
            times: 1,
            applied: false,
        }
    }

    /// Only for this verb.
    pub fn on(mut self, verb: &str, resource: &str) -> Self {
        self.verb = Some(verb.into());
        self.resource = Some(resource.into());
        self
    }

    /// With `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// For the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Carry the request out, then answer `status` instead of the result (see
    /// [`Fault::applied`]).
    pub fn after_applying(mut self) -> Self {
        self.applied = true;
        self
    }
}

/// One request as the fake saw it (what an audit log line says of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `"<verb> <resource>"` (`"create pods"`).
    pub verb_resource: String,
    /// The query string (`fieldManager=...&fieldValidation=Strict`), empty if none.
    pub query: String,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

/// One delete request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRecord {
    /// `delete` or `deletecollection`.
    pub verb: String,
    /// `pods` or `secrets`.
    pub resource: String,
    /// The name, or the label selector of a deletecollection.
    pub target: String,
    /// The requested grace period.
    pub grace_period_seconds: Option<i64>,
}

/// State shared by the handle, the HTTP handlers and the kubelet.
pub(crate) struct Shared {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) counts: Mutex<BTreeMap<String, u64>>,
    pub(crate) log: Mutex<Vec<String>>,
    pub(crate) faults: Mutex<Vec<FaultState>>,
    pub(crate) deletions: Mutex<Vec<DeleteRecord>>,
    pub(crate) disconnect: watch::Sender<u64>,
    /// `false` while watches are paused: streams end, new watches wait.
    pub(crate) watch_gate: watch::Sender<bool>,
    pub(crate) watch_queries: Mutex<Vec<String>>,
    pub(crate) details: Mutex<Vec<RequestRecord>>,
    pub(crate) bookmark_interval: Mutex<Duration>,
    /// The RuntimeClasses that exist (pods naming another are refused, as by the
    /// RuntimeClass admission plugin).
    pub(crate) runtime_classes: Mutex<std::collections::BTreeSet<String>>,
    /// Namespaces that do not exist (every other one does).
    pub(crate) absent_namespaces: Mutex<std::collections::BTreeSet<String>>,
    /// `<verb> <resource>`s RBAC denies the client (`create pods`): refused with 403,
    /// and answered `allowed: false` by a `SelfSubjectAccessReview`.
    pub(crate) denied: Mutex<std::collections::BTreeSet<String>>,
}

/// A fault being served.
#[derive(Debug, Clone)]
pub(crate) struct FaultState {
    pub(crate) verb: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) times: u32,
    pub(crate) applied: bool,
}

struct ServerGuard(tokio::task::AbortHandle);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fake API server. Clones share it; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    door: Arc<outage::FrontDoor>,
    _guard: Arc<ServerGuard>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.door.addr())
            .finish_non_exhaustive()
    }
}

impl FakeApiServer {
    /// Starts a fake on `127.0.0.1:0` (history of 100,000 changes, bookmarks every second).
    pub async fn start() -> Self {
        Self::start_with(100_000).await
    }

    /// Starts a fake keeping at most `history` changes for watch replay.
    pub async fn start_with(history: usize) -> Self {
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(history)),
            counts: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            deletions: Mutex::new(Vec::new()),
            disconnect: watch::channel(0).0,
            watch_gate: watch::channel(true).0,
            watch_queries: Mutex::new(Vec::new()),
            details: Mutex::new(Vec::new()),
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
            runtime_classes: Mutex::new(Default::default()),
            absent_namespaces: Mutex::new(Default::default()),
            denied: Mutex::new(Default::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let backend = listener.local_addr().expect("local addr");
        let app = http::router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            shared,
            door: outage::FrontDoor::open(backend).await,
            _guard: Arc::new(ServerGuard(task.abort_handle())),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.door.addr())
    }

    /// Takes the server away: new connections are refused and open ones (watches
    /// included) are cut, as when a kube-apiserver stops. Objects are kept.
    pub fn go_down(&self) {
        self.door.close();
    }

    /// Accepts connections on the same port again (after [`FakeApiServer::go_down`]).
    /// Like a restarted kube-apiserver, the change history is gone: a watch resuming from
    /// an earlier resource version gets `410 Gone` and must re-list.
    pub fn come_back(&self) {
        self.compact();
        self.door.reopen();
    }

    /// A kube config pointing at the fake.
    pub fn kube_config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("valid URL"))
    }

    /// A plain kube client for the fake (no rate limit, kube's default retries).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config()).expect("client for the fake")
    }

    /// The kubelet of namespace `ns`.
    pub fn kubelet(&self, ns: &str) -> Kubelet {
        Kubelet::new(self.shared.clone(), ns)
    }

    /// Starts a background kubelet that runs every new pod in any namespace (see
    /// [`AutoKubelet`]); it stops when the handle is dropped or aborted.
    pub fn auto_kubelet(&self, mode: AutoKubelet) -> tokio::task::JoinHandle<()> {
        kubelet::spawn_auto(self.shared.clone(), mode)
    }

    /// Makes namespace `ns` absent: reading it, and creating in it, answer 404 (every
    /// other namespace exists).
    pub fn remove_namespace(&self, ns: &str) {
        self.shared.absent_namespaces.lock().insert(ns.to_string());
    }

    /// Makes RBAC deny `verb` on `resource` (`"create"`, `"pods"`): requests answer 403 as
    /// the API server's authorizer does, and access reviews answer `allowed: false`.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared
            .denied
            .lock()
            .insert(format!("{verb} {resource}"));
    }

    /// Makes a RuntimeClass exist (pods naming a missing one are refused with 403, as
    /// the RuntimeClass admission plugin refuses them).
    pub fn add_runtime_class(&self, name: &str) {
        self.shared.runtime_classes.lock().insert(name.to_string());
    }

    /// Injects a fault.
    pub fn inject(&self, f: Fault) {
        self.shared.faults.lock().push(FaultState {
            verb: f.verb,
            kind: f.resource,
            status: f.status,
            retry_after: f.retry_after,
            times: f.times,
            applied: f.applied,
        });
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().clear();
    }

    /// Requests by `"<verb> <resource>"` (`"create pods"`, `"watch pods"`, ...).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared.counts.lock().clone()
    }

    /// Requests of one `"<verb> <resource>"`.
    pub fn request_count(&self, verb_resource: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .get(verb_resource)
            .copied()
            .unwrap_or(0)
    }

    /// All requests so far.
    pub fn total_requests(&self) -> u64 {
        self.shared.counts.lock().values().sum()
    }

    /// Every request so far, in order, as `"<verb> <resource>"`.
    pub fn request_log(&self) -> Vec<String> {
        self.shared.log.lock().clone()
    }

    /// Every request so far with its query and user agent, in order.
    pub fn request_details(&self) -> Vec<RequestRecord> {
        self.shared.details.lock().clone()
    }

    /// Zeroes the request counters and the logs.
    pub fn reset_requests(&self) {
        self.shared.counts.lock().clear();
        self.shared.log.lock().clear();
        self.shared.details.lock().clear();
    }

    /// Every delete request so far.
    pub fn deletions(&self) -> Vec<DeleteRecord> {
        self.shared.deletions.lock().clone()
    }

    /// Cuts every open watch stream (clients reconnect from their last version).
    pub fn disconnect_watches(&self) {
        self.shared.disconnect.send_modify(|n| *n += 1);
    }

    /// Ends every open watch and holds new watch requests until
    /// [`FakeApiServer::resume_watches`]: changes made meanwhile reach clients only
    /// through replay (or, after [`FakeApiServer::compact`], a re-list).
    pub fn pause_watches(&self) {
        self.shared.watch_gate.send_replace(false);
        self.disconnect_watches();
    }

    /// Lets watches through again.
    pub fn resume_watches(&self) {
        self.shared.watch_gate.send_replace(true);
    }

    /// The query strings of every watch request so far.
    pub fn watch_queries(&self) -> Vec<String> {
        self.shared.watch_queries.lock().clone()
    }

    /// Forgets the change history, so a watch resuming from any earlier resource
    /// version gets `410 Gone` and must re-list.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// How often open watches get a bookmark (applies to new watches).
    pub fn set_bookmark_interval(&self, d: Duration) {
        *self.shared.bookmark_interval.lock() = d;
    }

    /// Creates a pod in `ns` as any API client would (`None` if the name is taken).
    pub fn create_pod(
        &self,
        ns: &str,
        pod: &k8s_openapi::api::core::v1::Pod,
    ) -> Option<k8s_openapi::api::core::v1::Pod> {
        let v = serde_json::to_value(pod).ok()?;
        let created = self.shared.store.lock().create(Kind::Pods, ns, v).ok()?;
        serde_json::from_value(created).ok()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv()
    }
}
