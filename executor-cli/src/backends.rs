//! The one place backends are built by name: each builder from its layers (the config
//! file's section, then `EXECUTOR_<SCHEME>_*` variables, then `--opt` flags), the process
//! backend always, the engine backends when compiled in (cargo features `docker`, `k8s`,
//! `jenkins`, `gearman`, all on by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use executor_base::Executor;
use executor_base::router::Router;
use executor_base::timer::{PostgresTimerStore, SqliteTimerStore, TimerService};
use executor_process::{ProcessConfig, ProcessExecutor, ProcessExecutorBuilder};

use crate::config::FileConfig;
use crate::error::{CliError, CliResult};

/// The embedded default backend.
pub const PROCESS: &str = executor_process::SCHEME;

/// Every backend name sdx knows, compiled in or not.
pub const KNOWN: &[&str] = &["process", "docker", "k8s", "jenkins", "gearman"];

/// The backends compiled into this `sdx`.
pub fn compiled() -> Vec<&'static str> {
    [
        Some(PROCESS),
        cfg!(feature = "docker").then_some("docker"),
        cfg!(feature = "k8s").then_some("k8s"),
        cfg!(feature = "jenkins").then_some("jenkins"),
        cfg!(feature = "gearman").then_some("gearman"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What a command adds to the configured options of the backends.
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    /// Job-tools directory to use unless one is configured (`jobTools` or
    /// `EXECUTOR_PROCESS_JOB_TOOLS`).
    pub job_tools: Option<PathBuf>,
    /// State directory to use (the demo's temporary one).
    pub state_dir: Option<PathBuf>,
    /// Names and labels of `sdx run`'s own (see [`RUN_PREFIX`]), so its builds and its
    /// garbage never mix with a server's on the same Docker daemon or namespace.
    #[cfg_attr(not(any(feature = "docker", feature = "k8s")), allow(dead_code))]
    pub run_prefix: bool,
    /// Who the Docker and Kubernetes resources belong to, when not this process:
    /// `sdx serve`'s deployment ([`executor_base::Owner::deployment`]), whose builds
    /// outlive any one of its processes.
    #[cfg_attr(not(any(feature = "docker", feature = "k8s")), allow(dead_code))]
    pub owner: Option<executor_base::Owner>,
}

/// The name and label prefix of `sdx run`'s builds on Docker and Kubernetes: the
/// configured prefix followed by `run-`, or `sdx-run-` when none is configured.
#[cfg_attr(not(any(feature = "docker", feature = "k8s")), allow(dead_code))]
pub const RUN_PREFIX: &str = "sdx-run-";

/// `sdx run`'s prefix given the configured one.
#[cfg_attr(not(any(feature = "docker", feature = "k8s")), allow(dead_code))]
pub fn run_prefix(configured: &str) -> String {
    if configured.is_empty() {
        RUN_PREFIX.to_string()
    } else {
        format!("{configured}run-")
    }
}

/// The state directory of this configuration: the process backend's `stateDir` (file
/// section, `EXECUTOR_PROCESS_STATE_DIR`, `$XDG_STATE_HOME/sdx`, ...), absolute. The API's
/// store (`api.db`, `run.db`) and timers (`timers.db`) live there too.
pub fn state_dir(file: &FileConfig) -> CliResult<PathBuf> {
    let config: ProcessConfig = file.config()?;
    let dir = config
        .state_dir
        .unwrap_or_else(executor_process::default_state_dir);
    std::path::absolute(&dir)
        .map_err(|e| CliError::usage(format!("stateDir {}: {e}", dir.display())))
}

/// Where the router's timers are kept.
#[derive(Debug, Clone)]
pub enum Timers {
    /// In memory: gone with the process (`sdx run`, `sdx demo`, one-shot commands).
    Memory,
    /// In this SQLite file: a restarted `sdx serve` loses no timeout.
    Sqlite(PathBuf),
    /// In this PostgreSQL database, shared with other `sdx serve` instances: each
    /// deadline fires in exactly one. The router does not stop timed-out builds itself:
    /// the API's handler ([`executor_api::ApiState::expiry_handler`]) records the
    /// timeout and the instance driving the build stops it.
    Postgres(String),
}

/// A router and, when it has one, its process backend (for its spool files).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The router.
    pub executor: Arc<dyn Executor>,
    /// The process backend, when it is one of the router's.
    pub process: Option<ProcessExecutor>,
    /// The router's timer service.
    pub timers: TimerService,
}

/// A directory holding `launch`, a symbolic link to this `sdx` binary (which runs the
/// reference launcher when invoked under that name). A temporary one is removed when
/// dropped; one in the state directory stays (builds that outlive this `sdx` still find
/// it, and it is not recreated per run).
#[derive(Debug)]
pub struct JobTools {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn current_exe() -> CliResult<PathBuf> {
    std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find the sdx executable: {e}")))
}

impl JobTools {
    /// Creates a temporary directory and the link.
    pub fn create() -> CliResult<Self> {
        let exe = current_exe()?;
        let dir = tempfile::Builder::new()
            .prefix("sdx-job-tools-")
            .tempdir()
            .map_err(|e| CliError::failure(format!("cannot create a job-tools directory: {e}")))?;
        std::os::unix::fs::symlink(&exe, dir.path().join("launch")).map_err(|e| {
            CliError::failure(format!("cannot link launch to {}: {e}", exe.display()))
        })?;
        Ok(Self {
            dir: dir.path().to_path_buf(),
            _temp: Some(dir),
        })
    }

    /// Uses `dir` (created if needed), pointing its `launch` at this binary (replaced
    /// atomically, so concurrent `sdx` processes never see it missing).
    pub fn in_dir(dir: &Path) -> CliResult<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let exe = current_exe()?;
        let fail = |what: &str, e: std::io::Error| {
            CliError::failure(format!(
                "job-tools directory {}: {what}: {e}",
                dir.display()
            ))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("cannot create it", e))?;
        let link = dir.join("launch");
        if std::fs::read_link(&link).ok().as_deref() != Some(exe.as_path()) {
            let tmp = dir.join(format!(".launch.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&exe, &tmp).map_err(|e| fail("cannot link launch", e))?;
            std::fs::rename(&tmp, &link).map_err(|e| fail("cannot link launch", e))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _temp: None,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn context(name: &str) -> impl FnOnce(executor_base::Error) -> CliError + '_ {
    move |e| CliError::from(e).context(format!("{name} backend"))
}

/// A backend and where it works (for `doctor`).
#[derive(Debug, Clone)]
pub struct Built {
    /// The backend.
    pub executor: Arc<dyn Executor>,
    /// Where it works: the job-tools directory, the Docker endpoint, the namespace, the
    /// Jenkins URL.
    pub endpoint: Option<String>,
    /// The process backend itself, when this is it.
    pub process: Option<ProcessExecutor>,
}

async fn process(file: &FileConfig, o: &ProcessOverrides) -> CliResult<Built> {
    let mut b = file.layered(PROCESS, ProcessExecutorBuilder::new());
    if b.config().job_tools.is_none()
        && let Some(t) = &o.job_tools
    {
        b = b.with_job_tools(t);
    }
    if let Some(s) = &o.state_dir {
        b = b.with_state_dir(s);
    }
    let exec = b.build().await.map_err(context(PROCESS))?;
    Ok(Built {
        endpoint: Some(exec.job_tools().display().to_string()),
        executor: Arc::new(exec.clone()),
        process: Some(exec),
    })
}

/// Builds backend `name`.
pub async fn build(
    name: &str,
    file: &FileConfig,
    o: &ProcessOverrides,
) -> CliResult<Arc<dyn Executor>> {
    Ok(build_with_endpoint(name, file, o).await?.executor)
}

/// Builds backend `name`, also telling where it works.
pub async fn build_with_endpoint(
    name: &str,
    file: &FileConfig,
    o: &ProcessOverrides,
) -> CliResult<Built> {
    match name {
        PROCESS => process(file, o).await,
        #[cfg(feature = "docker")]
        executor_docker::SCHEME => {
            use executor_docker::DockerExecutorBuilder as B;
            let mut b = file.layered(name, B::new());
            if o.run_prefix {
                let prefix = run_prefix(&b.config().prefix);
                b = b.with_prefix(prefix);
            }
            if let Some(owner) = &o.owner {
                b = b.with_owner(owner.clone());
            }
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(exec.endpoint().to_string()),
                executor: Arc::new(exec),
                process: None,
            })
        }
        #[cfg(feature = "k8s")]
        executor_k8s::SCHEME => {
            use executor_k8s::K8sExecutorBuilder as B;
            let mut b = file.layered(name, B::new());
            if o.run_prefix {
                let prefix = run_prefix(&b.config().prefix);
                b = b.with_prefix(prefix);
            }
            if let Some(owner) = &o.owner {
                b = b.with_owner(owner.clone());
            }
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(format!("namespace {}", exec.namespace())),
                executor: Arc::new(exec),
                process: None,
            })
        }
        #[cfg(feature = "jenkins")]
        executor_jenkins::SCHEME => {
            use executor_jenkins::JenkinsExecutorBuilder as B;
            let b = file.layered(name, B::new());
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(exec.base_url().to_string()),
                executor: Arc::new(exec),
                process: None,
            })
        }
        #[cfg(feature = "gearman")]
        executor_gearman::SCHEME => {
            use executor_gearman::GearmanExecutorBuilder as B;
            let b = file.layered(name, B::new());
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(exec.config().server.clone()),
                executor: Arc::new(exec),
                process: None,
            })
        }
        other => Err(CliError::usage(format!(
            "--executor: unknown backend {other:?}, expected one of {}",
            compiled().join(", ")
        ))),
    }
}

/// A router over `names` (the first is the default), with a shared timer service that
/// stops builds running past their timeout, its deadlines kept as `timers` says.
pub async fn router(
    names: &[String],
    file: &FileConfig,
    o: &ProcessOverrides,
    timers: Timers,
) -> CliResult<Routed> {
    let mut rb = Router::builder();
    let mut process = None;
    for name in names {
        let built = build_with_endpoint(name, file, o).await?;
        process = process.or(built.process);
        rb = rb.backend_named(name.clone(), built.executor);
    }
    let mut tb = TimerService::builder();
    match &timers {
        Timers::Memory => {}
        Timers::Sqlite(path) => {
            let store = SqliteTimerStore::open(path).await.map_err(|e| {
                CliError::from(e).context(format!("timer store {}", path.display()))
            })?;
            tb = tb.store(Arc::new(store));
        }
        Timers::Postgres(uri) => {
            let store = PostgresTimerStore::connect(uri)
                .await
                .map_err(|e| CliError::from(e).context("timer store"))?;
            tb = tb.store(Arc::new(store));
        }
    }
    let service = tb.build().await.map_err(CliError::from)?;
    let default = names.first().map(String::as_str).unwrap_or(PROCESS);
    let router = rb
        .default_backend(default)
        .timers(service.clone())
        .stop_on_timeout(!matches!(timers, Timers::Postgres(_)))
        .build()
        .map_err(CliError::from)?;
    Ok(Routed {
        executor: Arc::new(router),
        process,
        timers: service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_starts_with_process_and_is_known() {
        let c = compiled();
        assert_eq!(c[0], PROCESS);
        assert!(c.iter().all(|n| KNOWN.contains(n)));
        #[cfg(feature = "docker")]
        assert!(c.contains(&executor_docker::SCHEME));
        #[cfg(feature = "k8s")]
        assert!(c.contains(&executor_k8s::SCHEME));
        #[cfg(feature = "jenkins")]
        assert!(c.contains(&executor_jenkins::SCHEME));
        #[cfg(feature = "gearman")]
        assert!(c.contains(&executor_gearman::SCHEME));
    }

    #[tokio::test]
    async fn unknown_backend_is_a_usage_error() {
        let e = build("nope", &FileConfig::default(), &ProcessOverrides::default())
            .await
            .unwrap_err();
        assert_eq!(e.code, 2);
    }

    #[test]
    fn run_prefixes() {
        assert_eq!(run_prefix(""), "sdx-run-");
        assert_eq!(run_prefix("ci-"), "ci-run-");
    }

    #[test]
    fn job_tools_link_to_this_executable_and_vanish() {
        let t = JobTools::create().unwrap();
        let link = t.path().join("launch");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::env::current_exe().unwrap()
        );
        let dir = t.path().to_path_buf();
        drop(t);
        assert!(!dir.exists());
        let state = tempfile::tempdir().unwrap();
        let kept = state.path().join("job-tools");
        let t = JobTools::in_dir(&kept).unwrap();
        assert_eq!(
            std::fs::read_link(t.path().join("launch")).unwrap(),
            std::env::current_exe().unwrap()
        );
        drop(t);
        assert!(
            kept.join("launch").exists(),
            "a state directory's job tools stay"
        );
        JobTools::in_dir(&kept).unwrap();
    }
}
