//! Several API instances on one shared store (PostgreSQL): leases, fencing, adoption.
//!
//! * **Ownership.** Each unsettled build is driven by one instance, the holder of its
//!   [`Lease`] (holder id, expiry, fencing token, on the build's row). A submission is
//!   stored already leased to the instance that took it.
//! * **Fencing.** Every engine action an instance takes for a build (start, stop, the
//!   stop after a timeout or an abort) is preceded by a check that its lease is still
//!   live and current ([`crate::BuildStore::check`]); every write it derives from the
//!   engine (accepted, the outcome the engine saw, settled) is a conditional update that
//!   the database refuses when the token is no longer the build's
//!   ([`crate::BuildStore::update_fenced`]). An instance refused either way drops the
//!   lease and stops acting on the build. A paused instance (SIGSTOP, a long GC, a
//!   partition) that wakes up after another took its build over is therefore refused.
//! * **Renewal and adoption.** Every `leaseRenewMs` an instance renews all its leases in
//!   one statement, forgets those it no longer has, and takes over unsettled builds whose
//!   lease is free or expired: it reads the engine's status (never starting again what
//!   the engine has), re-arms the timer and watches the build ([`crate::adopt`]). An
//!   instance that dies is thus replaced `leaseTtlMs` after its last renewal, plus at most
//!   one renewal period. One shutting down gracefully releases its leases at once.
//! * **Any instance answers.** Submissions, status, steps, logs, and `launch`'s reports go
//!   to any instance (they are plain conditional writes). A stop (abort) or a timeout
//!   reaching an instance that does not hold the build's lease is recorded in the
//!   database; the holder's watcher sees the final status within `statusPollMs` and stops
//!   the build on the engine. No instance but the holder touches the engine.
//! * **Timers** are in the same database (`executor_base::timer::PostgresTimerStore`):
//!   each deadline is claimed by exactly one instance, which records the timeout; the
//!   holder stops the build.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use executor_base::BuildId;
use parking_lot::Mutex;

use crate::adopt::Adoption;
use crate::model::BuildRecord;
use crate::state::ApiState;
use crate::store::Lease;

/// This instance's leases (only with a shared store).
#[derive(Debug)]
pub(crate) struct Leases {
    pub(crate) holder: String,
    pub(crate) ttl: Duration,
    pub(crate) renew_every: Duration,
    held: Mutex<HashMap<BuildId, Lease>>,
    finishing: Mutex<HashSet<BuildId>>,
}

impl Leases {
    pub(crate) fn new(holder: String, ttl: Duration, renew_every: Duration) -> Self {
        Self {
            holder,
            ttl,
            renew_every,
            held: Mutex::new(HashMap::new()),
            finishing: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn hold(&self, lease: Lease) {
        self.held.lock().insert(lease.build_id, lease);
    }

    pub(crate) fn get(&self, id: BuildId) -> Option<Lease> {
        self.held.lock().get(&id).cloned()
    }

    pub(crate) fn forget(&self, id: BuildId) -> Option<Lease> {
        self.held.lock().remove(&id)
    }

    pub(crate) fn all(&self) -> Vec<Lease> {
        self.held.lock().values().cloned().collect()
    }
}

impl ApiState {
    /// The id this instance holds leases under (`<host>:<pid>:<random>`), or `None` with
    /// a store of one process.
    pub fn instance(&self) -> Option<&str> {
        self.inner.leases.as_ref().map(|l| l.holder.as_str())
    }

    /// How many builds this instance drives (holds the lease of); `None` with a store of
    /// one process (it drives them all).
    pub fn leased(&self) -> Option<usize> {
        self.inner.leases.as_ref().map(|l| l.held.lock().len())
    }

    /// Whether this instance drives build `id` (always, with a store of one process).
    pub(crate) fn drives(&self, id: BuildId) -> bool {
        match &self.inner.leases {
            None => true,
            Some(l) => l.get(id).is_some(),
        }
    }

    /// The lease this instance holds on build `id`, for a fenced write (`None` with a
    /// store of one process, or when it holds none).
    pub(crate) fn lease_of(&self, id: BuildId) -> Option<Lease> {
        self.inner.leases.as_ref().and_then(|l| l.get(id))
    }

    /// The fence before an engine action on build `id`: whether this instance's lease is
    /// still live and current in the store. A refusal drops the lease.
    pub(crate) async fn fence(&self, id: BuildId, action: &str) -> bool {
        self.try_fence(id, action).await.unwrap_or(false)
    }

    /// [`Self::fence`] that tells a store that could not answer (`Err`, already logged)
    /// from a lease that is not ours (`Ok(false)`), for callers that retry the first.
    pub(crate) async fn try_fence(&self, id: BuildId, action: &str) -> Result<bool, ()> {
        let Some(leases) = &self.inner.leases else {
            return Ok(true);
        };
        let Some(lease) = leases.get(id) else {
            tracing::info!(
                build = id.get(),
                action,
                "not acting: this instance does not hold the build's lease"
            );
            return Ok(false);
        };
        match self.store().check(&lease).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.lost(id, action);
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(build = id.get(), action, error = %e, "cannot check the lease; not acting");
                Err(())
            }
        }
    }

    /// Records that the lease of build `id` was taken by another instance.
    pub(crate) fn lost(&self, id: BuildId, action: &str) {
        if let Some(l) = &self.inner.leases
            && l.forget(id).is_some()
        {
            tracing::warn!(
                build = id.get(),
                action,
                "lost the lease of the build to another instance; no longer acting on it"
            );
        }
    }

    /// Marks build `id` as being finished here; `false` when it already is.
    pub(crate) fn begin_finish(&self, id: BuildId) -> bool {
        match &self.inner.leases {
            None => true,
            Some(l) => l.finishing.lock().insert(id),
        }
    }

    pub(crate) fn end_finish(&self, id: BuildId) {
        if let Some(l) = &self.inner.leases {
            l.finishing.lock().remove(&id);
        }
    }

    /// Gives up the lease of a settled build.
    pub(crate) async fn release(&self, id: BuildId) {
        let Some(l) = self.inner.leases.as_ref().and_then(|l| l.forget(id)) else {
            return;
        };
        if let Err(e) = self.store().release(&l).await {
            tracing::debug!(build = id.get(), error = %e, "cannot release the lease; it expires");
        }
    }

    /// Releases every lease (a graceful shutdown: the other instances adopt at once).
    pub(crate) async fn release_all(&self) {
        let Some(leases) = &self.inner.leases else {
            return;
        };
        for l in leases.all() {
            leases.forget(l.build_id);
            if let Err(e) = self.store().release(&l).await {
                tracing::debug!(build = l.build_id.get(), error = %e, "cannot release the lease; it expires");
            }
        }
    }

    /// Renews every lease (one statement) and forgets those another instance took.
    pub(crate) async fn renew_leases(&self) {
        let Some(leases) = &self.inner.leases else {
            return;
        };
        // Only leases held before the statement went out can be missing from its answer:
        // a build submitted while it ran was inserted after the statement's snapshot, and
        // calling it lost left it queued for good (its start saw no lease and gave up).
        let before: HashMap<BuildId, u64> = leases
            .held
            .lock()
            .values()
            .map(|l| (l.build_id, l.token))
            .collect();
        match self.store().renew(&leases.holder, leases.ttl).await {
            Ok(live) => {
                let live: HashMap<BuildId, u64> =
                    live.into_iter().map(|l| (l.build_id, l.token)).collect();
                let lost: Vec<BuildId> = leases
                    .held
                    .lock()
                    .values()
                    .filter(|l| before.get(&l.build_id) == Some(&l.token))
                    .filter(|l| live.get(&l.build_id) != Some(&l.token))
                    .map(|l| l.build_id)
                    .collect();
                for id in lost {
                    self.lost(id, "renew");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the leases"),
        }
    }

    /// Takes over the unsettled builds of this state's owner whose lease is free or
    /// expired, and adopts them in the background; returns their ids.
    pub(crate) async fn adopt_free(&self) -> Result<Vec<BuildId>, executor_base::Error> {
        let Some(leases) = &self.inner.leases else {
            return Ok(Vec::new());
        };
        let owner = self.owner().to_string();
        let candidates: Vec<BuildRecord> = self
            .store()
            .adoptable()
            .await?
            .into_iter()
            .filter(|b| b.owner == owner)
            .collect();
        let mut ids = Vec::new();
        for b in candidates {
            match self.store().acquire(b.id, &leases.holder, leases.ttl).await {
                Ok(Some(lease)) => {
                    tracing::info!(build = b.id.get(), token = lease.token, status = %b.status, "took over the build's lease; adopting it");
                    leases.hold(lease);
                    ids.push(b.id);
                    // Read again: the previous holder may have written since the list.
                    let Some(fresh) = self.build(b.id.get()).await else {
                        continue;
                    };
                    let state = self.clone();
                    self.spawn(async move {
                        crate::adopt::adopt_one(state, fresh, Adoption::Resume).await
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(build = b.id.get(), error = %e, "cannot take the lease"),
            }
        }
        Ok(ids)
    }
}

/// The lease task of an instance on a shared store: renew, then adopt, every
/// `leaseRenewMs`.
pub(crate) async fn run(state: ApiState) {
    let Some(every) = state.inner.leases.as_ref().map(|l| l.renew_every) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        if !state.accepting() {
            return;
        }
        state.renew_leases().await;
        if let Err(e) = state.adopt_free().await {
            tracing::warn!(error = %e, "cannot look for builds to adopt");
        }
    }
}
