//! The REST calls, one method each: jobs (create, update, read, list, delete), builds
//! (trigger, read, console, describe, stop), the queue, plugins, labels and the version.

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use url::Url;

use super::{
    Answer, Body, Cancel, Client, Created, decode, is_ok, location, queue_id_from_location,
};
use crate::api::{
    BUILD_TREE, BuildInfo, JOB_TREE, JOBS_TREE, JobInfo, JobList, LABEL_TREE, LabelInfo,
    PLUGINS_TREE, PluginInfo, PluginList, QUEUE_TREE, QueueItem,
};
use crate::error::JenkinsError;

impl Client {
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
