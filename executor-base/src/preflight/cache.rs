//! [`PreflightCache`]: pre-flight answers reused for a short time, per key.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Preflight;
use crate::error::Error;

/// Answers of one executor's pre-flight, reused for `ttl` per key.
///
/// The key is what the findings depend on (the launcher image and launch mode, the build
/// image, the namespace, ...), so builds that share it share one round of engine calls
/// per `ttl`: on the hot path (a server checking every build) a pre-flight costs a map
/// lookup. Errors are never cached; a `ttl` of zero caches nothing.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use executor_base::preflight::{Finding, Preflight, PreflightCache};
/// let cache = PreflightCache::new(Duration::from_secs(10));
/// let runs = AtomicU32::new(0);
/// for _ in 0..3 {
///     let p = cache.get_or_run("img:1|native", || async {
///         runs.fetch_add(1, Ordering::SeqCst);
///         let mut p = Preflight::new("toy");
///         p.push(Finding::ok("toy.engine", "reachable"));
///         Ok(p)
///     }).await.unwrap();
///     assert!(p.passed());
/// }
/// assert_eq!(runs.load(Ordering::SeqCst), 1, "answered from the cache");
/// # });
/// ```
#[derive(Debug)]
pub struct PreflightCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Preflight)>>,
}

/// Entries kept at most; past it, expired ones are dropped (then all, if need be).
const MAX_ENTRIES: usize = 1024;

impl PreflightCache {
    /// A cache keeping answers for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long answers are kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The answer for `key` if one younger than the TTL is kept, else `run()`'s (kept
    /// when it is `Ok`).
    pub async fn get_or_run<F, Fut>(&self, key: &str, run: F) -> Result<Preflight, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Preflight, Error>>,
    {
        if let Some(p) = self.fresh(key) {
            return Ok(p);
        }
        let answer = run().await?;
        if !self.ttl.is_zero() {
            let mut entries = self.lock();
            if entries.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(key.to_string(), (Instant::now(), answer.clone()));
        }
        Ok(answer)
    }

    /// Forgets every kept answer (after a configuration change, say).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn fresh(&self, key: &str) -> Option<Preflight> {
        let entries = self.lock();
        let (at, p) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| p.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Preflight)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Finding;

    fn answer(n: u32) -> Result<Preflight, Error> {
        let mut p = Preflight::new("t");
        p.push(Finding::ok("t.run", n.to_string()));
        Ok(p)
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_the_ttl_and_keys_apart() {
        let c = PreflightCache::new(Duration::from_secs(10));
        let a = c.get_or_run("a", || async { answer(1) }).await.unwrap();
        let again = c.get_or_run("a", || async { answer(2) }).await.unwrap();
        assert_eq!(a, again, "within the TTL: the kept answer");
        let b = c.get_or_run("b", || async { answer(3) }).await.unwrap();
        assert_eq!(b.findings[0].message, "3", "another key runs");
        tokio::time::advance(Duration::from_secs(11)).await;
        let later = c.get_or_run("a", || async { answer(4) }).await.unwrap();
        assert_eq!(later.findings[0].message, "4", "after the TTL: runs again");
    }

    #[tokio::test]
    async fn errors_and_zero_ttl_are_not_kept() {
        let c = PreflightCache::new(Duration::from_secs(10));
        let e = c
            .get_or_run("a", || async {
                Err(Error::new(crate::ErrorKind::Unexpected, "boom"))
            })
            .await;
        assert!(e.is_err());
        let ok = c.get_or_run("a", || async { answer(1) }).await.unwrap();
        assert_eq!(ok.findings[0].message, "1");
        let zero = PreflightCache::new(Duration::ZERO);
        zero.get_or_run("a", || async { answer(1) }).await.unwrap();
        let second = zero.get_or_run("a", || async { answer(2) }).await.unwrap();
        assert_eq!(second.findings[0].message, "2", "ttl 0: never cached");
    }
}
