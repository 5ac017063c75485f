//! The shared pod cache: one watch per namespace feeds the status of every build.
//!
//! The watch ([`crate::watch`]) streams pod events into a map of compact [`PodView`]s
//! keyed by the `sdbuild` label, applying re-lists the way a reflector does (a fresh map
//! is filled between `Init` and `InitDone`, then swapped in). Next to it lives what this
//! executor knows about the builds it started ([`Tracked`]): the pod's name, whether the
//! watch has seen it, whether we stopped it, and its terminal status once known, which is
//! then sticky. `status()` reads both under a read lock: no API request per call.
//!
//! The cache is only as good as its watch, so it also keeps the watch's [`Health`]:
//! synced (a complete list applied and the watch connected since), re-listing, or
//! failing (with the last error). `status()` answers from the cache only while it is
//! synced; otherwise it reads the pod directly or, when the API server cannot be
//! reached, returns a temporary error — never an old answer as if it were fresh.
//!
//! Deletions behind our back: a pod of a live build that gets a `deletionTimestamp`, a
//! `DELETED` event, or disappears across a re-list is recorded as `Lost` at once, before a
//! graceful shutdown can make it look successful.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use executor_base::labels::{LABEL_BUILD_ID, LABEL_SDBUILD};
use executor_base::{BuildCounter, BuildId, BuildStatus, CacheFreshness, build_name};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use parking_lot::RwLock;
use tokio::time::Instant;

use crate::handshake::HandshakeCheck;
use crate::policy::ReasonPolicy;
use crate::view::PodView;

/// What this executor knows about a build it started.
#[derive(Debug)]
pub(crate) struct Tracked {
    /// The pod's name (with its random suffix).
    pub(crate) pod: Box<str>,
    /// When `start` created it.
    pub(crate) created_at: DateTime<Utc>,
    /// When its objects expire (the `screwdriver.cd/expires-at` label): how long a failed
    /// stop is retried in the background.
    pub(crate) expires_at: DateTime<Utc>,
    /// The watch has delivered this pod at least once.
    pub(crate) seen: bool,
    /// `stop` was called.
    pub(crate) stopped: bool,
    /// The token Secret is owned by the pod (GC removes it) or there is none.
    pub(crate) secret_collected: bool,
    /// The terminal status, once known (sticky).
    pub(crate) terminal: Option<BuildStatus>,
    /// When the build finished or was stopped (for pruning).
    pub(crate) finished_at: Option<Instant>,
}

impl Tracked {
    pub(crate) fn new(pod: &str, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Self {
        Self {
            pod: pod.into(),
            created_at: now,
            expires_at,
            seen: false,
            stopped: false,
            secret_collected: false,
            terminal: None,
            finished_at: None,
        }
    }

    /// Neither finished nor stopped.
    pub(crate) fn is_live(&self) -> bool {
        !self.stopped && self.terminal.is_none()
    }
}

/// The cache proper, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) tracked: HashMap<BuildId, Tracked>,
    /// Pods by `sdbuild` label (almost always one per build).
    pub(crate) pods: HashMap<Box<str>, Vec<PodView>>,
    /// How current the cache is.
    pub(crate) health: Health,
    relist: Option<HashMap<Box<str>, Vec<PodView>>>,
}

/// Why the watch is not delivering events right now.
#[derive(Debug, Clone)]
pub(crate) struct WatchFailure {
    /// The error's message, as [`crate::error::map`] words it.
    pub(crate) message: String,
    /// The API server did not answer at all (connection refused, reset, timed out): a
    /// direct read would fail the same way.
    pub(crate) unreachable: bool,
    /// When the watch tries again.
    pub(crate) retry_at: Instant,
}

/// The watch's health: whether the cache may answer, and how far behind it may be.
#[derive(Debug)]
pub(crate) struct Health {
    /// A complete list has been applied and the watch has not failed since.
    pub(crate) synced: bool,
    /// When the cache was last known to be current (`None`: never synced).
    pub(crate) last_synced: Option<Instant>,
    /// When the executor started (the age of a cache that never synced).
    pub(crate) born: Instant,
    /// The failure the watch is recovering from, if any.
    pub(crate) failure: Option<WatchFailure>,
    /// Complete lists applied.
    pub(crate) relists: u64,
    /// Watch failures seen.
    pub(crate) errors: u64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            synced: false,
            last_synced: None,
            born: Instant::now(),
            failure: None,
            relists: 0,
            errors: 0,
        }
    }
}

impl Health {
    /// Marks the cache as possibly behind from now on.
    pub(crate) fn lose_sync(&mut self) {
        if self.synced {
            self.synced = false;
            self.last_synced = Some(Instant::now());
        }
    }

    /// How far behind the cache may be: zero while synced.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        if self.synced {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.last_synced.unwrap_or(self.born))
        }
    }

    /// For `stats()`.
    pub(crate) fn freshness(&self) -> CacheFreshness {
        CacheFreshness {
            synced: self.synced,
            age_ms: self
                .age(Instant::now())
                .as_millis()
                .min(u128::from(u64::MAX)) as u64,
            relists: self.relists,
            errors: self.errors,
        }
    }
}

/// Bytes of a hash table with `capacity` usable slots of `slot` bytes (hashbrown:
/// power-of-two buckets at most 7/8 full, one control byte per bucket).
fn table_bytes(capacity: usize, slot: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (slot + 1)
}

fn status_heap(s: &BuildStatus) -> usize {
    s.message.capacity()
        + s.failure
            .as_ref()
            .and_then(|f| f.evidence.as_ref())
            .map_or(0, String::capacity)
}

/// What the cache holds, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Builds this executor remembers (live and recently finished).
    pub tracked_builds: usize,
    /// Pods the watch has cached.
    pub cached_pods: usize,
    /// Heap bytes of both maps and what they own, computed from sizes and capacities.
    pub estimated_bytes: usize,
}

impl State {
    /// Sizes of the cache.
    pub(crate) fn stats(&self) -> CacheStats {
        use std::mem::size_of;
        let tracked = table_bytes(self.tracked.capacity(), size_of::<(BuildId, Tracked)>())
            + self
                .tracked
                .values()
                .map(|t| t.pod.len() + t.terminal.as_ref().map_or(0, status_heap))
                .sum::<usize>();
        let pods = table_bytes(self.pods.capacity(), size_of::<(Box<str>, Vec<PodView>)>())
            + self
                .pods
                .iter()
                .map(|(k, v)| {
                    k.len()
                        + v.capacity() * size_of::<PodView>()
                        + v.iter().map(PodView::heap_bytes).sum::<usize>()
                })
                .sum::<usize>();
        CacheStats {
            tracked_builds: self.tracked.len(),
            cached_pods: self.pods.values().map(Vec::len).sum(),
            estimated_bytes: tracked + pods,
        }
    }

    /// The pod named `name` of build `build`.
    pub(crate) fn pod(&self, build: &str, name: &str) -> Option<&PodView> {
        self.pods.get(build)?.iter().find(|p| &*p.name == name)
    }

    /// The newest pod of build `build`.
    pub(crate) fn newest_pod(&self, build: &str) -> Option<&PodView> {
        self.pods.get(build)?.iter().max_by_key(|p| p.created)
    }
}

/// The cache plus what classifying and counting need; shared with the watch task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: RwLock<State>,
    /// Notified when the watch is synced again after a failure (the API server is back).
    pub(crate) recovered: tokio::sync::Notify,
    pub(crate) policy: ReasonPolicy,
    pub(crate) prefix: String,
    pub(crate) counter: BuildCounter,
    /// The launch handshake check applied to every classified pod.
    pub(crate) handshake: HandshakeCheck,
}

/// The status of a pod that is being deleted (or is gone) without our `stop`.
pub(crate) fn lost(view: Option<&PodView>, how: &str) -> BuildStatus {
    let started = view.map(PodView::build_started);
    BuildStatus::lost(
        started,
        format!(
            "pod {how} by someone else{}",
            match started {
                Some(true) => "; the build had started",
                Some(false) => "; the build had not started",
                None => "",
            }
        ),
    )
}

fn sdbuild(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(LABEL_SDBUILD)
        .map(String::as_str)
}

impl Shared {
    pub(crate) fn new(policy: ReasonPolicy, prefix: String, handshake: HandshakeCheck) -> Self {
        Self {
            state: RwLock::new(State::default()),
            recovered: tokio::sync::Notify::new(),
            policy,
            prefix,
            counter: BuildCounter::new(),
            handshake,
        }
    }

    /// The status of build `id` whose pod looks like `view` at `now`: the policy's
    /// classification, then the launch handshake check.
    pub(crate) fn classify(&self, id: BuildId, view: &PodView, now: DateTime<Utc>) -> BuildStatus {
        self.handshake
            .apply(id, view, self.policy.classify(view, now))
    }

    fn view(&self, pod: &Pod, previous: Option<&PodView>, now: DateTime<Utc>) -> PodView {
        PodView::from_pod(pod, previous, now, |t, st| {
            self.policy.wants_condition(t, st)
        })
    }

    /// The build id of a pod of ours (its `sdbuild` is `<prefix><build-id label>`).
    fn build_id(&self, pod: &Pod) -> Option<BuildId> {
        let labels = pod.metadata.labels.as_ref()?;
        let id: BuildId = labels.get(LABEL_BUILD_ID)?.parse().ok()?;
        (labels.get(LABEL_SDBUILD).map(String::as_str)
            == Some(build_name(&self.prefix, id).as_str()))
        .then_some(id)
    }

    /// Records a terminal status for a live tracked build (once).
    pub(crate) fn finish(&self, t: &mut Tracked, status: BuildStatus) {
        if t.is_live() {
            self.counter.finished(&status);
            t.terminal = Some(status);
            t.finished_at = Some(Instant::now());
        }
    }

    /// Updates a tracked build from a fresh view of its pod.
    fn observe(&self, id: BuildId, t: &mut Tracked, view: &PodView, now: DateTime<Utc>) {
        t.seen = true;
        if !t.is_live() {
            return;
        }
        if view.deleting {
            self.finish(t, lost(Some(view), "deleted"));
            return;
        }
        let s = self.classify(id, view, now);
        if s.is_terminal() {
            self.finish(t, s);
        }
    }

    /// Applies one watcher event.
    pub(crate) fn apply(&self, event: Event<Pod>) {
        let now = Utc::now();
        let mut guard = self.state.write();
        let st = &mut *guard;
        match event {
            Event::Init => {
                st.relist = Some(HashMap::new());
                st.health.lose_sync();
            }
            Event::InitApply(pod) => {
                let Some(key) = sdbuild(&pod) else { return };
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let previous = st.pod(key, name);
                let view = self.view(&pod, previous, now);
                if let Some(relist) = st.relist.as_mut() {
                    relist
                        .entry(key.into())
                        .or_insert_with(|| Vec::with_capacity(1))
                        .push(view);
                }
            }
            Event::InitDone => {
                if let Some(fresh) = st.relist.take() {
                    st.pods = fresh;
                }
                st.health.synced = true;
                st.health.last_synced = None;
                st.health.failure = None;
                st.health.relists += 1;
                let State { tracked, pods, .. } = st;
                for (id, t) in tracked.iter_mut() {
                    let build = build_name(&self.prefix, *id);
                    match pods
                        .get(build.as_str())
                        .and_then(|v| v.iter().find(|p| p.name == t.pod))
                    {
                        Some(view) => self.observe(*id, t, view, now),
                        None if t.seen => {
                            self.finish(t, lost(None, "deleted while the watch was re-listing"))
                        }
                        None => {}
                    }
                }
            }
            Event::Apply(pod) => {
                let Some(key) = sdbuild(&pod).map(Box::<str>::from) else {
                    return;
                };
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let list = st.pods.entry(key).or_insert_with(|| Vec::with_capacity(1));
                let idx = list.iter().position(|p| &*p.name == name);
                let view = self.view(&pod, idx.map(|i| &list[i]), now);
                if idx.is_some_and(|i| list[i].is_newer_than(&view)) {
                    // Older than what a GET already cached.
                    return;
                }
                if let Some(id) = self.build_id(&pod)
                    && let Some(t) = st.tracked.get_mut(&id)
                    && *t.pod == *name
                {
                    self.observe(id, t, &view, now);
                }
                match idx {
                    Some(i) => list[i] = view,
                    None => list.push(view),
                }
            }
            Event::Delete(pod) => {
                let Some(key) = sdbuild(&pod) else { return };
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let mut last = None;
                if let Some(list) = st.pods.get_mut(key) {
                    if let Some(i) = list.iter().position(|p| &*p.name == name) {
                        last = Some(list.swap_remove(i));
                    }
                    if list.is_empty() {
                        st.pods.remove(key);
                    }
                }
                let view = last.unwrap_or_else(|| self.view(&pod, None, now));
                if let Some(id) = self.build_id(&pod)
                    && let Some(t) = st.tracked.get_mut(&id)
                    && *t.pod == *name
                {
                    t.seen = true;
                    if t.is_live() {
                        self.finish(t, lost(Some(&view), "deleted"));
                    }
                }
            }
        }
    }

    /// Records a watch failure: the cache may be behind until the next complete list.
    pub(crate) fn watch_failed(&self, failure: WatchFailure) {
        let mut st = self.state.write();
        st.health.lose_sync();
        st.health.errors += 1;
        st.health.failure = Some(failure);
    }

    /// Forgets finished or stopped builds older than `retain`, and gives memory back
    /// after a burst of builds has passed.
    pub(crate) fn prune(&self, retain: Duration) {
        let now = Instant::now();
        let mut st = self.state.write();
        st.tracked
            .retain(|_, t| t.finished_at.is_none_or(|f| now.duration_since(f) < retain));
        if st.tracked.len() * 4 < st.tracked.capacity() {
            st.tracked.shrink_to_fit();
        }
        if st.pods.len() * 4 < st.pods.capacity() {
            st.pods.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::K8sConfig;
    use crate::handshake::HandshakeCheck;

    fn pod(rv: &str, running: bool) -> Pod {
        let state = if running {
            serde_json::json!({"running": {"startedAt": "2026-12-04T10:00:00Z"}})
        } else {
            serde_json::json!({"waiting": {"reason": "ContainerCreating"}})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sd-7-abcde", "resourceVersion": rv,
                "labels": {"sdbuild": "sd-7", "screwdriver.cd/build-id": "7"}},
            "spec": {"containers": [{"name": "sd-7"}], "nodeName": "n1"},
            "status": {"phase": if running { "Running" } else { "Pending" },
                "containerStatuses": [{"name": "sd-7", "image": "x", "imageID": "",
                    "ready": running, "restartCount": 0, "state": state}]}
        }))
        .unwrap()
    }

    #[test]
    fn an_older_pod_never_replaces_a_newer_one_in_the_cache() {
        let cfg = K8sConfig::default();
        let shared = Shared::new(
            ReasonPolicy::default(),
            "sd-".into(),
            HandshakeCheck::new(&cfg),
        );
        let phase = |s: &Shared| s.state.read().pod("sd-7", "sd-7-abcde").map(|v| v.phase);
        shared.apply(Event::Apply(pod("20", true)));
        assert_eq!(phase(&shared), Some(crate::view::PodPhase::Running));
        // A watch event older than what is cached (a GET answered first): ignored.
        shared.apply(Event::Apply(pod("15", false)));
        assert_eq!(phase(&shared), Some(crate::view::PodPhase::Running));
        // Newer, or not a number (cannot order): applied.
        shared.apply(Event::Apply(pod("25", false)));
        assert_eq!(phase(&shared), Some(crate::view::PodPhase::Pending));
        shared.apply(Event::Apply(pod("x", true)));
        assert_eq!(phase(&shared), Some(crate::view::PodPhase::Running));
    }
}
