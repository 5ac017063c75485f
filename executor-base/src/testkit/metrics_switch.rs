//! A recorder that can be switched on and off while installed, for benchmarks that
//! compare "metrics recorded" with "no recorder" in one process (the facade's global
//! recorder can be installed only once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// A Prometheus recorder configured as `sdx serve --metrics` configures its own (buckets
/// [`crate::metrics::SECONDS_BUCKETS`] for every `_seconds` histogram, and a thread
/// running the exporter's upkeep every [`crate::metrics::UPKEEP_EVERY`]), switched off
/// at first: what a benchmark of the metrics' cost records into. Install the recorder
/// with [`metrics::set_global_recorder`]; the handle renders what it recorded.
pub fn serve_like_recorder() -> (
    SwitchedRecorder<PrometheusRecorder>,
    Arc<AtomicBool>,
    PrometheusHandle,
) {
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            crate::metrics::SECONDS_BUCKETS,
        )
        .expect("the buckets are not empty")
        .build_recorder();
    let handle = prometheus.handle();
    std::thread::spawn({
        let handle = handle.clone();
        move || {
            loop {
                std::thread::sleep(crate::metrics::UPKEEP_EVERY);
                handle.run_upkeep();
            }
        }
    });
    let (recorder, on) = SwitchedRecorder::new(prometheus);
    (recorder, on, handle)
}

/// Forwards to `inner` while on; while off, hands out no-op handles, as the facade does
/// when no recorder is installed.
#[derive(Debug)]
pub struct SwitchedRecorder<R> {
    inner: R,
    on: Arc<AtomicBool>,
}

impl<R> SwitchedRecorder<R> {
    /// `inner`, off at first; the returned flag switches it.
    pub fn new(inner: R) -> (Self, Arc<AtomicBool>) {
        let on = Arc::new(AtomicBool::new(false));
        (
            Self {
                inner,
                on: on.clone(),
            },
            on,
        )
    }

    fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
}

impl<R: Recorder> Recorder for SwitchedRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if self.on() {
            self.inner.register_counter(key, metadata)
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if self.on() {
            self.inner.register_gauge(key, metadata)
        } else {
            Gauge::noop()
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if self.on() {
            self.inner.register_histogram(key, metadata)
        } else {
            Histogram::noop()
        }
    }
}
