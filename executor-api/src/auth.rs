//! Who is calling: the administrator's static token, a user JWT, or a build's temporary or
//! build JWT.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use secrecy::ExposeSecret;

use crate::error::HttpError;
use crate::keys::{Claims, SCOPE_ADMIN, SCOPE_BUILD, SCOPE_TEMPORAL, SCOPE_USER};
use crate::state::ApiState;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The API's administrator (the static user token, or a user JWT with `admin`).
    Admin,
    /// A user JWT without `admin`.
    User(String),
    /// `launch` or an executor with a temporary token (scope `temporal`).
    Temporal(Claims),
    /// `launch` with a build token (scope `build`).
    Build(Claims),
}

impl Caller {
    /// The build a build or temporary token belongs to (`username`).
    pub fn build_username(&self) -> Option<&str> {
        match self {
            Caller::Temporal(c) | Caller::Build(c) => Some(&c.username),
            _ => None,
        }
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads `Authorization: Bearer <token>` and identifies the caller; 401 when the header is
/// missing or the token is invalid or expired.
pub fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Caller, HttpError> {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| HttpError::unauthorized("Missing authentication"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| HttpError::unauthorized("Authorization must be a Bearer token"))?;
    if same(
        token.as_bytes(),
        state.user_token().expose_secret().as_bytes(),
    ) {
        return Ok(Caller::Admin);
    }
    let claims = state
        .issuer()
        .verify(token)
        .map_err(|e| HttpError::unauthorized(format!("Invalid token: {e}")))?;
    Ok(if claims.has_scope(SCOPE_TEMPORAL) {
        Caller::Temporal(claims)
    } else if claims.has_scope(SCOPE_BUILD) {
        Caller::Build(claims)
    } else if claims.has_scope(SCOPE_ADMIN) {
        Caller::Admin
    } else if claims.has_scope(SCOPE_USER) {
        Caller::User(claims.username)
    } else {
        return Err(HttpError::unauthorized("Invalid token: no known scope"));
    })
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
