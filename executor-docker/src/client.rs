//! Raw Docker Engine calls through bollard, each one passed through
//! [`EngineCalls`] (retry + circuit breaker + request stats) and mapped to
//! [`executor_base::Error`].
//!
//! The connection is made lazily on the first call (socket check + API version
//! negotiation down to the daemon's, e.g. 1.41 for Docker 20.10), so building an executor
//! never needs the daemon, and a daemon that is down is reported per call as a temporary
//! [`ErrorKind::Unavailable`] naming the endpoint.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary, Volume};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use executor_base::engine::{EngineCalls, Idempotency};
use executor_base::{Error, ErrorKind};
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::error::{self, map};
use crate::stdin::StdinFeed;

/// How to reach the daemon.
#[derive(Clone)]
pub(crate) enum Connect {
    /// Connect to this `DOCKER_HOST`-style endpoint on first use.
    Endpoint {
        /// Bollard's per-request timeout, seconds (our own bounds are tighter).
        timeout_secs: u64,
    },
    /// Use this client (tests, benches); the version is still negotiated.
    Given(Docker),
}

/// What we learn from the daemon once.
#[derive(Clone)]
struct Connected {
    docker: Docker,
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
    pulls: EngineCalls,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// Role label values and the role label key.
pub(crate) const LABEL_ROLE: &str = "screwdriver.cd/docker-role";

impl Engine {
    /// A handle on `endpoint`; `calls` bounds ordinary calls, `pulls` image pulls.
    pub(crate) fn new(
        endpoint: String,
        connect: Connect,
        calls: EngineCalls,
        pulls: EngineCalls,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                connect,
                connected: OnceCell::new(),
                calls,
                pulls,
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
                    Connect::Endpoint { timeout_secs } => connect(ep, *timeout_secs)?,
                };
                let docker = docker.negotiate_version().await.map_err(|e| map(e, ep))?;
                let ncpu = docker.info().await.map_err(|e| map(e, ep))?.ncpu;
                tracing::debug!(endpoint = %ep, api = %docker.client_version(), ?ncpu, "connected to Docker");
                Ok(Connected { docker, ncpu })
            })
            .await
    }

    /// The connected client (connecting on first use).
    pub(crate) async fn docker(&self) -> Result<Docker, Error> {
        Ok(self.connected().await?.docker.clone())
    }

    /// The daemon's CPU count, when it said.
    pub(crate) async fn ncpu(&self) -> Result<Option<i64>, Error> {
        Ok(self.connected().await?.ncpu)
    }

    /// Runs one bollard call through the engine-call policy.
    async fn call<T, F, Fut>(&self, op: &'static str, idem: Idempotency, f: F) -> Result<T, Error>
    where
        F: Fn(Docker) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, bollard::errors::Error>> + Send,
        T: Send,
    {
        let f = &f;
        self.inner
            .calls
            .call(op, idem, || async move {
                let d = self.docker().await?;
                f(d).await.map_err(|e| map(e, &self.inner.endpoint))
            })
            .await
    }

    /// Removes a volume; `Ok(false)` when it did not exist.
    pub(crate) async fn remove_volume(&self, name: &str) -> Result<bool, Error> {
        let r = self
            .call("remove_volume", Idempotency::Idempotent, |d| async move {
                d.remove_volume(
                    name,
                    Some(RemoveVolumeOptionsBuilder::new().force(false).build()),
                )
                .await
            })
            .await;
        absent_ok(r)
    }

    /// Creates a container named `name`; returns its id.
    pub(crate) async fn create_container(
        &self,
        name: &str,
        body: &ContainerCreateBody,
    ) -> Result<String, Error> {
        self.call("create_container", Idempotency::NotIdempotent, |d| {
            let body = body.clone();
            async move {
                let opts = CreateContainerOptionsBuilder::new().name(name).build();
                d.create_container(Some(opts), body).await.map(|r| r.id)
            }
        })
        .await
    }

    /// Starts a container (already running is fine).
    pub(crate) async fn start_container(&self, name: &str) -> Result<(), Error> {
        self.call("start_container", Idempotency::Idempotent, |d| async move {
            d.start_container(name, None).await
        })
        .await
    }

    /// Attaches to the stdin (only) of a created container, for [`StdinFeed::deliver`]
    /// after its start.
    pub(crate) async fn attach_stdin(&self, name: &str) -> Result<StdinFeed, Error> {
        self.call(
            "attach_container",
            Idempotency::Idempotent,
            |d| async move {
                let opts = AttachContainerOptionsBuilder::new()
                    .stdin(true)
                    .stream(true)
                    .stdout(false)
                    .stderr(false)
                    .logs(false)
                    .build();
                d.attach_container(name, Some(opts))
                    .await
                    .map(|a| StdinFeed {
                        container: name.to_string(),
                        input: a.input,
                    })
            },
        )
        .await
    }

    /// Copies a tar archive into a container's file system (including its volumes).
    pub(crate) async fn upload(
        &self,
        container: &str,
        path: &str,
        tar: Bytes,
    ) -> Result<(), Error> {
        self.call("upload_to_container", Idempotency::Idempotent, |d| {
            let tar = tar.clone();
            async move {
                let opts = UploadToContainerOptionsBuilder::new().path(path).build();
                d.upload_to_container(container, Some(opts), bollard::body_full(tar))
                    .await
            }
        })
        .await
    }

    /// Sends SIGKILL; a missing or not running container is fine (`Ok(false)`).
    pub(crate) async fn kill_container(&self, name: &str) -> Result<bool, Error> {
        let r = self
            .call("kill_container", Idempotency::Idempotent, |d| async move {
                d.kill_container(
                    name,
                    Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
                )
                .await
            })
            .await;
        match r {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false), // 409: not running
            other => absent_ok(other),
        }
    }

    /// Force-removes a container and its anonymous volumes; `Ok(false)` when absent.
    pub(crate) async fn remove_container(&self, name: &str) -> Result<bool, Error> {
        let r = self
            .call(
                "remove_container",
                Idempotency::Idempotent,
                |d| async move {
                    let opts = RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build();
                    d.remove_container(name, Some(opts)).await
                },
            )
            .await;
        match r {
            // 409 "removal already in progress": someone else is removing it.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(true),
            other => absent_ok(other),
        }
    }

    /// Inspects a container; `None` when it does not exist.
    pub(crate) async fn inspect_container(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, Error> {
        let r = self
            .call(
                "inspect_container",
                Idempotency::Idempotent,
                |d| async move { d.inspect_container(name, None).await },
            )
            .await;
        match r {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All containers (running or not) carrying every one of `labels` (`k` or `k=v`).
    pub(crate) async fn list_containers(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, Error> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        self.call("list_containers", Idempotency::Idempotent, |d| {
            let filters = filters.clone();
            async move {
                let opts = ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build();
                d.list_containers(Some(opts)).await
            }
        })
        .await
    }

    /// All volumes carrying every one of `labels`.
    pub(crate) async fn list_volumes(&self, labels: &[String]) -> Result<Vec<Volume>, Error> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        self.call("list_volumes", Idempotency::Idempotent, |d| {
            let filters = filters.clone();
            async move {
                let opts = ListVolumesOptionsBuilder::new().filters(&filters).build();
                d.list_volumes(Some(opts))
                    .await
                    .map(|r| r.volumes.unwrap_or_default())
            }
        })
        .await
    }

    /// Pulls `image` (`name[:tag]` or `name@digest`), reporting progress through tracing.
    /// Failures are [`ErrorKind::ImagePull`] unless the daemon itself is unreachable.
    pub(crate) async fn pull(&self, image: &executor_base::ImageRef) -> Result<(), Error> {
        let started = Instant::now();
        let (from_image, tag) = match image.digest() {
            Some(_) => (image.as_str().to_string(), None),
            None => (
                image.name(),
                Some(image.tag().unwrap_or("latest").to_string()),
            ),
        };
        tracing::info!(image = %image, "pulling image");
        let from_image = &from_image;
        let tag = &tag;
        let r = self
            .inner
            .pulls
            .call("pull_image", Idempotency::Idempotent, || async move {
                let d = self.docker().await?;
                let mut opts = CreateImageOptionsBuilder::new().from_image(from_image);
                if let Some(t) = tag {
                    opts = opts.tag(t);
                }
                let mut stream = d.create_image(Some(opts.build()), None, None);
                let mut progress = Progress::default();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(info) => progress.report(
                            image.as_str(),
                            info.id.as_deref(),
                            info.status.as_deref(),
                        ),
                        Err(e) => return Err(map(e, &self.inner.endpoint)),
                    }
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                tracing::info!(image = %image, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(image = %image, error = %e, "image pull failed");
                Err(error::image_pull(image.as_str(), e))
            }
        }
    }
}

/// Pull progress: logs each layer's status change once (not every byte count).
#[derive(Default)]
struct Progress {
    last: HashMap<String, String>,
}

impl Progress {
    fn report(&mut self, image: &str, layer: Option<&str>, status: Option<&str>) {
        let Some(status) = status else { return };
        let key = layer.unwrap_or("").to_string();
        if self.last.get(&key).map(String::as_str) == Some(status) {
            return;
        }
        self.last.insert(key, status.to_string());
        tracing::debug!(image, layer = layer.unwrap_or(""), status, "pull progress");
    }
}

fn absent_ok<T>(r: Result<T, Error>) -> Result<bool, Error> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Connects to a `DOCKER_HOST`-style endpoint without talking to it yet.
pub(crate) fn connect(endpoint: &str, timeout_secs: u64) -> Result<Docker, Error> {
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
