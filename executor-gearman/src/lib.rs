#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod admin;
mod builder;
pub mod client;
pub mod codec;
mod config;
mod conn;
mod error;
mod executor;
pub mod gearman_worker;
mod in_flight;
pub mod launcher;
pub mod packet;
mod preflight;
mod tracker;
mod worker_check;
pub mod zuul;

/// The executor's scheme name (`screwdriver.cd/executor: gearman`).
pub const SCHEME: &str = "gearman";

pub use builder::GearmanExecutorBuilder;
pub use client::{ClientOptions, GearmanClient, JobEvent, JobStatus, SubmittedJob};
pub use codec::{CodecError, Frame, PacketCodec};
pub use config::{GearmanConfig, JOB_ANNOTATION, NODE_ANNOTATION};
pub use error::GearmanError;
pub use executor::GearmanExecutor;
pub use gearman_worker::{GearmanWorker, Job, JobSink, JobSlot, WorkerOptions};
pub use launcher::config::{WORKER_SCHEME, WorkerConfig};
pub use launcher::gc::{WorkerGc, WorkerGcReport};
pub use launcher::{LauncherWorker, run_worker, shutdown_signal};
pub use packet::{Magic, Packet, PacketType};
pub use tracker::GearmanBuildInfo;
