//! Signing and verifying the API's JWTs (ES256).
//!
//! The reference API signs with an ECDSA P-256 key (`ES256`): generated at start unless a
//! PKCS#8 PEM key is configured (so tokens survive a restart). The public key is published
//! at `GET /v4/auth/key` (`{"key": "<PEM>"}`, Screwdriver's endpoint) and by
//! [`TokenIssuer::public_key_pem`], so executors can verify the tokens they are given.
//! An asymmetric key was chosen over an HMAC secret because a verifier then needs no
//! secret.

use std::fmt;

use executor_base::jwt::pem;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Deserializer, Serialize};

/// Scope of a temporary token, exchanged by `launch` for a build token.
pub const SCOPE_TEMPORAL: &str = "temporal";
/// Scope of a build token.
pub const SCOPE_BUILD: &str = "build";
/// Scope of a user token.
pub const SCOPE_USER: &str = "user";
/// Scope added to an administrator's user token.
pub const SCOPE_ADMIN: &str = "admin";

/// The claims of the API's tokens (Screwdriver's profile: `username`, `scope`, build
/// metadata at the top level).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The build id for build and temporal tokens; a user name otherwise. Accepted as a
    /// string or a number.
    #[serde(deserialize_with = "string_or_number")]
    pub username: String,
    /// `temporal`, `build`, `user`, `admin`.
    pub scope: Vec<String>,
    /// The build id (build and temporal tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<u64>,
    /// The job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
    /// The event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
    /// The pipeline id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<u64>,
    /// Whether the build is for a pull request.
    #[serde(rename = "isPR", default)]
    pub is_pr: bool,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// A random token id.
    pub jti: String,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom(
            "username: must be a string or a number",
        )),
    }
}

impl Claims {
    /// Claims for build `build_id` with `scope`, valid for `minutes` from now.
    pub fn for_build(build_id: u64, scope: &str, minutes: i64) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self {
            username: build_id.to_string(),
            scope: vec![scope.to_string()],
            build_id: Some(build_id),
            job_id: None,
            event_id: None,
            pipeline_id: None,
            is_pr: false,
            exp: u64::try_from(now + minutes * 60).unwrap_or(0),
            iat: u64::try_from(now).unwrap_or(0),
            jti: random_id(),
        }
    }

    /// Whether the token has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.iter().any(|s| s == scope)
    }
}

/// 128 random bits as hex (token ids, generated user tokens).
///
/// From the operating system's generator (ring's `SystemRandom`): these ids are secrets.
pub fn random_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bits = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bits)
        .expect("the operating system's random generator failed");
    format!("{:032x}", u128::from_be_bytes(bits))
}

/// Why a token was refused (never contains the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRefused(pub String);

impl fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenRefused {}

/// Signs and verifies the API's ES256 JWTs.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_pem: String,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("algorithm", &"ES256")
            .finish_non_exhaustive()
    }
}

/// The DER of a P-256 `SubjectPublicKeyInfo` up to its point: SEQUENCE { SEQUENCE {
/// id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes: 0, then the uncompressed point) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl TokenIssuer {
    /// A new issuer with a freshly generated P-256 key.
    pub fn generate() -> Result<Self, String> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "cannot generate a P-256 key".to_string())?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// A freshly generated P-256 private key as PKCS#8 PEM, to keep in the build store
    /// (so tokens stay valid across restarts) and load with [`TokenIssuer::from_pkcs8_pem`].
    pub fn generate_pkcs8_pem() -> Result<String, String> {
        executor_base::jwt::install_crypto_provider();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "cannot generate a P-256 key".to_string())?;
        Ok(pem::encode("PRIVATE KEY", doc.as_ref()))
    }

    /// An issuer from an EC P-256 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<Self, String> {
        let (_, der) = pem::decode(pem_text.as_bytes())
            .ok_or_else(|| "jwtPrivateKey: not a PEM document".to_string())?;
        Self::from_pkcs8_der(&der)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        executor_base::jwt::install_crypto_provider();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| format!("jwtPrivateKey: not an EC P-256 PKCS#8 key ({e})"))?;
        let point = pair.public_key().as_ref();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        Ok(Self {
            encoding: EncodingKey::from_ec_der(der),
            decoding: DecodingKey::from_ec_der(point),
            public_pem: pem::encode("PUBLIC KEY", &spki),
        })
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), for verifiers.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// The key that verifies this issuer's tokens (`jsonwebtoken`, algorithm ES256).
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| format!("cannot sign a token: {e}"))
    }

    /// Verifies the signature and expiry of `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenRefused> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_required_spec_claims(&["exp"]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    TokenRefused("token expired".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    TokenRefused("invalid token signature".into())
                }
                _ => TokenRefused("invalid token".into()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let issuer = TokenIssuer::generate().unwrap();
        let mut c = Claims::for_build(42, SCOPE_TEMPORAL, 10);
        c.job_id = Some(7);
        let t = issuer.mint(&c).unwrap();
        let got = issuer.verify(&t).unwrap();
        assert_eq!(got, c);
        assert!(got.has_scope("temporal") && !got.has_scope("build"));

        let expired = issuer
            .mint(&Claims::for_build(42, SCOPE_TEMPORAL, -10))
            .unwrap();
        assert_eq!(issuer.verify(&expired).unwrap_err().0, "token expired");
        let other = TokenIssuer::generate().unwrap();
        assert_eq!(other.verify(&t).unwrap_err().0, "invalid token signature");
        assert_eq!(issuer.verify("garbage").unwrap_err().0, "invalid token");
        assert!(!format!("{issuer:?}").contains("BEGIN"));
    }

    #[test]
    fn published_key_verifies_and_configured_key_is_stable() {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let private_pem = pem::encode("PRIVATE KEY", doc.as_ref());
        let a = TokenIssuer::from_pkcs8_pem(&private_pem).unwrap();
        let b = TokenIssuer::from_pkcs8_pem(&private_pem).unwrap();
        assert_eq!(a.public_key_pem(), b.public_key_pem());
        assert!(
            a.public_key_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        let t = a.mint(&Claims::for_build(1, SCOPE_BUILD, 5)).unwrap();
        let point = pem::public_key(a.public_key_pem().as_bytes(), pem::KeyFamily::Ec).unwrap();
        let key = DecodingKey::from_ec_der(&point);
        let claims = jsonwebtoken::decode::<Claims>(&t, &key, &Validation::new(Algorithm::ES256))
            .unwrap()
            .claims;
        assert_eq!(claims.username, "1");
        assert!(TokenIssuer::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nnope\n").is_err());
    }

    #[test]
    fn username_may_be_a_number() {
        let c: Claims = serde_json::from_value(
            serde_json::json!({"username": 42, "scope": ["build"], "exp": 1, "iat": 0, "jti": "x"}),
        )
        .unwrap();
        assert_eq!(c.username, "42");
    }
}
