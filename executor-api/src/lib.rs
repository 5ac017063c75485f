//! The reference Screwdriver-style API of sdx.
//!
//! Everything `launch` and the executors need from an API server, and a module-build-style
//! submission interface (`POST` a build → 201 with its id, `GET` one build → its state and
//! steps, `GET` the list), dispatching each build through any [`executor_base::Executor`]
//! (normally `executor_base::router::Router`). `sdx serve`, `sdx demo` and the end-to-end
//! tests of the backends run it. See [`routes`] for the endpoints.
//!
//! What it does like Screwdriver's API (`../shared/screwdriver.md` §9):
//! * a temporary JWT (scope `temporal`, `username` = build id, 12 h) is minted per build
//!   as the start config's `token`; `POST /v4/builds/{id}/token` exchanges it once, while
//!   the build is QUEUED or BLOCKED, for a build token living `buildTimeout` minutes;
//! * `launch`'s `PUT /v4/builds/{id}` RUNNING calls `start_timer`; a final status (SUCCESS,
//!   FAILURE, ABORTED, COLLAPSED, UNSTABLE) calls `stop` then `stop_timer`;
//! * a failed `start` fails the build with "Failed to start build by executor error".
//!
//! Where it differs: tokens are signed with ES256 (not RS256), from a P-256 key generated
//! at start unless configured, published at `GET /v4/auth/key`; UNSTABLE is final; a
//! watcher fails a build whose engine says it ended while `launch` never reported.
//!
//! Builds, steps and logs live in memory: this is a reference and test server, not a
//! production API.
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
//! * `jsonwebtoken`: signs and verifies the JWTs; `aws-lc-rs` (already its crypto
//!   provider) generates the P-256 key and encodes the public key.
//! * `tokio::sync::broadcast`: the event stream subscribers follow builds with.
//! * `parking_lot`: the in-memory store's locks (never held across an `.await`).

pub mod adopt;
pub mod auth;
pub mod config;
mod dispatch;
pub mod error;
pub mod events;
pub mod faults;
pub mod fields;
pub mod keys;
pub mod model;
mod ops;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;

pub use config::ApiConfig;
pub use error::HttpError;
pub use events::BuildEvent;
pub use keys::{Claims, TokenIssuer};
pub use model::{BuildRecord, LogLine, NewBuild, StepRecord};
pub use routes::router;
pub use adopt::Adoption;
pub use server::ApiServer;
pub use state::{ApiState, ApiStateBuilder, OWNER_SERVE, Shutdown, SpoolLocator};
pub use store::{BuildStore, MemoryBuildStore, SqliteBuildStore, StoreUri};
