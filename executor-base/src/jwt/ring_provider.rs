//! A `jsonwebtoken` crypto provider over `ring`, the workspace's one crypto library
//! (see the `tls` module for why `ring`): jsonwebtoken 10+ ships providers for aws-lc-rs and
//! RustCrypto only, and takes any other through its `CryptoProvider` API.
//!
//! Every algorithm jsonwebtoken names is covered: HS256/384/512 (`ring::hmac`),
//! ES256/384 (fixed-length ECDSA), RS256/384/512 (PKCS#1 v1.5), PS256/384/512 (PSS) and
//! EdDSA (Ed25519), for signing and verification. Of the JWK helpers, the RSA modulus of
//! a bare public key is not offered by `ring` and is refused with an error.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use ring::{digest, hmac};

/// The provider; [`super::install_crypto_provider`] installs it process-wide.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: |_| {
            Err(new_error(ErrorKind::InvalidRsaKey(
                "ring cannot read the components of a bare RSA public key".into(),
            )))
        },
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_public_key,
        compute_digest,
    },
};

fn hmac_alg(a: Algorithm) -> hmac::Algorithm {
    match a {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

fn ecdsa_signing(a: Algorithm) -> &'static sig::EcdsaSigningAlgorithm {
    match a {
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
    }
}

fn rsa_padding(a: Algorithm) -> &'static dyn sig::RsaEncoding {
    match a {
        Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_SHA512,
        _ => &sig::RSA_PKCS1_SHA256,
    }
}

fn rsa_params(a: Algorithm) -> &'static sig::RsaParameters {
    match a {
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn verification(a: Algorithm) -> &'static dyn sig::VerificationAlgorithm {
    match a {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        rsa => rsa_params(rsa),
    }
}

enum SigningKey {
    Hmac(hmac::Key),
    Ecdsa(sig::EcdsaKeyPair),
    Rsa(sig::RsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

struct RingSigner {
    algorithm: Algorithm,
    key: SigningKey,
}

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Hmac(k) => Ok(hmac::sign(k, msg).as_ref().to_vec()),
            SigningKey::Ecdsa(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(rsa_padding(self.algorithm), &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SigningKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let a = *algorithm;
    if key.family() != a.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    let der = key.as_bytes();
    let key = match a.family() {
        AlgorithmFamily::Hmac => SigningKey::Hmac(hmac::Key::new(hmac_alg(a), der)),
        AlgorithmFamily::Ec => SigningKey::Ecdsa(
            sig::EcdsaKeyPair::from_pkcs8(ecdsa_signing(a), der, &SystemRandom::new())
                .map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))?,
        ),
        AlgorithmFamily::Rsa => SigningKey::Rsa(
            sig::RsaKeyPair::from_der(der)
                .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
                .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))?,
        ),
        AlgorithmFamily::Ed => SigningKey::Ed25519(
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?,
        ),
    };
    Ok(Box::new(RingSigner { algorithm: a, key }))
}

enum VerifyingKey {
    Hmac(hmac::Key),
    Der(Vec<u8>),
    RsaComponents { n: Vec<u8>, e: Vec<u8> },
}

struct RingVerifier {
    algorithm: Algorithm,
    key: VerifyingKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let ok =
            match &self.key {
                VerifyingKey::Hmac(k) => hmac::verify(k, msg, signature),
                VerifyingKey::Der(der) => {
                    sig::UnparsedPublicKey::new(verification(self.algorithm), der)
                        .verify(msg, signature)
                }
                VerifyingKey::RsaComponents { n, e } => sig::RsaPublicKeyComponents { n, e }
                    .verify(rsa_params(self.algorithm), msg, signature),
            };
        ok.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let a = *algorithm;
    if key.family() != a.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    let key = match (a.family(), key.kind()) {
        (AlgorithmFamily::Hmac, _) => {
            VerifyingKey::Hmac(hmac::Key::new(hmac_alg(a), key.try_get_as_bytes()?))
        }
        (AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            VerifyingKey::RsaComponents {
                n: n.clone(),
                e: e.clone(),
            }
        }
        (_, _) => VerifyingKey::Der(key.try_get_as_bytes()?.to_vec()),
    };
    Ok(Box::new(RingVerifier { algorithm: a, key }))
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = sig::RsaKeyPair::from_der(der)
        .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
        .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))?;
    let public = pair.public();
    let components: sig::RsaPublicKeyComponents<Vec<u8>> = public.into();
    Ok((components.n, components.e))
}

fn ec_components_from_private_key(
    der: &[u8],
    a: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (curve, half) = match a {
        Algorithm::ES256 => (EllipticCurve::P256, 32),
        Algorithm::ES384 => (EllipticCurve::P384, 48),
        _ => return Err(new_error(ErrorKind::InvalidEcdsaKey)),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(ecdsa_signing(a), der, &SystemRandom::new())
        .map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))?;
    let point = pair.public_key().as_ref();
    match point.split_first() {
        Some((4, xy)) if xy.len() == 2 * half => {
            let (x, y) = xy.split_at(half);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(new_error(ErrorKind::InvalidEcdsaKey)),
    }
}

fn ed_public_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => Ok(sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?
            .public_key()
            .as_ref()
            .to_vec()),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(new_error(ErrorKind::InvalidAlgorithm)),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Header, Validation, decode, encode};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    use super::*;

    fn round_trip(a: Algorithm, enc: &EncodingKey, dec: &DecodingKey) {
        super::super::install_crypto_provider();
        let claims = serde_json::json!({"sub": "42", "exp": 4_102_444_800u64});
        let t = encode(&Header::new(a), &claims, enc).unwrap();
        let back = decode::<serde_json::Value>(&t, dec, &Validation::new(a)).unwrap();
        assert_eq!(back.claims["sub"], "42", "{a:?}");
        let mut forged = t.clone();
        forged.push('A');
        assert!(
            decode::<serde_json::Value>(&forged, dec, &Validation::new(a)).is_err(),
            "{a:?}"
        );
    }

    #[test]
    fn hmac_ecdsa_and_eddsa_sign_and_verify() {
        for a in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            round_trip(
                a,
                &EncodingKey::from_secret(b"k"),
                &DecodingKey::from_secret(b"k"),
            );
        }
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        round_trip(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(pkcs8.as_ref()),
            &DecodingKey::from_ec_der(pair.public_key().as_ref()),
        );
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_pair = Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
        round_trip(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(ed.as_ref()),
            &DecodingKey::from_ed_der(ed_pair.public_key().as_ref()),
        );
    }
}
