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
//! `sqlite.rs` only.

mod memory;
mod sqlite;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use executor_base::{ApiBuildStatus, BuildId, Error, ErrorKind};

use crate::model::{BuildRecord, LogLine};

pub use memory::MemoryBuildStore;
pub use sqlite::SqliteBuildStore;

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
}

/// Which store to open, from `buildStore` / `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// In memory (`memory:`): gone with the process.
    Memory,
    /// An SQLite file (`sqlite:/path/api.db`, `sqlite:///path/api.db`, or a plain path).
    Sqlite(PathBuf),
}

impl StoreUri {
    /// Parses `memory:`, `sqlite:PATH`, `sqlite://PATH` or a path; the error names
    /// `buildStore`.
    ///
    /// ```
    /// use executor_api::store::StoreUri;
    /// assert_eq!(StoreUri::parse("memory:").unwrap(), StoreUri::Memory);
    /// assert_eq!(StoreUri::parse("sqlite:///var/lib/sdx/api.db").unwrap(),
    ///            StoreUri::Sqlite("/var/lib/sdx/api.db".into()));
    /// assert_eq!(StoreUri::parse("./api.db").unwrap(), StoreUri::Sqlite("./api.db".into()));
    /// assert!(StoreUri::parse("postgres://db/sdx").unwrap_err().to_string().contains("buildStore"));
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
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(bad(format!(
                "unsupported store {scheme:?}: use sqlite:PATH or memory: (a shared database is a planned follow-up)"
            )));
        }
        Ok(StoreUri::Sqlite(PathBuf::from(s)))
    }

    /// Opens the store.
    pub async fn open(&self) -> Result<Arc<dyn BuildStore>, Error> {
        Ok(match self {
            StoreUri::Memory => Arc::new(MemoryBuildStore::new()),
            StoreUri::Sqlite(p) => Arc::new(SqliteBuildStore::open(p).await?),
        })
    }
}

/// The error of a store that cannot be used.
pub(crate) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("build store: {what}")).with_executor("api")
}
