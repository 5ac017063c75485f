//! The [`Executor`] implementation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use executor_base::labels::{BuildLabels, LABEL_SDBUILD};
use executor_base::owner::Owner;
use executor_base::verdict::pod_status_message;
use executor_base::{
    BuildId, BuildStatus, Error, ErrorKind, Executor, FailureReason, GcReport, LaunchMode,
    StartConfig, Stats, StopConfig, Verdict, build_name,
};
use parking_lot::Mutex;

use crate::SCHEME;
use crate::cache::{CacheStats, Shared, Tracked, WatchFailure, lost};
use crate::client::K8sClient;
use crate::config::K8sConfig;
use crate::manifest::{self, Names};
use crate::pod_extras::PodExtras;
use crate::view::{PodPhase, PodView};

mod collect;
mod stopping;

/// Runs Screwdriver builds as Kubernetes pods. Cheap to clone.
#[derive(Clone)]
pub struct K8sExecutor {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: K8sConfig,
    pub(crate) namespace: String,
    pub(crate) client: K8sClient,
    pub(crate) shared: Arc<Shared>,
    pub(crate) watch: Option<tokio::task::AbortHandle>,
    /// Stops that failed with a temporary error and are retried in the background.
    pub(crate) stops: Mutex<HashMap<BuildId, tokio::task::AbortHandle>>,
    /// Written on every pod and Secret ([`executor_base::owner`]).
    pub(crate) owner: Option<Owner>,
    /// The API server's URL, for messages.
    pub(crate) api_url: String,
    /// Pre-flight answers, reused for `preflight.cacheMs`.
    pub(crate) preflight: executor_base::PreflightCache,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(w) = &self.watch {
            w.abort();
        }
        for (_, h) in self.stops.lock().drain() {
            h.abort();
        }
    }
}

/// What one stop deletes, and how.
#[derive(Debug, Clone)]
struct StopPlan {
    id: BuildId,
    selector: String,
    grace: Option<u32>,
    /// The Secret goes with the pod (owned by it), so only pods are deleted.
    collected: bool,
    /// The build was live for this executor when the stop began.
    was_live: bool,
    /// Retry a failed stop until then; garbage collection takes over after.
    until: DateTime<Utc>,
}

impl std::fmt::Debug for K8sExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sExecutor")
            .field("namespace", &self.inner.namespace)
            .field("prefix", &self.inner.cfg.prefix)
            .field("watch", &self.inner.cfg.watch)
            .finish_non_exhaustive()
    }
}

/// What `lookup` decided under the read lock.
enum Next {
    Fail(Error),
    Done(BuildStatus, Option<PodPhase>),
    Record(BuildStatus, Option<PodPhase>),
    GetPod(Box<str>),
    List,
}

/// Upstream's verify strings: failures of a pod whose phase is `Failed`/`Unknown` read
/// `Failed to create pod. Pod status is: <phase>`, image and container problems their
/// own messages, the rest [`Verdict::from_status`].
fn verdict(s: &BuildStatus, phase: Option<PodPhase>) -> Verdict {
    let v = Verdict::from_status(s);
    let own_message = matches!(
        s.reason(),
        Some(
            FailureReason::ImagePull
                | FailureReason::InvalidImage
                | FailureReason::ContainerConfig
                | FailureReason::CrashLoop
        )
    );
    match phase {
        Some(p @ (PodPhase::Failed | PodPhase::Unknown)) if v.is_failure() && !own_message => {
            Verdict::Failed(pod_status_message(&p.as_str().to_ascii_lowercase()))
        }
        _ => v,
    }
}

/// The temporary error of a status the cache cannot give: the watch lost the API server
/// `age` ago and is reconnecting.
fn watch_down(id: BuildId, f: &WatchFailure, age: Duration) -> Error {
    let retry_in = f
        .retry_at
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_millis(100));
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "status of build {id} unknown: the pod watch lost the API server {:.1}s ago and is reconnecting ({})",
            age.as_secs_f64(),
            f.message
        ),
    )
    .temporary()
    .with_retry_after(retry_in)
    .with_executor(SCHEME)
    .with_operation("status")
}

impl K8sExecutor {
    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The namespace builds run in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The validated config.
    pub fn config(&self) -> &K8sConfig {
        &self.inner.cfg
    }

    /// The API server's URL.
    pub fn api_url(&self) -> String {
        self.inner.api_url.clone()
    }

    /// The kube client (pre-flight's reviews and dry runs).
    pub(crate) fn kube_client(&self) -> kube::Client {
        self.inner.client.client.clone()
    }

    /// Who the pods and Secrets this executor creates belong to (see
    /// [`executor_base::owner`]).
    pub fn owner(&self) -> Option<&Owner> {
        self.inner.owner.as_ref()
    }

    /// HTTP requests sent to the API server so far, the watch's included (`None` for a
    /// client injected with `with_client`).
    pub fn api_requests(&self) -> Option<u64> {
        self.inner.client.throttle.as_ref().map(|t| t.requests())
    }

    /// Whether the watch has applied a complete list and not failed since (the cache
    /// answers `status` only then).
    pub fn is_synced(&self) -> bool {
        self.inner.shared.state.read().health.synced
    }

    /// Waits until the watch has applied a complete list ([`ErrorKind::Timeout`] after
    /// `within`; [`ErrorKind::Unsupported`] when the watch is off).
    pub async fn wait_synced(&self, within: Duration) -> Result<(), Error> {
        if !self.inner.cfg.watch {
            return Err(
                Error::new(ErrorKind::Unsupported, "the watch is off (watch: false)")
                    .with_executor(SCHEME),
            );
        }
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_synced() {
            if tokio::time::Instant::now() >= deadline {
                return Err(
                    Error::new(ErrorKind::Timeout, "pod watch not synced").with_executor(SCHEME)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Builds this executor remembers (live ones and recently finished ones).
    pub fn tracked_builds(&self) -> usize {
        self.inner.shared.state.read().tracked.len()
    }

    /// Sizes of the status cache (tracked builds, cached pods, estimated heap bytes).
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.shared.state.read().stats()
    }

    /// The client for a write now: while the watch reports the API server unreachable
    /// (it retries every few seconds itself), one attempt and no retries, so a start
    /// fails and a stop hands over to its background retrier at once instead of after
    /// the whole retry policy.
    fn writer(&self) -> std::borrow::Cow<'_, K8sClient> {
        let i = &self.inner;
        let down = i.cfg.watch && {
            let st = i.shared.state.read();
            !st.health.synced && st.health.failure.as_ref().is_some_and(|f| f.unreachable)
        };
        if down {
            std::borrow::Cow::Owned(i.client.single_attempt())
        } else {
            std::borrow::Cow::Borrowed(&i.client)
        }
    }

    fn build_name(&self, id: BuildId) -> String {
        build_name(&self.inner.cfg.prefix, id)
    }

    /// Reserves the build id for a start, refusing a build that is already live.
    fn reserve(&self, id: BuildId, names: &Names, expires: DateTime<Utc>) -> Result<(), Error> {
        let shared = &self.inner.shared;
        let mut st = shared.state.write();
        let live = match st.tracked.get(&id) {
            Some(t) => t.is_live(),
            None => st.newest_pod(&names.build).is_some_and(|v| {
                !v.deleting && !shared.policy.classify(v, Utc::now()).is_terminal()
            }),
        };
        if live {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("build {id} is already running"),
            )
            .with_executor(SCHEME)
            .with_operation("start"));
        }
        st.tracked
            .insert(id, Tracked::new(&names.pod, Utc::now(), expires));
        Ok(())
    }

    /// Creates the pod, then (native mode) the token Secret, owned by the pod from birth:
    /// two requests (one in Screwdriver mode). The build container reads the Secret
    /// (`secretKeyRef`) only when the kubelet creates it, after the init container has
    /// pulled the launcher image and copied job-tools: one round trip after the pod, the
    /// Secret is long there. If the Secret cannot be created, the pod is deleted again.
    /// Returns whether the Secret will be collected with the pod (or there is none).
    async fn create(
        &self,
        build: &StartConfig,
        extras: &PodExtras,
        names: &Names,
        timeout: u32,
        labels: &BuildLabels,
    ) -> Result<bool, Error> {
        let i = &self.inner;
        let c = &*self.writer();
        let label_map = manifest::labels(labels, &i.cfg.pod_labels);
        let native = i.cfg.launch_mode == LaunchMode::Native;
        let pod = manifest::pod(&i.cfg, build, extras, names, label_map.clone(), timeout);
        let created = c
            .create_pod(&pod)
            .await
            .map_err(crate::error::explain_pod_create)?;
        if !native {
            return Ok(true);
        }
        let uid = created.metadata.uid.as_deref();
        let secret = manifest::secret(names, label_map, build, uid);
        if let Err(e) = c.create_secret(&secret).await {
            if let Err(e2) = c.delete_pod(&names.pod, Some(0)).await {
                tracing::warn!(executor = SCHEME, pod = %names.pod, error = %e2,
                    "could not remove the pod after its token secret failed; gc will");
            }
            return Err(e);
        }
        Ok(uid.is_some())
    }

    /// Records a terminal status found outside the watch.
    fn record(&self, id: BuildId, s: &BuildStatus) {
        let mut st = self.inner.shared.state.write();
        if let Some(t) = st.tracked.get_mut(&id) {
            self.inner.shared.finish(t, s.clone());
        }
    }

    fn classify(&self, id: BuildId, v: &PodView) -> BuildStatus {
        if v.deleting {
            lost(Some(v), "deleted")
        } else {
            self.inner.shared.classify(id, v, Utc::now())
        }
    }

    /// Status plus the pod's phase, from the cache when it can answer.
    async fn lookup(&self, id: BuildId) -> Result<(BuildStatus, Option<PodPhase>), Error> {
        let i = &self.inner;
        let name = self.build_name(id);
        let now = Utc::now();
        let next = {
            let st = i.shared.state.read();
            let use_cache = i.cfg.watch && st.health.synced;
            // The watch cannot reach the API server: neither can a GET. Say so at once
            // instead of answering from a cache that may be behind.
            let blind = if i.cfg.watch && !st.health.synced {
                st.health
                    .failure
                    .as_ref()
                    .filter(|f| f.unreachable)
                    .map(|f| watch_down(id, f, st.health.age(tokio::time::Instant::now())))
            } else {
                None
            };
            match st.tracked.get(&id) {
                Some(t) => {
                    let view = st.pod(&name, &t.pod);
                    let phase = view.map(|v| v.phase);
                    if let Some(term) = &t.terminal {
                        Next::Done(term.clone(), phase)
                    } else if t.stopped {
                        Next::Done(BuildStatus::canceled(), phase)
                    } else if let Some(e) = blind {
                        Next::Fail(e)
                    } else if !use_cache {
                        Next::GetPod(t.pod.clone())
                    } else {
                        match view {
                            Some(v) => {
                                let s = self.classify(id, v);
                                if s.is_terminal() {
                                    Next::Record(s, phase)
                                } else {
                                    Next::Done(s, phase)
                                }
                            }
                            None if t.seen => Next::Record(lost(None, "deleted"), None),
                            None if (now - t.created_at).to_std().unwrap_or_default()
                                < Duration::from_secs(i.cfg.watch_lag_grace_seconds) =>
                            {
                                Next::Done(
                                    BuildStatus::pending("pod created; waiting for the scheduler"),
                                    None,
                                )
                            }
                            None => Next::GetPod(t.pod.clone()),
                        }
                    }
                }
                None => match st.newest_pod(&name) {
                    Some(v) if use_cache => Next::Done(self.classify(id, v), Some(v.phase)),
                    None if use_cache => {
                        return Err(Error::build_not_found(id).with_executor(SCHEME));
                    }
                    _ => match blind {
                        Some(e) => Next::Fail(e),
                        None => Next::List,
                    },
                },
            }
        };
        match next {
            Next::Fail(e) => Err(e),
            Next::Done(s, p) => Ok((s, p)),
            Next::Record(s, p) => {
                self.record(id, &s);
                Ok((s, p))
            }
            Next::GetPod(pod) => {
                let got = i.client.get_pod(&pod).await?;
                let mut st = i.shared.state.write();
                let st = &mut *st;
                let (s, phase) = match got {
                    Some(p) => {
                        let list = st
                            .pods
                            .entry(name.as_str().into())
                            .or_insert_with(|| Vec::with_capacity(1));
                        let idx = list.iter().position(|v| v.name == pod);
                        let view = PodView::from_pod(&p, idx.map(|x| &list[x]), now, |t, st| {
                            i.shared.policy.wants_condition(t, st)
                        });
                        // The watch may have cached a newer state while this GET was in
                        // flight: that one stands (and is the answer).
                        let view = match idx {
                            Some(x) if list[x].is_newer_than(&view) => list[x].clone(),
                            Some(x) => {
                                list[x] = view.clone();
                                view
                            }
                            None => {
                                list.push(view.clone());
                                view
                            }
                        };
                        let s = self.classify(id, &view);
                        let phase = Some(view.phase);
                        (s, phase)
                    }
                    None => {
                        let last = st
                            .pods
                            .get(name.as_str())
                            .and_then(|l| l.iter().find(|v| v.name == pod));
                        (lost(last, "deleted"), None)
                    }
                };
                match st.tracked.get_mut(&id) {
                    Some(t) if t.is_live() => {
                        t.seen = true;
                        if s.is_terminal() {
                            i.shared.finish(t, s.clone());
                        }
                        Ok((s, phase))
                    }
                    Some(t) => Ok((
                        t.terminal.clone().unwrap_or_else(BuildStatus::canceled),
                        phase,
                    )),
                    None => Ok((s, phase)),
                }
            }
            Next::List => {
                let pods = i
                    .client
                    .list_pods(&format!("{LABEL_SDBUILD}={name}"))
                    .await?;
                let newest = pods
                    .iter()
                    .max_by_key(|p| p.metadata.creation_timestamp.clone())
                    .ok_or_else(|| Error::build_not_found(id).with_executor(SCHEME))?;
                let view = PodView::from_pod(newest, None, now, |t, st| {
                    i.shared.policy.wants_condition(t, st)
                });
                Ok((self.classify(id, &view), Some(view.phase)))
            }
        }
    }
}

#[async_trait]
impl Executor for K8sExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    /// Pre-flight: the namespace, one access review per verb the executor uses, and a
    /// server-side dry run of the build's pod (and token Secret); cached per build image
    /// and annotations.
    async fn preflight(&self, build: &StartConfig) -> Result<executor_base::Preflight, Error> {
        let key = crate::preflight::key(self, build);
        self.inner
            .preflight
            .get_or_run(&key, || crate::preflight::run(self, build))
            .await
    }

    /// Creates the pod, then the token Secret owned by it (two requests in native mode,
    /// one in Screwdriver mode). If the Secret cannot be created, the pod is deleted again.
    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let i = &self.inner;
        let id = build.build_id;
        // Annotations the pod needs are checked before anything is reserved or created.
        let extras = PodExtras::from_annotations(&build.annotations)
            .map_err(|e| e.with_executor(SCHEME).with_operation("start"))?;
        let timeout = i.cfg.timeout.minutes(&build.annotations);
        let expires = manifest::expiry(&i.cfg, timeout, Utc::now());
        let labels =
            BuildLabels::new(&i.cfg.prefix, id, build.job_id, expires).with_owner(i.owner.clone());
        let names = Names::new(&labels);
        self.reserve(id, &names, expires)?;
        match self.create(build, &extras, &names, timeout, &labels).await {
            Ok(collected) => {
                let stopped = {
                    let mut st = i.shared.state.write();
                    match st.tracked.get_mut(&id) {
                        Some(t) if *t.pod == *names.pod => {
                            t.secret_collected = collected;
                            t.stopped
                        }
                        _ => false,
                    }
                };
                i.shared.counter.started();
                if stopped {
                    // `stop` ran while we were creating: make sure nothing survives it.
                    let sel = labels.selector();
                    i.client.delete_pods(&sel, Some(0)).await?;
                    i.client.delete_secrets(&sel).await?;
                    i.shared.counter.stopped();
                }
                Ok(())
            }
            Err(e) => {
                let mut st = i.shared.state.write();
                if st.tracked.get(&id).is_some_and(|t| *t.pod == *names.pod) {
                    st.tracked.remove(&id);
                }
                Err(e)
            }
        }
    }

    /// Deletes the build's pods by label (grace 0 while pending), and its Secret when the
    /// garbage collector will not. Idempotent; an unknown build is fine. No breaker ever
    /// refuses it; when the API server fails it with a temporary error (after the retry
    /// policy), the caller gets that error and the stop is retried in the background
    /// until it succeeds or the build's objects expire (gc removes them then).
    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let i = &self.inner;
        let id = build.build_id;
        let name = self.build_name(id);
        let fallback_expiry = Utc::now()
            + chrono::Duration::minutes(
                i64::from(i.cfg.timeout.max_minutes) + i64::from(i.cfg.expiry_buffer_minutes),
            );
        let plan = {
            let mut guard = i.shared.state.write();
            let st = &mut *guard;
            let (was_live, collected, pending, until) = match st.tracked.get_mut(&id) {
                Some(t) => {
                    let live = t.is_live();
                    t.stopped = true;
                    let (seen, pod) = (t.seen, t.pod.clone());
                    let (collected, until) = (t.secret_collected, t.expires_at);
                    let pending = st.pod(&name, &pod).map_or(!seen, |v| !v.build_started());
                    (live, collected, pending, until)
                }
                None => (
                    false,
                    false,
                    st.newest_pod(&name).is_some_and(|v| !v.build_started()),
                    fallback_expiry,
                ),
            };
            StopPlan {
                id,
                selector: format!("{LABEL_SDBUILD}={name}"),
                grace: if pending {
                    Some(i.cfg.pending_stop_grace_seconds)
                } else {
                    i.cfg.stop_grace_seconds
                },
                collected,
                was_live,
                until,
            }
        };
        let result = self.delete_build(&plan).await;
        self.stop_done(&plan, result.is_ok());
        match result {
            Ok(()) => {
                if let Some(h) = i.stops.lock().remove(&id) {
                    h.abort();
                }
                Ok(())
            }
            Err(e) if e.is_temporary() => {
                let until = plan.until;
                self.retry_stop_in_background(plan);
                Err(e.with_context(
                    "stop",
                    format!("retrying in the background until {until} (the build's expiry)"),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Upstream's verify strings from the cached pod: `""`, `waiting`, `initializing`, or
    /// a failure message.
    async fn verify(&self, build: &StartConfig) -> Result<Verdict, Error> {
        let (s, phase) = self.lookup(build.build_id).await?;
        Ok(verdict(&s, phase))
    }

    /// From the shared watch's cache: no API request per call.
    async fn status(&self, build: &StopConfig) -> Result<BuildStatus, Error> {
        self.lookup(build.build_id).await.map(|(s, _)| s)
    }

    /// From the build's newest pod (one list call; see the `timings` module); `None`
    /// once the pod is gone.
    async fn timings(
        &self,
        build: &StopConfig,
    ) -> Result<Option<executor_base::BuildTimings>, Error> {
        let name = self.build_name(build.build_id);
        let pods = self
            .inner
            .client
            .list_pods(&format!("{LABEL_SDBUILD}={name}"))
            .await?;
        Ok(pods
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone())
            .map(crate::timings::from_pod))
    }

    fn stats(&self) -> Stats {
        let i = &self.inner;
        Stats {
            requests: i.client.calls.request_stats(),
            breaker: i.client.calls.breaker_stats(),
            builds: i.shared.counter.snapshot(),
            cache: i
                .cfg
                .watch
                .then(|| i.shared.state.read().health.freshness()),
            ..Stats::default()
        }
    }

    /// Removes the expired objects of the builds this executor started (and still
    /// remembers), and forgets finished builds past their retention. Objects of other
    /// builds in the namespace are left to [`Executor::gc`] (`sdx gc`): a one-shot
    /// `sdx run` removes only what it created.
    async fn cleanup(&self) -> Result<(), Error> {
        let own: HashSet<String> = {
            let st = self.inner.shared.state.read();
            st.tracked.keys().map(|id| self.build_name(*id)).collect()
        };
        if !own.is_empty() {
            self.collect(false, Some(&own)).await?;
        }
        self.inner
            .shared
            .prune(Duration::from_secs(self.inner.cfg.retain_finished_seconds));
        Ok(())
    }

    /// Stops the builds this instance started and has not seen end or stopped.
    async fn stop_all(&self) -> Result<Vec<BuildId>, Error> {
        let live: Vec<BuildId> = {
            let st = self.inner.shared.state.read();
            let mut ids: Vec<BuildId> = st
                .tracked
                .iter()
                .filter(|(_, t)| t.is_live())
                .map(|(id, _)| *id)
                .collect();
            ids.sort();
            ids
        };
        executor_base::stop_builds(self, live).await
    }

    /// Deletes pods and Secrets of ours (`app.kubernetes.io/managed-by=sdx`) anywhere in
    /// the namespace whose `screwdriver.cd/expires-at` passed.
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        self.collect(dry_run, None).await
    }
}
