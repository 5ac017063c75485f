//! SIGTERM, SIGINT and SIGHUP abort the build: the running step's process group is
//! stopped and the build reported `ABORTED`.
//!
//! The signals are blocked in the calling thread (and so in every thread started after
//! it) and received by one thread with `sigwait`, which needs no `unsafe` signal handler.
//! Child processes do not inherit the blocked mask: the standard library resets it when
//! it spawns a command.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use nix::sys::signal::{SigSet, Signal};

/// A shared flag set when the build must be aborted; holds the signal number and when
/// the first one arrived.
#[derive(Debug, Clone, Default)]
pub struct Abort(Arc<AtomicI32>, Arc<OnceLock<Instant>>);

impl Abort {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag, recording the signal number.
    pub fn trigger(&self, signal: i32) {
        let _ = self.1.set(Instant::now());
        self.0.store(signal.max(1), Ordering::SeqCst);
    }

    /// When the build was first aborted.
    pub fn since(&self) -> Option<Instant> {
        self.1.get().copied()
    }

    /// The signal that aborted the build, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and starts a thread that turns them
/// into an [`Abort`]. Call it before the process starts other threads.
///
/// When the signals cannot be blocked, returns a flag that is never set (the default
/// actions stay in place).
pub fn install() -> Abort {
    let abort = Abort::new();
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return abort;
    }
    let flag = abort.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                flag.trigger(sig as i32);
            }
        });
    if spawned.is_err() {
        let _ = set.thread_unblock();
    }
    abort
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_records_the_signal() {
        let a = Abort::new();
        assert_eq!(a.signal(), None);
        assert!(a.since().is_none());
        a.clone().trigger(15);
        assert_eq!(a.signal(), Some(15));
        assert!(a.since().is_some());
    }
}
