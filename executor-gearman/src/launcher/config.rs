//! The launcher worker's configuration, and its declaration for the shared option system
//! (`EXECUTOR_GEARMAN_WORKER_*`, `[gearmanWorker]` file sections,
//! `--opt gearmanWorker.<key>=<value>`).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use executor_base::config::parse_http_url;
use executor_base::options::{ConfigBuilder, Configurable, Configured, Options, env_vars};
use executor_base::{Error, ErrorKind, ImageRef};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::codec::DEFAULT_MAX_PACKET_SIZE;

/// The option scheme of the launcher worker: `--opt gearmanWorker.<key>=<value>`,
/// `EXECUTOR_GEARMAN_WORKER_<KEY>`, `[gearmanWorker]` in `sdx.toml`.
pub const WORKER_SCHEME: &str = "gearmanWorker";

/// How a launcher worker connects, what it registers and how it maps Zuul jobs to
/// builds of the wrapped executor.
///
/// A `build:` job's arguments may carry the Screwdriver start fields (`buildId`,
/// `apiUri`, `container`, `token`, `annotations`, `jobId`, ...), as the
/// [`crate::GearmanExecutor`] sends them. A plain Zuul scheduler sends only `ZUUL_*`
/// parameters; then the `default*` fields below fill in `apiUri`, `container`, `token`
/// and `storeUri`, and the build id is the build number the worker assigns.
///
/// ```
/// use executor_gearman::WorkerConfig;
/// let cfg: WorkerConfig = serde_json::from_value(serde_json::json!({
///     "server": "127.0.0.1:4730", "jobs": ["unit"], "nodes": ["linux"], "maxBuilds": 4,
///     "defaultToken": "never-printed"
/// })).unwrap();
/// assert_eq!(cfg.functions(), ["build:unit", "build:unit:linux"]);
/// assert!(!format!("{cfg:?}").contains("never-printed"));
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkerConfig {
    /// gearmand's `host:port` (default `127.0.0.1:4730`).
    pub server: String,
    /// Zuul job names this launcher runs; registers `build:<job>` for each (required).
    pub jobs: Vec<String>,
    /// Node names or classes; also registers `build:<job>:<node>` for each job and node.
    pub nodes: Vec<String>,
    /// The manager name of `stop:<manager>` and `set_description:<manager>`; must be
    /// unique per worker process (default `sdx-<hostname>-<pid>-<random>`).
    pub manager: Option<String>,
    /// `worker_name` in the start announcement (default: the host name).
    pub worker_name: Option<String>,
    /// Builds run at once (default 10).
    pub max_builds: usize,
    /// How often a running build's progress (`WORK_STATUS` elapsed/timeout seconds) is
    /// sent, in milliseconds (default 1000). The build's end is learnt from the executor
    /// (`Executor::wait_for_change`), not by polling at this interval.
    pub poll_interval_ms: u64,
    /// `apiUri` for jobs whose arguments have none.
    pub default_api_uri: Option<String>,
    /// `container` for jobs whose arguments have none.
    pub default_container: Option<String>,
    /// `token` for jobs whose arguments have none (never serialised or printed).
    #[serde(skip_serializing)]
    pub default_token: Option<SecretString>,
    /// `storeUri` for jobs whose arguments have none.
    pub default_store_uri: Option<String>,
    /// The build URL announced to Zuul, with `{buildId}`, `{number}`, `{name}`, `{uuid}`
    /// and `{manager}` replaced (default: `<uiUri>/pipelines/<pipelineId>/builds/<buildId>`
    /// when the build has both, else none).
    pub build_url: Option<String>,
    /// After a drain starts, running builds get this many seconds to finish before they
    /// are stopped (reported `ABORTED`); default: no limit.
    pub drain_timeout_secs: Option<u64>,
    /// Stop builds nobody waits for any more: a `build:` job whose submitters all
    /// disconnected (gearmand's client count for its unique id is 0) is not started, or
    /// is stopped, since its outcome can never be reported (default true). Jobs without a
    /// unique id are never checked.
    pub stop_abandoned: bool,
    /// How often a running build's job is checked for that, in milliseconds (default 5000).
    pub abandon_check_ms: u64,
    /// Bound on each connect to gearmand, in milliseconds (default 5000).
    pub connect_timeout_ms: u64,
    /// Largest Gearman packet body accepted or sent (default 16 MiB). A job whose
    /// arguments are larger is refused (its body is dropped unread) and the connection
    /// stays up.
    pub max_packet_size: usize,
    /// Where the worker records the builds it runs, so that a restarted worker (even
    /// after `kill -9`) adopts or stops them before it takes work, and keeps its manager
    /// name (default: none, records stay in memory; `sdx gearman-worker` defaults to
    /// `<state dir>/gearman-worker`). One worker per directory (it is locked).
    pub state_dir: Option<String>,
    /// How long a finished build's outcome is kept, in seconds (default 3600): a job with
    /// the same `ZUUL_UUID` arriving within this window (gearmand re-queued it because a
    /// connection dropped) gets that outcome instead of a second run.
    pub retain_finished_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:4730".into(),
            jobs: Vec::new(),
            nodes: Vec::new(),
            manager: None,
            worker_name: None,
            max_builds: 10,
            poll_interval_ms: 1000,
            default_api_uri: None,
            default_container: None,
            default_token: None,
            default_store_uri: None,
            build_url: None,
            drain_timeout_secs: None,
            stop_abandoned: true,
            abandon_check_ms: 5000,
            connect_timeout_ms: 5000,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            state_dir: None,
            retain_finished_secs: 3600,
        }
    }
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("server", &self.server)
            .field("jobs", &self.jobs)
            .field("nodes", &self.nodes)
            .field("manager", &self.manager)
            .field("worker_name", &self.worker_name)
            .field("max_builds", &self.max_builds)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("default_api_uri", &self.default_api_uri)
            .field("default_container", &self.default_container)
            .field(
                "default_token",
                &self.default_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("default_store_uri", &self.default_store_uri)
            .field("build_url", &self.build_url)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .field("stop_abandoned", &self.stop_abandoned)
            .field("abandon_check_ms", &self.abandon_check_ms)
            .field("state_dir", &self.state_dir)
            .field("retain_finished_secs", &self.retain_finished_secs)
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    /// A config for `jobs` on gearmand at `server`, defaults for the rest.
    pub fn new(
        server: impl Into<String>,
        jobs: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            server: server.into(),
            jobs: jobs.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The defaults overridden by `EXECUTOR_GEARMAN_WORKER_<KEY>` variables, one per key
    /// of the README's table or `sdx options gearmanWorker` (`SERVER`, `JOBS` and `NODES`
    /// comma separated, `MAX_BUILDS`, `DEFAULT_API_URI` or its old name `API_URI`, ...).
    /// A bad value or an unknown `EXECUTOR_GEARMAN_WORKER_*` variable is a
    /// [`ErrorKind::ConfigInvalid`] naming the key.
    pub fn from_env() -> Result<Self, Error> {
        Configured::<Self>::default().with_vars(env_vars()).finish()
    }

    /// The functions a worker with this config registers for builds.
    pub fn functions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for job in &self.jobs {
            out.push(format!("build:{job}"));
            for node in &self.nodes {
                out.push(format!("build:{job}:{node}"));
            }
        }
        out
    }

    /// Checks every field; [`ErrorKind::ConfigInvalid`] naming the first bad key.
    pub fn validate(&self) -> Result<ValidWorkerConfig, Error> {
        let bad = |key: &str, why: &str| {
            Error::new(ErrorKind::ConfigInvalid, format!("{key}: {why}")).with_context("key", key)
        };
        if self.server.trim().is_empty() || !self.server.contains(':') {
            return Err(bad("server", "must be host:port"));
        }
        if self.jobs.is_empty() {
            return Err(bad("jobs", "at least one job name is required"));
        }
        for (i, j) in self.jobs.iter().enumerate() {
            check_name(j).map_err(|why| bad(&format!("jobs[{i}]"), &why))?;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            check_name(n).map_err(|why| bad(&format!("nodes[{i}]"), &why))?;
        }
        let manager = match &self.manager {
            Some(m) => {
                check_name(m).map_err(|why| bad("manager", &why))?;
                m.clone()
            }
            None => default_manager(),
        };
        if self.max_builds == 0 {
            return Err(bad("maxBuilds", "must be at least 1"));
        }
        if self.poll_interval_ms < 10 {
            return Err(bad("pollIntervalMs", "must be at least 10"));
        }
        let url = |key: &str, v: &Option<String>| -> Result<Option<Url>, Error> {
            v.as_deref()
                .map(parse_http_url)
                .transpose()
                .map_err(|why| bad(key, &why))
        };
        let default_api_uri = url("defaultApiUri", &self.default_api_uri)?;
        let default_store_uri = url("defaultStoreUri", &self.default_store_uri)?;
        if let Some(c) = &self.default_container {
            ImageRef::parse(c).map_err(|why| bad("defaultContainer", &why))?;
        }
        if self.drain_timeout_secs == Some(0) {
            return Err(bad(
                "drainTimeoutSecs",
                "must be a positive number of seconds",
            ));
        }
        if self.max_packet_size < 1024 {
            return Err(bad("maxPacketSize", "must be at least 1024 bytes"));
        }
        if self.stop_abandoned && self.abandon_check_ms < 10 {
            return Err(bad("abandonCheckMs", "must be at least 10"));
        }
        if self
            .state_dir
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            return Err(bad("stateDir", "must not be empty"));
        }
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        Ok(ValidWorkerConfig {
            functions: self.functions(),
            stop_function: format!("stop:{manager}"),
            description_function: format!("set_description:{manager}"),
            worker_name: self.worker_name.clone().unwrap_or_else(|| hostname.clone()),
            hostname,
            manager,
            progress_interval: Duration::from_millis(self.poll_interval_ms),
            drain_timeout: self.drain_timeout_secs.map(Duration::from_secs),
            abandon_check: self
                .stop_abandoned
                .then(|| Duration::from_millis(self.abandon_check_ms)),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
            retain_finished: Duration::from_secs(self.retain_finished_secs),
            manager_configured: self.manager.is_some(),
            default_api_uri,
            default_store_uri,
            raw: self.clone(),
        })
    }
}

/// A checked [`WorkerConfig`] with its derived values.
#[derive(Debug, Clone)]
pub struct ValidWorkerConfig {
    /// `build:` functions registered.
    pub functions: Vec<String>,
    /// `stop:<manager>`.
    pub stop_function: String,
    /// `set_description:<manager>`.
    pub description_function: String,
    /// The manager name.
    pub manager: String,
    /// `worker_name`.
    pub worker_name: String,
    /// The host name.
    pub hostname: String,
    /// How often progress (`WORK_STATUS`) is sent.
    pub progress_interval: Duration,
    /// Drain bound.
    pub drain_timeout: Option<Duration>,
    /// How often running builds are checked for abandonment (`None`: never).
    pub abandon_check: Option<Duration>,
    /// Connect bound.
    pub connect_timeout: Duration,
    /// How long finished builds' outcomes are kept for re-delivered jobs.
    pub retain_finished: Duration,
    /// Whether the manager name was configured (else a state directory keeps one).
    pub manager_configured: bool,
    /// Parsed `defaultApiUri`.
    pub default_api_uri: Option<Url>,
    /// Parsed `defaultStoreUri`.
    pub default_store_uri: Option<Url>,
    /// The config as given.
    pub raw: WorkerConfig,
}

/// Job, node and manager names become parts of Gearman function names.
pub(crate) fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else if s.len() > 200 {
        Err("must be at most 200 characters".into())
    } else if s
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        Err("must not contain ':', white space or control characters".into())
    } else {
        Ok(())
    }
}

/// A fresh manager name: `sdx-<host>-<pid>-<random>`.
pub(crate) fn default_manager() -> String {
    let host: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c == ':' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(100)
        .collect();
    format!(
        "sdx-{host}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..) & 0xff_ffff
    )
}

/// The launcher worker's options, declared once.
impl Configurable for WorkerConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<WorkerConfig>> = LazyLock::new(declare);
        &OPTIONS
    }
}

fn declare() -> Options<WorkerConfig> {
    Options::<WorkerConfig>::new(WORKER_SCHEME)
        .field("server", "gearmand's `host:port`.", |c| &mut c.server)
        .field(
            "jobs",
            "Zuul job names this launcher runs (`a,b`); registers `build:<job>` for each (required).",
            |c| &mut c.jobs,
        )
        .field(
            "nodes",
            "Node names or classes; also registers `build:<job>:<node>` for each job and node.",
            |c| &mut c.nodes,
        )
        .field(
            "manager",
            "Manager name of `stop:<manager>` and `set_description:<manager>`, unique per worker; empty: `sdx-<hostname>-<pid>-<random>`.",
            |c| &mut c.manager,
        )
        .field(
            "workerName",
            "`worker_name` in the start announcement; empty: the host name.",
            |c| &mut c.worker_name,
        )
        .alias("name")
        .field("maxBuilds", "Builds run at once.", |c| &mut c.max_builds)
        .field(
            "pollIntervalMs",
            "How often a running build's progress (`WORK_STATUS`) is sent, ms; the build's end comes from `Executor::wait_for_change`.",
            |c| &mut c.poll_interval_ms,
        )
        .field(
            "defaultApiUri",
            "`apiUri` for jobs whose arguments have none.",
            |c| &mut c.default_api_uri,
        )
        .alias("apiUri")
        .field(
            "defaultContainer",
            "`container` for jobs whose arguments have none.",
            |c| &mut c.default_container,
        )
        .alias("container")
        .field(
            "defaultToken",
            "`token` for jobs whose arguments have none.",
            |c| &mut c.default_token,
        )
        .alias("token")
        .secret()
        .field(
            "defaultStoreUri",
            "`storeUri` for jobs whose arguments have none.",
            |c| &mut c.default_store_uri,
        )
        .alias("storeUri")
        .field(
            "buildUrl",
            "Build URL announced to Zuul, with `{buildId}`, `{number}`, `{name}`, `{uuid}`, `{manager}` replaced.",
            |c| &mut c.build_url,
        )
        .field(
            "drainTimeoutSecs",
            "After a drain starts, running builds get this long before they are stopped; empty: no limit.",
            |c| &mut c.drain_timeout_secs,
        )
        .field(
            "stopAbandoned",
            "Stop (or never start) a build whose submitters all disconnected.",
            |c| &mut c.stop_abandoned,
        )
        .field(
            "abandonCheckMs",
            "How often a running build is checked for that, ms.",
            |c| &mut c.abandon_check_ms,
        )
        .field("connectTimeoutMs", "Bound on each connect to gearmand, ms.", |c| {
            &mut c.connect_timeout_ms
        })
        .field(
            "maxPacketSize",
            "Largest Gearman packet body accepted or sent, bytes.",
            |c| &mut c.max_packet_size,
        )
        .field(
            "stateDir",
            "Where the worker records its builds, so a restarted worker adopts or stops them and keeps its manager name; empty: in memory (`sdx gearman-worker`: `<state dir>/gearman-worker`).",
            |c| &mut c.state_dir,
        )
        .field(
            "retainFinishedSecs",
            "How long a finished build's outcome is kept for a re-delivered job with the same `ZUUL_UUID`, seconds.",
            |c| &mut c.retain_finished_secs,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_are_named() {
        let e = WorkerConfig::new("127.0.0.1:4730", Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("jobs: at least one"), "{e}");
        let e = WorkerConfig::new("127.0.0.1:4730", ["a:b"])
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("jobs[0]: must not contain ':'"),
            "{e}"
        );
        let mut c = WorkerConfig::new("127.0.0.1:4730", ["unit"]);
        c.default_api_uri = Some("ftp://x".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("defaultApiUri")
        );
        c.default_api_uri = None;
        c.max_builds = 0;
        assert!(c.validate().unwrap_err().to_string().contains("maxBuilds"));
    }

    #[test]
    fn a_default_manager_is_unique_per_worker() {
        let c = WorkerConfig::new("127.0.0.1:4730", ["unit"]);
        let (a, b) = (c.validate().unwrap(), c.validate().unwrap());
        assert_ne!(a.manager, b.manager);
        assert!(a.stop_function.starts_with("stop:sdx-"));
        check_name(&a.manager).unwrap();
    }
}
