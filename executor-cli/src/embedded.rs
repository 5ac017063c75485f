//! The reference API running inside `sdx` (demo, run, serve), dispatching to a router
//! over the requested backends, with a job-tools directory whose `launch` is this binary.
//!
//! | | state directory | builds kept in | timers | owner of builds | ids |
//! |---|---|---|---|---|---|
//! | `demo` | temporary | memory | memory | `serve` | 1, 2, ... |
//! | `run` | the configured one | `run.db` there | memory | `run:<pid>:<start>` | time-based, see [`run_id`] |
//! | `serve` | the configured one | `api.db` there (`--store`) | `timers.db` there | `serve` | the store's sequence |
//! | `serve --store postgres://…` | the configured one (may be shared by instances on one host) | PostgreSQL | the same database | `serve` (leases per instance) | the database's sequence |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use executor_api::{ApiConfig, ApiServer, ApiState, Shutdown, StoreUri};
use executor_process::ProcessExecutor;

use crate::backends::{self, JobTools, ProcessOverrides, Timers};
use crate::config::FileConfig;
use crate::error::{CliError, CliResult};

/// How long shutdown waits for builds to be stopped (`--cancel-on-exit`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Which command runs the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `sdx demo`: everything temporary.
    Demo,
    /// `sdx run`: its own store and label prefix in the configured state directory.
    Run,
    /// `sdx serve`: the durable store (this URI, default `api.db` in the state directory).
    Serve(Option<String>),
}

/// A running embedded API and what it needs to live.
#[derive(Debug)]
pub struct Embedded {
    /// The server.
    pub server: ApiServer,
    /// The backends, the default first.
    pub backends: Vec<String>,
    mode: Mode,
    _tools: JobTools,
    _state: Option<tempfile::TempDir>,
}

/// How to start the embedded API.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Which command runs it.
    pub mode: Mode,
    /// The API's options.
    pub api: ApiConfig,
}

/// Where `launch` of the process backend spools, for the API's adoption.
pub fn spool_locator(process: &ProcessExecutor) -> executor_api::SpoolLocator {
    let p = process.clone();
    Arc::new(move |id| Some(p.spool_path(id)))
}

/// An id for a build of `sdx run`: milliseconds since the epoch times 256 plus a random
/// byte (about 2^48.6 today, below 2^53 for centuries). Ids of later runs are larger, and
/// two runs sharing a Docker daemon or namespace from different state directories pick
/// the same one only when they start in the same millisecond and draw the same byte (a
/// start with a live id is then refused, never destructive).
pub fn run_id() -> u64 {
    let ms = chrono::Utc::now().timestamp_millis().max(1) as u64;
    ms * 256 + u64::from(rand_byte())
}

fn rand_byte() -> u8 {
    // The sub-second clock is random enough for a tie-breaker, and needs no RNG crate.
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id())
    .to_le_bytes()[0]
}

impl Embedded {
    /// Builds the backends and starts the API; a serve adopts the builds a previous one
    /// left in its store.
    pub async fn start(
        file: &FileConfig,
        names: &[String],
        opts: EmbeddedOptions,
    ) -> CliResult<Self> {
        let temp = if opts.mode == Mode::Demo {
            Some(
                tempfile::Builder::new()
                    .prefix("sdx-state-")
                    .tempdir()
                    .map_err(|e| {
                        CliError::failure(format!("cannot create a state directory: {e}"))
                    })?,
            )
        } else {
            None
        };
        let state_dir = match &temp {
            Some(t) => t.path().to_path_buf(),
            None => backends::state_dir(file)?,
        };
        let tools = match opts.mode {
            Mode::Demo => JobTools::create()?,
            _ => JobTools::in_dir(&state_dir.join("job-tools"))?,
        };
        let store = match &opts.mode {
            Mode::Demo => StoreUri::Memory,
            Mode::Run => StoreUri::Sqlite(state_dir.join("run.db")),
            Mode::Serve(explicit) => serve_store(explicit.as_deref(), &opts.api, &state_dir)?,
        };
        let overrides = ProcessOverrides {
            job_tools: Some(tools.path().to_path_buf()),
            state_dir: temp.as_ref().map(|s| s.path().to_path_buf()),
            run_prefix: opts.mode == Mode::Run,
            // A serve's builds outlive its process: the next serve on the same store (or
            // another instance sharing it) adopts them. Labelled with the process, they
            // would be orphans the moment it died: `Lost` to the adopter and removed by
            // any gc or shutdown cleanup. `demo` and `run` own their builds themselves.
            owner: matches!(opts.mode, Mode::Serve(_))
                .then(|| executor_base::Owner::deployment("serve", &store.identity())),
        };
        let timers = match (&opts.mode, &store) {
            (Mode::Serve(_), StoreUri::Postgres(uri)) => Timers::Postgres(uri.clone()),
            (Mode::Serve(_), _) => Timers::Sqlite(state_dir.join("timers.db")),
            _ => Timers::Memory,
        };
        let routed = backends::router(names, file, &overrides, timers).await?;
        let mut builder = ApiState::builder(routed.executor, opts.api.clone());
        builder = builder.store(store.open().await.map_err(CliError::from)?);
        if opts.mode == Mode::Run {
            builder = builder.owner(executor_api::adopt::run_owner());
        }
        if let Some(p) = &routed.process {
            builder = builder.spool(spool_locator(p));
        }
        let server = ApiServer::start_with(builder, opts.listen)
            .await
            .map_err(|e| CliError::from(e).context("reference API"))?;
        if store.is_shared() {
            // Timeouts go through the API: recorded by whichever instance claims the
            // deadline, carried out by the one holding the build's lease.
            routed.timers.set_handler(server.state().expiry_handler());
        }
        Ok(Self {
            server,
            backends: names.to_vec(),
            mode: opts.mode,
            _tools: tools,
            _state: temp,
        })
    }

    /// The backends as shown to people (`process`, or `process (+docker)`).
    pub fn label(&self) -> String {
        match self.backends.split_first() {
            Some((first, [])) => first.clone(),
            Some((first, rest)) => format!("{first} (+{})", rest.join(", ")),
            None => backends::PROCESS.into(),
        }
    }

    /// Stops the server. `sdx serve` leaves open builds running (they are adopted by the
    /// next start) unless `cancel` asks for the old behaviour, and collects expired
    /// resources; `demo` and `run` touch nothing but their own build, which is over.
    pub async fn shutdown(self, cancel: bool) {
        let mode = if cancel {
            Shutdown::CancelOpen
        } else {
            Shutdown::LeaveRunning
        };
        let cleanup = matches!(self.mode, Mode::Serve(_));
        self.server
            .shutdown_with(mode, SHUTDOWN_GRACE, cleanup)
            .await;
    }
}

/// The build store of `sdx serve`: `--store`, else `[api] buildStore`, else `api.db` in
/// the state directory.
pub fn serve_store(
    explicit: Option<&str>,
    api: &ApiConfig,
    state_dir: &Path,
) -> CliResult<StoreUri> {
    match explicit.or(api.build_store.as_deref()) {
        Some(uri) => StoreUri::parse(uri).map_err(CliError::from),
        None => Ok(StoreUri::Sqlite(state_dir.join("api.db"))),
    }
}

/// The API options: the config file's `[api]` section, `EXECUTOR_API_*` variables and
/// `--opt api.<key>=<value>` flags over the defaults.
pub fn api_config(file: &FileConfig) -> CliResult<ApiConfig> {
    file.config::<ApiConfig>()
}

/// Whether `path` holds the database of a state directory's `sdx run` builds.
pub fn run_store(state_dir: &Path) -> Option<PathBuf> {
    let p = state_dir.join("run.db");
    p.exists().then_some(p)
}
