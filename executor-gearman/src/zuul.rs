//! The Zuul-Gearman launcher protocol's payloads (`seeds/zuul-launchers.txt`).
//!
//! - `build:<job>[:<node>]` jobs carry the `ZUUL_*` parameters as a JSON object
//!   ([`ZuulParams`] validates them), plus (our extension) the Screwdriver start fields
//!   `buildId`, `apiUri`, `container`, `token`, `annotations`, ...
//! - The worker's first `WORK_DATA` is a [`StartAnnouncement`]; its last one a
//!   [`BuildReport`] with `result`, followed by `WORK_COMPLETE` (`SUCCESS`) or
//!   `WORK_FAIL` (anything else). Launcher-side failures (bad arguments, a start the
//!   wrapped executor refused) end the job with `WORK_EXCEPTION` carrying a
//!   [`LauncherException`].
//! - `stop:<manager>` takes a [`BuildRef`]; `set_description:<manager>` a
//!   [`DescriptionRequest`].

use executor_base::{BuildStatus, Error, ErrorKind, FailureReason, FieldError, Phase};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `WORK_DATA` `result` of a successful build.
pub const RESULT_SUCCESS: &str = "SUCCESS";
/// `result` of a build that failed on its own (steps failed, OOM, bad image).
pub const RESULT_FAILURE: &str = "FAILURE";
/// `result` of a build stopped on request (`stop:<manager>`).
pub const RESULT_ABORTED: &str = "ABORTED";
/// `result` of a build that ran past its timeout.
pub const RESULT_TIMED_OUT: &str = "TIMED_OUT";
/// `result` of a build the engine lost.
pub const RESULT_LOST: &str = "LOST";

/// The Zuul parameters of a `build:` job, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZuulParams {
    /// `ZUUL_UUID` (required): the build's unique key, also the Gearman unique id.
    pub uuid: String,
    /// `ZUUL_PROJECT` (required).
    pub project: String,
    /// `ZUUL_PIPELINE` (required).
    pub pipeline: String,
    /// `ZUUL_REF` (required): the ref holding the commit(s) to build.
    pub git_ref: String,
    /// `ZUUL_COMMIT`: SHA-1 (or SHA-256) at the head of `ZUUL_REF`.
    pub commit: Option<String>,
    /// `ZUUL_BRANCH` (required with `ZUUL_CHANGE`).
    pub branch: Option<String>,
    /// `ZUUL_CHANGE`: the change number.
    pub change: Option<u64>,
    /// `ZUUL_PATCHSET` (required with `ZUUL_CHANGE`).
    pub patchset: Option<u64>,
    /// `ZUUL_CHANGES`: `project:branch:ref` entries separated by `^`.
    pub changes: Vec<ChangeRef>,
    /// `ZUUL_CHANGE_IDS`.
    pub change_ids: Option<String>,
    /// `ZUUL_URL`: the Zuul server's git URL.
    pub url: Option<String>,
    /// `ZUUL_OLDREV` (ref updates).
    pub oldrev: Option<String>,
    /// `ZUUL_NEWREV` (ref updates).
    pub newrev: Option<String>,
    /// `BASE_LOG_PATH`: a relative path.
    pub base_log_path: Option<String>,
    /// `LOG_PATH`: a relative path.
    pub log_path: Option<String>,
    /// `OFFLINE_NODE_WHEN_COMPLETE`: take the launcher offline once this build is done.
    pub offline_node_when_complete: bool,
}

/// One entry of `ZUUL_CHANGES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRef {
    /// Project name.
    pub project: String,
    /// Target branch.
    pub branch: String,
    /// Revision ref.
    pub git_ref: String,
}

/// Field reader over the arguments object that collects every error.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn string(&mut self, name: &str, required: bool) -> Option<String> {
        match self.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                if s.chars().any(char::is_control) {
                    self.errors
                        .push(FieldError::new(name, "must not contain control characters"));
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(Value::String(_)) => {
                if required {
                    self.errors.push(FieldError::new(name, "must not be empty"));
                }
                None
            }
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a string"));
                None
            }
            None => {
                if required {
                    self.errors.push(FieldError::new(name, "is required"));
                }
                None
            }
        }
    }

    fn number(&mut self, name: &str) -> Option<u64> {
        let parsed = match self.get(name)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed.filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                self.errors
                    .push(FieldError::new(name, "must be a positive integer"));
                None
            }
        }
    }

    fn hex(&mut self, name: &str, min: usize) -> Option<String> {
        let s = self.string(name, false)?;
        if (min..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()) {
            Some(s)
        } else {
            self.errors.push(FieldError::new(
                name,
                format!("must be {min} to 64 hexadecimal digits"),
            ));
            None
        }
    }

    fn relative_path(&mut self, name: &str) -> Option<String> {
        let s = self.string(name, false)?;
        if s.starts_with('/') || s.split('/').any(|c| c == "..") {
            self.errors.push(FieldError::new(
                name,
                "must be a relative path without '..' components",
            ));
            None
        } else {
            Some(s)
        }
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => {
                    self.errors.push(FieldError::new(name, "must be a boolean"));
                    false
                }
            },
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be a boolean"));
                false
            }
        }
    }
}

impl ZuulParams {
    /// Validates the `ZUUL_*` parameters of a job's arguments. `unique` is the Gearman
    /// unique id the job was submitted with; when non-empty it must equal `ZUUL_UUID`.
    /// Every bad parameter is reported, by name.
    ///
    /// ```
    /// use executor_gearman::zuul::ZuulParams;
    /// let args = serde_json::json!({"ZUUL_UUID": "u1", "ZUUL_PROJECT": "org/repo",
    ///     "ZUUL_PIPELINE": "check", "ZUUL_REF": "refs/zuul/master/Z1", "ZUUL_CHANGE": "42"});
    /// let e = ZuulParams::parse(args.as_object().unwrap(), "u1").unwrap_err();
    /// assert_eq!(e.to_string(), "invalid: ZUUL_BRANCH: is required with ZUUL_CHANGE; ZUUL_PATCHSET: is required with ZUUL_CHANGE");
    /// ```
    pub fn parse(args: &Map<String, Value>, unique: &str) -> Result<Self, Error> {
        let mut r = Reader {
            map: args,
            errors: Vec::new(),
        };
        let uuid = r.string("ZUUL_UUID", true);
        if let Some(u) = &uuid {
            if u.len() > 64 {
                r.errors.push(FieldError::new(
                    "ZUUL_UUID",
                    "must be at most 64 characters (gearmand's unique id limit)",
                ));
            } else if !unique.is_empty() && unique != u {
                r.errors.push(FieldError::new(
                    "ZUUL_UUID",
                    "does not match the job's Gearman unique id",
                ));
            }
        }
        let project = r.string("ZUUL_PROJECT", true);
        let pipeline = r.string("ZUUL_PIPELINE", true);
        let git_ref = r.string("ZUUL_REF", true);
        let commit = r.hex("ZUUL_COMMIT", 7);
        let branch = r.string("ZUUL_BRANCH", false);
        let change = r.number("ZUUL_CHANGE");
        let patchset = r.number("ZUUL_PATCHSET");
        let has_change = r.get("ZUUL_CHANGE").is_some();
        if has_change && branch.is_none() && r.get("ZUUL_BRANCH").is_none() {
            r.errors.push(FieldError::new(
                "ZUUL_BRANCH",
                "is required with ZUUL_CHANGE",
            ));
        }
        if has_change && r.get("ZUUL_PATCHSET").is_none() {
            r.errors.push(FieldError::new(
                "ZUUL_PATCHSET",
                "is required with ZUUL_CHANGE",
            ));
        }
        if !has_change && r.get("ZUUL_PATCHSET").is_some() {
            r.errors.push(FieldError::new(
                "ZUUL_CHANGE",
                "is required with ZUUL_PATCHSET",
            ));
        }
        if !has_change && r.get("ZUUL_COMMIT").is_none() {
            r.errors.push(FieldError::new(
                "ZUUL_COMMIT",
                "is required (or ZUUL_CHANGE and ZUUL_PATCHSET)",
            ));
        }
        let changes = match r.string("ZUUL_CHANGES", false) {
            Some(s) => parse_changes(&s).unwrap_or_else(|reason| {
                r.errors.push(FieldError::new("ZUUL_CHANGES", reason));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let change_ids = r.string("ZUUL_CHANGE_IDS", false);
        let url = r.string("ZUUL_URL", false);
        if let Some(u) = &url
            && url::Url::parse(u).is_err()
        {
            r.errors.push(FieldError::new("ZUUL_URL", "must be a URL"));
        }
        let oldrev = r.hex("ZUUL_OLDREV", 40);
        let newrev = r.hex("ZUUL_NEWREV", 40);
        let base_log_path = r.relative_path("BASE_LOG_PATH");
        let log_path = r.relative_path("LOG_PATH");
        let offline_node_when_complete = r.flag("OFFLINE_NODE_WHEN_COMPLETE");
        if !r.errors.is_empty() {
            return Err(Error::invalid(r.errors));
        }
        Ok(Self {
            uuid: uuid.unwrap_or_default(),
            project: project.unwrap_or_default(),
            pipeline: pipeline.unwrap_or_default(),
            git_ref: git_ref.unwrap_or_default(),
            commit,
            branch,
            change,
            patchset,
            changes,
            change_ids,
            url,
            oldrev,
            newrev,
            base_log_path,
            log_path,
            offline_node_when_complete,
        })
    }
}

fn parse_changes(s: &str) -> Result<Vec<ChangeRef>, String> {
    s.split('^')
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(p), Some(b), Some(r)) if !p.is_empty() && !b.is_empty() && !r.is_empty() => {
                    Ok(ChangeRef {
                        project: p.to_string(),
                        branch: b.to_string(),
                        git_ref: r.to_string(),
                    })
                }
                _ => Err(format!("entry {entry:?} is not project:branch:ref")),
            }
        })
        .collect()
}

/// The worker's first `WORK_DATA`, sent as soon as the build started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartAnnouncement {
    /// The job name.
    pub name: String,
    /// The build number; unique per attempt (a re-queued job gets a new number).
    pub number: u64,
    /// The worker that can stop the build (`stop:<manager>`).
    pub manager: String,
    /// Where the build's status or results are shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The worker's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    /// The worker's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_hostname: Option<String>,
    /// The worker's IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_ips: Vec<String>,
    /// The worker's FQDN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_fqdn: Option<String>,
    /// The worker program (`sdx-gearman-worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_program: Option<String>,
    /// The worker program's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_version: Option<String>,
    /// Anything else (`executor`, `buildId`, `node`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub worker_extra: Map<String, Value>,
}

impl StartAnnouncement {
    /// Whether the launcher announced the build before its start returned
    /// (`worker_extra.starting`, our extension); otherwise it runs.
    pub fn is_starting(&self) -> bool {
        self.worker_extra.get("starting") == Some(&Value::Bool(true))
    }

    /// Recognises an announcement: a JSON object with `manager` and `number` and no
    /// `result`.
    pub fn from_data(data: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(data).ok()?;
        let o = v.as_object()?;
        if o.contains_key("result") || !o.contains_key("manager") {
            return None;
        }
        let mut o = o.clone();
        // Zuul's own launchers may send the number as a string.
        if let Some(Value::String(s)) = o.get("number")
            && let Ok(n) = s.parse::<u64>()
        {
            o.insert("number".into(), n.into());
        }
        serde_json::from_value(Value::Object(o)).ok()
    }
}

/// The worker's last `WORK_DATA` (also the `WORK_COMPLETE` data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildReport {
    /// `SUCCESS`, or any other value describing the failure (`FAILURE`, `ABORTED`,
    /// `TIMED_OUT`, `LOST`).
    pub result: String,
    /// The job name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The build number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// A human readable message (our extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The typed failure reason (our extension: [`FailureReason`]'s camelCase name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The build's exit code, when known (our extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl BuildReport {
    /// Recognises a report: a JSON object with a string `result`.
    pub fn from_data(data: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(data).ok()?;
        v.get("result")?.as_str()?;
        serde_json::from_value(v).ok()
    }

    /// The report for a terminal status. `stop_requested` turns a failure caused by the
    /// stop into `ABORTED`.
    pub fn from_status(s: &BuildStatus, stop_requested: bool) -> Self {
        let result = match s.phase {
            Phase::Succeeded => RESULT_SUCCESS,
            Phase::Canceled => RESULT_ABORTED,
            _ if stop_requested => RESULT_ABORTED,
            Phase::TimedOut => RESULT_TIMED_OUT,
            Phase::Lost => RESULT_LOST,
            _ => RESULT_FAILURE,
        };
        Self {
            result: result.to_string(),
            name: None,
            number: None,
            message: Some(s.message.clone()).filter(|m| !m.is_empty()),
            reason: s.reason().map(|r| r.as_str().to_string()),
            exit_code: s.exit_code,
        }
    }

    /// The status this report means to a Screwdriver server.
    pub fn to_status(&self) -> BuildStatus {
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("launcher reported {}", self.result));
        let mut s = match self.result.as_str() {
            RESULT_SUCCESS => BuildStatus::succeeded(),
            RESULT_ABORTED | "CANCELED" => BuildStatus::canceled(),
            RESULT_TIMED_OUT => BuildStatus::timed_out(message.clone()),
            RESULT_LOST => BuildStatus::lost(Some(true), message.clone()),
            _ => {
                let reason = self
                    .reason
                    .as_deref()
                    .and_then(|r| {
                        serde_json::from_value::<FailureReason>(Value::String(r.into())).ok()
                    })
                    .unwrap_or(FailureReason::NonZeroExit);
                BuildStatus::failed(reason, message.clone(), Some(self.result.clone()))
            }
        };
        if self.exit_code.is_some() {
            s.exit_code = self.exit_code;
        }
        s
    }
}

/// `WORK_EXCEPTION` data: why the launcher could not run the build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LauncherException {
    /// [`ErrorKind`]'s name (`invalid`, `image_pull`, `unavailable`, ...).
    pub kind: String,
    /// The error message (never contains a token).
    pub message: String,
    /// Whether trying again may succeed.
    #[serde(default)]
    pub temporary: bool,
    /// The rejected parameters of an `invalid` error: `[{field, reason}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<ExceptionField>,
}

/// One rejected parameter in a [`LauncherException`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionField {
    /// The parameter's name.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl From<&Error> for LauncherException {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind().as_str().to_string(),
            message: e.message().to_string(),
            temporary: e.is_temporary(),
            fields: e
                .field_errors()
                .iter()
                .map(|f| ExceptionField {
                    field: f.field.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }
}

impl LauncherException {
    /// Parses exception data; text that is not ours becomes an `unexpected` exception.
    pub fn from_data(data: &[u8]) -> Self {
        serde_json::from_slice(data).unwrap_or_else(|_| Self {
            kind: ErrorKind::Unexpected.as_str().to_string(),
            message: String::from_utf8_lossy(data).into_owned(),
            temporary: false,
            fields: Vec::new(),
        })
    }

    /// The build status a client records for it.
    pub fn to_status(&self) -> BuildStatus {
        let reason = match self.kind.as_str() {
            "invalid" | "config_invalid" => FailureReason::Configuration,
            "image_pull" => FailureReason::ImagePull,
            "token_rejected" | "unauthenticated" => FailureReason::TokenRejected,
            _ if self.temporary => FailureReason::EngineError,
            "unavailable" | "timeout" | "rate_limited" | "circuit_open" => {
                FailureReason::EngineError
            }
            _ => FailureReason::StartRefused,
        };
        let mut s = BuildStatus::failed(
            reason,
            format!("launcher could not run the build: {}", self.message),
            Some(self.kind.clone()),
        );
        if let Some(f) = s.failure.as_mut() {
            f.build_started = Some(false);
        }
        s
    }
}

/// `stop:<manager>` arguments: which build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    /// The job name.
    pub name: String,
    /// The build number from the start announcement.
    pub number: u64,
}

/// `set_description:<manager>` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptionRequest {
    /// The job name.
    pub name: String,
    /// The build number.
    pub number: u64,
    /// The description, HTML.
    pub html_description: String,
}

/// Parses `{name, number}` (number as integer or string), naming the bad field.
pub fn parse_build_ref(data: &[u8]) -> Result<BuildRef, Error> {
    let v: Value = serde_json::from_slice(data)
        .map_err(|e| Error::invalid_field("(arguments)", format!("must be a JSON object ({e})")))?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::invalid_field("(arguments)", "must be a JSON object"))?;
    let mut r = Reader {
        map: o,
        errors: Vec::new(),
    };
    let name = r.string("name", true);
    let number = if r.get("number").is_none() {
        r.errors.push(FieldError::new("number", "is required"));
        None
    } else {
        r.number("number")
    };
    if !r.errors.is_empty() {
        return Err(Error::invalid(r.errors));
    }
    Ok(BuildRef {
        name: name.unwrap_or_default(),
        number: number.unwrap_or_default(),
    })
}

/// Parses `set_description` arguments, naming the bad field.
pub fn parse_description(data: &[u8]) -> Result<DescriptionRequest, Error> {
    let b = parse_build_ref(data);
    let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    let html = v
        .get("html_description")
        .and_then(Value::as_str)
        .map(str::to_string);
    match (b, html) {
        (Ok(b), Some(html_description)) => Ok(DescriptionRequest {
            name: b.name,
            number: b.number,
            html_description,
        }),
        (Ok(_), None) => Err(Error::invalid_field("html_description", "must be a string")),
        (Err(e), html) => {
            let mut fields = e.field_errors().to_vec();
            if html.is_none() && v.is_object() {
                fields.push(FieldError::new("html_description", "must be a string"));
            }
            Err(Error::invalid(fields))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Result<ZuulParams, Error> {
        ZuulParams::parse(v.as_object().unwrap(), "")
    }

    fn base() -> Value {
        json!({"ZUUL_UUID": "abc", "ZUUL_PROJECT": "org/repo", "ZUUL_PIPELINE": "gate",
               "ZUUL_REF": "refs/zuul/master/Z1", "ZUUL_COMMIT": "0123456789abcdef0123456789abcdef01234567"})
    }

    #[test]
    fn a_ref_update_is_accepted() {
        let p = params(base()).unwrap();
        assert_eq!(p.project, "org/repo");
        assert!(!p.offline_node_when_complete);
    }

    #[test]
    fn a_change_with_numbers_as_strings_is_accepted() {
        let mut v = base();
        let o = v.as_object_mut().unwrap();
        o.remove("ZUUL_COMMIT");
        o.insert("ZUUL_CHANGE".into(), json!("1234"));
        o.insert("ZUUL_PATCHSET".into(), json!(3));
        o.insert("ZUUL_BRANCH".into(), json!("master"));
        o.insert(
            "ZUUL_CHANGES".into(),
            json!("org/a:master:refs/changes/1/1/1^org/b:master:refs/changes/2/2/2"),
        );
        o.insert("OFFLINE_NODE_WHEN_COMPLETE".into(), json!("true"));
        let p = params(v).unwrap();
        assert_eq!((p.change, p.patchset), (Some(1234), Some(3)));
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.changes[1].project, "org/b");
        assert!(p.offline_node_when_complete);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let e = params(json!({"ZUUL_UUID": "", "ZUUL_PROJECT": 7, "ZUUL_REF": "r",
            "ZUUL_COMMIT": "xyz", "LOG_PATH": "../etc", "ZUUL_CHANGES": "nocolons",
            "OFFLINE_NODE_WHEN_COMPLETE": "maybe", "ZUUL_URL": "not a url"}))
        .unwrap_err();
        let fields: Vec<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "ZUUL_UUID",
                "ZUUL_PROJECT",
                "ZUUL_PIPELINE",
                "ZUUL_COMMIT",
                "ZUUL_CHANGES",
                "ZUUL_URL",
                "LOG_PATH",
                "OFFLINE_NODE_WHEN_COMPLETE"
            ]
        );
    }

    #[test]
    fn the_unique_id_must_match_the_uuid() {
        let e = ZuulParams::parse(base().as_object().unwrap(), "other").unwrap_err();
        assert_eq!(e.field_errors()[0].field, "ZUUL_UUID");
        assert!(ZuulParams::parse(base().as_object().unwrap(), "abc").is_ok());
    }

    #[test]
    fn reports_round_trip_through_statuses() {
        let cases = [
            (BuildStatus::succeeded(), false, "SUCCESS", Phase::Succeeded),
            (BuildStatus::exited(2), false, "FAILURE", Phase::Failed),
            (BuildStatus::exited(137), true, "ABORTED", Phase::Canceled),
            (BuildStatus::canceled(), false, "ABORTED", Phase::Canceled),
            (
                BuildStatus::timed_out("too slow"),
                false,
                "TIMED_OUT",
                Phase::TimedOut,
            ),
            (
                BuildStatus::lost(Some(true), "gone"),
                false,
                "LOST",
                Phase::Lost,
            ),
            (
                BuildStatus::oom(Some(0), "OOMKilled"),
                false,
                "FAILURE",
                Phase::Failed,
            ),
        ];
        for (status, stop, result, phase) in cases {
            let r = BuildReport::from_status(&status, stop);
            assert_eq!(r.result, result);
            let wire = serde_json::to_vec(&r).unwrap();
            let back = BuildReport::from_data(&wire).unwrap().to_status();
            assert_eq!(back.phase, phase, "{result}");
            if phase == Phase::Failed {
                assert_eq!(back.reason(), status.reason());
                assert_eq!(back.exit_code, status.exit_code);
            }
        }
        // Any other result is a failure.
        let r = BuildReport::from_data(br#"{"result":"UNSTABLE"}"#).unwrap();
        assert_eq!(r.to_status().phase, Phase::Failed);
    }

    #[test]
    fn announcements_and_reports_are_told_apart() {
        let a = br#"{"name":"unit","number":"17","manager":"m1","url":"http://x/17"}"#;
        let ann = StartAnnouncement::from_data(a).unwrap();
        assert_eq!((ann.number, ann.manager.as_str()), (17, "m1"));
        assert!(BuildReport::from_data(a).is_none());
        let r = br#"{"result":"SUCCESS","manager":"m1"}"#;
        assert!(StartAnnouncement::from_data(r).is_none());
        assert!(BuildReport::from_data(r).is_some());
        assert!(StartAnnouncement::from_data(b"not json").is_none());
    }

    #[test]
    fn exceptions_map_to_typed_failures() {
        let e = Error::invalid_field("ZUUL_PROJECT", "is required");
        let x = LauncherException::from(&e);
        let wire = serde_json::to_vec(&x).unwrap();
        let s = LauncherException::from_data(&wire).to_status();
        assert_eq!(s.reason(), Some(FailureReason::Configuration));
        assert!(s.message.contains("ZUUL_PROJECT: is required"));
        let s = LauncherException::from_data(b"segfault").to_status();
        assert_eq!(s.reason(), Some(FailureReason::StartRefused));
    }

    #[test]
    fn stop_arguments_are_validated() {
        assert_eq!(
            parse_build_ref(br#"{"name":"unit","number":"5"}"#).unwrap(),
            BuildRef {
                name: "unit".into(),
                number: 5
            }
        );
        let e = parse_build_ref(br#"{"number":0}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid: name: is required; number: must be a positive integer"
        );
        let e = parse_description(br#"{"name":"unit","number":5}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].field, "html_description");
    }
}
