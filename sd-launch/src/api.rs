//! The few calls `launch` makes to the API (`<api>/v4/...`, `Authorization: Bearer`).
//!
//! Like upstream's launcher: every call has a per-request timeout (`SDAPI_TIMEOUT_SECS`,
//! default 20 s) and is retried on transport errors, 5xx and 429 (`SDAPI_MAXRETRIES`,
//! default 5, waiting 100-300 ms). A 4xx other than 429 is never retried: in particular a
//! refused token exchange (the API refuses a second exchange once the build runs). Longer
//! outages are the business of [`crate::report`]: bounded backoff and the spool.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::timefmt::iso8601;
use crate::token::Token;

/// A failed API call: the request (method and path, never the token), the HTTP status if
/// there was an answer, and the server's message or the transport error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `PUT /v4/builds/42`.
    pub request: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The server's `message` (or body), or the transport error.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{}: HTTP {s}: {}", self.request, self.message),
            None => write!(f, "{}: {}", self.request, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// One line of a step's output, in the store's log format `{"t", "m", "n"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Milliseconds since the epoch.
    pub t: u64,
    /// The text, without the line ending.
    pub m: String,
    /// The line number within the step, from 0.
    pub n: u64,
}

/// A blocking client of the API for one build.
#[derive(Debug, Clone)]
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
    build_id: u64,
    token: Token,
    max_retries: u32,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn jitter_wait() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(100 + u64::from(nanos % 201))
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`, no trailing slash) for build
    /// `build_id`, authenticating with `token`.
    pub fn new(base: impl Into<String>, build_id: u64, token: Token) -> Self {
        let timeout = Duration::from_secs(env_u64("SDAPI_TIMEOUT_SECS", 20).max(1));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .user_agent(concat!("sd-launch/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            base: base.into(),
            build_id,
            token,
            max_retries: env_u64("SDAPI_MAXRETRIES", 5) as u32,
        }
    }

    /// Sets how often a failed call is retried.
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Uses `token` from now on.
    pub fn set_token(&mut self, token: Token) {
        self.token = token;
    }

    /// The token in use.
    pub fn token(&self) -> &Token {
        &self.token
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let request = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.expose());
        let mut attempt = 0;
        loop {
            let sent = match (method, body) {
                ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
                ("PUT", Some(b)) => self
                    .agent
                    .put(&url)
                    .header("Authorization", &auth)
                    .send_json(b),
                ("POST", Some(b)) => self
                    .agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .send_json(b),
                _ => {
                    return Err(ApiError {
                        request,
                        status: None,
                        message: "unsupported request".into(),
                    });
                }
            };
            let (retryable, err) = match sent {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp
                        .body_mut()
                        .with_config()
                        .limit(16 * 1024 * 1024)
                        .read_to_string()
                        .unwrap_or_default();
                    if (200..300).contains(&status) {
                        return Ok(if text.trim().is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(&text).map_err(|e| ApiError {
                                request: request.clone(),
                                status: Some(status),
                                message: format!("answer is not JSON: {e}"),
                            })?
                        });
                    }
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    (
                        status >= 500 || status == 429,
                        ApiError {
                            request: request.clone(),
                            status: Some(status),
                            message,
                        },
                    )
                }
                Err(e) => (
                    true,
                    ApiError {
                        request: request.clone(),
                        status: None,
                        message: e.to_string(),
                    },
                ),
            };
            if !retryable || attempt >= self.max_retries {
                return Err(err);
            }
            attempt += 1;
            std::thread::sleep(jitter_wait());
        }
    }

    fn build_path(&self) -> String {
        format!("/v4/builds/{}", self.build_id)
    }

    /// `POST /v4/builds/{id}/token` with `{"buildTimeout": minutes}`: the build token.
    pub fn exchange_token(&self, build_timeout_minutes: u64) -> Result<Token, ApiError> {
        let path = format!("{}/token", self.build_path());
        let v = self.call(
            "POST",
            &path,
            Some(&json!({ "buildTimeout": build_timeout_minutes })),
        )?;
        match v.get("token").and_then(Value::as_str) {
            Some(t) if !t.trim().is_empty() => Ok(Token::new(t)),
            _ => Err(ApiError {
                request: format!("POST {path}"),
                status: Some(200),
                message: "answer has no \"token\"".into(),
            }),
        }
    }

    /// `PUT /v4/builds/{id}` with `{"status", "meta": {}, ["statusMessage"]}`.
    pub fn update_status(&self, status: &str, message: Option<&str>) -> Result<(), ApiError> {
        let mut body = json!({ "status": status, "meta": {} });
        if let Some(m) = message {
            body["statusMessage"] = Value::String(m.to_string());
        }
        if let Ok(node) = std::env::var("NODE_ID") {
            body["stats"] = json!({ "hostname": node });
        }
        self.call("PUT", &self.build_path(), Some(&body)).map(drop)
    }

    /// `GET /v4/builds/{id}`: the build, with its `steps`.
    pub fn get_build(&self) -> Result<Value, ApiError> {
        self.call("GET", &self.build_path(), None)
    }

    /// `PUT /v4/builds/{id}/steps/{name}` with `{"startTime"}`.
    pub fn step_started(&self, step: &str, at: SystemTime) -> Result<(), ApiError> {
        self.step_started_at(step, &iso8601(at))
    }

    /// `PUT /v4/builds/{id}/steps/{name}` with `{"startTime"}` (ISO 8601 text).
    pub fn step_started_at(&self, step: &str, at: &str) -> Result<(), ApiError> {
        let path = format!("{}/steps/{}", self.build_path(), encode_segment(step));
        self.call("PUT", &path, Some(&json!({ "startTime": at })))
            .map(drop)
    }

    /// `PUT /v4/builds/{id}/steps/{name}` with `{"endTime", "code"}`.
    pub fn step_ended(&self, step: &str, at: SystemTime, code: i32) -> Result<(), ApiError> {
        self.step_ended_at(step, &iso8601(at), code)
    }

    /// `PUT /v4/builds/{id}/steps/{name}` with `{"endTime", "code"}` (ISO 8601 text).
    pub fn step_ended_at(&self, step: &str, at: &str, code: i32) -> Result<(), ApiError> {
        let path = format!("{}/steps/{}", self.build_path(), encode_segment(step));
        self.call("PUT", &path, Some(&json!({ "endTime": at, "code": code })))
            .map(drop)
    }

    /// `POST /v4/builds/{id}/steps/{name}/logs` with `[{"t", "m", "n"}, ...]`.
    pub fn post_logs(&self, step: &str, lines: &[LogLine]) -> Result<(), ApiError> {
        let path = format!("{}/steps/{}/logs", self.build_path(), encode_segment(step));
        let body: Vec<Value> = lines
            .iter()
            .map(|l| json!({ "t": l.t, "m": l.m, "n": l.n }))
            .collect();
        self.call("POST", &path, Some(&Value::Array(body)))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("install-deps_1.x~"), "install-deps_1.x~");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn errors_render_request_status_and_message() {
        let e = ApiError {
            request: "PUT /v4/builds/1".into(),
            status: Some(403),
            message: "Build is already running or finished.".into(),
        };
        assert_eq!(
            e.to_string(),
            "PUT /v4/builds/1: HTTP 403: Build is already running or finished."
        );
    }

    #[test]
    fn unreachable_api_is_an_error_without_the_token() {
        let c =
            ApiClient::new("http://127.0.0.1:9", 1, Token::new("s3cr3t-token")).with_max_retries(1);
        let e = c.get_build().unwrap_err();
        assert_eq!(e.status, None);
        assert!(!e.to_string().contains("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
