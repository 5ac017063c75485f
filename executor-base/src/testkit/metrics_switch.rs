//! A recorder that can be switched on and off while installed, for benchmarks that
//! compare "metrics recorded" with "no recorder" in one process (the facade's global
//! recorder can be installed only once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

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
