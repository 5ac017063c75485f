//! [`StartConfig`], what `start` and `verify` get, and its builder.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::annotations::Annotations;
use crate::build_env::BuildEnv;
use crate::error::Error;
use crate::ids::{BuildId, EventId, JobId, PipelineId};
use crate::image::ImageRef;

use super::fields::{Fields, parse_job_name};
use super::*;

/// Everything `start` and `verify` need to know about a build.
///
/// Built only by [`StartConfig::from_json`] (also used by `Deserialize`) or
/// [`StartConfig::builder`].
///
/// ```
/// use executor_base::StartConfig;
/// let cfg = StartConfig::from_json(&serde_json::json!({
///     "buildId": 42, "apiUri": "http://127.0.0.1:8080", "container": "node:22",
///     "token": "temporary-jwt", "jobId": 7, "annotations": {"screwdriver.cd/timeout": 30}
/// })).unwrap();
/// assert_eq!(cfg.build_id.get(), 42);
/// assert!(!format!("{cfg:?}").contains("temporary-jwt"));
///
/// let err = StartConfig::from_json(&serde_json::json!({"buildId": 0, "apiUri": "ftp://x", "token": "t"})).unwrap_err();
/// assert_eq!(err.field_errors()[0].to_string(), "buildId: must be a positive integer");
/// assert_eq!(err.field_errors()[1].to_string(), "apiUri: must be an http(s) URL, got scheme \"ftp\"");
/// assert_eq!(err.field_errors()[2].to_string(), "container: is required");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct StartConfig {
    /// `buildId` (required).
    pub build_id: BuildId,
    /// `apiUri` (required): the API server the launcher talks to.
    pub api_uri: Url,
    /// `container` (required): the build's image.
    pub container: ImageRef,
    /// `token` (required): the temporary JWT the launcher exchanges for a build token.
    pub token: SecretString,
    /// `annotations`.
    pub annotations: Annotations,
    /// `jobId`.
    pub job_id: Option<JobId>,
    /// `eventId`.
    pub event_id: Option<EventId>,
    /// `pipelineId` (or `pipeline.id`).
    pub pipeline_id: Option<PipelineId>,
    /// `jobName`.
    pub job_name: Option<String>,
    /// `isPR`.
    pub is_pr: Option<bool>,
    /// `buildClusterName`.
    pub build_cluster_name: Option<String>,
    /// `storeUri`: our extension; otherwise the executor's configured store.
    pub store_uri: Option<Url>,
    /// `uiUri`: our extension; otherwise the executor's configured UI.
    pub ui_uri: Option<Url>,
    /// `env`: our extension; extra environment variables of the build, set after the
    /// launch's own (see [`crate::build_env`]: `SD_*` names are refused).
    pub env: BuildEnv,
    /// Every other field, kept as given (upstream allows unknown keys).
    pub extra: BTreeMap<String, Value>,
}

const START_KNOWN: &[&str] = &[
    "buildId",
    "apiUri",
    "container",
    "token",
    "annotations",
    "jobId",
    "eventId",
    "pipelineId",
    "jobName",
    "isPR",
    "buildClusterName",
    "storeUri",
    "uiUri",
    "env",
];

impl StartConfig {
    /// Parses a start/verify config from JSON with strict annotations.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        Self::from_json_with(value, ParseOptions::default())
    }

    /// Parses a start/verify config from a JSON string.
    pub fn from_json_str(s: &str) -> Result<Self, Error> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| Error::invalid_field("(config)", format!("is not valid JSON: {e}")))?;
        Self::from_json(&v)
    }

    /// Parses a start/verify config from JSON.
    pub fn from_json_with(value: &Value, opts: ParseOptions) -> Result<Self, Error> {
        let mut f = Fields::new(value)?;
        let build_id = f.id("buildId", BuildId::parse_json, true);
        let api_uri = f.url("apiUri", true);
        let container = f.parsed("container", true, ImageRef::parse);
        let token = f.token("token", true);
        let annotations = f.annotations(opts);
        let job_id = f.id("jobId", JobId::parse_json, false);
        let event_id = f.id("eventId", EventId::parse_json, false);
        let mut pipeline_id = f.id("pipelineId", PipelineId::parse_json, false);
        if pipeline_id.is_none()
            && let Some(Value::Object(p)) = f.present("pipeline")
            && let Some(id) = p.get("id")
        {
            match PipelineId::parse_json("pipeline.id", id) {
                Ok(id) => pipeline_id = Some(id),
                Err(e) => f.errors.push(e),
            }
        }
        let job_name = f.parsed("jobName", false, parse_job_name);
        let is_pr = f.bool("isPR");
        let build_cluster_name = f.parsed("buildClusterName", false, |s| {
            if !s.is_empty()
                && s.len() <= 50
                && s.chars().all(|c| c.is_alphanumeric() || "_.-".contains(c))
            {
                Ok(s.to_string())
            } else {
                Err("must be 1-50 of letters, digits, '_', '.', '-'".to_string())
            }
        });
        let store_uri = f.url("storeUri", false);
        let ui_uri = f.url("uiUri", false);
        let env = match f.present("env").map(|v| BuildEnv::from_json("env", v)) {
            Some(Ok(env)) => env,
            Some(Err(errors)) => {
                f.errors.extend(errors);
                BuildEnv::new()
            }
            None => BuildEnv::new(),
        };
        let extra = f.extra(START_KNOWN);
        f.finish()?;
        Ok(Self {
            build_id: build_id.expect("checked"),
            api_uri: api_uri.expect("checked"),
            container: container.expect("checked"),
            token: token.expect("checked"),
            annotations,
            job_id,
            event_id,
            pipeline_id,
            job_name,
            is_pr,
            build_cluster_name,
            store_uri,
            ui_uri,
            env,
            extra,
        })
    }

    /// A typed builder; `build()` runs the same parsing step as [`StartConfig::from_json`].
    ///
    /// ```
    /// use executor_base::StartConfig;
    /// let cfg = StartConfig::builder(42, "http://127.0.0.1:8080", "busybox:latest", "tok")
    ///     .job_id(7)
    ///     .annotation("screwdriver.cd/cpu", "HIGH")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(cfg.job_id.unwrap().get(), 7);
    /// ```
    pub fn builder(
        build_id: u64,
        api_uri: impl Into<String>,
        container: impl Into<String>,
        token: impl Into<String>,
    ) -> StartConfigBuilder {
        let mut map = Map::new();
        map.insert("buildId".into(), build_id.into());
        map.insert("apiUri".into(), Value::String(api_uri.into()));
        map.insert("container".into(), Value::String(container.into()));
        map.insert("token".into(), Value::String(token.into()));
        StartConfigBuilder {
            map,
            opts: ParseOptions::default(),
        }
    }

    /// The wire form **without the token**, as `Serialize` writes it: safe to log, store
    /// or return. [`StartConfig::to_json_with_token`] is the one way to include it.
    pub fn to_json(&self) -> Value {
        let mut v = self.to_json_with_token();
        if let Value::Object(m) = &mut v {
            m.remove("token");
        }
        v
    }

    /// The wire form with the token in clear, for the one place that must forward it to
    /// the launcher: the Gearman executor's job arguments (the launcher worker reads the
    /// start fields from them). Nothing else in the workspace calls it; never log it.
    pub fn to_json_with_token(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m.insert("buildId".into(), self.build_id.get().into());
        m.insert("apiUri".into(), Value::String(self.api_uri.to_string()));
        m.insert(
            "container".into(),
            Value::String(self.container.to_string()),
        );
        m.insert(
            "token".into(),
            Value::String(self.token.expose_secret().to_string()),
        );
        if !self.annotations.is_empty() {
            m.insert("annotations".into(), self.annotations.to_json());
        }
        if let Some(v) = self.job_id {
            m.insert("jobId".into(), v.get().into());
        }
        if let Some(v) = self.event_id {
            m.insert("eventId".into(), v.get().into());
        }
        if let Some(v) = self.pipeline_id {
            m.insert("pipelineId".into(), v.get().into());
        }
        if let Some(v) = &self.job_name {
            m.insert("jobName".into(), Value::String(v.clone()));
        }
        if let Some(v) = self.is_pr {
            m.insert("isPR".into(), Value::Bool(v));
        }
        if let Some(v) = &self.build_cluster_name {
            m.insert("buildClusterName".into(), Value::String(v.clone()));
        }
        if let Some(v) = &self.store_uri {
            m.insert("storeUri".into(), Value::String(v.to_string()));
        }
        if let Some(v) = &self.ui_uri {
            m.insert("uiUri".into(), Value::String(v.to_string()));
        }
        if !self.env.is_empty() {
            m.insert("env".into(), self.env.to_json());
        }
        Value::Object(m)
    }

    /// The matching stop/status config (same build, job, annotations and API).
    pub fn to_stop(&self) -> StopConfig {
        StopConfig {
            build_id: self.build_id,
            api_uri: Some(self.api_uri.clone()),
            job_id: self.job_id,
            pipeline_id: self.pipeline_id,
            job_name: self.job_name.clone(),
            annotations: self.annotations.clone(),
            token: Some(self.token.clone()),
            extra: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for StartConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartConfig")
            .field("build_id", &self.build_id)
            .field("api_uri", &self.api_uri.as_str())
            .field("container", &self.container)
            .field("token", &"[REDACTED]")
            .field("annotations", &self.annotations.raw())
            .field("job_id", &self.job_id)
            .field("event_id", &self.event_id)
            .field("pipeline_id", &self.pipeline_id)
            .field("job_name", &self.job_name)
            // Names only: values are the caller's, and may be credentials-like.
            .field("env", &self.env.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PartialEq for StartConfig {
    fn eq(&self, o: &Self) -> bool {
        self.to_json_with_token() == o.to_json_with_token()
    }
}

/// Writes [`StartConfig::to_json`]: every field but the token.
impl Serialize for StartConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for StartConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

/// Builder for [`StartConfig`]; see [`StartConfig::builder`].
#[derive(Clone)]
pub struct StartConfigBuilder {
    map: Map<String, Value>,
    opts: ParseOptions,
}

impl fmt::Debug for StartConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartConfigBuilder")
            .field("buildId", &self.map.get("buildId"))
            .finish_non_exhaustive()
    }
}

impl StartConfigBuilder {
    /// Sets `jobId`.
    pub fn job_id(mut self, id: u64) -> Self {
        self.map.insert("jobId".into(), id.into());
        self
    }
    /// Sets `eventId`.
    pub fn event_id(mut self, id: u64) -> Self {
        self.map.insert("eventId".into(), id.into());
        self
    }
    /// Sets `pipelineId`.
    pub fn pipeline_id(mut self, id: u64) -> Self {
        self.map.insert("pipelineId".into(), id.into());
        self
    }
    /// Sets `jobName`.
    pub fn job_name(mut self, name: impl Into<String>) -> Self {
        self.map
            .insert("jobName".into(), Value::String(name.into()));
        self
    }
    /// Sets `storeUri`.
    pub fn store_uri(mut self, uri: impl Into<String>) -> Self {
        self.map
            .insert("storeUri".into(), Value::String(uri.into()));
        self
    }
    /// Adds one annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let a = self
            .map
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = a {
            m.insert(key.into(), value.into());
        }
        self
    }
    /// Adds one variable to `env` (checked by `build()`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let e = self
            .map
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = e {
            m.insert(name.into(), Value::String(value.into()));
        }
        self
    }
    /// Sets any other field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.map.insert(key.into(), value.into());
        self
    }
    /// Sets the parse options (annotation mode).
    pub fn options(mut self, opts: ParseOptions) -> Self {
        self.opts = opts;
        self
    }
    /// Validates and builds.
    pub fn build(self) -> Result<StartConfig, Error> {
        StartConfig::from_json_with(&Value::Object(self.map), self.opts)
    }
}
