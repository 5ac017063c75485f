//! A client of a running reference API (`sdx serve`), for `run`, `status` and `stop`
//! with `--api`.

use executor_api::LogLine;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::error::{CliError, CliResult};

/// The API at one URL, with the administrator's token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<SecretString>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> CliResult<Self> {
        executor_base::config::parse_http_url(base)
            .map_err(|r| CliError::usage(format!("--api: {r}")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::failure(format!("cannot create an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()).map(SecretString::from),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose_secret());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::failure(format!(
                "{method} {path}: cannot reach the API at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                CliError::failure(format!(
                    "{method} {path}: the API's answer is not JSON: {e}"
                ))
            });
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let hint = if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            " (set --api-token or SDX_API_TOKEN)"
        } else {
            ""
        };
        let e = format!(
            "{method} {path}: the API answered {}: {message}{hint}",
            status.as_u16()
        );
        Err(
            if status.is_client_error() && status != StatusCode::NOT_FOUND {
                CliError::usage(e)
            } else {
                CliError::failure(e)
            },
        )
    }

    /// `POST /v4/builds`: the new build's id.
    pub async fn submit(&self, body: &Value) -> CliResult<u64> {
        let v = self.call(Method::POST, "/v4/builds", Some(body)).await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| CliError::failure("POST /v4/builds: the answer has no id"))
    }

    /// `POST /v4/builds?dryRun=true`: the executor's pre-flight of the build, nothing
    /// started.
    pub async fn dry_run(&self, body: &Value) -> CliResult<executor_base::Preflight> {
        let v = self
            .call(Method::POST, "/v4/builds?dryRun=true", Some(body))
            .await?;
        serde_json::from_value(v).map_err(|e| {
            CliError::failure(format!(
                "POST /v4/builds?dryRun=true: the answer is not a pre-flight: {e}"
            ))
        })
    }

    /// `GET /v4/builds/{id}`.
    pub async fn build(&self, id: u64) -> CliResult<Value> {
        self.call(Method::GET, &format!("/v4/builds/{id}"), None)
            .await
    }

    /// `GET /v4/builds/{id}/steps/{step}/logs?from=N`.
    pub async fn logs(&self, id: u64, step: &str, from: u64) -> CliResult<Vec<LogLine>> {
        let v = self
            .call(
                Method::GET,
                &format!("/v4/builds/{id}/steps/{step}/logs?from={from}"),
                None,
            )
            .await?;
        serde_json::from_value(v)
            .map_err(|e| CliError::failure(format!("logs of step {step}: {e}")))
    }

    /// `PUT /v4/builds/{id}` `{"status": "ABORTED"}`.
    pub async fn abort(&self, id: u64) -> CliResult<Value> {
        self.call(
            Method::PUT,
            &format!("/v4/builds/{id}"),
            Some(&json!({"status": "ABORTED", "statusMessage": "Aborted with sdx stop"})),
        )
        .await
    }
}
