//! Where pending deadlines live: the [`TimerStore`] trait and the in-memory store.

use std::collections::HashMap;
use std::fmt::Debug;

use crate::sync::Mutex;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::ids::{BuildId, JobId};

/// One pending build deadline, as a store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredDeadline {
    /// The build the deadline belongs to (one deadline per build).
    pub build_id: BuildId,
    /// The build's job.
    pub job_id: JobId,
    /// When the build must be stopped (`startTime` + timeout).
    pub deadline: DateTime<Utc>,
    /// The timeout the deadline was computed from, in minutes (for messages).
    pub timeout_minutes: u32,
}

/// Persistence for pending deadlines, so a restarted process loses no timeout.
///
/// A [`crate::timer::TimerService`] writes through the store before it answers
/// `start_timer`/`stop_timer`, and reloads every stored deadline when it is built; those
/// that passed while the process was down fire at once.
#[async_trait]
pub trait TimerStore: Debug + Send + Sync {
    /// Saves the deadline, replacing any earlier one of the same build.
    async fn put(&self, deadline: &StoredDeadline) -> Result<(), Error>;

    /// Removes the build's deadline; removing an absent one is `Ok`.
    async fn remove(&self, build_id: BuildId) -> Result<(), Error>;

    /// Removes several deadlines (the service removes fired ones in batches).
    /// Default: one [`TimerStore::remove`] per build.
    async fn remove_many(&self, build_ids: &[BuildId]) -> Result<(), Error> {
        for id in build_ids {
            self.remove(*id).await?;
        }
        Ok(())
    }

    /// Every stored deadline, in any order.
    async fn load(&self) -> Result<Vec<StoredDeadline>, Error>;

    /// Whether other processes share this store (several API instances on one database).
    /// A [`crate::timer::TimerService`] on a shared store claims every deadline before it
    /// fires it ([`TimerStore::claim`]) and sweeps the store for due deadlines armed
    /// elsewhere ([`TimerStore::claim_due`]), so each fires in exactly one process.
    /// Default `false`.
    fn shared(&self) -> bool {
        false
    }

    /// Claims `due` deadlines (they passed in this process's queue) for this process;
    /// returns the builds it won: those whose stored deadline is still the given one and
    /// that no other live process claimed. Default: every one (a store of one process).
    async fn claim(&self, due: &[StoredDeadline]) -> Result<Vec<BuildId>, Error> {
        Ok(due.iter().map(|d| d.build_id).collect())
    }

    /// Claims up to `limit` deadlines that passed (by the store's clock), whoever armed
    /// them, including those of a process that died. Default: none.
    async fn claim_due(&self, limit: usize) -> Result<Vec<StoredDeadline>, Error> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Removes deadlines this process claimed and fired. A deadline armed again since
    /// (by any process) stays. Default: [`TimerStore::remove_many`].
    async fn fired(&self, fired: &[StoredDeadline]) -> Result<(), Error> {
        let ids: Vec<BuildId> = fired.iter().map(|d| d.build_id).collect();
        self.remove_many(&ids).await
    }
}

/// A store that keeps deadlines in memory only: they survive a rebuilt
/// [`crate::timer::TimerService`] sharing the store, not a process restart.
///
/// ```
/// # tokio_test_block_on(async {
/// use executor_base::timer::{MemoryTimerStore, StoredDeadline, TimerStore};
/// use executor_base::{BuildId, JobId};
/// let store = MemoryTimerStore::new();
/// let d = StoredDeadline {
///     build_id: BuildId::new(1).unwrap(), job_id: JobId::new(2).unwrap(),
///     deadline: chrono::Utc::now(), timeout_minutes: 90,
/// };
/// store.put(&d).await.unwrap();
/// assert_eq!(store.load().await.unwrap(), vec![d]);
/// store.remove(d.build_id).await.unwrap();
/// assert!(store.load().await.unwrap().is_empty());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryTimerStore {
    deadlines: Mutex<HashMap<BuildId, Entry>>,
}

/// Job, deadline, timeout minutes.
type Entry = (JobId, DateTime<Utc>, u32);

impl MemoryTimerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many deadlines are stored.
    pub fn len(&self) -> usize {
        self.deadlines.lock().len()
    }

    /// Whether no deadline is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl TimerStore for MemoryTimerStore {
    async fn put(&self, d: &StoredDeadline) -> Result<(), Error> {
        self.deadlines
            .lock()
            .insert(d.build_id, (d.job_id, d.deadline, d.timeout_minutes));
        Ok(())
    }

    async fn remove(&self, build_id: BuildId) -> Result<(), Error> {
        self.deadlines.lock().remove(&build_id);
        Ok(())
    }

    async fn remove_many(&self, build_ids: &[BuildId]) -> Result<(), Error> {
        let mut map = self.deadlines.lock();
        for id in build_ids {
            map.remove(id);
        }
        Ok(())
    }

    async fn load(&self) -> Result<Vec<StoredDeadline>, Error> {
        Ok(self
            .deadlines
            .lock()
            .iter()
            .map(
                |(&build_id, &(job_id, deadline, timeout_minutes))| StoredDeadline {
                    build_id,
                    job_id,
                    deadline,
                    timeout_minutes,
                },
            )
            .collect())
    }
}
