//! Container calls: create, start (checked before it is repeated), attach, upload, kill,
//! remove, inspect, memory and output, list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use executor_base::engine::{CallClass, Created, Idempotency, may_have_been_applied};
use executor_base::{Error, ErrorKind};
use futures::StreamExt;

use crate::error::{self, map};
use crate::stdin::StdinFeed;

use super::{Engine, gone_is_false};

impl Engine {
    /// Creates a container named `name`; returns its id, or `None` when the daemon does
    /// not have its image (a 404 the caller expects with pull policy `missing`).
    ///
    /// The name is the build's own, so the create is retried on any temporary error
    /// ([`EngineCalls::create_named`]): a kept-alive connection the daemon closed under
    /// the request cannot fail a start whose container was in fact created. A retry
    /// refused with 409 means the lost attempt created it; the container is inspected
    /// and must carry the labels we sent. Each attempt is bounded by the start timeout
    /// (the daemon creates the container's writable layer before it answers).
    pub(crate) async fn create_container(
        &self,
        name: &str,
        body: &ContainerCreateBody,
    ) -> Result<Option<String>, Error> {
        let endpoint = &self.inner.endpoint;
        let created = self
            .inner
            .calls
            .create_named_with_timeout(
                CallClass::Start,
                "create_container",
                self.inner.start_timeout,
                || async move {
                    let d = self.worker().await?;
                    let opts = CreateContainerOptionsBuilder::new().name(name).build();
                    match d.create_container(Some(opts), body.clone()).await {
                        Ok(r) => Ok(Some(r.id)),
                        Err(e) => {
                            let e = map(e, endpoint);
                            if error::is_missing_image(&e) {
                                Ok(None)
                            } else {
                                Err(e)
                            }
                        }
                    }
                },
            )
            .await?;
        match created {
            Created::Now(id) => Ok(id),
            Created::Earlier => {
                let found = self.inspect_container(name).await?;
                let labels = found
                    .as_ref()
                    .and_then(|c| c.config.as_ref()?.labels.as_ref());
                let ours = body.labels.as_ref().is_none_or(|want| {
                    labels.is_some_and(|have| want.iter().all(|(k, v)| have.get(k) == Some(v)))
                });
                match found.and_then(|c| c.id) {
                    Some(id) if ours => {
                        tracing::info!(
                            executor = crate::SCHEME,
                            container = name,
                            "the answer to a create was lost; the container it created was found"
                        );
                        Ok(Some(id))
                    }
                    _ => Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("container {name} exists and is not the one this start created"),
                    )
                    .with_operation("create_container")),
                }
            }
        }
    }

    /// Starts a container, at most once (already running is fine: Docker answers 304).
    ///
    /// Each attempt is bounded by the start timeout, not the call timeout: a loaded
    /// daemon answers starts late. A start whose answer was lost (a timeout, a connection
    /// broken after the request went out, a 5xx) may have started the container, and
    /// Docker starts an exited container again; so before a retry, and after a last
    /// attempt that failed so, the container is inspected, and one that has left
    /// `created` was started by the lost attempt (a build that ran and exited meanwhile
    /// must not run twice). Only a container still `created` is started again; Docker
    /// starts a container under its lock, so a repeat meeting a start still in flight
    /// waits for it and answers 304.
    pub(crate) async fn start_container(&self, name: &str) -> Result<(), Error> {
        // Set once a start request has been sent: from then on every attempt looks first
        // (whichever bound fired, bollard's or the attempt's, and whatever the error).
        let sent = &AtomicBool::new(false);
        let started = self
            .inner
            .calls
            .call_with_timeout(
                CallClass::Start,
                "start_container",
                Idempotency::Idempotent,
                self.inner.start_timeout,
                || async move {
                    if sent.load(Ordering::SeqCst) && self.was_started(name).await? {
                        return Ok(());
                    }
                    let d = self.worker().await?;
                    sent.store(true, Ordering::SeqCst);
                    d.start_container(name, None)
                        .await
                        .map_err(|e| map(e, &self.inner.endpoint))
                },
            )
            .await;
        match started {
            Err(e) if may_have_been_applied(&e) && sent.load(Ordering::SeqCst) => {
                match self.was_started(name).await {
                    Ok(true) => Ok(()),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    /// Whether the container `name` has been started (its state is no longer `created`,
    /// which Docker reports until the container first runs, also after a refused
    /// start). Logs the lost answer it explains. A container that is gone is an error.
    async fn was_started(&self, name: &str) -> Result<bool, Error> {
        let Some(found) = self.inspect_container(name).await? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("container {name} was removed while it was being started"),
            )
            .with_operation("start_container"));
        };
        let state = found.state.and_then(|s| s.status);
        let started = state.is_some_and(|s| s != ContainerStateStatusEnum::CREATED);
        if started {
            tracing::info!(
                executor = crate::SCHEME,
                container = name,
                state = ?state,
                "the answer to a start was lost; the container had started"
            );
        }
        Ok(started)
    }

    /// Attaches to the stdin (only) of a created container, for [`StdinFeed::deliver`]
    /// after its start. A call of the start: bounded by the start timeout.
    pub(crate) async fn attach_stdin(&self, name: &str) -> Result<StdinFeed, Error> {
        self.call_of_start("attach_container", |d| async move {
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
        })
        .await
    }

    /// Copies a tar archive into a container's file system (including its volumes). A
    /// call of the start: bounded by the start timeout.
    pub(crate) async fn upload(
        &self,
        container: &str,
        path: &str,
        tar: Bytes,
    ) -> Result<(), Error> {
        self.call_of_start("upload_to_container", |d| {
            // A stream body: bollard logs a full body's bytes at trace level, and this
            // one carries the token.
            let body = futures::stream::once(std::future::ready(tar.clone()));
            async move {
                let opts = UploadToContainerOptionsBuilder::new().path(path).build();
                d.upload_to_container(container, Some(opts), bollard::body_stream(body))
                    .await
            }
        })
        .await
    }

    /// Sends SIGKILL; a missing or not running container is fine (`Ok(false)`).
    pub(crate) async fn kill_container(&self, name: &str) -> Result<bool, Error> {
        self.call_expecting(
            CallClass::Stop,
            "kill_container",
            Idempotency::Idempotent,
            |e| match e.kind() {
                ErrorKind::AlreadyExists => Ok(false), // 409: not running
                _ => gone_is_false(e),
            },
            |d| async move {
                d.kill_container(
                    name,
                    Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
                )
                .await
                .map(|()| true)
            },
        )
        .await
    }

    /// Force-removes a container and its anonymous volumes; `Ok(false)` when absent.
    pub(crate) async fn remove_container(&self, name: &str) -> Result<bool, Error> {
        self.call_expecting(
            CallClass::Stop,
            "remove_container",
            Idempotency::Idempotent,
            |e| match e.kind() {
                // 409 "removal already in progress": someone else is removing it.
                ErrorKind::AlreadyExists => Ok(true),
                _ => gone_is_false(e),
            },
            |d| async move {
                let opts = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                d.remove_container(name, Some(opts)).await.map(|()| true)
            },
        )
        .await
    }

    /// Inspects a container; `None` when it does not exist.
    pub(crate) async fn inspect_container(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, Error> {
        self.call_expecting(
            CallClass::Read,
            "inspect_container",
            Idempotency::Idempotent,
            |e| match e.kind() {
                ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            },
            |d| async move { d.inspect_container(name, None).await.map(Some) },
        )
        .await
    }

    /// Follows a running container's stats stream (the daemon sends a sample about once a
    /// second and ends the stream when the container exits), calling `seen` with each
    /// sample's memory figure: the cgroup's own maximum (`max_usage`, cgroup v1) where the
    /// daemon reports it, else the current usage (cgroup v2). Not an engine call (no
    /// retry, breaker or call metrics: it lasts as long as the build); ends quietly on any
    /// error, which only means a less precise peak.
    pub(crate) async fn watch_memory(&self, name: &str, mut seen: impl FnMut(u64) + Send) {
        let Ok(d) = self.docker().await else { return };
        let opts = StatsOptionsBuilder::new()
            .stream(true)
            .one_shot(false)
            .build();
        let mut stream = d.stats(name, Some(opts));
        while let Some(Ok(sample)) = stream.next().await {
            if let Some(bytes) = sample
                .memory_stats
                .and_then(|m| m.max_usage.or(m.usage))
                .filter(|b| *b > 0)
            {
                seen(bytes);
            }
        }
    }

    /// The last `lines` lines of a container's standard output (where `launch` writes
    /// its handshake), as text; `None` when the container does not exist.
    pub(crate) async fn stdout_tail(
        &self,
        name: &str,
        lines: u32,
    ) -> Result<Option<String>, Error> {
        self.call_expecting(
            CallClass::Read,
            "container_logs",
            Idempotency::Idempotent,
            |e| match e.kind() {
                ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            },
            |d| async move {
                let opts = LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(false)
                    .tail(&lines.to_string())
                    .build();
                let mut stream = d.logs(name, Some(opts));
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk?.into_bytes());
                }
                Ok(Some(String::from_utf8_lossy(&out).into_owned()))
            },
        )
        .await
    }

    /// All containers (running or not) carrying every one of `labels` (`k` or `k=v`).
    pub(crate) async fn list_containers(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, Error> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        self.call(
            CallClass::Read,
            "list_containers",
            Idempotency::Idempotent,
            |d| {
                let filters = filters.clone();
                async move {
                    let opts = ListContainersOptionsBuilder::new()
                        .all(true)
                        .filters(&filters)
                        .build();
                    d.list_containers(Some(opts)).await
                }
            },
        )
        .await
    }
}
