//! Where the API keeps builds, steps, log lines, the id sequence and its signing key:
//! the [`BuildStore`] trait, the durable [`SqliteBuildStore`] (the default of `sdx serve`
//! and `sdx run`, one file in the state directory) and [`MemoryBuildStore`] (tests, the
//! demo, and servers that want nothing on disk).
//!
//! The trait is what a shared database adds to (issue #15 asks for PostgreSQL): every
//! method is async, ids come from the store's own sequence (never reused, even when the
//! insert that took one never happens), and [`BuildStore::update`] is a conditional write
//! (applied only when the stored version is the one the caller read), so two writers, or
//! a writer holding a stale copy, can never overwrite each other unnoticed. SQL lives in
//! `sqlite.rs` and `postgres.rs` only.
//!
//! [`PostgresBuildStore`] is shared by several API instances: there each live build has a
//! [`Lease`] (holder, expiry, fencing token) and the writes an instance derives from the
//! engine go through [`BuildStore::update_fenced`]. See [`crate::lease`].

mod memory;
mod postgres;
mod sqlite;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use executor_base::{ApiBuildStatus, BuildId, Error, ErrorKind};

use crate::model::{BuildRecord, LogLine};

pub use memory::MemoryBuildStore;
pub use postgres::{MIGRATIONS as POSTGRES_MIGRATIONS, PostgresBuildStore};
pub use sqlite::SqliteBuildStore;

/// The right of one API instance to drive one build (engine actions and the writes
/// derived from them), with the fencing token of that ownership. The token grows every
/// time the lease changes hands, so a write or action carrying an older one is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The build.
    pub build_id: BuildId,
    /// The instance holding it.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
}

/// What a fenced write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedWrite {
    /// Written.
    Done,
    /// Someone else wrote first (the version changed): read again and retry.
    Conflict,
    /// The lease is no longer the caller's (another instance took it): stop acting.
    Fenced,
}

/// Persistence of the API's builds.
///
/// # Behaviour every store guarantees (checked by `tests/store.rs` against both stores)
///
/// * [`BuildStore::next_id`] returns ids that were never returned or inserted before,
///   increasing, across restarts; [`BuildStore::insert`] of a client-chosen id moves the
///   sequence past it.
/// * [`BuildStore::insert`] of an id that exists is [`ErrorKind::AlreadyExists`] and
///   changes nothing.
/// * [`BuildStore::update`] writes the build (status, message, meta, times, `settled`,
///   step times and codes) only when the stored `version` equals `build.version`, then
///   stores `version + 1`; otherwise it returns `Ok(false)` and changes nothing. It never
///   changes a step's line count (that is [`BuildStore::append_logs`]'s).
/// * [`BuildStore::append_logs`] keeps lines numbered at or above the step's next line
///   number (a retried post is not stored twice) and returns those it accepted.
#[async_trait]
pub trait BuildStore: Debug + Send + Sync {
    /// Where the store is, for messages (`sqlite:/var/lib/sdx/api.db`, `memory:`).
    fn uri(&self) -> String;

    /// Takes the next id of the sequence.
    async fn next_id(&self) -> Result<BuildId, Error>;

    /// Stores a new build (with its steps, no log lines).
    async fn insert(&self, build: &BuildRecord) -> Result<(), Error>;

    /// The build `id`, with its steps (`next_line` filled in), if it exists.
    async fn get(&self, id: u64) -> Result<Option<BuildRecord>, Error>;

    /// Every build's id and status, by id.
    async fn list(&self) -> Result<Vec<(BuildId, ApiBuildStatus)>, Error>;

    /// Every build that is not final, or final but not settled (the work of an adoption).
    async fn unsettled(&self) -> Result<Vec<BuildRecord>, Error>;

    /// Conditional write; see the trait docs. `Ok(false)`: someone else wrote first, or
    /// the build does not exist.
    async fn update(&self, build: &BuildRecord) -> Result<bool, Error>;

    /// Appends lines to a step; returns the accepted ones, `None` when the build or the
    /// step does not exist.
    async fn append_logs(
        &self,
        id: u64,
        step: &str,
        lines: &[LogLine],
    ) -> Result<Option<Vec<LogLine>>, Error>;

    /// Up to `limit` lines of a step numbered `from` and above; `None` when the build or
    /// the step does not exist.
    async fn logs(
        &self,
        id: u64,
        step: &str,
        from: u64,
        limit: usize,
    ) -> Result<Option<Vec<LogLine>>, Error>;

    /// The stored value of secret `name`; stores `candidate` first when there is none
    /// (so every instance and every restart agrees on, e.g., the signing key).
    async fn secret(&self, name: &str, candidate: &str) -> Result<String, Error>;

    /// Whether several API instances may share this store. Then each live build is
    /// driven by the holder of its [`Lease`]; the defaults below are those of a store one
    /// process uses alone (every lease is granted, nothing is ever fenced).
    fn shared(&self) -> bool {
        false
    }

    /// Stores a new build leased to `holder` for `ttl`. Default: [`BuildStore::insert`].
    async fn insert_leased(
        &self,
        build: &BuildRecord,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, Error> {
        let _ = ttl;
        self.insert(build).await?;
        Ok(Lease {
            build_id: build.id,
            holder: holder.into(),
            token: 1,
        })
    }

    /// Takes (or keeps) the lease of build `id` for `holder` for `ttl` when it is free,
    /// expired, or `holder`'s already; `None` when another holder's lease is live (or
    /// the build does not exist). A lease changing hands gets a larger token.
    async fn acquire(
        &self,
        id: BuildId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let _ = ttl;
        Ok(Some(Lease {
            build_id: id,
            holder: holder.into(),
            token: 1,
        }))
    }

    /// Extends every lease `holder` still has by `ttl`, in one statement; returns them.
    async fn renew(&self, holder: &str, ttl: Duration) -> Result<Vec<Lease>, Error> {
        let _ = (holder, ttl);
        Ok(Vec::new())
    }

    /// Whether `lease` is still live and current: the check made right before an engine
    /// action (start, stop, a timeout's kill).
    async fn check(&self, lease: &Lease) -> Result<bool, Error> {
        let _ = lease;
        Ok(true)
    }

    /// Gives the lease up (the build is settled, or the instance shuts down): another
    /// instance may take it at once.
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let _ = lease;
        Ok(())
    }

    /// Unsettled builds whose lease is free or expired: the work of an adoption.
    async fn adoptable(&self) -> Result<Vec<BuildRecord>, Error> {
        self.unsettled().await
    }

    /// [`BuildStore::update`] that is also refused ([`FencedWrite::Fenced`]) unless
    /// `lease` is the build's current lease (same holder and token).
    async fn update_fenced(
        &self,
        build: &BuildRecord,
        lease: &Lease,
    ) -> Result<FencedWrite, Error> {
        let _ = lease;
        Ok(if self.update(build).await? {
            FencedWrite::Done
        } else {
            FencedWrite::Conflict
        })
    }
}

/// Which store to open, from `buildStore` / `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// In memory (`memory:`): gone with the process.
    Memory,
    /// An SQLite file (`sqlite:/path/api.db`, `sqlite:///path/api.db`, or a plain path).
    Sqlite(PathBuf),
    /// A PostgreSQL database several API instances share
    /// (`postgres://user@host:port/db`, `postgresql://...`).
    Postgres(String),
}

impl StoreUri {
    /// Parses `memory:`, `sqlite:PATH`, `sqlite://PATH`, `postgres://...` or a path; the
    /// error names `buildStore` (and never a password).
    ///
    /// ```
    /// use executor_api::store::StoreUri;
    /// assert_eq!(StoreUri::parse("memory:").unwrap(), StoreUri::Memory);
    /// assert_eq!(StoreUri::parse("sqlite:///var/lib/sdx/api.db").unwrap(),
    ///            StoreUri::Sqlite("/var/lib/sdx/api.db".into()));
    /// assert_eq!(StoreUri::parse("./api.db").unwrap(), StoreUri::Sqlite("./api.db".into()));
    /// assert!(matches!(StoreUri::parse("postgres://db/sdx").unwrap(), StoreUri::Postgres(_)));
    /// assert!(StoreUri::parse("mysql://db/sdx").unwrap_err().to_string().contains("buildStore"));
    /// ```
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let bad = |why: String| {
            Error::new(ErrorKind::ConfigInvalid, format!("buildStore: {why}"))
                .with_context("key", "buildStore")
        };
        if s.is_empty() {
            return Err(bad("must not be empty".into()));
        }
        if s == "memory:" || s == "memory" {
            return Ok(StoreUri::Memory);
        }
        if let Some(rest) = s.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("sqlite: needs a file path".into()));
            }
            return Ok(StoreUri::Sqlite(PathBuf::from(path)));
        }
        if executor_base::pg::is_postgres_uri(s) {
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| bad(format!("{}: {e}", executor_base::pg::redact(s))))?;
            return Ok(StoreUri::Postgres(s.to_string()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(bad(format!(
                "unsupported store {scheme:?}: use sqlite:PATH, postgres://... or memory:"
            )));
        }
        Ok(StoreUri::Sqlite(PathBuf::from(s)))
    }

    /// Opens the store.
    pub async fn open(&self) -> Result<Arc<dyn BuildStore>, Error> {
        Ok(match self {
            StoreUri::Memory => Arc::new(MemoryBuildStore::new()),
            StoreUri::Sqlite(p) => Arc::new(SqliteBuildStore::open(p).await?),
            StoreUri::Postgres(uri) => Arc::new(PostgresBuildStore::connect(uri).await?),
        })
    }

    /// Whether several instances may share the store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreUri::Postgres(_))
    }

    /// What tells this store from another, the same from every process that uses it:
    /// the absolute path of an SQLite file, the address of a PostgreSQL database
    /// (password redacted), `memory:` (never shared). Names a deployment's engine
    /// resources ([`executor_base::Owner::deployment`]).
    ///
    /// ```
    /// use executor_api::store::StoreUri;
    /// let a = StoreUri::parse("postgres://sdx:secret@db:5432/sdx").unwrap();
    /// assert!(!a.identity().contains("secret"));
    /// assert_eq!(StoreUri::parse("sqlite:///var/x.db").unwrap().identity(), "sqlite:/var/x.db");
    /// ```
    pub fn identity(&self) -> String {
        match self {
            StoreUri::Memory => "memory:".into(),
            StoreUri::Sqlite(p) => {
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                format!("sqlite:{}", abs.display())
            }
            StoreUri::Postgres(uri) => executor_base::pg::redact(uri),
        }
    }
}

/// The error of a store that cannot be used.
pub(crate) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("build store: {what}")).with_executor("api")
}
