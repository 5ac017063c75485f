//! A stateful fake Jenkins on loopback, for tests and benchmarks (feature `test-support`;
//! not API-stable).
//!
//! No Jenkins can run where this crate is tested, so the fake answers the way Jenkins
//! core's source says a controller does (core 2.479 unless [`FakeOptions::version`] says
//! otherwise; each behaviour names its source where it is implemented):
//!
//! * jobs keep their `config.xml` verbatim, and are *loaded* as Jenkins loads them: the
//!   top-level description, the parameter definitions, `<disabled>`, and elements of
//!   plugins that are not installed silently dropped (the job is created anyway; see
//!   [`FakeJenkins::old_data`]), so a missing build-timeout plugin removes the timeout;
//! * `createItem`: 200; 400 + `X-Error` for a name in use (case-insensitively); 500 for
//!   XML it cannot read; 400 without a Content-Type;
//! * `buildWithParameters`: 201 + `Location` of the queue item; 303 to an identical item
//!   already queued; 302 without an item when the schedule is refused
//!   ([`FakeJenkins::refuse_next_schedules`]); 409 for a disabled job; 500 (400 from
//!   2.525) for a job without parameters; the quiet period (5 s unless `delay=`);
//! * the queue: waiting items without `cancelled`/`executable`, left items with
//!   `executable: null` until their build exists ([`FakeOptions::executable_delay`]);
//!   `cancelItem` 204 / 500 (already left) / 422 (no Cancel permission) / 404;
//! * builds with `timestamp` and `queueId`; `stop` and the job's own timeout abort
//!   *asynchronously* ([`FakeOptions::abort_delay`]); `submitDescription`;
//! * CSRF: crumbs bound to a session cookie, required only on POSTs authenticated with
//!   the password ([`FAKE_PASSWORD`]), not with the API token (`ApiCrumbExclusion`);
//! * permissions ([`FakeJenkins::deny`]) answered with Jenkins' access-denied page, which
//!   like every layout page contains the crumb header name;
//! * `GET /pluginManager/api/json` (needs Overall/SystemRead);
//! * a Shell step run as a Jenkins agent runs it ([`run_shell_step`]);
//!
//! plus injectable faults: any status, slow answers, and failures *after* the request took
//! effect (the ambiguous case). Every request is recorded with the status it got.
//!
//! Folders (CloudBees Folders plugin) exist only when the test creates them with
//! [`FakeJenkins::create_folder`]; jobs live inside their folder, anything under a missing
//! folder is 404 (as `createItem` in a missing folder is on Jenkins), and each folder's
//! `api/json` lists the items directly in it. Jobs in a folder are named by their item path
//! in this API (`ci/sd/SD-1`); root jobs by their name.
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

mod faults;
mod job_routes;
mod model;
mod options;
mod pages;
mod routes;
mod shell;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use executor_base::engine::{BreakerConfig, RetryPolicy};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::JenkinsExecutorBuilder;
pub use faults::{Fault, FaultAction, Recorded};
pub use options::{
    DEFAULT_PLUGINS, FAKE_PASSWORD, FAKE_TOKEN, FAKE_USER, FAKE_VERSION, FakeOptions,
};
pub use shell::{run_shell_step, shell_command_line};
use state::State;

/// A build as the fake sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBuildView {
    /// Build number.
    pub number: u64,
    /// The queue item it came from.
    pub queue_id: u64,
    /// Still running (also while an abort is under way).
    pub building: bool,
    /// Whether an abort (stop, the job's own timeout) is under way.
    pub aborting: bool,
    /// `SUCCESS`, `FAILURE`, `ABORTED`, ...
    pub result: Option<String>,
    /// The build's description.
    pub description: Option<String>,
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
    /// It left the queue (cancelled, or handed to an executor).
    pub left: bool,
    /// The build it became, once that build exists.
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
            password: opts.password,
            version: opts.version,
            base: format!("http://{addr}{prefix}"),
            prefix,
            crumb_issuer: opts.crumb_issuer,
            crumb_ttl: None,
            crumbs: BTreeMap::new(),
            issued_crumbs: 0,
            plugins: opts.plugins.into_iter().map(|p| (p, true)).collect(),
            denied: Default::default(),
            agents: opts
                .agents
                .into_iter()
                .map(|(name, labels, executors)| {
                    let agent = state::FakeAgent {
                        labels: labels.into_iter().collect(),
                        executors,
                        busy: 0,
                        online: true,
                    };
                    (name, agent)
                })
                .collect(),
            jobs: BTreeMap::new(),
            folders: Default::default(),
            queue: BTreeMap::new(),
            next_queue_id: 0,
            quiet_period: opts.quiet_period,
            queue_delay: opts.queue_delay,
            executable_delay: opts.executable_delay,
            abort_delay: opts.abort_delay,
            run_for: opts.run_for,
            launcher_handshake: true,
            refuse_schedules: 0,
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

    /// The user's password (POSTs authenticated with it need a crumb).
    pub fn password(&self) -> String {
        self.state.lock().password.clone()
    }

    /// The user and its API token (for a builder with the default settings).
    pub fn credentials(&self) -> (String, String) {
        let s = self.state.lock();
        (s.user.clone(), s.token.clone())
    }

    /// A builder pointed at this fake with its user and API token, quick retries and
    /// short timeouts.
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
                budget: None,
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

    /// See [`FakeOptions::abort_delay`].
    pub fn set_abort_delay(&self, delay: Duration) {
        self.state.lock().abort_delay = delay;
    }

    /// See [`FakeOptions::executable_delay`].
    pub fn set_executable_delay(&self, delay: Duration) {
        self.state.lock().executable_delay = delay;
    }

    /// Hands the waiting queue item of `job` to an executor; the number of the build it
    /// becomes. `None` when there is no waiting item or it is still in its quiet period.
    pub fn start_queued(&self, job: &str) -> Option<u64> {
        let mut s = self.state.lock();
        s.tick();
        let id = s.waiting_item(job)?.id;
        s.promote(id)
    }

    /// Hands every waiting queue item past its quiet period to an executor; how many.
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
    /// `ABORTED`, `NOT_BUILT`) at once; `false` if there is no such running build.
    pub fn finish(&self, job: &str, number: u64, result: &str) -> bool {
        let mut s = self.state.lock();
        s.tick();
        let handshake = s.launcher_handshake;
        match s.jobs.get_mut(job).and_then(|j| j.builds.get_mut(&number)) {
            Some(b) if b.building => {
                state::end(b, result, handshake);
                true
            }
            _ => false,
        }
    }

    /// Whether the jobs' launcher writes the launch handshake to the console when a
    /// build ends (default `true`: the reference `launch`); `false` plays upstream's
    /// launcher given native mode's `--token-file`, which prints its usage and exits 0,
    /// so the job script ends and Jenkins records `SUCCESS` without a step having run.
    pub fn set_launcher_handshake(&self, on: bool) {
        self.state.lock().launcher_handshake = on;
    }

    /// Appends `text` to the console log of build `number` of `job`; `false` if there is
    /// no such build.
    pub fn append_console(&self, job: &str, number: u64, text: &str) -> bool {
        let mut s = self.state.lock();
        match s.jobs.get_mut(job).and_then(|j| j.builds.get_mut(&number)) {
            Some(b) => {
                b.console.push_str(text);
                true
            }
            None => false,
        }
    }

    /// The console log of build `number` of `job`.
    pub fn console(&self, job: &str, number: u64) -> Option<String> {
        let s = self.state.lock();
        s.jobs
            .get(job)?
            .builds
            .get(&number)
            .map(|b| b.console.clone())
    }

    /// The build-timeout plugin's timeout fires for build `number` of `job`: the job's
    /// `WriteDescriptionOperation` text (after `$VAR` expansion and `MessageFormat`, as the
    /// plugin does) becomes the build description, and its `AbortOperation` aborts the
    /// build ([`FakeOptions::abort_delay`] later). `false` when the job has no timeout
    /// (the plugin was not installed when the job was loaded) or the build is not running.
    pub fn fire_job_timeout(&self, job: &str, number: u64) -> bool {
        let mut s = self.state.lock();
        s.tick();
        s.fire_job_timeout(job, number)
    }

    /// Moves the start time of build `number` of `job` back by `by` (as if it had been
    /// running that much longer); `false` if there is no such build.
    pub fn backdate(&self, job: &str, number: u64, by: Duration) -> bool {
        let mut s = self.state.lock();
        match s.jobs.get_mut(job).and_then(|j| j.builds.get_mut(&number)) {
            Some(b) => {
                b.timestamp_ms -= by.as_millis() as i64;
                true
            }
            None => false,
        }
    }

    /// Sets the `why` of the waiting queue item of `job`.
    pub fn set_why(&self, job: &str, why: &str) {
        let mut s = self.state.lock();
        for q in s.queue.values_mut().filter(|q| q.job == job && q.waiting()) {
            q.why = why.to_string();
        }
    }

    /// Forgets the queue items of `job` that left the queue, as Jenkins does 5 minutes
    /// after an item became a build or was cancelled (`Queue.leftItems` cache).
    pub fn forget_left_items(&self, job: &str) -> usize {
        let mut s = self.state.lock();
        let before = s.queue.len();
        s.queue.retain(|_, q| q.job != job || q.waiting());
        before - s.queue.len()
    }

    /// The next `n` schedules are refused (as a `QueueDecisionHandler` can):
    /// `buildWithParameters` answers 302 to the job and queues nothing.
    pub fn refuse_next_schedules(&self, n: usize) {
        self.state.lock().refuse_schedules = n;
    }

    /// The user loses `permission` (`Job/Cancel`, `Job/Build`, `Run/Update`,
    /// `Overall/SystemRead`, `Job/Create`, `Job/Configure`, `Job/Delete`).
    pub fn deny(&self, permission: &str) {
        self.state.lock().denied.insert(permission.to_string());
    }

    /// The user gets `permission` back.
    pub fn allow(&self, permission: &str) {
        self.state.lock().denied.remove(permission);
    }

    /// Adds (or replaces) an online agent `name` with `labels` and `executors`.
    pub fn add_agent(&self, name: &str, labels: &[&str], executors: u32) {
        self.state.lock().agents.insert(
            name.to_string(),
            state::FakeAgent {
                labels: labels.iter().map(|l| l.to_string()).collect(),
                executors,
                busy: 0,
                online: true,
            },
        );
    }

    /// Connects (`true`) or disconnects agent `name`; `false` when there is no such agent.
    pub fn set_agent_online(&self, name: &str, online: bool) -> bool {
        match self.state.lock().agents.get_mut(name) {
            Some(a) => {
                a.online = online;
                true
            }
            None => false,
        }
    }

    /// Removes every agent: no label has a node.
    pub fn remove_agents(&self) {
        self.state.lock().agents.clear();
    }

    /// Installs (and activates) a plugin; jobs loaded from now on may use it.
    pub fn install_plugin(&self, name: &str) {
        self.state.lock().plugins.insert(name.to_string(), true);
    }

    /// Uninstalls a plugin; jobs loaded from now on lose its elements.
    pub fn uninstall_plugin(&self, name: &str) {
        self.state.lock().plugins.remove(name);
    }

    /// Disables an installed plugin (listed with `active: false`; its classes cannot load).
    pub fn disable_plugin(&self, name: &str) {
        if let Some(active) = self.state.lock().plugins.get_mut(name) {
            *active = false;
        }
    }

    /// What Jenkins dropped while loading a job's `config.xml` ("old data"): one line per
    /// element whose plugin is missing.
    pub fn old_data(&self, job: &str) -> Vec<String> {
        self.state
            .lock()
            .jobs
            .get(job)
            .map(|j| j.model.old_data.clone())
            .unwrap_or_default()
    }

    /// Disables a job (as a user in Jenkins' UI would): it is no longer buildable.
    pub fn disable_job(&self, job: &str) -> bool {
        match self.state.lock().jobs.get_mut(job) {
            Some(j) => {
                j.model.disabled = true;
                true
            }
            None => false,
        }
    }

    /// Deletes a job behind the executor's back (its waiting items are cancelled, as in
    /// Jenkins).
    pub fn delete_job(&self, job: &str) -> bool {
        let mut s = self.state.lock();
        for q in s.queue.values_mut().filter(|q| q.job == job && q.waiting()) {
            q.cancelled = true;
            q.left = true;
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
        let loaded = s.load_job(config_xml.to_string());
        s.jobs.insert(job.to_string(), loaded);
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

    /// A job's `config.xml`, as stored (verbatim, as `GET config.xml` answers it).
    pub fn job_config(&self, job: &str) -> Option<String> {
        self.state.lock().jobs.get(job).map(|j| j.config.clone())
    }

    /// Whether the job has a build-timeout wrapper after loading (the plugin was
    /// installed when the job was created or last updated).
    pub fn has_job_timeout(&self, job: &str) -> bool {
        self.state
            .lock()
            .jobs
            .get(job)
            .is_some_and(|j| j.model.timeout.is_some())
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
                        queue_id: b.queue_id,
                        building: b.building,
                        aborting: b.abort_at.is_some(),
                        result: b.result.clone(),
                        description: b.description.clone(),
                        params: b.params.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every queue item ever created for `job` (waiting, cancelled or left), until
    /// forgotten.
    pub fn queue_items(&self, job: &str) -> Vec<FakeQueueView> {
        let mut s = self.state.lock();
        s.tick();
        s.queue
            .values()
            .filter(|q| q.job == job)
            .map(|q| FakeQueueView {
                id: q.id,
                cancelled: q.cancelled,
                left: q.left,
                executable: q.number.filter(|_| q.created),
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
