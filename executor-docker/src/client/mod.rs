//! Raw Docker Engine calls through bollard, each one passed through
//! [`EngineCalls`] (retry + per-class circuit breakers + request stats) and mapped to
//! [`executor_base::Error`].
//!
//! The connection is made lazily on the first call (socket check + API version
//! negotiation down to the daemon's, e.g. 1.41 for Docker 20.10), so building an executor
//! never needs the daemon, and a daemon that is down is reported per call as a temporary
//! [`ErrorKind::Unavailable`] naming the endpoint.
//!
//! # Breakers
//!
//! Calls are classified ([`CallClass`]): creating, starting, attaching, uploading and
//! pulling are `Start`; inspecting and listing are `Read`; killing and removing are `Stop`,
//! which is always attempted. While a breaker is open, a `GET /_ping` (at most once a
//! second) tells whether the daemon is back, so the first call after it returns works.
//! Calls stop retrying after the retry budget (`retry.budgetMs`, 5 s by default), so a call on a
//! daemon that is down answers `Unavailable` within seconds.
//!
//! **Bounds.** Each call is bounded by the call timeout (`breaker.callTimeoutMs`), except
//! pulls (`pullTimeoutSecs`) and the calls that set up and start a build's containers
//! (create, attach, upload, start: `startTimeoutSecs`, 2 min as kubelet's runtime calls): a daemon busy with other
//! builds' containers answers those late, and failing a build for it is wrong. A start
//! whose answer was lost is checked before it is repeated
//! ([`Engine::start_container`]).
//!
//! **The registry is not the daemon.** A pull the daemon answers with an error (the
//! registry refused the connection, the manifest is unknown, the registry said 5xx or
//! 429) is the build's [`ErrorKind::ImagePull`] failure naming the registry and the cause;
//! for the daemon's breakers it is an answer, so it never makes other builds fail fast.
//! There is no breaker in front of registries: each pull costs the daemon one request, and
//! a breaker would turn a registry's recovery into builds failing for nothing. Such an
//! error is temporary when the registry was unreachable or overloaded (retrying the build
//! later may work), persistent when it answered that the image does not exist.
//!
//! Answers a caller expects (404 of a container or volume that is already gone, 409 of a
//! container that is not running, 404 of an image that must be pulled first) are results,
//! not failed requests: they do not count as failures in `stats()`.
//!
//! This module holds the connection, the bounds and the breakers every call goes
//! through; the calls themselves are in `containers`, `images` (pulls) and `volumes`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use executor_base::engine::{BreakerConfig, CallClass, EngineCalls, Idempotency, RetryPolicy};
use executor_base::{Error, ErrorKind};
use futures::FutureExt;
use tokio::sync::OnceCell;

use crate::error::{self, map};

mod containers;
mod images;
mod volumes;

/// How often, at most, the daemon is pinged while a breaker is open.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Slack on top of the pull bound for the engine-call layer around it.
const PULL_SLACK: Duration = Duration::from_secs(5);
/// The registry of images that name none.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";

/// How to reach the daemon.
#[derive(Clone)]
pub(crate) enum Connect {
    /// Connect to this `DOCKER_HOST`-style endpoint on first use, with the call timeout
    /// as bollard's response-header bound (the pull's for pulls).
    Endpoint,
    /// Use this client (tests, benches); the version is still negotiated.
    Given(Docker),
}

/// What we learn from the daemon once.
#[derive(Clone)]
struct Connected {
    /// Ordinary calls: no answer's headers within the call timeout is a timeout.
    docker: Docker,
    /// Pulls: the same connections, with the pull bound on the answer's headers.
    puller: Docker,
    /// The calls that set up and start containers: the same connections, with the start
    /// bound.
    worker: Docker,
    ncpu: Option<i64>,
}

/// A cheap-to-clone handle on the daemon.
#[derive(Clone)]
pub(crate) struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    connect: Connect,
    connected: OnceCell<Connected>,
    calls: EngineCalls,
    /// Counts pulls only (no retries, no breaker: the pull itself goes through `calls`).
    pulls: EngineCalls,
    pull_timeout: Duration,
    /// The bound on each create and start of a container.
    start_timeout: Duration,
    /// The bound on each ordinary call ([`BreakerConfig::call_timeout`]).
    call_timeout: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// The policies of the engine calls, from the executor's options.
#[derive(Debug, Clone)]
pub(crate) struct Policies {
    /// Retry policy of every call.
    pub retry: RetryPolicy,
    /// Breakers and the per-call bound.
    pub breaker: BreakerConfig,
    /// The bound on one image pull.
    pub pull_timeout: Duration,
    /// The bound on each call that sets up or starts a container (`startTimeoutSecs`).
    pub start_timeout: Duration,
}

/// Which bound (and the client carrying it as its answer's bound) a call runs with.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// The call timeout (`breaker.callTimeoutMs`).
    Call,
    /// The start timeout (`startTimeoutSecs`): the calls that set up and start containers.
    Start,
}

/// Role label values and the role label key.
pub(crate) const LABEL_ROLE: &str = "screwdriver.cd/docker-role";

impl Engine {
    /// A handle on `endpoint` with these policies.
    pub(crate) fn new(endpoint: String, connect: Connect, p: Policies) -> Self {
        let mut calls = EngineCalls::new(crate::SCHEME, p.retry, p.breaker.clone())
            .with_endpoint(endpoint.clone());
        if let Some(ping) = pinger(&endpoint, &connect) {
            calls = calls.with_health_probe(
                PROBE_EVERY,
                Arc::new(move || {
                    let d = ping.clone();
                    async move { answered(d.ping().await) }.boxed()
                }),
            );
        }
        let pulls = EngineCalls::new(
            crate::SCHEME,
            RetryPolicy::none(),
            BreakerConfig {
                max_failures: 0,
                ..p.breaker
            },
        )
        .with_endpoint(endpoint.clone());
        Self {
            inner: Arc::new(Inner {
                endpoint,
                connect,
                connected: OnceCell::new(),
                calls,
                pulls,
                pull_timeout: p.pull_timeout,
                start_timeout: p.start_timeout,
                call_timeout: p.breaker.call_timeout,
            }),
        }
    }

    /// The endpoint, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Counters of ordinary calls.
    pub(crate) fn calls(&self) -> &EngineCalls {
        &self.inner.calls
    }

    /// Counters of pulls.
    pub(crate) fn pulls(&self) -> &EngineCalls {
        &self.inner.pulls
    }

    async fn connected(&self) -> Result<&Connected, Error> {
        self.inner
            .connected
            .get_or_try_init(|| async {
                let ep = &self.inner.endpoint;
                let docker = match &self.inner.connect {
                    Connect::Given(d) => d.clone(),
                    Connect::Endpoint => connect_endpoint(ep, self.header_timeout_secs())?,
                };
                // Each exchange is bounded by the call timeout: a daemon that accepts and
                // never answers must not hold a start for bollard's own bound.
                let bound = self.inner.call_timeout;
                let docker = bounded(bound, "negotiate_version", ep, docker.negotiate_version())
                    .await?;
                let ncpu = bounded(bound, "info", ep, docker.info()).await?.ncpu;
                tracing::debug!(endpoint = %ep, api = %docker.client_version(), ?ncpu, "connected to Docker");
                // Pulls get their own handle on the same connection pool whose
                // response-header bound is the pull's (a registry may be slow to answer
                // the manifest before the daemon sends the progress stream's headers).
                let (puller, worker) = match &self.inner.connect {
                    Connect::Given(d) => (d.clone(), d.clone()),
                    Connect::Endpoint => (
                        docker.clone().with_timeout(self.inner.pull_timeout),
                        docker.clone().with_timeout(self.inner.start_timeout),
                    ),
                };
                Ok(Connected {
                    docker,
                    puller,
                    worker,
                    ncpu,
                })
            })
            .await
    }

    /// Bollard's bound on an ordinary call's answer headers: the call timeout, in whole
    /// seconds (bollard's unit), at least 1.
    fn header_timeout_secs(&self) -> u64 {
        self.inner.call_timeout.as_secs_f64().ceil().max(1.0) as u64
    }

    /// The connected client (connecting on first use).
    pub(crate) async fn docker(&self) -> Result<Docker, Error> {
        Ok(self.connected().await?.docker.clone())
    }

    /// The connected client for the calls of a start, whose bound is the start timeout.
    async fn worker(&self) -> Result<Docker, Error> {
        Ok(self.connected().await?.worker.clone())
    }

    /// The daemon's CPU count, when it said (connecting on first use, as a start call:
    /// bounded, retried and counted like the others). Once connected it is the value read
    /// then, with no call: a cached answer is no news of the engine, so it must not count
    /// as one (it would close every breaker the failing calls around it opened).
    pub(crate) async fn ncpu(&self) -> Result<Option<i64>, Error> {
        if let Some(c) = self.inner.connected.get() {
            return Ok(c.ncpu);
        }
        self.inner
            .calls
            .call_in(
                CallClass::Start,
                "info",
                Idempotency::Idempotent,
                || async { Ok(self.connected().await?.ncpu) },
            )
            .await
    }

    /// Runs one bollard call of `class` through the engine-call policy.
    async fn call<T, F, Fut>(
        &self,
        class: CallClass,
        op: &'static str,
        idem: Idempotency,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Docker) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, bollard::errors::Error>> + Send,
        T: Send,
    {
        self.call_expecting(class, op, idem, Err, f).await
    }

    /// An idempotent [`CallClass::Start`] call made while a build's containers are set
    /// up (attach, upload), bounded by the start timeout as creates and starts are: a
    /// daemon busy starting other containers answers those late too.
    async fn call_of_start<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, Error>
    where
        F: Fn(Docker) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, bollard::errors::Error>> + Send,
        T: Send,
    {
        let idem = Idempotency::Idempotent;
        self.call_bounded(Bound::Start, CallClass::Start, op, idem, Err, f)
            .await
    }

    /// [`Engine::call`] where `expected` turns answers the caller expects (a 404 of what
    /// is already gone) into results, inside the call, so they count as successes.
    async fn call_expecting<T, U, F, Fut>(
        &self,
        class: CallClass,
        op: &'static str,
        idem: Idempotency,
        expected: fn(Error) -> Result<U, Error>,
        f: F,
    ) -> Result<U, Error>
    where
        F: Fn(Docker) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, bollard::errors::Error>> + Send,
        T: Into<U> + Send,
        U: Send,
    {
        self.call_bounded(Bound::Call, class, op, idem, expected, f)
            .await
    }

    /// Runs one bollard call through the engine-call policy on the client of `bound`,
    /// each attempt bounded by that bound; `expected` as in [`Engine::call_expecting`].
    async fn call_bounded<T, U, F, Fut>(
        &self,
        bound: Bound,
        class: CallClass,
        op: &'static str,
        idem: Idempotency,
        expected: fn(Error) -> Result<U, Error>,
        f: F,
    ) -> Result<U, Error>
    where
        F: Fn(Docker) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, bollard::errors::Error>> + Send,
        T: Into<U> + Send,
        U: Send,
    {
        let f = &f;
        let timeout = match bound {
            Bound::Call => self.inner.call_timeout,
            Bound::Start => self.inner.start_timeout,
        };
        self.inner
            .calls
            .call_with_timeout(class, op, idem, timeout, || async move {
                let d = match bound {
                    Bound::Call => self.docker().await?,
                    Bound::Start => self.worker().await?,
                };
                match f(d).await {
                    Ok(v) => Ok(v.into()),
                    Err(e) => expected(map(e, &self.inner.endpoint)),
                }
            })
            .await
    }
}

/// A 404 of what a stop removes: it is already gone.
fn gone_is_false(e: Error) -> Result<bool, Error> {
    match e.kind() {
        ErrorKind::NotFound => Ok(false),
        _ => Err(e),
    }
}

/// A client for the health probe's `GET /_ping` (its own, so the probe never waits for
/// the version negotiation of the main client).
fn pinger(endpoint: &str, connect: &Connect) -> Option<Docker> {
    match connect {
        Connect::Given(d) => Some(d.clone()),
        Connect::Endpoint => connect_endpoint(endpoint, 2).ok(),
    }
}

/// `call` bounded by `bound`: past it, a temporary [`ErrorKind::Timeout`] naming the
/// endpoint and the operation.
async fn bounded<T>(
    bound: Duration,
    op: &str,
    endpoint: &str,
    call: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(bound, call).await {
        Ok(r) => r.map_err(|e| map(e, endpoint)),
        Err(_) => Err(executor_base::engine::timed_out(Some(endpoint), op, bound)),
    }
}

/// Whether a ping's outcome shows a healthy daemon answering: any answer but one saying
/// it is unavailable or overloaded (a 5xx or 429, e.g. from a proxy in front of a daemon
/// that is gone), which must keep the breakers open.
fn answered<T>(r: Result<T, bollard::errors::Error>) -> bool {
    match r {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => {
            status_code < 500 && status_code != 429
        }
        Err(e) => error::daemon_answered(&e),
    }
}

/// Connects to a `DOCKER_HOST`-style endpoint without talking to it yet.
pub(crate) fn connect_endpoint(endpoint: &str, timeout_secs: u64) -> Result<Docker, Error> {
    let version = bollard::API_DEFAULT_VERSION;
    let r = if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, timeout_secs, version)
    } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(endpoint, timeout_secs, version)
    } else {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!(
                "host: unsupported Docker endpoint {endpoint:?}, expected unix://, tcp:// or http://"
            ),
        ));
    };
    r.map_err(|e| map(e, endpoint))
}

#[cfg(test)]
mod tests {
    use super::answered;
    use bollard::errors::Error as B;

    fn status(code: u16) -> Result<(), B> {
        Err(B::DockerResponseServerError {
            status_code: code,
            message: "x".into(),
        })
    }

    #[test]
    fn a_ping_answered_unavailable_or_overloaded_is_no_sign_of_health() {
        assert!(answered(Ok::<(), B>(())));
        assert!(answered(status(404)), "a daemon that answers 404 is up");
        for code in [500, 502, 503, 429] {
            assert!(!answered(status(code)), "{code}");
        }
        assert!(!answered(Err::<(), B>(B::RequestTimeoutError)));
    }
}
