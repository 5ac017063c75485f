//! [`Router`]: an [`Executor`] that picks a backend per build.
//!
//! The backend is chosen from `annotations["screwdriver.cd/executor"]` (either prefix),
//! falling back to a configured default. Unlike upstream executor-router, which silently
//! fell through to the default on an unknown name (so a typo ran the build somewhere
//! else), an unknown name is refused with [`ErrorKind::Invalid`] naming the annotation and
//! listing the known backends. `stop`, `status` and `verify` go to the backend that
//! started the build (remembered per build id; upstream re-ran its rules, so a weighted
//! choice could send a stop elsewhere), falling back to the annotation, then the default.
//! `stats`, `cleanup` and `gc` fan out to every backend. Timers are shared: one
//! [`TimerService`] serves all backends, and with [`RouterBuilder::stop_on_timeout`] the
//! router itself stops a build whose deadline passed and reports it `TimedOut`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::join::join_all;
use crate::sync::Mutex;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::annotations::Annotations;
use crate::config::{StartConfig, StopConfig, TimerConfig};
use crate::error::{Error, ErrorKind};
use crate::executor::{Executor, GcReport};
use crate::ids::BuildId;
use crate::metrics::BuildMeter;
use crate::stats::{BuildCounts, RequestStats, Stats};
use crate::status::BuildStatus;
use crate::timer::{Expired, ExpiryHandler, TimedOutBuilds, TimerService};
use crate::timings::BuildTimings;
use crate::verdict::Verdict;

/// The annotation field named in routing errors.
const FIELD: &str = "annotations[screwdriver.cd/executor]";
/// Routes are pruned (when there are many) after this long.
const ROUTE_RETAIN: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// A backend and its name.
type Named<'a> = (&'a str, &'a Arc<dyn Executor>);

/// The backends and which one runs each build; shared with the expiry handler.
struct Table {
    backends: BTreeMap<String, Arc<dyn Executor>>,
    default: String,
    routes: Mutex<HashMap<BuildId, (String, DateTime<Utc>)>>,
    /// Build metrics (started, finished, start latency) of every build routed here.
    meter: BuildMeter,
}

impl Table {
    fn known(&self) -> String {
        self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    fn by_annotation(&self, annotations: &Annotations) -> Result<Option<Named<'_>>, Error> {
        match annotations.executor() {
            None => Ok(None),
            Some(name) => match self.backends.get_key_value(name) {
                Some((n, b)) => Ok(Some((n.as_str(), b))),
                None => Err(Error::invalid_field(
                    FIELD,
                    format!(
                        "unknown executor {name:?}, expected one of {}",
                        self.known()
                    ),
                )
                .with_executor("router")),
            },
        }
    }

    fn default_backend(&self) -> Named<'_> {
        let (n, b) = self
            .backends
            .get_key_value(&self.default)
            .expect("the builder checked the default");
        (n.as_str(), b)
    }

    /// Where a new build goes: the annotation, else the default.
    fn for_start(&self, annotations: &Annotations) -> Result<Named<'_>, Error> {
        Ok(self
            .by_annotation(annotations)?
            .unwrap_or_else(|| self.default_backend()))
    }

    /// Where a known build is: the backend that started it, else the annotation, else
    /// the default.
    fn for_build(
        &self,
        id: BuildId,
        annotations: &Annotations,
    ) -> Result<Arc<dyn Executor>, Error> {
        self.for_build_named(id, annotations).map(|(_, b)| b)
    }

    /// [`Table::for_build`] with the backend's name.
    fn for_build_named(
        &self,
        id: BuildId,
        annotations: &Annotations,
    ) -> Result<(String, Arc<dyn Executor>), Error> {
        if let Some((name, _)) = self.routes.lock().get(&id)
            && let Some(b) = self.backends.get(name)
        {
            return Ok((name.clone(), b.clone()));
        }
        let (name, b) = self.for_start(annotations)?;
        Ok((name.to_string(), b.clone()))
    }

    fn route(&self, id: BuildId, name: &str) {
        let now = Utc::now();
        let mut routes = self.routes.lock();
        if routes.len() >= 4096 {
            routes.retain(|_, (_, at)| now - *at < ROUTE_RETAIN);
        }
        routes.insert(id, (name.to_string(), now));
    }

    fn routed_to(&self, id: BuildId) -> Option<String> {
        self.routes.lock().get(&id).map(|(n, _)| n.clone())
    }
}

/// An [`Executor`] over several backends; see the [module docs](self).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use executor_base::{Executor, ErrorKind, StartConfig};
/// use executor_base::router::Router;
/// use executor_base::testkit::fake::FakeExecutor;
/// let (docker, process) = (FakeExecutor::named("docker"), FakeExecutor::named("process"));
/// let router = Router::builder()
///     .backend(Arc::new(docker.clone()))
///     .backend(Arc::new(process.clone()))
///     .default_backend("process")
///     .build()
///     .unwrap();
/// let on_docker = StartConfig::builder(1, "http://127.0.0.1:9", "busybox:latest", "tok")
///     .annotation("screwdriver.cd/executor", "docker").build().unwrap();
/// router.start(&on_docker).await.unwrap();
/// assert_eq!(docker.live_builds(), vec![on_docker.build_id]);
///
/// let typo = StartConfig::builder(2, "http://127.0.0.1:9", "busybox:latest", "tok")
///     .annotation("screwdriver.cd/executor", "dokcer").build().unwrap();
/// let err = router.start(&typo).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Invalid);
/// assert!(err.to_string().contains("annotations[screwdriver.cd/executor]: unknown executor \"dokcer\", expected one of docker, process"));
/// # });
/// ```
pub struct Router {
    table: Arc<Table>,
    timers: Option<TimerService>,
    timed_out: Option<TimedOutBuilds>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("backends", &self.table.backends.keys().collect::<Vec<_>>())
            .field("default", &self.table.default)
            .field("timers", &self.timers)
            .field("stop_on_timeout", &self.timed_out.is_some())
            .finish()
    }
}

/// Builder for [`Router`].
#[derive(Default)]
pub struct RouterBuilder {
    backends: Vec<(String, Arc<dyn Executor>)>,
    default: Option<String>,
    timers: Option<TimerService>,
    stop_on_timeout: bool,
    on_expiry: Option<ExpiryHandler>,
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field(
                "backends",
                &self.backends.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("default", &self.default)
            .field("timers", &self.timers)
            .field("stop_on_timeout", &self.stop_on_timeout)
            .finish()
    }
}

impl RouterBuilder {
    /// Adds a backend under its own [`Executor::name`].
    pub fn backend(self, backend: Arc<dyn Executor>) -> Self {
        let name = backend.name().to_string();
        self.backend_named(name, backend)
    }

    /// Adds a backend under another name (e.g. two Kubernetes clusters `k8s` and `k8s-gpu`).
    /// Names are matched lower-case, as the annotation is.
    pub fn backend_named(mut self, name: impl Into<String>, backend: Arc<dyn Executor>) -> Self {
        self.backends
            .push((name.into().to_ascii_lowercase(), backend));
        self
    }

    /// The backend of builds without the annotation (default: the first one added).
    pub fn default_backend(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into().to_ascii_lowercase());
        self
    }

    /// The timer service behind `start_timer`/`stop_timer` for every backend. Without
    /// one, timer calls go to the build's backend.
    pub fn timers(mut self, timers: TimerService) -> Self {
        self.timers = Some(timers);
        self
    }

    /// When a deadline passes, the router stops the build on its backend and reports it
    /// `TimedOut` (needs [`RouterBuilder::timers`]; default off).
    pub fn stop_on_timeout(mut self, yes: bool) -> Self {
        self.stop_on_timeout = yes;
        self
    }

    /// Also tells `handler` about every expired deadline (e.g. to mark the build failed
    /// on the API server). Needs [`RouterBuilder::timers`].
    pub fn on_expiry(mut self, handler: impl Fn(Expired) + Send + Sync + 'static) -> Self {
        self.on_expiry = Some(Arc::new(handler));
        self
    }

    /// Checks the configuration ([`ErrorKind::ConfigInvalid`] naming the problem).
    pub fn build(self) -> Result<Router, Error> {
        let bad = |m: String| Error::new(ErrorKind::ConfigInvalid, m).with_executor("router");
        let first = self
            .backends
            .first()
            .map(|(n, _)| n.clone())
            .ok_or_else(|| bad("router: no backend configured".into()))?;
        let mut backends = BTreeMap::new();
        for (name, b) in self.backends {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(format!(
                    "router: backend name {name:?} is not letters, digits, '-' or '_'"
                )));
            }
            if backends.insert(name.clone(), b).is_some() {
                return Err(bad(format!("router: two backends are named {name:?}")));
            }
        }
        let default = self.default.unwrap_or(first);
        if !backends.contains_key(&default) {
            return Err(bad(format!(
                "router: default backend {default:?} is not one of {}",
                backends.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if self.timers.is_none() && (self.stop_on_timeout || self.on_expiry.is_some()) {
            return Err(bad(
                "router: stop_on_timeout and on_expiry need timers".into()
            ));
        }
        let table = Arc::new(Table {
            backends,
            default,
            routes: Mutex::new(HashMap::new()),
            meter: BuildMeter::default(),
        });
        let timed_out = self.stop_on_timeout.then(TimedOutBuilds::new);
        if let Some(timers) = &self.timers
            && (timed_out.is_some() || self.on_expiry.is_some())
        {
            let (table, marks, user) = (table.clone(), timed_out.clone(), self.on_expiry);
            timers.set_handler(move |e: Expired| {
                if let Some(marks) = &marks {
                    marks.record(&e);
                    let table = table.clone();
                    tokio::spawn(async move { stop_expired(&table, e).await });
                }
                if let Some(user) = &user {
                    user(e);
                }
            });
        }
        Ok(Router {
            table,
            timers: self.timers,
            timed_out,
        })
    }
}

async fn stop_expired(table: &Table, e: Expired) {
    let mut stop = StopConfig::new(e.build_id);
    stop.job_id = Some(e.job_id);
    let backend = match table.for_build(e.build_id, &Annotations::default()) {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(build_id = %e.build_id, error = %err, "no backend for a timed-out build");
            return;
        }
    };
    tracing::info!(build_id = %e.build_id, executor = backend.name(), late_ms = e.lateness.as_millis() as u64, "build ran past its timeout; stopping it");
    table.meter.ended(
        e.build_id,
        &BuildStatus::timed_out(format!("ran past its {} minute timeout", e.timeout_minutes)),
    );
    if let Err(err) = backend.stop(&stop).await {
        tracing::warn!(build_id = %e.build_id, error = %err, "could not stop a timed-out build");
    }
}

/// The span of one build operation: `build{op, build_id, backend}`.
fn span(op: &'static str, id: BuildId, backend: &str) -> tracing::Span {
    tracing::info_span!("build", op, build_id = %id, backend = %backend)
}

impl Router {
    /// A builder.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// The backends' names, sorted.
    pub fn backends(&self) -> Vec<&str> {
        self.table.backends.keys().map(String::as_str).collect()
    }

    /// The default backend's name.
    pub fn default_backend(&self) -> &str {
        &self.table.default
    }

    /// The backend a build was started on, if the router started it.
    pub fn backend_of(&self, build_id: BuildId) -> Option<String> {
        self.table.routed_to(build_id)
    }

    /// The shared timer service, if any.
    pub fn timers(&self) -> Option<&TimerService> {
        self.timers.as_ref()
    }

    fn timed_out(&self, id: BuildId) -> Option<BuildStatus> {
        self.timed_out.as_ref().and_then(|t| t.status(id))
    }
}

/// Sums per-backend stats into the top level; the mean time is weighted by calls.
fn sum(per: BTreeMap<String, Stats>) -> Stats {
    let mut req = RequestStats::default();
    let mut builds = BuildCounts::default();
    let mut closed = true;
    let mut weighted = 0.0;
    for s in per.values() {
        let r = &s.requests;
        req.total += r.total;
        req.timeouts += r.timeouts;
        req.success += r.success;
        req.failure += r.failure;
        req.concurrent += r.concurrent;
        weighted += r.average_time * (r.success + r.failure) as f64;
        closed &= s.breaker.is_closed;
        let b = &s.builds;
        builds.started += b.started;
        builds.running += b.running;
        builds.finished += b.finished;
        builds.failed += b.failed;
        for (k, v) in &b.by_reason {
            *builds.by_reason.entry(k.clone()).or_default() += v;
        }
    }
    let done = req.success + req.failure;
    req.average_time = if done == 0 {
        0.0
    } else {
        weighted / done as f64
    };
    let mut out = Stats {
        requests: req,
        builds,
        executors: per,
        ..Stats::default()
    };
    out.breaker.is_closed = closed;
    out
}

#[async_trait]
impl Executor for Router {
    fn name(&self) -> &str {
        "router"
    }

    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let (name, backend) = self.table.for_start(&build.annotations)?;
        if let Some(prev) = self.table.routed_to(build.build_id)
            && prev != name
            && let Some(other) = self.table.backends.get(&prev)
            && other
                .status(&build.to_stop())
                .await
                .is_ok_and(|s| !s.is_terminal())
        {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("build {} is already running on {prev}", build.build_id),
            )
            .with_executor("router")
            .with_operation("start"));
        }
        backend
            .start(build)
            .instrument(span("start", build.build_id, name))
            .await?;
        self.table.route(build.build_id, name);
        self.table.meter.started(build.build_id, name);
        if let Some(t) = &self.timed_out {
            t.forget(build.build_id);
        }
        Ok(())
    }

    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let (name, backend) = self
            .table
            .for_build_named(build.build_id, &build.annotations)?;
        backend
            .stop(build)
            .instrument(span("stop", build.build_id, &name))
            .await?;
        self.table.meter.stopped(build.build_id);
        Ok(())
    }

    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        if let Some(s) = self.timed_out(build.build_id) {
            return Ok(Verdict::from_status(&s));
        }
        self.table
            .for_build(build.build_id, &build.annotations)?
            .verify(build)
            .await
    }

    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        if let Some(s) = self.timed_out(build.build_id) {
            self.table.meter.ended(build.build_id, &s);
            return Ok(s);
        }
        let (name, backend) = self
            .table
            .for_build_named(build.build_id, &build.annotations)?;
        let s = backend
            .status(build)
            .instrument(tracing::debug_span!("build", op = "status", build_id = %build.build_id, backend = %name))
            .await?;
        self.table.meter.observed(build.build_id, &name, &s);
        Ok(s)
    }

    fn stats(&self) -> Stats {
        sum(self
            .table
            .backends
            .iter()
            .map(|(n, b)| (n.clone(), b.stats()))
            .collect())
    }

    /// Cleans up every backend (all are tried; the first error is returned).
    async fn cleanup(&self) -> Result<(), Error> {
        let results = join_all(self.table.backends.values().map(|b| b.cleanup())).await;
        results
            .into_iter()
            .collect::<Result<Vec<()>, Error>>()
            .map(|_| ())
    }

    /// Stops every live build on every backend (all are tried; the first error, an
    /// `Unsupported` backend included, is returned after).
    async fn stop_all(&self) -> Result<Vec<crate::BuildId>, Error> {
        let results = join_all(self.table.backends.values().map(|b| b.stop_all())).await;
        let mut ids: Vec<crate::BuildId> = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(mut v) => ids.append(&mut v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for id in &ids {
            self.table.meter.stopped(*id);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }

    /// Collects garbage on every backend (all are tried; the first error is returned).
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let results = join_all(self.table.backends.values().map(|b| b.gc(dry_run))).await;
        let mut report = GcReport {
            dry_run,
            expired: Vec::new(),
        };
        let mut first_err = None;
        for (name, r) in self.table.backends.keys().zip(results) {
            match r {
                Ok(mut g) => {
                    if !dry_run {
                        crate::metrics::record::gc_removed(name, g.expired.len());
                    }
                    report.expired.append(&mut g.expired)
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Forwards to the build's backend (an unknown `screwdriver.cd/executor` is the
    /// usual validation error).
    async fn preflight(&self, build: &StartConfig) -> Result<crate::Preflight, Error> {
        self.table
            .for_build(build.build_id, &build.annotations)?
            .preflight(build)
            .await
    }

    async fn start_timer(&self, timer: &TimerConfig) -> Result<(), Error> {
        match &self.timers {
            Some(t) => t.start_timer(timer).await.map(|_| ()),
            None => {
                self.table
                    .for_build(timer.build_id, &timer.annotations)?
                    .start_timer(timer)
                    .await
            }
        }
    }

    async fn stop_timer(&self, build: &StopConfig) -> Result<(), Error> {
        match &self.timers {
            Some(t) => t.stop_timer(build.build_id).await.map(|_| ()),
            None => {
                self.table
                    .for_build(build.build_id, &build.annotations)?
                    .stop_timer(build)
                    .await
            }
        }
    }

    /// Forwards to the build's backend; a build stopped for its timeout reads
    /// `TimedOut`, as `status` says.
    async fn wait_for_change(
        &self,
        build: &StopConfig,
        last_seen: &BuildStatus,
    ) -> Result<BuildStatus, Error> {
        if let Some(s) = self.timed_out(build.build_id) {
            self.table.meter.ended(build.build_id, &s);
            return Ok(s);
        }
        let (name, backend) = self
            .table
            .for_build_named(build.build_id, &build.annotations)?;
        let s = backend
            .wait_for_change(build, last_seen)
            .instrument(tracing::debug_span!("build", op = "wait_for_change", build_id = %build.build_id, backend = %name))
            .await?;
        let s = self.timed_out(build.build_id).unwrap_or(s);
        self.table.meter.observed(build.build_id, &name, &s);
        Ok(s)
    }

    async fn timings(&self, build: &StopConfig) -> Result<Option<BuildTimings>, Error> {
        self.table
            .for_build(build.build_id, &build.annotations)?
            .timings(build)
            .await
    }
}
