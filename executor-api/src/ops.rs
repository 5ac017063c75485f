//! The rules of each endpoint (Screwdriver's `token.js`, `update.js` and the step and log
//! endpoints), on an authenticated caller and a parsed body.

use chrono::{DateTime, Utc};
use executor_base::{ApiBuildStatus, BuildId};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::dispatch::react;
use crate::error::HttpError;
use crate::events::BuildEvent;
use crate::fields::{MAX_ID, unknown_fields};
use crate::keys::{Claims, SCOPE_BUILD};
use crate::model::{LogLine, NewBuild, is_final};
use crate::state::{ApiState, store_error};

/// Longest build token the exchange hands out, minutes (a week).
pub const MAX_BUILD_TOKEN_MINUTES: u64 = 7 * 24 * 60;
/// Most log lines one `GET .../logs` returns.
pub const MAX_LINES_PER_PAGE: usize = 1000;

fn own_build(caller: &Caller, id: u64) -> Result<(), HttpError> {
    match caller.build_username() {
        Some(u) if u != id.to_string() => Err(HttpError::forbidden(format!(
            "Credential only valid for {u}"
        ))),
        _ => Ok(()),
    }
}

fn users_only(caller: &Caller) -> Result<(), HttpError> {
    match caller {
        Caller::Admin | Caller::User(_) => Ok(()),
        _ => Err(HttpError::forbidden(
            "Insufficient scope: a user token is required",
        )),
    }
}

fn writes_steps(caller: &Caller, id: u64) -> Result<(), HttpError> {
    match caller {
        Caller::User(_) => Err(HttpError::forbidden(
            "Insufficient scope: only the build or an administrator may report steps",
        )),
        _ => own_build(caller, id),
    }
}

fn time_field(body: &Value, key: &str) -> Result<Option<DateTime<Utc>>, HttpError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| HttpError::bad_request(format!("{key}: must be an ISO 8601 time ({e})"))),
        Some(_) => Err(HttpError::bad_request(format!(
            "{key}: must be an ISO 8601 time string"
        ))),
    }
}

/// `buildTimeout`: a positive number of minutes, a string of one (upstream `parseInt`),
/// or null.
fn build_timeout(body: &Value) -> Result<Option<u64>, HttpError> {
    let v = match body.get("buildTimeout") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let minutes = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match minutes {
        Some(m) if m.is_finite() && m >= 1.0 => {
            Ok(Some((m.ceil() as u64).min(MAX_BUILD_TOKEN_MINUTES)))
        }
        _ => Err(HttpError::bad_request(format!(
            "Invalid buildTimeout value: {v}"
        ))),
    }
}

/// Fields of `PUT /v4/builds/{id}`. `stats` is what `launch` sends with `NODE_ID` set
/// (Screwdriver's build stats); it is accepted and ignored.
pub const UPDATE_FIELDS: &[&str] = &["status", "statusMessage", "meta", "stats"];
/// Fields of `PUT /v4/builds/{id}/steps/{name}`.
pub const STEP_UPDATE_FIELDS: &[&str] = &["startTime", "endTime", "code"];
/// Fields of `POST /v4/builds/{id}/token`.
pub const EXCHANGE_FIELDS: &[&str] = &["buildTimeout"];
/// Fields of one log line of `POST .../logs`.
pub const LOG_LINE_FIELDS: &[&str] = &["t", "m", "n"];

/// 422 naming every unknown field of an object body.
fn known_fields(body: &Value, known: &[&str]) -> Result<(), HttpError> {
    match body.as_object() {
        Some(m) => {
            let errs = unknown_fields(m, known, "");
            if errs.is_empty() {
                Ok(())
            } else {
                Err(HttpError::unprocessable(errs))
            }
        }
        None => Ok(()),
    }
}

impl ApiState {
    /// Submits a build body (as `POST /v4/builds` from the administrator); 400/422 for
    /// bad input, 409 for a taken id. Must be called within a Tokio runtime.
    pub async fn submit_json(&self, body: &Value) -> Result<BuildId, HttpError> {
        self.op_submit(&Caller::Admin, body).await
    }

    /// Aborts build `id` (as the administrator's `PUT` with ABORTED), which stops it on
    /// the executor. 403 when it is already final.
    pub async fn abort(&self, id: u64, message: &str) -> Result<Value, HttpError> {
        self.op_update(
            &Caller::Admin,
            id,
            &json!({"status": "ABORTED", "statusMessage": message}),
        )
        .await
    }

    /// `POST /v4/builds`: 201 with the new id.
    pub(crate) async fn op_submit(
        &self,
        caller: &Caller,
        body: &Value,
    ) -> Result<BuildId, HttpError> {
        users_only(caller)?;
        if !body.is_object() {
            return Err(HttpError::bad_request("The body must be a JSON object"));
        }
        let new = NewBuild::parse(body).map_err(HttpError::unprocessable)?;
        self.submit(new).await
    }

    /// `POST /v4/builds?dryRun=true`: the executor's pre-flight of the build, which is
    /// neither stored nor started.
    pub(crate) async fn op_dry_run(
        &self,
        caller: &Caller,
        body: &Value,
    ) -> Result<executor_base::Preflight, HttpError> {
        users_only(caller)?;
        if !body.is_object() {
            return Err(HttpError::bad_request("The body must be a JSON object"));
        }
        let new = NewBuild::parse(body).map_err(HttpError::unprocessable)?;
        self.dry_run(new).await
    }

    /// `GET /v4/builds`.
    pub(crate) async fn op_list(&self, caller: &Caller) -> Result<Value, HttpError> {
        users_only(caller)?;
        self.list_json().await
    }

    /// `GET /v4/builds/{id}`.
    pub(crate) async fn op_get(&self, caller: &Caller, id: u64) -> Result<Value, HttpError> {
        own_build(caller, id)?;
        Ok(self.load_existing(id).await?.to_json())
    }

    /// `POST /v4/builds/{id}/token` (§9.5), in upstream's order of checks.
    pub(crate) async fn op_exchange(
        &self,
        caller: &Caller,
        id: u64,
        body: &Value,
    ) -> Result<Value, HttpError> {
        let Caller::Temporal(claims) = caller else {
            return Err(HttpError::forbidden(
                "Insufficient scope: a temporal token is required",
            ));
        };
        let build = self.load_existing(id).await?;
        if claims.username != id.to_string() {
            return Err(HttpError::not_found(
                "Build Id parameter and token does not match",
            ));
        }
        known_fields(body, EXCHANGE_FIELDS)?;
        let minutes = build_timeout(body)?
            .unwrap_or_else(|| u64::from(self.config().timeout.token_minutes(&build.annotations)));
        if !matches!(
            build.status,
            ApiBuildStatus::Queued | ApiBuildStatus::Blocked
        ) {
            return Err(HttpError::forbidden(
                "Build is already running or finished.",
            ));
        }
        let mut c = Claims::for_build(id, SCOPE_BUILD, minutes as i64);
        c.job_id = Some(build.job_id.get());
        c.event_id = build.event_id.map(|e| e.get());
        c.pipeline_id = build.pipeline_id.map(|p| p.get());
        c.is_pr = claims.is_pr;
        let token = self
            .issuer()
            .mint(&c)
            .map_err(|e| HttpError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
        Ok(json!({ "token": token }))
    }

    /// `PUT /v4/builds/{id}` (§9.6).
    ///
    /// An ABORTED reported by `launch` for a build past its timeout is recorded as the
    /// timeout it is (FAILURE, "Build timed out ..."): `launch` was stopped by the
    /// executor's timer or backstop, not by a user (a user's abort is recorded by the API
    /// before anything is stopped, so launch's own report comes too late to count).
    pub(crate) async fn op_update(
        &self,
        caller: &Caller,
        id: u64,
        body: &Value,
    ) -> Result<Value, HttpError> {
        if !body.is_object() {
            return Err(HttpError::bad_request("The body must be a JSON object"));
        }
        known_fields(body, UPDATE_FIELDS)?;
        let mut status =
            match body.get("status") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(ApiBuildStatus::parse(s).ok_or_else(|| {
                    HttpError::bad_request(format!("status: unknown status {s:?}"))
                })?),
                Some(_) => return Err(HttpError::bad_request("status: must be a string")),
            };
        let mut message = match body.get("statusMessage") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(HttpError::bad_request("statusMessage: must be a string")),
        };
        let meta = match body.get("meta") {
            None | Some(Value::Null) => None,
            Some(m @ Value::Object(_)) => Some(m.clone()),
            Some(_) => return Err(HttpError::bad_request("meta: must be an object")),
        };
        if status.is_none() && message.is_none() && meta.is_none() {
            return Err(HttpError::bad_request(
                "Nothing to update: give status, statusMessage or meta",
            ));
        }
        let by_launch = matches!(caller, Caller::Temporal(_) | Caller::Build(_));
        match caller {
            Caller::Temporal(_) | Caller::Build(_) => {
                own_build(caller, id)?;
                if let Some(s) = status
                    && !matches!(
                        s,
                        ApiBuildStatus::Running
                            | ApiBuildStatus::Success
                            | ApiBuildStatus::Failure
                            | ApiBuildStatus::Aborted
                            | ApiBuildStatus::Unstable
                    )
                {
                    return Err(HttpError::forbidden(format!(
                        "Can not update status to {s}"
                    )));
                }
            }
            Caller::User(_) => {
                if status != Some(ApiBuildStatus::Aborted) {
                    return Err(HttpError::forbidden(
                        "Users may only set the status ABORTED",
                    ));
                }
                message.get_or_insert_with(|| "Aborted by user".into());
            }
            Caller::Admin => match status {
                None | Some(ApiBuildStatus::Failure) => {}
                Some(ApiBuildStatus::Aborted) => {
                    message.get_or_insert_with(|| "Aborted by user".into());
                }
                Some(s) => {
                    return Err(HttpError::forbidden(format!(
                        "Can not update status to {s}: administrators may set ABORTED or FAILURE"
                    )));
                }
            },
        }
        if by_launch
            && status == Some(ApiBuildStatus::Aborted)
            && let Some(b) = self.load(id).await?
            && let Some(m) = crate::dispatch::past_deadline(self, &b)
        {
            status = Some(ApiBuildStatus::Failure);
            message = Some(m);
        }
        let (mut t, json) = self
            .transition_checked(id, status, message, meta, |b| {
                if status == Some(ApiBuildStatus::Running) && b.status == ApiBuildStatus::Running {
                    return Err(HttpError::forbidden(
                        "Can not update status to RUNNING: the build is already RUNNING",
                    ));
                }
                Ok(())
            })
            .await?;
        t.reported_by_launch = by_launch;
        if let Some(bid) = BuildId::new(id) {
            react(self, bid, t).await;
        }
        Ok(json)
    }

    /// `GET /v4/builds/{id}/steps` or one step.
    pub(crate) async fn op_steps(
        &self,
        caller: &Caller,
        id: u64,
        name: Option<&str>,
    ) -> Result<Value, HttpError> {
        own_build(caller, id)?;
        let b = self.load_existing(id).await?;
        match name {
            None => Ok(Value::Array(b.steps.iter().map(|s| s.to_json()).collect())),
            Some(n) => b
                .steps
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.to_json())
                .ok_or_else(|| HttpError::not_found("Step does not exist")),
        }
    }

    /// `PUT /v4/builds/{id}/steps/{name}` with `{"startTime"}` or `{"endTime", "code"}`.
    pub(crate) async fn op_step_update(
        &self,
        caller: &Caller,
        id: u64,
        name: &str,
        body: &Value,
    ) -> Result<Value, HttpError> {
        writes_steps(caller, id)?;
        if !body.is_object() {
            return Err(HttpError::bad_request("The body must be a JSON object"));
        }
        known_fields(body, STEP_UPDATE_FIELDS)?;
        let start = time_field(body, "startTime")?;
        let mut end = time_field(body, "endTime")?;
        let code = match body.get("code") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .and_then(|c| i32::try_from(c).ok())
                    .ok_or_else(|| HttpError::bad_request("code: must be an integer"))?,
            ),
        };
        if start.is_none() && end.is_none() && code.is_none() {
            return Err(HttpError::bad_request(
                "Nothing to update: give startTime, or endTime and code",
            ));
        }
        if code.is_some() && end.is_none() {
            end = Some(Utc::now());
        }
        let (json, _) = self
            .modify(id, |b| {
                if is_final(b.status) {
                    return Err(HttpError::forbidden(format!(
                        "Build {id} is already {}",
                        b.status
                    )));
                }
                let step = b
                    .step_mut(name)
                    .ok_or_else(|| HttpError::not_found("Step does not exist"))?;
                if let Some(t) = start {
                    step.start_time = Some(t);
                }
                if let Some(t) = end {
                    step.end_time = Some(t);
                }
                if code.is_some() {
                    step.code = code;
                }
                Ok(step.to_json())
            })
            .await?;
        if start.is_some() {
            self.emit(BuildEvent::StepStarted {
                build_id: id,
                step: name.to_string(),
            });
        }
        if let Some(c) = code {
            self.emit(BuildEvent::StepFinished {
                build_id: id,
                step: name.to_string(),
                code: c,
            });
        }
        Ok(json)
    }

    /// `POST /v4/builds/{id}/steps/{name}/logs` with `[{"t", "m", "n"}]`. Lines below the
    /// step's next line number (a retried post) are dropped.
    pub(crate) async fn op_logs_post(
        &self,
        caller: &Caller,
        id: u64,
        name: &str,
        body: &Value,
    ) -> Result<(), HttpError> {
        writes_steps(caller, id)?;
        let Some(items) = body.as_array() else {
            return Err(HttpError::bad_request(
                "The body must be an array of {t, m, n}",
            ));
        };
        let mut lines = Vec::with_capacity(items.len());
        let mut unknown = Vec::new();
        for (i, l) in items.iter().enumerate() {
            let Some(obj) = l.as_object() else {
                return Err(HttpError::bad_request(format!(
                    "[{i}]: must be an object {{t, m, n}}"
                )));
            };
            unknown.append(&mut unknown_fields(
                obj,
                LOG_LINE_FIELDS,
                &format!("[{i}]."),
            ));
            let m = l
                .get("m")
                .and_then(Value::as_str)
                .ok_or_else(|| HttpError::bad_request(format!("[{i}].m: must be a string")))?;
            let n = l
                .get("n")
                .and_then(Value::as_u64)
                .filter(|n| *n < MAX_ID)
                .ok_or_else(|| HttpError::bad_request(format!("[{i}].n: must be a line number")))?;
            let t = match l.get("t") {
                None | Some(Value::Null) => Utc::now().timestamp_millis().max(0) as u64,
                Some(v) => v.as_u64().filter(|t| *t < MAX_ID).ok_or_else(|| {
                    HttpError::bad_request(format!("[{i}].t: must be milliseconds since the epoch"))
                })?,
            };
            lines.push(LogLine {
                t,
                m: m.to_string(),
                n,
            });
        }
        if !unknown.is_empty() {
            return Err(HttpError::unprocessable(unknown));
        }
        if self.load(id).await?.is_none() {
            return Err(HttpError::not_found("Build does not exist"));
        }
        let accepted = self
            .store()
            .append_logs(id, name, &lines)
            .await
            .map_err(store_error)?
            .ok_or_else(|| HttpError::not_found("Step does not exist"))?;
        if !accepted.is_empty() {
            self.emit(BuildEvent::Log {
                build_id: id,
                step: name.to_string(),
                lines: accepted,
            });
        }
        Ok(())
    }

    /// `GET /v4/builds/{id}/steps/{name}/logs?from=N`: up to [`MAX_LINES_PER_PAGE`] lines
    /// numbered `N` and above.
    pub(crate) async fn op_logs_get(
        &self,
        caller: &Caller,
        id: u64,
        name: &str,
        from: u64,
    ) -> Result<Value, HttpError> {
        own_build(caller, id)?;
        if self.load(id).await?.is_none() {
            return Err(HttpError::not_found("Build does not exist"));
        }
        let page = self
            .store()
            .logs(id, name, from, MAX_LINES_PER_PAGE)
            .await
            .map_err(store_error)?
            .ok_or_else(|| HttpError::not_found("Step does not exist"))?;
        Ok(serde_json::to_value(page).unwrap_or(Value::Array(Vec::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_timeout_values() {
        assert_eq!(build_timeout(&json!({})).unwrap(), None);
        assert_eq!(build_timeout(&json!({"buildTimeout": null})).unwrap(), None);
        assert_eq!(
            build_timeout(&json!({"buildTimeout": 120})).unwrap(),
            Some(120)
        );
        assert_eq!(
            build_timeout(&json!({"buildTimeout": "45"})).unwrap(),
            Some(45)
        );
        assert_eq!(
            build_timeout(&json!({"buildTimeout": 1e12})).unwrap(),
            Some(MAX_BUILD_TOKEN_MINUTES)
        );
        let e = build_timeout(&json!({"buildTimeout": "soon"})).unwrap_err();
        assert_eq!(e.message, "Invalid buildTimeout value: \"soon\"");
        assert!(build_timeout(&json!({"buildTimeout": 0})).is_err());
        assert!(build_timeout(&json!({"buildTimeout": [1]})).is_err());
    }
}
