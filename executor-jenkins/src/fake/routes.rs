//! The fake Jenkins' HTTP surface: one handler that records the request, applies an
//! injected fault, checks basic auth and the crumb, and dispatches on the path.
//!
//! Item paths are walked as Jenkins does: `job/<folder>/job/<folder>/job/<name>/...`;
//! a segment that names neither a folder the test created nor a job is 404.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::json;
use url::form_urlencoded;

use super::state::{IssuedCrumb, QueueEntry, State, join_path, split_path, url_path};
use super::{FaultAction, Recorded};
use crate::template::{check_well_formed, element_text};

pub(crate) type Shared = Arc<Mutex<State>>;

/// The one handler.
pub(crate) async fn handle(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut s = state.lock();
        let crumb_header = headers.get("Jenkins-Crumb").is_some();
        s.requests.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            with_crumb: crumb_header,
        });
        let path = uri.path().to_string();
        let m = method.as_str();
        let hit = s.faults.iter_mut().position(|f| {
            f.remaining > 0
                && f.method.as_deref().is_none_or(|fm| fm == m)
                && path.contains(&f.path_contains)
        });
        hit.map(|i| {
            let f = &mut s.faults[i];
            f.remaining -= 1;
            f.action.clone()
        })
    };
    let mut r = match fault {
        Some(FaultAction::Respond {
            status,
            body,
            headers: extra,
        }) => {
            let mut r = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
                .into_response();
            for (k, v) in extra {
                if let (Ok(k), Ok(v)) = (header::HeaderName::try_from(k), HeaderValue::try_from(v))
                {
                    r.headers_mut().insert(k, v);
                }
            }
            r
        }
        Some(FaultAction::DelayBefore(d)) => {
            tokio::time::sleep(d).await;
            process(&state, &method, &uri, &headers, &body)
        }
        Some(FaultAction::DelayAfter(d)) => {
            let r = process(&state, &method, &uri, &headers, &body);
            tokio::time::sleep(d).await;
            r
        }
        Some(FaultAction::ProcessThenRespond(status)) => {
            let _ = process(&state, &method, &uri, &headers, &body);
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                "injected failure after processing",
            )
                .into_response()
        }
        None => process(&state, &method, &uri, &headers, &body),
    };
    r.headers_mut()
        .insert("X-Jenkins", HeaderValue::from_static(super::FAKE_VERSION));
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

fn process(
    state: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut s = state.lock();
    s.tick();

    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.user, s.token))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "<html><body>Invalid password/token for user</body></html>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Jenkins\""),
        );
        return r;
    }

    let Some(rest) = uri.path().strip_prefix(s.prefix.as_str()) else {
        return text(StatusCode::NOT_FOUND, "not under the path prefix");
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|p| !p.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();

    if *method == Method::POST && s.crumb_issuer {
        let crumb = headers.get("Jenkins-Crumb").and_then(|v| v.to_str().ok());
        let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        if !s.crumb_ok(crumb, cookie) {
            return text(
                StatusCode::FORBIDDEN,
                "<html><body><h2>HTTP ERROR 403 No valid crumb was included in the request</h2></body></html>",
            );
        }
    }

    match (method.as_str(), segs.as_slice()) {
        ("GET", ["crumbIssuer", "api", "json"]) => {
            if !s.crumb_issuer {
                return text(StatusCode::NOT_FOUND, "Not Found");
            }
            s.issued_crumbs += 1;
            let n = s.issued_crumbs;
            let crumb = format!("crumb-{n}-{:x}", rand_u64());
            let session = format!("s{n}-{:x}", rand_u64());
            s.crumbs.insert(
                crumb.clone(),
                IssuedCrumb {
                    session: session.clone(),
                    issued: Instant::now(),
                },
            );
            let mut r = json_ok(json!({
                "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                "crumb": crumb,
                "crumbRequestField": "Jenkins-Crumb",
            }));
            if let Ok(v) =
                HeaderValue::try_from(format!("JSESSIONID.fake={session}; Path=/; HttpOnly"))
            {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        ("GET", ["queue", "item", id, "api", "json"]) => {
            match id.parse::<u64>().ok().and_then(|id| s.queue.get(&id)) {
                Some(q) => json_ok(s.queue_json(q)),
                None => text(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("POST", ["queue", "cancelItem"]) => {
            let id = query.get("id").and_then(|i| i.parse::<u64>().ok());
            match id.and_then(|id| s.queue.get_mut(&id)) {
                None => text(StatusCode::NOT_FOUND, "Provided id not found"),
                Some(q) if !q.waiting() => {
                    text(StatusCode::UNPROCESSABLE_ENTITY, "Item is not cancellable")
                }
                Some(q) => {
                    q.cancelled = true;
                    StatusCode::NO_CONTENT.into_response()
                }
            }
        }
        (m, rest) => item_route(&mut s, m, rest, &query, headers, body),
    }
}

/// Walks `job/<name>` pairs through folders to a job (then [`job_route`]) or stays in a
/// folder, Jenkins itself being the root folder (then [`folder_route`]).
fn item_route(
    s: &mut State,
    method: &str,
    segs: &[&str],
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut folder = String::new();
    let mut rest = segs;
    while let ["job", name, more @ ..] = rest {
        let path = join_path(&folder, name);
        if s.folders.contains(&path) {
            folder = path;
            rest = more;
        } else if s.jobs.contains_key(&path) {
            return job_route(s, method, &path, more, headers, body);
        } else {
            return text(StatusCode::NOT_FOUND, "<html><body>Not Found</body></html>");
        }
    }
    folder_route(s, method, &folder, rest, query, headers, body)
}

/// Requests to a folder (`""`: Jenkins' root): its item list and `createItem`.
fn folder_route(
    s: &mut State,
    method: &str,
    folder: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    match (method, rest) {
        ("GET", ["api", "json"]) => json_ok(s.folder_json(folder)),
        ("POST", ["createItem"]) => {
            let Some(name) = query.get("name").cloned() else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Query parameter 'name' is required",
                );
            };
            if !is_xml(headers) {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "createItem needs an XML body",
                );
            }
            if let Some(c) = name.chars().find(|c| matches!(c, '/' | '\\')) {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("‘{c}’ is an unsafe character"),
                );
            }
            if name.is_empty() {
                return text(StatusCode::BAD_REQUEST, "No name is specified");
            }
            let path = join_path(folder, &name);
            if s.item_exists(&path) {
                let mut r = text(StatusCode::BAD_REQUEST, "job exists");
                if let Ok(v) =
                    HeaderValue::try_from(format!("A job already exists with the name '{name}'"))
                {
                    r.headers_mut().insert("X-Error", v);
                }
                return r;
            }
            let xml = String::from_utf8_lossy(body).into_owned();
            if let Err(e) = check_well_formed(&xml) {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse config.xml: {e}"),
                );
            }
            s.jobs.insert(path, State::new_job(xml));
            text(StatusCode::OK, "")
        }
        ("POST", ["doDelete"]) if !folder.is_empty() => {
            s.remove_folder(folder);
            redirect(&folder_url(s, split_path(folder).0))
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn job_route(
    s: &mut State,
    method: &str,
    name: &str,
    rest: &[&str],
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    match (method, rest) {
        ("GET", ["api", "json"]) => json_ok(s.job_json(name, &s.jobs[name])),
        ("GET", ["config.xml"]) => text(StatusCode::OK, s.jobs[name].config.clone()),
        ("POST", ["config.xml"]) => {
            if !is_xml(headers) {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "config.xml needs an XML body",
                );
            }
            let xml = String::from_utf8_lossy(body).into_owned();
            if let Err(e) = check_well_formed(&xml) {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse config.xml: {e}"),
                );
            }
            let job = s.jobs.get_mut(name).expect("checked");
            job.description = element_text(&xml, "description").unwrap_or_default();
            job.config = xml;
            text(StatusCode::OK, "")
        }
        ("POST", ["buildWithParameters"]) => {
            let config = &s.jobs[name].config;
            // Like Jenkins since SECURITY-170: parameters the job does not declare are dropped.
            let params: BTreeMap<String, String> = form_urlencoded::parse(body)
                .into_owned()
                .filter(|(k, _)| config.contains(&format!("<name>{k}</name>")))
                .collect();
            let label = element_text(config, "assignedNode").unwrap_or_else(|| "built-in".into());
            s.next_queue_id += 1;
            let id = s.next_queue_id;
            let ready_at = s.queue_delay.map(|d| Instant::now() + d);
            s.queue.insert(
                id,
                QueueEntry {
                    id,
                    job: name.to_string(),
                    params,
                    why: format!("Waiting for next available executor on ‘{label}’"),
                    cancelled: false,
                    executable: None,
                    ready_at,
                },
            );
            let location = format!("{}queue/item/{id}/", s.base);
            (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
        }
        ("POST", ["doDelete"]) => {
            s.jobs.remove(name);
            for q in s
                .queue
                .values_mut()
                .filter(|q| q.job == name && q.waiting())
            {
                q.cancelled = true;
            }
            redirect(&folder_url(s, split_path(name).0))
        }
        ("GET", [n, "api", "json"]) => {
            match n
                .parse::<u64>()
                .ok()
                .and_then(|n| s.jobs[name].builds.get(&n))
            {
                Some(b) => json_ok(s.build_json(name, b)),
                None => text(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("POST", [n, "stop"]) => {
            let job = s.jobs.get_mut(name).expect("checked");
            match n.parse::<u64>().ok().and_then(|n| job.builds.get_mut(&n)) {
                Some(b) => {
                    if b.building {
                        b.building = false;
                        b.result = Some("ABORTED".into());
                        b.finish_at = None;
                    }
                    let to = format!("{}{}/{n}/", s.base, url_path(name));
                    redirect(&to)
                }
                None => text(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The absolute URL of a folder (`""`: the base).
fn folder_url(s: &State, folder: &str) -> String {
    if folder.is_empty() {
        s.base.clone()
    } else {
        format!("{}{}/", s.base, url_path(folder))
    }
}

fn is_xml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/xml") || ct.starts_with("text/xml"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
