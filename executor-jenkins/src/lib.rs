#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod api;
mod builder;
mod client;
mod config;
mod crumb;
mod error;
mod executor;
mod folder;
mod job;
mod mapping;
mod plugins;
mod script;
mod template;
mod xml;

#[cfg(feature = "test-support")]
pub mod fake;

pub use builder::JenkinsExecutorBuilder;
pub use config::{
    DEFAULT_JOB_PREFIX, DEFAULT_LAUNCHER_IMAGE, DEFAULT_NODE_LABEL, DEFAULT_USERNAME,
    JenkinsConfig, PullPolicy,
};
pub use executor::JenkinsExecutor;
pub use job::{PARAMETERS, TIMEOUT_MARKER, TOKEN_PARAMETER};
pub use plugins::{TIMEOUT_PLUGIN, TimeoutBackstop};
pub use script::TOKEN_FILE;
pub use template::{BUILTIN_TEMPLATE, JobTemplate, PLACEHOLDERS};

/// The executor's scheme (`--executor jenkins`, `screwdriver.cd/executor: jenkins`).
pub const SCHEME: &str = "jenkins";
