//! PostgreSQL plumbing shared by the PostgreSQL stores (feature `postgres`): a connection
//! pool from a `postgres://` URI, versioned migrations applied once at start, and error
//! mapping. The timer store ([`crate::timer::PostgresTimerStore`]) and the reference
//! API's build store use it.
//!
//! # Why `tokio-postgres` + `deadpool-postgres`
//!
//! `sqlx` was the first choice, but every `sqlx` 0.8 release pins `libsqlite3-sys` 0.30
//! through its optional SQLite driver, and Cargo refuses two packages that link `sqlite3`
//! even when that driver is off (transact-rs/sqlx#3301, #3556): it cannot coexist with the
//! workspace's `rusqlite` 0.37. `tokio-postgres` is the maintained async driver `sqlx`
//! competes with (rust-postgres), with no TLS and no native library unless asked;
//! `deadpool-postgres` is its usual small pool. No TLS is compiled in: connections to the
//! database are plain TCP or a Unix socket (put the database on a trusted network, or
//! behind a TLS-terminating proxy). Every statement binds its values as parameters; no SQL
//! is built from strings.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::{Error, ErrorKind};

/// A migration: its version (1, 2, ...) and SQL (several statements allowed).
pub type Migration = (i32, &'static str);

/// How many connections a store's pool opens at most (default).
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Whether `uri` names PostgreSQL (`postgres://` or `postgresql://`).
pub fn is_postgres_uri(uri: &str) -> bool {
    let u = uri.trim();
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

/// `uri` with any password replaced by `***`, for messages and `Debug`.
///
/// ```
/// use executor_base::pg::redact;
/// assert_eq!(redact("postgres://sdx:hunter2@db:5432/sdx"), "postgres://sdx:***@db:5432/sdx");
/// assert_eq!(redact("postgres://db/sdx"), "postgres://db/sdx");
/// ```
pub fn redact(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => uri.to_string(),
        Err(_) => "postgres://(unparsable)".into(),
    }
}

/// A database error as an [`Error`]: connection and server-shutdown errors are
/// [`ErrorKind::Unavailable`] and temporary (retry later); serialization failures and
/// deadlocks are temporary too; the rest is [`ErrorKind::Unexpected`]. `what` names the
/// store and the operation (`timer store: claim`).
pub fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let code = e.code().cloned();
    let transient = e.is_closed()
        || code.is_none()
        || matches!(
            code,
            Some(ref c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS
        );
    let kind = if transient {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Unexpected
    };
    let err = Error::new(kind, format!("{what}: {e}"));
    if transient { err.temporary() } else { err }
}

/// A pool error as an [`Error`] (could not get a connection: temporary).
pub fn pool_error(what: &str, e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(what, e),
        other => Error::new(ErrorKind::Unavailable, format!("{what}: {other}")).temporary(),
    }
}

/// Opens a pool of at most `size` connections to `uri` and checks that one connection
/// works. The error names `key` (the option the URI came from) and never the password.
pub async fn connect(uri: &str, size: usize, key: &str) -> Result<Pool, Error> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("{key}: {}: {why}", redact(uri)),
        )
        .with_context("key", key)
    };
    let mut cfg: tokio_postgres::Config = uri.trim().parse().map_err(|e| bad(format!("{e}")))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    cfg.application_name("sdx");
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(mgr)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| bad(format!("{e}")))?;
    let conn = pool.get().await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("{key}: cannot connect to {}: {e}", redact(uri)),
        )
        .with_context("key", key)
        .temporary()
    })?;
    drop(conn);
    Ok(pool)
}

/// Applies the `migrations` of `component` the database lacks, in order, each in its own
/// transaction, under a transaction-scoped advisory lock (several processes starting at
/// once migrate once). Versions are kept in `sdx_schema (component, version)`. A database
/// with a version newer than the newest migration is refused (an older sdx must not write
/// a newer schema).
pub async fn migrate(pool: &Pool, component: &str, migrations: &[Migration]) -> Result<(), Error> {
    let what = format!("{component}: migrate");
    let mut conn = pool.get().await.map_err(|e| pool_error(&what, e))?;
    let tx = conn.transaction().await.map_err(|e| db_error(&what, e))?;
    // One lock for every component: the schema table itself is created under it.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(|e| db_error(&what, e))?;
    tx.execute("SELECT pg_advisory_xact_lock(7012026015)", &[])
        .await
        .map_err(|e| db_error(&what, e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sdx_schema (
            component TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(|e| db_error(&what, e))?;
    let current: i32 = tx
        .query_opt(
            "SELECT version FROM sdx_schema WHERE component = $1",
            &[&component],
        )
        .await
        .map_err(|e| db_error(&what, e))?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let newest = migrations.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if current > newest {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "{component}: the database has schema version {current}, newer than this sdx ({newest})"
            ),
        ));
    }
    for (version, sql) in migrations.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| db_error(&format!("{what} to version {version}"), e))?;
        tx.execute(
            "INSERT INTO sdx_schema (component, version) VALUES ($1, $2)
             ON CONFLICT (component) DO UPDATE SET version = $2, applied_at = now()",
            &[&component, version],
        )
        .await
        .map_err(|e| db_error(&what, e))?;
    }
    tx.commit().await.map_err(|e| db_error(&what, e))
}

/// A fresh identity for one process acting on a shared database: `<host>:<pid>:<random>`
/// (the random part tells a restarted process from the one before it).
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_recognised_and_passwords_hidden() {
        assert!(is_postgres_uri("postgres://db/sdx"));
        assert!(is_postgres_uri(" postgresql://u@db/sdx"));
        assert!(!is_postgres_uri("sqlite:/x.db"));
        assert_eq!(
            redact("postgresql://u:secret@h/db?sslmode=disable"),
            "postgresql://u:***@h/db?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn a_bad_uri_names_the_key_and_hides_the_password() {
        let e = connect(
            "postgres://u:hunter2@127.0.0.1:1/x?connect_timeout=1",
            1,
            "timerStore",
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("timerStore"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = connect("postgres://u:hunter2@h/x?bogus=1", 1, "timerStore")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
