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
pub mod ids;
pub mod image;
pub mod jwt;
pub mod labels;
pub mod launch;
pub mod launch_protocol;
pub mod options;
pub mod owner;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod resources;
pub mod router;
pub mod stats;
pub mod status;
pub mod timeout;
pub mod timer;
pub mod token;
pub mod verdict;

pub use annotations::{AnnotationMode, Annotations, ResourceRequest, Tier};
pub use config::{
    ApiBuildStatus, ParseOptions, StartConfig, StartConfigBuilder, StopConfig, TimerConfig,
};
pub use error::{Error, ErrorKind, FieldError, Result};
pub use executor::{DynExecutor, Executor, ExecutorExt, GcReport};
pub use ids::{BuildId, EventId, JobId, PipelineId};
pub use image::ImageRef;
pub use labels::{BuildLabels, build_name};
pub use launch::{Ecosystem, LaunchCommand, LaunchMode, LaunchSpec, TokenDelivery};
pub use owner::{Liveness, Owner};
pub use resources::{ResourceTable, TierTable};
pub use stats::{BreakerStats, BuildCounter, BuildCounts, CacheFreshness, RequestStats, Stats};
pub use status::{BuildStatus, Failure, FailureReason, Fault, Phase};
pub use timeout::{TOKEN_BUFFER_MINUTES, TimeoutPolicy};
pub use verdict::Verdict;

// Re-exports of engine/token/jwt (owned by the base helper) go below this line.
pub use engine::{BreakerConfig, CallClass, EngineCalls, Idempotency, RetryPolicy};
pub use jwt::{BuildClaims, JwtVerifier};
pub use token::{TokenExchange, TokenExchangeOptions, exchange_token_for_build};

// Re-exports of timer/router (owned by the testkit helper) go below this line.
pub use router::{Router, RouterBuilder};
pub use timer::{TimedExecutor, TimerService, TimerStore};

/// Re-exported so backends and users name the same secret type.
pub use secrecy;

#[cfg(feature = "testkit")]
pub mod testkit;
