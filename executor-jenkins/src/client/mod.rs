//! Raw Jenkins REST calls over reqwest: URLs, basic auth, the crumb, status handling.
//!
//! Each method is one logical call (plus a crumb fetch or one resend after a crumb
//! refresh); retries and the breaker live in the executor, around these methods, through
//! `EngineCalls`. Only paths and status codes are logged; bodies (which carry the build
//! token for `buildWithParameters`) never are.

use std::fmt;
use std::time::Duration;

use reqwest::header::{
    CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER, SET_COOKIE,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::CrumbAnswer;
use crate::crumb::{Crumb, CrumbCache, CrumbState, cookie_header, is_crumb_rejection};
use crate::error::{JenkinsError, excerpt};
use crate::folder::Folder;

mod calls;

/// A request body.
#[derive(Clone)]
pub(crate) enum Body {
    /// No body.
    Empty,
    /// `application/xml`.
    Xml(String),
    /// `application/x-www-form-urlencoded`; may hold the build token, so never formatted.
    Form(String),
}

/// An answer we keep: status, headers, body text.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// The outcome of `cancelItem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// Jenkins cancelled the waiting item (204).
    Cancelled,
    /// Jenkins did not (500: the item already left the queue; 422: no Cancel
    /// permission; 404: unknown or forgotten; 302: a core before ≈2.212, which always
    /// redirects): the queue item says what happened.
    NotCancelled {
        /// The status.
        status: u16,
        /// Jenkins' message.
        detail: String,
    },
}

/// The outcome of `createItem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    /// The job was created.
    New,
    /// A job of that name already exists.
    Exists,
}

/// A Jenkins server seen through its REST API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    user: String,
    token: SecretString,
    folder: Folder,
    crumbs: CrumbCache,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("user", &self.user)
            .field("folder", &self.folder.to_string())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the Jenkins at `base` (whose path ends with `/`).
    pub fn new(http: reqwest::Client, base: Url, user: String, token: SecretString) -> Self {
        Self {
            http,
            base,
            user,
            token,
            folder: Folder::default(),
            crumbs: CrumbCache::default(),
        }
    }

    /// Puts every job in `folder` (the root by default).
    pub fn with_folder(mut self, folder: Folder) -> Self {
        self.folder = folder;
        self
    }

    /// The Jenkins user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The folder jobs live in.
    pub fn folder(&self) -> &Folder {
        &self.folder
    }

    /// Builds the default HTTP client: bounded requests, no redirects (Jenkins answers
    /// POSTs with 302 and the redirect target is of no interest).
    pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        executor_base::tls::install_default_provider();
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sdx-executor-jenkins/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `base` + path segments (each percent-encoded) + query pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().expect("http URLs have a path");
            p.pop_if_empty();
            p.extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    /// The folder's URL (`/job/<f1>/job/<f2>/`, the base at the root) + more segments.
    fn folder_url(&self, more: &[&str], query: &[(&str, &str)]) -> Url {
        let mut segs = self.folder.url_segments();
        segs.extend_from_slice(more);
        self.url(&segs, query)
    }

    /// `<folder>/job/<name>/` + more segments.
    fn job_url(&self, name: &str, more: &[&str], query: &[(&str, &str)]) -> Url {
        let mut segs = vec!["job", name];
        segs.extend_from_slice(more);
        self.folder_url(&segs, query)
    }

    /// The error of a 404 answered inside the folder, which then does not exist; `None`
    /// at the root or for another status.
    fn missing_folder(&self, method: &str, url: &Url, a: &Answer) -> Option<JenkinsError> {
        (a.status == StatusCode::NOT_FOUND && !self.folder.is_root()).then(|| {
            JenkinsError::MissingFolder {
                folder: self.folder.to_string(),
                what: format!("{method} {}", url.path()),
                user: self.user.clone(),
            }
        })
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: &Body,
        crumb: Option<&Crumb>,
    ) -> Result<Answer, JenkinsError> {
        let what = format!("{method} {}", url.path());
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .basic_auth(&self.user, Some(self.token.expose_secret()));
        if let Some(c) = crumb {
            req = req.header(c.field.as_str(), c.value.as_str());
            if let Some(cookie) = &c.cookie {
                req = req.header(COOKIE, cookie.as_str());
            }
        }
        req = match body {
            Body::Empty => req,
            Body::Xml(x) => req
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/xml; charset=utf-8"),
                )
                .body(x.clone()),
            Body::Form(f) => req
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(f.clone()),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| JenkinsError::transport(&what, url, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| JenkinsError::transport(&what, url, e))?;
        tracing::debug!(method = %method, path = url.path(), status = status.as_u16(), "jenkins request");
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Turns a non-success answer into the error of `what`.
    pub fn refused(&self, what: &str, a: &Answer) -> JenkinsError {
        let retry_after = a
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| executor_base::http::parse_retry_after(v, std::time::SystemTime::now()));
        let detail = self.detail(a);
        JenkinsError::Status {
            status: a.status.as_u16(),
            what: what.to_string(),
            detail,
            user: self.user.clone(),
            retry_after,
        }
    }

    /// Jenkins' message in an answer: its `X-Error` header, else an excerpt of the page.
    fn detail(&self, a: &Answer) -> String {
        a.headers
            .get("X-Error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| excerpt(&a.body))
    }

    /// The error of a success or redirect status `what` is not answered with by Jenkins;
    /// `None` for error statuses (4xx, 5xx), which [`Client::refused`] maps.
    fn unexpected(&self, what: &str, expected: &'static str, a: &Answer) -> Option<JenkinsError> {
        (a.status.is_success() || a.status.is_redirection()).then(|| {
            JenkinsError::UnexpectedStatus {
                status: a.status.as_u16(),
                what: what.to_string(),
                expected,
                location: location(a).map(str::to_string),
            }
        })
    }

    async fn fetch_crumb(&self) -> Result<CrumbState, JenkinsError> {
        let url = self.url(&["crumbIssuer", "api", "json"], &[]);
        let a = self.send(Method::GET, &url, &Body::Empty, None).await?;
        match a.status {
            s if s.is_success() => {
                let c: CrumbAnswer = decode("GET /crumbIssuer/api/json", &a.body)?;
                let cookie = cookie_header(
                    a.headers
                        .get_all(SET_COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                Ok(CrumbState::Have(Crumb {
                    field: c.crumb_request_field,
                    value: c.crumb,
                    cookie,
                }))
            }
            StatusCode::NOT_FOUND => {
                tracing::debug!("Jenkins has no crumb issuer; POSTs go without a crumb");
                Ok(CrumbState::NoIssuer)
            }
            _ => Err(self.refused("GET /crumbIssuer/api/json", &a)),
        }
    }

    /// A GET; the answer whatever its status.
    pub async fn get(&self, url: &Url) -> Result<Answer, JenkinsError> {
        self.send(Method::GET, url, &Body::Empty, None).await
    }

    /// A POST with the crumb; resent once with a fresh crumb when Jenkins rejects it.
    pub async fn post(&self, url: &Url, body: &Body) -> Result<Answer, JenkinsError> {
        let (crumb, generation) = self.crumbs.current(|| self.fetch_crumb()).await?;
        let a = self.send(Method::POST, url, body, crumb.as_ref()).await?;
        if a.status == StatusCode::FORBIDDEN && is_crumb_rejection(&a.body) {
            tracing::debug!(
                path = url.path(),
                "crumb rejected; fetching a fresh one and resending once"
            );
            let (crumb, _) = self
                .crumbs
                .refresh(generation, || self.fetch_crumb())
                .await?;
            return self.send(Method::POST, url, body, crumb.as_ref()).await;
        }
        Ok(a)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
        what: &str,
    ) -> Result<Option<T>, JenkinsError> {
        let a = self.get(url).await?;
        match a.status {
            s if s.is_success() => decode(what, &a.body).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refused(what, &a)),
        }
    }
}

/// 2xx, or a redirect: how Jenkins answers `stop`, `doDelete` and `submitDescription`
/// (302 `forwardToPreviousPage`/`sendRedirect`), where the target is of no interest.
fn is_ok(s: StatusCode) -> bool {
    s.is_success() || s.is_redirection()
}

/// The `Location` header of an answer.
fn location(a: &Answer) -> Option<&str> {
    a.headers.get(LOCATION).and_then(|v| v.to_str().ok())
}

fn decode<T: DeserializeOwned>(what: &str, body: &str) -> Result<T, JenkinsError> {
    serde_json::from_str(body).map_err(|e| JenkinsError::Decode {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// `…/queue/item/<id>/` → `id`.
pub(crate) fn queue_id_from_location(location: &str) -> Option<u64> {
    let path = location.split(['?', '#']).next()?;
    let mut segs = path.rsplit('/').filter(|s| !s.is_empty());
    let id = segs.next()?.parse().ok()?;
    (segs.next()? == "item").then_some(id)
}

#[cfg(test)]
mod tests;
