//! The API's error answers: Screwdriver's (hapi/Boom) JSON shape
//! `{"statusCode": 404, "error": "Not Found", "message": "Build does not exist"}`, plus the
//! rejected fields for validation errors.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use executor_base::FieldError;
use serde_json::{Value, json};

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
    /// Rejected fields (`[{"field", "reason"}]`), for 400 and 422.
    pub fields: Vec<FieldError>,
    /// The executor's pre-flight findings, for a build refused by pre-flight (422).
    pub preflight: Option<executor_base::Preflight>,
}

impl HttpError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            fields: Vec::new(),
            preflight: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422 Unprocessable Entity listing the rejected fields.
    pub fn unprocessable(fields: Vec<FieldError>) -> Self {
        let message = fields
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            fields,
            preflight: None,
        }
    }

    /// 422 Unprocessable Entity: the executor's pre-flight of the build failed; the body
    /// carries the findings (`"preflight": {"backend", "passed", "findings"}`).
    pub fn preflight_failed(preflight: executor_base::Preflight) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!(
                "The {} executor's pre-flight failed: {}",
                preflight.backend,
                preflight.summary()
            ),
            fields: Vec::new(),
            preflight: Some(preflight),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "statusCode": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        });
        if !self.fields.is_empty() {
            v["fields"] = self
                .fields
                .iter()
                .map(|f| json!({"field": f.field, "reason": f.reason}))
                .collect();
        }
        if let Some(p) = &self.preflight {
            v["preflight"] = serde_json::to_value(p).unwrap_or(Value::Null);
        }
        v
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boom_shape_with_fields() {
        let e = HttpError::unprocessable(vec![FieldError::new("steps", "must not be empty")]);
        assert_eq!(
            e.body(),
            json!({"statusCode": 422, "error": "Unprocessable Entity", "message": "steps: must not be empty",
                   "fields": [{"field": "steps", "reason": "must not be empty"}]})
        );
        assert_eq!(
            HttpError::not_found("Build does not exist").to_string(),
            "404: Build does not exist"
        );
    }
}
