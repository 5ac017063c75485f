//! [`BuildTimings`] of a process build, from its record.

use std::sync::Arc;

use executor_base::{BuildId, BuildTimings};

use crate::executor::Inner;
use crate::record::Record;

/// What the record tells: `started_at` is both accepted and running once `launch` has a
/// pid (the spawn is part of `start`, so queueing and pulling do not exist here), the
/// reaper's exit time, and the cgroup's `memory.peak`.
pub(crate) fn from_record(r: &Record) -> BuildTimings {
    BuildTimings {
        accepted: Some(r.started_at),
        running: r.pid.map(|_| r.started_at),
        finished: r.finished_at,
        peak_memory_bytes: r.memory_peak,
        ..BuildTimings::default()
    }
}

impl Inner {
    /// The timings of build `id`, if this executor knows it.
    pub(crate) fn timings(self: &Arc<Self>, id: BuildId) -> Option<BuildTimings> {
        self.lookup(id).map(|b| from_record(&b.snapshot()))
    }
}
