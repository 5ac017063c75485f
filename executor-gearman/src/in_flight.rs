//! The `sdx_gearman_jobs_in_flight` gauge, held by a guard for as long as a job is.

use executor_base::metrics::record;

/// Counts one job in flight on `side` (`executor` or `worker`) until dropped.
pub(crate) struct InFlight(&'static str);

impl InFlight {
    /// One more job in flight on `side`.
    pub(crate) fn enter(side: &'static str) -> Self {
        record::gearman_in_flight(side, 1.0);
        Self(side)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        record::gearman_in_flight(self.0, -1.0);
    }
}
