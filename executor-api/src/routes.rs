//! The HTTP surface (axum): thin handlers that authenticate, parse and call the rules in
//! `ops`.
//!
//! | Method | Path | Who | What |
//! |---|---|---|---|
//! | GET | `/v4/status` | anyone | `OK` |
//! | GET | `/v4/auth/key` | anyone | `{"key": "<PEM>"}`: the ES256 public key |
//! | POST | `/v4/builds` | user | submit `{steps, container?, annotations?, environment?, executor?, jobId?, id?}` → 201 `{"id"}`; 422 `{..., "preflight": {"backend", "passed", "findings"}}` when the executor's pre-flight fails; `?dryRun=true`: 200 with the pre-flight, nothing stored or started |
//! | GET | `/v4/builds` | user | `[{"id", "state", "status"}]` |
//! | GET | `/v4/builds/{id}` | user, own build | the build, its `state` and `steps` |
//! | PUT | `/v4/builds/{id}` | user, own build | `{status?, statusMessage?, meta?}` (§9.6 rules) |
//! | POST | `/v4/builds/{id}/token` | own temporal token | `{buildTimeout}` → `{"token"}` (§9.5) |
//! | GET | `/v4/builds/{id}/steps[/{name}]` | user, own build | steps |
//! | PUT | `/v4/builds/{id}/steps/{name}` | admin, own build | `{startTime}` or `{endTime, code}` |
//! | GET | `/v4/builds/{id}/steps/{name}/logs?from=N` | user, own build | `[{"t", "m", "n"}]` |
//! | POST | `/v4/builds/{id}/steps/{name}/logs` | admin, own build | append `[{"t", "m", "n"}]` |
//!
//! Every error is JSON (`{"statusCode", "error", "message"}`), including unknown paths
//! (404), methods (405), bodies over the limit (413) and anything the framework itself
//! refuses. Ids in paths outside 1..2^53 are 422; unknown fields in a body are 422
//! naming the field and the closest known one.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::auth::authenticate;
use crate::error::HttpError;
use crate::fields::{ID_RANGE, PathId};
use crate::state::ApiState;
use executor_base::FieldError;

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v4/status", get(|| async { "OK" }))
        .route("/v4/auth/key", get(auth_key))
        .route("/v4/builds", post(submit).get(list))
        .route("/v4/builds/{id}", get(get_build).put(update_build))
        .route("/v4/builds/{id}/token", post(exchange))
        .route("/v4/builds/{id}/steps", get(list_steps))
        .route(
            "/v4/builds/{id}/steps/{name}",
            get(get_step).put(update_step),
        )
        .route(
            "/v4/builds/{id}/steps/{name}/logs",
            get(get_logs).post(post_logs),
        )
        .fallback(|| async { HttpError::not_found("Not Found") })
        .method_not_allowed_fallback(|| async {
            HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Turns every error answer that is not JSON yet (the framework's own: 413 for a body
/// over the limit, 400 for an unreadable body or query) into the API's JSON shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text
    };
    HttpError::new(status, message).into_response()
}

/// A build id from the path: 400 when it is not an integer, 422 outside 1..2^53.
fn parse_id(s: &str) -> Result<u64, HttpError> {
    match PathId::parse(s) {
        PathId::Valid(n) => Ok(n),
        PathId::OutOfRange => Err(HttpError::unprocessable(vec![FieldError::new(
            "id", ID_RANGE,
        )])),
        PathId::NotANumber => Err(HttpError::bad_request(format!(
            "id: must be a positive integer, got {s:?}"
        ))),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("Invalid JSON body: {e}")))
}

async fn auth_key(State(s): State<ApiState>) -> Json<Value> {
    Json(json!({ "key": s.issuer().public_key_pem() }))
}

/// `POST /v4/builds`: 201 with the new id; 422 with the findings when the executor's
/// pre-flight fails. With `?dryRun=true`, 200 with the pre-flight (`{"backend",
/// "passed", "findings"}`) and nothing stored or started.
async fn submit(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let caller = authenticate(&s, &headers)?;
    let body = parse_body(&body)?;
    if q.get("dryRun")
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
    {
        let p = s.op_dry_run(&caller, &body).await?;
        return Ok((StatusCode::OK, Json(p)).into_response());
    }
    let id = s.op_submit(&caller, &body).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v4/builds/{id}"))],
        Json(json!({ "id": id.get() })),
    )
        .into_response())
}

async fn list(State(s): State<ApiState>, headers: HeaderMap) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    s.op_list(&caller).await.map(Json)
}

async fn get_build(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    s.op_get(&caller, parse_id(&id)?).await.map(Json)
}

async fn update_build(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    let id = parse_id(&id)?;
    s.op_update(&caller, id, &parse_body(&body)?)
        .await
        .map(Json)
}

async fn exchange(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    let id = parse_id(&id)?;
    s.op_exchange(&caller, id, &parse_body(&body)?)
        .await
        .map(Json)
}

async fn list_steps(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    s.op_steps(&caller, parse_id(&id)?, None).await.map(Json)
}

async fn get_step(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    s.op_steps(&caller, parse_id(&id)?, Some(&name))
        .await
        .map(Json)
}

async fn update_step(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    let id = parse_id(&id)?;
    s.op_step_update(&caller, id, &name, &parse_body(&body)?)
        .await
        .map(Json)
}

async fn get_logs(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, HttpError> {
    let caller = authenticate(&s, &headers)?;
    let id = parse_id(&id)?;
    let from = match q.get("from") {
        Some(f) => f.parse::<u64>().map_err(|_| {
            HttpError::bad_request(format!("from: must be a line number, got {f:?}"))
        })?,
        None => 0,
    };
    s.op_logs_get(&caller, id, &name, from).await.map(Json)
}

async fn post_logs(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, HttpError> {
    let caller = authenticate(&s, &headers)?;
    let id = parse_id(&id)?;
    s.op_logs_post(&caller, id, &name, &parse_body(&body)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
