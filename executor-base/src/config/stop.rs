//! [`StopConfig`], what `stop`, `status` and `stop_timer` get.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::annotations::Annotations;
use crate::error::Error;
use crate::ids::{BuildId, JobId, PipelineId};

use super::fields::{Fields, parse_job_name};
use super::*;

/// What `stop`, `status` and `stop_timer` need: the build id, plus what helps routing.
///
/// ```
/// use executor_base::StopConfig;
/// let s = StopConfig::from_json(&serde_json::json!({"buildId": "42"})).unwrap();
/// assert_eq!(s.build_id.get(), 42);
/// assert_eq!(StopConfig::new(executor_base::BuildId::new(42).unwrap()), s);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct StopConfig {
    /// `buildId` (required).
    pub build_id: crate::BuildId,
    /// `apiUri` (required upstream for stop; optional here).
    pub api_uri: Option<Url>,
    /// `jobId`.
    pub job_id: Option<JobId>,
    /// `pipelineId`.
    pub pipeline_id: Option<PipelineId>,
    /// `jobName`.
    pub job_name: Option<String>,
    /// `annotations` (the router falls back to `screwdriver.cd/executor`).
    pub annotations: Annotations,
    /// `token` (optional).
    pub token: Option<SecretString>,
    /// Every other field, kept as given.
    pub extra: BTreeMap<String, Value>,
}

const STOP_KNOWN: &[&str] = &[
    "buildId",
    "apiUri",
    "jobId",
    "pipelineId",
    "jobName",
    "annotations",
    "token",
];

impl StopConfig {
    /// A stop config carrying only the build id.
    pub fn new(build_id: BuildId) -> Self {
        Self {
            build_id,
            api_uri: None,
            job_id: None,
            pipeline_id: None,
            job_name: None,
            annotations: Annotations::default(),
            token: None,
            extra: BTreeMap::new(),
        }
    }

    /// Parses a stop/status config from JSON.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        Self::from_json_with(value, ParseOptions::default())
    }

    /// Parses a stop/status config from JSON with options.
    pub fn from_json_with(value: &Value, opts: ParseOptions) -> Result<Self, Error> {
        let mut f = Fields::new(value)?;
        let build_id = f.id("buildId", BuildId::parse_json, true);
        let api_uri = f.url("apiUri", false);
        let job_id = f.id("jobId", JobId::parse_json, false);
        let pipeline_id = f.id("pipelineId", PipelineId::parse_json, false);
        let job_name = f.parsed("jobName", false, parse_job_name);
        let annotations = f.annotations(opts);
        let token = f.token("token", false);
        let extra = f.extra(STOP_KNOWN);
        f.finish()?;
        Ok(Self {
            build_id: build_id.expect("checked"),
            api_uri,
            job_id,
            pipeline_id,
            job_name,
            annotations,
            token,
            extra,
        })
    }

    /// The wire form **without the token**, as `Serialize` writes it.
    /// [`StopConfig::to_json_with_token`] is the one way to include it.
    pub fn to_json(&self) -> Value {
        let mut v = self.to_json_with_token();
        if let Value::Object(m) = &mut v {
            m.remove("token");
        }
        v
    }

    /// The wire form with the token in clear, when present (for forwarding to a
    /// component that must act for the build; never log it).
    pub fn to_json_with_token(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m.insert("buildId".into(), self.build_id.get().into());
        if let Some(u) = &self.api_uri {
            m.insert("apiUri".into(), Value::String(u.to_string()));
        }
        if let Some(v) = self.job_id {
            m.insert("jobId".into(), v.get().into());
        }
        if let Some(v) = self.pipeline_id {
            m.insert("pipelineId".into(), v.get().into());
        }
        if let Some(v) = &self.job_name {
            m.insert("jobName".into(), Value::String(v.clone()));
        }
        if !self.annotations.is_empty() {
            m.insert("annotations".into(), self.annotations.to_json());
        }
        if let Some(t) = &self.token {
            m.insert("token".into(), Value::String(t.expose_secret().to_string()));
        }
        Value::Object(m)
    }
}

impl fmt::Debug for StopConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopConfig")
            .field("build_id", &self.build_id)
            .field("api_uri", &self.api_uri.as_ref().map(Url::as_str))
            .field("job_id", &self.job_id)
            .field("annotations", &self.annotations.raw())
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

impl PartialEq for StopConfig {
    fn eq(&self, o: &Self) -> bool {
        self.to_json_with_token() == o.to_json_with_token()
    }
}

/// Writes [`StopConfig::to_json`]: every field but the token.
impl Serialize for StopConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for StopConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(|e| serde::de::Error::custom(e.message()))
    }
}
