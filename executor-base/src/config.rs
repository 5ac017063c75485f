//! Validated build configs: parse, don't validate.
//!
//! Untrusted input (JSON from the API server, CLI flags) becomes a [`StartConfig`],
//! [`StopConfig`] or [`TimerConfig`] only through one parsing step that checks every field
//! and reports each bad one by its wire name. Backends receive only these types, so they
//! cannot be called with an unvalidated build. Wire names are Screwdriver's camelCase;
//! unknown fields are allowed (and kept in `extra`), as upstream's schemas allow them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::annotations::{AnnotationMode, Annotations};
use crate::build_env::BuildEnv;
use crate::error::{Error, FieldError};
use crate::ids::{BuildId, EventId, JobId, PipelineId};
use crate::image::ImageRef;

/// Options of the parsing step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// How unknown annotation values are treated.
    pub annotation_mode: AnnotationMode,
}

/// The build statuses of Screwdriver's data model (`buildStatus` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiBuildStatus {
    /// `ABORTED`
    Aborted,
    /// `CREATED`
    Created,
    /// `FAILURE`
    Failure,
    /// `QUEUED`
    Queued,
    /// `RUNNING`
    Running,
    /// `SUCCESS`
    Success,
    /// `BLOCKED`
    Blocked,
    /// `UNSTABLE`
    Unstable,
    /// `COLLAPSED`
    Collapsed,
    /// `FROZEN`
    Frozen,
}

impl ApiBuildStatus {
    /// Every status, in the data model's order.
    pub const ALL: [ApiBuildStatus; 10] = [
        Self::Aborted,
        Self::Created,
        Self::Failure,
        Self::Queued,
        Self::Running,
        Self::Success,
        Self::Blocked,
        Self::Unstable,
        Self::Collapsed,
        Self::Frozen,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aborted => "ABORTED",
            Self::Created => "CREATED",
            Self::Failure => "FAILURE",
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Success => "SUCCESS",
            Self::Blocked => "BLOCKED",
            Self::Unstable => "UNSTABLE",
            Self::Collapsed => "COLLAPSED",
            Self::Frozen => "FROZEN",
        }
    }

    /// Parses the wire name (exact, upper case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for ApiBuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Field-by-field reader over a JSON object that collects every error.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                errors: Vec::new(),
            }),
            _ => Err(Error::invalid_field("(config)", "must be a JSON object")),
        }
    }

    fn present(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn missing(&mut self, name: &str) {
        self.errors.push(FieldError::new(name, "is required"));
    }

    fn id<T>(
        &mut self,
        name: &str,
        parse: fn(&str, &Value) -> Result<T, FieldError>,
        required: bool,
    ) -> Option<T> {
        match self.present(name) {
            Some(v) => match parse(name, v) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.errors.push(e);
                    None
                }
            },
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
        }
    }

    fn string(&mut self, name: &str, required: bool) -> Option<&'a str> {
        match self.present(name) {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                None
            }
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
        }
    }

    /// A string field run through `parse`; a refusal is recorded against `name`.
    fn parsed<T>(
        &mut self,
        name: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(name, required)?;
        match parse(s) {
            Ok(t) => Some(t),
            Err(reason) => {
                self.errors.push(FieldError::new(name, reason));
                None
            }
        }
    }

    fn url(&mut self, name: &str, required: bool) -> Option<Url> {
        self.parsed(name, required, parse_http_url)
    }

    fn token(&mut self, name: &str, required: bool) -> Option<SecretString> {
        let s = self.string(name, required)?;
        if s.trim().is_empty() {
            self.errors.push(FieldError::new(name, "must not be empty"));
            return None;
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            // Never echo the value: it is a secret.
            self.errors.push(FieldError::new(
                name,
                "must not contain white space or control characters",
            ));
            return None;
        }
        Some(SecretString::from(s.to_string()))
    }

    fn bool(&mut self, name: &str) -> Option<bool> {
        match self.present(name) {
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a boolean"));
                None
            }
            None => None,
        }
    }

    fn annotations(&mut self, opts: ParseOptions) -> Annotations {
        match Annotations::parse(
            self.map.get("annotations").unwrap_or(&Value::Null),
            opts.annotation_mode,
        ) {
            Ok(a) => a,
            Err(mut errs) => {
                self.errors.append(&mut errs);
                Annotations::default()
            }
        }
    }

    fn extra(&self, known: &[&str]) -> BTreeMap<String, Value> {
        self.map
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(self.errors))
        }
    }
}

/// Parses an `http` or `https` URL with a host.
pub fn parse_http_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| format!("must be an http(s) URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http(s) URL, got scheme {:?}",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must be an http(s) URL with a host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(u)
}

fn parse_job_name(s: &str) -> Result<String, String> {
    // Upstream: ^(PR-[0-9]+:)?(([\w-]+)|(?:stage@([\w-]+):(setup|teardown)))$, max 110.
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    let body = match s.strip_prefix("PR-").and_then(|r| r.split_once(':')) {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => s,
    };
    let ok = s.len() <= 110
        && (word(body)
            || body
                .strip_prefix("stage@")
                .and_then(|r| r.split_once(':'))
                .is_some_and(|(stage, hook)| {
                    word(stage) && (hook == "setup" || hook == "teardown")
                }));
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be a job name (letters, digits, '_', '-', optionally PR-<n>: or stage@<name>:setup|teardown, at most 110 characters)".to_string())
    }
}

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
