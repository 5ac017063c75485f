//! Shared support for the workspace integration tests.

/// The root README's Rust example, compiled (not run) as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
