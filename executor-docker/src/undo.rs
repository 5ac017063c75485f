//! [`Undo`]: what a `start` created so far, removed again when the start fails.
//!
//! A name is recorded *before* its create call, so a create that reached the daemon but
//! whose answer was lost (timeout, broken connection) is removed too. A create refused
//! with 409 (the name belongs to another, live build) is dropped from the record together
//! with the volumes, which then belong to that build. If the `start` future is dropped
//! half-way (the caller gave up), the removal runs on a spawned task.

use executor_base::{Error, ErrorKind};

use crate::client::Engine;

/// Resources to remove unless disarmed.
#[derive(Debug)]
pub(crate) struct Undo {
    engine: Engine,
    containers: Vec<String>,
    volumes: Vec<String>,
    armed: bool,
}

impl Undo {
    /// Nothing recorded yet.
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine,
            containers: Vec::new(),
            volumes: Vec::new(),
            armed: true,
        }
    }

    /// A container is about to be created.
    pub(crate) fn container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }

    /// A volume is about to be created.
    pub(crate) fn volume(&mut self, name: &str) {
        self.volumes.push(name.to_string());
    }

    /// After a failed create of `name`: a name conflict means the resources are another
    /// build's, so neither the container nor the shared volumes are ours to remove.
    pub(crate) fn conflict_if(&mut self, e: &Error, name: &str) {
        if e.kind() == ErrorKind::AlreadyExists {
            self.containers.retain(|c| c != name);
            self.volumes.clear();
        }
    }

    /// The start succeeded: keep everything.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Removes everything recorded (containers first, then volumes), best effort.
    pub(crate) async fn run(mut self) {
        self.armed = false;
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        remove(self.engine.clone(), containers, volumes).await;
    }
}

async fn remove(engine: Engine, containers: Vec<String>, volumes: Vec<String>) {
    let removals = containers.iter().rev().map(|c| engine.remove_container(c));
    for (name, r) in containers
        .iter()
        .rev()
        .zip(futures::future::join_all(removals).await)
    {
        if let Err(e) = r {
            tracing::warn!(container = %name, error = %e, "could not remove container after a failed start; the GC will");
        }
    }
    let removals = volumes.iter().rev().map(|v| engine.remove_volume(v));
    for (name, r) in volumes
        .iter()
        .rev()
        .zip(futures::future::join_all(removals).await)
    {
        if let Err(e) = r {
            tracing::warn!(volume = %name, error = %e, "could not remove volume after a failed start; the GC will");
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed || (self.containers.is_empty() && self.volumes.is_empty()) {
            return;
        }
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(remove(self.engine.clone(), containers, volumes));
            }
            Err(_) => tracing::warn!(
                ?containers,
                ?volumes,
                "start abandoned outside a runtime; the GC will remove its resources"
            ),
        }
    }
}
