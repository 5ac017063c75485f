//! Build JWT claims: who the token speaks for, what it may do, and when it expires.
//!
//! Screwdriver's API signs build tokens with RS256 (`screwdriver.md` §9.2): `username` is
//! the build id, `scope` an array (`["temporal"]` for the token handed to `start`,
//! `["build"]` after the exchange), plus `jobId`, `pipelineId`, `eventId`, `isPR`, ... at
//! top level. A backend reads [`BuildClaims`] to set the engine-side deadline from `exp`
//! and to refuse a token that is already expired; with a configured public key
//! ([`JwtVerifier`]) the signature is verified too.
//!
//! `jsonwebtoken` was chosen because it is the de-facto JWT crate, supports RS256/ES256
//! and has an explicit "insecure decode" for reading claims without a key. Public keys in
//! PEM are read by [`pem`] (not jsonwebtoken's `use_pem` feature, whose ASN.1 parser costs
//! more to compile than the whole walk to a key).
//! Its cryptography comes from a process-wide provider; this module installs
//! [`RING_PROVIDER`] (ring, the workspace's one crypto library: see `crate::tls`) before
//! the first verification.
//!
//! Errors never contain the token or any part of it: `jsonwebtoken`'s messages are
//! replaced by fixed ones per error kind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Once;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub mod pem;
mod ring_provider;

pub use ring_provider::RING_PROVIDER;

use crate::error::{Error, ErrorKind};
use crate::ids::{BuildId, EventId, JobId, PipelineId};

/// The scope of the temporary token `start` receives (exchanged for a build token).
pub const SCOPE_TEMPORAL: &str = "temporal";
/// The scope of an exchanged build token.
pub const SCOPE_BUILD: &str = "build";

/// The claims of a Screwdriver build token (or the temporary token it is exchanged from).
///
/// Every claim is optional on read, so tokens from other issuers still decode; unknown
/// claims are kept in `extra`. Ids accept JSON numbers and numeric strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildClaims {
    /// `exp`: expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// `iat`: issue time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// `username`: for build tokens, the build id.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub username: Option<String>,
    /// `buildId`, when the issuer sets it explicitly.
    #[serde(
        default,
        deserialize_with = "lenient_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_id: Option<u64>,
    /// `scope`: an array of scopes (a single string is accepted too).
    #[serde(default, deserialize_with = "scopes")]
    pub scope: Vec<String>,
    /// `jobId`.
    #[serde(
        default,
        deserialize_with = "lenient_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_id: Option<u64>,
    /// `pipelineId`.
    #[serde(
        default,
        deserialize_with = "lenient_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub pipeline_id: Option<u64>,
    /// `eventId`.
    #[serde(
        default,
        deserialize_with = "lenient_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub event_id: Option<u64>,
    /// `configPipelineId` (child pipelines).
    #[serde(
        default,
        deserialize_with = "lenient_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub config_pipeline_id: Option<u64>,
    /// `prParentJobId` (PR builds).
    #[serde(
        default,
        deserialize_with = "lenient_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub pr_parent_job_id: Option<u64>,
    /// `isPR`.
    #[serde(default, rename = "isPR", skip_serializing_if = "Option::is_none")]
    pub is_pr: Option<bool>,
    /// `scmContext`, e.g. `github:github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm_context: Option<String>,
    /// `jti`: the token's unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Every other claim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl BuildClaims {
    /// Whether `scope` contains `name` (e.g. [`SCOPE_TEMPORAL`]).
    pub fn has_scope(&self, name: &str) -> bool {
        self.scope.iter().any(|s| s == name)
    }

    /// When the token expires; `None` when it has no (representable) `exp`.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.exp.and_then(|s| DateTime::from_timestamp(s, 0))
    }

    /// Whether the token is expired at `now` (a token without `exp` never expires).
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.exp.is_some_and(|exp| exp <= now.timestamp())
    }

    /// How long the token is still valid at `now`: `None` without `exp`, zero if expired.
    pub fn remaining_at(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.exp.map(|exp| {
            Duration::from_secs(u64::try_from(exp.saturating_sub(now.timestamp())).unwrap_or(0))
        })
    }

    /// The build this token speaks for: `buildId`, else a numeric `username`.
    pub fn build(&self) -> Option<BuildId> {
        self.build_id
            .or_else(|| self.username.as_deref().and_then(|u| u.parse().ok()))
            .and_then(BuildId::new)
    }

    /// The `jobId` claim as a typed id.
    pub fn job(&self) -> Option<JobId> {
        self.job_id.and_then(JobId::new)
    }

    /// The `pipelineId` claim as a typed id.
    pub fn pipeline(&self) -> Option<PipelineId> {
        self.pipeline_id.and_then(PipelineId::new)
    }

    /// The `eventId` claim as a typed id.
    pub fn event(&self) -> Option<EventId> {
        self.event_id.and_then(EventId::new)
    }

    fn refuse_if_expired(self, leeway_secs: u64) -> Result<Self, Error> {
        let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
        if self
            .exp
            .is_some_and(|exp| exp.saturating_add(leeway) <= Utc::now().timestamp())
        {
            Err(expired())
        } else {
            Ok(self)
        }
    }
}

fn expired() -> Error {
    Error::new(ErrorKind::TokenRejected, "token is expired")
}

/// Reads the claims WITHOUT verifying the signature, refusing an expired token.
///
/// Use this only to read what a token says about itself (its scope, build, deadline);
/// the API server is what trusts or refuses it. Errors are [`ErrorKind::TokenRejected`].
pub fn decode_unverified(token: &SecretString) -> Result<BuildClaims, Error> {
    peek(token)?.refuse_if_expired(0)
}

/// Reads the claims without verifying the signature and without the expiry check.
pub(crate) fn peek(token: &SecretString) -> Result<BuildClaims, Error> {
    jsonwebtoken::dangerous::insecure_decode::<BuildClaims>(token.expose_secret().as_bytes())
        .map(|data| data.claims)
        .map_err(map_jwt_error)
}

/// Verifies the token's signature with `verifier` and returns its claims.
///
/// Refuses a token that is expired, lacks `exp`, is signed with an algorithm the verifier
/// does not allow, or whose signature does not match (all [`ErrorKind::TokenRejected`]).
pub fn verify(token: &SecretString, verifier: &JwtVerifier) -> Result<BuildClaims, Error> {
    install_crypto_provider();
    jsonwebtoken::decode::<BuildClaims>(
        token.expose_secret().as_bytes(),
        &verifier.key,
        &verifier.validation,
    )
    .map(|data| data.claims)
    .map_err(map_jwt_error)?
    .refuse_if_expired(verifier.validation.leeway)
}

/// A public key and the algorithms it may verify.
///
/// ```no_run
/// use executor_base::jwt::JwtVerifier;
/// let pem = std::fs::read("/etc/sd/jwt.pub").unwrap();
/// let v = JwtVerifier::from_rsa_pem(&pem).unwrap();
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("leeway_secs", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// An RSA public key in PEM (`BEGIN PUBLIC KEY`, `BEGIN RSA PUBLIC KEY` or the key of a
    /// `BEGIN CERTIFICATE`), allowing
    /// RS256 (Screwdriver's algorithm), RS384 and RS512.
    pub fn from_rsa_pem(pem: &[u8]) -> Result<Self, Error> {
        let key = pem::public_key(pem, pem::KeyFamily::Rsa)
            .map(|der| DecodingKey::from_rsa_der(&der))
            .ok_or_else(|| bad_key("an RSA public key in PEM"))?;
        Ok(Self::new(
            key,
            &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ))
    }

    /// An EC public key in PEM (P-256 or P-384; `BEGIN PUBLIC KEY` or the key of a
    /// `BEGIN CERTIFICATE`), allowing ES256 and ES384.
    pub fn from_ec_pem(pem: &[u8]) -> Result<Self, Error> {
        let key = pem::public_key(pem, pem::KeyFamily::Ec)
            .map(|point| DecodingKey::from_ec_der(&point))
            .ok_or_else(|| bad_key("an EC public key in PEM"))?;
        Ok(Self::new(key, &[Algorithm::ES256, Algorithm::ES384]))
    }

    /// A PEM public key of either family: tries RSA, then EC.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        Self::from_rsa_pem(pem)
            .or_else(|_| Self::from_ec_pem(pem))
            .map_err(|_| bad_key("an RSA or EC public key in PEM"))
    }

    fn new(key: DecodingKey, algorithms: &[Algorithm]) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        // "Already expired" means expired now, not a minute ago.
        validation.leeway = 0;
        // Build tokens carry no audience.
        validation.validate_aud = false;
        Self { key, validation }
    }

    /// Tolerates clock skew: an `exp` up to `leeway` in the past is still accepted.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// Restricts the accepted algorithms (each must match the key's family).
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.validation.algorithms = algorithms.to_vec();
        self
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.validation.algorithms
    }
}

/// Re-exported so callers can name algorithms without depending on `jsonwebtoken`.
pub use jsonwebtoken::Algorithm as JwtAlgorithm;

fn bad_key(expected: &str) -> Error {
    Error::new(
        ErrorKind::ConfigInvalid,
        format!("JWT public key: must be {expected}"),
    )
}

/// Installs [`RING_PROVIDER`] as `jsonwebtoken`'s crypto provider for this process, once.
///
/// [`verify`] calls it; call it yourself before using `jsonwebtoken` directly (e.g. to
/// sign test tokens). A provider the application installed earlier wins.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = RING_PROVIDER.install_default();
    });
}

/// Maps `jsonwebtoken` errors to fixed messages that cannot carry token material.
fn map_jwt_error(e: jsonwebtoken::errors::Error) -> Error {
    let message = match e.kind() {
        JwtErrorKind::ExpiredSignature => return expired(),
        JwtErrorKind::InvalidSignature => "signature does not verify".to_string(),
        JwtErrorKind::InvalidAlgorithm => "token algorithm is not allowed for this key".to_string(),
        JwtErrorKind::MissingRequiredClaim(c) => format!("token lacks the {c:?} claim"),
        JwtErrorKind::InvalidClaimFormat(c) => format!("token claim {c:?} has an invalid format"),
        JwtErrorKind::ImmatureSignature => "token is not valid yet".to_string(),
        JwtErrorKind::Json(_) => {
            "token claims are not valid JSON of the expected shape".to_string()
        }
        JwtErrorKind::InvalidToken | JwtErrorKind::Base64(_) | JwtErrorKind::Utf8(_) => {
            "token is not a well-formed JWT".to_string()
        }
        JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidKeyFormat => {
            "token does not match the configured key type".to_string()
        }
        other => format!("token refused ({})", jwt_kind_name(other)),
    };
    Error::new(ErrorKind::TokenRejected, message)
}

/// A name for the remaining kinds, without their payloads.
fn jwt_kind_name(kind: &JwtErrorKind) -> &'static str {
    match kind {
        JwtErrorKind::UnsupportedAlgorithm => "unsupported algorithm",
        JwtErrorKind::MissingAlgorithm => "no algorithm allowed",
        JwtErrorKind::InvalidIssuer => "invalid issuer",
        JwtErrorKind::InvalidAudience => "invalid audience",
        JwtErrorKind::InvalidSubject => "invalid subject",
        _ => "verification failed",
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Null) | None => None,
        Some(_) => return Err(serde::de::Error::custom("expected a string or a number")),
    })
}

fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer id"))?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse()
                .map_err(|_| serde::de::Error::custom("expected a numeric id"))?,
        ),
        Some(Value::Null) | None => None,
        Some(_) => return Err(serde::de::Error::custom("expected an id")),
    })
}

fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(serde::de::Error::custom("expected an array of scopes")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned(claims: Value) -> SecretString {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
        SecretString::from(format!("{header}.{payload}.c2lnbmF0dXJl"))
    }

    #[test]
    fn reads_screwdriver_claims_leniently() {
        let exp = Utc::now().timestamp() + 3600;
        let t = unsigned(serde_json::json!({
            "username": 42, "scope": ["temporal"], "jobId": "7", "pipelineId": 3, "eventId": 9,
            "isPR": false, "scmContext": "github:github.com", "exp": exp, "jti": "abc", "environment": "beta"
        }));
        let c = decode_unverified(&t).unwrap();
        assert_eq!(c.build().unwrap().get(), 42);
        assert_eq!(c.job().unwrap().get(), 7);
        assert_eq!(c.pipeline().unwrap().get(), 3);
        assert_eq!(c.event().unwrap().get(), 9);
        assert_eq!(c.is_pr, Some(false));
        assert!(c.has_scope(SCOPE_TEMPORAL) && !c.has_scope(SCOPE_BUILD));
        assert_eq!(c.expires_at().unwrap().timestamp(), exp);
        assert_eq!(c.extra["environment"], "beta");
        let left = c.remaining_at(Utc::now()).unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3000));
    }

    #[test]
    fn scope_may_be_a_string() {
        let c = peek(&unsigned(serde_json::json!({"scope": "build user"}))).unwrap();
        assert_eq!(c.scope, ["build", "user"]);
        assert_eq!(c.exp, None);
        assert!(!c.is_expired_at(Utc::now()));
        assert_eq!(c.remaining_at(Utc::now()), None);
    }

    #[test]
    fn expired_tokens_are_refused_without_echoing_them() {
        let t = unsigned(serde_json::json!({"username": "42", "exp": Utc::now().timestamp() - 1}));
        let e = decode_unverified(&t).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TokenRejected);
        assert_eq!(e.message(), "token is expired");
        let c = peek(&t).unwrap();
        assert_eq!(c.remaining_at(Utc::now()), Some(Duration::ZERO));
    }

    #[test]
    fn garbage_is_not_a_jwt() {
        for s in ["opaque-token", "a.b", "a.b.c", "...."] {
            let e = decode_unverified(&SecretString::from(s)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::TokenRejected, "{s}");
            assert!(!e.to_string().contains(s), "{e}");
        }
    }

    #[test]
    fn ill_typed_claims_are_refused() {
        let e = peek(&unsigned(serde_json::json!({"jobId": [1]}))).unwrap_err();
        assert_eq!(
            e.message(),
            "token claims are not valid JSON of the expected shape"
        );
        let e = peek(&unsigned(serde_json::json!({"username": true}))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TokenRejected);
    }

    #[test]
    fn bad_keys_are_config_errors() {
        let e = JwtVerifier::from_pem(b"not a key").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        assert!(e.to_string().contains("JWT public key"));
    }
}
