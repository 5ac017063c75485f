//! The [`Executor`] implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use executor_base::labels::{
    BuildLabels, LABEL_EXPIRES, LABEL_MANAGED_BY, LABEL_SDBUILD, MANAGED_BY,
};
use executor_base::verdict::pod_status_message;
use executor_base::{
    BuildId, BuildStatus, Error, ErrorKind, Executor, FailureReason, GcReport, LaunchMode,
    StartConfig, Stats, StopConfig, Verdict, build_name,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::SCHEME;
use crate::cache::{CacheStats, Shared, Tracked, lost};
use crate::client::K8sClient;
use crate::config::K8sConfig;
use crate::manifest::{self, Names};
use crate::pod_extras::PodExtras;
use crate::view::{PodPhase, PodView};

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
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(w) = &self.watch {
            w.abort();
        }
    }
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

    /// HTTP requests sent to the API server so far, the watch's included (`None` for a
    /// client injected with `with_client`).
    pub fn api_requests(&self) -> Option<u64> {
        self.inner.client.throttle.as_ref().map(|t| t.requests())
    }

    /// Whether the watch has applied a complete list.
    pub fn is_synced(&self) -> bool {
        self.inner.shared.state.read().synced
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

    fn build_name(&self, id: BuildId) -> String {
        build_name(&self.inner.cfg.prefix, id)
    }

    /// Reserves the build id for a start, refusing a build that is already live.
    fn reserve(&self, id: BuildId, names: &Names) -> Result<(), Error> {
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
        st.tracked.insert(id, Tracked::new(&names.pod, Utc::now()));
        Ok(())
    }

    /// Creates the Secret (native mode), the pod, then makes the pod own the Secret.
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
        let c = &i.client;
        let label_map = manifest::labels(labels, &i.cfg.pod_labels);
        let native = i.cfg.launch_mode == LaunchMode::Native;
        if native {
            c.create_secret(&manifest::secret(names, label_map.clone(), build))
                .await?;
        }
        let pod = manifest::pod(&i.cfg, build, extras, names, label_map, timeout);
        let created = match c.create_pod(&pod).await {
            Ok(p) => p,
            Err(e) => {
                if native && let Err(e2) = c.delete_secret(&names.secret).await {
                    tracing::warn!(executor = SCHEME, secret = %names.secret, error = %e2,
                        "could not remove the token secret after a failed pod create; gc will");
                }
                return Err(e);
            }
        };
        if !native {
            return Ok(true);
        }
        let Some(uid) = created.metadata.uid.as_deref() else {
            return Ok(false);
        };
        match c.own_secret(&names.secret, &names.pod, uid).await {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::warn!(executor = SCHEME, secret = %names.secret, error = %e,
                    "could not hand the token secret to its pod; stop and gc will delete it");
                Ok(false)
            }
        }
    }

    /// Records a terminal status found outside the watch.
    fn record(&self, id: BuildId, s: &BuildStatus) {
        let mut st = self.inner.shared.state.write();
        if let Some(t) = st.tracked.get_mut(&id) {
            self.inner.shared.finish(t, s.clone());
        }
    }

    fn classify(&self, v: &PodView) -> BuildStatus {
        if v.deleting {
            lost(Some(v), "deleted")
        } else {
            self.inner.shared.policy.classify(v, Utc::now())
        }
    }

    /// Status plus the pod's phase, from the cache when it can answer.
    async fn lookup(&self, id: BuildId) -> Result<(BuildStatus, Option<PodPhase>), Error> {
        let i = &self.inner;
        let name = self.build_name(id);
        let now = Utc::now();
        let next = {
            let st = i.shared.state.read();
            let use_cache = i.cfg.watch && st.synced;
            match st.tracked.get(&id) {
                Some(t) => {
                    let view = st.pod(&name, &t.pod);
                    let phase = view.map(|v| v.phase);
                    if let Some(term) = &t.terminal {
                        Next::Done(term.clone(), phase)
                    } else if t.stopped {
                        Next::Done(BuildStatus::canceled(), phase)
                    } else if !use_cache {
                        Next::GetPod(t.pod.clone())
                    } else {
                        match view {
                            Some(v) => {
                                let s = self.classify(v);
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
                    Some(v) if use_cache => Next::Done(self.classify(v), Some(v.phase)),
                    None if use_cache => {
                        return Err(Error::build_not_found(id).with_executor(SCHEME));
                    }
                    _ => Next::List,
                },
            }
        };
        match next {
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
                        let s = self.classify(&view);
                        let phase = Some(view.phase);
                        match idx {
                            Some(x) => list[x] = view,
                            None => list.push(view),
                        }
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
                Ok((self.classify(&view), Some(view.phase)))
            }
        }
    }

    async fn delete_expired(
        &self,
        kind: &str,
        items: Vec<ObjectMeta>,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), Error> {
        let now = Utc::now();
        for m in items {
            let expiry = m
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_EXPIRES))
                .map(String::as_str);
            let Some(name) = m.name.as_deref() else {
                continue;
            };
            if !BuildLabels::is_expired(expiry, now) {
                continue;
            }
            if !dry_run {
                match kind {
                    "pod" => self.inner.client.delete_pod(name, Some(0)).await?,
                    _ => self.inner.client.delete_secret(name).await?,
                }
            }
            report.expired.push(format!("{kind}/{name}"));
        }
        Ok(())
    }
}

#[async_trait]
impl Executor for K8sExecutor {
    fn name(&self) -> &str {
        SCHEME
    }

    /// Creates the token Secret, the pod, then makes the pod the Secret's owner (three
    /// requests in native mode, one in Screwdriver mode). If the pod cannot be created,
    /// the Secret is deleted again.
    async fn start(&self, build: &StartConfig) -> Result<(), Error> {
        let i = &self.inner;
        let id = build.build_id;
        // Annotations the pod needs are checked before anything is reserved or created.
        let extras = PodExtras::from_annotations(&build.annotations)
            .map_err(|e| e.with_executor(SCHEME).with_operation("start"))?;
        let timeout = i.cfg.timeout.minutes(&build.annotations);
        let labels = BuildLabels::new(
            &i.cfg.prefix,
            id,
            build.job_id,
            manifest::expiry(&i.cfg, timeout, Utc::now()),
        );
        let names = Names::new(&labels);
        self.reserve(id, &names)?;
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
    /// garbage collector will not. Idempotent; an unknown build is fine.
    async fn stop(&self, build: &StopConfig) -> Result<(), Error> {
        let i = &self.inner;
        let id = build.build_id;
        let name = self.build_name(id);
        let (was_live, collected, pending) = {
            let mut guard = i.shared.state.write();
            let st = &mut *guard;
            match st.tracked.get_mut(&id) {
                Some(t) => {
                    let live = t.is_live();
                    t.stopped = true;
                    let seen = t.seen;
                    let pod = t.pod.clone();
                    let collected = t.secret_collected;
                    let view = st.pod(&name, &pod);
                    let pending = view.map_or(!seen, |v| !v.build_started());
                    (live, collected, pending)
                }
                None => (
                    false,
                    false,
                    st.newest_pod(&name).is_some_and(|v| !v.build_started()),
                ),
            }
        };
        let grace = if pending {
            Some(i.cfg.pending_stop_grace_seconds)
        } else {
            i.cfg.stop_grace_seconds
        };
        let selector = format!("{LABEL_SDBUILD}={name}");
        let mut result = i.client.delete_pods(&selector, grace).await;
        if result.is_ok() && !collected {
            result = i.client.delete_secrets(&selector).await;
        }
        let mut st = i.shared.state.write();
        match (&result, st.tracked.get_mut(&id)) {
            (Err(_), Some(t)) if was_live => t.stopped = false,
            (Ok(()), Some(t)) if was_live => {
                if t.terminal.is_none() {
                    i.shared.counter.stopped();
                }
                t.finished_at.get_or_insert_with(tokio::time::Instant::now);
            }
            _ => {}
        }
        result
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

    fn stats(&self) -> Stats {
        let i = &self.inner;
        Stats {
            requests: i.client.calls.request_stats(),
            breaker: i.client.calls.breaker_stats(),
            builds: i.shared.counter.snapshot(),
            ..Stats::default()
        }
    }

    /// Removes expired objects and forgets finished builds past their retention.
    async fn cleanup(&self) -> Result<(), Error> {
        self.gc(false).await?;
        self.inner
            .shared
            .prune(Duration::from_secs(self.inner.cfg.retain_finished_seconds));
        Ok(())
    }

    /// Deletes pods and Secrets of ours whose `screwdriver.cd/expires-at` passed.
    async fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_EXPIRES}");
        let c = &self.inner.client;
        let mut report = GcReport {
            dry_run,
            expired: Vec::new(),
        };
        let pods = c.list_pod_metadata(&selector).await?;
        self.delete_expired("pod", pods, dry_run, &mut report)
            .await?;
        let secrets = c.list_secret_metadata(&selector).await?;
        self.delete_expired("secret", secrets, dry_run, &mut report)
            .await?;
        Ok(report)
    }
}
