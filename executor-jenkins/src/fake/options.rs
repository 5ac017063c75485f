//! How a fake Jenkins starts: credentials, version, plugins, timings.

use std::time::Duration;

/// The user the fake accepts by default.
pub const FAKE_USER: &str = "screwdriver";
/// The user's API token the fake accepts by default. POSTs authenticated with an API token
/// need no crumb (core `jenkins.security.ApiCrumbExclusion`, since 2.96).
pub const FAKE_TOKEN: &str = "fake-api-token-0123456789";
/// The user's password the fake accepts by default. POSTs authenticated with the password
/// need a crumb issued in the same session (core `hudson.security.csrf.CrumbFilter`).
pub const FAKE_PASSWORD: &str = "fake-password-9876543210";
/// The version the fake announces in its `X-Jenkins` header (and whose behaviour it has).
pub const FAKE_VERSION: &str = "2.479.1-fake";
/// The plugins a fresh Jenkins has after the setup wizard's "suggested plugins" that
/// matter here: build-timeout (the job's own timeout) and cloudbees-folder (folders).
pub const DEFAULT_PLUGINS: &[&str] = &["build-timeout", "cloudbees-folder"];

/// How a fake starts.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Path Jenkins is served under (`/jenkins`), or empty.
    pub path_prefix: String,
    /// Whether `/crumbIssuer/api/json` exists (and password-authenticated POSTs need a
    /// crumb).
    pub crumb_issuer: bool,
    /// The accepted user.
    pub user: String,
    /// The user's accepted API token (no crumb needed).
    pub token: String,
    /// The user's accepted password (crumb needed on POSTs).
    pub password: String,
    /// The Jenkins version: `X-Jenkins`, and the behaviour of version-dependent answers
    /// (`cancelItem` 302 before 2.212, `buildWithParameters` 303 from 2.308, 400 instead
    /// of 500 for a job without parameters from 2.525).
    pub version: String,
    /// The short names of the installed, active plugins.
    pub plugins: Vec<String>,
    /// Jenkins' quiet period: a queue item waits this long unless `buildWithParameters`
    /// says `delay=` (Jenkins' default is 5 s, `Jenkins.getQuietPeriod()`).
    pub quiet_period: Duration,
    /// Queue items become builds after this delay (counted from the end of their quiet
    /// period); `None`: only on [`super::FakeJenkins::start_queued`].
    pub queue_delay: Option<Duration>,
    /// How long a queue item that left the queue shows `executable: null` before its
    /// build exists (on Jenkins: until the executor thread created the `Run`; usually
    /// milliseconds). Zero: the build exists as soon as the item leaves.
    pub executable_delay: Duration,
    /// How long an aborted build (stop, the job's own timeout) stays `building: true`
    /// before it ends `ABORTED` (on Jenkins: until the executor thread unwound, the
    /// process tree was killed and post-build steps ran, often seconds).
    pub abort_delay: Duration,
    /// Builds finish with this result after this run time; `None`: they run until the
    /// test finishes them or they are stopped.
    pub run_for: Option<(Duration, String)>,
    /// The agents: name, labels, executors; all online. Default: `agent-1` with the label
    /// `screwdriver` (the executor's default `nodeLabel`) and two executors.
    pub agents: Vec<(String, Vec<String>, u32)>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            path_prefix: String::new(),
            crumb_issuer: true,
            user: FAKE_USER.to_string(),
            token: FAKE_TOKEN.to_string(),
            password: FAKE_PASSWORD.to_string(),
            version: FAKE_VERSION.to_string(),
            plugins: DEFAULT_PLUGINS.iter().map(|p| p.to_string()).collect(),
            quiet_period: Duration::from_secs(5),
            queue_delay: None,
            executable_delay: Duration::ZERO,
            abort_delay: Duration::from_millis(100),
            run_for: None,
            agents: vec![("agent-1".to_string(), vec!["screwdriver".to_string()], 2)],
        }
    }
}

/// `major.minor` of a Jenkins version string (`2.479.1-fake` → `(2, 479)`); unreadable
/// parts count as 0.
pub(crate) fn version_of(v: &str) -> (u32, u32) {
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_jenkins_releases() {
        assert_eq!(version_of(FAKE_VERSION), (2, 479));
        assert_eq!(version_of("2.525"), (2, 525));
        assert!(version_of("2.211.3") < (2, 212));
        assert_eq!(version_of("weekly"), (0, 0));
    }
}
