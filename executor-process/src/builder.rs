//! [`ProcessExecutorBuilder`]: options from code, key/value pairs or the environment,
//! validated once in [`ProcessExecutorBuilder::build`].

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use executor_base::launch::{TOKEN_ENV, TOKEN_FILE_ENV};
use executor_base::options::{ConfigBuilder, Problems};
use executor_base::{Ecosystem, Error, LaunchMode, TimeoutPolicy};

use crate::config::{ProcessConfig, default_job_tools, default_state_dir};
use crate::error::config_invalid;
use crate::executor::ProcessExecutor;

/// The most a grace period may be (stop or timeout), to catch unit mistakes (`10000000`).
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Builds a [`ProcessExecutor`].
///
/// ```
/// # tokio_test_block_on(async {
/// use std::time::Duration;
/// use executor_process::ProcessExecutorBuilder;
/// let state = tempfile::tempdir().unwrap();
/// let exec = ProcessExecutorBuilder::new()
///     .with_job_tools("/opt/sd")
///     .with_state_dir(state.path())
///     .with_stop_grace(Duration::from_secs(2))
///     .with_env("CI", "true")
///     .build()
///     .await
///     .unwrap();
/// assert_eq!(executor_base::Executor::name(&exec), "process");
///
/// let err = ProcessExecutorBuilder::new()
///     .with_option("stopGraceMs", "soon")
///     .build()
///     .await
///     .unwrap_err();
/// assert_eq!(err.kind(), executor_base::ErrorKind::ConfigInvalid);
/// assert!(err.to_string().contains("stopGraceMs"));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProcessExecutorBuilder {
    config: ProcessConfig,
    /// Options refused so far, reported by `build`.
    problems: Problems,
}

/// `with_option`, `with_vars`, `with_section`, `from_env` and `layered`, from
/// [`ProcessConfig`]'s declared options.
impl ConfigBuilder for ProcessExecutorBuilder {
    type Config = ProcessConfig;
    fn option_parts(&mut self) -> (&mut ProcessConfig, &mut Problems) {
        (&mut self.config, &mut self.problems)
    }
}

impl ProcessExecutorBuilder {
    /// A builder with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with options from the `EXECUTOR_PROCESS_<KEY>` environment variables
    /// (one per key of the README's table or `sdx options process`);
    /// `EXECUTOR_PROCESS_ENV_<NAME>=value` adds `<NAME>` to the builds' environment.
    /// Bad values and unknown `EXECUTOR_PROCESS_*` variables are reported by
    /// [`Self::build`].
    pub fn from_env() -> Self {
        <Self as ConfigBuilder>::from_env()
    }

    /// The options so far (not yet validated).
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// Replaces all options.
    pub fn with_config(mut self, config: ProcessConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets one option from its string form (a key of the README's table, or
    /// `env.<NAME>`). A bad value or unknown key is reported by [`Self::build`].
    pub fn with_option(self, key: &str, value: &str) -> Self {
        <Self as ConfigBuilder>::with_option(self, key, value)
    }

    /// The directory holding the `launch` program.
    pub fn with_job_tools(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.job_tools = Some(dir.into());
        self
    }

    /// The directory for per-build logs, token files and state files.
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = Some(dir.into());
        self
    }

    /// Grace between SIGTERM and SIGKILL on `stop` (millisecond precision).
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.config.stop_grace_ms = duration_ms(grace);
        self
    }

    /// How long a build may run past its timeout before the executor kills it.
    pub fn with_timeout_grace(mut self, grace: Duration) -> Self {
        self.config.timeout_grace_ms = duration_ms(grace);
        self
    }

    /// Build timeout default and cap.
    pub fn with_timeout_policy(mut self, policy: TimeoutPolicy) -> Self {
        self.config.timeout = policy;
        self
    }

    /// Store and UI URLs passed to `launch`.
    pub fn with_ecosystem(mut self, ecosystem: Ecosystem) -> Self {
        self.config.ecosystem = ecosystem;
        self
    }

    /// The launch contract; only [`LaunchMode::Native`] is accepted by `build`.
    pub fn with_launch_mode(mut self, mode: LaunchMode) -> Self {
        self.config.launch_mode = mode;
        self
    }

    /// Adds an environment variable to every build.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.env.insert(name.into(), value.into());
        self
    }

    /// Names of the executor's own environment variables passed through to builds.
    pub fn with_pass_env<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.config.pass_env = names.into_iter().map(Into::into).collect();
        self
    }

    /// Delivers the token in `SD_TOKEN` instead of a 0600 file (readable by the same user
    /// through `/proc/<pid>/environ`; prefer the file).
    pub fn with_token_env(mut self, yes: bool) -> Self {
        self.config.token_env = yes;
        self
    }

    /// Whether each build gets a cgroup (v2) of its own where the machine allows it
    /// (default `true`); without one a build is tracked by process group and marker
    /// variable (see the crate docs for what escapes then).
    pub fn with_cgroups(mut self, yes: bool) -> Self {
        self.config.cgroups = yes;
        self
    }

    /// Whether each build's supervisor is forked from one long-lived shell per executor
    /// (the zygote; default `true`, builds with a cgroup only) rather than started as a
    /// shell of its own (see the crate docs).
    pub fn with_zygote(mut self, yes: bool) -> Self {
        self.config.zygote = yes;
        self
    }

    /// Validates the options, creates the state directory, and adopts builds a previous
    /// instance left running there. Errors are [`executor_base::ErrorKind::ConfigInvalid`]
    /// naming the option.
    pub async fn build(self) -> Result<ProcessExecutor, Error> {
        let settings = self.validate()?;
        ProcessExecutor::open(settings).await
    }

    fn validate(self) -> Result<Settings, Error> {
        let bad = |key: &str, reason: String| config_invalid("build", key, reason);
        self.problems.check(crate::SCHEME)?;
        let c = self.config;
        if c.launch_mode == LaunchMode::Screwdriver {
            return Err(bad(
                "launchMode",
                "screwdriver mode passes the token in launcher_entrypoint.sh's arguments, which every local \
                 user can read with ps; the process backend supports only native"
                    .into(),
            ));
        }
        let stop_grace = Duration::from_millis(c.stop_grace_ms);
        if stop_grace > MAX_GRACE {
            return Err(bad(
                "stopGraceMs",
                format!("{} ms is more than a day", c.stop_grace_ms),
            ));
        }
        let timeout_grace = Duration::from_millis(c.timeout_grace_ms);
        if timeout_grace > MAX_GRACE {
            return Err(bad(
                "timeoutGraceMs",
                format!("{} ms is more than a day", c.timeout_grace_ms),
            ));
        }
        if c.timeout.default_minutes == 0 {
            return Err(bad("timeout.defaultMinutes", "must be at least 1".into()));
        }
        if c.timeout.max_minutes == 0 {
            return Err(bad("timeout.maxMinutes", "must be at least 1".into()));
        }
        for (name, value) in &c.env {
            check_env_name(&format!("env[{name}]"), name)?;
            if value.contains('\0') {
                return Err(bad(
                    &format!("env[{name}]"),
                    "value contains a NUL byte".into(),
                ));
            }
            if name == TOKEN_ENV || name == TOKEN_FILE_ENV {
                return Err(bad(
                    &format!("env[{name}]"),
                    "is set by the executor from the build's token (see tokenEnv)".into(),
                ));
            }
            if name == crate::tree::MARK_ENV {
                return Err(bad(
                    &format!("env[{name}]"),
                    "is set by the executor: it marks every process of a build".into(),
                ));
            }
        }
        for name in &c.pass_env {
            check_env_name(&format!("passEnv[{name}]"), name)?;
        }
        let job_tools = c.job_tools.or_else(default_job_tools).ok_or_else(|| {
            bad(
                "jobTools",
                "not set and the current executable's directory is unknown".into(),
            )
        })?;
        let job_tools = absolute("jobTools", job_tools)?;
        if job_tools.to_str().is_none() {
            return Err(bad(
                "jobTools",
                format!("{} is not valid UTF-8", job_tools.display()),
            ));
        }
        let state_dir = absolute("stateDir", c.state_dir.unwrap_or_else(default_state_dir))?;
        let builds_dir = state_dir.join("builds");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&builds_dir)
            .map_err(|e| {
                bad(
                    "stateDir",
                    format!("cannot create {}: {e}", builds_dir.display()),
                )
            })?;
        Ok(Settings {
            job_tools,
            builds_dir,
            stop_grace,
            timeout_grace,
            timeout: c.timeout,
            ecosystem: c.ecosystem,
            env: c.env.into_iter().collect(),
            pass_env: c.pass_env,
            token_env: c.token_env,
            cgroups: c.cgroups,
            zygote: c.zygote,
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn absolute(key: &str, path: PathBuf) -> Result<PathBuf, Error> {
    std::path::absolute(&path).map_err(|e| {
        config_invalid(
            "build",
            key,
            format!("cannot resolve {}: {e}", path.display()),
        )
    })
}

fn check_env_name(key: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(config_invalid(
            "build",
            key,
            "an environment variable name must be letters, digits and _, not starting with a digit",
        ))
    }
}

/// A builder from `key=value` options (keys of the README's table, or `env.<NAME>`).
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for ProcessExecutorBuilder {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self::new().with_options(pairs)
    }
}

/// The validated options the executor runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Absolute directory holding `launch`.
    pub job_tools: PathBuf,
    /// Absolute `<state>/builds`.
    pub builds_dir: PathBuf,
    pub stop_grace: Duration,
    pub timeout_grace: Duration,
    pub timeout: TimeoutPolicy,
    pub ecosystem: Ecosystem,
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    pub token_env: bool,
    /// Whether to try one cgroup per build.
    pub cgroups: bool,
    /// Whether builds with a cgroup start through the zygote.
    pub zygote: bool,
}

impl Settings {
    /// The `launch` program.
    pub(crate) fn launch(&self) -> PathBuf {
        self.job_tools.join("launch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use executor_base::ErrorKind;

    fn err(b: ProcessExecutorBuilder) -> Error {
        b.with_job_tools("/opt/sd")
            .with_state_dir(tempfile::tempdir().unwrap().keep())
            .validate()
            .unwrap_err()
    }

    #[test]
    fn refuses_screwdriver_mode() {
        let e = err(ProcessExecutorBuilder::new().with_launch_mode(LaunchMode::Screwdriver));
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("launchMode"), "{e}");
        assert!(e.to_string().contains("ps"), "{e}");
        let e = err(ProcessExecutorBuilder::new().with_option("launchMode", "docker"));
        assert!(e.to_string().contains("launchMode"), "{e}");
    }

    #[test]
    fn names_the_bad_option() {
        let cases = [
            (
                ProcessExecutorBuilder::new().with_option("stopGraceMs", "10s"),
                "stopGraceMs",
            ),
            (
                ProcessExecutorBuilder::new().with_option("bogus", "1"),
                "bogus",
            ),
            (
                ProcessExecutorBuilder::new().with_option("storeUri", "ftp://x"),
                "storeUri",
            ),
            (
                ProcessExecutorBuilder::new().with_option("tokenEnv", "maybe"),
                "tokenEnv",
            ),
            (
                ProcessExecutorBuilder::new().with_env("SD_TOKEN", "x"),
                "env[SD_TOKEN]",
            ),
            (
                ProcessExecutorBuilder::new().with_env("A=B", "x"),
                "env[A=B]",
            ),
            (
                ProcessExecutorBuilder::new().with_pass_env(["1X"]),
                "passEnv[1X]",
            ),
            (
                ProcessExecutorBuilder::new().with_stop_grace(Duration::from_secs(90_000)),
                "stopGraceMs",
            ),
            (
                ProcessExecutorBuilder::new().with_timeout_policy(TimeoutPolicy {
                    default_minutes: 0,
                    max_minutes: 10,
                }),
                "timeout.defaultMinutes",
            ),
        ];
        for (b, key) in cases {
            let e = err(b);
            assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{key}");
            assert!(e.to_string().contains(key), "{e} should name {key}");
        }
    }

    #[test]
    fn options_from_pairs() {
        let state = tempfile::tempdir().unwrap();
        let s = ProcessExecutorBuilder::from_iter([
            ("jobTools", "tools"),
            ("stateDir", state.path().to_str().unwrap()),
            ("stopGraceMs", "250"),
            ("timeoutMaxMinutes", "30"),
            ("passEnv", "PATH, HOME"),
            ("env.CI", "true"),
            ("tokenEnv", "true"),
        ])
        .validate()
        .unwrap();
        assert!(s.job_tools.is_absolute() && s.job_tools.ends_with("tools"));
        assert_eq!(s.stop_grace, Duration::from_millis(250));
        assert_eq!(s.timeout.max_minutes, 30);
        assert_eq!(s.pass_env, ["PATH", "HOME"]);
        assert_eq!(s.env, [("CI".to_string(), "true".to_string())]);
        assert!(s.token_env);
        assert!(s.builds_dir.is_dir());
    }

    #[test]
    fn options_from_env_file_and_flags_in_precedence_order() {
        let state = tempfile::tempdir().unwrap();
        let file = serde_json::json!({
            "jobTools": "/opt/file", "stateDir": state.path(), "stopGraceMs": 1000,
            "timeout": {"maxMinutes": 30}, "env": {"FROM_FILE": "1"},
        });
        let vars = [
            ("EXECUTOR_PROCESS_STOP_GRACE_MS", "2000"),
            ("EXECUTOR_PROCESS_ENV_FROM_ENV", "2"),
            ("EXECUTOR_PROCESS_TIMEOUT_MAX_MINUTES", "40"),
        ];
        let flags = [("timeout.maxMinutes".to_string(), "50".to_string())];
        let s = ProcessExecutorBuilder::new()
            .layered(Some(&file), vars, &flags)
            .validate()
            .unwrap();
        assert_eq!(s.job_tools, PathBuf::from("/opt/file"));
        assert_eq!(s.stop_grace, Duration::from_secs(2), "env over file");
        assert_eq!(s.timeout.max_minutes, 50, "flag over env");
        assert_eq!(s.env.len(), 2, "{:?}", s.env);

        let e = err(
            ProcessExecutorBuilder::new().with_section(&serde_json::json!({
                "stopGracems": 1, "tokenEnv": "maybe",
            })),
        );
        let m = e.to_string();
        assert!(
            m.contains("stopGracems: unknown option of process; did you mean `stopGraceMs`?"),
            "{m}"
        );
        assert!(m.contains("tokenEnv: must be true or false"), "{m}");
        let e =
            err(ProcessExecutorBuilder::new().with_vars([("EXECUTOR_PROCESS_STOP_GRACE", "1")]));
        assert!(
            e.to_string().contains("EXECUTOR_PROCESS_STOP_GRACE_MS?"),
            "{e}"
        );
    }

    #[test]
    fn unwritable_state_dir_is_config_invalid() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = ProcessExecutorBuilder::new()
            .with_job_tools("/opt/sd")
            .with_state_dir(file.path().join("sub"))
            .validate()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("stateDir"), "{e}");
    }
}
