//! Metrics through the [`metrics`] facade: the library records, the application picks
//! the exporter (`sdx serve --metrics` installs a Prometheus one).
//!
//! Why the `metrics` crate: it is a facade in the way `log`/`tracing` are (a few
//! dependency-free kilobytes; recording without an installed recorder is a no-op), it is
//! what the Rust exporters for Prometheus, StatsD and OpenTelemetry plug into, and it lets
//! the library stay free of any exporter or global registry of its own.
//!
//! Every name and label set is declared once in [`catalog`] ([`CATALOG`]); the README's
//! metrics table is generated from it. Label values are bounded: backend names, operation
//! names from the code, call classes, phases, failure reasons, error kinds, namespaces
//! from the configuration; never build ids or image names.
//!
//! Where the library records:
//! - engine calls, retries and breaker transitions in [`crate::engine::EngineCalls`],
//!   which every backend's engine calls go through;
//! - builds (started, finished, in flight, start latency) and garbage collection in the
//!   [`crate::Router`], through a [`BuildMeter`];
//! - timers in the [`crate::TimerService`];
//! - the Kubernetes watch and Gearman jobs in flight in those backends, through
//!   [`record`].

mod builds;
pub mod catalog;
pub mod record;

pub use builds::BuildMeter;
pub use catalog::{CATALOG, MetricDef, MetricKind, describe};

/// Histogram buckets in seconds for every `_seconds` metric, from an engine call's
/// milliseconds to a slow start's minutes (image pulls, a busy cluster): what `sdx serve
/// --metrics` exports them with, and what the benchmarks of the metrics' cost record into.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How often `sdx serve --metrics` drains recorded histogram samples into their buckets
/// (the exporter's upkeep), so memory stays bounded however rarely Prometheus scrapes.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests;
