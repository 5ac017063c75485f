//! What the launcher reports: the start announcement (first `WORK_DATA`) and the build
//! report (last `WORK_DATA`, also the `WORK_COMPLETE` data).

use executor_base::{BuildStatus, FailureReason, Phase};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::exception::LauncherException;

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
/// `result` of a job the launcher refused or could not start (as Zuul's own executor
/// reports launcher-side errors: `{"result": "ERROR", "error_detail": ...}`).
pub const RESULT_ERROR: &str = "ERROR";

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
    /// Why the launcher refused the job (`ERROR` results), as Zuul's executor words it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    /// The refusal, typed (`ERROR` results; our extension, the `WORK_EXCEPTION` document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LauncherException>,
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
            error_detail: None,
            error: None,
        }
    }

    /// The report of a job the launcher refused (bad arguments, an unreadable job, a
    /// start the executor refused): `result` `ERROR`, the message as `error_detail` and
    /// the typed refusal. A plain Zuul or `gear` client reads it from the last
    /// `WORK_DATA` before the job's `WORK_FAIL`.
    ///
    /// ```
    /// use executor_gearman::zuul::BuildReport;
    /// let e = executor_base::Error::invalid_field("ZUUL_PROJECT", "is required");
    /// let r = BuildReport::refusal(&e);
    /// assert_eq!((r.result.as_str(), r.reason.as_deref()), ("ERROR", Some("configuration")));
    /// assert_eq!(r.error_detail.as_deref(), Some("invalid: ZUUL_PROJECT: is required"));
    /// assert_eq!(r.to_status().reason(), Some(executor_base::FailureReason::Configuration));
    /// ```
    pub fn refusal(e: &executor_base::Error) -> Self {
        let error = LauncherException::from(e);
        let status = error.to_status();
        Self {
            result: RESULT_ERROR.to_string(),
            name: None,
            number: None,
            message: Some(status.message.clone()),
            reason: status.reason().map(|r| r.as_str().to_string()),
            exit_code: None,
            error_detail: Some(e.to_string()),
            error: Some(error),
        }
    }

    /// The status this report means to a Screwdriver server.
    pub fn to_status(&self) -> BuildStatus {
        if let Some(e) = &self.error {
            return e.to_status();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
