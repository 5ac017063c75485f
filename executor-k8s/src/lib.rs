#![doc = include_str!("../README.md")]
#![deny(rustdoc::broken_intra_doc_links)]

mod builder;
mod cache;
mod client;
mod config;
mod error;
mod executor;
mod handshake;
mod manifest;
mod names;
mod pod_extras;
mod policy;
pub mod preflight;
mod throttle;
mod timings;
mod user_agent;
mod view;
mod volumes;
mod watch;

#[cfg(feature = "test-support")]
pub mod fake;

pub use builder::{ENV_PREFIX, K8sExecutorBuilder};
pub use cache::CacheStats;
pub use client::FIELD_MANAGER;
pub use config::{K8sConfig, SHELL_COPY_COMMAND, TERMINATION_MESSAGE_PATH};
pub use executor::K8sExecutor;
pub use manifest::TOKEN_KEY;
pub use policy::{Grace, Match, Outcome, ReasonPolicy, ReasonRule};
pub use user_agent::USER_AGENT;
pub use volumes::HostVolumeMount;

/// The executor's scheme (`screwdriver.cd/executor: k8s`).
pub const SCHEME: &str = "k8s";
