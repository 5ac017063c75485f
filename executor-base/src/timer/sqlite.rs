//! [`SqliteTimerStore`]: deadlines in an embedded SQLite file, so they survive a restart.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use crate::db_thread::DbThread;
use crate::error::{Error, ErrorKind};
use crate::ids::{BuildId, JobId};
use crate::timer::store::{StoredDeadline, TimerStore};

/// A durable [`TimerStore`] in one SQLite database file (WAL journal).
///
/// SQLite (through `rusqlite` with the bundled library) needs no server and no system
/// library, and its WAL journal makes each write a short append. The connection lives
/// on one dedicated thread ([`DbThread`]), so blocking file I/O never runs on the async
/// worker threads, and calls are applied in the order they were made. Dropping the store
/// closes the database (it waits for the thread to finish its current statement).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use executor_base::timer::{SqliteTimerStore, StoredDeadline, TimerStore};
/// use executor_base::{BuildId, JobId};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("timers.db");
/// let d = StoredDeadline {
///     build_id: BuildId::new(1).unwrap(), job_id: JobId::new(2).unwrap(),
///     deadline: chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap(),
///     timeout_minutes: 90,
/// };
/// let store = SqliteTimerStore::open(&path).await.unwrap();
/// store.put(&d).await.unwrap();
/// drop(store);
/// let store = SqliteTimerStore::open(&path).await.unwrap();
/// assert_eq!(store.load().await.unwrap(), vec![d]);
/// # });
/// ```
pub struct SqliteTimerStore {
    path: PathBuf,
    db: DbThread<Connection>,
}

impl fmt::Debug for SqliteTimerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTimerStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_error(what: &str, e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Unexpected, format!("timer store: {what}: {e}"))
        .with_executor("timer")
        .with_source(e)
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sd_timers (
    build_id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    timeout_minutes INTEGER NOT NULL
)";

fn open_db(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path).map_err(|e| db_error("open", e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| db_error("journal_mode=WAL", e))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| db_error("synchronous=NORMAL", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| db_error("busy_timeout", e))?;
    conn.execute_batch(SCHEMA)
        .map_err(|e| db_error("create table", e))?;
    Ok(conn)
}

fn put(conn: &Connection, d: &StoredDeadline) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO sd_timers (build_id, job_id, deadline_ms, timeout_minutes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(build_id) DO UPDATE SET job_id = ?2, deadline_ms = ?3, timeout_minutes = ?4",
    )
    .and_then(|mut st| {
        st.execute(params![
            d.build_id.get() as i64,
            d.job_id.get() as i64,
            d.deadline.timestamp_millis(),
            d.timeout_minutes
        ])
    })
    .map(|_| ())
    .map_err(|e| db_error("put", e))
}

fn remove(conn: &mut Connection, ids: &[BuildId]) -> Result<(), Error> {
    let tx = conn.transaction().map_err(|e| db_error("remove", e))?;
    {
        let mut st = tx
            .prepare_cached("DELETE FROM sd_timers WHERE build_id = ?1")
            .map_err(|e| db_error("remove", e))?;
        for id in ids {
            st.execute([id.get() as i64])
                .map_err(|e| db_error("remove", e))?;
        }
    }
    tx.commit().map_err(|e| db_error("remove", e))
}

fn load(conn: &Connection) -> Result<Vec<StoredDeadline>, Error> {
    let mut st = conn
        .prepare_cached("SELECT build_id, job_id, deadline_ms, timeout_minutes FROM sd_timers")
        .map_err(|e| db_error("load", e))?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })
        .map_err(|e| db_error("load", e))?;
    let mut out = Vec::new();
    for row in rows {
        let (b, j, ms, minutes) = row.map_err(|e| db_error("load", e))?;
        let corrupt = || {
            Error::new(
                ErrorKind::Unexpected,
                format!("timer store: corrupt row for build {b}"),
            )
            .with_executor("timer")
        };
        out.push(StoredDeadline {
            build_id: u64::try_from(b)
                .ok()
                .and_then(BuildId::new)
                .ok_or_else(corrupt)?,
            job_id: u64::try_from(j)
                .ok()
                .and_then(JobId::new)
                .ok_or_else(corrupt)?,
            deadline: DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(corrupt)?,
            timeout_minutes: minutes,
        });
    }
    Ok(out)
}

impl SqliteTimerStore {
    /// Opens (creating if needed) the database at `path` on its own thread.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let db = DbThread::open("timer-store", move || open_db(&p))
            .await
            .map_err(|e| e.with_executor("timer"))?;
        Ok(Self { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl TimerStore for SqliteTimerStore {
    async fn put(&self, d: &StoredDeadline) -> Result<(), Error> {
        let d = *d;
        self.db.call(move |c| put(c, &d)).await
    }

    async fn remove(&self, build_id: BuildId) -> Result<(), Error> {
        self.db.call(move |c| remove(c, &[build_id])).await
    }

    async fn remove_many(&self, build_ids: &[BuildId]) -> Result<(), Error> {
        if build_ids.is_empty() {
            return Ok(());
        }
        let ids = build_ids.to_vec();
        self.db.call(move |c| remove(c, &ids)).await
    }

    async fn load(&self) -> Result<Vec<StoredDeadline>, Error> {
        self.db.call(|c| load(c)).await
    }
}
