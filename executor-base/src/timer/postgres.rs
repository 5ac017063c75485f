//! [`PostgresTimerStore`]: deadlines in PostgreSQL, shared by several processes (feature
//! `postgres`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use crate::error::{Error, ErrorKind};
use crate::ids::{BuildId, JobId};
use crate::pg::{self, Migration, db_error, pool_error};
use crate::timer::store::{StoredDeadline, TimerStore};

/// The checked-in schema (`executor-base/migrations/postgres/timers_*.sql`).
pub const MIGRATIONS: &[Migration] =
    &[(1, include_str!("../../migrations/postgres/timers_0001.sql"))];

/// How long a claim protects a deadline from other processes by default (the claimer
/// fires it and removes it within milliseconds; a claimer that died meanwhile loses it
/// after this and another process fires it).
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(60);

/// A [`TimerStore`] in PostgreSQL that several processes share: each deadline fires in
/// exactly one of them.
///
/// A [`crate::timer::TimerService`] over it fires a deadline only after claiming it: a
/// conditional `UPDATE` that succeeds for one process only, and only while the stored
/// deadline is the one that passed (a deadline re-armed or removed by another process
/// is not fired). It also sweeps for deadlines armed by other processes (or left by one
/// that died) with `SELECT ... FOR UPDATE SKIP LOCKED`, every claim interval. A fired
/// deadline is removed after its handler ran; one whose claimer died before that is
/// claimed again after the claim TTL (delivery stays at least once, as in the
/// single-process stores).
///
/// ```no_run
/// # async fn f() -> Result<(), executor_base::Error> {
/// use std::sync::Arc;
/// use executor_base::timer::{PostgresTimerStore, TimerService};
/// let store = PostgresTimerStore::connect("postgres://sdx@db.internal/sdx").await?;
/// let timers = TimerService::builder().store(Arc::new(store)).build().await?;
/// # Ok(()) }
/// ```
pub struct PostgresTimerStore {
    pool: Pool,
    uri: String,
    instance: String,
    claim_ttl: Duration,
}

impl fmt::Debug for PostgresTimerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTimerStore")
            .field("uri", &pg::redact(&self.uri))
            .field("instance", &self.instance)
            .field("claim_ttl", &self.claim_ttl)
            .finish()
    }
}

fn err(what: &str, e: tokio_postgres::Error) -> Error {
    db_error(&format!("timer store: {what}"), e).with_executor("timer")
}

fn corrupt(b: i64) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("timer store: corrupt row for build {b}"),
    )
    .with_executor("timer")
}

fn deadline_of(r: &tokio_postgres::Row) -> Result<StoredDeadline, Error> {
    let (b, j, ms, minutes): (i64, i64, i64, i32) = (r.get(0), r.get(1), r.get(2), r.get(3));
    Ok(StoredDeadline {
        build_id: u64::try_from(b)
            .ok()
            .and_then(BuildId::new)
            .ok_or_else(|| corrupt(b))?,
        job_id: u64::try_from(j)
            .ok()
            .and_then(JobId::new)
            .ok_or_else(|| corrupt(b))?,
        deadline: DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| corrupt(b))?,
        timeout_minutes: u32::try_from(minutes).map_err(|_| corrupt(b))?,
    })
}

fn ids(list: &[BuildId]) -> Vec<i64> {
    list.iter().map(|b| b.get() as i64).collect()
}

impl PostgresTimerStore {
    /// Connects to `uri` (`postgres://user@host:port/db`), applies the migrations the
    /// database lacks, and takes a fresh instance id ([`pg::instance_id`]).
    pub async fn connect(uri: &str) -> Result<Self, Error> {
        let pool = pg::connect(uri, pg::DEFAULT_POOL_SIZE, "timerStore").await?;
        Self::with_pool(pool, uri).await
    }

    /// Uses an existing pool (e.g. the API's build store's), applying the migrations.
    pub async fn with_pool(pool: Pool, uri: &str) -> Result<Self, Error> {
        pg::migrate(&pool, "timers", MIGRATIONS)
            .await
            .map_err(|e| e.with_executor("timer"))?;
        Ok(Self {
            pool,
            uri: uri.to_string(),
            instance: pg::instance_id(),
            claim_ttl: DEFAULT_CLAIM_TTL,
        })
    }

    /// Names this process in claims (default: [`pg::instance_id`]).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// How long a claim protects a deadline (default [`DEFAULT_CLAIM_TTL`]).
    pub fn with_claim_ttl(mut self, ttl: Duration) -> Self {
        self.claim_ttl = ttl;
        self
    }

    /// The name this process claims deadlines under.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn conn(&self, what: &str) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_error(&format!("timer store: {what}"), e).with_executor("timer"))
    }

    fn ttl_ms(&self) -> i64 {
        self.claim_ttl.as_millis().min(i64::MAX as u128) as i64
    }
}

#[async_trait]
impl TimerStore for PostgresTimerStore {
    async fn put(&self, d: &StoredDeadline) -> Result<(), Error> {
        let c = self.conn("put").await?;
        c.execute(
            "INSERT INTO sdx_timers (build_id, job_id, deadline_ms, timeout_minutes) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (build_id) DO UPDATE SET job_id = $2, deadline_ms = $3, \
             timeout_minutes = $4, claimed_by = NULL, claimed_until = NULL",
            &[
                &(d.build_id.get() as i64),
                &(d.job_id.get() as i64),
                &d.deadline.timestamp_millis(),
                &(d.timeout_minutes.min(i32::MAX as u32) as i32),
            ],
        )
        .await
        .map(drop)
        .map_err(|e| err("put", e))
    }

    async fn remove(&self, build_id: BuildId) -> Result<(), Error> {
        self.remove_many(&[build_id]).await
    }

    async fn remove_many(&self, build_ids: &[BuildId]) -> Result<(), Error> {
        if build_ids.is_empty() {
            return Ok(());
        }
        let c = self.conn("remove").await?;
        c.execute(
            "DELETE FROM sdx_timers WHERE build_id = ANY($1)",
            &[&ids(build_ids)],
        )
        .await
        .map(drop)
        .map_err(|e| err("remove", e))
    }

    async fn load(&self) -> Result<Vec<StoredDeadline>, Error> {
        let c = self.conn("load").await?;
        c.query(
            "SELECT build_id, job_id, deadline_ms, timeout_minutes FROM sdx_timers",
            &[],
        )
        .await
        .map_err(|e| err("load", e))?
        .iter()
        .map(deadline_of)
        .collect()
    }

    fn shared(&self) -> bool {
        true
    }

    async fn claim(&self, due: &[StoredDeadline]) -> Result<Vec<BuildId>, Error> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let builds: Vec<i64> = due.iter().map(|d| d.build_id.get() as i64).collect();
        let deadlines: Vec<i64> = due.iter().map(|d| d.deadline.timestamp_millis()).collect();
        let c = self.conn("claim").await?;
        let rows = c
            .query(
                "UPDATE sdx_timers t SET claimed_by = $1, \
                 claimed_until = clock_timestamp() + $2 * interval '1 millisecond' \
                 FROM unnest($3::bigint[], $4::bigint[]) AS d (build_id, deadline_ms) \
                 WHERE t.build_id = d.build_id AND t.deadline_ms = d.deadline_ms \
                 AND (t.claimed_until IS NULL OR t.claimed_until < clock_timestamp()) \
                 RETURNING t.build_id",
                &[&self.instance, &(self.ttl_ms() as f64), &builds, &deadlines],
            )
            .await
            .map_err(|e| err("claim", e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                u64::try_from(r.get::<_, i64>(0))
                    .ok()
                    .and_then(BuildId::new)
            })
            .collect())
    }

    async fn claim_due(&self, limit: usize) -> Result<Vec<StoredDeadline>, Error> {
        let c = self.conn("claim due").await?;
        c.query(
            "UPDATE sdx_timers SET claimed_by = $1, \
             claimed_until = clock_timestamp() + $2 * interval '1 millisecond' \
             WHERE build_id IN ( \
               SELECT build_id FROM sdx_timers \
               WHERE deadline_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
               AND (claimed_until IS NULL OR claimed_until < clock_timestamp()) \
               ORDER BY deadline_ms LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING build_id, job_id, deadline_ms, timeout_minutes",
            &[&self.instance, &(self.ttl_ms() as f64), &(limit as i64)],
        )
        .await
        .map_err(|e| err("claim due", e))?
        .iter()
        .map(deadline_of)
        .collect()
    }

    async fn fired(&self, fired: &[StoredDeadline]) -> Result<(), Error> {
        if fired.is_empty() {
            return Ok(());
        }
        let builds: Vec<i64> = fired.iter().map(|d| d.build_id.get() as i64).collect();
        let c = self.conn("fired").await?;
        c.execute(
            "DELETE FROM sdx_timers WHERE build_id = ANY($1) AND claimed_by = $2",
            &[&builds, &self.instance],
        )
        .await
        .map(drop)
        .map_err(|e| err("fired", e))
    }
}
