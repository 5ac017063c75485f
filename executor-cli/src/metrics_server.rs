//! `sdx serve --metrics ADDR`: the library's metrics in Prometheus' text format at
//! `http://ADDR/metrics`.
//!
//! The recorder is `metrics-exporter-prometheus` (maintained with the `metrics` facade
//! the libraries record through), built without its own HTTP listener: axum, which the
//! reference API already uses, serves the page, so no second HTTP server stack is linked.
//! Histograms (every `_seconds` metric) are rendered as Prometheus histograms with
//! [`BUCKETS`], so `histogram_quantile()` and `_count` work across instances.

use std::net::SocketAddr;

use axum::http::header::CONTENT_TYPE;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

use crate::error::{CliError, CliResult};

/// Histogram buckets in seconds: from an engine call's milliseconds to a slow start's
/// minutes (image pulls, a busy cluster).
pub const BUCKETS: &[f64] = executor_base::metrics::SECONDS_BUCKETS;

/// Prometheus' text exposition format.
const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running `/metrics` endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// Installs the process-wide Prometheus recorder and serves it on `addr` (port 0:
    /// any free port; see [`MetricsServer::addr`]).
    pub async fn start(addr: SocketAddr) -> CliResult<Self> {
        let handle = install()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::failure(format!("--metrics {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::failure(format!("--metrics {addr}: {e}")))?;
        let render = handle.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = render.render();
                async move { ([(CONTENT_TYPE, CONTENT)], text) }
            }),
        );
        let serve = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("sdx serve: the metrics endpoint stopped: {e}");
            }
        });
        // Upkeep drains histogram samples into their buckets between scrapes, so memory
        // stays bounded however rarely Prometheus scrapes.
        let upkeep = tokio::spawn(async move {
            let mut every = tokio::time::interval(executor_base::metrics::UPKEEP_EVERY);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
        Ok(Self {
            addr,
            tasks: vec![serve, upkeep],
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Installs the recorder (once per process) with histogram buckets for every `_seconds`
/// metric, and registers the catalog's descriptions.
fn install() -> CliResult<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| CliError::failure(format!("--metrics: {e}")))?
        .install_recorder()
        .map_err(|e| CliError::failure(format!("--metrics: {e}")))?;
    executor_base::metrics::describe();
    Ok(handle)
}
