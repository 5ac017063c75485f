//! PEM armour and the public key inside it, without jsonwebtoken's `use_pem` feature.
//!
//! jsonwebtoken reads PEM through `simple_asn1`, which brings the `time` and `num-bigint`
//! crates (about 5 s of a cold build of `sdx`) for what, for a public key, is one walk down
//! a DER tree to its first BIT STRING. This module does that walk and nothing more: it
//! never interprets the key itself, so a malformed key inside well-formed armour is still
//! refused by ring when it verifies a signature.
//!
//! Accepted, as jsonwebtoken's `from_*_pem` accept them: `PUBLIC KEY` (SubjectPublicKeyInfo),
//! `CERTIFICATE` (its subject's key) and, for RSA, `RSA PUBLIC KEY` (PKCS#1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The key families a [`super::JwtVerifier`] verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// RSA (RS256/RS384/RS512): the key is a PKCS#1 `RSAPublicKey`.
    Rsa,
    /// Elliptic curve (ES256/ES384): the key is the uncompressed point.
    Ec,
}

/// `der` in PEM armour with `label`, 64 base64 characters a line.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The label and the DER bytes of the first PEM section in `text`, or `None` when there
/// is no complete section or its body is not base64.
pub fn decode(text: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(text).ok()?;
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    let body_and_end = &rest[label_end + "-----".len()..];
    let end = body_and_end.find(&format!("-----END {label}-----"))?;
    let body: String = body_and_end[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD.decode(body).ok()?;
    Some((label.to_string(), der))
}

/// The public key of `family` in the PEM `text`, in the form jsonwebtoken's
/// `DecodingKey::from_rsa_der` / `from_ec_der` take; `None` when `text` holds no such key.
pub fn public_key(text: &[u8], family: KeyFamily) -> Option<Vec<u8>> {
    let (label, der) = decode(text)?;
    match label.as_str() {
        "RSA PUBLIC KEY" if family == KeyFamily::Rsa => Some(der),
        "PUBLIC KEY" | "CERTIFICATE" => {
            let mut found = Found::default();
            walk(&der, 0, &mut found)?;
            (found.family? == family).then_some(found.key?.to_vec())
        }
        _ => None,
    }
}

/// What the walk has met so far: the first key algorithm and the first BIT STRING.
#[derive(Default)]
struct Found<'a> {
    family: Option<KeyFamily>,
    key: Option<&'a [u8]>,
}

/// rsaEncryption (1.2.840.113549.1.1.1), as the content octets of its OID.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// Deeper than any key or certificate nests; bounds the recursion on hostile input.
const MAX_DEPTH: usize = 16;

/// Walks the DER elements in `der` depth-first, filling `found`; `None` on malformed DER.
fn walk<'a>(mut der: &'a [u8], depth: usize, found: &mut Found<'a>) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    while !der.is_empty() {
        let (tag, content, rest) = element(der)?;
        match tag {
            // OBJECT IDENTIFIER
            0x06 if found.family.is_none() => {
                found.family = match content {
                    RSA_ENCRYPTION => Some(KeyFamily::Rsa),
                    EC_PUBLIC_KEY => Some(KeyFamily::Ec),
                    _ => None,
                };
            }
            // BIT STRING: its first octet counts the unused bits, 0 for a key.
            0x03 if found.key.is_none() => {
                let (&unused, key) = content.split_first()?;
                if unused != 0 {
                    return None;
                }
                found.key = Some(key);
            }
            // SEQUENCE: look inside (as jsonwebtoken does: not into SETs or explicit
            // tags, so a certificate's names and extensions are passed over).
            0x30 => walk(content, depth + 1, found)?,
            _ => {}
        }
        if found.key.is_some() && found.family.is_some() {
            return Some(());
        }
        der = rest;
    }
    Some(())
}

/// One DER element at the start of `der`: its tag, its content and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    if tag & 0x1f == 0x1f {
        // High-tag-number form: never used by keys or certificates.
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (len_octets, after) = rest.split_at(octets);
        rest = after;
        len_octets
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, after) = rest.split_at(len);
    Some((tag, content, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 SubjectPublicKeyInfo prefix; the point (65 octets) follows.
    const P256_SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];

    fn p256_spki(point: &[u8; 65]) -> Vec<u8> {
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(point);
        spki
    }

    #[test]
    fn encode_and_decode_are_inverse() {
        let der: Vec<u8> = (0..=255).collect();
        let text = encode("PUBLIC KEY", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(decode(text.as_bytes()), Some(("PUBLIC KEY".into(), der)));
    }

    #[test]
    fn an_ec_point_comes_out_of_its_spki_and_is_not_an_rsa_key() {
        let mut point = [7u8; 65];
        point[0] = 4;
        let text = encode("PUBLIC KEY", &p256_spki(&point));
        let with_noise = format!("a comment\r\n{}\n", text.replace('\n', "\r\n"));
        assert_eq!(
            public_key(with_noise.as_bytes(), KeyFamily::Ec),
            Some(point.to_vec())
        );
        assert_eq!(public_key(text.as_bytes(), KeyFamily::Rsa), None);
    }

    #[test]
    fn pkcs1_rsa_is_taken_as_it_is_for_rsa_only() {
        let text = encode("RSA PUBLIC KEY", &[0x30, 0x03, 0x02, 0x01, 0x03]);
        assert_eq!(
            public_key(text.as_bytes(), KeyFamily::Rsa),
            Some(vec![0x30, 0x03, 0x02, 0x01, 0x03])
        );
        assert_eq!(public_key(text.as_bytes(), KeyFamily::Ec), None);
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        let mut point = [1u8; 65];
        point[0] = 4;
        let spki = p256_spki(&point);
        for cut in 0..spki.len() {
            let text = encode("PUBLIC KEY", &spki[..cut]);
            assert_eq!(
                public_key(text.as_bytes(), KeyFamily::Ec),
                None,
                "cut at {cut}"
            );
        }
        let mut nested = vec![0x30, 0x02, 0x30, 0x00];
        for _ in 0..40 {
            let mut outer = vec![0x30, nested.len() as u8];
            outer.extend(nested);
            nested = outer;
            if nested.len() > 120 {
                break;
            }
        }
        assert_eq!(
            public_key(encode("PUBLIC KEY", &nested).as_bytes(), KeyFamily::Ec),
            None
        );
        for junk in [
            &b""[..],
            b"not a key",
            b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n",
            b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
            &[0xff, 0xfe],
        ] {
            assert_eq!(public_key(junk, KeyFamily::Rsa), None);
            assert_eq!(public_key(junk, KeyFamily::Ec), None);
        }
    }
}
