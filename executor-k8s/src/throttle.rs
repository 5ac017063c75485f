//! One client-wide request rate limit, and a client-wide pause on 429.
//!
//! A tower layer on the kube client's service stack, so every request of this executor
//! (starts, stops, GC and the shared watch alike) draws from one `governor` token bucket.
//! When the API server answers 429 with `Retry-After`, the whole client pauses until
//! then instead of letting other calls pile onto an overloaded server; the failed call
//! itself is retried by `EngineCalls`, which also honours the wait.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{Layer, Service};

/// The shared state: the bucket, the 429 pause, and a request counter.
pub(crate) struct Throttle {
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A bucket of `qps` requests per second with `burst` extra.
    pub(crate) fn new(qps: NonZeroU32, burst: NonZeroU32) -> Arc<Self> {
        Arc::new(Self {
            limiter: RateLimiter::direct(Quota::per_second(qps).allow_burst(burst)),
            paused_until: Mutex::new(None),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far (all of them, watch included).
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn acquire(self: Arc<Self>) {
        loop {
            let pause = *self.paused_until.lock();
            match pause {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        self.limiter.until_ready().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut p = self.paused_until.lock();
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }
}

/// The layer.
#[derive(Clone)]
pub(crate) struct ThrottleLayer(pub(crate) Arc<Throttle>);

impl<S> Layer<S> for ThrottleLayer {
    type Service = ThrottleService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ThrottleService {
            inner,
            shared: self.0.clone(),
            wait: None,
            permitted: false,
        }
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The service: waits for a token in `poll_ready` (the kube client drives it from one
/// buffer worker, so waiting there holds back every request of the client).
pub(crate) struct ThrottleService<S> {
    inner: S,
    shared: Arc<Throttle>,
    wait: Option<BoxFut<()>>,
    permitted: bool,
}

impl<S: Clone> Clone for ThrottleService<S> {
    fn clone(&self) -> Self {
        // A clone starts without a permit: it waits for its own token.
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            wait: None,
            permitted: false,
        }
    }
}

impl<S, B, RB> Service<Request<B>> for ThrottleService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFut<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            let shared = &self.shared;
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(shared.clone().acquire()));
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.wait = None;
                    self.permitted = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.permitted = false;
        let fut = self.inner.call(req);
        let shared = self.shared.clone();
        Box::pin(async move {
            let resp = fut.await?;
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                let secs = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1);
                shared.pause_for(Duration::from_secs(secs.min(60)));
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[tokio::test]
    async fn a_429_pauses_every_later_request_for_retry_after() {
        let throttle = Throttle::new(nz(1000), nz(1000));
        let answered = Arc::new(AtomicU64::new(0));
        let a = answered.clone();
        let svc = ServiceBuilder::new()
            .layer(ThrottleLayer(throttle.clone()))
            .service(tower::service_fn(move |_req: Request<()>| {
                let n = a.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut r = Response::new(());
                    if n == 0 {
                        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                        r.headers_mut()
                            .insert(http::header::RETRY_AFTER, "1".parse().unwrap());
                    }
                    Ok::<_, Infallible>(r)
                }
            }));
        let first = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
        let t = std::time::Instant::now();
        let second = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(throttle.requests(), 2);
    }
}
