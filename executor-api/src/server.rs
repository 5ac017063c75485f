//! Serving the API on a TCP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use executor_base::{Error, ErrorKind, Executor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ApiConfig;
use crate::routes::router;
use crate::state::{ApiState, ApiStateBuilder, Shutdown};

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    url: String,
    addr: SocketAddr,
    state: ApiState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    /// Binds `addr` (port 0 picks a free port), and serves the API dispatching to
    /// `executor`, with the store of `config.build_store` (default: in memory). `apiUri`
    /// given to builds is `config.public_uri`, or `http://<bound address>`. Builds of a
    /// previous server on the same store are adopted (see [`crate::adopt`]).
    pub async fn start(
        executor: Arc<dyn Executor>,
        config: ApiConfig,
        addr: SocketAddr,
    ) -> Result<Self, Error> {
        Self::start_with(ApiState::builder(executor, config), addr).await
    }

    /// [`ApiServer::start`] with a configured state builder (store, owner, spool).
    pub async fn start_with(builder: ApiStateBuilder, addr: SocketAddr) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("cannot listen on {addr}: {e}"),
            )
            .with_context("key", "listen")
        })?;
        let bound = listener.local_addr().map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("cannot read the bound address: {e}"),
            )
        })?;
        let builder = builder.default_public_uri(format!("http://{bound}"));
        let state = builder.build().await?;
        let url = state.api_uri().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let adopted = state.adopt_own().await?;
        if !adopted.is_empty() {
            tracing::info!(builds = adopted.len(), store = %state.store().uri(), "adopted the builds of a previous server");
        }
        Ok(Self {
            url,
            addr: bound,
            state,
            stop: Some(stop),
            task,
        })
    }

    /// The API's URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (submit builds, subscribe to events, the admin token).
    pub fn state(&self) -> &ApiState {
        &self.state
    }

    /// Stops accepting connections and builds, finishes the requests in flight, shuts
    /// the state down (see [`ApiState::shutdown`]: open builds keep running unless `mode`
    /// is [`Shutdown::CancelOpen`]; `grace` bounds the waits), then calls the executor's
    /// `cleanup` (which never stops a live build).
    pub async fn shutdown(self, mode: Shutdown, grace: Duration) {
        self.shutdown_with(mode, grace, true).await;
    }

    /// [`ApiServer::shutdown`], calling the executor's `cleanup` only if `cleanup` (a
    /// one-build command such as `sdx run` collects nothing but its own build).
    pub async fn shutdown_with(mut self, mode: Shutdown, grace: Duration, cleanup: bool) {
        if mode == Shutdown::CancelOpen {
            // Keep serving launch's reports while open builds are aborted.
            self.state.shutdown(mode, grace).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
        if mode == Shutdown::LeaveRunning {
            self.state.shutdown(mode, grace).await;
        }
        if cleanup && let Err(e) = self.state.executor().cleanup().await {
            tracing::warn!(error = %e, "executor cleanup failed");
        }
    }

    /// Serves until the server fails (or is shut down from another task).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("the API server failed: {e}"),
            )),
            Err(e) => Err(Error::new(
                ErrorKind::Unexpected,
                format!("the API server task failed: {e}"),
            )),
        }
    }
}
