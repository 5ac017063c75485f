//! The CSRF crumb cache.
//!
//! Jenkins wants a crumb (from `GET /crumbIssuer/api/json`) in a header on every POST;
//! it is bound to the web session the issuer answered with, so the session cookie is kept
//! with it. The crumb is fetched once, shared by all calls, and refreshed at most once per
//! rejected request (a 403 with `CrumbFilter`'s message). A Jenkins without a crumb issuer
//! (404) is remembered as such and gets no header. (Requests authenticated with an API
//! token need no crumb at all, core `ApiCrumbExclusion`; sending one is harmless, and
//! the same code then serves users who log in with a password.)

use std::fmt;

/// A crumb and the session it belongs to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Crumb {
    /// The header name (`Jenkins-Crumb`).
    pub field: String,
    /// The crumb.
    pub value: String,
    /// `Cookie` header value of the session the crumb was issued in.
    pub cookie: Option<String>,
}

impl fmt::Debug for Crumb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crumb")
            .field("field", &self.field)
            .field("value", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// What we know about Jenkins' crumb issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CrumbState {
    /// Not asked yet.
    Unknown,
    /// Jenkins has no crumb issuer (CSRF protection off).
    NoIssuer,
    /// The current crumb.
    Have(Crumb),
}

/// The shared cache: the state plus a generation that changes on every fetch, so a caller
/// that saw a crumb rejected refreshes only if nobody else did meanwhile.
#[derive(Debug)]
pub(crate) struct CrumbCache {
    state: tokio::sync::Mutex<(CrumbState, u64)>,
}

impl Default for CrumbCache {
    fn default() -> Self {
        Self {
            state: tokio::sync::Mutex::new((CrumbState::Unknown, 0)),
        }
    }
}

impl CrumbCache {
    /// The current crumb (fetching it with `fetch` on first use) and its generation.
    pub async fn current<F, Fut, E>(&self, fetch: F) -> Result<(Option<Crumb>, u64), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CrumbState, E>>,
    {
        let mut g = self.state.lock().await;
        if g.0 == CrumbState::Unknown {
            g.0 = fetch().await?;
            g.1 += 1;
        }
        Ok((as_crumb(&g.0), g.1))
    }

    /// A fresh crumb after the one of generation `seen` was rejected; fetched again only
    /// if no other caller already did.
    pub async fn refresh<F, Fut, E>(&self, seen: u64, fetch: F) -> Result<(Option<Crumb>, u64), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CrumbState, E>>,
    {
        let mut g = self.state.lock().await;
        if g.1 == seen || g.0 == CrumbState::Unknown {
            g.0 = fetch().await?;
            g.1 += 1;
        }
        Ok((as_crumb(&g.0), g.1))
    }
}

fn as_crumb(s: &CrumbState) -> Option<Crumb> {
    match s {
        CrumbState::Have(c) => Some(c.clone()),
        _ => None,
    }
}

/// `name=value` pairs of `Set-Cookie` headers, joined for a `Cookie` header.
pub(crate) fn cookie_header<'a>(set_cookies: impl Iterator<Item = &'a str>) -> Option<String> {
    let pairs: Vec<&str> = set_cookies
        .filter_map(|c| c.split(';').next())
        .map(str::trim)
        .filter(|p| p.contains('='))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

/// Whether a 403 body is `CrumbFilter`'s rejection: core
/// `hudson/security/csrf/CrumbFilter.java` answers
/// `sendError(403, "No valid crumb was included in the request")`. Merely containing
/// "crumb" is no sign: every page rendered with Jenkins' layout, the access-denied page of
/// a missing permission included, carries `data-crumb-header` (`lib/layout/layout.jelly`).
pub(crate) fn is_crumb_rejection(body: &str) -> bool {
    body.contains("No valid crumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crumb(v: &str) -> CrumbState {
        CrumbState::Have(Crumb {
            field: "Jenkins-Crumb".into(),
            value: v.into(),
            cookie: None,
        })
    }

    #[tokio::test]
    async fn fetched_once_and_refreshed_once_per_generation() {
        let cache = CrumbCache::default();
        let (c, g) = cache
            .current(|| async { Ok::<_, ()>(crumb("a")) })
            .await
            .unwrap();
        assert_eq!(c.unwrap().value, "a");
        let (c, g2) = cache
            .current(|| async { panic!("cached: no second fetch") })
            .await
            .unwrap_or_else(|()| unreachable!());
        assert_eq!((c.unwrap().value.as_str(), g2), ("a", g));
        let (c, g3) = cache
            .refresh(g, || async { Ok::<_, ()>(crumb("b")) })
            .await
            .unwrap();
        assert_eq!(c.unwrap().value, "b");
        // A second caller that saw the old crumb rejected gets the new one, no fetch.
        let (c, g4) = cache
            .refresh(g, || async { panic!("already refreshed") })
            .await
            .unwrap_or_else(|()| unreachable!());
        assert_eq!((c.unwrap().value.as_str(), g4), ("b", g3));
        assert!(!format!("{:?}", cache).contains("\"b\""));
    }

    #[tokio::test]
    async fn no_issuer_is_remembered() {
        let cache = CrumbCache::default();
        let (c, _) = cache
            .current(|| async { Ok::<_, ()>(CrumbState::NoIssuer) })
            .await
            .unwrap();
        assert!(c.is_none());
        let (c, _) = cache
            .current(|| async { panic!("remembered") })
            .await
            .unwrap_or_else(|()| unreachable!());
        assert!(c.is_none());
    }

    #[test]
    fn cookies_and_rejections() {
        assert_eq!(
            cookie_header(["JSESSIONID.1=abc; Path=/; HttpOnly", "x=y"].into_iter()).as_deref(),
            Some("JSESSIONID.1=abc; x=y")
        );
        assert_eq!(cookie_header(std::iter::empty()), None);
        assert!(is_crumb_rejection(
            "HTTP ERROR 403 No valid crumb was included in the request"
        ));
        assert!(!is_crumb_rejection(
            "Access Denied: missing Job/Build permission"
        ));
        assert!(!is_crumb_rejection(
            "<head data-crumb-header=\"Jenkins-Crumb\" data-crumb-value=\"x\"></head>\
             <p>screwdriver is missing the Job/Build permission</p>"
        ));
    }
}
