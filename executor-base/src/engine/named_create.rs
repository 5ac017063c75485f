//! Creates under a name the client chose: safe to repeat, so retried like reads.
//!
//! A create whose object name is chosen by us and used by no one else (a pod named
//! `<prefix><build>-<random>`, a container named after its build) cannot act twice: a
//! repeat either creates the object or is refused with `AlreadyExists`. So unlike an
//! ordinary create it may be retried on *any* temporary error, including the ambiguous
//! ones (a connection that broke after the request went out, as a kept-alive connection
//! to a restarting engine does; a 5xx answer). When such a retry is refused with
//! `AlreadyExists`, the lost attempt created the object: [`Created::Earlier`], and the
//! caller reads it back (its id, its uid) instead of reporting a failure for a create
//! that happened. An `AlreadyExists` on the first attempt, or after attempts that proved
//! nothing was sent, stays an error: the name was taken before we came.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CallClass, EngineCalls, Idempotency, may_have_been_applied};
use crate::error::{Error, ErrorKind};

/// What a create under a chosen name came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    /// This call's attempt created the object and the engine's answer is here.
    Now(T),
    /// An earlier attempt, whose answer was lost, created it: the retry found the name
    /// taken. The caller reads the object back by name.
    Earlier,
}

impl EngineCalls {
    /// Runs a create of an object named by the caller through the breaker of `class`,
    /// retried on every temporary error, the ambiguous ones included (a name only we use
    /// cannot be created twice); an `AlreadyExists` after an attempt that may have
    /// reached the engine is [`Created::Earlier`].
    ///
    /// ```
    /// use executor_base::engine::{CallClass, Created, EngineCalls};
    /// use executor_base::{Error, ErrorKind};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let calls = EngineCalls::with_defaults("docker");
    /// let mut attempts = 0;
    /// let r = calls
    ///     .create_named(CallClass::Start, "create", || {
    ///         attempts += 1;
    ///         let n = attempts;
    ///         async move {
    ///             match n {
    ///                 // The request went out; the connection broke before the answer.
    ///                 1 => Err(Error::new(ErrorKind::Unexpected, "reset").temporary()),
    ///                 _ => Err::<u32, _>(Error::new(ErrorKind::AlreadyExists, "taken")),
    ///             }
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(r.unwrap(), Created::Earlier);
    /// # }
    /// ```
    pub async fn create_named<T, F, Fut>(
        &self,
        class: CallClass,
        operation: &'static str,
        f: F,
    ) -> Result<Created<T>, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let timeout = self.breaker_config().call_timeout;
        self.create_named_with_timeout(class, operation, timeout, f)
            .await
    }

    /// [`EngineCalls::create_named`] with `timeout` as the bound on each attempt instead
    /// of [`BreakerConfig::call_timeout`](super::BreakerConfig::call_timeout): for creates
    /// the engine does real work for (a Docker container's writable layer), which a
    /// loaded engine answers late.
    pub async fn create_named_with_timeout<T, F, Fut>(
        &self,
        class: CallClass,
        operation: &'static str,
        timeout: std::time::Duration,
        mut f: F,
    ) -> Result<Created<T>, Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: Send,
    {
        let may_have_landed = &AtomicBool::new(false);
        self.call_with_timeout(class, operation, Idempotency::Idempotent, timeout, || {
            let attempt = f();
            async move {
                match attempt.await {
                    Ok(v) => Ok(Created::Now(v)),
                    Err(e)
                        if e.kind() == ErrorKind::AlreadyExists
                            && may_have_landed.load(Ordering::SeqCst) =>
                    {
                        Ok(Created::Earlier)
                    }
                    Err(e) => {
                        // Only an error that proves the request was not applied leaves
                        // the name free for certain (the others end the call unretried).
                        if may_have_been_applied(&e) {
                            may_have_landed.store(true, Ordering::SeqCst);
                        }
                        Err(e)
                    }
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::engine::RetryPolicy;

    fn calls() -> EngineCalls {
        EngineCalls::with_defaults("test").with_retry_policy(RetryPolicy {
            initial_backoff: std::time::Duration::from_millis(1),
            jitter: false,
            ..RetryPolicy::default()
        })
    }

    async fn run(answers: Vec<Result<u32, Error>>) -> (Result<Created<u32>, Error>, u32) {
        let n = AtomicU32::new(0);
        let answers = std::sync::Mutex::new(answers.into_iter());
        let r = calls()
            .create_named(CallClass::Start, "create", || {
                n.fetch_add(1, Ordering::SeqCst);
                let a = answers.lock().unwrap().next().expect("no more answers");
                async move { a }
            })
            .await;
        (r, n.load(Ordering::SeqCst))
    }

    fn broken() -> Error {
        Error::new(ErrorKind::Unexpected, "connection reset").temporary()
    }
    fn refused() -> Error {
        Error::new(ErrorKind::Unavailable, "connection refused").temporary()
    }
    fn taken() -> Error {
        Error::new(ErrorKind::AlreadyExists, "name taken")
    }

    #[tokio::test]
    async fn a_broken_connection_is_retried_and_a_landed_create_is_earlier() {
        let (r, n) = run(vec![Err(broken()), Err(refused()), Err(taken())]).await;
        assert_eq!((r.unwrap(), n), (Created::Earlier, 3));
        let (r, n) = run(vec![Err(broken()), Ok(7)]).await;
        assert_eq!((r.unwrap(), n), (Created::Now(7), 2));
    }

    #[tokio::test]
    async fn a_5xx_answer_is_retried_because_the_name_makes_it_safe() {
        let e503 = Error::new(ErrorKind::Unavailable, "busy")
            .with_status(503)
            .temporary();
        let (r, n) = run(vec![Err(e503), Err(taken())]).await;
        assert_eq!((r.unwrap(), n), (Created::Earlier, 2));
    }

    #[tokio::test]
    async fn a_name_taken_before_we_came_stays_an_error() {
        let (r, n) = run(vec![Err(taken())]).await;
        assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::AlreadyExists, 1));
        // Refused connections prove nothing was sent: the name was someone else's.
        let (r, n) = run(vec![Err(refused()), Err(taken())]).await;
        assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::AlreadyExists, 2));
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried() {
        let bad = Error::new(ErrorKind::ConfigInvalid, "bad manifest").with_status(422);
        let (r, n) = run(vec![Err(bad)]).await;
        assert_eq!((r.unwrap_err().kind(), n), (ErrorKind::ConfigInvalid, 1));
    }
}
