//! The reference Screwdriver-style API of sdx.
//!
//! Everything `launch` and the executors need from an API server, and a module-build-style
//! submission interface (`POST` a build → 201 with its id, `GET` one build → its state and
//! steps, `GET` the list), dispatching each build through any [`executor_base::Executor`]
//! (normally `executor_base::router::Router`). `sdx serve`, `sdx demo` and the end-to-end
//! tests of the backends run it. See [`routes`] for the endpoints.
//!
//! What it does like Screwdriver's API (its builds and tokens endpoints):
//! * a temporary JWT (scope `temporal`, `username` = build id, 12 h) is minted per build
//!   as the start config's `token`; `POST /v4/builds/{id}/token` exchanges it once, while
//!   the build is QUEUED or BLOCKED, for a build token living `buildTimeout` minutes;
//! * `launch`'s `PUT /v4/builds/{id}` RUNNING calls `start_timer`; a final status (SUCCESS,
//!   FAILURE, ABORTED, COLLAPSED, UNSTABLE) ends the build on the executor and calls
//!   `stop_timer`;
//! * a failed `start` fails the build with "Failed to start build by executor error".
//!
//! Where it differs: tokens are signed with ES256 (not RS256), from a P-256 key generated
//! once and kept in the build store unless configured, published at `GET /v4/auth/key`;
//! UNSTABLE is final; a watcher records the engine's outcome for a build whose engine
//! says it ended while `launch` never reported; a final status `launch` reported lets the
//! build end on its own before anything is stopped (see `dispatch`).
//!
//! # Restarts
//!
//! Builds, steps, log lines, the id sequence and the signing key live in a
//! [`store::BuildStore`]: [`store::SqliteBuildStore`] (one file; `sdx serve` and `sdx run`
//! use `api.db` in the state directory) or [`store::MemoryBuildStore`] (the library's
//! default). Ids come from the store's sequence and are never reused. A server that starts
//! on a store adopts the builds a previous one left (see [`adopt`]): it reads each build's
//! status from the executor, starts what never reached it, replays what `launch` spooled
//! while the API was down, records the true outcome of builds that ended meanwhile, and
//! watches the rest. [`ApiState::shutdown`] leaves builds running by default.
//!
//! # Several instances
//!
//! With [`store::PostgresBuildStore`] several API instances share the builds: each
//! unsettled build is driven by the instance holding its lease, writes derived from the
//! engine are fenced by the lease's token, and the others adopt the builds of one that
//! dies; see [`lease`].
//!
//! # Input
//!
//! Every body is checked field by field: unknown fields are 422 naming the field and the
//! closest known one; ids are integers from 1 to 2^53 (422 otherwise, in bodies and
//! paths); a build's `environment` may not set `SD_*` variables; every error, 413 and the
//! framework's own included, is JSON (see [`routes`]). `tests/input_props.rs` checks
//! these with property tests.
//!
//! ```
//! # async fn demo() -> Result<(), executor_base::Error> {
//! use std::sync::Arc;
//! use executor_api::{ApiConfig, ApiServer};
//! use executor_base::testkit::fake::FakeExecutor;
//! let server = ApiServer::start(Arc::new(FakeExecutor::new()), ApiConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! let mut events = server.state().subscribe();
//! println!("API at {}", server.url());
//! # Ok(()) }
//! ```
//!
//! # Dependencies and why
//!
//! * `axum` (0.8): a well-kept HTTP server on `tokio`/`hyper`, with typed extractors and
//!   `Router::oneshot` testing through `tower`.
//! * `jsonwebtoken`: signs and verifies the JWTs, over `ring` (the workspace's one crypto
//!   library, see `executor_base::tls`), which also generates the P-256 key.
//! * `tokio::sync::broadcast`: the event stream subscribers follow builds with.
//! * `parking_lot`: the in-memory store's locks (never held across an `.await`).
//! * `rusqlite` (bundled SQLite): the durable store. It is the workspace's one SQLite
//!   library (the timer store uses it as well); `sqlx`'s SQLite driver pins a different
//!   `libsqlite3-sys` and only one may link, and the store needs no more than one
//!   connection on a dedicated thread (`executor_base::db_thread::DbThread`).
//! * `tokio-postgres` + `deadpool-postgres`: the shared [`store::PostgresBuildStore`]
//!   (several instances; see [`lease`]). `sqlx` was the first choice, but its releases pin
//!   `libsqlite3-sys` through their optional SQLite driver and Cargo refuses two
//!   `sqlite3` links even with that driver off, so it cannot sit beside `rusqlite`; see
//!   `executor_base::pg`.
//! * `sd-launch`: the spool format `launch` writes and the API replays (one definition).

pub mod adopt;
pub mod auth;
pub mod config;
mod dispatch;
pub mod error;
pub mod events;
pub mod faults;
pub mod fields;
pub mod keys;
pub mod lease;
pub mod model;
mod ops;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;

pub use adopt::Adoption;
pub use config::ApiConfig;
pub use error::HttpError;
pub use events::BuildEvent;
pub use keys::{Claims, TokenIssuer};
pub use model::{BuildRecord, LogLine, NewBuild, StepRecord};
pub use routes::router;
pub use server::ApiServer;
pub use state::{ApiState, ApiStateBuilder, OWNER_SERVE, Shutdown, SpoolLocator};
pub use store::{
    BuildStore, FencedWrite, Lease, MemoryBuildStore, PostgresBuildStore, SqliteBuildStore,
    StoreUri,
};
