//! The reference API running inside `sdx` (demo, run, serve), dispatching to a router
//! over the requested backends, with a job-tools directory whose `launch` is this binary.

use std::net::SocketAddr;
use std::time::Duration;

use executor_api::{ApiConfig, ApiServer};

use crate::backends::{self, JobTools, ProcessOverrides};
use crate::config::FileConfig;
use crate::error::{CliError, CliResult};

/// How long shutdown waits for builds to be stopped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A running embedded API and what it needs to live.
#[derive(Debug)]
pub struct Embedded {
    /// The server.
    pub server: ApiServer,
    /// The backends, the default first.
    pub backends: Vec<String>,
    _tools: JobTools,
    _state: Option<tempfile::TempDir>,
}

/// How to start the embedded API.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Keep the process backend's state in a temporary directory removed at the end.
    pub ephemeral_state: bool,
    /// The API's options.
    pub api: ApiConfig,
}

impl Embedded {
    /// Builds the backends and starts the API.
    pub async fn start(
        file: &FileConfig,
        names: &[String],
        opts: EmbeddedOptions,
    ) -> CliResult<Self> {
        let tools = JobTools::create()?;
        let state = if opts.ephemeral_state {
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
        let overrides = ProcessOverrides {
            job_tools: Some(tools.path().to_path_buf()),
            state_dir: state.as_ref().map(|s| s.path().to_path_buf()),
            stop_grace: Some(Duration::from_secs(5)),
        };
        let executor = backends::router(names, file, &overrides).await?;
        let server = ApiServer::start(executor, opts.api, opts.listen)
            .await
            .map_err(|e| CliError::from(e).context("reference API"))?;
        Ok(Self {
            server,
            backends: names.to_vec(),
            _tools: tools,
            _state: state,
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

    /// Aborts what still runs, stops the server and removes the temporary directories.
    pub async fn shutdown(self) {
        self.server.shutdown(SHUTDOWN_GRACE).await;
    }
}

/// The API options: the config file's `[api]` section, else defaults.
pub fn api_config(file: &FileConfig) -> CliResult<ApiConfig> {
    Ok(file.section::<ApiConfig>("api")?.unwrap_or_default())
}
