//! Request counters for `stats()`: every executor call is one request to the "engine"
//! (the local operating system), counted like upstream's circuit-breaker statistics.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use executor_base::{Error, ErrorKind, RequestStats};

/// Thread-safe request counters.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    total: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    timeouts: AtomicU64,
    concurrent: AtomicU64,
    finished: AtomicU64,
    micros: AtomicU64,
}

impl Requests {
    /// Runs `call`, counting it.
    pub(crate) async fn track<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.concurrent.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let result = call.await;
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.concurrent.fetch_sub(1, Ordering::Relaxed);
        match &result {
            Ok(_) => self.success.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.kind() == ErrorKind::Timeout => {
                self.timeouts.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => self.failure.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// A snapshot in upstream's shape.
    pub(crate) fn snapshot(&self) -> RequestStats {
        let finished = self.finished.load(Ordering::Relaxed);
        let micros = self.micros.load(Ordering::Relaxed);
        RequestStats {
            total: self.total.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            success: self.success.load(Ordering::Relaxed),
            failure: self.failure.load(Ordering::Relaxed),
            concurrent: self.concurrent.load(Ordering::Relaxed),
            average_time: if finished == 0 {
                0.0
            } else {
                micros as f64 / finished as f64 / 1000.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_outcomes() {
        let r = Requests::default();
        r.track(async { Ok::<_, Error>(()) }).await.unwrap();
        r.track(async { Err::<(), _>(Error::new(ErrorKind::NotFound, "x")) })
            .await
            .unwrap_err();
        r.track(async { Err::<(), _>(Error::new(ErrorKind::Timeout, "x")) })
            .await
            .unwrap_err();
        let s = r.snapshot();
        assert_eq!(
            (s.total, s.success, s.failure, s.timeouts, s.concurrent),
            (3, 1, 1, 1, 0)
        );
        assert!(s.average_time >= 0.0);
    }
}
