//! The command every backend runs inside the build container, in both launch modes.
//!
//! * **Native** (default): `<mount>/launch --api-uri A --store-uri S --ui-uri U
//!   --build-timeout N [--token-file F] <buildId>`. The token never appears in the argument
//!   list: it is a file (Docker: a per-build volume; process: a 0600 file) or an
//!   environment variable filled from a secret reference (Kubernetes `secretKeyRef`).
//! * **Screwdriver** (compatible with the `screwdrivercd/launcher` image):
//!   entry point `<mount>/launcher_entrypoint.sh` with one argument string
//!   `<mount>/run.sh "<token>" "<api>" "<store>" "<timeout>" "<buildId>" "<ui>"`.
//!   Upstream passes the token as an argument, where `ps` and `docker inspect` show it;
//!   the mode exists only for that image and says so in its docs.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::StartConfig;

/// Default mount point of the job-tools volume.
pub const DEFAULT_MOUNT_POINT: &str = "/opt/sd";
/// Environment variable the launcher reads the token from.
pub const TOKEN_ENV: &str = "SD_TOKEN";
/// Environment variable naming a file that holds the token.
pub const TOKEN_FILE_ENV: &str = "SD_TOKEN_FILE";

/// Which launcher contract to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchMode {
    /// Our `launch` with the token out of the argument list.
    #[default]
    Native,
    /// `launcher_entrypoint.sh` + `run.sh` positional arguments (token visible).
    Screwdriver,
}

/// How the native launcher gets the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDelivery {
    /// A file at this path inside the container (`--token-file`).
    File(String),
    /// The `SD_TOKEN` environment variable, filled by the engine from a secret reference.
    EnvFromSecret,
}

/// The store and UI URLs the executor passes to every build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ecosystem {
    /// The artifact store (`--store-uri`).
    pub store: Url,
    /// The UI (`--ui-uri`).
    pub ui: Url,
}

impl Default for Ecosystem {
    fn default() -> Self {
        Self {
            store: Url::parse("http://localhost:8081").expect("static URL"),
            ui: Url::parse("http://localhost:4200").expect("static URL"),
        }
    }
}

/// A rendered launch: entry point, arguments, and non-secret environment.
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchCommand {
    /// The entry point (program).
    pub entrypoint: String,
    /// The arguments.
    pub args: Vec<String>,
    /// Non-secret environment variables.
    pub env: Vec<(String, String)>,
    /// Whether `args` contain the token (Screwdriver mode only).
    pub args_contain_token: bool,
}

impl std::fmt::Debug for LaunchCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LaunchCommand");
        d.field("entrypoint", &self.entrypoint);
        if self.args_contain_token {
            d.field("args", &"[REDACTED: contains token]");
        } else {
            d.field("args", &self.args);
        }
        d.field("env", &self.env).finish()
    }
}

impl LaunchCommand {
    /// Entry point followed by arguments.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.entrypoint.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// Inputs of a launch, shared by every backend.
///
/// The environment ([`LaunchCommand::env`]) holds `SD_BUILD_ID`, `SD_API_URI`,
/// `SD_STORE_URI`, `SD_BUILD_TIMEOUT`, `CONTAINER_IMAGE`, `SD_PIPELINE_ID` (when known),
/// then the build's own [`StartConfig::env`].
///
/// ```
/// use executor_base::{LaunchSpec, StartConfig, TokenDelivery, Ecosystem};
/// let b = StartConfig::builder(42, "http://127.0.0.1:8080", "busybox", "secret-tok").build().unwrap();
/// let eco = Ecosystem::default();
/// let spec = LaunchSpec::new(&b, "/opt/sd", &eco, 90);
/// let cmd = spec.native(&TokenDelivery::File("/run/sd/token".into()));
/// assert_eq!(cmd.argv().join(" "),
///   "/opt/sd/launch --api-uri http://127.0.0.1:8080/ --store-uri http://localhost:8081/ --ui-uri http://localhost:4200/ --build-timeout 90 --token-file /run/sd/token 42");
/// assert!(!format!("{cmd:?}").contains("secret-tok"));
/// let sd = spec.screwdriver();
/// assert_eq!(sd.entrypoint, "/opt/sd/launcher_entrypoint.sh");
/// assert!(!format!("{sd:?}").contains("secret-tok"));
/// ```
#[derive(Debug, Clone)]
pub struct LaunchSpec<'a> {
    build: &'a StartConfig,
    mount_point: String,
    ecosystem: &'a Ecosystem,
    timeout_minutes: u32,
}

impl<'a> LaunchSpec<'a> {
    /// A launch of `build` with job-tools at `mount_point` and a timeout in minutes.
    pub fn new(
        build: &'a StartConfig,
        mount_point: &str,
        ecosystem: &'a Ecosystem,
        timeout_minutes: u32,
    ) -> Self {
        Self {
            build,
            mount_point: mount_point.trim_end_matches('/').to_string(),
            ecosystem,
            timeout_minutes,
        }
    }

    fn store(&self) -> &Url {
        self.build
            .store_uri
            .as_ref()
            .unwrap_or(&self.ecosystem.store)
    }

    fn ui(&self) -> &Url {
        self.build.ui_uri.as_ref().unwrap_or(&self.ecosystem.ui)
    }

    /// The native command.
    pub fn native(&self, token: &TokenDelivery) -> LaunchCommand {
        let mut args = vec![
            "--api-uri".to_string(),
            self.build.api_uri.to_string(),
            "--store-uri".to_string(),
            self.store().to_string(),
            "--ui-uri".to_string(),
            self.ui().to_string(),
            "--build-timeout".to_string(),
            self.timeout_minutes.to_string(),
        ];
        if let TokenDelivery::File(path) = token {
            args.push("--token-file".to_string());
            args.push(path.clone());
        }
        args.push(self.build.build_id.to_string());
        LaunchCommand {
            entrypoint: format!("{}/launch", self.mount_point),
            args,
            env: self.env(),
            args_contain_token: false,
        }
    }

    /// The Screwdriver-compatible command. **The token is in the argument string**, as
    /// upstream's `run.sh` contract requires; prefer [`LaunchSpec::native`].
    pub fn screwdriver(&self) -> LaunchCommand {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let line = [
            format!("{}/run.sh", self.mount_point),
            q(self.build.token.expose_secret()),
            q(self.build.api_uri.as_str()),
            q(self.store().as_str()),
            q(&self.timeout_minutes.to_string()),
            q(&self.build.build_id.to_string()),
            q(self.ui().as_str()),
        ]
        .join(" ");
        LaunchCommand {
            entrypoint: format!("{}/launcher_entrypoint.sh", self.mount_point),
            args: vec![line],
            env: self.env(),
            args_contain_token: true,
        }
    }

    /// The command for `mode`; native uses `token`.
    pub fn command(&self, mode: LaunchMode, token: &TokenDelivery) -> LaunchCommand {
        match mode {
            LaunchMode::Native => self.native(token),
            LaunchMode::Screwdriver => self.screwdriver(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("SD_BUILD_ID".to_string(), self.build.build_id.to_string()),
            ("SD_API_URI".to_string(), self.build.api_uri.to_string()),
            ("SD_STORE_URI".to_string(), self.store().to_string()),
            (
                "SD_BUILD_TIMEOUT".to_string(),
                self.timeout_minutes.to_string(),
            ),
            (
                "CONTAINER_IMAGE".to_string(),
                self.build.container.to_string(),
            ),
        ];
        if let Some(p) = self.build.pipeline_id {
            env.push(("SD_PIPELINE_ID".to_string(), p.to_string()));
        }
        // The build's own variables come last; parsing refused reserved names already,
        // and this check keeps it so for configs built any other way.
        env.extend(
            self.build
                .env
                .iter()
                .filter(|(k, _)| !crate::build_env::is_reserved(k))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env
    }
}

/// Exposes a token for the one place a backend must hand it to the engine
/// (a file's contents, a Secret's data). Keeping this in one function makes every such
/// place easy to find.
pub fn expose_token(token: &SecretString) -> &str {
    token.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_env_follows_the_launch_env() {
        let b = StartConfig::builder(7, "http://127.0.0.1:8080", "busybox", "tok")
            .env("ZUUL_REF", "refs/zuul/master/Z1")
            .env("LOG_PATH", "check/unit/u1")
            .build()
            .unwrap();
        let eco = Ecosystem::default();
        let cmd = LaunchSpec::new(&b, "/opt/sd", &eco, 90).native(&TokenDelivery::EnvFromSecret);
        let names: Vec<&str> = cmd.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "SD_BUILD_ID",
                "SD_API_URI",
                "SD_STORE_URI",
                "SD_BUILD_TIMEOUT",
                "CONTAINER_IMAGE",
                "LOG_PATH",
                "ZUUL_REF"
            ]
        );
        let refused = StartConfig::builder(7, "http://127.0.0.1:8080", "busybox", "tok")
            .env("SD_API_URI", "http://evil")
            .build()
            .unwrap_err();
        assert_eq!(refused.field_errors()[0].field, "env[SD_API_URI]");
    }
}
