//! Runs Screwdriver builds on a Docker Engine.
//!
//! Per build (`<name>` = `<prefix><buildId>`), [`DockerExecutor::start`](executor_base::Executor::start):
//!
//! 1. with pull policy `always`, pulls the launcher (job-tools) image and the build image;
//!    with `missing` (default) an image is pulled only when the daemon reports it absent;
//!    with `never` an absent image fails the build (`ImagePull`). Pull progress goes to
//!    `tracing` (one line per layer status change);
//! 2. creates `<name>-init` from the launcher image (never started) with the named volume
//!    `<name>-tools` at the mount point (default `/opt/sd`) and, in token mode `file` only,
//!    `<name>-token` at `/run/sd`; the daemon creates the volumes (labelled) with the
//!    container and fills the empty tools volume with the launcher image's job-tools. In
//!    mode `file`, as soon as it exists, the token is written to the token volume through
//!    it (`PUT /containers/{id}/archive`);
//! 3. at the same time, creates `<name>-build` from the build's `container` with the
//!    volumes mounted **read-only** (and `NoCopy`, so only the launcher image fills the
//!    tools volume), CPU and memory limits from the `screwdriver.cd/cpu` / `ram` tiers
//!    (capped at the daemon's CPU count; no swap), labels, and the optional network mode
//!    (`none` also sets `NetworkDisabled`: the same isolation without a libnetwork sandbox,
//!    whose teardown can deadlock Docker 20.10 when many builds stop at once). In token
//!    mode `stdin` (default) it has an open, once-only stdin, and `start` attaches to it
//!    as soon as the container exists;
//! 4. starts `<name>-build` running
//!    `/opt/sd/launch --api-uri … --store-uri … --ui-uri … --build-timeout … --token-file /dev/stdin <buildId>`
//!    (`--token-file /run/sd/token` in mode `file`), then, in mode `stdin`, writes the token
//!    to the attached stdin and closes it.
//!
//! A failure at any step removes everything this start created (even when the `start`
//! future is dropped half-way), and every resource carries the `sdbuild`, build id, job id,
//! `screwdriver.cd/expires-at` and `screwdriver.cd/owner` labels, so
//! [`Executor::gc`](executor_base::Executor::gc) collects what a crashed process left
//! behind: at once when its owner (by default the process that created it, identified by
//! pid and start time; see [`executor_base::owner`]) is gone, else after the expiry. A
//! server that adopts its builds after a restart sets an instance owner
//! ([`DockerExecutorBuilder::with_owner`]).
//!
//! **Token.** In the default mode (`stdin`) the token is never in the container's config
//! (`docker inspect` of either container does not show it), never in a file or volume,
//! and costs no request on the start's critical path: the attach overlaps the launcher
//! container's creation, and the write follows the start. Mode `file` keeps it out of
//! `docker inspect` too, but on the daemon's disk for the build's life, and the archive
//! write (Docker re-executes itself to unpack it) adds ~30 ms to every start. Token mode `env` sets `SD_TOKEN` (visible
//! in `docker inspect`) for launchers that cannot read a file; launch mode `screwdriver`
//! speaks upstream's `launcher_entrypoint.sh` + `run.sh "<token>" …` contract, which puts the
//! token in the command line (visible in `ps` and `docker inspect`) and exists only for the
//! `screwdrivercd/launcher` image.
//!
//! **Logs.** No log line of this crate carries the token. bollard itself logs request
//! bodies and inspect answers at `debug` level (target `bollard`): in token modes `stdin`
//! and `file` they never contain the token (the file is uploaded as a streamed body, which
//! bollard does not log), but token mode `env` and launch mode `screwdriver` put the token
//! in the container's config, so **those two modes cannot keep it out of bollard's debug
//! lines**. Keep the `bollard` target at `info` with them (`sdx` always does).
//!
//! **Status** comes from the build container's state: created -> pending, running ->
//! running, exited 0 -> succeeded, exited n -> failed (`nonZeroExit`; 3 from the native
//! launcher -> timed out), `OOMKilled` -> failed (`outOfMemory`) whatever the exit code,
//! a failed pull -> failed (`imagePull`, naming the registry and the daemon's words), a
//! container removed behind our back -> `Lost` (never success), a container killed from
//! outside (exit 137/143 without `OOMKilled`: a daemon shutdown or restart, a `docker
//! kill`) -> `Lost` (infrastructure, retry-safe), a container whose owner is gone before
//! it ended -> `Lost` (orphaned), a daemon that cannot be reached -> a temporary
//! `Unavailable` error naming the socket or URL, within the retry budget (5 s by default),
//! also while a breaker is open (the breaker adds its state as context). `stop` kills the build container and removes both containers
//! and the volumes; it is idempotent.
//!
//! # Differences from upstream executor-docker
//! * pull policy (upstream always pulls); token out of `docker inspect` and off disk; no privileged
//!   container and no Docker socket bind mount; CPU/RAM limits from tiers (upstream: fixed
//!   2 GiB + swap); a real `status`; cleanup of half-created builds; GC by expiry label.
//! * job-tools travel in a per-build named volume rather than `VolumesFrom`, so the mount
//!   point is configurable, launcher images without a `VOLUME` work, and the volume is
//!   labelled for the GC.
//!
//! # Dependencies
//! * `bollard`: the maintained async Docker Engine API client (unix socket and HTTP),
//!   with API version negotiation down to the daemon's (Docker 20.10 speaks 1.41).
//! * `tar`: the archive format of Docker's build context and file-upload APIs (test
//!   images, token mode `file`).
//! * `executor-base`: the contract, retry/breaker (`EngineCalls`), labels, launch command.
//! * `tokio`, `futures`, `async-trait`, `parking_lot`, `chrono`, `secrecy`, `serde`: runtime,
//!   concurrency, time and config plumbing shared with the other backends.
//!
//! # Example
//! ```no_run
//! use executor_base::{Executor, StartConfig};
//! use executor_docker::DockerExecutorBuilder;
//! # async fn run() -> Result<(), executor_base::Error> {
//! let exec = DockerExecutorBuilder::from_env().with_network("host").build().await?;
//! let build = StartConfig::builder(42, "http://127.0.0.1:8080", "node:22", "temporary-jwt").build()?;
//! exec.start(&build).await?;
//! println!("{}", exec.status(&build.to_stop()).await?);
//! exec.stop(&build.to_stop()).await?;
//! # Ok(()) }
//! ```

mod builder;
mod classify;
mod client;
pub mod config;
mod error;
mod executor;
mod gc;
pub mod launcher_image;
mod plan;
mod preflight;
mod state;
mod stdin;
mod timings;
mod undo;

#[cfg(feature = "test-support")]
pub mod testing;

pub use builder::{DockerExecutorBuilder, env_var_name};
pub use config::{DockerConfig, PullPolicy, TokenMode};
pub use executor::{DockerExecutor, FaultHook, StartStep};

/// The executor's scheme (`--executor docker`).
pub const SCHEME: &str = "docker";
