//! The reference `launch` program of the sdx executors.
//!
//! Every backend runs the same unit of work: the job-tools directory (which holds `launch`)
//! mounted into the build's container, with `launch` as its entry point. This crate is
//! that program, in outline what Screwdriver's Go launcher does
//! (screwdriver-cd/launcher's `launch.go`):
//!
//! 1. read the token from `--token-file`, `SD_TOKEN_FILE` or `SD_TOKEN` (never from the
//!    argument list, where `ps` and `docker inspect` would show it);
//! 2. when the token's `scope` claim includes `temporal`, exchange it for a build token at
//!    `POST {api}/v4/builds/{id}/token` with `{"buildTimeout": timeout + 30}` (the payload
//!    is decoded without verification: the API verifies it);
//! 3. `PUT /v4/builds/{id}` `{"status": "RUNNING"}`, then `GET /v4/builds/{id}` for the
//!    steps;
//! 4. run each step with `/bin/sh -c <command>` (`--shell-bin`) in the workspace directory,
//!    in its own process group, posting its output in batches of lines to
//!    `POST /v4/builds/{id}/steps/{name}/logs` and its start and end to
//!    `PUT /v4/builds/{id}/steps/{name}` (`{"startTime"}`, then `{"endTime", "code"}`);
//! 5. at the build timeout, kill the running step's process group, log the timeout and end
//!    with exit code 3; after a failed step, skip the rest except teardown steps;
//! 6. `PUT /v4/builds/{id}` with `SUCCESS` or `FAILURE` (with a `statusMessage`).
//!
//! # When the API is unreachable
//!
//! Steps 2 and 3 wait for the API with backoff, up to `--api-retry-secs` (default 10
//! minutes). After that nothing waits for it: step starts and ends, output and the final
//! status go through one ordered [`report::Reporter`], which spools what it cannot deliver
//! to `--spool-file` (`SD_SPOOL_FILE`, a file in the build's state; see [`spool`]) and
//! keeps retrying; at the end it retries for up to `--api-retry-secs` and exits with the
//! build's own code either way. A restarted API reads what is left in the spool when it
//! adopts the build.
//!
//! # Aborts
//!
//! SIGTERM, SIGINT or SIGHUP abort the build: the running step's process group gets
//! SIGTERM, then SIGKILL after three quarters of the executor's stop grace
//! (`--stop-grace-ms`, `SD_STOP_GRACE_MS`, default 10 s), and the rest of the grace is
//! for reporting ABORTED before the executor's SIGKILL.
//!
//! # Command line
//!
//! ```text
//! launch --api-uri URL --store-uri URL --ui-uri URL --build-timeout MINUTES
//!        [--token-file PATH] [--workspace DIR] [--shell-bin PATH] [--stop-grace-ms MS]
//!        [--spool-file PATH] [--api-retry-secs SECS] [--only-fetch-token] BUILD_ID
//! ```
//!
//! `launch install DIR` copies job-tools (the directory holding `launch`) into `DIR`
//! without a shell: the Kubernetes init container of the `FROM scratch` sdx launcher
//! image runs it (see [`install`]).
//!
//! The last line `launch` writes is the launch handshake (see [`handshake`]); with
//! `SD_LAUNCH_RESULT_FILE` set it also writes that line to the named file.
//!
//! Exit codes: `0` the build succeeded, `1` a step failed (or the build was aborted by
//! SIGTERM/SIGINT/SIGHUP), `2` usage error or the build could not start, `3` the build
//! timed out. Unlike upstream's launcher (which always exits 0), the exit code tells the
//! executor the outcome, so a backend can classify a build even when the API is
//! unreachable; a final report that could not be delivered never changes it. The build's
//! `environment` cannot set `SD_*` variables (they are skipped with a message).
//!
//! # A static binary for `FROM scratch` images
//!
//! The crate has few dependencies and no C code and no TLS, so it links statically:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build -p sd-launch --release \
//!     --target x86_64-unknown-linux-gnu --target-dir target/static
//! # -> target/static/x86_64-unknown-linux-gnu/release/launch (statically linked)
//! ```
//!
//! The static binary never calls the name service for IP addresses, so an API URL such as
//! `http://127.0.0.1:8080` works in an image without `/etc/nsswitch.conf` or libc.
//!
//! # Dependencies and why
//!
//! * `ureq` (no TLS, `json`): a blocking HTTP/1.1 client without an async runtime, small
//!   and pure Rust, so the binary stays small and builds fast and statically.
//! * `serde_json`: the API's JSON bodies.
//! * `base64`: decoding the JWT payload to read its `scope` (no signature check is needed
//!   here, so no JWT or crypto crate).
//! * `nix` (`signal`, `process`): safe `killpg` for a step's process group and `sigwait`
//!   for SIGTERM, without `unsafe` code.

pub mod api;
pub mod args;
mod cli;
pub mod handshake;
pub mod install;
pub mod logs;
pub mod report;
pub mod run;
pub mod signals;
pub mod spool;
pub mod step;
pub mod timefmt;
pub mod token;

pub use api::{ApiClient, ApiError};
pub use args::{Args, USAGE};
pub use cli::main_with_args;
pub use run::{Launcher, Outcome};

pub(crate) use cli::say;
