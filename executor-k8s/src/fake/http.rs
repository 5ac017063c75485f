//! The fake's HTTP surface (axum): the core/v1 pod and secret endpoints kube-rs uses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::store::{ApiError, Change, Kind, Selector};
use super::{DeleteRecord, Shared};

type Q = Query<HashMap<String, String>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api/v1/namespaces/{ns}", get(get_namespace))
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(access_review),
        )
        .route(
            "/api/v1/namespaces/{ns}/{kind}",
            get(list_or_watch).post(create).delete(delete_collection),
        )
        .route(
            "/api/v1/namespaces/{ns}/{kind}/{name}",
            get(get_one).delete(delete_one).patch(patch_one),
        )
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults_and_counts,
        ))
        .with_state(shared)
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut r = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError, retry_after: Option<u64>) -> Response {
    let mut r = json_response(e.code, &e.body(retry_after));
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// `<verb> <resource>` of a request, as the API server's audit log would say it.
fn verb_of(method: &Method, path: &str, query: Option<&str>) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (kind, item) = match parts.as_slice() {
        [_, kind] => (*kind, false),
        [_, kind, _] => (*kind, true),
        _ => return None,
    };
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method.as_str(), item) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("DELETE", false) => "deletecollection",
        ("GET", true) => "get",
        ("DELETE", true) => "delete",
        ("PATCH", true) => "patch",
        ("PUT", true) => "update",
        _ => "other",
    };
    Some((verb.to_string(), kind.to_string()))
}

async fn faults_and_counts(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some((verb, kind)) = verb_of(req.method(), req.uri().path(), req.uri().query()) {
        if verb == "watch" {
            s.watch_queries
                .lock()
                .push(req.uri().query().unwrap_or_default().to_string());
        }
        let key = format!("{verb} {kind}");
        s.log.lock().push(key.clone());
        s.details.lock().push(super::RequestRecord {
            verb_resource: key.clone(),
            query: req.uri().query().unwrap_or_default().to_string(),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
        *s.counts.lock().entry(key.clone()).or_default() += 1;
        if s.denied.lock().contains(&key) {
            return error_response(
                &forbidden(&verb, &kind, &namespace_of(req.uri().path())),
                None,
            );
        }
        let fault = {
            let mut faults = s.faults.lock();
            let hit = faults.iter_mut().find(|f| {
                f.times > 0
                    && f.verb.as_deref().is_none_or(|v| v == verb)
                    && f.kind.as_deref().is_none_or(|k| k == kind)
            });
            hit.map(|f| {
                f.times -= 1;
                f.clone()
            })
        };
        if let Some(f) = fault {
            let reason = match f.status {
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InjectedFault",
            };
            let e = ApiError::new(
                f.status,
                reason,
                format!("injected fault for {verb} {kind}"),
            );
            if f.applied {
                let _ = next.run(req).await;
            }
            return error_response(&e, f.retry_after);
        }
    }
    next.run(req).await
}

/// The namespace of a namespaced path (`/api/v1/namespaces/<ns>/...`).
fn namespace_of(path: &str) -> String {
    path.strip_prefix("/api/v1/namespaces/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// The RBAC authorizer's refusal, worded as the API server words it.
fn forbidden(verb: &str, resource: &str, ns: &str) -> ApiError {
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{resource} is forbidden: User \"fake\" cannot {verb} resource \"{resource}\" in API group \"\" in the namespace \"{ns}\""
        ),
    )
}

fn absent_namespace(ns: &str) -> ApiError {
    ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
}

/// `GET /api/v1/namespaces/<ns>`: every namespace exists unless removed.
async fn get_namespace(State(s): State<Arc<Shared>>, Path(ns): Path<String>) -> Answer {
    if s.absent_namespaces.lock().contains(&ns) {
        return Err(absent_namespace(&ns));
    }
    Ok(json_response(
        200,
        &json!({"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": ns}, "status": {"phase": "Active"}}),
    ))
}

/// `POST .../selfsubjectaccessreviews`: allowed unless [`super::FakeApiServer::deny`]
/// denied the verb on the resource; the review echoed with its status, as the API
/// server answers (201).
async fn access_review(State(s): State<Arc<Shared>>, body: Bytes) -> Answer {
    let mut review =
        parse_body(&body)?.ok_or_else(|| ApiError::new(400, "BadRequest", "empty body"))?;
    let attrs = &review["spec"]["resourceAttributes"];
    let key = format!(
        "{} {}",
        attrs["verb"].as_str().unwrap_or_default(),
        attrs["resource"].as_str().unwrap_or_default()
    );
    let allowed = !s.denied.lock().contains(&key);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by the fake"})
    } else {
        json!({"allowed": false})
    };
    Ok(json_response(201, &review))
}

async fn version() -> Response {
    json_response(
        200,
        &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self, None)
    }
}

type Answer = Result<Response, ApiError>;

fn kind_of(kind: &str) -> Result<Kind, ApiError> {
    Kind::from_path(kind).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({kind})"),
        )
    })
}

fn selector(q: &HashMap<String, String>) -> Result<Selector, ApiError> {
    Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::new(400, "BadRequest", format!("labelSelector: {e}")))
}

fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn list_body(kind: Kind, items: Vec<Value>, rv: u64, metadata_only: bool) -> Value {
    if metadata_only {
        let items: Vec<Value> = items
            .into_iter()
            .map(|o| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]}))
            .collect();
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
               "metadata": {"resourceVersion": rv.to_string()}, "items": items})
    } else {
        json!({"apiVersion": "v1", "kind": format!("{}List", kind.kind()),
               "metadata": {"resourceVersion": rv.to_string()}, "items": items})
    }
}

async fn list_or_watch(
    State(s): State<Arc<Shared>>,
    Path((ns, kind)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Q,
) -> Answer {
    let kind = kind_of(&kind)?;
    let sel = selector(&q)?;
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(s, kind, ns, sel, &q).await;
    }
    let (items, rv) = {
        let st = s.store.lock();
        (st.list(kind, &ns, &sel), st.rv())
    };
    Ok(json_response(
        200,
        &list_body(kind, items, rv, wants_metadata(&headers)),
    ))
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn watch(
    s: Arc<Shared>,
    kind: Kind,
    ns: String,
    sel: Selector,
    q: &HashMap<String, String>,
) -> Answer {
    let mut gate = s.watch_gate.subscribe();
    if gate.wait_for(|open| *open).await.is_err() {
        return Err(ApiError::new(503, "ServiceUnavailable", "shutting down"));
    }
    let rv = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<u64>());
    let rv = rv
        .transpose()
        .map_err(|_| ApiError::new(400, "BadRequest", "resourceVersion: not a number"))?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    );
    let start = s.store.lock().watch_from(kind, &ns, &sel, rv);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut disconnect = s.disconnect.subscribe();
    let bookmark_every = *s.bookmark_interval.lock();
    match start {
        Err(e) => {
            // As the API server does: 200, then one ERROR event, then the end.
            let line = event_line("ERROR", &e.body(None));
            tokio::spawn(async move {
                let _ = tx.send(line).await;
            });
        }
        Ok(start) => {
            tokio::spawn(async move {
                let mut last_rv = start.from_rv;
                let mut rx_changes = start.rx;
                // A cut (or paused) stream ends before sending anything more, even when
                // a change is already waiting.
                macro_rules! cut {
                    () => {
                        disconnect.has_changed().unwrap_or(true)
                    };
                }
                let wanted = |c: &Change| c.kind == kind && c.ns == ns && sel.matches(&c.object);
                for c in start.replay {
                    if cut!() {
                        return;
                    }
                    if wanted(&c) && tx.send(event_line(c.event, &c.object)).await.is_err() {
                        return;
                    }
                    last_rv = last_rv.max(c.rv);
                }
                let bookmark = |rv: u64| {
                    event_line(
                        "BOOKMARK",
                        &json!({"kind": kind.kind(), "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}),
                    )
                };
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let mut tick = tokio::time::interval(bookmark_every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = disconnect.changed() => return,
                        _ = &mut deadline => {
                            if bookmarks && !cut!() {
                                let _ = tx.send(bookmark(last_rv)).await;
                            }
                            return;
                        }
                        _ = tick.tick(), if bookmarks => {
                            if cut!() || tx.send(bookmark(last_rv)).await.is_err() {
                                return;
                            }
                        }
                        msg = rx_changes.recv() => match msg {
                            Ok(c) => {
                                if cut!() {
                                    return;
                                }
                                if c.rv <= last_rv {
                                    continue;
                                }
                                last_rv = c.rv;
                                if wanted(&c) && tx.send(event_line(c.event, &c.object)).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                let e = ApiError::new(410, "Expired", "watch fell behind: too old resource version");
                                let _ = tx.send(event_line("ERROR", &e.body(None))).await;
                                return;
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            });
        }
    }
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn parse_body(body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON body: {e}")))
}

async fn create(
    State(s): State<Arc<Shared>>,
    Path((ns, kind)): Path<(String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Answer {
    let kind = kind_of(&kind)?;
    let obj = parse_body(&body)?.ok_or_else(|| ApiError::new(400, "BadRequest", "empty body"))?;
    if q.get("fieldValidation").map(String::as_str) == Some("Strict") {
        super::validate::strict(kind, &obj)?;
    }
    if kind == Kind::Pods {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        super::validate::runtime_class(&obj, name, &s.runtime_classes.lock())?;
    }
    if s.absent_namespaces.lock().contains(&ns) {
        return Err(absent_namespace(&ns));
    }
    if q.get("dryRun").map(String::as_str) == Some("All") {
        // Validated and admitted, never stored (`dryRun=All`): the object as it would be.
        return Ok(json_response(201, &obj));
    }
    let created = s.store.lock().create(kind, &ns, obj)?;
    Ok(json_response(201, &created))
}

async fn get_one(
    State(s): State<Arc<Shared>>,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> Answer {
    let kind = kind_of(&kind)?;
    let obj = s.store.lock().get(kind, &ns, &name).cloned();
    let obj = obj.ok_or_else(|| super::store::not_found(kind, &name))?;
    Ok(json_response(200, &obj))
}

/// The grace period of a delete: query parameter or `DeleteOptions` body.
fn grace(q: &HashMap<String, String>, body: &Option<Value>) -> Option<i64> {
    q.get("gracePeriodSeconds")
        .and_then(|v| v.parse().ok())
        .or_else(|| body.as_ref().and_then(|b| b["gracePeriodSeconds"].as_i64()))
}

async fn delete_one(
    State(s): State<Arc<Shared>>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Answer {
    let kind = kind_of(&kind)?;
    let opts = parse_body(&body)?;
    s.deletions.lock().push(DeleteRecord {
        verb: "delete".into(),
        resource: kind.path().into(),
        target: name.clone(),
        grace_period_seconds: grace(&q, &opts),
    });
    let deleted = s.store.lock().delete(kind, &ns, &name)?;
    Ok(json_response(200, &deleted))
}

async fn delete_collection(
    State(s): State<Arc<Shared>>,
    Path((ns, kind)): Path<(String, String)>,
    Query(q): Q,
    body: Bytes,
) -> Answer {
    let kind = kind_of(&kind)?;
    let sel = selector(&q)?;
    let opts = parse_body(&body)?;
    s.deletions.lock().push(DeleteRecord {
        verb: "deletecollection".into(),
        resource: kind.path().into(),
        target: q.get("labelSelector").cloned().unwrap_or_default(),
        grace_period_seconds: grace(&q, &opts),
    });
    let (items, rv) = {
        let mut st = s.store.lock();
        let items = st.delete_collection(kind, &ns, &sel);
        (items, st.rv())
    };
    Ok(json_response(200, &list_body(kind, items, rv, false)))
}

async fn patch_one(
    State(s): State<Arc<Shared>>,
    Path((ns, kind, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let kind = kind_of(&kind)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !(ct.starts_with("application/merge-patch+json")
        || ct.starts_with("application/strategic-merge-patch+json"))
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the fake supports merge patches only, not {ct:?}"),
        ));
    }
    let patch =
        parse_body(&body)?.ok_or_else(|| ApiError::new(400, "BadRequest", "empty patch"))?;
    let patched = s.store.lock().patch(kind, &ns, &name, &patch)?;
    Ok(json_response(200, &patched))
}
