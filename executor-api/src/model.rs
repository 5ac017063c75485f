//! Builds, steps and log lines as the API keeps them, and the submission body.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use executor_base::{
    AnnotationMode, Annotations, ApiBuildStatus, BuildId, BuildTimings, EventId, FieldError,
    ImageRef, JobId, PipelineId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Most log lines kept per step; later lines are counted but dropped.
pub const MAX_LINES_PER_STEP: usize = 100_000;

/// One line of a step's output (the store's `{"t", "m", "n"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the epoch.
    pub t: u64,
    /// The text.
    pub m: String,
    /// The line number within the step, from 0.
    pub n: u64,
}

/// A step of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// The step's name (letters, digits, `_`, `-`).
    pub name: String,
    /// The command `launch` runs with `/bin/sh -c`.
    pub command: String,
    /// When it started.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// Its exit code.
    pub code: Option<i32>,
    /// The next line number expected (lines below it are duplicates of retried posts);
    /// also the number of lines the step printed. The lines themselves are in the store
    /// (at most [`MAX_LINES_PER_STEP`] of them).
    pub next_line: u64,
}

/// The wire form of a time.
pub fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl StepRecord {
    /// A step not yet run.
    pub fn new(name: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            command: command.into(),
            start_time: None,
            end_time: None,
            code: None,
            next_line: 0,
        }
    }

    /// The wire form (without the lines; `lines` is their count).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "command": self.command,
            "startTime": self.start_time.as_ref().map(iso),
            "endTime": self.end_time.as_ref().map(iso),
            "code": self.code,
            "lines": self.next_line,
        })
    }
}

/// The orchestrator-style state of a build (`init`, `wait`, `build`, `done`, `failed`).
pub fn module_state(status: ApiBuildStatus) -> &'static str {
    match status {
        ApiBuildStatus::Created => "init",
        ApiBuildStatus::Queued | ApiBuildStatus::Blocked | ApiBuildStatus::Frozen => "wait",
        ApiBuildStatus::Running => "build",
        ApiBuildStatus::Success => "done",
        ApiBuildStatus::Failure
        | ApiBuildStatus::Aborted
        | ApiBuildStatus::Collapsed
        | ApiBuildStatus::Unstable => "failed",
    }
}

/// Whether no further status change is allowed (and the executor is stopped).
pub fn is_final(status: ApiBuildStatus) -> bool {
    matches!(
        status,
        ApiBuildStatus::Success
            | ApiBuildStatus::Failure
            | ApiBuildStatus::Aborted
            | ApiBuildStatus::Collapsed
            | ApiBuildStatus::Unstable
    )
}

/// A build as the API keeps it.
#[derive(Debug, Clone)]
pub struct BuildRecord {
    /// `id`.
    pub id: BuildId,
    /// Who drives the build: `serve` for the API's own, `run:<pid>:<start>` for a build of
    /// an `sdx run` process (see [`crate::ApiState::owner`]).
    pub owner: String,
    /// Bumped by every write; a write is applied only if the stored version is the one it
    /// read (see [`crate::store::BuildStore::update`]).
    pub version: u64,
    /// Whether the engine confirmed the build ended (or never started). A final build that
    /// is not settled still owes an executor `stop` (a restart picks it up).
    pub settled: bool,
    /// `jobId`.
    pub job_id: JobId,
    /// `eventId`.
    pub event_id: Option<EventId>,
    /// `pipelineId`.
    pub pipeline_id: Option<PipelineId>,
    /// `jobName`.
    pub job_name: Option<String>,
    /// The build's image.
    pub container: ImageRef,
    /// Annotations (`screwdriver.cd/executor`, `screwdriver.cd/timeout`, ...).
    pub annotations: Annotations,
    /// Environment variables for the steps.
    pub environment: BTreeMap<String, String>,
    /// The status.
    pub status: ApiBuildStatus,
    /// A human readable message about the status.
    pub status_message: Option<String>,
    /// `meta` set by `launch`.
    pub meta: Value,
    /// When it was submitted.
    pub create_time: DateTime<Utc>,
    /// When `launch` marked it RUNNING.
    pub start_time: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub end_time: Option<DateTime<Utc>>,
    /// The steps, in order.
    pub steps: Vec<StepRecord>,
    /// Where the build's time went on its engine and its peak memory, as the executor
    /// told when the build concluded (empty until then, or when it cannot tell).
    pub timings: BuildTimings,
}

impl BuildRecord {
    /// The wire form: Screwdriver's build fields plus the orchestrator's `state`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.get(),
            "jobId": self.job_id.get(),
            "eventId": self.event_id.map(EventId::get),
            "pipelineId": self.pipeline_id.map(PipelineId::get),
            "jobName": self.job_name,
            "container": self.container.as_str(),
            "annotations": self.annotations.to_json(),
            "environment": self.environment,
            "status": self.status,
            "state": module_state(self.status),
            "statusMessage": self.status_message,
            "meta": self.meta,
            "createTime": iso(&self.create_time),
            "startTime": self.start_time.as_ref().map(iso),
            "endTime": self.end_time.as_ref().map(iso),
            "steps": self.steps.iter().map(StepRecord::to_json).collect::<Vec<_>>(),
            "timings": self.timings,
        })
    }

    /// The list entry: `{"id", "state", "status"}`.
    pub fn summary(&self) -> Value {
        json!({"id": self.id.get(), "state": module_state(self.status), "status": self.status})
    }

    /// The step named `name`.
    pub fn step_mut(&mut self, name: &str) -> Option<&mut StepRecord> {
        self.steps.iter_mut().find(|s| s.name == name)
    }
}

/// The fields a submission may have.
pub const SUBMIT_FIELDS: &[&str] = &[
    "id",
    "jobId",
    "eventId",
    "pipelineId",
    "jobName",
    "container",
    "annotations",
    "executor",
    "environment",
    "steps",
];

/// The fields of one step of a submission.
pub const STEP_FIELDS: &[&str] = &["name", "command"];

/// Whether `name` is reserved for launch and the executors (`SD_*`), so a build's
/// `environment` may not set it (it could point `SD_API_URL` or `SD_TOKEN` elsewhere).
pub fn is_reserved_env(name: &str) -> bool {
    name.starts_with("SD_")
}

/// A validated submission (`POST /v4/builds`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewBuild {
    /// A build id chosen by the client (409 when taken, 422 outside 1..2^53); otherwise
    /// the next one of the store's sequence.
    pub id: Option<BuildId>,
    /// `jobId` (default 1).
    pub job_id: Option<JobId>,
    /// `eventId`.
    pub event_id: Option<EventId>,
    /// `pipelineId`.
    pub pipeline_id: Option<PipelineId>,
    /// `jobName`.
    pub job_name: Option<String>,
    /// `container` (default: the API's configured image).
    pub container: Option<ImageRef>,
    /// `annotations`, with `executor` folded in as `screwdriver.cd/executor`.
    pub annotations: Annotations,
    /// `environment`.
    pub environment: BTreeMap<String, String>,
    /// `steps`: `(name, command)`.
    pub steps: Vec<(String, String)>,
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl NewBuild {
    /// Validates a submission body, reporting every bad field.
    ///
    /// ```
    /// use executor_api::model::NewBuild;
    /// let ok = NewBuild::parse(&serde_json::json!({
    ///     "steps": [{"name": "test", "command": "make test"}], "executor": "process"
    /// })).unwrap();
    /// assert_eq!(ok.annotations.executor(), Some("process"));
    /// let bad = NewBuild::parse(&serde_json::json!({"steps": []})).unwrap_err();
    /// assert_eq!(bad[0].to_string(), "steps: must list at least one step");
    /// ```
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let Some(map) = body.as_object() else {
            return Err(vec![FieldError::new("(body)", "must be a JSON object")]);
        };
        let mut errors = crate::fields::unknown_fields(map, SUBMIT_FIELDS, "");
        let get = |k: &str| map.get(k).filter(|v| !v.is_null());
        let mut id_of = |k: &str| {
            get(k).and_then(|v| {
                crate::fields::parse_id(k, v)
                    .map_err(|e| errors.push(e))
                    .ok()
            })
        };
        let id = id_of("id").and_then(BuildId::new);
        let job_id = id_of("jobId").and_then(JobId::new);
        let event_id = id_of("eventId").and_then(EventId::new);
        let pipeline_id = id_of("pipelineId").and_then(PipelineId::new);
        let job_name = match get("jobName") {
            Some(Value::String(s)) if is_word(s) && s.len() <= 110 => Some(s.clone()),
            Some(_) => {
                errors.push(FieldError::new(
                    "jobName",
                    "must be 1-110 letters, digits, '_' or '-'",
                ));
                None
            }
            None => None,
        };
        let container = match get("container") {
            Some(Value::String(s)) => ImageRef::parse(s)
                .map_err(|r| errors.push(FieldError::new("container", r)))
                .ok(),
            Some(_) => {
                errors.push(FieldError::new("container", "must be a string"));
                None
            }
            None => None,
        };
        let mut raw_annotations = match get("annotations") {
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                errors.push(FieldError::new("annotations", "must be an object"));
                Map::new()
            }
            None => Map::new(),
        };
        match get("executor") {
            Some(Value::String(s)) if is_word(s) => {
                raw_annotations.insert("screwdriver.cd/executor".into(), Value::String(s.clone()));
            }
            Some(_) => errors.push(FieldError::new(
                "executor",
                "must be a backend name (docker, k8s, process, ...)",
            )),
            None => {}
        }
        let annotations =
            Annotations::parse(&Value::Object(raw_annotations), AnnotationMode::Strict)
                .map_err(|mut e| errors.append(&mut e))
                .unwrap_or_default();
        let mut environment = BTreeMap::new();
        match get("environment") {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match (is_env_name(k), scalar(v)) {
                        _ if is_reserved_env(k) => errors.push(FieldError::new(
                            format!("environment.{k}"),
                            "SD_* variables are reserved: launch and the executor set them",
                        )),
                        (true, Some(v)) => {
                            environment.insert(k.clone(), v);
                        }
                        (false, _) => errors.push(FieldError::new(
                            format!("environment.{k}"),
                            "must be a variable name (letters, digits, '_', not starting with a digit)",
                        )),
                        (true, None) => errors.push(FieldError::new(
                            format!("environment.{k}"),
                            "must be a string, number or boolean",
                        )),
                    }
                }
            }
            Some(_) => errors.push(FieldError::new("environment", "must be an object")),
            None => {}
        }
        let mut steps = Vec::new();
        match get("steps") {
            Some(Value::Array(a)) if a.is_empty() => {
                errors.push(FieldError::new("steps", "must list at least one step"))
            }
            Some(Value::Array(a)) => {
                let mut seen = HashSet::new();
                for (i, s) in a.iter().enumerate() {
                    match s.as_object() {
                        Some(m) => errors.append(&mut crate::fields::unknown_fields(
                            m,
                            STEP_FIELDS,
                            &format!("steps[{i}]."),
                        )),
                        None => {
                            errors.push(FieldError::new(
                                format!("steps[{i}]"),
                                "must be an object {name, command}",
                            ));
                            continue;
                        }
                    }
                    let name = s.get("name").and_then(Value::as_str);
                    let command = s.get("command").and_then(Value::as_str);
                    match name {
                        Some(n) if is_word(n) && n.len() <= 64 => {
                            if !seen.insert(n.to_string()) {
                                errors.push(FieldError::new(
                                    format!("steps[{i}].name"),
                                    format!("duplicate step name {n:?}"),
                                ));
                            }
                        }
                        _ => errors.push(FieldError::new(
                            format!("steps[{i}].name"),
                            "must be 1-64 letters, digits, '_' or '-'",
                        )),
                    }
                    match command {
                        Some(c) if !c.trim().is_empty() => {}
                        _ => errors.push(FieldError::new(
                            format!("steps[{i}].command"),
                            "must be a non-empty string",
                        )),
                    }
                    if let (Some(n), Some(c)) = (name, command) {
                        steps.push((n.to_string(), c.to_string()));
                    }
                }
            }
            Some(_) => errors.push(FieldError::new(
                "steps",
                "must be an array of {name, command}",
            )),
            None => errors.push(FieldError::new("steps", "is required")),
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            id,
            job_id,
            event_id,
            pipeline_id,
            job_name,
            container,
            annotations,
            environment,
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let errs = NewBuild::parse(&json!({
            "id": 0, "jobId": "x", "container": "UPPER CASE", "annotations": {"screwdriver.cd/cpu": "HUGE"},
            "environment": {"1BAD": "x", "OK": {"no": 1}}, "executor": "no spaces!",
            "steps": [{"name": "a b", "command": ""}, {"name": "ok", "command": "true"}, {"name": "ok", "command": "x"}]
        }))
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "id",
            "jobId",
            "container",
            "executor",
            "annotations[screwdriver.cd/cpu]",
            "environment.1BAD",
            "environment.OK",
            "steps[0].name",
            "steps[0].command",
            "steps[2].name",
        ] {
            assert!(fields.contains(&f), "{f} not in {fields:?}");
        }
        assert_eq!(NewBuild::parse(&json!([])).unwrap_err()[0].field, "(body)");
        assert_eq!(
            NewBuild::parse(&json!({})).unwrap_err()[0].to_string(),
            "steps: is required"
        );
    }

    #[test]
    fn states_follow_statuses() {
        assert_eq!(module_state(ApiBuildStatus::Queued), "wait");
        assert_eq!(module_state(ApiBuildStatus::Running), "build");
        assert_eq!(module_state(ApiBuildStatus::Success), "done");
        assert_eq!(module_state(ApiBuildStatus::Aborted), "failed");
        assert!(is_final(ApiBuildStatus::Unstable) && !is_final(ApiBuildStatus::Blocked));
    }
}
