#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod annotations;
pub mod build_env;
pub mod config;
pub mod db_thread;
pub mod engine;
pub mod error;
pub mod executor;
pub mod fnv;
pub mod http;
pub mod ids;
pub mod image;
mod join;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod labels;
pub mod launch;
pub mod launch_protocol;
pub mod metrics;
pub mod options;
pub mod owner;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod preflight;
pub mod record_file;
pub mod resources;
pub mod router;
pub mod stats;
pub mod status;
mod sync;
pub mod timeout;
pub mod timer;
pub mod timings;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "token-exchange")]
pub mod token;
pub mod verdict;

pub use annotations::{AnnotationMode, Annotations, ResourceRequest, Tier};
pub use config::{
    ApiBuildStatus, ParseOptions, StartConfig, StartConfigBuilder, StopConfig, TimerConfig,
};
pub use error::{Error, ErrorKind, FieldError, Result};
pub use executor::{DynExecutor, Executor, ExecutorExt, GcReport, stop_builds};
pub use ids::{BuildId, EventId, JobId, PipelineId};
pub use image::ImageRef;
pub use labels::{BuildLabels, build_name};
pub use launch::{Ecosystem, LaunchCommand, LaunchMode, LaunchSpec, TokenDelivery};
pub use owner::{Liveness, Owner};
pub use preflight::{Finding, Level, Preflight, PreflightCache, PreflightOptions};
pub use resources::{ResourceTable, TierTable};
pub use stats::{BreakerStats, BuildCounter, BuildCounts, CacheFreshness, RequestStats, Stats};
pub use status::{BuildStatus, Failure, FailureReason, Fault, Phase};
pub use timeout::{TOKEN_BUFFER_MINUTES, TimeoutPolicy};
pub use timings::BuildTimings;
pub use verdict::Verdict;

pub use engine::{BreakerConfig, CallClass, EngineCalls, Idempotency, RetryPolicy};
#[cfg(feature = "jwt")]
pub use jwt::{BuildClaims, JwtVerifier};
pub use router::{Router, RouterBuilder};
pub use timer::{TimedExecutor, TimerService, TimerStore};
#[cfg(feature = "token-exchange")]
pub use token::{TokenExchange, TokenExchangeOptions, exchange_token_for_build};

/// Re-exported so backends and users name the same secret type.
pub use secrecy;

#[cfg(feature = "test-support")]
pub mod testkit;
