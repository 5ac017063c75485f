//! Reading the token and the `scope` claim of its (unverified) JWT payload.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// A token; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token (trimmed).
    pub fn new(s: impl AsRef<str>) -> Self {
        Self(s.as_ref().trim().to_string())
    }

    /// The token, for the `Authorization` header and the steps' `SD_TOKEN`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `scope` claim of the JWT payload (an array or a space separated string),
    /// decoded **without verifying** the signature. Empty when the token is not a JWT.
    ///
    /// ```
    /// use sd_launch::token::Token;
    /// // header.{"username":"42","scope":["temporal"]}.sig
    /// let t = Token::new("e30.eyJ1c2VybmFtZSI6IjQyIiwic2NvcGUiOlsidGVtcG9yYWwiXX0.c2ln");
    /// assert!(t.is_temporal());
    /// assert!(!Token::new("opaque").is_temporal());
    /// ```
    pub fn scopes(&self) -> Vec<String> {
        let Some(payload) = self.0.split('.').nth(1) else {
            return Vec::new();
        };
        let engine = GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let Some(claims) = engine
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            return Vec::new();
        };
        match claims.get("scope") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the token is a temporary one that must be exchanged for a build token.
    pub fn is_temporal(&self) -> bool {
        self.scopes().iter().any(|s| s == "temporal")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// Where the token comes from, in order: `--token-file`/`SD_TOKEN_FILE` (`file`), then
/// `SD_TOKEN` (`env_token`).
///
/// Errors name the source, never the token.
pub fn read_token(file: Option<&Path>, env_token: Option<String>) -> Result<Token, String> {
    let raw = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: cannot read: {e}", path.display()))?,
        None => env_token
            .ok_or_else(|| "no token: pass --token-file, SD_TOKEN_FILE or SD_TOKEN".to_string())?,
    };
    let token = Token::new(raw);
    if token.0.is_empty() {
        return Err(match file {
            Some(path) => format!("--token-file {}: is empty", path.display()),
            None => "SD_TOKEN: is empty".into(),
        });
    }
    if token.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("token: must not contain white space or control characters".into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(claims: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn scopes_from_array_string_or_nothing() {
        assert_eq!(
            Token::new(jwt(r#"{"scope":["build","x"]}"#)).scopes(),
            ["build", "x"]
        );
        assert_eq!(
            Token::new(jwt(r#"{"scope":"temporal user"}"#)).scopes(),
            ["temporal", "user"]
        );
        assert!(Token::new(jwt(r#"{"username":"1"}"#)).scopes().is_empty());
        assert!(Token::new("a.!!!.c").scopes().is_empty());
        assert!(Token::new(jwt("not json")).scopes().is_empty());
        assert!(!Token::new(jwt(r#"{"scope":["build"]}"#)).is_temporal());
        let padded = format!(
            "e30.{}=.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"scope":["temporal"]}x"#)
        );
        let _ = Token::new(padded).scopes(); // tolerated, whatever the padding
    }

    #[test]
    fn file_beats_env_and_errors_hide_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        let t = read_token(Some(&f), Some("from-env".into())).unwrap();
        assert_eq!(t.expose(), "from-file");
        assert_eq!(format!("{t:?}"), "Token([REDACTED])");
        assert_eq!(
            read_token(None, Some(" from-env ".into()))
                .unwrap()
                .expose(),
            "from-env"
        );
        assert!(read_token(None, None).unwrap_err().starts_with("no token"));
        assert_eq!(
            read_token(None, Some("".into())).unwrap_err(),
            "SD_TOKEN: is empty"
        );
        let e = read_token(None, Some("sec ret".into())).unwrap_err();
        assert!(!e.contains("sec"), "{e}");
        let missing = dir.path().join("missing");
        assert!(
            read_token(Some(&missing), None)
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::write(&f, "  \n").unwrap();
        assert!(
            read_token(Some(&f), None)
                .unwrap_err()
                .ends_with("is empty")
        );
    }
}
