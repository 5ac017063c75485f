//! Serving the API on a TCP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use executor_base::{Error, ErrorKind, Executor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ApiConfig;
use crate::routes::router;
use crate::state::ApiState;

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
    /// `executor`. `apiUri` given to builds is `config.public_uri`, or
    /// `http://<bound address>`.
    pub async fn start(
        executor: Arc<dyn Executor>,
        mut config: ApiConfig,
        addr: SocketAddr,
    ) -> Result<Self, Error> {
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
        let url = config
            .public_uri
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        config.public_uri = Some(url.clone());
        let state = ApiState::new(executor, config)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
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

    /// Aborts open builds, waits up to `grace` for their stops, cleans the executor up
    /// and stops serving.
    pub async fn shutdown(mut self, grace: Duration) {
        self.state.shutdown(grace).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
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
