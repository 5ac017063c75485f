//! OpenTelemetry export of the `tracing` spans (feature `otlp`, off by default).
//!
//! When `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as given) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) is set, every span at level info
//! and above, such as the router's `build{op, build_id, backend}` around each start and
//! stop, goes to that endpoint as OTLP over HTTP with protobuf bodies, in batches from
//! the SDK's own thread. The exporter reads the other standard variables too
//! (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`); `OTEL_SERVICE_NAME` names the service
//! (default `sdx`). Unset, nothing is exported and no exporter is built.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::registry::LookupSpan;

/// The variables that turn the export on, the per-signal one first.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Flushes the spans still batched and stops the exporter when dropped; drop it outside
/// the async runtime (the exporter's HTTP client is a blocking one).
pub struct Guard(SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("sdx: OTLP export: could not flush the last spans: {e}");
        }
    }
}

/// The layer that exports spans, and the guard that flushes them at exit; `None` when no
/// endpoint is configured. A bad endpoint is an error naming the variable.
pub fn layer<S>() -> Result<Option<(impl Layer<S>, Guard)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(var) = ENDPOINT_VARS
        .iter()
        .find(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    else {
        return Ok(None);
    };
    // The exporter would take any string; say which variable is wrong and why.
    let value = std::env::var(var).map_err(|_| format!("{var}: not valid UTF-8"))?;
    match reqwest::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return Err(format!("{var}: must be an http(s) URL, got {value:?}")),
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTLP export ({var}): {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sdx".to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("sdx");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    Ok(Some((layer, Guard(provider))))
}
