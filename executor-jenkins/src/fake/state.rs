//! The fake Jenkins' model: jobs with their `config.xml`, a queue whose items become
//! builds after a delay the test controls, builds that finish with the result the test
//! sets, crumbs, and the record of every request.
//!
//! Jobs and folders are keyed by their item path: `SD-1` at the root, `ci/sd/SD-1` inside
//! the folder `ci/sd` (Jenkins item names never hold a `/`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::template::element_text;

/// A build of a fake job.
#[derive(Debug, Clone)]
pub(crate) struct FakeBuild {
    pub number: u64,
    pub building: bool,
    pub result: Option<String>,
    pub description: Option<String>,
    pub params: BTreeMap<String, String>,
    pub finish_at: Option<(Instant, String)>,
}

/// A fake job.
#[derive(Debug, Clone)]
pub(crate) struct FakeJob {
    pub config: String,
    pub description: String,
    pub builds: BTreeMap<u64, FakeBuild>,
    pub next_number: u64,
}

/// A queue item.
#[derive(Debug, Clone)]
pub(crate) struct QueueEntry {
    pub id: u64,
    pub job: String,
    pub params: BTreeMap<String, String>,
    pub why: String,
    pub cancelled: bool,
    pub executable: Option<u64>,
    /// When it becomes a build; `None`: only when the test says so.
    pub ready_at: Option<Instant>,
}

impl QueueEntry {
    /// Still waiting in the queue.
    pub fn waiting(&self) -> bool {
        !self.cancelled && self.executable.is_none()
    }
}

/// An issued crumb.
#[derive(Debug, Clone)]
pub(crate) struct IssuedCrumb {
    pub session: String,
    pub issued: Instant,
}

/// Everything the fake knows.
#[derive(Debug)]
pub(crate) struct State {
    pub user: String,
    pub token: String,
    pub base: String,
    pub prefix: String,
    pub crumb_issuer: bool,
    pub crumb_ttl: Option<Duration>,
    pub crumbs: BTreeMap<String, IssuedCrumb>,
    pub issued_crumbs: u64,
    pub jobs: BTreeMap<String, FakeJob>,
    pub folders: BTreeSet<String>,
    pub queue: BTreeMap<u64, QueueEntry>,
    pub next_queue_id: u64,
    pub queue_delay: Option<Duration>,
    pub run_for: Option<(Duration, String)>,
    pub faults: Vec<super::Fault>,
    pub requests: Vec<super::Recorded>,
}

impl State {
    /// Moves time forward: ready queue items become builds, due builds finish.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let ready: Vec<u64> = self
            .queue
            .values()
            .filter(|q| q.waiting() && q.ready_at.is_some_and(|t| t <= now))
            .map(|q| q.id)
            .collect();
        for id in ready {
            self.promote(id);
        }
        for job in self.jobs.values_mut() {
            for b in job.builds.values_mut() {
                if b.building
                    && let Some((at, result)) = &b.finish_at
                    && *at <= now
                {
                    b.building = false;
                    b.result = Some(result.clone());
                    b.finish_at = None;
                }
            }
        }
    }

    /// Turns a waiting queue item into a running build; its number.
    pub fn promote(&mut self, id: u64) -> Option<u64> {
        let q = self.queue.get_mut(&id)?;
        if !q.waiting() {
            return None;
        }
        let job = self.jobs.get_mut(&q.job)?;
        let number = job.next_number;
        job.next_number += 1;
        let finish_at = self
            .run_for
            .as_ref()
            .map(|(d, r)| (Instant::now() + *d, r.clone()));
        job.builds.insert(
            number,
            FakeBuild {
                number,
                building: true,
                result: None,
                description: None,
                params: q.params.clone(),
                finish_at,
            },
        );
        q.executable = Some(number);
        q.why = String::new();
        Some(number)
    }

    /// The waiting queue item of a job, if any.
    pub fn waiting_item(&self, job: &str) -> Option<&QueueEntry> {
        self.queue.values().find(|q| q.job == job && q.waiting())
    }

    /// `api/json` of a build of the job at `job` (an item path).
    pub fn build_json(&self, job: &str, b: &FakeBuild) -> Value {
        json!({
            "_class": "hudson.model.FreeStyleBuild",
            "number": b.number,
            "building": b.building,
            "result": b.result,
            "description": b.description,
            "url": format!("{}{}/{}/", self.base, url_path(job), b.number),
        })
    }

    /// `api/json` of the job at `path` (an item path).
    pub fn job_json(&self, path: &str, j: &FakeJob) -> Value {
        let item = self.waiting_item(path);
        let last = j.builds.values().next_back();
        json!({
            "_class": "hudson.model.FreeStyleProject",
            "name": split_path(path).1,
            "description": j.description,
            "inQueue": item.is_some(),
            "nextBuildNumber": j.next_number,
            "queueItem": item.map(|q| json!({"_class": "hudson.model.Queue$WaitingItem", "id": q.id, "why": q.why})),
            "lastBuild": last.map(|b| self.build_json(path, b)),
        })
    }

    /// `api/json` of the folder at `folder` (`""`: Jenkins itself): the items directly in
    /// it, jobs and folders.
    pub fn folder_json(&self, folder: &str) -> Value {
        let jobs = self
            .jobs
            .iter()
            .filter(|(p, _)| split_path(p).0 == folder)
            .map(|(p, j)| self.job_json(p, j));
        let folders = self
            .folders
            .iter()
            .filter(|p| split_path(p).0 == folder)
            .map(|p| {
                json!({
                    "_class": "com.cloudbees.hudson.plugins.folder.Folder",
                    "name": split_path(p).1,
                    "description": null,
                    "url": format!("{}{}/", self.base, url_path(p)),
                })
            });
        let items: Vec<Value> = jobs.chain(folders).collect();
        if folder.is_empty() {
            json!({"_class": "hudson.model.Hudson", "jobs": items})
        } else {
            json!({
                "_class": "com.cloudbees.hudson.plugins.folder.Folder",
                "name": split_path(folder).1,
                "jobs": items,
            })
        }
    }

    /// Whether an item (job or folder) exists at `path`.
    pub fn item_exists(&self, path: &str) -> bool {
        self.jobs.contains_key(path) || self.folders.contains(path)
    }

    /// Deletes the folder at `path` with everything in it, cancelling the waiting queue
    /// items of its jobs (as Jenkins does); `false` if there is no such folder.
    pub fn remove_folder(&mut self, path: &str) -> bool {
        if !self.folders.contains(path) {
            return false;
        }
        let inside = |p: &str| p == path || p.starts_with(&format!("{path}/"));
        self.folders.retain(|p| !inside(p));
        self.jobs.retain(|p, _| !inside(p));
        for q in self
            .queue
            .values_mut()
            .filter(|q| inside(&q.job) && q.waiting())
        {
            q.cancelled = true;
        }
        true
    }

    /// `api/json` of a queue item.
    pub fn queue_json(&self, q: &QueueEntry) -> Value {
        let class = if q.waiting() {
            "hudson.model.Queue$WaitingItem"
        } else {
            "hudson.model.Queue$LeftItem"
        };
        json!({
            "_class": class,
            "id": q.id,
            "why": if q.waiting() { Value::String(q.why.clone()) } else { Value::Null },
            "cancelled": q.cancelled,
            "blocked": false,
            "stuck": false,
            "task": {"name": split_path(&q.job).1},
            "executable": q.executable.map(|n| json!({
                "_class": "hudson.model.FreeStyleBuild",
                "number": n,
                "url": format!("{}{}/{n}/", self.base, url_path(&q.job)),
            })),
        })
    }

    /// A job from its `config.xml`.
    pub fn new_job(config: String) -> FakeJob {
        FakeJob {
            description: element_text(&config, "description").unwrap_or_default(),
            config,
            builds: BTreeMap::new(),
            next_number: 1,
        }
    }

    /// Whether a crumb is valid for a session cookie header.
    pub fn crumb_ok(&self, crumb: Option<&str>, cookie: Option<&str>) -> bool {
        let Some(c) = crumb.and_then(|c| self.crumbs.get(c)) else {
            return false;
        };
        if self.crumb_ttl.is_some_and(|ttl| c.issued.elapsed() > ttl) {
            return false;
        }
        cookie.is_some_and(|h| {
            h.split(';')
                .any(|p| p.trim() == format!("JSESSIONID.fake={}", c.session))
        })
    }
}

/// An item path's folder and name: `ci/sd/SD-1` → (`ci/sd`, `SD-1`); (`""`, `SD-1`) at the
/// root.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// An item path joined to a name: (`ci/sd`, `SD-1`) → `ci/sd/SD-1`.
pub(crate) fn join_path(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

/// The unencoded URL path of an item: `ci/sd/SD-1` → `job/ci/job/sd/job/SD-1`.
pub(crate) fn url_path(path: &str) -> String {
    path.split('/')
        .map(|s| format!("job/{s}"))
        .collect::<Vec<_>>()
        .join("/")
}
