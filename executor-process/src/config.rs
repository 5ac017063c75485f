//! [`ProcessConfig`]: the process backend's options as plain serde data, and their
//! declaration for the shared option system (`with_option`, `EXECUTOR_PROCESS_*`,
//! `[process]` file sections, `--opt process.<key>=<value>`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use executor_base::options::{Configurable, Options};
use executor_base::{Ecosystem, LaunchMode, TimeoutPolicy};
use serde::{Deserialize, Serialize};

/// Environment variable naming the job-tools directory (the one holding `launch`).
pub const ENV_JOB_TOOLS: &str = "EXECUTOR_PROCESS_JOB_TOOLS";
/// Environment variable naming the state directory.
pub const ENV_STATE_DIR: &str = "EXECUTOR_PROCESS_STATE_DIR";

/// Default grace between SIGTERM and SIGKILL on `stop`, in milliseconds.
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;
/// Default time a build may run past its timeout before the executor kills it, in
/// milliseconds: upstream's timeout checker allows "1 min more than the launcher", so
/// `launch` gets to run its own timeout handling (teardown, status report) first.
pub const DEFAULT_TIMEOUT_GRACE_MS: u64 = 60_000;

/// Variables of the executor's own environment passed through to builds by default.
/// Everything else is dropped, so secrets of the server process do not leak into builds.
pub const DEFAULT_PASS_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// Options of the process backend.
///
/// Every field has a default; `ProcessExecutorBuilder::build` validates them and
/// names the offending key (`stopGraceMs`, `launchMode`, `env[SD_TOKEN]`, ...).
///
/// ```
/// use executor_process::ProcessConfig;
/// let c: ProcessConfig = serde_json::from_value(serde_json::json!({
///     "jobTools": "/opt/sd", "stopGraceMs": 2000, "env": {"CI": "true"}
/// })).unwrap();
/// assert_eq!(c.stop_grace_ms, 2000);
/// assert_eq!(c.timeout_grace_ms, 60_000); // untouched default
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProcessConfig {
    /// Directory holding the `launch` program (`jobTools`). Default: `$EXECUTOR_PROCESS_JOB_TOOLS`,
    /// else the directory of the current executable (where cargo puts the workspace's
    /// `launch` binary next to `sdx`).
    pub job_tools: Option<PathBuf>,
    /// Directory for per-build logs, token files and state files (`stateDir`). Default:
    /// `$EXECUTOR_PROCESS_STATE_DIR`, else `$XDG_STATE_HOME/sdx`, else
    /// `$HOME/.local/state/sdx`, else `./.sdx`.
    pub state_dir: Option<PathBuf>,
    /// Grace between SIGTERM and SIGKILL on `stop`, milliseconds (`stopGraceMs`, default 10 000).
    pub stop_grace_ms: u64,
    /// How long a build may run past its timeout before the executor kills it and reports
    /// `TimedOut`, milliseconds (`timeoutGraceMs`, default 60 000).
    pub timeout_grace_ms: u64,
    /// Build timeout default and cap (`timeout`).
    pub timeout: TimeoutPolicy,
    /// Store and UI URLs passed to `launch` (`ecosystem`).
    pub ecosystem: Ecosystem,
    /// Launch contract (`launchMode`); only `native` is supported by this backend.
    pub launch_mode: LaunchMode,
    /// Extra environment variables for every build (`env`).
    pub env: BTreeMap<String, String>,
    /// Names of the executor's own environment variables passed through to builds
    /// (`passEnv`, default [`DEFAULT_PASS_ENV`]).
    pub pass_env: Vec<String>,
    /// Deliver the token in the `SD_TOKEN` environment variable instead of a 0600 file
    /// (`tokenEnv`, default `false`). Any process of the same user can read another
    /// process's environment through `/proc/<pid>/environ`, so prefer the file.
    pub token_env: bool,
    /// Give each build a cgroup (v2) of its own where the machine allows it (`cgroups`,
    /// default `true`): stop and timeout then kill every process of the build, daemons
    /// that left its session included, and OOM kills are counted per build when the
    /// memory controller can be enabled. Without one, builds are tracked by process group
    /// and the `SD_PROCESS_BUILD` marker variable.
    pub cgroups: bool,
    /// Fork each build's supervisor from one long-lived shell per executor (the zygote)
    /// instead of starting a shell per build (`zygote`, default `true`; builds with a
    /// cgroup only): one program start per build instead of two. Where the zygote cannot
    /// run (no `setsid`, no pseudo-terminals), builds start under a shell of their own.
    pub zygote: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            job_tools: None,
            state_dir: None,
            stop_grace_ms: DEFAULT_STOP_GRACE_MS,
            timeout_grace_ms: DEFAULT_TIMEOUT_GRACE_MS,
            timeout: TimeoutPolicy::default(),
            ecosystem: Ecosystem::default(),
            launch_mode: LaunchMode::Native,
            env: BTreeMap::new(),
            pass_env: DEFAULT_PASS_ENV.iter().map(|s| (*s).to_string()).collect(),
            token_env: false,
            cgroups: true,
            zygote: true,
        }
    }
}

impl fmt::Debug for ProcessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `env` values may be credentials of the operator's choosing: show only the keys.
        f.debug_struct("ProcessConfig")
            .field("job_tools", &self.job_tools)
            .field("state_dir", &self.state_dir)
            .field("stop_grace_ms", &self.stop_grace_ms)
            .field("timeout_grace_ms", &self.timeout_grace_ms)
            .field("timeout", &self.timeout)
            .field("ecosystem", &self.ecosystem)
            .field("launch_mode", &self.launch_mode)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("pass_env", &self.pass_env)
            .field("token_env", &self.token_env)
            .field("cgroups", &self.cgroups)
            .field("zygote", &self.zygote)
            .finish()
    }
}

/// The default job-tools directory: `$EXECUTOR_PROCESS_JOB_TOOLS`, else the directory of
/// the current executable.
pub fn default_job_tools() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(ENV_JOB_TOOLS).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// The default state directory: `$EXECUTOR_PROCESS_STATE_DIR`, else `$XDG_STATE_HOME/sdx`,
/// else `$HOME/.local/state/sdx`, else `./.sdx`.
pub fn default_state_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(ENV_STATE_DIR) {
        return dir;
    }
    if let Some(dir) = var("XDG_STATE_HOME") {
        return dir.join("sdx");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local").join("state").join("sdx");
    }
    PathBuf::from(".sdx")
}

/// The process backend's options, declared once: `with_option`, `EXECUTOR_PROCESS_<KEY>`,
/// `[process]` file sections, `--opt process.<key>=<value>` and the README table all come
/// from this list.
impl Configurable for ProcessConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<ProcessConfig>> = LazyLock::new(declare);
        &OPTIONS
    }
}

fn declare() -> Options<ProcessConfig> {
    Options::<ProcessConfig>::new(crate::SCHEME)
        .field(
            "jobTools",
            "Directory holding the `launch` program; empty: the directory of the running executable.",
            |c| &mut c.job_tools,
        )
        .field(
            "stateDir",
            "Directory for per-build logs, token files and state; empty: `$XDG_STATE_HOME/sdx`, else `$HOME/.local/state/sdx`, else `./.sdx`.",
            |c| &mut c.state_dir,
        )
        .field(
            "stopGraceMs",
            "Grace between SIGTERM and SIGKILL on `stop`, ms.",
            |c| &mut c.stop_grace_ms,
        )
        .field(
            "timeoutGraceMs",
            "How long a build may run past its timeout before the executor kills it and reports `TimedOut`, ms.",
            |c| &mut c.timeout_grace_ms,
        )
        .field(
            "launchMode",
            "Launch contract; only `native` is accepted (screwdriver mode puts the token in `ps`).",
            |c| &mut c.launch_mode,
        )
        .entries(
            "env",
            "Extra environment variables of every build (`k=v,k=v`, or one per `env.<NAME>`).",
            |c| &mut c.env,
        )
        .field(
            "passEnv",
            "Names of the executor's own environment variables passed through to builds (`a,b`).",
            |c| &mut c.pass_env,
        )
        .field(
            "tokenEnv",
            "Deliver the token in `SD_TOKEN` instead of a 0600 file (readable through `/proc/<pid>/environ`).",
            |c| &mut c.token_env,
        )
        .field(
            "cgroups",
            "Give each build a cgroup (v2) of its own where the machine allows it; `false`: track builds by process group and marker variable only.",
            |c| &mut c.cgroups,
        )
        .field(
            "zygote",
            "Fork each build's supervisor from one long-lived shell per executor instead of starting a shell per build (builds with a cgroup only); `false`: a shell per build.",
            |c| &mut c.zygote,
        )
        .timeout(|c| &mut c.timeout)
        .ecosystem(|c| &mut c.ecosystem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_env_values() {
        let mut c = ProcessConfig::default();
        c.env.insert("DEPLOY_KEY".into(), "hunter2".into());
        let d = format!("{c:?}");
        assert!(d.contains("DEPLOY_KEY"));
        assert!(!d.contains("hunter2"));
    }

    #[test]
    fn readme_table_matches_the_declarations() {
        let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        ProcessConfig::options()
            .check_readme_file(&readme)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ProcessConfig::options().undeclared_fields(),
            Vec::<String>::new(),
            "fields of ProcessConfig no option key declares"
        );
    }

    #[test]
    fn defaults_round_trip_through_serde() {
        let c = ProcessConfig::default();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["stopGraceMs"], 10_000);
        assert_eq!(v["launchMode"], "native");
        let back: ProcessConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let empty: ProcessConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, c);
    }
}
