//! Writing a build: conditional read-modify-write against the store (fenced by the
//! lease when the store is shared), status transitions and what they set off.

use chrono::Utc;
use executor_base::{ApiBuildStatus, BuildId};
use serde_json::Value;

use crate::error::HttpError;
use crate::events::BuildEvent;
use crate::model::{BuildRecord, is_final, module_state};
use crate::store::FencedWrite;

use super::{ApiState, Transition, store_error};

impl ApiState {
    /// Changes build `id` with `f` and writes it back with a conditional write, reading
    /// again and retrying when another writer came first. `f` sees the current build
    /// every time and may refuse (its error is returned, nothing is written).
    pub(crate) async fn modify<T>(
        &self,
        id: u64,
        f: impl FnMut(&mut BuildRecord) -> Result<T, HttpError>,
    ) -> Result<(T, BuildRecord), HttpError> {
        self.modify_as(id, false, f).await
    }

    /// [`ApiState::modify`]; with `owned`, a fenced write: with a shared store it is
    /// refused (409, and the lease is dropped) unless this instance still holds the
    /// build's current lease. Owned writes are those derived from the engine.
    pub(crate) async fn modify_as<T>(
        &self,
        id: u64,
        owned: bool,
        mut f: impl FnMut(&mut BuildRecord) -> Result<T, HttpError>,
    ) -> Result<(T, BuildRecord), HttpError> {
        let fence = match (owned, &self.inner.leases, BuildId::new(id)) {
            (true, Some(_), Some(bid)) => match self.lease_of(bid) {
                Some(l) => Some(l),
                None => return Err(lease_lost(id)),
            },
            _ => None,
        };
        loop {
            let mut b = self.load_existing(id).await?;
            let out = f(&mut b)?;
            let written = match &fence {
                None => {
                    if self.inner.store.update(&b).await.map_err(store_error)? {
                        FencedWrite::Done
                    } else {
                        FencedWrite::Conflict
                    }
                }
                Some(l) => self
                    .inner
                    .store
                    .update_fenced(&b, l)
                    .await
                    .map_err(store_error)?,
            };
            match written {
                FencedWrite::Done => {
                    b.version += 1;
                    return Ok((out, b));
                }
                FencedWrite::Conflict => tokio::task::yield_now().await,
                FencedWrite::Fenced => {
                    self.lost(b.id, "write");
                    return Err(lease_lost(id));
                }
            }
        }
    }

    /// Sets the status of build `id` after `check` accepted the build as it is (checks and
    /// change are one conditional write). A final build is never changed (403).
    pub(crate) async fn transition_checked(
        &self,
        id: u64,
        status: Option<ApiBuildStatus>,
        message: Option<String>,
        meta: Option<Value>,
        check: impl Fn(&BuildRecord) -> Result<(), HttpError>,
    ) -> Result<(Transition, Value), HttpError> {
        self.transition_as(id, false, status, message, meta, check)
            .await
    }

    /// [`ApiState::transition_checked`], fenced when `owned` (see
    /// [`ApiState::modify_as`]).
    pub(crate) async fn transition_as(
        &self,
        id: u64,
        owned: bool,
        status: Option<ApiBuildStatus>,
        message: Option<String>,
        meta: Option<Value>,
        check: impl Fn(&BuildRecord) -> Result<(), HttpError>,
    ) -> Result<(Transition, Value), HttpError> {
        let (t, b) = self
            .modify_as(id, owned, |b| {
                if is_final(b.status) {
                    return Err(HttpError::forbidden(format!(
                        "Build {id} is already {}: only unfinished builds can be updated",
                        b.status
                    )));
                }
                check(b)?;
                Ok(apply_status(b, status, message.clone(), meta.clone()))
            })
            .await?;
        self.emit(BuildEvent::Status {
            build_id: id,
            status: b.status,
            state: module_state(b.status),
            message: b.status_message.clone(),
        });
        Ok((t, b.to_json()))
    }

    /// [`ApiState::transition_checked`] without further checks.
    pub(crate) async fn transition(
        &self,
        id: u64,
        status: Option<ApiBuildStatus>,
        message: Option<String>,
    ) -> Result<(Transition, Value), HttpError> {
        self.transition_checked(id, status, message, None, |_| Ok(()))
            .await
    }

    /// [`ApiState::transition`] as the build's driver: fenced with a shared store.
    pub(crate) async fn transition_owned(
        &self,
        id: u64,
        status: Option<ApiBuildStatus>,
        message: Option<String>,
    ) -> Result<(Transition, Value), HttpError> {
        self.transition_as(id, true, status, message, None, |_| Ok(()))
            .await
    }

    /// Records that the engine confirmed build `id` ended (nothing left to stop), as its
    /// driver (fenced), and gives up its lease.
    /// Keeps what the executor tells of a concluded build's timings.
    pub(crate) async fn record_timings(&self, id: u64, timings: executor_base::BuildTimings) {
        let r = self
            .modify_as(id, true, |b| {
                b.timings = timings.clone();
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(build = id, error = %e, "cannot record the build's timings");
        }
    }

    pub(crate) async fn mark_settled(&self, id: u64) {
        let r = self
            .modify_as(id, true, |b| {
                b.settled = true;
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(build = id, error = %e, "cannot record that the build ended on the engine");
        } else if let Some(bid) = BuildId::new(id) {
            self.release(bid).await;
        }
    }
}

/// The answer to a fenced write by an instance whose lease was taken.
fn lease_lost(id: u64) -> HttpError {
    HttpError::conflict(format!(
        "Build {id} is driven by another API instance (this one's lease is gone)"
    ))
}

/// Applies a status (and message, meta) to `b`; what the change set off.
fn apply_status(
    b: &mut BuildRecord,
    status: Option<ApiBuildStatus>,
    message: Option<String>,
    meta: Option<Value>,
) -> Transition {
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
    t
}
