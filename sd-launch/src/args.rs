//! The command line: flags with environment fallbacks, parsed by hand to keep the binary
//! small.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The usage text.
pub const USAGE: &str = "\
usage: launch --api-uri URL [--store-uri URL] [--ui-uri URL] [--build-timeout MINUTES]
              [--token-file PATH] [--workspace DIR] [--shell-bin PATH] [--only-fetch-token]
              BUILD_ID

Runs the steps of build BUILD_ID and reports them to the Screwdriver API at --api-uri.

options (environment variable in brackets):
  --api-uri URL            API server [SD_API_URI] (default http://localhost:8080)
  --store-uri URL          artifact store [SD_STORE_URI] (default http://localhost:8081)
  --ui-uri URL             UI [SD_UI_URI] (default http://localhost:4200)
  --build-timeout MINUTES  build timeout [SD_BUILD_TIMEOUT] (default 90)
  --token-file PATH        file holding the token [SD_TOKEN_FILE], read to its end
                           (/dev/stdin works: the Docker executor's default); else
                           the token is read from [SD_TOKEN]
  --workspace DIR          where steps run [SD_WORKSPACE] (default ./workspace)
  --shell-bin PATH         shell running each step with -c [SD_SHELL_BIN] (default /bin/sh)
  --stop-grace-ms MS       the executor's grace between SIGTERM and SIGKILL [SD_STOP_GRACE_MS]
                           (default 10000): on SIGTERM the step gets 3/4 of it to stop,
                           the rest is for reporting
  --spool-file PATH        where reports wait while the API is unreachable [SD_SPOOL_FILE]
                           (default sd-spool.jsonl beside the workspace)
  --api-retry-secs SECS    how long to keep retrying an unreachable API [SD_API_RETRY_SECS]
                           (default 600)
  --only-fetch-token       exchange the token, print the build token and exit
  -h, --help               this text
  -V, --version            the version

exit codes: 0 success, 1 a step failed or the build was aborted, 2 usage error or the
build could not start (token exchange, RUNNING or the steps refused or unreachable),
3 build timeout, 4 the API had already aborted the build (nothing ran). The exit code is the build's outcome even when the final report waits
in the spool.";

/// Parsed command line of `launch`.
#[derive(Clone, PartialEq, Eq)]
pub struct Args {
    /// `--api-uri` (trailing slashes removed).
    pub api_uri: String,
    /// `--store-uri`.
    pub store_uri: String,
    /// `--ui-uri`.
    pub ui_uri: String,
    /// The build timeout (`--build-timeout` minutes, or `SD_BUILD_TIMEOUT_SECS` seconds
    /// for tests and demos).
    pub build_timeout: Duration,
    /// `--token-file`, or `SD_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--workspace`.
    pub workspace: PathBuf,
    /// `--shell-bin`.
    pub shell_bin: String,
    /// `--only-fetch-token`.
    pub only_fetch_token: bool,
    /// `--stop-grace-ms`: the executor's grace between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// `--spool-file`: where undelivered reports wait.
    pub spool_file: PathBuf,
    /// `--api-retry-secs`: how long an unreachable API is retried.
    pub api_retry: Duration,
    /// The build id.
    pub build_id: u64,
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("api_uri", &self.api_uri)
            .field("build_timeout", &self.build_timeout)
            .field("token_file", &self.token_file)
            .field("workspace", &self.workspace)
            .field("shell_bin", &self.shell_bin)
            .field("stop_grace", &self.stop_grace)
            .field("spool_file", &self.spool_file)
            .field("api_retry", &self.api_retry)
            .field("build_id", &self.build_id)
            .finish_non_exhaustive()
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum Parsed {
    /// Run the build.
    Run(Args),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// A command-line error, naming the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn http_url(flag: &str, v: &str) -> Result<String, UsageError> {
    let v = v.trim();
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| UsageError(format!("{flag}: must be an http(s) URL, got {v:?}")))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(UsageError(format!(
            "{flag}: must be an http(s) URL with a host"
        )));
    }
    if v.starts_with("https://") {
        return Err(UsageError(format!(
            "{flag}: https is not supported by this launch (built without TLS); use http"
        )));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// The stop grace assumed when the executor gives none (the executors' default).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long an unreachable API is retried by default.
pub const DEFAULT_API_RETRY: Duration = Duration::from_secs(600);

fn positive(flag: &str, v: &str) -> Result<u64, UsageError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| UsageError(format!("{flag}: must be a positive integer, got {v:?}")))
}

impl Args {
    /// Parses the arguments after the program name, with environment fallbacks.
    ///
    /// ```
    /// use sd_launch::args::{Args, Parsed};
    /// let Parsed::Run(a) = Args::parse(["--api-uri=http://127.0.0.1:9/", "--build-timeout", "5", "42"]).unwrap()
    /// else { panic!() };
    /// assert_eq!(a.api_uri, "http://127.0.0.1:9");
    /// assert_eq!(a.build_timeout.as_secs(), 300);
    /// assert_eq!(a.build_id, 42);
    /// assert!(Args::parse(["--api-uri", "ftp://x", "42"]).unwrap_err().0.starts_with("--api-uri"));
    /// ```
    pub fn parse<I, S>(args: I) -> Result<Parsed, UsageError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut api = None;
        let mut store = None;
        let mut ui = None;
        let mut timeout = None;
        let mut token_file = None;
        let mut workspace = None;
        let mut shell = None;
        let mut only_fetch = false;
        let mut stop_grace = None;
        let mut spool = None;
        let mut retry = None;
        let mut build_id = None;
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            let arg = arg
                .into_string()
                .map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8")))?;
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |flag: &str| -> Result<String, UsageError> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or_else(|| UsageError(format!("{flag}: needs a value"))),
                }
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help),
                "-V" | "--version" => return Ok(Parsed::Version),
                "--api-uri" => api = Some(value(&flag)?),
                "--store-uri" => store = Some(value(&flag)?),
                "--ui-uri" => ui = Some(value(&flag)?),
                "--build-timeout" => timeout = Some(value(&flag)?),
                "--token-file" => token_file = Some(value(&flag)?),
                "--workspace" => workspace = Some(value(&flag)?),
                "--shell-bin" => shell = Some(value(&flag)?),
                "--only-fetch-token" => only_fetch = true,
                "--stop-grace-ms" => stop_grace = Some(value(&flag)?),
                "--spool-file" => spool = Some(value(&flag)?),
                "--api-retry-secs" => retry = Some(value(&flag)?),
                "--token" => {
                    return Err(UsageError(
                        "--token: not accepted (it would show in `ps`); use --token-file, SD_TOKEN_FILE or SD_TOKEN"
                            .into(),
                    ));
                }
                f if f.starts_with('-') && f.len() > 1 => {
                    return Err(UsageError(format!("unknown option {f}")));
                }
                _ => {
                    if build_id.is_some() {
                        return Err(UsageError(format!("unexpected argument {arg:?}")));
                    }
                    build_id = Some(positive("BUILD_ID", &arg)?);
                }
            }
        }
        let build_id = build_id.ok_or_else(|| UsageError("BUILD_ID: is required".into()))?;
        let api_uri = http_url(
            "--api-uri",
            &api.or_else(|| env("SD_API_URI"))
                .unwrap_or_else(|| "http://localhost:8080".into()),
        )?;
        let store_uri = http_url(
            "--store-uri",
            &store
                .or_else(|| env("SD_STORE_URI"))
                .unwrap_or_else(|| "http://localhost:8081".into()),
        )?;
        let ui_uri = http_url(
            "--ui-uri",
            &ui.or_else(|| env("SD_UI_URI"))
                .unwrap_or_else(|| "http://localhost:4200".into()),
        )?;
        let build_timeout = match env("SD_BUILD_TIMEOUT_SECS") {
            Some(s) => Duration::from_secs(positive("SD_BUILD_TIMEOUT_SECS", &s)?),
            None => {
                let m = match timeout.or_else(|| env("SD_BUILD_TIMEOUT")) {
                    Some(m) => positive("--build-timeout", &m)?,
                    None => 90,
                };
                Duration::from_secs(m.saturating_mul(60))
            }
        };
        let stop_grace = match stop_grace.or_else(|| env("SD_STOP_GRACE_MS")) {
            Some(ms) => Duration::from_millis(positive("--stop-grace-ms", &ms)?),
            None => DEFAULT_STOP_GRACE,
        };
        let api_retry = match retry.or_else(|| env("SD_API_RETRY_SECS")) {
            Some(s) => Duration::from_secs(positive("--api-retry-secs", &s)?),
            None => DEFAULT_API_RETRY,
        };
        let workspace = workspace
            .or_else(|| env("SD_WORKSPACE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("workspace"));
        let spool_file = spool
            .or_else(|| env("SD_SPOOL_FILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                workspace
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join(crate::spool::DEFAULT_NAME)
            });
        Ok(Parsed::Run(Args {
            api_uri,
            store_uri,
            ui_uri,
            build_timeout,
            token_file: token_file
                .or_else(|| env("SD_TOKEN_FILE"))
                .map(PathBuf::from),
            workspace,
            shell_bin: shell
                .or_else(|| env("SD_SHELL_BIN"))
                .unwrap_or_else(|| "/bin/sh".into()),
            only_fetch_token: only_fetch,
            stop_grace,
            spool_file,
            api_retry,
            build_id,
        }))
    }

    /// How long a step gets between SIGTERM and SIGKILL when the build is aborted: three
    /// quarters of the executor's stop grace (the rest is for reporting).
    pub fn step_abort_grace(&self) -> Duration {
        self.stop_grace * 3 / 4
    }

    /// The build timeout in whole minutes, rounded up (what the token exchange asks for).
    pub fn timeout_minutes(&self) -> u64 {
        self.build_timeout.as_secs().div_ceil(60).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Args {
        match Args::parse(args.iter().copied()).unwrap() {
            Parsed::Run(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_command_line() {
        let a = run(&[
            "--api-uri",
            "http://127.0.0.1:8080/",
            "--store-uri",
            "http://127.0.0.1:8081",
            "--ui-uri=http://ui.example",
            "--build-timeout",
            "2",
            "--token-file",
            "/run/sd/token",
            "--workspace",
            "/tmp/ws",
            "--shell-bin",
            "/bin/bash",
            "--stop-grace-ms=2000",
            "--spool-file",
            "/run/sd/spool",
            "--api-retry-secs",
            "30",
            "7",
        ]);
        assert_eq!(a.stop_grace, Duration::from_secs(2));
        assert_eq!(a.step_abort_grace(), Duration::from_millis(1500));
        assert_eq!(a.spool_file, PathBuf::from("/run/sd/spool"));
        assert_eq!(a.api_retry, Duration::from_secs(30));
        assert_eq!(a.api_uri, "http://127.0.0.1:8080");
        assert_eq!(a.store_uri, "http://127.0.0.1:8081");
        assert_eq!(a.ui_uri, "http://ui.example");
        assert_eq!(a.build_timeout, Duration::from_secs(120));
        assert_eq!(a.timeout_minutes(), 2);
        assert_eq!(
            a.token_file.as_deref(),
            Some(std::path::Path::new("/run/sd/token"))
        );
        assert_eq!(a.workspace, PathBuf::from("/tmp/ws"));
        assert_eq!(a.shell_bin, "/bin/bash");
        assert_eq!(a.build_id, 7);
        assert!(!a.only_fetch_token);
        let d = run(&["--workspace", "/sd/workspace", "8"]);
        assert_eq!(d.stop_grace, DEFAULT_STOP_GRACE);
        assert_eq!(d.spool_file, PathBuf::from("/sd/sd-spool.jsonl"));
        assert_eq!(d.api_retry, DEFAULT_API_RETRY);
        assert!(e_of(&["--stop-grace-ms", "0", "1"]).starts_with("--stop-grace-ms:"));
    }

    fn e_of(args: &[&str]) -> String {
        Args::parse(args.iter().copied()).unwrap_err().0
    }

    #[test]
    fn errors_name_the_flag() {
        let e = |args: &[&str]| Args::parse(args.iter().copied()).unwrap_err().0;
        assert_eq!(e(&[]), "BUILD_ID: is required");
        assert!(e(&["0"]).starts_with("BUILD_ID: must be a positive integer"));
        assert!(e(&["abc"]).starts_with("BUILD_ID: must be a positive integer"));
        assert!(e(&["1", "2"]).starts_with("unexpected argument"));
        assert_eq!(e(&["--bogus", "1"]), "unknown option --bogus");
        assert_eq!(e(&["1", "--api-uri"]), "--api-uri: needs a value");
        assert!(
            e(&["--build-timeout", "-3", "1"])
                .starts_with("--build-timeout: must be a positive integer")
        );
        assert!(
            e(&["--api-uri", "localhost:80", "1"]).starts_with("--api-uri: must be an http(s) URL")
        );
        assert!(e(&["--api-uri", "https://x", "1"]).contains("without TLS"));
        assert!(e(&["--token", "secret", "1"]).starts_with("--token: not accepted"));
        assert!(!e(&["--token", "secret", "1"]).contains("secret\""));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(Args::parse(["--help"]).unwrap(), Parsed::Help);
        assert_eq!(Args::parse(["-V"]).unwrap(), Parsed::Version);
    }

    #[test]
    fn debug_has_no_secrets_and_minutes_round_up() {
        let mut a = run(&["--api-uri", "http://127.0.0.1:1", "3"]);
        a.build_timeout = Duration::from_secs(61);
        assert_eq!(a.timeout_minutes(), 2);
        a.build_timeout = Duration::from_secs(1);
        assert_eq!(a.timeout_minutes(), 1);
        assert!(format!("{a:?}").contains("build_id: 3"));
    }
}
