//! Helpers shared by the integration tests: minting test JWTs with the fixture keys.
#![allow(dead_code)]

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};

/// A fixture file's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Now, seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs `claims` with RS256 and the fixture RSA key.
pub fn rs256(claims: &Value) -> String {
    executor_base::jwt::install_crypto_provider();
    let (_, pkcs8) = executor_base::jwt::pem::decode(&fixture("jwt_rsa_private.pem")).unwrap();
    let key = EncodingKey::from_rsa_der(&pkcs8);
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

/// Signs `claims` with ES256 and the fixture EC key.
pub fn es256(claims: &Value) -> String {
    executor_base::jwt::install_crypto_provider();
    let (_, pkcs8) = executor_base::jwt::pem::decode(&fixture("jwt_ec_private.pem")).unwrap();
    let key = EncodingKey::from_ec_der(&pkcs8);
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

/// Signs `claims` with HS256 and `secret`.
pub fn hs256(claims: &Value, secret: &[u8]) -> String {
    executor_base::jwt::install_crypto_provider();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Claims of a Screwdriver token for build 42 with `scope`, valid for `ttl_secs`.
pub fn claims(scope: &str, ttl_secs: i64) -> Value {
    json!({
        "username": "42", "scope": [scope], "jobId": 7, "pipelineId": 3, "eventId": 9,
        "isPR": false, "scmContext": "github:github.com", "exp": now() + ttl_secs, "iat": now()
    })
}

/// A temporary (`temporal` scope) token for build 42, valid for an hour.
pub fn temporal_token() -> String {
    rs256(&claims("temporal", 3600))
}

/// A build (`build` scope) token for build 42, valid for two hours.
pub fn build_token() -> String {
    rs256(&claims("build", 7200))
}

/// Wraps a string as a secret.
pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}
