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

use crate::api::{
    BUILD_TREE, BuildInfo, CrumbAnswer, JOB_TREE, JOBS_TREE, JobInfo, JobList, LABEL_TREE,
    LabelInfo, PLUGINS_TREE, PluginInfo, PluginList, QUEUE_TREE, QueueItem,
};
use crate::crumb::{Crumb, CrumbCache, CrumbState, cookie_header, is_crumb_rejection};
use crate::error::{JenkinsError, excerpt};
use crate::folder::Folder;

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

    /// `POST <folder>/createItem?name=<name>` with the job's XML; a 404 inside a folder
    /// is [`JenkinsError::MissingFolder`] (Jenkins' answer when the folder is missing).
    pub async fn create_job(&self, name: &str, xml: &str) -> Result<Created, JenkinsError> {
        let url = self.folder_url(&["createItem"], &[("name", name)]);
        let a = self.post(&url, &Body::Xml(xml.to_string())).await?;
        // core ItemGroupMixIn.createTopLevelItem answers an XML body with 200 and nothing
        // else; any other success or redirect is not Jenkins creating the job.
        if a.status == StatusCode::OK {
            return Ok(Created::New);
        }
        if let Some(e) = self.missing_folder("POST", &url, &a) {
            return Err(e);
        }
        let x_error = a
            .headers
            .get("X-Error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if a.status == StatusCode::BAD_REQUEST
            && (x_error.contains("already exists") || a.body.contains("already exists"))
        {
            return Ok(Created::Exists);
        }
        let what = format!("POST {} (job {name})", url.path());
        Err(self
            .unexpected(&what, "200", &a)
            .unwrap_or_else(|| self.refused(&what, &a)))
    }

    /// `POST /job/<name>/config.xml` with the job's XML.
    pub async fn update_job(&self, name: &str, xml: &str) -> Result<(), JenkinsError> {
        let url = self.job_url(name, &["config.xml"], &[]);
        let a = self.post(&url, &Body::Xml(xml.to_string())).await?;
        // core AbstractItem.doConfigDotXml: 200 with an empty body.
        if a.status == StatusCode::OK {
            return Ok(());
        }
        let what = format!("POST {}", url.path());
        Err(self
            .unexpected(&what, "200", &a)
            .unwrap_or_else(|| self.refused(&what, &a)))
    }

    /// `GET /job/<name>/api/json`; `None` when the job does not exist.
    pub async fn job(&self, name: &str) -> Result<Option<JobInfo>, JenkinsError> {
        let url = self.job_url(name, &["api", "json"], &[("tree", JOB_TREE)]);
        self.get_json(&url, &format!("GET {}", url.path())).await
    }

    /// `POST /job/<name>/buildWithParameters?delay=0sec`; the id of the queue item that
    /// holds the build. core `ParameterizedJobMixIn.doBuildWithParameters`: 201 +
    /// `Location: <ctx>/queue/item/N/` for a new item, 303 to an identical item already
    /// queued (merged, since 2.308), 302 to the job when the schedule was refused, 409 for
    /// a job that is not buildable; nothing else is success.
    pub async fn build_with_parameters(
        &self,
        name: &str,
        form: &Body,
    ) -> Result<u64, JenkinsError> {
        // Without `delay`, Jenkins holds every item for its quiet period (5 s by default).
        let url = self.job_url(name, &["buildWithParameters"], &[("delay", "0sec")]);
        let what = format!("POST {}", url.path());
        let a = self.post(&url, form).await?;
        match a.status {
            StatusCode::CREATED | StatusCode::SEE_OTHER => location(&a)
                .and_then(queue_id_from_location)
                .ok_or(JenkinsError::NoQueueItem {
                    status: a.status.as_u16(),
                    what,
                }),
            StatusCode::FOUND => Err(JenkinsError::NotScheduled { what }),
            StatusCode::CONFLICT => Err(JenkinsError::NotBuildable {
                detail: self.detail(&a),
                what,
            }),
            _ => Err(self
                .unexpected(&what, "201 or 303", &a)
                .unwrap_or_else(|| self.refused(&what, &a))),
        }
    }

    /// `GET /queue/item/<id>/api/json`; `None` when Jenkins forgot the item.
    pub async fn queue_item(&self, id: u64) -> Result<Option<QueueItem>, JenkinsError> {
        let id = id.to_string();
        let url = self.url(
            &["queue", "item", &id, "api", "json"],
            &[("tree", QUEUE_TREE)],
        );
        self.get_json(&url, &format!("GET {}", url.path())).await
    }

    /// `GET /job/<name>/<n>/api/json`; `None` when the job or build does not exist.
    pub async fn build(&self, name: &str, number: u64) -> Result<Option<BuildInfo>, JenkinsError> {
        let n = number.to_string();
        let url = self.job_url(name, &[&n, "api", "json"], &[("tree", BUILD_TREE)]);
        self.get_json(&url, &format!("GET {}", url.path())).await
    }

    /// `GET <folder>/job/<name>/<n>/consoleText` (core `Run.doConsoleText`: the whole log
    /// as `text/plain`): the last `max` bytes of the build's console log, read as a stream
    /// so only the tail is ever held; `None` when the build does not exist.
    pub async fn console_tail(
        &self,
        name: &str,
        number: u64,
        max: usize,
    ) -> Result<Option<String>, JenkinsError> {
        let n = number.to_string();
        let url = self.job_url(name, &[&n, "consoleText"], &[]);
        let what = format!("GET {}", url.path());
        let mut resp = self
            .http
            .get(url.clone())
            .basic_auth(&self.user, Some(self.token.expose_secret()))
            .send()
            .await
            .map_err(|e| JenkinsError::transport(&what, &url, e))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap_or_default();
            return Err(self.refused(
                &what,
                &Answer {
                    status,
                    headers,
                    body,
                },
            ));
        }
        let mut tail: Vec<u8> = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| JenkinsError::transport(&what, &url, e))?
        {
            tail.extend_from_slice(&chunk);
            if tail.len() > max.saturating_mul(2) {
                tail.drain(..tail.len() - max);
            }
        }
        if tail.len() > max {
            tail.drain(..tail.len() - max);
        }
        tracing::debug!(
            path = url.path(),
            bytes = tail.len(),
            "jenkins console tail"
        );
        Ok(Some(String::from_utf8_lossy(&tail).into_owned()))
    }

    /// `POST /queue/cancelItem?id=<id>` (core `Queue.doCancelItem`): 204 is
    /// [`Cancel::Cancelled`]; 500, 422, 404 and a redirect are [`Cancel::NotCancelled`]
    /// (the caller reads the queue item to learn why); credentials (401), missing
    /// permissions (403) and rate limits (429) are errors.
    pub async fn cancel_queue_item(&self, id: u64) -> Result<Cancel, JenkinsError> {
        let ids = id.to_string();
        let url = self.url(&["queue", "cancelItem"], &[("id", &ids)]);
        let a = self.post(&url, &Body::Empty).await?;
        match a.status {
            s if s.is_success() => Ok(Cancel::Cancelled),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                Err(self.refused(&format!("POST /queue/cancelItem (item {id})"), &a))
            }
            s => Ok(Cancel::NotCancelled {
                status: s.as_u16(),
                detail: self.detail(&a),
            }),
        }
    }

    /// `POST /job/<name>/<n>/submitDescription` (core `Run.doSubmitDescription`, Run/Update
    /// permission): sets the build's description; `false` when the build does not exist.
    pub async fn describe_build(
        &self,
        name: &str,
        number: u64,
        description: &str,
    ) -> Result<bool, JenkinsError> {
        let n = number.to_string();
        let url = self.job_url(name, &[&n, "submitDescription"], &[]);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("description", description)
            .finish();
        let a = self.post(&url, &Body::Form(form)).await?;
        match a.status {
            s if is_ok(s) => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(&format!("POST {}", url.path()), &a)),
        }
    }

    /// `GET /pluginManager/api/json`: the installed plugins (core `PluginManager.getApi`
    /// needs Overall/SystemRead; without it Jenkins answers 403).
    pub async fn plugins(&self) -> Result<Vec<PluginInfo>, JenkinsError> {
        let url = self.url(&["pluginManager", "api", "json"], &[("tree", PLUGINS_TREE)]);
        let a = self.get(&url).await?;
        if !a.status.is_success() {
            return Err(self.refused("GET /pluginManager/api/json", &a));
        }
        let list: PluginList = decode("GET /pluginManager/api/json", &a.body)?;
        Ok(list.plugins)
    }

    /// `GET /label/<label>/api/json`: the label's nodes and online executors.
    pub async fn label(&self, label: &str) -> Result<LabelInfo, JenkinsError> {
        let url = self.url(&["label", label, "api", "json"], &[("tree", LABEL_TREE)]);
        let a = self.get(&url).await?;
        if !a.status.is_success() {
            return Err(self.refused("GET /label/<label>/api/json", &a));
        }
        decode("GET /label/<label>/api/json", &a.body)
    }

    /// `POST /job/<name>/<n>/stop`; `false` when the job or build does not exist.
    pub async fn stop_build(&self, name: &str, number: u64) -> Result<bool, JenkinsError> {
        let n = number.to_string();
        let url = self.job_url(name, &[&n, "stop"], &[]);
        self.post_idempotent(&url).await
    }

    /// `POST /job/<name>/doDelete`; `false` when the job does not exist.
    pub async fn delete_job(&self, name: &str) -> Result<bool, JenkinsError> {
        let url = self.job_url(name, &["doDelete"], &[]);
        self.post_idempotent(&url).await
    }

    async fn post_idempotent(&self, url: &Url) -> Result<bool, JenkinsError> {
        let a = self.post(url, &Body::Empty).await?;
        match a.status {
            s if is_ok(s) => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(&format!("POST {}", url.path()), &a)),
        }
    }

    /// Jenkins' version from the `X-Jenkins` header of an authenticated `GET /api/json`.
    pub async fn version(&self) -> Result<String, JenkinsError> {
        let url = self.url(&["api", "json"], &[("tree", "mode")]);
        let a = self.get(&url).await?;
        if !a.status.is_success() {
            return Err(self.refused("GET /api/json", &a));
        }
        Ok(a.headers
            .get("X-Jenkins")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown (no X-Jenkins header)")
            .to_string())
    }

    /// `GET <folder>/api/json?tree=jobs[...]`: every job directly in the folder (or at the
    /// root); a folder that does not exist is [`JenkinsError::MissingFolder`].
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, JenkinsError> {
        let url = self.folder_url(&["api", "json"], &[("tree", JOBS_TREE)]);
        let a = self.get(&url).await?;
        match a.status {
            s if s.is_success() => {
                let list: JobList = decode(&format!("GET {}", url.path()), &a.body)?;
                Ok(list.jobs)
            }
            _ => match self.missing_folder("GET", &url, &a) {
                Some(e) => Err(e),
                None if a.status == StatusCode::NOT_FOUND => Ok(Vec::new()),
                None => Err(self.refused(&format!("GET {}", url.path()), &a)),
            },
        }
    }

    /// `Ok` when the folder exists (always at the root), [`JenkinsError::MissingFolder`]
    /// when Jenkins does not know it: the folder's job listing, [`Client::jobs`], read once.
    pub async fn check_folder(&self) -> Result<(), JenkinsError> {
        if self.folder.is_root() {
            return Ok(());
        }
        self.jobs().await.map(drop)
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
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        executor_base::tls::install_default_provider();
        Client::new(
            reqwest::Client::new(),
            Url::parse(base).unwrap(),
            "u".into(),
            SecretString::from("t"),
        )
    }

    #[test]
    fn urls_encode_job_names_and_keep_the_prefix() {
        let c = client("http://127.0.0.1:8080/jenkins/");
        assert_eq!(
            c.job_url("SD 1/x?", &["api", "json"], &[("tree", "a[b]")])
                .as_str(),
            "http://127.0.0.1:8080/jenkins/job/SD%201%2Fx%3F/api/json?tree=a%5Bb%5D"
        );
        assert_eq!(
            c.url(&["createItem"], &[("name", "SD-1")]).as_str(),
            "http://127.0.0.1:8080/jenkins/createItem?name=SD-1"
        );
        let root = client("http://127.0.0.1:8080/");
        assert_eq!(
            root.url(&["queue", "item", "7", "api", "json"], &[]).path(),
            "/queue/item/7/api/json"
        );
        assert!(!format!("{root:?}").contains("\"t\""));
    }

    #[test]
    fn folder_segments_are_encoded_in_every_job_url() {
        let c = client("http://127.0.0.1:8080/jenkins/")
            .with_folder(Folder::parse("team a/ci%2F/ü?#").unwrap());
        let f = "/jenkins/job/team%20a/job/ci%252F/job/%C3%BC%3F%23";
        assert_eq!(
            c.job_url("SD-1", &["1", "stop"], &[]).path(),
            format!("{f}/job/SD-1/1/stop")
        );
        let create = c.folder_url(&["createItem"], &[("name", "SD-1")]);
        assert_eq!(create.path(), format!("{f}/createItem"));
        assert_eq!(create.query(), Some("name=SD-1"));
        assert_eq!(
            c.folder_url(&["api", "json"], &[]).path(),
            format!("{f}/api/json")
        );
        // The queue is global: never under the folder.
        assert_eq!(
            c.url(&["queue", "cancelItem"], &[]).path(),
            "/jenkins/queue/cancelItem"
        );
        assert!(format!("{c:?}").contains("team a/ci%2F/ü?#"));
    }

    #[test]
    fn queue_ids_come_from_location() {
        assert_eq!(
            queue_id_from_location("http://j:8080/queue/item/42/"),
            Some(42)
        );
        assert_eq!(
            queue_id_from_location("http://j/jenkins/queue/item/7"),
            Some(7)
        );
        assert_eq!(queue_id_from_location("http://j/job/SD-1/"), None);
        assert_eq!(queue_id_from_location("http://j/queue/item/x/"), None);
    }
}
