//! The API's shared state: the executor, the token issuer, the builds, the event channel.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use executor_base::{
    ApiBuildStatus, BuildId, Error, ErrorKind, Executor, JobId, StartConfig, StopConfig,
};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::ApiConfig;
use crate::error::HttpError;
use crate::events::BuildEvent;
use crate::keys::{Claims, SCOPE_TEMPORAL, TokenIssuer, random_id};
use crate::model::{BuildRecord, NewBuild, StepRecord, is_final, module_state};

/// How many events a slow subscriber may fall behind before it misses some.
pub const EVENT_CAPACITY: usize = 4096;

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
    pub(crate) builds: Mutex<BTreeMap<u64, BuildRecord>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) events: broadcast::Sender<BuildEvent>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("executor", &self.inner.executor.name())
            .field("api_uri", &self.inner.api_uri)
            .field("builds", &self.inner.builds.lock().len())
            .finish_non_exhaustive()
    }
}

/// What a status change set off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Transition {
    pub(crate) became_running: bool,
    pub(crate) became_final: bool,
}

impl ApiState {
    /// The state of an API dispatching builds to `executor` (a `Router` or any backend).
    ///
    /// Validates `config` (errors name the key) and prepares the signing key and the
    /// administrator's token.
    pub fn new(executor: Arc<dyn Executor>, config: ApiConfig) -> Result<Self, Error> {
        config.validate()?;
        let issuer = match &config.jwt_private_key {
            Some(pem) => TokenIssuer::from_pkcs8_pem(pem.expose_secret()),
            None => TokenIssuer::generate(),
        }
        .map_err(|e| {
            Error::new(ErrorKind::ConfigInvalid, e).with_context("key", "jwtPrivateKey")
        })?;
        let api_uri = config
            .public_uri
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_string();
        let user_token = config
            .user_token
            .clone()
            .unwrap_or_else(|| SecretString::from(format!("sdx-{}", random_id())));
        Ok(Self {
            inner: Arc::new(Inner {
                executor,
                issuer,
                config,
                api_uri,
                user_token,
                builds: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                events: broadcast::channel(EVENT_CAPACITY).0,
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

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

    /// The administrator's bearer token (configured, or generated at start).
    pub fn user_token(&self) -> &SecretString {
        &self.inner.user_token
    }

    /// Subscribes to build events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BuildEvent> {
        self.inner.events.subscribe()
    }

    /// The wire form of build `id`.
    pub fn build_json(&self, id: u64) -> Option<Value> {
        self.inner.builds.lock().get(&id).map(BuildRecord::to_json)
    }

    /// A copy of build `id`.
    pub fn build(&self, id: u64) -> Option<BuildRecord> {
        self.inner.builds.lock().get(&id).cloned()
    }

    /// Every build as `{"id", "state", "status"}`, by id.
    pub fn list_json(&self) -> Value {
        Value::Array(
            self.inner
                .builds
                .lock()
                .values()
                .map(BuildRecord::summary)
                .collect(),
        )
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

    /// Records a submission and dispatches it to the executor in the background.
    /// Must be called within a Tokio runtime.
    ///
    /// 409 when the requested id is taken.
    pub fn submit(&self, new: NewBuild) -> Result<BuildId, HttpError> {
        let id = {
            let mut builds = self.inner.builds.lock();
            let id = match new.id {
                Some(id) if builds.contains_key(&id.get()) => {
                    return Err(HttpError::conflict(format!("Build {id} already exists")));
                }
                Some(id) => {
                    self.inner.next_id.fetch_max(id.get() + 1, Ordering::SeqCst);
                    id
                }
                None => loop {
                    let n = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
                    if !builds.contains_key(&n)
                        && let Some(id) = BuildId::new(n)
                    {
                        break id;
                    }
                },
            };
            let container = match new.container {
                Some(c) => c,
                None => executor_base::ImageRef::parse(&self.inner.config.default_container)
                    .map_err(|r| {
                        HttpError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, r)
                    })?,
            };
            let record = BuildRecord {
                id,
                job_id: new.job_id.unwrap_or(JobId::new(1).expect("1 is positive")),
                event_id: new.event_id,
                pipeline_id: new.pipeline_id,
                job_name: new.job_name,
                container,
                annotations: new.annotations,
                environment: new.environment,
                status: ApiBuildStatus::Queued,
                status_message: Some("Waiting for the executor".into()),
                meta: json!({}),
                create_time: Utc::now(),
                start_time: None,
                end_time: None,
                steps: new
                    .steps
                    .into_iter()
                    .map(|(n, c)| StepRecord::new(n, c))
                    .collect(),
            };
            builds.insert(id.get(), record);
            self.emit(BuildEvent::Status {
                build_id: id.get(),
                status: ApiBuildStatus::Queued,
                state: module_state(ApiBuildStatus::Queued),
                message: Some("Waiting for the executor".into()),
            });
            id
        };
        let state = self.clone();
        self.spawn(async move { crate::dispatch::start(state, id).await });
        Ok(id)
    }

    /// The start config of build `id`, with a freshly minted temporary token
    /// (scope `temporal`, `username` = build id).
    pub fn start_config(&self, id: BuildId) -> Result<StartConfig, Error> {
        let b = self
            .build(id.get())
            .ok_or_else(|| Error::build_not_found(id))?;
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

    /// The stop config of build `id` (with its annotations, so a router finds the backend).
    pub fn stop_config(&self, id: BuildId) -> StopConfig {
        let mut s = StopConfig::new(id);
        if let Some(b) = self.build(id.get()) {
            s.job_id = Some(b.job_id);
            s.pipeline_id = b.pipeline_id;
            s.job_name = b.job_name.clone();
            s.annotations = b.annotations.clone();
        }
        s.api_uri = executor_base::config::parse_http_url(self.api_uri()).ok();
        s
    }

    /// Sets the status of build `id` after `check` accepted the build as it is (under the
    /// lock, so checks and change are atomic). A final build is never changed (403).
    pub(crate) fn transition_checked(
        &self,
        id: u64,
        status: Option<ApiBuildStatus>,
        message: Option<String>,
        meta: Option<Value>,
        check: impl FnOnce(&BuildRecord) -> Result<(), HttpError>,
    ) -> Result<(Transition, Value), HttpError> {
        let mut builds = self.inner.builds.lock();
        let b = builds
            .get_mut(&id)
            .ok_or_else(|| HttpError::not_found("Build does not exist"))?;
        if is_final(b.status) {
            return Err(HttpError::forbidden(format!(
                "Build {id} is already {}: only unfinished builds can be updated",
                b.status
            )));
        }
        check(b)?;
        let mut t = Transition::default();
        let now = Utc::now();
        if let Some(s) = status {
            let was = b.status;
            b.status = s;
            if s == ApiBuildStatus::Running && was != ApiBuildStatus::Running {
                b.start_time = Some(now);
                t.became_running = true;
            }
            if is_final(s) && !is_final(was) {
                b.end_time = Some(now);
                t.became_final = true;
                for step in b
                    .steps
                    .iter_mut()
                    .filter(|st| st.start_time.is_some() && st.end_time.is_none())
                {
                    step.end_time = Some(now);
                }
            }
            if message.is_none() && s != was {
                b.status_message = None;
            }
        }
        if let Some(m) = message {
            b.status_message = Some(m);
        }
        if let Some(Value::Object(m)) = meta
            && let Value::Object(cur) = &mut b.meta
        {
            cur.extend(m);
        }
        self.emit(BuildEvent::Status {
            build_id: id,
            status: b.status,
            state: module_state(b.status),
            message: b.status_message.clone(),
        });
        Ok((t, b.to_json()))
    }

    /// [`ApiState::transition_checked`] without further checks.
    pub(crate) fn transition(
        &self,
        id: u64,
        status: Option<ApiBuildStatus>,
        message: Option<String>,
        meta: Option<Value>,
    ) -> Result<(Transition, Value), HttpError> {
        self.transition_checked(id, status, message, meta, |_| Ok(()))
    }

    /// Whether build `id` is final (`None` when unknown).
    pub fn is_final(&self, id: u64) -> Option<bool> {
        self.inner
            .builds
            .lock()
            .get(&id)
            .map(|b| is_final(b.status))
    }

    /// Aborts every build that is not final (status ABORTED, which stops it on the
    /// executor), waits up to `grace` for the background tasks (starts, stops, watchers),
    /// and calls the executor's `cleanup`.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let open: Vec<u64> = self
            .inner
            .builds
            .lock()
            .values()
            .filter(|b| !is_final(b.status))
            .map(|b| b.id.get())
            .collect();
        for id in open {
            if let Ok((t, _)) = self.transition(
                id,
                Some(ApiBuildStatus::Aborted),
                Some("The API shut down".into()),
                None,
            ) && let Some(bid) = BuildId::new(id)
            {
                crate::dispatch::react(self, bid, t);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock());
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
        if let Err(e) = self.inner.executor.cleanup().await {
            tracing::warn!(error = %e, "executor cleanup failed");
        }
    }
}
