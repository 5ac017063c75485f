//! Pre-flight checks: what [`Executor::preflight`](crate::Executor::preflight) answers
//! before anything is created.
//!
//! A [`Preflight`] is the list of [`Finding`]s of one backend for one build: each names
//! the thing checked (`docker.daemon`, `k8s.rbac.pods.create`, `jenkins.plugin.build-timeout`,
//! ...), its [`Level`] and a message a person can act on. A pre-flight never panics on a
//! bad engine answer and never passes silently: an engine it cannot reach is a
//! [`Level::Fail`] naming the address, within the check's timeout ([`bounded`]).
//!
//! Results are cached per key (what the findings depend on: the launcher image and launch
//! mode, the build image, ...) for a short, configurable time ([`PreflightCache`],
//! option `preflight.cacheMs`), so a server that checks every build pays one round of
//! engine calls per key and TTL, not one per build.
//!
//! ```
//! use executor_base::preflight::{Finding, Level, Preflight};
//! let mut p = Preflight::new("docker");
//! p.push(Finding::ok("docker.daemon", "reachable at unix:///var/run/docker.sock (API 1.43)"));
//! p.push(Finding::warn("docker.launchProtocol", "screwdriver mode: success cannot be proven"));
//! assert!(p.passed());
//! p.push(Finding::fail("docker.buildImage", "image 127.0.0.1:5000/nope:1 is not pullable"));
//! assert!(!p.passed());
//! assert_eq!(p.level(), Level::Fail);
//! let json = serde_json::to_value(&p).unwrap();
//! assert_eq!(json["findings"][2]["level"], "fail");
//! assert_eq!(json["findings"][2]["check"], "docker.buildImage");
//! assert_eq!(json["passed"], false);
//! ```

mod cache;
mod launch;
mod probe;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cache::PreflightCache;
pub use launch::{launch_mode_finding, launcher_label_finding};
pub use probe::bounded;

/// Default of `preflight.cacheMs`: how long a pre-flight answer is reused.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);

/// Default of `preflight.timeoutMs`: the bound on each engine check.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The thing checked is as a build needs it.
    Ok,
    /// Builds can run, but something is worth knowing (e.g. success cannot be proven).
    Warn,
    /// A build would not run (or not as configured): fix this first.
    Fail,
}

impl Level {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The thing checked, dotted: `<backend>.<what>[.<which>]` (`k8s.namespace`,
    /// `k8s.rbac.pods.create`, `jenkins.plugin.build-timeout`, `docker.launcherImage`).
    pub check: String,
    /// How it came out.
    pub level: Level,
    /// What was found, naming the key or resource, and what to do when it is not ok.
    pub message: String,
}

impl Finding {
    /// A finding at `level`.
    pub fn new(check: impl Into<String>, level: Level, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            level,
            message: message.into(),
        }
    }

    /// An [`Level::Ok`] finding.
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(check, Level::Ok, message)
    }

    /// A [`Level::Warn`] finding.
    pub fn warn(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(check, Level::Warn, message)
    }

    /// A [`Level::Fail`] finding.
    pub fn fail(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(check, Level::Fail, message)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.check, self.level, self.message)
    }
}

/// The findings of one backend's pre-flight for one build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preflight {
    /// The backend that checked (`docker`, `k8s`, ...).
    pub backend: String,
    /// What it found, in the order checked.
    pub findings: Vec<Finding>,
}

impl Serialize for Preflight {
    // Adds `passed`, so a JSON reader need not fold the levels itself.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Preflight", 3)?;
        st.serialize_field("backend", &self.backend)?;
        st.serialize_field("passed", &self.passed())?;
        st.serialize_field("findings", &self.findings)?;
        st.end()
    }
}

impl Preflight {
    /// No findings yet (what a backend with nothing to check answers).
    pub fn new(backend: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            findings: Vec::new(),
        }
    }

    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Whether no finding is [`Level::Fail`]: a build may start.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Fail)
    }

    /// The worst level found ([`Level::Ok`] when there is none).
    pub fn level(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// The failed findings.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Fail)
    }

    /// One line naming every failed check (`""` when it passed), for error messages.
    pub fn summary(&self) -> String {
        self.failures()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The pre-flight options every backend spells the same way (`preflight.cacheMs`,
/// `preflight.timeoutMs`; declared by [`crate::options::Options::preflight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PreflightOptions {
    /// How long an answer is reused for the same key (`0`: never cached).
    #[serde(rename = "cacheMs", with = "crate::engine::duration_millis")]
    pub cache_ttl: Duration,
    /// Bound on each engine check; past it the check is a [`Level::Fail`] naming the
    /// address.
    #[serde(rename = "timeoutMs", with = "crate::engine::duration_millis")]
    pub check_timeout: Duration,
}

impl Default for PreflightOptions {
    fn default() -> Self {
        Self {
            cache_ttl: DEFAULT_CACHE_TTL,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }
}
