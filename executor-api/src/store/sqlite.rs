//! [`SqliteBuildStore`]: the API's builds in one SQLite file. All of the API's SQL is here.
//!
//! The connection lives on one dedicated thread (blocking file I/O never runs on the
//! async workers) and statements run in the order they were sent. The file uses the WAL
//! journal with `synchronous = NORMAL`: a committed write survives the process being
//! killed (SIGKILL), and several processes on one state directory (`sdx serve`, `sdx
//! run`, `sdx gc`) share it safely, waiting up to 5 s for each other's locks.
//!
//! The schema is versioned with `PRAGMA user_version` and migrated at open; every value
//! is bound as a parameter (no SQL is built from strings).

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use executor_base::db_thread::DbThread;
use executor_base::{
    AnnotationMode, Annotations, ApiBuildStatus, BuildId, Error, ErrorKind, EventId, ImageRef,
    JobId, PipelineId,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Value, json};

use super::{BuildStore, unavailable};
use crate::model::{BuildRecord, LogLine, MAX_LINES_PER_STEP, StepRecord, is_final};

/// The schema, one entry per version; entry `n` migrates version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE sequences (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
INSERT INTO sequences (name, next) VALUES ('builds', 1);
CREATE TABLE builds (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    final INTEGER NOT NULL,
    settled INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX builds_unsettled ON builds (id) WHERE final = 0 OR settled = 0;
CREATE TABLE steps (
    build_id INTEGER NOT NULL REFERENCES builds (id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    code INTEGER,
    next_line INTEGER NOT NULL DEFAULT 0,
    stored_lines INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (build_id, name)
);
CREATE TABLE log_lines (
    build_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    n INTEGER NOT NULL,
    t INTEGER NOT NULL,
    m TEXT NOT NULL,
    PRIMARY KEY (build_id, step, n)
) WITHOUT ROWID;
CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"#];

/// A durable [`BuildStore`] in one SQLite file.
///
/// `rusqlite` with the bundled SQLite is the workspace's one SQLite library (the timer
/// store uses it too; `sqlx`'s SQLite driver pins another `libsqlite3-sys`, and only one
/// may link). A shared PostgreSQL store would implement [`BuildStore`] with an async
/// PostgreSQL driver beside this one.
pub struct SqliteBuildStore {
    path: PathBuf,
    db: DbThread<Connection>,
}

impl fmt::Debug for SqliteBuildStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBuildStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn db_err(e: rusqlite::Error) -> Error {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let err = unavailable(e);
    if busy { err.temporary() } else { err }
}

fn open_db(path: &Path) -> Result<Connection, Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("buildStore: cannot create {}: {e}", dir.display()),
            )
            .with_context("key", "buildStore")
        })?;
    }
    let mut conn = Connection::open(path).map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("buildStore: cannot open {}: {e}", path.display()),
        )
        .with_context("key", "buildStore")
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        // The signing key and the administrator's token are in it.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db_err)?;
    // Switching to WAL takes an exclusive lock without waiting on the busy handler: two
    // processes opening a new file at once retry it.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => break r.map_err(db_err)?,
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Applies the migrations the file lacks, each in an immediate transaction that re-reads
/// the version (two processes opening a new file at once migrate it once).
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let version = tx
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(db_err)? as usize;
        if version > MIGRATIONS.len() {
            return Err(unavailable(format!(
                "the database has schema version {version}, newer than this sdx ({})",
                MIGRATIONS.len()
            )));
        }
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(db_err)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
}

pub(super) fn iso(t: &DateTime<Utc>) -> String {
    crate::model::iso(t)
}

pub(super) fn time(v: Option<String>) -> Option<DateTime<Utc>> {
    v.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The columns of `builds` other than the keys, for a record.
pub(super) fn body(b: &BuildRecord) -> String {
    json!({
        "jobId": b.job_id.get(),
        "eventId": b.event_id.map(EventId::get),
        "pipelineId": b.pipeline_id.map(PipelineId::get),
        "jobName": b.job_name,
        "container": b.container.as_str(),
        "annotations": b.annotations.to_json(),
        "environment": b.environment,
        "statusMessage": b.status_message,
        "meta": b.meta,
        "createTime": iso(&b.create_time),
        "startTime": b.start_time.as_ref().map(iso),
        "endTime": b.end_time.as_ref().map(iso),
        "timings": b.timings,
    })
    .to_string()
}

/// A record from a `builds` row (steps added by the caller).
pub(super) fn record(
    id: u64,
    version: u64,
    owner: String,
    status: String,
    settled: bool,
    body: &str,
) -> Result<BuildRecord, Error> {
    let corrupt = |what: &str| unavailable(format!("build {id}: unreadable {what}"));
    let v: Value = serde_json::from_str(body).map_err(|_| corrupt("row"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    Ok(BuildRecord {
        id: BuildId::new(id).ok_or_else(|| corrupt("id"))?,
        owner,
        version,
        settled,
        job_id: n("jobId")
            .and_then(JobId::new)
            .ok_or_else(|| corrupt("jobId"))?,
        event_id: n("eventId").and_then(EventId::new),
        pipeline_id: n("pipelineId").and_then(PipelineId::new),
        job_name: s("jobName"),
        container: ImageRef::parse(&s("container").unwrap_or_default())
            .map_err(|_| corrupt("container"))?,
        annotations: Annotations::parse(
            v.get("annotations").unwrap_or(&Value::Null),
            AnnotationMode::Compatible,
        )
        .unwrap_or_default(),
        environment: v
            .get("environment")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        status: ApiBuildStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        status_message: s("statusMessage"),
        meta: v.get("meta").cloned().unwrap_or_else(|| json!({})),
        create_time: time(s("createTime")).ok_or_else(|| corrupt("createTime"))?,
        start_time: time(s("startTime")),
        end_time: time(s("endTime")),
        // Absent in builds stored before timings existed.
        timings: v
            .get("timings")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .unwrap_or_default(),
        steps: Vec::new(),
    })
}

fn load(conn: &Connection, id: u64) -> Result<Option<BuildRecord>, Error> {
    let row = conn
        .query_row(
            "SELECT version, owner, status, settled, body FROM builds WHERE id = ?1",
            params![id as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()
        .map_err(db_err)?;
    let Some((version, owner, status, settled, body)) = row else {
        return Ok(None);
    };
    let mut b = record(id, version as u64, owner, status, settled, &body)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, command, start_time, end_time, code, next_line FROM steps \
             WHERE build_id = ?1 ORDER BY position",
        )
        .map_err(db_err)?;
    b.steps = stmt
        .query_map(params![id as i64], |r| {
            Ok(StepRecord {
                name: r.get(0)?,
                command: r.get(1)?,
                start_time: time(r.get(2)?),
                end_time: time(r.get(3)?),
                code: r.get(4)?,
                next_line: r.get::<_, i64>(5)? as u64,
            })
        })
        .map_err(db_err)?
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
    Ok(Some(b))
}

impl SqliteBuildStore {
    /// Opens (creating and migrating if needed) the database at `path`, on its own
    /// thread ([`DbThread`]).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let db = DbThread::open("build-store", move || open_db(&p))
            .await
            .map_err(|e| e.with_executor("api"))?;
        Ok(Self { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl BuildStore for SqliteBuildStore {
    fn uri(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn next_id(&self) -> Result<BuildId, Error> {
        self.db
            .call(|c| {
                let n: i64 = c
                .query_row(
                    "UPDATE sequences SET next = next + 1 WHERE name = 'builds' RETURNING next - 1",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
                BuildId::new(n as u64).ok_or_else(|| unavailable("the sequence is corrupt"))
            })
            .await
    }

    async fn insert(&self, build: &BuildRecord) -> Result<(), Error> {
        let b = build.clone();
        self.db.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let id = b.id.get() as i64;
            let exists: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM builds WHERE id = ?1)", params![id], |r| {
                    r.get(0)
                })
                .map_err(db_err)?;
            if exists {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("Build {id} already exists"),
                ));
            }
            tx.execute(
                "INSERT INTO builds (id, version, owner, status, final, settled, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    b.version as i64,
                    b.owner,
                    b.status.as_str(),
                    is_final(b.status),
                    b.settled,
                    body(&b)
                ],
            )
            .map_err(db_err)?;
            for (pos, s) in b.steps.iter().enumerate() {
                tx.execute(
                    "INSERT INTO steps (build_id, position, name, command, start_time, end_time, code) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        id,
                        pos as i64,
                        s.name,
                        s.command,
                        s.start_time.as_ref().map(iso),
                        s.end_time.as_ref().map(iso),
                        s.code
                    ],
                )
                .map_err(db_err)?;
            }
            tx.execute(
                "UPDATE sequences SET next = max(next, ?1 + 1) WHERE name = 'builds'",
                params![id],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get(&self, id: u64) -> Result<Option<BuildRecord>, Error> {
        self.db.call(move |c| load(c, id)).await
    }

    async fn list(&self) -> Result<Vec<(BuildId, ApiBuildStatus)>, Error> {
        self.db
            .call(|c| {
                let mut stmt = c
                    .prepare_cached("SELECT id, status FROM builds ORDER BY id")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                    .map_err(db_err)?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, status) = row.map_err(db_err)?;
                    if let (Some(id), Some(status)) =
                        (BuildId::new(id as u64), ApiBuildStatus::parse(&status))
                    {
                        out.push((id, status));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn unsettled(&self) -> Result<Vec<BuildRecord>, Error> {
        self.db
            .call(|c| {
                let ids: Vec<i64> = {
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT id FROM builds WHERE final = 0 OR settled = 0 ORDER BY id",
                        )
                        .map_err(db_err)?;
                    stmt.query_map([], |r| r.get(0))
                        .map_err(db_err)?
                        .collect::<Result<_, _>>()
                        .map_err(db_err)?
                };
                let mut out = Vec::new();
                for id in ids {
                    if let Some(b) = load(c, id as u64)? {
                        out.push(b);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn update(&self, build: &BuildRecord) -> Result<bool, Error> {
        let b = build.clone();
        self.db
            .call(move |c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db_err)?;
                let id = b.id.get() as i64;
                let changed = tx
                .execute(
                    "UPDATE builds SET version = version + 1, owner = ?3, status = ?4, final = ?5, \
                     settled = ?6, body = ?7 WHERE id = ?1 AND version = ?2",
                    params![
                        id,
                        b.version as i64,
                        b.owner,
                        b.status.as_str(),
                        is_final(b.status),
                        b.settled,
                        body(&b)
                    ],
                )
                .map_err(db_err)?;
                if changed == 0 {
                    return Ok(false);
                }
                for s in &b.steps {
                    tx.execute(
                        "UPDATE steps SET start_time = ?3, end_time = ?4, code = ?5 \
                     WHERE build_id = ?1 AND name = ?2",
                        params![
                            id,
                            s.name,
                            s.start_time.as_ref().map(iso),
                            s.end_time.as_ref().map(iso),
                            s.code
                        ],
                    )
                    .map_err(db_err)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(true)
            })
            .await
    }

    async fn append_logs(
        &self,
        id: u64,
        step: &str,
        lines: &[LogLine],
    ) -> Result<Option<Vec<LogLine>>, Error> {
        let (step, lines) = (step.to_string(), lines.to_vec());
        self.db
            .call(move |c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db_err)?;
                let row: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT next_line, stored_lines FROM steps WHERE build_id = ?1 AND name = ?2",
                    params![id as i64, step],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
                let Some((next, stored)) = row else {
                    return Ok(None);
                };
                let (mut next, mut stored) = (next as u64, stored as u64);
                let mut accepted = Vec::new();
                {
                    let mut ins = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO log_lines (build_id, step, n, t, m) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(db_err)?;
                    for l in lines {
                        if l.n < next || l.n > i64::MAX as u64 {
                            continue;
                        }
                        next = l.n + 1;
                        if (stored as usize) < MAX_LINES_PER_STEP {
                            ins.execute(params![id as i64, step, l.n as i64, l.t as i64, l.m])
                                .map_err(db_err)?;
                            stored += 1;
                        }
                        accepted.push(l);
                    }
                }
                if !accepted.is_empty() {
                    tx.execute(
                        "UPDATE steps SET next_line = ?3, stored_lines = ?4 \
                     WHERE build_id = ?1 AND name = ?2",
                        params![id as i64, step, next as i64, stored as i64],
                    )
                    .map_err(db_err)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(Some(accepted))
            })
            .await
    }

    async fn logs(
        &self,
        id: u64,
        step: &str,
        from: u64,
        limit: usize,
    ) -> Result<Option<Vec<LogLine>>, Error> {
        let step = step.to_string();
        self.db
            .call(move |c| {
                let exists: bool = c
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM steps WHERE build_id = ?1 AND name = ?2)",
                        params![id as i64, step],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                if !exists {
                    return Ok(None);
                }
                let mut stmt = c
                .prepare_cached(
                    "SELECT t, m, n FROM log_lines WHERE build_id = ?1 AND step = ?2 AND n >= ?3 \
                     ORDER BY n LIMIT ?4",
                )
                .map_err(db_err)?;
                let from = from.min(i64::MAX as u64) as i64;
                let lines = stmt
                    .query_map(params![id as i64, step, from, limit as i64], |r| {
                        Ok(LogLine {
                            t: r.get::<_, i64>(0)? as u64,
                            m: r.get(1)?,
                            n: r.get::<_, i64>(2)? as u64,
                        })
                    })
                    .map_err(db_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err)?;
                Ok(Some(lines))
            })
            .await
    }

    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error> {
        let (name, candidate) = (name.to_string(), candidate.to_string());
        self.db
            .call(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
                    params![name, candidate],
                )
                .map_err(db_err)?;
                c.query_row(
                    "SELECT value FROM secrets WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .map_err(db_err)
            })
            .await
    }
}
