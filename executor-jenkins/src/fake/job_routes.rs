//! Requests to one job of the fake Jenkins: its JSON, its `config.xml`, triggering,
//! deleting, and its builds (JSON, stop, description).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use url::form_urlencoded;

use super::pages::{access_denied, not_found, send_error, text};
use super::routes::{Req, folder_url, json_ok, redirect};
use super::state::{QueueEntry, State, now_ms, split_path, url_path};
use crate::template::check_well_formed;

/// Requests under `job/<name>/` of the job at item path `name`.
pub(crate) fn job_route(s: &mut State, name: &str, rest: &[&str], req: &Req<'_>) -> Response {
    match (req.method, rest) {
        ("GET", ["api", "json"]) => json_ok(s.job_json(name, &s.jobs[name])),
        ("GET", ["config.xml"]) => text(StatusCode::OK, s.jobs[name].config.clone()),
        ("POST", ["config.xml"]) => update_config(s, name, req),
        ("POST", ["buildWithParameters"]) => build_with_parameters(s, name, req),
        ("POST", ["doDelete"]) => {
            if !s.allowed("Job/Delete") {
                return access_denied(&s.user, "Job/Delete");
            }
            s.jobs.remove(name);
            for q in s
                .queue
                .values_mut()
                .filter(|q| q.job == name && q.waiting())
            {
                q.cancelled = true;
                q.left = true;
            }
            redirect(StatusCode::FOUND, &folder_url(s, split_path(name).0))
        }
        ("GET", [n, "api", "json"]) => match build_number(s, name, n) {
            Some(n) => json_ok(s.build_json(name, &s.jobs[name].builds[&n])),
            None => not_found(),
        },
        ("GET", [n, "consoleText"]) => match build_number(s, name, n) {
            // core Run.doConsoleText: the whole log, text/plain.
            Some(n) => text(StatusCode::OK, s.jobs[name].builds[&n].console.clone()),
            None => not_found(),
        },
        ("GET", [n, "logText", "progressiveText"]) => match build_number(s, name, n) {
            Some(n) => progressive_text(&s.jobs[name].builds[&n], req),
            None => not_found(),
        },
        ("POST", [n, "stop"]) => {
            let Some(n) = build_number(s, name, n) else {
                return not_found();
            };
            // core AbstractBuild.doStop → Executor.doStopBuild: Item.CANCEL, interrupt the
            // executor (asynchronous), forwardToPreviousPage (302), also when not running.
            if !s.allowed("Job/Cancel") {
                return access_denied(&s.user, "Job/Cancel");
            }
            s.abort(name, n);
            let to = format!("{}{}/{n}/", s.base, url_path(name));
            redirect(StatusCode::FOUND, &to)
        }
        ("POST", [n, "submitDescription"]) => {
            let Some(n) = build_number(s, name, n) else {
                return not_found();
            };
            // core Run.doSubmitDescription: Run.UPDATE, then sendRedirect(".").
            if !s.allowed("Run/Update") {
                return access_denied(&s.user, "Run/Update");
            }
            let form: BTreeMap<String, String> = form_urlencoded::parse(req.body)
                .into_owned()
                .chain(req.query.clone())
                .collect();
            if let Some(b) = s.jobs.get_mut(name).and_then(|j| j.builds.get_mut(&n)) {
                b.description = form.get("description").cloned();
            }
            let to = format!("{}{}/{n}/", s.base, url_path(name));
            redirect(StatusCode::FOUND, &to)
        }
        _ => not_found(),
    }
}

/// Stapler `LargeText.doProgressText` (`AnnotatedLargeText.doProgressiveText` without
/// markup): the log from byte `start` (0 when `start` is past the end: "text rolled
/// over"), `X-Text-Size` = the end offset, and `X-More-Data: true` while the build runs.
fn progressive_text(b: &super::state::FakeBuild, req: &Req<'_>) -> Response {
    let len = b.console.len();
    let start = req
        .query
        .get("start")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|s| *s <= len)
        .unwrap_or(0);
    let body = String::from_utf8_lossy(&b.console.as_bytes()[start..]).into_owned();
    let mut resp = text(StatusCode::OK, body);
    let h = resp.headers_mut();
    h.insert("X-Text-Size", len.into());
    if b.building {
        h.insert("X-More-Data", axum::http::HeaderValue::from_static("true"));
    }
    resp
}

fn build_number(s: &State, job: &str, n: &str) -> Option<u64> {
    n.parse::<u64>()
        .ok()
        .filter(|n| s.jobs[job].builds.contains_key(n))
}

/// core `AbstractItem.doConfigDotXml` (POST): `updateByXml`, 200 with an empty body; a
/// document that cannot be read is an `IOException` (500). The job is loaded again.
fn update_config(s: &mut State, name: &str, req: &Req<'_>) -> Response {
    if !s.allowed("Job/Configure") {
        return access_denied(&s.user, "Job/Configure");
    }
    let xml = String::from_utf8_lossy(req.body).into_owned();
    if check_well_formed(&xml).is_err() {
        return send_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "java.io.IOException: Unable to read config.xml",
        );
    }
    let loaded = s.load_job(xml);
    let job = s.jobs.get_mut(name).expect("routed to an existing job");
    job.description = loaded.description;
    job.model = loaded.model;
    job.config = loaded.config;
    text(StatusCode::OK, "")
}

/// `delay=` of `buildWithParameters`: `0sec`, `5`, `10sec` (`TimeDuration.fromString`).
fn parse_delay(v: &str) -> Option<Duration> {
    let digits = v.trim().trim_end_matches("sec").trim();
    digits.parse::<u64>().ok().map(Duration::from_secs)
}

/// core `ParameterizedJobMixIn.doBuildWithParameters` and
/// `ParametersDefinitionProperty._doBuildWithParameters`: Build permission; 409 "is not
/// buildable" for a disabled job; without parameter definitions 500 (an
/// `IllegalStateException`) before 2.525 and 400 "is not parameterized" since; one value
/// per *declared* definition (form fields it does not declare are dropped, missing ones
/// take the default); then `schedule2` with the quiet period (`delay=`, else Jenkins'):
/// 201 + `Location: <ctx>/queue/item/N/` for a new item, 303 to an identical item already
/// queued (merged; since 2.308, 201 before), 302 to the job when the schedule was refused.
fn build_with_parameters(s: &mut State, name: &str, req: &Req<'_>) -> Response {
    if !s.allowed("Job/Build") {
        return access_denied(&s.user, "Job/Build");
    }
    let job_url = format!("{}{}/", s.base, url_path(name));
    let model = s.jobs[name].model.clone();
    if model.disabled {
        return send_error(
            StatusCode::CONFLICT,
            &format!("java.io.IOException: {name} is not buildable"),
        );
    }
    let Some(defs) = model.parameters.as_ref() else {
        return if s.at_least(2, 525) {
            send_error(
                StatusCode::BAD_REQUEST,
                &format!("{name} is not parameterized"),
            )
        } else {
            send_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "java.lang.IllegalStateException: This build is not parameterized!",
            )
        };
    };
    let form: BTreeMap<String, String> = form_urlencoded::parse(req.body).into_owned().collect();
    let params: BTreeMap<String, String> = defs
        .iter()
        .map(|d| {
            let v = form
                .get(&d.name)
                .cloned()
                .unwrap_or_else(|| d.default.clone());
            (d.name.clone(), v)
        })
        .collect();
    if s.refuse_schedules > 0 {
        s.refuse_schedules -= 1;
        return redirect(StatusCode::FOUND, &job_url);
    }
    if let Some(existing) = s
        .queue
        .values()
        .find(|q| q.job == name && q.waiting() && q.params == params)
    {
        let location = format!("{}queue/item/{}/", s.base, existing.id);
        let status = if s.at_least(2, 308) {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::CREATED
        };
        return redirect(status, &location);
    }
    let quiet = req
        .query
        .get("delay")
        .and_then(|d| parse_delay(d))
        .unwrap_or(s.quiet_period);
    let label = model
        .assigned_node
        .clone()
        .unwrap_or_else(|| "built-in".into());
    s.next_queue_id += 1;
    let id = s.next_queue_id;
    let quiet_until = Instant::now() + quiet;
    let ready_at = s.queue_delay.map(|d| quiet_until + d);
    s.queue.insert(
        id,
        QueueEntry {
            id,
            job: name.to_string(),
            params,
            why: format!("Waiting for next available executor on ‘{label}’"),
            cancelled: false,
            left: false,
            number: None,
            created: false,
            create_at: None,
            quiet_until,
            ready_at,
            in_queue_since_ms: now_ms(),
        },
    );
    let location = format!("{}queue/item/{id}/", s.base);
    redirect(StatusCode::CREATED, &location).into_response()
}
