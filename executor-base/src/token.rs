//! Token exchange: the temporary token of `start` for a build token.
//!
//! `POST {apiUri}/v4/builds/{buildId}/token` with `Authorization: Bearer <temporary>` and
//! `{"buildTimeout": <build timeout + TOKEN_BUFFER_MINUTES>}`; the API answers
//! `{"token": "<build JWT>"}` (`screwdriver.md` §8.5, §9.5). A token whose `scope` claim
//! lacks `temporal` is already a build token and comes back unchanged without a request;
//! so does an opaque (non-JWT) token, which has no scope to exchange. An expired token is
//! refused before any request.
//!
//! The API refuses the exchange once the build is RUNNING (403 "Build is already running
//! or finished."), so the exchange is never retried after a 4xx other than 408 and 429.
//! It is retried, with exponential backoff and jitter ([`RetryPolicy`]), only on connect
//! errors, 5xx, 408 and 429 (waiting at least `Retry-After`, seconds or HTTP date). Each
//! attempt is bounded by [`TokenExchangeOptions::request_timeout`]; a timed-out attempt is
//! not retried, so a server that never answers costs one timeout.
//!
//! `reqwest` (rustls, no system OpenSSL) is the HTTP client: the API server is a plain
//! JSON-over-HTTPS service and reqwest is the workspace's client for those.
//!
//! Statuses and transport failures map to errors through [`crate::http`], the mapping every
//! backend shares; the one exchange-specific case is 401, a refused temporary token
//! ([`ErrorKind::TokenRejected`]). Errors keep the HTTP status and the server's `message`
//! (hapi's error body) but never the token: neither the temporary token nor the answer is formatted into any error or
//! log line, and a server message that echoes the temporary token is redacted.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::StartConfig;
use crate::engine::RetryPolicy;
use crate::error::{Error, ErrorKind};
use crate::http::{self, Transport};
use crate::jwt::{self, JwtVerifier, SCOPE_TEMPORAL};
use crate::timeout::TOKEN_BUFFER_MINUTES;

const OPERATION: &str = "token_exchange";
/// Longest server message kept in an error.
const MAX_MESSAGE: usize = 512;

/// How the exchange talks to the API server.
#[derive(Debug, Clone)]
pub struct TokenExchangeOptions {
    /// Bound on each request, connect to last byte (default 20 s, the launcher's API
    /// timeout).
    pub request_timeout: Duration,
    /// Retries on connect errors, 5xx and 429 (default: 5 retries from 1 s doubling,
    /// waits capped at 30 s).
    pub retry: RetryPolicy,
    /// Minutes added to the build timeout for the token's lifetime (default
    /// [`TOKEN_BUFFER_MINUTES`]).
    pub buffer_minutes: u32,
    /// When set, the returned build token's signature and expiry are verified.
    pub verifier: Option<JwtVerifier>,
}

impl Default for TokenExchangeOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(20),
            retry: RetryPolicy::default(),
            buffer_minutes: TOKEN_BUFFER_MINUTES,
            verifier: None,
        }
    }
}

/// Exchanges temporary tokens for build tokens against the build's API server.
///
/// Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct TokenExchange {
    client: reqwest::Client,
    options: TokenExchangeOptions,
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchange")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A failed attempt and whether another one may help.
struct Attempt {
    error: Error,
    retry: bool,
}

impl TokenExchange {
    /// An exchange with its own HTTP client.
    ///
    /// The client keeps no idle connections: an exchange happens once per build, and an
    /// idle connection would be tied to the runtime that opened it.
    pub fn new(options: TokenExchangeOptions) -> Result<Self, Error> {
        crate::tls::install_default_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("executor-base/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("cannot build the HTTP client: {e}"),
                )
                .with_operation(OPERATION)
            })?;
        Ok(Self::with_client(client, options))
    }

    /// An exchange using `client` (shares its connection pool and TLS settings); the
    /// per-request bound is still [`TokenExchangeOptions::request_timeout`].
    pub fn with_client(client: reqwest::Client, options: TokenExchangeOptions) -> Self {
        Self { client, options }
    }

    /// The options.
    pub fn options(&self) -> &TokenExchangeOptions {
        &self.options
    }

    /// The build token for `build`, whose timeout is `build_timeout_minutes` (the token
    /// asked for lives that long plus [`TokenExchangeOptions::buffer_minutes`]).
    ///
    /// Errors: [`ErrorKind::TokenRejected`] (expired token, 401, or a returned token that
    /// fails verification), [`ErrorKind::PermissionDenied`] (403: the build is already
    /// running or finished), [`ErrorKind::NotFound`] (404), [`ErrorKind::RateLimited`],
    /// [`ErrorKind::Unavailable`] (connect errors, 503), [`ErrorKind::Timeout`] (504, 408, no answer),
    /// [`ErrorKind::Unexpected`] (other statuses, malformed answers); see [`crate::http`].
    pub async fn exchange(
        &self,
        build: &StartConfig,
        build_timeout_minutes: u32,
    ) -> Result<SecretString, Error> {
        let temporary = &build.token;
        match jwt::peek(temporary) {
            Ok(claims) if claims.is_expired_at(chrono::Utc::now()) => {
                return Err(
                    Error::new(ErrorKind::TokenRejected, "temporary token is expired")
                        .with_operation(OPERATION)
                        .with_context("buildId", build.build_id.to_string()),
                );
            }
            Ok(claims) if !claims.has_scope(SCOPE_TEMPORAL) => {
                tracing::debug!(build_id = %build.build_id, "token has no temporal scope; using it as the build token");
                return Ok(temporary.clone());
            }
            Ok(_) => {}
            Err(_) => {
                tracing::debug!(build_id = %build.build_id, "token is not a JWT; using it as the build token");
                return Ok(temporary.clone());
            }
        }

        let minutes = build_timeout_minutes
            .checked_add(self.options.buffer_minutes)
            .ok_or_else(|| Error::invalid_field("buildTimeout", "is too large"))?;
        let url = format!(
            "{}/v4/builds/{}/token",
            build.api_uri.as_str().trim_end_matches('/'),
            build.build_id
        );

        let mut retries = 0;
        let token = loop {
            match self.attempt(&url, temporary, minutes).await {
                Ok(token) => break token,
                Err(Attempt { error, retry }) => {
                    let error = error
                        .with_operation(OPERATION)
                        .with_context("buildId", build.build_id.to_string());
                    let delay = if retry && retries < self.options.retry.max_retries {
                        self.options.retry.delay(retries, error.retry_after())
                    } else {
                        None
                    };
                    let Some(delay) = delay else {
                        let error = if retries > 0 {
                            error.with_context("attempts", (retries + 1).to_string())
                        } else {
                            error
                        };
                        tracing::warn!(build_id = %build.build_id, error = %error, "token exchange failed");
                        return Err(error);
                    };
                    tracing::debug!(
                        build_id = %build.build_id,
                        attempt = retries + 1,
                        kind = %error.kind(),
                        status = error.status(),
                        delay_ms = delay.as_millis() as u64,
                        "token exchange failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
            }
        };

        if let Some(verifier) = &self.options.verifier {
            jwt::verify(&token, verifier).map_err(|e| {
                Error::new(
                    ErrorKind::TokenRejected,
                    format!("exchanged build token refused: {}", e.message()),
                )
                .with_operation(OPERATION)
                .with_context("buildId", build.build_id.to_string())
            })?;
        }
        Ok(token)
    }

    async fn attempt(
        &self,
        url: &str,
        temporary: &SecretString,
        minutes: u32,
    ) -> Result<SecretString, Attempt> {
        let response = self
            .client
            .post(url)
            .bearer_auth(temporary.expose_secret())
            .json(&serde_json::json!({ "buildTimeout": minutes }))
            .timeout(self.options.request_timeout)
            .send()
            .await
            .map_err(|e| transport_error(&e, self.options.request_timeout))?;

        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| http::parse_retry_after(v, SystemTime::now()));
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&e, self.options.request_timeout))?;

        if status == StatusCode::OK || status == StatusCode::CREATED {
            return token_from_answer(&body).map_err(|message| Attempt {
                error: Error::new(ErrorKind::Unexpected, message).with_status(status.as_u16()),
                retry: false,
            });
        }
        Err(status_error(status, &body, retry_after, temporary))
    }
}

/// The `token` of a `{"token": "..."}` answer, moved (not copied) into a secret.
fn token_from_answer(body: &[u8]) -> Result<SecretString, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => match m.remove("token") {
            Some(Value::String(t)) if !t.trim().is_empty() => Ok(SecretString::from(t)),
            Some(Value::String(_)) => Err("the answer's \"token\" is empty"),
            Some(Value::Null) | None => Err("the answer has no \"token\""),
            Some(_) => Err("the answer's \"token\" is not a string"),
        },
        Ok(_) => Err("the answer is not a JSON object"),
        Err(_) => Err("the answer is not valid JSON"),
    }
}

/// Maps a non-success answer to a typed error with the server's message.
fn status_error(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
    temporary: &SecretString,
) -> Attempt {
    let message = server_message(body, temporary);
    let text = |what: &str| {
        if message.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {message}")
        }
    };
    let code = status.as_u16();
    let what = match code {
        401 => "temporary token refused",
        403 => "exchange refused (the build is already running or finished)",
        404 => "build not found",
        429 => "rate limited",
        502..=504 => "API server unavailable",
        500..=599 => "API server error",
        _ => "unexpected answer",
    };
    let mut error = http::status_error(code, text(what), retry_after);
    if code == 401 {
        error = Error::new(ErrorKind::TokenRejected, error.message()).with_status(code);
    }
    Attempt {
        retry: error.is_temporary(),
        error,
    }
}

/// The server's `message` (hapi: `{"statusCode","error","message"}`), else its text,
/// shortened, single-line, with any echo of the temporary token redacted.
fn server_message(body: &[u8], temporary: &SecretString) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => match (m.get("message"), m.get("error")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => s.clone(),
            _ => String::from_utf8_lossy(body).into_owned(),
        },
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let secret = temporary.expose_secret();
    let text = if secret.is_empty() {
        text
    } else {
        text.replace(secret, "[REDACTED]")
    };
    let mut one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string();
    if one_line.chars().count() > MAX_MESSAGE {
        one_line = one_line.chars().take(MAX_MESSAGE).collect::<String>() + "...";
    }
    one_line
}

/// Connect errors are retried; timeouts and other transport failures are not (the
/// request may have been applied).
fn transport_error(e: &reqwest::Error, bound: Duration) -> Attempt {
    // reqwest's Display includes the URL, which carries no secret (apiUri refuses
    // credentials); the Authorization header is never part of it.
    let transport = if e.is_timeout() {
        Transport::Timeout
    } else if e.is_connect() {
        Transport::Connect
    } else {
        Transport::classify(e)
    };
    let message = match transport {
        Transport::Timeout => format!("no answer within {} ms", bound.as_millis()),
        Transport::Connect => format!("cannot connect to the API server: {}", chain(e)),
        Transport::Broken => format!("request failed: {}", chain(e)),
    };
    Attempt {
        error: http::transport_error(transport, message),
        retry: transport == Transport::Connect,
    }
}

/// The error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

/// [`TokenExchange::exchange`] with default options and a process-wide HTTP client.
///
/// ```no_run
/// # async fn f(build: &executor_base::StartConfig) -> executor_base::Result<()> {
/// use executor_base::{TimeoutPolicy, token::exchange_token_for_build};
/// let minutes = TimeoutPolicy::default().minutes(&build.annotations);
/// let build_token = exchange_token_for_build(build, minutes).await?;
/// # Ok(()) }
/// ```
pub async fn exchange_token_for_build(
    build: &StartConfig,
    build_timeout_minutes: u32,
) -> Result<SecretString, Error> {
    static DEFAULT: OnceLock<TokenExchange> = OnceLock::new();
    let exchange = match DEFAULT.get() {
        Some(x) => x,
        None => {
            let x = TokenExchange::new(TokenExchangeOptions::default())?;
            DEFAULT.get_or_init(|| x)
        }
    };
    exchange.exchange(build, build_timeout_minutes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_short_single_line_and_redacted() {
        let t = SecretString::from("s3cr3t-token");
        let body = br#"{"statusCode":403,"error":"Forbidden","message":"Build is already running or finished."}"#;
        assert_eq!(
            server_message(body, &t),
            "Build is already running or finished."
        );
        assert_eq!(server_message(br#"{"error":"Bad"}"#, &t), "Bad");
        assert_eq!(
            server_message(b"bad token s3cr3t-token\nline", &t),
            "bad token [REDACTED] line"
        );
        let long = "x".repeat(2000);
        assert_eq!(server_message(long.as_bytes(), &t).len(), MAX_MESSAGE + 3);
    }

    #[test]
    fn statuses_map_to_kinds() {
        let t = SecretString::from("t");
        let cases = [
            (401, ErrorKind::TokenRejected, false),
            (403, ErrorKind::PermissionDenied, false),
            (404, ErrorKind::NotFound, false),
            (400, ErrorKind::Unexpected, false),
            (409, ErrorKind::AlreadyExists, false),
            (429, ErrorKind::RateLimited, true),
            (500, ErrorKind::Unexpected, true),
            (503, ErrorKind::Unavailable, true),
            (504, ErrorKind::Timeout, true),
        ];
        for (code, kind, retry) in cases {
            let a = status_error(StatusCode::from_u16(code).unwrap(), b"", None, &t);
            assert_eq!(
                (a.error.kind(), a.retry, a.error.status()),
                (kind, retry, Some(code)),
                "{code}"
            );
            assert_eq!(a.error.is_temporary(), retry, "{code}");
        }
    }
}
