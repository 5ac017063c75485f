//! [`PostgresBuildStore`]: the API's builds in PostgreSQL, shared by several instances.
//!
//! Same rows as the SQLite store (a build's body is the same JSON), plus each build's
//! lease. Every value is bound as a parameter; the schema is the checked-in
//! `migrations/postgres/builds_*.sql`, applied at connect under an advisory lock.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use executor_base::pg::{self, Migration};
use executor_base::{ApiBuildStatus, BuildId, Error, ErrorKind};

use super::sqlite::{body, iso, record, time};
use super::{BuildStore, FencedWrite, Lease, unavailable};
use crate::model::{BuildRecord, LogLine, MAX_LINES_PER_STEP, StepRecord, is_final};

/// The checked-in schema (`executor-api/migrations/postgres/builds_*.sql`).
pub const MIGRATIONS: &[Migration] =
    &[(1, include_str!("../../migrations/postgres/builds_0001.sql"))];

/// A [`BuildStore`] in PostgreSQL that several API instances share (who runs which
/// build: [`crate::lease`]).
#[derive(Clone)]
pub struct PostgresBuildStore {
    pool: Pool,
    uri: String,
}

impl fmt::Debug for PostgresBuildStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBuildStore")
            .field("uri", &pg::redact(&self.uri))
            .finish_non_exhaustive()
    }
}

fn err(e: tokio_postgres::Error) -> Error {
    pg::db_error("build store", e).with_executor("api")
}

fn ms(ttl: Duration) -> f64 {
    ttl.as_millis().min(i64::MAX as u128) as f64
}

async fn load(c: &tokio_postgres::Client, id: u64) -> Result<Option<BuildRecord>, Error> {
    let Some(row) = c
        .query_opt(
            "SELECT version, owner, status, settled, body FROM sdx_builds WHERE id = $1",
            &[&(id as i64)],
        )
        .await
        .map_err(err)?
    else {
        return Ok(None);
    };
    let mut b = record(
        id,
        row.get::<_, i64>(0) as u64,
        row.get(1),
        row.get(2),
        row.get(3),
        row.get::<_, String>(4).as_str(),
    )?;
    b.steps = c
        .query(
            "SELECT name, command, start_time, end_time, code, next_line FROM sdx_steps \
             WHERE build_id = $1 ORDER BY position",
            &[&(id as i64)],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| StepRecord {
            name: r.get(0),
            command: r.get(1),
            start_time: time(r.get(2)),
            end_time: time(r.get(3)),
            code: r.get(4),
            next_line: r.get::<_, i64>(5) as u64,
        })
        .collect();
    Ok(Some(b))
}

fn lease(id: i64, holder: &str, token: i64) -> Option<Lease> {
    Some(Lease {
        build_id: BuildId::new(u64::try_from(id).ok()?)?,
        holder: holder.to_string(),
        token: token as u64,
    })
}

impl PostgresBuildStore {
    /// Connects to `uri`, applying the migrations the database lacks.
    pub async fn connect(uri: &str) -> Result<Self, Error> {
        let pool = pg::connect(uri, pg::DEFAULT_POOL_SIZE, "buildStore").await?;
        pg::migrate(&pool, "builds", MIGRATIONS)
            .await
            .map_err(|e| e.with_executor("api"))?;
        Ok(Self {
            pool,
            uri: uri.to_string(),
        })
    }

    /// The connection pool (the timer store of `sdx serve` shares it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool
            .get()
            .await
            .map_err(|e| pg::pool_error("build store", e).with_executor("api"))
    }

    /// The body of [`BuildStore::update`] inside a transaction, with an optional fence.
    async fn write(&self, b: &BuildRecord, fence: Option<&Lease>) -> Result<FencedWrite, Error> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(err)?;
        let id = b.id.get() as i64;
        let (holder, token) = match fence {
            Some(l) => (Some(l.holder.as_str()), Some(l.token as i64)),
            None => (None, None),
        };
        let changed = tx
            .execute(
                "UPDATE sdx_builds SET version = version + 1, owner = $3, status = $4, \
                 final = $5, settled = $6, body = $7 \
                 WHERE id = $1 AND version = $2 \
                 AND ($8::text IS NULL OR (lease_holder = $8 AND lease_token = $9))",
                &[
                    &id,
                    &(b.version as i64),
                    &b.owner,
                    &b.status.as_str(),
                    &is_final(b.status),
                    &b.settled,
                    &body(b),
                    &holder,
                    &token,
                ],
            )
            .await
            .map_err(err)?;
        if changed == 0 {
            let Some(l) = fence else {
                return Ok(FencedWrite::Conflict);
            };
            let row = tx
                .query_opt(
                    "SELECT lease_holder, lease_token FROM sdx_builds WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(err)?;
            let current = row.is_some_and(|r| {
                r.get::<_, Option<String>>(0).as_deref() == Some(l.holder.as_str())
                    && r.get::<_, i64>(1) == l.token as i64
            });
            return Ok(if current {
                FencedWrite::Conflict
            } else {
                FencedWrite::Fenced
            });
        }
        for s in &b.steps {
            tx.execute(
                "UPDATE sdx_steps SET start_time = $3, end_time = $4, code = $5 \
                 WHERE build_id = $1 AND name = $2",
                &[
                    &id,
                    &s.name,
                    &s.start_time.as_ref().map(iso),
                    &s.end_time.as_ref().map(iso),
                    &s.code,
                ],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(FencedWrite::Done)
    }

    async fn insert_with(
        &self,
        b: &BuildRecord,
        holder: Option<(&str, Duration)>,
    ) -> Result<i64, Error> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(err)?;
        let id = b.id.get() as i64;
        let (h, ttl) = match holder {
            Some((h, ttl)) => (Some(h), Some(ms(ttl))),
            None => (None, None),
        };
        let inserted = tx
            .query_opt(
                "INSERT INTO sdx_builds (id, version, owner, status, final, settled, body, \
                 lease_holder, lease_token, lease_expires) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8::text IS NULL THEN 0 ELSE 1 END, \
                 clock_timestamp() + $9::float8 * interval '1 millisecond') \
                 ON CONFLICT (id) DO NOTHING RETURNING lease_token",
                &[
                    &id,
                    &(b.version as i64),
                    &b.owner,
                    &b.status.as_str(),
                    &is_final(b.status),
                    &b.settled,
                    &body(b),
                    &h,
                    &ttl,
                ],
            )
            .await
            .map_err(err)?;
        let Some(row) = inserted else {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("Build {id} already exists"),
            ));
        };
        for (pos, s) in b.steps.iter().enumerate() {
            tx.execute(
                "INSERT INTO sdx_steps (build_id, position, name, command, start_time, end_time, code) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id,
                    &(pos as i32),
                    &s.name,
                    &s.command,
                    &s.start_time.as_ref().map(iso),
                    &s.end_time.as_ref().map(iso),
                    &s.code,
                ],
            )
            .await
            .map_err(err)?;
        }
        tx.execute(
            "UPDATE sdx_sequences SET next = GREATEST(next, $1::bigint + 1) WHERE name = 'builds'",
            &[&id],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl BuildStore for PostgresBuildStore {
    fn uri(&self) -> String {
        pg::redact(&self.uri)
    }

    async fn next_id(&self) -> Result<BuildId, Error> {
        let c = self.conn().await?;
        let n: i64 = c
            .query_one(
                "UPDATE sdx_sequences SET next = next + 1 WHERE name = 'builds' RETURNING next - 1",
                &[],
            )
            .await
            .map_err(err)?
            .get(0);
        BuildId::new(n as u64).ok_or_else(|| unavailable("the sequence is corrupt"))
    }

    async fn insert(&self, build: &BuildRecord) -> Result<(), Error> {
        self.insert_with(build, None).await.map(drop)
    }

    async fn get(&self, id: u64) -> Result<Option<BuildRecord>, Error> {
        let c = self.conn().await?;
        load(&c, id).await
    }

    async fn list(&self) -> Result<Vec<(BuildId, ApiBuildStatus)>, Error> {
        let c = self.conn().await?;
        Ok(
            c.query("SELECT id, status FROM sdx_builds ORDER BY id", &[])
                .await
                .map_err(err)?
                .iter()
                .filter_map(|r| {
                    Some((
                        BuildId::new(r.get::<_, i64>(0) as u64)?,
                        ApiBuildStatus::parse(r.get(1))?,
                    ))
                })
                .collect(),
        )
    }

    async fn unsettled(&self) -> Result<Vec<BuildRecord>, Error> {
        let c = self.conn().await?;
        let ids: Vec<i64> = c
            .query(
                "SELECT id FROM sdx_builds WHERE NOT final OR NOT settled ORDER BY id",
                &[],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(b) = load(&c, id as u64).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn update(&self, build: &BuildRecord) -> Result<bool, Error> {
        Ok(self.write(build, None).await? == FencedWrite::Done)
    }

    async fn append_logs(
        &self,
        id: u64,
        step: &str,
        lines: &[LogLine],
    ) -> Result<Option<Vec<LogLine>>, Error> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(err)?;
        let Some(row) = tx
            .query_opt(
                "SELECT next_line, stored_lines FROM sdx_steps \
                 WHERE build_id = $1 AND name = $2 FOR UPDATE",
                &[&(id as i64), &step],
            )
            .await
            .map_err(err)?
        else {
            return Ok(None);
        };
        let (mut next, mut stored) = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
        let mut accepted = Vec::new();
        let (mut ns, mut ts, mut msgs) = (Vec::new(), Vec::new(), Vec::new());
        for l in lines {
            if l.n < next || l.n > i64::MAX as u64 {
                continue;
            }
            next = l.n + 1;
            if (stored as usize) < MAX_LINES_PER_STEP {
                ns.push(l.n as i64);
                ts.push(l.t.min(i64::MAX as u64) as i64);
                msgs.push(l.m.clone());
                stored += 1;
            }
            accepted.push(l.clone());
        }
        if !ns.is_empty() {
            tx.execute(
                "INSERT INTO sdx_log_lines (build_id, step, n, t, m) \
                 SELECT $1, $2, n, t, m FROM unnest($3::bigint[], $4::bigint[], $5::text[]) AS l (n, t, m) \
                 ON CONFLICT DO NOTHING",
                &[&(id as i64), &step, &ns, &ts, &msgs],
            )
            .await
            .map_err(err)?;
        }
        if !accepted.is_empty() {
            tx.execute(
                "UPDATE sdx_steps SET next_line = $3, stored_lines = $4 \
                 WHERE build_id = $1 AND name = $2",
                &[&(id as i64), &step, &(next as i64), &(stored as i64)],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(Some(accepted))
    }

    async fn logs(
        &self,
        id: u64,
        step: &str,
        from: u64,
        limit: usize,
    ) -> Result<Option<Vec<LogLine>>, Error> {
        let c = self.conn().await?;
        let exists = c
            .query_opt(
                "SELECT 1 FROM sdx_steps WHERE build_id = $1 AND name = $2",
                &[&(id as i64), &step],
            )
            .await
            .map_err(err)?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let from = from.min(i64::MAX as u64) as i64;
        Ok(Some(
            c.query(
                "SELECT t, m, n FROM sdx_log_lines WHERE build_id = $1 AND step = $2 AND n >= $3 \
                 ORDER BY n LIMIT $4",
                &[&(id as i64), &step, &from, &(limit as i64)],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| LogLine {
                t: r.get::<_, i64>(0) as u64,
                m: r.get(1),
                n: r.get::<_, i64>(2) as u64,
            })
            .collect(),
        ))
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO sdx_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &candidate],
        )
        .await
        .map_err(err)?;
        Ok(
            c.query_one("SELECT value FROM sdx_secrets WHERE name = $1", &[&name])
                .await
                .map_err(err)?
                .get(0),
        )
    }

    fn shared(&self) -> bool {
        true
    }

    async fn insert_leased(
        &self,
        build: &BuildRecord,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, Error> {
        let token = self.insert_with(build, Some((holder, ttl))).await?;
        Ok(Lease {
            build_id: build.id,
            holder: holder.to_string(),
            token: token as u64,
        })
    }

    async fn acquire(
        &self,
        id: BuildId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let c = self.conn().await?;
        Ok(c.query_opt(
            "UPDATE sdx_builds SET lease_holder = $2, \
             lease_expires = clock_timestamp() + $3::float8 * interval '1 millisecond', \
             lease_token = CASE WHEN lease_holder IS NOT DISTINCT FROM $2 \
                 THEN lease_token ELSE lease_token + 1 END \
             WHERE id = $1 AND (lease_holder IS NULL OR lease_holder = $2 \
                 OR lease_expires < clock_timestamp()) \
             RETURNING lease_token",
            &[&(id.get() as i64), &holder, &ms(ttl)],
        )
        .await
        .map_err(err)?
        .and_then(|r| lease(id.get() as i64, holder, r.get(0))))
    }

    async fn renew(&self, holder: &str, ttl: Duration) -> Result<Vec<Lease>, Error> {
        let c = self.conn().await?;
        Ok(c.query(
            "UPDATE sdx_builds SET \
             lease_expires = clock_timestamp() + $2::float8 * interval '1 millisecond' \
             WHERE lease_holder = $1 RETURNING id, lease_token",
            &[&holder, &ms(ttl)],
        )
        .await
        .map_err(err)?
        .iter()
        .filter_map(|r| lease(r.get(0), holder, r.get(1)))
        .collect())
    }

    async fn check(&self, l: &Lease) -> Result<bool, Error> {
        let c = self.conn().await?;
        Ok(c.query_opt(
            "SELECT 1 FROM sdx_builds WHERE id = $1 AND lease_holder = $2 AND lease_token = $3 \
             AND lease_expires > clock_timestamp()",
            &[&(l.build_id.get() as i64), &l.holder, &(l.token as i64)],
        )
        .await
        .map_err(err)?
        .is_some())
    }

    async fn release(&self, l: &Lease) -> Result<(), Error> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE sdx_builds SET lease_holder = NULL, lease_expires = NULL \
             WHERE id = $1 AND lease_holder = $2 AND lease_token = $3",
            &[&(l.build_id.get() as i64), &l.holder, &(l.token as i64)],
        )
        .await
        .map(drop)
        .map_err(err)
    }

    async fn adoptable(&self) -> Result<Vec<BuildRecord>, Error> {
        let c = self.conn().await?;
        let ids: Vec<i64> = c
            .query(
                "SELECT id FROM sdx_builds WHERE (NOT final OR NOT settled) \
                 AND (lease_holder IS NULL OR lease_expires < clock_timestamp()) ORDER BY id",
                &[],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(b) = load(&c, id as u64).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn update_fenced(
        &self,
        build: &BuildRecord,
        lease: &Lease,
    ) -> Result<FencedWrite, Error> {
        self.write(build, Some(lease)).await
    }
}
