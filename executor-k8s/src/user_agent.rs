//! `User-Agent: sdx-executor-k8s/<version>` on every request of the client.
//!
//! The API server's audit log records each request's user agent; without one an operator
//! cannot tell this executor's requests from any other client's.

use std::task::{Context, Poll};

use http::Request;
use http::header::{HeaderValue, USER_AGENT as USER_AGENT_HEADER};
use tower::{Layer, Service};

/// The user agent of every request a client built by the executor sends.
pub const USER_AGENT: &str = concat!("sdx-executor-k8s/", env!("CARGO_PKG_VERSION"));

/// Sets [`USER_AGENT`] on requests that have none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserAgentLayer;

impl<S> Layer<S> for UserAgentLayer {
    type Service = UserAgentService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        UserAgentService(inner)
    }
}

/// The service of [`UserAgentLayer`].
#[derive(Debug, Clone)]
pub(crate) struct UserAgentService<S>(S);

impl<S, B> Service<Request<B>> for UserAgentService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.headers_mut()
            .entry(USER_AGENT_HEADER)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        self.0.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn every_request_gets_the_agent_and_a_callers_own_is_kept() {
        let svc = UserAgentLayer.layer(tower::service_fn(|r: Request<()>| async move {
            Ok::<_, Infallible>(r.headers()[USER_AGENT_HEADER].clone())
        }));
        let got = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(got, USER_AGENT);
        assert!(
            USER_AGENT.starts_with("sdx-executor-k8s/0."),
            "{USER_AGENT}"
        );
        let mut own = Request::new(());
        own.headers_mut()
            .insert(USER_AGENT_HEADER, HeaderValue::from_static("mine/1"));
        assert_eq!(svc.oneshot(own).await.unwrap(), "mine/1");
    }
}
