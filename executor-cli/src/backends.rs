//! The one place backends are built by name: each from its builder's `from_env()` (or the
//! config file's section), the process backend always, the engine backends when compiled
//! in (cargo features `docker`, `k8s`, `jenkins`, `gearman`, all on by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use executor_base::Executor;
use executor_base::router::Router;
use executor_base::timer::TimerService;
use executor_process::{ProcessConfig, ProcessExecutorBuilder};

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

/// What a command adds to the configured options of the process backend.
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    /// Job-tools directory to use unless one is configured (`jobTools` or
    /// `EXECUTOR_PROCESS_JOB_TOOLS`).
    pub job_tools: Option<PathBuf>,
    /// State directory to use (the demo's temporary one).
    pub state_dir: Option<PathBuf>,
    /// Grace between SIGTERM and SIGKILL on stop.
    pub stop_grace: Option<Duration>,
}

/// A directory holding `launch`, a symbolic link to this `sdx` binary (which runs the
/// reference launcher when invoked under that name). Removed when dropped.
#[derive(Debug)]
pub struct JobTools {
    dir: tempfile::TempDir,
}

impl JobTools {
    /// Creates the directory and the link.
    pub fn create() -> CliResult<Self> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::failure(format!("cannot find the sdx executable: {e}")))?;
        let dir = tempfile::Builder::new()
            .prefix("sdx-job-tools-")
            .tempdir()
            .map_err(|e| CliError::failure(format!("cannot create a job-tools directory: {e}")))?;
        std::os::unix::fs::symlink(&exe, dir.path().join("launch")).map_err(|e| {
            CliError::failure(format!("cannot link launch to {}: {e}", exe.display()))
        })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
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
}

async fn process(file: &FileConfig, o: &ProcessOverrides) -> CliResult<Built> {
    let section: Option<ProcessConfig> = file.section("process")?;
    let configured_tools = section.as_ref().is_some_and(|c| c.job_tools.is_some())
        || std::env::var_os(executor_process::ENV_JOB_TOOLS).is_some_and(|v| !v.is_empty());
    let mut b = match section {
        Some(c) => ProcessExecutorBuilder::new().with_config(c),
        None => ProcessExecutorBuilder::from_env(),
    };
    if !configured_tools && let Some(t) = &o.job_tools {
        b = b.with_job_tools(t);
    }
    if let Some(s) = &o.state_dir {
        b = b.with_state_dir(s);
    }
    if let Some(g) = o.stop_grace {
        b = b.with_stop_grace(g);
    }
    let exec = b.build().await.map_err(context(PROCESS))?;
    Ok(Built {
        endpoint: Some(exec.job_tools().display().to_string()),
        executor: Arc::new(exec),
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
            let b = match file.section("docker")? {
                Some(c) => B::new().with_config(c),
                None => B::from_env(),
            };
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(exec.endpoint().to_string()),
                executor: Arc::new(exec),
            })
        }
        #[cfg(feature = "k8s")]
        executor_k8s::SCHEME => {
            use executor_k8s::K8sExecutorBuilder as B;
            let b = match file.section("k8s")? {
                Some(c) => B::new().with_config(c),
                None => B::from_env(),
            };
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(format!("namespace {}", exec.namespace())),
                executor: Arc::new(exec),
            })
        }
        #[cfg(feature = "jenkins")]
        executor_jenkins::SCHEME => {
            use executor_jenkins::JenkinsExecutorBuilder as B;
            let b = match file.section("jenkins")? {
                Some(c) => B::new().with_config(c),
                None => B::from_env(),
            };
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(exec.base_url().to_string()),
                executor: Arc::new(exec),
            })
        }
        #[cfg(feature = "gearman")]
        executor_gearman::SCHEME => {
            use executor_gearman::GearmanExecutorBuilder as B;
            let b = match file.section("gearman")? {
                Some(c) => B::new().with_config(c),
                None => B::from_env(),
            };
            let exec = b.build().await.map_err(context(name))?;
            Ok(Built {
                endpoint: Some(exec.config().server.clone()),
                executor: Arc::new(exec),
            })
        }
        other => Err(CliError::usage(format!(
            "--executor: unknown backend {other:?}, expected one of {}",
            compiled().join(", ")
        ))),
    }
}

/// A router over `names` (the first is the default), with a shared timer service that
/// stops builds running past their timeout.
pub async fn router(
    names: &[String],
    file: &FileConfig,
    o: &ProcessOverrides,
) -> CliResult<Arc<dyn Executor>> {
    let mut rb = Router::builder();
    for name in names {
        rb = rb.backend_named(name.clone(), build(name, file, o).await?);
    }
    let timers = TimerService::builder()
        .build()
        .await
        .map_err(CliError::from)?;
    let default = names.first().map(String::as_str).unwrap_or(PROCESS);
    let router = rb
        .default_backend(default)
        .timers(timers)
        .stop_on_timeout(true)
        .build()
        .map_err(CliError::from)?;
    Ok(Arc::new(router))
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
    }
}
