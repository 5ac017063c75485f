//! The fake Jenkins' model: jobs with their `config.xml` and what Jenkins loaded from it,
//! a queue whose items wait out their quiet period and become builds when the test says
//! so (or after a delay), builds that finish with the result the test sets or abort some
//! time after a stop, crumbs, permissions, plugins, and the record of every request.
//!
//! Jobs and folders are keyed by their item path: `SD-1` at the root, `ci/sd/SD-1` inside
//! the folder `ci/sd` (Jenkins item names never hold a `/`). Jenkins compares item names
//! case-insensitively (its item maps are `CASE_INSENSITIVE_ORDER` trees), so lookups here
//! do too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::model::{JobModel, write_description};
use super::options::version_of;

/// A build of a fake job.
#[derive(Debug, Clone)]
pub(crate) struct FakeBuild {
    pub number: u64,
    pub queue_id: u64,
    pub building: bool,
    pub result: Option<String>,
    pub description: Option<String>,
    pub params: BTreeMap<String, String>,
    /// Start time, milliseconds since the epoch (`Run.getTimestamp`).
    pub timestamp_ms: i64,
    pub finish_at: Option<(Instant, String)>,
    /// An abort under way: the build ends `ABORTED` at this time.
    pub abort_at: Option<Instant>,
    /// The console log (`consoleText`, `logText/progressiveText`).
    pub console: String,
}

/// A fake job.
#[derive(Debug, Clone)]
pub(crate) struct FakeJob {
    /// The stored `config.xml`, verbatim.
    pub config: String,
    /// What Jenkins loaded from it.
    pub model: JobModel,
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
    /// It left the queue (cancelled or handed to an executor).
    pub left: bool,
    /// The number of the build it became, once it left to run.
    pub number: Option<u64>,
    /// Whether that build exists yet (`LeftItem.executable` is null until it does).
    pub created: bool,
    /// When a left item's build comes into existence.
    pub create_at: Option<Instant>,
    /// End of its quiet period.
    pub quiet_until: Instant,
    /// When it becomes a build by itself; `None`: only when the test says so.
    pub ready_at: Option<Instant>,
    pub in_queue_since_ms: i64,
}

impl QueueEntry {
    /// Still in the queue.
    pub fn waiting(&self) -> bool {
        !self.left
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
    pub password: String,
    pub version: String,
    pub base: String,
    pub prefix: String,
    pub crumb_issuer: bool,
    pub crumb_ttl: Option<Duration>,
    pub crumbs: BTreeMap<String, IssuedCrumb>,
    pub issued_crumbs: u64,
    /// Installed plugins: short name → active.
    pub plugins: BTreeMap<String, bool>,
    /// Permissions the user lacks (`Job/Cancel`, `Overall/SystemRead`, ...).
    pub denied: BTreeSet<String>,
    /// Agents (nodes) by name.
    pub agents: BTreeMap<String, FakeAgent>,
    pub jobs: BTreeMap<String, FakeJob>,
    pub folders: BTreeSet<String>,
    pub queue: BTreeMap<u64, QueueEntry>,
    pub next_queue_id: u64,
    pub quiet_period: Duration,
    pub queue_delay: Option<Duration>,
    pub executable_delay: Duration,
    pub abort_delay: Duration,
    pub run_for: Option<(Duration, String)>,
    /// Whether the job's launcher writes the launch handshake (the reference `launch`)
    /// when a build ends, or not (upstream's launcher given native mode's flags).
    pub launcher_handshake: bool,
    /// How many more schedules a `QueueDecisionHandler` vetoes (`buildWithParameters`
    /// then answers 302 without a queue item).
    pub refuse_schedules: usize,
    pub faults: Vec<super::Fault>,
    pub requests: Vec<super::Recorded>,
}

/// Milliseconds since the epoch now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl State {
    /// Whether the running core is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        version_of(&self.version) >= (major, minor)
    }

    /// Whether a plugin is installed and active.
    pub fn plugin_active(&self, name: &str) -> bool {
        self.plugins.get(name).copied().unwrap_or(false)
    }

    /// Whether the user has `permission`.
    pub fn allowed(&self, permission: &str) -> bool {
        !self.denied.contains(permission)
    }

    /// Loads a job from its `config.xml` (already known to be well-formed).
    pub fn load_job(&self, config: String) -> FakeJob {
        let model = match crate::xml::parse(&config) {
            Ok(root) => JobModel::load(&root, |p| self.plugin_active(p)),
            Err(_) => JobModel::default(),
        };
        FakeJob {
            description: model.description.clone(),
            model,
            config,
            builds: BTreeMap::new(),
            next_number: 1,
        }
    }

    /// The stored key of the job at `path`, compared case-insensitively.
    pub fn job_key(&self, path: &str) -> Option<String> {
        item_key(self.jobs.keys(), path)
    }

    /// The stored key of the folder at `path`, compared case-insensitively.
    pub fn folder_key(&self, path: &str) -> Option<String> {
        item_key(self.folders.iter(), path)
    }

    /// Moves time forward: ready queue items become builds, builds of items that left
    /// come into existence, due builds finish, aborts under way complete.
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
        let due: Vec<u64> = self
            .queue
            .values()
            .filter(|q| !q.created && q.create_at.is_some_and(|t| t <= now))
            .map(|q| q.id)
            .collect();
        for id in due {
            self.create_build(id);
        }
        for job in self.jobs.values_mut() {
            for b in job.builds.values_mut() {
                if !b.building {
                    continue;
                }
                if let Some((at, result)) = &b.finish_at
                    && *at <= now
                {
                    let result = result.clone();
                    end(b, &result, self.launcher_handshake);
                } else if b.abort_at.is_some_and(|t| t <= now) {
                    end(b, "ABORTED", self.launcher_handshake);
                }
            }
        }
    }

    /// Hands a waiting queue item to an executor, once its quiet period is over; the
    /// number of the build it becomes (which exists after `executable_delay`).
    pub fn promote(&mut self, id: u64) -> Option<u64> {
        let delay = self.executable_delay;
        let q = self.queue.get_mut(&id)?;
        if !q.waiting() || Instant::now() < q.quiet_until {
            return None;
        }
        let job = self.jobs.get_mut(&q.job)?;
        let number = job.next_number;
        job.next_number += 1;
        q.left = true;
        q.number = Some(number);
        q.why = String::new();
        if delay.is_zero() {
            self.create_build(id);
        } else {
            q.create_at = Some(Instant::now() + delay);
        }
        Some(number)
    }

    /// The executor thread creates the `Run` of a left item.
    fn create_build(&mut self, id: u64) {
        let finish_at = self
            .run_for
            .as_ref()
            .map(|(d, r)| (Instant::now() + *d, r.clone()));
        let Some(q) = self.queue.get_mut(&id) else {
            return;
        };
        let (Some(number), Some(job)) = (q.number, self.jobs.get_mut(&q.job)) else {
            return;
        };
        q.created = true;
        q.create_at = None;
        job.builds.insert(
            number,
            FakeBuild {
                number,
                queue_id: id,
                building: true,
                result: None,
                description: None,
                params: q.params.clone(),
                timestamp_ms: now_ms(),
                finish_at,
                abort_at: None,
                console: format!(
                    "Started by remote host 127.0.0.1\nRunning as {}\n",
                    self.user
                ),
            },
        );
    }

    /// Asks a running build to abort (`Executor.interrupt`): it keeps `building: true`
    /// until the abort completes `abort_delay` later. `false` if it is not running.
    pub fn abort(&mut self, job: &str, number: u64) -> bool {
        let delay = self.abort_delay;
        match self
            .jobs
            .get_mut(job)
            .and_then(|j| j.builds.get_mut(&number))
        {
            Some(b) if b.building => {
                if delay.is_zero() {
                    end(b, "ABORTED", self.launcher_handshake);
                } else if b.abort_at.is_none() {
                    b.abort_at = Some(Instant::now() + delay);
                }
                true
            }
            _ => false,
        }
    }

    /// The build-timeout plugin's timeout of a running build: its `WriteDescriptionOperation`
    /// text, then its `AbortOperation`. `false` when the job has no loaded wrapper (the
    /// plugin was missing when the job was created) or the build is not running.
    pub fn fire_job_timeout(&mut self, job: &str, number: u64) -> bool {
        let Some(j) = self.jobs.get(job) else {
            return false;
        };
        let Some(wrapper) = j.model.timeout.clone() else {
            return false;
        };
        let Some(b) = j.builds.get(&number).filter(|b| b.building) else {
            return false;
        };
        let mut env: Vec<(String, String)> = b
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("BUILD_NUMBER".into(), number.to_string()));
        env.push(("JOB_NAME".into(), job.to_string()));
        let minutes = wrapper.minutes.trim().parse().unwrap_or(0);
        let description = wrapper
            .description
            .map(|d| write_description(&d, &env, minutes));
        if let Some(d) = description
            && let Some(b) = self
                .jobs
                .get_mut(job)
                .and_then(|j| j.builds.get_mut(&number))
        {
            b.description = Some(d);
        }
        wrapper.abort && self.abort(job, number)
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
            "queueId": b.queue_id,
            "building": b.building,
            "result": b.result,
            "description": b.description,
            "timestamp": b.timestamp_ms,
            "duration": if b.building { 0 } else { (now_ms() - b.timestamp_ms).max(0) },
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
            "buildable": !j.model.disabled,
            "inQueue": item.is_some(),
            "nextBuildNumber": j.next_number,
            "queueItem": item.map(|q| self.queue_json(q)),
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

    /// `api/json` of the plugin manager (`PluginManager.getApi`, `PluginWrapper`'s
    /// exported fields).
    /// `GET /label/<label>/api/json` as core `hudson.model.Label` exports it: any label
    /// answers 200 (`Jenkins.getLabel` creates it); a node's name is a label of its own
    /// (`Node.getSelfLabel`); `totalExecutors` counts online nodes' executors only and
    /// `offline` is true when no node of the label is online (also when it has none).
    /// Only single labels are modelled, not label expressions.
    pub fn label_json(&self, label: &str) -> Value {
        let nodes: Vec<(&String, &FakeAgent)> = self
            .agents
            .iter()
            .filter(|(name, a)| name.as_str() == label || a.labels.contains(label))
            .collect();
        let online = nodes.iter().filter(|(_, a)| a.online);
        let total: u32 = online.clone().map(|(_, a)| a.executors).sum();
        let busy: u32 = online.map(|(_, a)| a.busy.min(a.executors)).sum();
        json!({
            "_class": "hudson.model.labels.LabelAtom",
            "name": label,
            "offline": !nodes.iter().any(|(_, a)| a.online),
            "totalExecutors": total,
            "busyExecutors": busy,
            "idleExecutors": total - busy,
            "nodes": nodes.iter().map(|(n, _)| json!({"_class": "hudson.slaves.DumbSlave", "nodeName": n})).collect::<Vec<_>>(),
        })
    }

    pub fn plugins_json(&self) -> Value {
        let plugins: Vec<Value> = self
            .plugins
            .iter()
            .map(|(name, active)| {
                json!({
                    "active": active,
                    "enabled": active,
                    "shortName": name,
                    "longName": name,
                    "version": "1.0-fake",
                    "bundled": false,
                    "hasUpdate": false,
                })
            })
            .collect();
        json!({"_class": "hudson.LocalPluginManager", "plugins": plugins})
    }

    /// Whether an item (job or folder) exists at `path`, compared case-insensitively.
    pub fn item_exists(&self, path: &str) -> bool {
        self.job_key(path).is_some() || self.folder_key(path).is_some()
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
            q.left = true;
        }
        true
    }

    /// `api/json` of a queue item. Waiting and buildable items export neither
    /// `cancelled` nor `executable`; a `LeftItem` exports both, `executable` being null
    /// until its build exists (core `hudson/model/Queue.java`, `Item` and `LeftItem`).
    pub fn queue_json(&self, q: &QueueEntry) -> Value {
        let task = json!({
            "_class": "hudson.model.FreeStyleProject",
            "name": split_path(&q.job).1,
            "url": format!("{}{}/", self.base, url_path(&q.job)),
        });
        if q.left {
            let executable = match (q.created, q.number) {
                (true, Some(n)) => json!({
                    "_class": "hudson.model.FreeStyleBuild",
                    "number": n,
                    "url": format!("{}{}/{n}/", self.base, url_path(&q.job)),
                }),
                _ => Value::Null,
            };
            return json!({
                "_class": "hudson.model.Queue$LeftItem",
                "id": q.id,
                "why": null,
                "blocked": false,
                "buildable": false,
                "stuck": false,
                "inQueueSince": q.in_queue_since_ms,
                "task": task,
                "cancelled": q.cancelled,
                "executable": executable,
            });
        }
        let now = Instant::now();
        let (class, why, buildable) = if now < q.quiet_until {
            let left = q.quiet_until - now;
            (
                "hudson.model.Queue$WaitingItem",
                format!(
                    "In the quiet period. Expires in {:.1} sec",
                    left.as_secs_f64()
                ),
                false,
            )
        } else {
            ("hudson.model.Queue$BuildableItem", q.why.clone(), true)
        };
        json!({
            "_class": class,
            "id": q.id,
            "why": why,
            "blocked": false,
            "buildable": buildable,
            "stuck": false,
            "inQueueSince": q.in_queue_since_ms,
            "task": task,
        })
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

/// The key among `keys` equal to `path`, else one equal ignoring ASCII case.
fn item_key<'a>(keys: impl Iterator<Item = &'a String> + Clone, path: &str) -> Option<String> {
    keys.clone()
        .find(|k| *k == path)
        .or_else(|| keys.into_iter().find(|k| k.eq_ignore_ascii_case(path)))
        .cloned()
}

/// Build `b` ends with `result`; its console gets what the job's script printed: the
/// launcher's last lines (the launch handshake for build `SD_BUILD_ID` when `handshake`
/// and the launcher ran to its end; upstream's usage text otherwise), then Jenkins'
/// `Finished: <result>` (core `Run.execute`).
pub(crate) fn end(b: &mut FakeBuild, result: &str, handshake: bool) {
    b.building = false;
    b.result = Some(result.to_string());
    b.finish_at = None;
    b.abort_at = None;
    let id = b.params.get("SD_BUILD_ID").cloned().unwrap_or_default();
    match (handshake, result) {
        (true, "SUCCESS" | "FAILURE") => {
            b.console
                .push_str(&format!("sdx-launch-result protocol=1 build={id} status={result}\n"));
        }
        (true, _) => {}
        (false, _) => b.console.push_str(
            "Incorrect Usage. flag provided but not defined: -token-file\n\nNAME:\n   launcher - launch a build\n",
        ),
    }
    b.console.push_str(&format!("Finished: {result}\n"));
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

/// An agent of the fake Jenkins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FakeAgent {
    /// Its labels (besides its name).
    pub labels: BTreeSet<String>,
    /// Its executors.
    pub executors: u32,
    /// Executors running something.
    pub busy: u32,
    /// Whether it is connected and not marked offline.
    pub online: bool,
}
