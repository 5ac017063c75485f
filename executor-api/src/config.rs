//! The reference API's configuration, and its declaration for the shared option system
//! (`[api]` file sections, `EXECUTOR_API_*`, `--opt api.<key>=<value>`).

use std::fmt;
use std::sync::LazyLock;

use executor_base::options::{Configurable, Options};
use executor_base::{Error, ErrorKind, TimeoutPolicy};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// How the reference API runs. Every field has a default.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ApiConfig {
    /// The URL builds use to reach this API (`apiUri` of the start configs). Default: the
    /// address the server listens on (`http://127.0.0.1:<port>`).
    pub public_uri: Option<String>,
    /// `storeUri` passed to builds. Default: the executor's.
    pub store_uri: Option<String>,
    /// `uiUri` passed to builds. Default: the executor's.
    pub ui_uri: Option<String>,
    /// The image of builds that name none. Default `busybox:latest`.
    pub default_container: String,
    /// Lifetime of the temporary token given to executors, minutes (upstream: 720).
    pub temporal_token_minutes: u32,
    /// Build timeout policy, for the build token's lifetime when `buildTimeout` is null.
    pub timeout: TimeoutPolicy,
    /// The static bearer token of the API's administrator (submits, stops). Generated at
    /// start when absent; see `ApiState::user_token`.
    #[serde(skip_serializing)]
    pub user_token: Option<SecretString>,
    /// An EC P-256 private key (PKCS#8 PEM) to sign tokens with. Generated at start when
    /// absent, so tokens do not survive a restart.
    #[serde(skip_serializing)]
    pub jwt_private_key: Option<SecretString>,
    /// How often the executor's status of a running build is checked, milliseconds
    /// (catches a `launch` that died without reporting). Default 1000.
    pub status_poll_ms: u64,
    /// How many consecutive checks must see the build ended on the engine while the API
    /// still has it open before the API records the engine's outcome. Default 3.
    pub lost_after_polls: u32,
    /// Where builds, steps, log lines and the id sequence are kept (`buildStore`):
    /// `sqlite:PATH` (durable; `sdx serve` and `sdx run` default to `api.db` in the state
    /// directory), `postgres://user@host:port/db` (shared by several instances), or
    /// `memory:`. Default (library): in memory. (`storeUri` is the
    /// artifact store's URL given to builds, as in Screwdriver.)
    pub build_store: Option<String>,
    /// How long after `launch` reported a final status the API waits for the executor to
    /// see the build end on its own before it stops it, milliseconds. Default 10 000.
    pub final_exit_wait_ms: u64,
    /// With a shared store (PostgreSQL): how long an instance's lease on a build lasts
    /// without renewal, milliseconds. When an instance dies, the others adopt its builds
    /// this long after its last renewal (plus up to one renewal period). Default 15 000.
    pub lease_ttl_ms: u64,
    /// With a shared store: how often an instance renews all its leases (one statement)
    /// and looks for builds to adopt, milliseconds; at most half of `leaseTtlMs`.
    /// Default 5 000.
    pub lease_renew_ms: u64,
    /// Ask the executor's pre-flight (`Executor::preflight`, cached by the executor)
    /// before accepting a build, and refuse one whose pre-flight fails with 422 and the
    /// findings. Default `true`; off only to exercise an engine's own start failures.
    pub preflight: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            public_uri: None,
            store_uri: None,
            ui_uri: None,
            default_container: "busybox:latest".into(),
            temporal_token_minutes: 720,
            timeout: TimeoutPolicy::default(),
            user_token: None,
            jwt_private_key: None,
            status_poll_ms: 1000,
            lost_after_polls: 3,
            build_store: None,
            final_exit_wait_ms: 10_000,
            lease_ttl_ms: 15_000,
            lease_renew_ms: 5_000,
            preflight: true,
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("public_uri", &self.public_uri)
            .field("store_uri", &self.store_uri)
            .field("ui_uri", &self.ui_uri)
            .field("default_container", &self.default_container)
            .field("temporal_token_minutes", &self.temporal_token_minutes)
            .field("timeout", &self.timeout)
            .field(
                "user_token",
                &self.user_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "jwt_private_key",
                &self.jwt_private_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("status_poll_ms", &self.status_poll_ms)
            .field("lost_after_polls", &self.lost_after_polls)
            .field("build_store", &self.build_store)
            .field("final_exit_wait_ms", &self.final_exit_wait_ms)
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("lease_renew_ms", &self.lease_renew_ms)
            .field("preflight", &self.preflight)
            .finish()
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("{key}: {}", reason.into()),
    )
    .with_context("key", key)
}

impl ApiConfig {
    /// Checks every field; the error names the key.
    pub fn validate(&self) -> Result<(), Error> {
        for (key, v) in [
            ("publicUri", &self.public_uri),
            ("storeUri", &self.store_uri),
            ("uiUri", &self.ui_uri),
        ] {
            if let Some(u) = v {
                executor_base::config::parse_http_url(u).map_err(|r| invalid(key, r))?;
            }
        }
        executor_base::ImageRef::parse(&self.default_container)
            .map_err(|r| invalid("defaultContainer", r))?;
        if self.temporal_token_minutes == 0 {
            invalid_err("temporalTokenMinutes")?;
        }
        if self.status_poll_ms == 0 {
            invalid_err("statusPollMs")?;
        }
        if self.lost_after_polls == 0 {
            invalid_err("lostAfterPolls")?;
        }
        if self.lease_renew_ms == 0 {
            invalid_err("leaseRenewMs")?;
        }
        if self.lease_ttl_ms < 2 * self.lease_renew_ms {
            return Err(invalid(
                "leaseTtlMs",
                format!(
                    "must be at least twice leaseRenewMs ({} ms), so a live instance renews in time",
                    self.lease_renew_ms
                ),
            ));
        }
        if let Some(uri) = &self.build_store {
            crate::store::StoreUri::parse(uri)?;
        }
        Ok(())
    }
}

fn invalid_err(key: &str) -> Result<(), Error> {
    Err(invalid(key, "must be a positive integer"))
}

/// The option scheme of the reference API: `[api]` in `sdx.toml`, `EXECUTOR_API_<KEY>`,
/// `--opt api.<key>=<value>`.
pub const SCHEME: &str = "api";

/// The reference API's options, declared once.
impl Configurable for ApiConfig {
    fn options() -> &'static Options<Self> {
        static OPTIONS: LazyLock<Options<ApiConfig>> = LazyLock::new(declare);
        &OPTIONS
    }
}

fn declare() -> Options<ApiConfig> {
    Options::<ApiConfig>::new(SCHEME)
        .field(
            "publicUri",
            "The URL builds use to reach this API (`apiUri`); empty: `http://<listen address>`.",
            |c| &mut c.public_uri,
        )
        .field(
            "storeUri",
            "`storeUri` passed to builds; empty: the executor's.",
            |c| &mut c.store_uri,
        )
        .field(
            "uiUri",
            "`uiUri` passed to builds; empty: the executor's.",
            |c| &mut c.ui_uri,
        )
        .field(
            "defaultContainer",
            "The image of builds that name none.",
            |c| &mut c.default_container,
        )
        .field(
            "temporalTokenMinutes",
            "Lifetime of the temporary token given to executors, minutes.",
            |c| &mut c.temporal_token_minutes,
        )
        .field(
            "userToken",
            "The administrator's static bearer token; empty: generated at start.",
            |c| &mut c.user_token,
        )
        .secret()
        .field(
            "jwtPrivateKey",
            "EC P-256 private key (PKCS#8 PEM) signing tokens; empty: generated at start.",
            |c| &mut c.jwt_private_key,
        )
        .secret()
        .field(
            "statusPollMs",
            "How often a running build's executor status is checked, ms.",
            |c| &mut c.status_poll_ms,
        )
        .field(
            "lostAfterPolls",
            "Consecutive checks that must see a build ended on the engine before the API fails it.",
            |c| &mut c.lost_after_polls,
        )
        .field(
            "buildStore",
            "Where builds, steps, logs and the id sequence are kept: `sqlite:PATH`, `postgres://user@host:port/db` (shared by several instances) or `memory:`; empty: in memory (`sdx serve`/`sdx run`: `sqlite:<stateDir>/api.db`/`run.db`).",
            |c| &mut c.build_store,
        )
        .field(
            "finalExitWaitMs",
            "How long after `launch` reported a final status the API waits for the engine to see the build end before it stops it, ms.",
            |c| &mut c.final_exit_wait_ms,
        )
        .field(
            "leaseTtlMs",
            "With a shared store (PostgreSQL): how long a lease on a build lasts without renewal, ms; a dead instance's builds are adopted this long after its last renewal.",
            |c| &mut c.lease_ttl_ms,
        )
        .field(
            "leaseRenewMs",
            "With a shared store: how often an instance renews all its leases (one statement) and looks for builds to adopt, ms; at most half of `leaseTtlMs`.",
            |c| &mut c.lease_renew_ms,
        )
        .field(
            "preflight",
            "Refuse (422, with the findings) a build whose executor pre-flight fails; `false`: start it anyway.",
            |c| &mut c.preflight,
        )
        .timeout(|c| &mut c.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_table_matches_the_declarations() {
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        ApiConfig::options()
            .check_readme_file(&readme)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ApiConfig::options().undeclared_fields(),
            Vec::<String>::new(),
            "fields of ApiConfig no option key declares"
        );
    }

    #[test]
    fn validation_names_the_key_and_debug_hides_secrets() {
        let c = ApiConfig {
            user_token: Some(SecretString::from("hunter2")),
            ..ApiConfig::default()
        };
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("hunter2"));
        let bad = ApiConfig {
            public_uri: Some("ftp://x".into()),
            ..ApiConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .message()
                .starts_with("publicUri:")
        );
        let bad = ApiConfig {
            status_poll_ms: 0,
            ..ApiConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().kind(), ErrorKind::ConfigInvalid);
        let parsed: ApiConfig =
            serde_json::from_value(serde_json::json!({"statusPollMs": 50})).unwrap();
        assert_eq!(parsed.status_poll_ms, 50);
        assert_eq!(parsed.default_container, "busybox:latest");
    }
}
