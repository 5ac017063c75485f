//! A stateful fake Jenkins on loopback, for tests and benchmarks (feature `test-support`;
//! not API-stable).
//!
//! It keeps jobs (with their `config.xml`), a queue whose items become builds after a
//! delay the test sets (or when the test says so), builds that run until the test finishes
//! them, they are stopped, or an automatic run time passes, CSRF crumbs bound to a session
//! cookie (issuing, validation, expiry), HTTP basic auth, and injectable faults: any status
//! (401/403/404/429/5xx), slow answers, and failures *after* the request took effect (the
//! ambiguous case). It answers the paths `executor-jenkins` uses, the way Jenkins does
//! (`Location` of queue items, `X-Error` on an existing job, 302 after POSTs, 422 when
//! cancelling an item that left the queue), and counts every request.
//!
//! Folders (CloudBees Folders plugin) exist only when the test creates them with
//! [`FakeJenkins::create_folder`]; jobs live inside their folder, anything under a missing
//! folder is 404 (as `createItem` in a missing folder is on Jenkins), and each folder's
//! `api/json` lists the items directly in it. Jobs in a folder are named by their item path
//! in this API (`ci/sd/SD-1`); root jobs by their name, as before.
//!
//! ```
//! use executor_jenkins::fake::FakeJenkins;
//! use executor_base::{Executor, StartConfig, Phase};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let jenkins = FakeJenkins::start().await;
//! let executor = jenkins.executor_builder().build().await.unwrap();
//! let build = StartConfig::builder(42, "http://127.0.0.1:9", "node:22", "token").build().unwrap();
//! executor.start(&build).await.unwrap();
//! assert_eq!(executor.status(&build.to_stop()).await.unwrap().phase, Phase::Pending);
//! jenkins.start_queued("SD-42").unwrap();
//! jenkins.finish("SD-42", 1, "SUCCESS");
//! assert_eq!(executor.status(&build.to_stop()).await.unwrap().phase, Phase::Succeeded);
//! # });
//! ```

mod routes;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::JenkinsExecutorBuilder;
use state::State;

/// The user the fake accepts by default.
pub const FAKE_USER: &str = "screwdriver";
/// The API token the fake accepts by default.
pub const FAKE_TOKEN: &str = "fake-api-token-0123456789";

/// The version the fake announces in its `X-Jenkins` header.
pub const FAKE_VERSION: &str = "2.479.1-fake";

/// How a fake starts.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Path Jenkins is served under (`/jenkins`), or empty.
    pub path_prefix: String,
    /// Whether `/crumbIssuer/api/json` exists (and POSTs need a crumb).
    pub crumb_issuer: bool,
    /// The accepted user.
    pub user: String,
    /// The accepted API token.
    pub token: String,
    /// Queue items become builds after this delay; `None`: only on
    /// [`FakeJenkins::start_queued`].
    pub queue_delay: Option<Duration>,
    /// Builds finish with this result after this run time; `None`: they run until the
    /// test finishes them or they are stopped.
    pub run_for: Option<(Duration, String)>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            path_prefix: String::new(),
            crumb_issuer: true,
            user: FAKE_USER.to_string(),
            token: FAKE_TOKEN.to_string(),
            queue_delay: None,
            run_for: None,
        }
    }
}

/// What an injected fault does.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Answer with this status, body and headers without processing the request.
    Respond {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// Wait, then process and answer normally (a slow Jenkins).
    DelayBefore(Duration),
    /// Process the request, then wait before answering (the client may time out although
    /// the request took effect).
    DelayAfter(Duration),
    /// Process the request, then answer with this status (a proxy error after Jenkins
    /// acted).
    ProcessThenRespond(u16),
}

/// A fault for the next matching request(s).
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests of this method (`GET`, `POST`); any when `None`.
    pub method: Option<String>,
    /// Only requests whose path contains this.
    pub path_contains: String,
    /// How many more requests it applies to.
    pub remaining: usize,
    /// What happens.
    pub action: FaultAction,
}

impl Fault {
    /// A fault on the next request of `method` whose path contains `path_contains`.
    pub fn on(method: &str, path_contains: &str, action: FaultAction) -> Self {
        Self {
            method: (!method.is_empty()).then(|| method.to_ascii_uppercase()),
            path_contains: path_contains.to_string(),
            remaining: 1,
            action,
        }
    }

    /// An answer with `status` (body `injected <status>`) instead of processing.
    pub fn status(method: &str, path_contains: &str, status: u16) -> Self {
        Self::on(
            method,
            path_contains,
            FaultAction::Respond {
                status,
                body: format!("injected {status}"),
                headers: Vec::new(),
            },
        )
    }

    /// Applies to the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = n;
        self
    }
}

/// One request the fake saw (no bodies: they may hold tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`.
    pub method: String,
    /// The path, as sent (percent-encoded, with the prefix).
    pub path: String,
    /// The query string.
    pub query: String,
    /// Whether a `Jenkins-Crumb` header came with it.
    pub with_crumb: bool,
}

/// A build as the fake sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBuildView {
    /// Build number.
    pub number: u64,
    /// Still running.
    pub building: bool,
    /// `SUCCESS`, `FAILURE`, `ABORTED`, ...
    pub result: Option<String>,
    /// The build's parameters (declared ones only, as Jenkins keeps them).
    pub params: BTreeMap<String, String>,
}

/// A queue item as the fake sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeQueueView {
    /// Queue item id.
    pub id: u64,
    /// Cancelled.
    pub cancelled: bool,
    /// The build it became.
    pub executable: Option<u64>,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
}

/// A running fake Jenkins; stops when dropped.
pub struct FakeJenkins {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for FakeJenkins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeJenkins")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeJenkins {
    /// Starts a fake with [`FakeOptions::default`] on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_with(FakeOptions::default()).await
    }

    /// Starts a fake with `opts` on `127.0.0.1:0`.
    pub async fn start_with(opts: FakeOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let prefix = match opts.path_prefix.trim_matches('/') {
            "" => "/".to_string(),
            p => format!("/{p}/"),
        };
        let state = Arc::new(Mutex::new(State {
            user: opts.user,
            token: opts.token,
            base: format!("http://{addr}{prefix}"),
            prefix,
            crumb_issuer: opts.crumb_issuer,
            crumb_ttl: None,
            crumbs: BTreeMap::new(),
            issued_crumbs: 0,
            jobs: BTreeMap::new(),
            folders: BTreeSet::new(),
            queue: BTreeMap::new(),
            next_queue_id: 0,
            queue_delay: opts.queue_delay,
            run_for: opts.run_for,
            faults: Vec::new(),
            requests: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(routes::handle)
            .with_state(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            state,
            _stop: tx,
        }
    }

    /// `http://127.0.0.1:<port>` (without the path prefix).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The path prefix (`/` or `/jenkins/`).
    pub fn path_prefix(&self) -> String {
        self.state.lock().prefix.clone()
    }

    /// A builder pointed at this fake with its credentials, quick retries and short
    /// timeouts.
    pub fn executor_builder(&self) -> JenkinsExecutorBuilder {
        let (user, token) = {
            let s = self.state.lock();
            (s.user.clone(), s.token.clone())
        };
        JenkinsExecutorBuilder::new()
            .with_url(self.url())
            .with_path_prefix(self.path_prefix())
            .with_credentials(user, token)
            .with_request_timeout(Duration::from_secs(5))
            .with_retry(RetryPolicy {
                max_retries: 3,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                multiplier: 2.0,
                jitter: false,
            })
            .with_breaker(BreakerConfig {
                max_failures: 50,
                reset_timeout: Duration::from_millis(200),
                call_timeout: Duration::from_secs(15),
            })
    }

    /// Queue items of later `buildWithParameters` become builds after `delay` (`None`:
    /// only on [`FakeJenkins::start_queued`]).
    pub fn set_queue_delay(&self, delay: Option<Duration>) {
        self.state.lock().queue_delay = delay;
    }

    /// Builds started from now on finish with `result` after `run` (`None`: they run
    /// until finished or stopped).
    pub fn set_run_for(&self, run: Option<(Duration, &str)>) {
        self.state.lock().run_for = run.map(|(d, r)| (d, r.to_string()));
    }

    /// Turns the waiting queue item of `job` into a running build; its number.
    pub fn start_queued(&self, job: &str) -> Option<u64> {
        let mut s = self.state.lock();
        s.tick();
        let id = s.waiting_item(job)?.id;
        s.promote(id)
    }

    /// Turns every waiting queue item into a running build; how many.
    pub fn start_all_queued(&self) -> usize {
        let mut s = self.state.lock();
        s.tick();
        let ids: Vec<u64> = s
            .queue
            .values()
            .filter(|q| q.waiting())
            .map(|q| q.id)
            .collect();
        ids.into_iter()
            .filter(|id| s.promote(*id).is_some())
            .count()
    }

    /// Finishes build `number` of `job` with `result` (`SUCCESS`, `FAILURE`, `UNSTABLE`,
    /// `ABORTED`, `NOT_BUILT`); `false` if there is no such running build.
    pub fn finish(&self, job: &str, number: u64, result: &str) -> bool {
        self.finish_with(job, number, result, None)
    }

    /// Aborts build `number` of `job` the way the build-timeout plugin does: it writes the
    /// job's `WriteDescriptionOperation` text as the build description, then aborts.
    pub fn fire_job_timeout(&self, job: &str, number: u64) -> bool {
        let desc = {
            let s = self.state.lock();
            s.jobs.get(job).and_then(|j| {
                let root = crate::xml::parse(&j.config).ok()?;
                let tag = "hudson.plugins.build__timeout.operations.WriteDescriptionOperation";
                let op = root.descendants().into_iter().find(|e| e.name == tag)?;
                op.child_text("description").map(str::to_string)
            })
        };
        self.finish_with(job, number, "ABORTED", desc)
    }

    fn finish_with(
        &self,
        job: &str,
        number: u64,
        result: &str,
        description: Option<String>,
    ) -> bool {
        let mut s = self.state.lock();
        s.tick();
        match s.jobs.get_mut(job).and_then(|j| j.builds.get_mut(&number)) {
            Some(b) if b.building => {
                b.building = false;
                b.result = Some(result.to_string());
                b.description = description;
                b.finish_at = None;
                true
            }
            _ => false,
        }
    }

    /// Sets the `why` of the waiting queue item of `job`.
    pub fn set_why(&self, job: &str, why: &str) {
        let mut s = self.state.lock();
        for q in s.queue.values_mut().filter(|q| q.job == job && q.waiting()) {
            q.why = why.to_string();
        }
    }

    /// Forgets the queue items of `job` that left the queue, as Jenkins does some
    /// minutes after an item became a build or was cancelled.
    pub fn forget_left_items(&self, job: &str) -> usize {
        let mut s = self.state.lock();
        let before = s.queue.len();
        s.queue.retain(|_, q| q.job != job || q.waiting());
        before - s.queue.len()
    }

    /// Deletes a job behind the executor's back (its waiting items are cancelled, as in
    /// Jenkins).
    pub fn delete_job(&self, job: &str) -> bool {
        let mut s = self.state.lock();
        for q in s.queue.values_mut().filter(|q| q.job == job && q.waiting()) {
            q.cancelled = true;
        }
        s.jobs.remove(job).is_some()
    }

    /// Creates a job directly (as another Jenkins user would); `job` is a name at the
    /// root or an item path (`ci/sd/SD-1`) inside a folder that exists.
    ///
    /// # Panics
    /// When the job's folder does not exist or a folder already has that path.
    pub fn put_job(&self, job: &str, config_xml: &str) {
        let mut s = self.state.lock();
        let folder = state::split_path(job).0;
        assert!(
            folder.is_empty() || s.folders.contains(folder),
            "fake Jenkins: folder {folder:?} of job {job:?} does not exist"
        );
        assert!(
            !s.folders.contains(job),
            "fake Jenkins: {job:?} is a folder"
        );
        s.jobs
            .insert(job.to_string(), State::new_job(config_xml.to_string()));
    }

    /// Creates the folder at `path` (`ci/sd`) and any missing parent folder, as a
    /// Jenkins user with the Folders plugin would; `false` if it already existed.
    ///
    /// # Panics
    /// When `path` has an empty segment or a job already sits on one of its segments.
    pub fn create_folder(&self, path: &str) -> bool {
        let mut s = self.state.lock();
        let mut current = String::new();
        let mut created = false;
        for seg in path.split('/') {
            assert!(
                !seg.is_empty(),
                "fake Jenkins: empty segment in folder path {path:?}"
            );
            current = state::join_path(&current, seg);
            assert!(
                !s.jobs.contains_key(&current),
                "fake Jenkins: {current:?} is a job, not a folder"
            );
            created |= s.folders.insert(current.clone());
        }
        created
    }

    /// Deletes the folder at `path` with every job and folder in it (their waiting
    /// queue items are cancelled, as in Jenkins); `false` if there is no such folder.
    pub fn delete_folder(&self, path: &str) -> bool {
        self.state.lock().remove_folder(path)
    }

    /// The paths of all folders (`ci`, `ci/sd`).
    pub fn folders(&self) -> Vec<String> {
        self.state.lock().folders.iter().cloned().collect()
    }

    /// Replaces a job's description (as a Jenkins user editing it would); `false` if
    /// there is no such job.
    pub fn set_description(&self, job: &str, description: &str) -> bool {
        match self.state.lock().jobs.get_mut(job) {
            Some(j) => {
                j.description = description.to_string();
                true
            }
            None => false,
        }
    }

    /// A job's description.
    pub fn description(&self, job: &str) -> Option<String> {
        self.state
            .lock()
            .jobs
            .get(job)
            .map(|j| j.description.clone())
    }

    /// The names of all jobs: names at the root, item paths (`ci/sd/SD-1`) in folders.
    pub fn job_names(&self) -> Vec<String> {
        self.state.lock().jobs.keys().cloned().collect()
    }

    /// A job's `config.xml`.
    pub fn job_config(&self, job: &str) -> Option<String> {
        self.state.lock().jobs.get(job).map(|j| j.config.clone())
    }

    /// A job's builds.
    pub fn builds(&self, job: &str) -> Vec<FakeBuildView> {
        let mut s = self.state.lock();
        s.tick();
        s.jobs
            .get(job)
            .map(|j| {
                j.builds
                    .values()
                    .map(|b| FakeBuildView {
                        number: b.number,
                        building: b.building,
                        result: b.result.clone(),
                        params: b.params.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every queue item ever created for `job` (waiting, cancelled or left).
    pub fn queue_items(&self, job: &str) -> Vec<FakeQueueView> {
        let mut s = self.state.lock();
        s.tick();
        s.queue
            .values()
            .filter(|q| q.job == job)
            .map(|q| FakeQueueView {
                id: q.id,
                cancelled: q.cancelled,
                executable: q.executable,
                params: q.params.clone(),
            })
            .collect()
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// How many requests so far.
    pub fn request_count(&self) -> usize {
        self.state.lock().requests.len()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.lock().requests.clear();
    }

    /// Invalidates every issued crumb (a Jenkins restart, a session expiry).
    pub fn expire_crumbs(&self) {
        self.state.lock().crumbs.clear();
    }

    /// Crumbs expire this long after they were issued.
    pub fn set_crumb_ttl(&self, ttl: Option<Duration>) {
        self.state.lock().crumb_ttl = ttl;
    }

    /// How many crumbs were issued.
    pub fn crumbs_issued(&self) -> u64 {
        self.state.lock().issued_crumbs
    }
}
