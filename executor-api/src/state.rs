//! The API's shared state: the executor, the token issuer, the build store, the event
//! channel, and the background tasks (starts, watchers, stops).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use executor_base::{
    ApiBuildStatus, BuildId, Error, ErrorKind, Executor, JobId, StartConfig, StopConfig,
};
use parking_lot::Mutex;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::ApiConfig;
use crate::error::HttpError;
use crate::events::BuildEvent;
use crate::keys::{Claims, SCOPE_TEMPORAL, TokenIssuer};
use crate::lease::Leases;
use crate::model::{BuildRecord, NewBuild, StepRecord, is_final, module_state};
use crate::store::BuildStore;

mod builder;
mod transitions;

pub use builder::ApiStateBuilder;

/// How many events a slow subscriber may fall behind before it misses some.
pub const EVENT_CAPACITY: usize = 4096;

/// The owner of builds submitted to `sdx serve` (or any server linking the API).
pub const OWNER_SERVE: &str = "serve";

/// Where `launch` spooled the reports of a build it could not deliver, if the build's
/// engine keeps them on this host (the process backend: `<stateDir>/builds/<id>/spool.jsonl`).
pub type SpoolLocator = Arc<dyn Fn(BuildId) -> Option<PathBuf> + Send + Sync>;

/// The reference API's state; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ApiState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) issuer: TokenIssuer,
    pub(crate) config: ApiConfig,
    pub(crate) api_uri: String,
    pub(crate) user_token: SecretString,
    pub(crate) store: Arc<dyn BuildStore>,
    pub(crate) owner: String,
    pub(crate) spool: Option<SpoolLocator>,
    pub(crate) accepting: AtomicBool,
    pub(crate) events: broadcast::Sender<BuildEvent>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// This instance's leases, with a shared store.
    pub(crate) leases: Option<Leases>,
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("executor", &self.inner.executor.name())
            .field("api_uri", &self.inner.api_uri)
            .field("store", &self.inner.store.uri())
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

/// What a status change set off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Transition {
    pub(crate) became_running: bool,
    pub(crate) became_final: bool,
    /// `launch` reported the final status itself: it is exiting, so the executor is
    /// given time to see it end before anything is stopped.
    pub(crate) reported_by_launch: bool,
}

/// A store error as an HTTP answer (503: the API cannot serve without its store).
pub(crate) fn store_error(e: Error) -> HttpError {
    tracing::warn!(error = %e, "build store failed");
    HttpError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!("The build store failed: {e}"),
    )
}

impl ApiState {
    /// The executor builds are dispatched to.
    pub fn executor(&self) -> &Arc<dyn Executor> {
        &self.inner.executor
    }

    /// The token issuer (its public key verifies every token the API hands out).
    pub fn issuer(&self) -> &TokenIssuer {
        &self.inner.issuer
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// The `apiUri` builds are given.
    pub fn api_uri(&self) -> &str {
        &self.inner.api_uri
    }

    /// The administrator's bearer token (configured, or generated once and kept in the
    /// store).
    pub fn user_token(&self) -> &SecretString {
        &self.inner.user_token
    }

    /// The build store.
    pub fn store(&self) -> &Arc<dyn BuildStore> {
        &self.inner.store
    }

    /// Who drives the builds this state submits (`serve`, or `run:<pid>:<start>`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Subscribes to build events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BuildEvent> {
        self.inner.events.subscribe()
    }

    /// Build `id`; 503 when the store fails.
    pub(crate) async fn load(&self, id: u64) -> Result<Option<BuildRecord>, HttpError> {
        self.inner.store.get(id).await.map_err(store_error)
    }

    /// Build `id`, or 404.
    pub(crate) async fn load_existing(&self, id: u64) -> Result<BuildRecord, HttpError> {
        self.load(id)
            .await?
            .ok_or_else(|| HttpError::not_found("Build does not exist"))
    }

    /// A copy of build `id` (`None` when unknown or the store fails).
    pub async fn build(&self, id: u64) -> Option<BuildRecord> {
        self.load(id).await.ok().flatten()
    }

    /// The wire form of build `id`.
    pub async fn build_json(&self, id: u64) -> Option<Value> {
        self.build(id).await.map(|b| b.to_json())
    }

    /// Every build as `{"id", "state", "status"}`, by id.
    pub async fn list_json(&self) -> Result<Value, HttpError> {
        let all = self.inner.store.list().await.map_err(store_error)?;
        Ok(Value::Array(
            all.into_iter()
                .map(|(id, status)| {
                    json!({"id": id.get(), "state": module_state(status), "status": status})
                })
                .collect(),
        ))
    }

    pub(crate) fn emit(&self, e: BuildEvent) {
        // No subscriber is not an error.
        let _ = self.inner.events.send(e);
    }

    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        let mut tasks = self.inner.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Whether new builds are accepted (not once a shutdown began).
    pub fn accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Records a submission and dispatches it to the executor in the background.
    /// Must be called within a Tokio runtime.
    ///
    /// The id is the client's (409 when it exists, changing nothing) or the next of the
    /// store's sequence (never reused, across restarts included). 503 while shutting down.
    pub async fn submit(&self, new: NewBuild) -> Result<BuildId, HttpError> {
        if !self.accepting() {
            return Err(HttpError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "The API is shutting down: no new builds are accepted",
            ));
        }
        let container = self.container_of(new.container.clone())?;
        let id = match new.id {
            Some(id) => id,
            None => self.inner.store.next_id().await.map_err(store_error)?,
        };
        let record = self.new_record(id, container, new);
        // Refused before anything is stored or started: 422 with the findings. The
        // executor caches its answers (`preflight.cacheMs`), so this costs no engine
        // call per build on the hot path.
        if self.inner.config.preflight {
            let preflight = self.preflight(&record).await?;
            if !preflight.passed() {
                return Err(HttpError::preflight_failed(preflight));
            }
        }
        let message = "Waiting for the executor";
        let inserted = match &self.inner.leases {
            None => self.inner.store.insert(&record).await,
            Some(l) => self
                .inner
                .store
                .insert_leased(&record, &l.holder, l.ttl)
                .await
                .map(|lease| l.hold(lease)),
        };
        match inserted {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(HttpError::conflict(format!("Build {id} already exists")));
            }
            Err(e) => return Err(store_error(e)),
        }
        self.emit(BuildEvent::Status {
            build_id: id.get(),
            status: ApiBuildStatus::Queued,
            state: module_state(ApiBuildStatus::Queued),
            message: Some(message.into()),
        });
        crate::faults::pause("submitted").await;
        let state = self.clone();
        self.spawn(async move { crate::dispatch::start(state, id).await });
        Ok(id)
    }

    /// The build's image: its own, else the configured default.
    fn container_of(
        &self,
        container: Option<executor_base::ImageRef>,
    ) -> Result<executor_base::ImageRef, HttpError> {
        match container {
            Some(c) => Ok(c),
            None => executor_base::ImageRef::parse(&self.inner.config.default_container)
                .map_err(|r| HttpError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, r)),
        }
    }

    /// The record of a new submission with id `id` (queued, waiting for the executor).
    fn new_record(
        &self,
        id: BuildId,
        container: executor_base::ImageRef,
        new: NewBuild,
    ) -> BuildRecord {
        let message = "Waiting for the executor";
        BuildRecord {
            id,
            owner: self.inner.owner.clone(),
            version: 1,
            settled: false,
            job_id: new.job_id.unwrap_or(JobId::new(1).expect("1 is positive")),
            event_id: new.event_id,
            pipeline_id: new.pipeline_id,
            job_name: new.job_name,
            container,
            annotations: new.annotations,
            environment: new.environment,
            status: ApiBuildStatus::Queued,
            status_message: Some(message.into()),
            meta: json!({}),
            create_time: Utc::now(),
            start_time: None,
            end_time: None,
            steps: new
                .steps
                .into_iter()
                .map(|(n, c)| StepRecord::new(n, c))
                .collect(),
            timings: Default::default(),
        }
    }

    /// The executor's pre-flight of build `record` (see `Executor::preflight`). An
    /// executor that cannot even run it answers an error: 422 for a build it refuses
    /// (an unknown `screwdriver.cd/executor`, a bad annotation), 503 otherwise.
    pub(crate) async fn preflight(
        &self,
        record: &BuildRecord,
    ) -> Result<executor_base::Preflight, HttpError> {
        let cfg = self.start_config(record).map_err(|e| {
            HttpError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })?;
        self.executor()
            .preflight(&cfg)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Invalid | ErrorKind::ConfigInvalid if !e.field_errors().is_empty() => {
                    HttpError::unprocessable(e.field_errors().to_vec())
                }
                ErrorKind::Invalid | ErrorKind::ConfigInvalid => HttpError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    e.message().to_string(),
                ),
                _ => HttpError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("The executor's pre-flight could not run: {e}"),
                ),
            })
    }

    /// The executor's pre-flight of a build that is not submitted (`POST
    /// /v4/builds?dryRun=true`, `sdx run --dry-run`): nothing is stored or started, and
    /// no id is taken from the sequence (the build's own id, else 1, names it).
    pub async fn dry_run(&self, new: NewBuild) -> Result<executor_base::Preflight, HttpError> {
        let container = self.container_of(new.container.clone())?;
        let id = new.id.unwrap_or(BuildId::new(1).expect("1 is positive"));
        let record = self.new_record(id, container, new);
        self.preflight(&record).await
    }

    /// The start config of build `b`, with a freshly minted temporary token (scope
    /// `temporal`, `username` = build id).
    pub fn start_config(&self, b: &BuildRecord) -> Result<StartConfig, Error> {
        let id = b.id;
        let mut claims = Claims::for_build(
            id.get(),
            SCOPE_TEMPORAL,
            i64::from(self.inner.config.temporal_token_minutes),
        );
        claims.job_id = Some(b.job_id.get());
        claims.event_id = b.event_id.map(|e| e.get());
        claims.pipeline_id = b.pipeline_id.map(|p| p.get());
        let token = self
            .inner
            .issuer
            .mint(&claims)
            .map_err(|e| Error::new(ErrorKind::Unexpected, e))?;
        let mut builder =
            StartConfig::builder(id.get(), self.api_uri(), b.container.as_str(), token)
                .job_id(b.job_id.get())
                .field("annotations", b.annotations.to_json())
                .field("isPR", false);
        if let Some(e) = b.event_id {
            builder = builder.event_id(e.get());
        }
        if let Some(p) = b.pipeline_id {
            builder = builder.pipeline_id(p.get());
        }
        if let Some(n) = &b.job_name {
            builder = builder.job_name(n.clone());
        }
        if let Some(s) = &self.inner.config.store_uri {
            builder = builder.store_uri(s.clone());
        }
        if let Some(u) = &self.inner.config.ui_uri {
            builder = builder.field("uiUri", u.clone());
        }
        builder.build()
    }

    /// The stop config of build `b` (with its annotations, so a router finds the backend).
    pub fn stop_config(&self, b: &BuildRecord) -> StopConfig {
        let mut s = StopConfig::new(b.id);
        s.job_id = Some(b.job_id);
        s.pipeline_id = b.pipeline_id;
        s.job_name = b.job_name.clone();
        s.annotations = b.annotations.clone();
        s.api_uri = executor_base::config::parse_http_url(self.api_uri()).ok();
        s
    }

    /// The handler to give the timer service of the executor when the store is shared
    /// (instead of the router's own stop on timeout): the instance that claims a
    /// build's deadline records the timeout, and the instance driving the build stops
    /// it (see [`crate::lease`]).
    pub fn expiry_handler(&self) -> impl Fn(executor_base::timer::Expired) + Send + Sync + 'static {
        let state = self.clone();
        move |e| {
            let s = state.clone();
            state.spawn(async move { crate::dispatch::timed_out(&s, e).await });
        }
    }

    /// Whether build `id` is final (`None` when unknown).
    pub async fn is_final(&self, id: u64) -> Option<bool> {
        self.build(id).await.map(|b| is_final(b.status))
    }

    /// Whether build `id` is final and its engine confirmed the end (`None` when unknown).
    pub async fn is_settled(&self, id: u64) -> Option<bool> {
        self.build(id)
            .await
            .map(|b| is_final(b.status) && b.settled)
    }

    /// Waits up to `within` until build `id` is final and settled; whether it got there.
    pub async fn wait_settled(&self, id: u64, within: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        loop {
            if self.is_settled(id).await != Some(false) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops accepting builds, stops the background tasks (watchers and stops in flight
    /// are picked up again by the next start's adoption), and with
    /// [`Shutdown::CancelOpen`] first aborts every open build of this owner and waits up
    /// to `grace` for them (and for final builds still being ended on the engine) to be
    /// settled. The executor is not touched otherwise (see
    /// [`crate::ApiServer::shutdown`] for its `cleanup`).
    pub async fn shutdown(&self, mode: Shutdown, grace: std::time::Duration) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        if mode == Shutdown::CancelOpen {
            let unsettled: Vec<BuildRecord> = match self.inner.store.unsettled().await {
                Ok(all) => all
                    .into_iter()
                    .filter(|b| b.owner == self.inner.owner && self.drives(b.id))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list open builds");
                    Vec::new()
                }
            };
            for b in unsettled.iter().filter(|b| !is_final(b.status)) {
                if let Ok((t, _)) = self
                    .transition(
                        b.id.get(),
                        Some(ApiBuildStatus::Aborted),
                        Some("The API shut down".into()),
                    )
                    .await
                {
                    crate::dispatch::react(self, b.id, t).await;
                }
            }
            // Aborted builds and final ones still being ended on the engine.
            let deadline = tokio::time::Instant::now() + grace;
            for b in unsettled {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.wait_settled(b.id.get(), left).await;
            }
        }
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            t.abort();
        }
        // The other instances adopt what this one drove at once.
        self.release_all().await;
    }
}

/// How [`ApiState::shutdown`] treats open builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Leave them running: the next start on the same store adopts them (`sdx serve`'s
    /// default).
    LeaveRunning,
    /// Abort them and wait for their stops (`sdx serve --cancel-on-exit`).
    CancelOpen,
}
