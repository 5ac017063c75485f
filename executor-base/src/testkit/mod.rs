//! Test support for backends (feature `test-support`): an in-memory `FakeExecutor`, the
//! conformance suite every backend runs, and helpers for tests that need a real daemon.
//!
//! Not API-stable: it follows what the backends' tests need.

pub mod conformance;
pub mod daemon;
pub mod fake;
pub mod faults;
pub mod metrics_switch;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod proxy;
