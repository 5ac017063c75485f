//! [`TimerService`]: one task that fires every build's deadline.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::sync::{Mutex, RwLock};
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::config::{ApiBuildStatus, TimerConfig};
use crate::error::Error;
use crate::ids::{BuildId, JobId};
use crate::timeout::TimeoutPolicy;
use crate::timer::store::{MemoryTimerStore, StoredDeadline, TimerStore};

/// A deadline that passed: the build ran past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The build to stop.
    pub build_id: BuildId,
    /// Its job.
    pub job_id: JobId,
    /// When it should have stopped.
    pub deadline: DateTime<Utc>,
    /// The timeout it ran past, in minutes.
    pub timeout_minutes: u32,
    /// How long after the deadline the timer fired (long after a restart: deadlines that
    /// passed while the process was down fire at once).
    pub lateness: Duration,
}

/// What the service calls for every expired deadline. It runs on the timer task: hand
/// slow work (stopping the build) to another task.
pub type ExpiryHandler = Arc<dyn Fn(Expired) + Send + Sync>;

struct Slot {
    key: Key,
    job_id: JobId,
    deadline: DateTime<Utc>,
    timeout_minutes: u32,
}

#[derive(Default)]
struct State {
    queue: DelayQueue<BuildId>,
    slots: HashMap<BuildId, Slot>,
}

struct Shared {
    state: Mutex<State>,
    /// Serialises mutations so the store and the in-memory queue agree.
    writes: tokio::sync::Mutex<()>,
    store: Arc<dyn TimerStore>,
    handler: RwLock<Option<ExpiryHandler>>,
    handler_set: Notify,
    /// Registered when the service is built (see [`TimerServiceBuilder::build`]).
    metrics: crate::metrics::record::TimerMetrics,
}

/// How often a service on a shared store sweeps it for due deadlines armed elsewhere
/// (by default).
pub const DEFAULT_CLAIM_INTERVAL: Duration = Duration::from_secs(1);

/// Most deadlines one sweep claims.
const SWEEP_LIMIT: usize = 500;

impl Shared {
    /// Serialises a mutation with the others, so a store of one process and the queue
    /// agree. A shared store is the truth by itself (a deadline fires only after a claim
    /// on the stored one), so its writes run concurrently: the database commits them
    /// together instead of one round trip after another.
    async fn serialise(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.store.shared() {
            None
        } else {
            Some(self.writes.lock().await)
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    policy: TimeoutPolicy,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Build deadlines for `start_timer`/`stop_timer`: one task and one
/// [`DelayQueue`] for every build, written through a [`TimerStore`].
///
/// * [`TimerService::start_timer`] arms a deadline (`startTime` + the build's timeout from
///   `screwdriver.cd/timeout`, resolved by the [`TimeoutPolicy`]) only when `buildStatus`
///   is `RUNNING`; any other status is a no-op. Registering a build again replaces its
///   deadline: the most recent registration wins, so there is one deadline per build.
/// * [`TimerService::stop_timer`] disarms it.
/// * When a deadline passes, the handler gets an [`Expired`] (build id, job id, how late).
///   Deadlines fire only once a handler is set, so none is lost at start-up; delivery is
///   at least once (a deadline is removed from the store after its handler ran).
///
/// Cheap to clone; the timer task ends when the last clone is dropped.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use executor_base::timer::TimerService;
/// use executor_base::{TimerConfig, StopConfig};
/// let timers = TimerService::builder().build().await.unwrap();
/// let mut expired = timers.subscribe();
/// let cfg = TimerConfig::from_json(&serde_json::json!({
///     "buildId": 42, "jobId": 7, "buildStatus": "RUNNING",
///     "startTime": (chrono::Utc::now() - chrono::Duration::minutes(91)).to_rfc3339(),
/// })).unwrap();
/// timers.start_timer(&cfg).await.unwrap();            // 90 min default: already passed
/// let e = expired.recv().await.unwrap();
/// assert_eq!(e.build_id.get(), 42);
/// assert!(e.lateness >= std::time::Duration::from_secs(60));
/// assert_eq!(timers.pending(), 0);
/// # });
/// ```
#[derive(Clone)]
pub struct TimerService {
    inner: Arc<Inner>,
}

impl fmt::Debug for TimerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerService")
            .field("pending", &self.pending())
            .field("policy", &self.inner.policy)
            .field("store", &self.inner.shared.store)
            .finish()
    }
}

/// Builder for [`TimerService`].
#[derive(Default)]
pub struct TimerServiceBuilder {
    store: Option<Arc<dyn TimerStore>>,
    policy: TimeoutPolicy,
    handler: Option<ExpiryHandler>,
    claim_interval: Option<Duration>,
}

impl fmt::Debug for TimerServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerServiceBuilder")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("handler", &self.handler.is_some())
            .field("claim_interval", &self.claim_interval)
            .finish()
    }
}

impl TimerServiceBuilder {
    /// Where deadlines are persisted (default: a fresh [`MemoryTimerStore`]).
    pub fn store(mut self, store: Arc<dyn TimerStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How build timeouts are resolved (default: 90 minutes, capped at 120).
    pub fn policy(mut self, policy: TimeoutPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The expiry handler (may also be set later with [`TimerService::set_handler`]).
    pub fn handler(mut self, handler: impl Fn(Expired) + Send + Sync + 'static) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// With a shared store ([`TimerStore::shared`]): how often the store is swept for due
    /// deadlines armed by other processes or left by one that died (default
    /// [`DEFAULT_CLAIM_INTERVAL`]). Deadlines in this process's own queue fire on time
    /// whatever the interval; the sweep bounds the lateness of the others.
    pub fn claim_interval(mut self, every: Duration) -> Self {
        self.claim_interval = Some(every);
        self
    }

    /// Loads the store's pending deadlines and starts the timer task. Must run inside a
    /// Tokio runtime.
    ///
    /// The service's metrics (`sdx_timers_pending`, `sdx_timers_fired_total`,
    /// `sdx_timer_lateness_seconds`) are registered here, once, so that arming and
    /// disarming a deadline costs no metric lookup: install the `metrics` recorder before
    /// building the service (`sdx serve` does), or they go to the no-op recorder.
    pub async fn build(self) -> Result<TimerService, Error> {
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryTimerStore::new()));
        let loaded = store
            .load()
            .await
            .map_err(|e| e.with_operation("timer load"))?;
        let mut state = State::default();
        let now = Utc::now();
        for d in loaded {
            let key = state.queue.insert(d.build_id, until(now, d.deadline));
            state.slots.insert(
                d.build_id,
                Slot {
                    key,
                    job_id: d.job_id,
                    deadline: d.deadline,
                    timeout_minutes: d.timeout_minutes,
                },
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            writes: tokio::sync::Mutex::new(()),
            store,
            handler: RwLock::new(self.handler),
            handler_set: Notify::new(),
            metrics: crate::metrics::record::TimerMetrics::register(),
        });
        let sweep = shared
            .store
            .shared()
            .then(|| self.claim_interval.unwrap_or(DEFAULT_CLAIM_INTERVAL));
        let task = tokio::spawn(run(shared.clone(), sweep));
        Ok(TimerService {
            inner: Arc::new(Inner {
                shared,
                policy: self.policy,
                task,
            }),
        })
    }
}

/// The delay from `now` until `deadline` (zero when it passed).
fn until(now: DateTime<Utc>, deadline: DateTime<Utc>) -> Duration {
    (deadline - now).to_std().unwrap_or(Duration::ZERO)
}

impl TimerService {
    /// A builder: store, policy, handler.
    pub fn builder() -> TimerServiceBuilder {
        TimerServiceBuilder::default()
    }

    /// The timeout policy deadlines are computed with.
    pub fn policy(&self) -> TimeoutPolicy {
        self.inner.policy
    }

    /// Sets (replaces) the expiry handler. Deadlines start firing once one is set.
    pub fn set_handler(&self, handler: impl Fn(Expired) + Send + Sync + 'static) {
        *self.inner.shared.handler.write() = Some(Arc::new(handler));
        self.inner.shared.handler_set.notify_one();
    }

    /// Sets the handler to a channel and returns its receiving end.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Expired> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.set_handler(move |e| {
            let _ = tx.send(e);
        });
        rx
    }

    /// Arms the build's deadline if `buildStatus` is `RUNNING`; returns the deadline set,
    /// or `None` when the status made it a no-op.
    pub async fn start_timer(&self, t: &TimerConfig) -> Result<Option<DateTime<Utc>>, Error> {
        if t.build_status != ApiBuildStatus::Running {
            return Ok(None);
        }
        let minutes = self.inner.policy.minutes(&t.annotations);
        let deadline = t.start_time + chrono::Duration::minutes(i64::from(minutes));
        self.arm(StoredDeadline {
            build_id: t.build_id,
            job_id: t.job_id,
            deadline,
            timeout_minutes: minutes,
        })
        .await?;
        Ok(Some(deadline))
    }

    /// Arms an explicit deadline (replacing the build's earlier one).
    pub async fn arm(&self, d: StoredDeadline) -> Result<(), Error> {
        let shared = &self.inner.shared;
        let _w = shared.serialise().await;
        shared
            .store
            .put(&d)
            .await
            .map_err(|e| e.with_operation("start_timer"))?;
        let mut st = shared.state.lock();
        let st = &mut *st;
        let delay = until(Utc::now(), d.deadline);
        let key = match st.slots.get(&d.build_id) {
            Some(old) => {
                st.queue.reset(&old.key, delay);
                old.key
            }
            None => st.queue.insert(d.build_id, delay),
        };
        st.slots.insert(
            d.build_id,
            Slot {
                key,
                job_id: d.job_id,
                deadline: d.deadline,
                timeout_minutes: d.timeout_minutes,
            },
        );
        shared.metrics.pending(st.slots.len());
        Ok(())
    }

    /// Disarms the build's deadline; returns whether one was pending.
    pub async fn stop_timer(&self, build_id: BuildId) -> Result<bool, Error> {
        let shared = &self.inner.shared;
        let _w = shared.serialise().await;
        shared
            .store
            .remove(build_id)
            .await
            .map_err(|e| e.with_operation("stop_timer"))?;
        let mut st = shared.state.lock();
        let st = &mut *st;
        let removed = match st.slots.remove(&build_id) {
            Some(slot) => {
                st.queue.remove(&slot.key);
                true
            }
            None => false,
        };
        shared.metrics.pending(st.slots.len());
        Ok(removed)
    }

    /// The build's pending deadline, if any.
    pub fn deadline(&self, build_id: BuildId) -> Option<DateTime<Utc>> {
        self.inner
            .shared
            .state
            .lock()
            .slots
            .get(&build_id)
            .map(|s| s.deadline)
    }

    /// How many deadlines are pending.
    pub fn pending(&self) -> usize {
        self.inner.shared.state.lock().slots.len()
    }
}

/// The deadlines that passed in this process's queue (taken out of it).
async fn next_local(shared: &Shared) -> Vec<StoredDeadline> {
    std::future::poll_fn(|cx| {
        let mut st = shared.state.lock();
        let mut batch = Vec::new();
        while let Poll::Ready(Some(item)) = st.queue.poll_expired(cx) {
            let id = item.into_inner();
            if let Some(slot) = st.slots.remove(&id) {
                batch.push(StoredDeadline {
                    build_id: id,
                    job_id: slot.job_id,
                    deadline: slot.deadline,
                    timeout_minutes: slot.timeout_minutes,
                });
            }
        }
        // An empty queue answers Ready(None) but keeps our waker: insert wakes us.
        if !batch.is_empty() {
            shared.metrics.pending(st.slots.len());
        }
        if batch.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(batch)
        }
    })
    .await
}

/// Of `due`, those this process may fire: on a shared store, the ones it claimed.
async fn claimed(shared: &Shared, due: Vec<StoredDeadline>) -> Vec<StoredDeadline> {
    if !shared.store.shared() {
        return due;
    }
    match shared.store.claim(&due).await {
        Ok(won) => due
            .into_iter()
            .filter(|d| won.contains(&d.build_id))
            .collect(),
        Err(e) => {
            // Left in the store unclaimed: the next sweep (here or elsewhere) fires them.
            tracing::warn!(error = %e, count = due.len(), "could not claim due deadlines; the sweep retries");
            Vec::new()
        }
    }
}

/// Due deadlines of any process, claimed from a shared store; taken out of this
/// process's queue too.
async fn sweep(shared: &Shared) -> Vec<StoredDeadline> {
    let due = match shared.store.claim_due(SWEEP_LIMIT).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "could not sweep the timer store for due deadlines");
            return Vec::new();
        }
    };
    if !due.is_empty() {
        let mut st = shared.state.lock();
        let st = &mut *st;
        for d in &due {
            // The store keeps milliseconds.
            if let Some(slot) = st.slots.get(&d.build_id)
                && slot.deadline.timestamp_millis() == d.deadline.timestamp_millis()
            {
                st.queue.remove(&slot.key);
                st.slots.remove(&d.build_id);
            }
        }
        shared.metrics.pending(st.slots.len());
    }
    due
}

/// The one timer task: waits for a handler, then fires deadlines as they pass (on a
/// shared store, those it claimed, and every `sweep_every` the due ones it claims from
/// the store).
async fn run(shared: Arc<Shared>, sweep_every: Option<Duration>) {
    loop {
        let notified = shared.handler_set.notified();
        if shared.handler.read().is_some() {
            break;
        }
        notified.await;
    }
    let mut ticker = tokio::time::interval(sweep_every.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            due = next_local(&shared) => claimed(&shared, due).await,
            _ = ticker.tick(), if sweep_every.is_some() => sweep(&shared).await,
        };
        if batch.is_empty() {
            continue;
        }
        let now = Utc::now();
        let handler = shared.handler.read().clone();
        let lateness = |d: &StoredDeadline| {
            now.signed_duration_since(d.deadline)
                .to_std()
                .unwrap_or(Duration::ZERO)
        };
        if let Some(h) = handler {
            for d in &batch {
                h(Expired {
                    build_id: d.build_id,
                    job_id: d.job_id,
                    deadline: d.deadline,
                    timeout_minutes: d.timeout_minutes,
                    lateness: lateness(d),
                });
            }
            // Recorded once every handler of the batch ran: a histogram update per
            // deadline must not make the later deadlines of a burst fire later.
            for d in &batch {
                shared.metrics.fired(lateness(d));
            }
        }
        let _w = shared.serialise().await;
        // A build registered again after it fired keeps its new stored deadline (a
        // shared store knows: arming clears the claim `fired` removes by).
        let done: Vec<StoredDeadline> = if shared.store.shared() {
            batch
        } else {
            let st = shared.state.lock();
            batch
                .into_iter()
                .filter(|d| !st.slots.contains_key(&d.build_id))
                .collect()
        };
        if let Err(e) = shared.store.fired(&done).await {
            tracing::warn!(error = %e, count = done.len(), "could not remove fired deadlines from the timer store; they fire again after a restart");
        }
    }
}
