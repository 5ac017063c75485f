//! [`TimerConfig`], what `start_timer` gets.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::annotations::Annotations;
use crate::error::Error;
use crate::ids::{BuildId, JobId, PipelineId};

use super::fields::Fields;
use super::*;

/// What `start_timer` needs.
///
/// ```
/// use executor_base::{TimerConfig, ApiBuildStatus};
/// let t = TimerConfig::from_json(&serde_json::json!({
///     "buildId": 42, "jobId": 7, "buildStatus": "RUNNING", "startTime": "2026-11-26T03:00:00Z"
/// })).unwrap();
/// assert_eq!(t.build_status, ApiBuildStatus::Running);
/// let e = TimerConfig::from_json(&serde_json::json!({"buildId": 42, "jobId": 7, "buildStatus": "running", "startTime": "yesterday"})).unwrap_err();
/// assert_eq!(e.field_errors().len(), 2);
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct TimerConfig {
    /// `buildId` (required).
    pub build_id: BuildId,
    /// `jobId` (required).
    pub job_id: JobId,
    /// `buildStatus` (required): only `RUNNING` arms a timer.
    pub build_status: ApiBuildStatus,
    /// `startTime` (required, ISO 8601).
    pub start_time: DateTime<Utc>,
    /// `annotations` (`screwdriver.cd/timeout`).
    pub annotations: Annotations,
    /// `pipelineId`.
    pub pipeline_id: Option<PipelineId>,
}

impl TimerConfig {
    /// A timer config from typed values.
    pub fn new(
        build_id: BuildId,
        job_id: JobId,
        build_status: ApiBuildStatus,
        start_time: DateTime<Utc>,
        annotations: Annotations,
    ) -> Self {
        Self {
            build_id,
            job_id,
            build_status,
            start_time,
            annotations,
            pipeline_id: None,
        }
    }

    /// Parses a timer config from JSON.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        Self::from_json_with(value, ParseOptions::default())
    }

    /// Parses a timer config from JSON with options.
    pub fn from_json_with(value: &Value, opts: ParseOptions) -> Result<Self, Error> {
        let mut f = Fields::new(value)?;
        let build_id = f.id("buildId", BuildId::parse_json, true);
        let job_id = f.id("jobId", JobId::parse_json, true);
        let build_status = f.parsed("buildStatus", true, |s| {
            ApiBuildStatus::parse(s).ok_or_else(|| {
                format!(
                    "unknown status {s:?}, expected one of {}",
                    ApiBuildStatus::ALL.map(|s| s.as_str()).join(", ")
                )
            })
        });
        let start_time = f.parsed("startTime", true, |s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("must be an ISO 8601 time ({e})"))
        });
        let annotations = f.annotations(opts);
        let pipeline_id = f.id("pipelineId", PipelineId::parse_json, false);
        f.finish()?;
        Ok(Self {
            build_id: build_id.expect("checked"),
            job_id: job_id.expect("checked"),
            build_status: build_status.expect("checked"),
            start_time: start_time.expect("checked"),
            annotations,
            pipeline_id,
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("buildId".into(), self.build_id.get().into());
        m.insert("jobId".into(), self.job_id.get().into());
        m.insert(
            "buildStatus".into(),
            Value::String(self.build_status.to_string()),
        );
        m.insert(
            "startTime".into(),
            Value::String(
                self.start_time
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        );
        if !self.annotations.is_empty() {
            m.insert("annotations".into(), self.annotations.to_json());
        }
        if let Some(v) = self.pipeline_id {
            m.insert("pipelineId".into(), v.get().into());
        }
        Value::Object(m)
    }
}

impl fmt::Debug for TimerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerConfig")
            .field("build_id", &self.build_id)
            .field("job_id", &self.job_id)
            .field("build_status", &self.build_status)
            .field("start_time", &self.start_time)
            .field("annotations", &self.annotations.raw())
            .finish()
    }
}

impl Serialize for TimerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for TimerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(|e| serde::de::Error::custom(e.message()))
    }
}
