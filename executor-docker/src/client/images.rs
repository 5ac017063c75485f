//! Image pulls, with progress logged per layer.

use std::collections::HashMap;
use std::time::Instant;

use bollard::query_parameters::CreateImageOptionsBuilder;
use executor_base::engine::{CallClass, Idempotency};
use executor_base::{Error, ErrorKind, ImageRef};
use futures::StreamExt;

use crate::error::{self, map};

use super::{DEFAULT_REGISTRY, Engine, PULL_SLACK};

impl Engine {
    /// Pulls `image` (`name[:tag]` or `name@digest`), reporting progress through tracing.
    ///
    /// A daemon that cannot be reached is its usual temporary `Unavailable`; anything the
    /// daemon answers (the registry's refusal or error, an unknown manifest, the pull
    /// bound passing) is [`ErrorKind::ImagePull`] naming the registry and the cause, and
    /// an answer for the daemon's breakers (see the module docs).
    pub(crate) async fn pull(&self, image: &ImageRef) -> Result<(), Error> {
        let started = Instant::now();
        let registry = image.registry().unwrap_or(DEFAULT_REGISTRY);
        let (from_image, tag) = match image.digest() {
            Some(_) => (image.as_str().to_string(), None),
            None => (
                image.name(),
                Some(image.tag().unwrap_or("latest").to_string()),
            ),
        };
        tracing::info!(image = %image, registry, "pulling image");
        let (from_image, tag) = (&from_image, &tag);
        let bound = self.inner.pull_timeout;
        let ep = &self.inner.endpoint;
        let one_pull = || async move {
            let d = self.connected().await?.puller.clone();
            let mut opts = CreateImageOptionsBuilder::new().from_image(from_image);
            if let Some(t) = tag {
                opts = opts.tag(t);
            }
            let pulled = async {
                let mut stream = d.create_image(Some(opts.build()), None, None);
                let mut progress = Progress::default();
                while let Some(item) = stream.next().await {
                    let info = item?;
                    progress.report(image.as_str(), info.id.as_deref(), info.status.as_deref());
                }
                Ok::<(), bollard::errors::Error>(())
            };
            match tokio::time::timeout(bound, pulled).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) if error::daemon_answered(&e) => {
                    Err(error::registry_failure(image, registry, map(e, ep)))
                }
                Ok(Err(e)) => Err(map(e, ep)),
                Err(_) => Err(error::registry_failure(
                    image,
                    registry,
                    Error::new(
                        ErrorKind::Timeout,
                        format!("the pull did not finish within {} s", bound.as_secs()),
                    ),
                )),
            }
        };
        let r = self
            .inner
            .pulls
            .call_with_timeout(
                CallClass::Start,
                "pull_image",
                Idempotency::Idempotent,
                bound + PULL_SLACK * 2,
                || {
                    self.inner.calls.call_with_timeout(
                        CallClass::Start,
                        "pull_image",
                        Idempotency::Idempotent,
                        bound + PULL_SLACK,
                        one_pull,
                    )
                },
            )
            .await;
        match r {
            Ok(()) => {
                tracing::info!(image = %image, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(image = %image, error = %e, "image pull failed");
                Err(error::transient_registry_failure_is_temporary(e))
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
