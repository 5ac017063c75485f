//! The fake Jenkins' HTTP surface: one handler that records the request, applies an
//! injected fault, checks basic auth and (for password-authenticated POSTs) the crumb,
//! and dispatches on the path. Jobs are answered in [`super::job_routes`].
//!
//! Item paths are walked as Jenkins does: `job/<folder>/job/<folder>/job/<name>/...`;
//! a segment that names neither a folder nor a job is 404. Names compare
//! case-insensitively, as in Jenkins' item maps.

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

use super::job_routes::job_route;
use super::pages::{access_denied, failure, not_found, send_error, text};
use super::state::{IssuedCrumb, State, join_path, split_path, url_path};
use super::{FaultAction, Recorded};
use crate::template::check_well_formed;

pub(crate) type Shared = Arc<Mutex<State>>;

/// How the request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// With the user's API token: POSTs need no crumb.
    ApiToken,
    /// With the user's password: POSTs need a crumb of the same session.
    Password,
}

/// One request, decoded.
pub(crate) struct Req<'a> {
    pub method: &'a str,
    pub query: BTreeMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

/// The one handler.
pub(crate) async fn handle(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (fault, index) = {
        let mut s = state.lock();
        s.requests.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            with_crumb: headers.get("Jenkins-Crumb").is_some(),
            status: 0,
        });
        let index = s.requests.len() - 1;
        let path = uri.path().to_string();
        let m = method.as_str();
        let hit = s.faults.iter_mut().position(|f| {
            f.remaining > 0
                && f.method.as_deref().is_none_or(|fm| fm == m)
                && path.contains(&f.path_contains)
        });
        let fault = hit.map(|i| {
            let f = &mut s.faults[i];
            f.remaining -= 1;
            f.action.clone()
        });
        (fault, index)
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
    {
        let mut s = state.lock();
        if let Some(rec) = s.requests.get_mut(index) {
            rec.status = r.status().as_u16();
        }
        if let Ok(v) = HeaderValue::try_from(s.version.as_str()) {
            r.headers_mut().insert("X-Jenkins", v);
        }
    }
    r
}

pub(crate) fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// A redirect with `status` (302 `sendRedirect`, 303 `SEE_OTHER`) to `to`.
pub(crate) fn redirect(status: StatusCode, to: &str) -> Response {
    (status, [(header::LOCATION, to.to_string())]).into_response()
}

fn authenticate(s: &State, headers: &HeaderMap) -> Option<Auth> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let basic = |secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{secret}", s.user))
        )
    };
    if given == basic(&s.token) {
        Some(Auth::ApiToken)
    } else if given == basic(&s.password) {
        Some(Auth::Password)
    } else {
        None
    }
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

    let Some(auth) = authenticate(&s, headers) else {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "<html><body>Invalid password/token for user</body></html>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Jenkins\""),
        );
        return r;
    };

    let Some(rest) = uri.path().strip_prefix(s.prefix.as_str()) else {
        return text(StatusCode::NOT_FOUND, "not under the path prefix");
    };
    let segs: Vec<String> = rest
        .split('/')
        .filter(|p| !p.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let req = Req {
        method: method.as_str(),
        query: form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        headers,
        body,
    };

    // core CrumbFilter: requests authenticated with an API token are excluded
    // (ApiCrumbExclusion, JENKINS-22474, since 2.96); others need a crumb of their session.
    if *method == Method::POST && s.crumb_issuer && auth == Auth::Password {
        let crumb = headers.get("Jenkins-Crumb").and_then(|v| v.to_str().ok());
        let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        if !s.crumb_ok(crumb, cookie) {
            return send_error(
                StatusCode::FORBIDDEN,
                "No valid crumb was included in the request",
            );
        }
    }

    match (req.method, segs.as_slice()) {
        ("GET", ["crumbIssuer", "api", "json"]) => issue_crumb(&mut s),
        ("GET", ["pluginManager", "api", "json"]) => {
            // core PluginManager.getApi: Jenkins.SYSTEM_READ.
            if !s.allowed("Overall/SystemRead") {
                return access_denied(&s.user, "Overall/SystemRead");
            }
            json_ok(s.plugins_json())
        }
        ("GET", ["label", label, "api", "json"]) => json_ok(s.label_json(label)),
        ("GET", ["queue", "item", id, "api", "json"]) => {
            match id.parse::<u64>().ok().and_then(|id| s.queue.get(&id)) {
                Some(q) => json_ok(s.queue_json(q)),
                None => not_found(),
            }
        }
        ("POST", ["queue", "cancelItem"]) => cancel_item(&mut s, &req),
        (_, rest) => item_route(&mut s, rest, &req),
    }
}

fn issue_crumb(s: &mut State) -> Response {
    if !s.crumb_issuer {
        return not_found();
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
    if let Ok(v) = HeaderValue::try_from(format!("JSESSIONID.fake={session}; Path=/; HttpOnly")) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// core `Queue.doCancelItem` (JENKINS-21311, ≈2.212): 204 for an item still in the
/// queue; 500 "Could not cancel run for id N" when `Item.cancel` returns false, which it
/// does for an item that already left the queue (a `LeftItem`, cached for 5 minutes);
/// 422 without the Cancel permission; 404 for an unknown or expired id. Before that
/// change every answer was a 302 (`forwardToPreviousPage`).
fn cancel_item(s: &mut State, req: &Req<'_>) -> Response {
    let raw = req.query.get("id").cloned().unwrap_or_default();
    let id = raw.parse::<u64>().ok();
    if !s.at_least(2, 212) {
        if let Some(q) = id.and_then(|id| s.queue.get_mut(&id))
            && q.waiting()
            && !s.denied.contains("Job/Cancel")
        {
            q.cancelled = true;
            q.left = true;
        }
        return redirect(StatusCode::FOUND, &s.base.clone());
    }
    let cancel_allowed = s.allowed("Job/Cancel");
    match id.and_then(|id| s.queue.get_mut(&id)) {
        None => send_error(
            StatusCode::NOT_FOUND,
            &format!("Provided id ({raw}) not found"),
        ),
        Some(_) if !cancel_allowed => send_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Item for id ({raw}) is not cancellable"),
        ),
        Some(q) if q.waiting() => {
            q.cancelled = true;
            q.left = true;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(_) => send_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Could not cancel run for id {raw}"),
        ),
    }
}

/// Walks `job/<name>` pairs through folders to a job (then [`job_route`]) or stays in a
/// folder, Jenkins itself being the root folder (then [`folder_route`]).
fn item_route(s: &mut State, segs: &[&str], req: &Req<'_>) -> Response {
    let mut folder = String::new();
    let mut rest = segs;
    while let ["job", name, more @ ..] = rest {
        let path = join_path(&folder, name);
        if let Some(f) = s.folder_key(&path) {
            folder = f;
            rest = more;
        } else if let Some(job) = s.job_key(&path) {
            return job_route(s, &job, more, req);
        } else {
            return not_found();
        }
    }
    folder_route(s, &folder, rest, req)
}

/// Requests to a folder (`""`: Jenkins' root): its item list and `createItem`.
fn folder_route(s: &mut State, folder: &str, rest: &[&str], req: &Req<'_>) -> Response {
    match (req.method, rest) {
        ("GET", ["api", "json"]) => json_ok(s.folder_json(folder)),
        ("POST", ["createItem"]) => create_item(s, folder, req),
        ("POST", ["doDelete"]) if !folder.is_empty() => {
            s.remove_folder(folder);
            redirect(StatusCode::FOUND, &folder_url(s, split_path(folder).0))
        }
        _ => not_found(),
    }
}

/// core `ItemGroupMixIn.createTopLevelItem` with an XML body: 200 and nothing else when
/// created; `Failure` (400 + `X-Error`) for a name in use (case-insensitively) or an
/// unsafe name; 400 without a Content-Type; 500 `IOException("Failed to persist
/// config.xml")` when the XML cannot be read. Classes of missing plugins are dropped
/// while loading, and the job is created anyway.
fn create_item(s: &mut State, folder: &str, req: &Req<'_>) -> Response {
    if !s.allowed("Job/Create") {
        return access_denied(&s.user, "Job/Create");
    }
    let Some(name) = req.query.get("name").cloned() else {
        return failure("Query parameter 'name' is required");
    };
    match content_type(req.headers) {
        None => return send_error(StatusCode::BAD_REQUEST, "No Content-Type header set"),
        Some(ct) if !is_xml(&ct) => {
            return failure("Requires mode parameter");
        }
        Some(_) => {}
    }
    if name.is_empty() {
        return failure("No name is specified");
    }
    if let Some(c) = name.chars().find(|c| "?*/\\%!@#$^&|<>[]:;".contains(*c)) {
        return failure(&format!("‘{c}’ is an unsafe character"));
    }
    let path = join_path(folder, &name);
    if s.item_exists(&path) {
        return failure(&format!("A job already exists with the name ‘{name}’"));
    }
    let xml = String::from_utf8_lossy(req.body).into_owned();
    if check_well_formed(&xml).is_err() {
        return send_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "java.io.IOException: Failed to persist config.xml",
        );
    }
    let job = s.load_job(xml);
    s.jobs.insert(path, job);
    text(StatusCode::OK, "")
}

/// The absolute URL of a folder (`""`: the base).
pub(crate) fn folder_url(s: &State, folder: &str) -> String {
    if folder.is_empty() {
        s.base.clone()
    } else {
        format!("{}{}/", s.base, url_path(folder))
    }
}

pub(crate) fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(crate) fn is_xml(ct: &str) -> bool {
    ct.starts_with("application/xml") || ct.starts_with("text/xml")
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
