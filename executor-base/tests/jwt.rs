//! Build JWT claims: decoding, expiry, signature verification with a public key.

mod common;

use common::*;
use executor_base::ErrorKind;
use executor_base::jwt::{self, JwtAlgorithm, JwtVerifier, SCOPE_BUILD};
use serde_json::json;

fn rsa_verifier() -> JwtVerifier {
    JwtVerifier::from_rsa_pem(&fixture("jwt_rsa_public.pem")).unwrap()
}

#[test]
fn verified_claims_carry_the_build_identity() {
    let token = secret(&build_token());
    let c = jwt::verify(&token, &rsa_verifier()).unwrap();
    assert_eq!(c.build().unwrap().get(), 42);
    assert_eq!(c.job().unwrap().get(), 7);
    assert_eq!(c.pipeline().unwrap().get(), 3);
    assert_eq!(c.event().unwrap().get(), 9);
    assert_eq!(c.is_pr, Some(false));
    assert!(c.has_scope(SCOPE_BUILD));
    assert!(c.expires_at().unwrap() > chrono::Utc::now());
    assert_eq!(c, jwt::decode_unverified(&token).unwrap());
}

#[test]
fn expired_tokens_are_refused_on_both_paths() {
    let token = secret(&rs256(&claims("build", -5)));
    for e in [
        jwt::decode_unverified(&token).unwrap_err(),
        jwt::verify(&token, &rsa_verifier()).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::TokenRejected);
        assert_eq!(e.message(), "token is expired");
    }
    // Leeway tolerates small clock skew when asked for.
    let lenient = rsa_verifier().with_leeway(std::time::Duration::from_secs(60));
    assert!(jwt::verify(&token, &lenient).is_ok());
}

#[test]
fn a_signature_from_another_key_is_refused() {
    let other = JwtVerifier::from_rsa_pem(&fixture("other_rsa_public.pem")).unwrap();
    let e = jwt::verify(&secret(&build_token()), &other).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TokenRejected);
    assert_eq!(e.message(), "signature does not verify");
}

#[test]
fn a_tampered_payload_is_refused() {
    let t = build_token();
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        b64.encode(serde_json::to_vec(&claims("admin", 7200)).unwrap())
    };
    parts[1] = &forged;
    let e = jwt::verify(&secret(&parts.join(".")), &rsa_verifier()).unwrap_err();
    assert_eq!(e.message(), "signature does not verify");
}

#[test]
fn ec_keys_verify_es256() {
    let v = JwtVerifier::from_pem(&fixture("jwt_ec_public.pem")).unwrap();
    assert_eq!(v.algorithms(), [JwtAlgorithm::ES256, JwtAlgorithm::ES384]);
    let c = jwt::verify(&secret(&es256(&claims("build", 60))), &v).unwrap();
    assert_eq!(c.build().unwrap().get(), 42);
    // An RS256 token does not verify against the EC key.
    assert_eq!(
        jwt::verify(&secret(&build_token()), &v).unwrap_err().kind(),
        ErrorKind::TokenRejected
    );
}

/// The three PEM forms a Screwdriver operator may hold besides `PUBLIC KEY`: a PKCS#1
/// `RSA PUBLIC KEY` and the key of a self-signed `CERTIFICATE` (RSA and EC), all made
/// with `openssl` from the fixture keys.
#[test]
fn pkcs1_keys_and_certificates_verify_as_their_public_keys_do() {
    let rs = secret(&build_token());
    let es = secret(&es256(&claims("build", 60)));
    for (file, token, other) in [
        ("jwt_rsa_public_pkcs1.pem", &rs, &es),
        ("jwt_rsa_cert.pem", &rs, &es),
        ("jwt_ec_cert.pem", &es, &rs),
    ] {
        let v = JwtVerifier::from_pem(&fixture(file)).unwrap();
        assert_eq!(
            jwt::verify(token, &v).unwrap().build().unwrap().get(),
            42,
            "{file}"
        );
        assert_eq!(
            jwt::verify(other, &v).unwrap_err().kind(),
            ErrorKind::TokenRejected,
            "{file}"
        );
    }
    // The family is read from the key, not guessed: an EC certificate is no RSA key.
    let e = JwtVerifier::from_rsa_pem(&fixture("jwt_ec_cert.pem")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    let e = JwtVerifier::from_ec_pem(&fixture("jwt_rsa_public_pkcs1.pem")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
}

#[test]
fn algorithms_outside_the_allowed_set_are_refused() {
    let e = jwt::verify(
        &secret(&hs256(&claims("build", 60), b"shared")),
        &rsa_verifier(),
    )
    .unwrap_err();
    assert_eq!(e.message(), "token algorithm is not allowed for this key");
    let only_rs512 = rsa_verifier().with_algorithms(&[JwtAlgorithm::RS512]);
    assert!(jwt::verify(&secret(&build_token()), &only_rs512).is_err());
}

#[test]
fn verification_requires_exp() {
    let token = secret(&rs256(&json!({"username": "42", "scope": ["build"]})));
    let e = jwt::verify(&token, &rsa_verifier()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TokenRejected);
    assert!(e.message().contains("exp"), "{e}");
    // Reading without verification accepts a token that never expires.
    assert_eq!(jwt::decode_unverified(&token).unwrap().exp, None);
}

#[test]
fn verifier_debug_shows_no_key_material() {
    let s = format!("{:?}", rsa_verifier());
    assert!(s.contains("RS256") && !s.contains("MII"), "{s}");
}
