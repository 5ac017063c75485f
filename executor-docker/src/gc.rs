//! Removal by label: one build's resources (`stop`), and every resource of this executor's
//! prefix that is an orphan (the GC behind `Executor::gc`, `cleanup` and `sdx gc`):
//!
//! * its `screwdriver.cd/expires-at` label has passed, or
//! * its `screwdriver.cd/owner` is certainly gone ([`Liveness::Gone`]: e.g. the process
//!   whose `start` was killed half-way, or that ran the build and exited), found at once
//!   rather than hours later.
//!
//! A resource is this executor's when its `sdbuild` label is exactly
//! `<prefix><its screwdriver.cd/build-id label>`, so executors with different prefixes
//! sharing one daemon never collect each other's builds. A resource without a readable
//! expiry is never collected.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use chrono::{DateTime, Utc};
use executor_base::labels::{
    LABEL_BUILD_ID, LABEL_EXPIRES, LABEL_MANAGED_BY, LABEL_SDBUILD, MANAGED_BY,
};
use executor_base::owner::LABEL_OWNER;
use executor_base::{BuildId, BuildLabels, BuildStatus, Error, GcReport, Liveness, Owner};

use crate::client::Engine;
use crate::executor::DockerExecutor;
use crate::plan::Names;

/// Removes every container, then every volume, labelled `sdbuild=<name>`, plus the
/// build's well-known names (in case a label was lost). Returns how many existed.
pub(crate) async fn remove_build(engine: &Engine, names: &Names) -> Result<usize, Error> {
    let selector = vec![names.selector()];
    let mut containers: BTreeSet<String> = engine
        .list_containers(&selector)
        .await?
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    containers.insert(names.build.clone());
    containers.insert(names.init.clone());
    let mut removed = 0;
    for r in futures::future::join_all(containers.iter().map(|c| engine.remove_container(c))).await
    {
        removed += usize::from(r?);
    }
    let mut volumes: BTreeSet<String> = engine
        .list_volumes(&selector)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    volumes.insert(names.tools.clone());
    volumes.insert(names.token.clone());
    for r in futures::future::join_all(volumes.iter().map(|v| engine.remove_volume(v))).await {
        removed += usize::from(r?);
    }
    Ok(removed)
}

/// The status of a build container that has not ended but whose owner is gone: `Lost`
/// (nobody will deliver its token, follow it or stop it); `None` otherwise.
pub(crate) fn orphaned(c: &ContainerInspectResponse) -> Option<BuildStatus> {
    let state = c.state.as_ref()?.status?;
    let started = match state {
        ContainerStateStatusEnum::CREATED => Some(false),
        ContainerStateStatusEnum::RUNNING
        | ContainerStateStatusEnum::PAUSED
        | ContainerStateStatusEnum::RESTARTING => None,
        _ => return None,
    };
    let label = c.config.as_ref()?.labels.as_ref()?.get(LABEL_OWNER)?;
    if Owner::liveness_of_label(Some(label)) != Liveness::Gone {
        return None;
    }
    let owner = Owner::parse(label)
        .map(|o| o.to_string())
        .unwrap_or_default();
    let mut s = BuildStatus::lost(
        started,
        format!(
            "orphaned: its owner ({owner}) is gone (its start was killed half-way, or the \
             process that ran it exited); the garbage collector removes it"
        ),
    );
    if let Some(f) = s.failure.as_mut() {
        f.evidence = Some(format!("{LABEL_OWNER}={label}"));
    }
    Some(s)
}

/// How long a build container may stay created but not started before its start counts
/// as dead: a live start goes from the create to the start in seconds (each call is
/// bounded by `breaker.callTimeoutMs` and the retry budget; the pull comes before).
pub(crate) const ABANDONED_START: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The status of a build container created more than [`ABANDONED_START`] ago and never
/// started, which no start of this process is working on (the caller checks): `Lost`,
/// never started. The process whose start created it died half-way; whoever adopts the
/// build (a restarted server, another instance on a shared store) may start it again.
/// `None` otherwise. Found by state and age, not by owner: a server's resources belong
/// to its deployment, which outlives the process that died.
pub(crate) fn abandoned_start(
    c: &ContainerInspectResponse,
    now: DateTime<Utc>,
) -> Option<BuildStatus> {
    if c.state.as_ref()?.status? != ContainerStateStatusEnum::CREATED {
        return None;
    }
    let created = DateTime::parse_from_rfc3339(c.created.as_deref()?).ok()?;
    let age = now.signed_duration_since(created);
    if age < ABANDONED_START {
        return None;
    }
    Some(BuildStatus::lost(
        Some(false),
        format!(
            "the build container was created {} s ago and never started: the start that \
             created it is gone (its process was killed or crashed half-way)",
            age.num_seconds()
        ),
    ))
}

/// Whether labels mark a resource of the executor with `prefix`; returns its build id.
fn ours(prefix: &str, labels: &HashMap<String, String>) -> Option<BuildId> {
    let id: BuildId = labels.get(LABEL_BUILD_ID)?.parse().ok()?;
    (labels.get(LABEL_SDBUILD)? == &executor_base::build_name(prefix, id)).then_some(id)
}

/// Finds (and unless `dry_run`, removes) expired and orphaned resources of `exec`'s prefix.
pub(crate) async fn collect(
    exec: &DockerExecutor,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<GcReport, Error> {
    let engine = &exec.engine;
    let prefix = &exec.cfg.prefix;
    let filter = vec![
        format!("{LABEL_MANAGED_BY}={MANAGED_BY}"),
        LABEL_EXPIRES.to_string(),
    ];
    let expired = |labels: &HashMap<String, String>| -> Option<BuildId> {
        let id = ours(prefix, labels)?;
        let label = |k: &str| labels.get(k).map(String::as_str);
        (BuildLabels::is_expired(label(LABEL_EXPIRES), now)
            || Owner::liveness_of_label(label(LABEL_OWNER)) == Liveness::Gone)
            .then_some(id)
    };

    let mut builds = BTreeSet::new();
    let mut containers = Vec::new();
    for c in engine.list_containers(&filter).await? {
        let labels = c.labels.clone().unwrap_or_default();
        if let Some(id) = expired(&labels)
            && let Some(name) = c.names.as_ref().and_then(|n| n.first())
        {
            builds.insert(id);
            containers.push(name.trim_start_matches('/').to_string());
        }
    }
    let mut volumes = Vec::new();
    for v in engine.list_volumes(&filter).await? {
        if let Some(id) = expired(&v.labels) {
            builds.insert(id);
            volumes.push(v.name);
        }
    }
    containers.sort();
    volumes.sort();
    let report = GcReport {
        dry_run,
        expired: containers
            .iter()
            .map(|c| format!("container/{c}"))
            .chain(volumes.iter().map(|v| format!("volume/{v}")))
            .collect(),
    };
    if dry_run || report.expired.is_empty() {
        return Ok(report);
    }
    for id in &builds {
        // A build we still thought running ran past its expiry.
        if matches!(exec.builds.get(*id), Some(crate::state::Known::Live)) {
            exec.builds.ended(
                *id,
                BuildStatus::timed_out(
                    "expired: removed by the garbage collector after its timeout",
                ),
            );
        }
    }
    for r in futures::future::join_all(containers.iter().map(|c| engine.remove_container(c))).await
    {
        r?;
    }
    for r in futures::future::join_all(volumes.iter().map(|v| engine.remove_volume(v))).await {
        r?;
    }
    tracing::info!(
        removed = report.expired.len(),
        "garbage-collected expired and orphaned build resources"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_prefix_is_ours() {
        let labels = |sdbuild: &str, id: &str| {
            HashMap::from([
                (LABEL_SDBUILD.to_string(), sdbuild.to_string()),
                (LABEL_BUILD_ID.to_string(), id.to_string()),
            ])
        };
        assert_eq!(
            ours("ci-", &labels("ci-42", "42")).map(BuildId::get),
            Some(42)
        );
        assert_eq!(ours("", &labels("ci-42", "42")), None);
        assert_eq!(ours("ci-", &labels("ci-42", "43")), None);
        assert_eq!(ours("", &labels("42", "42")).map(BuildId::get), Some(42));
        assert_eq!(ours("", &HashMap::new()), None);
    }

    #[test]
    fn a_container_left_created_by_a_dead_start_is_lost_never_started() {
        use bollard::models::ContainerState;
        let c = |status, created: &str| ContainerInspectResponse {
            created: Some(created.to_string()),
            state: Some(ContainerState {
                status: Some(status),
                ..ContainerState::default()
            }),
            ..ContainerInspectResponse::default()
        };
        let now: DateTime<Utc> = "2026-12-04T10:05:00Z".parse().unwrap();
        let old = "2026-12-04T10:00:00.123456789Z";
        let s = abandoned_start(&c(ContainerStateStatusEnum::CREATED, old), now).unwrap();
        assert_eq!(s.phase, executor_base::Phase::Lost);
        assert_eq!(s.failure.unwrap().build_started, Some(false));
        assert!(s.message.contains("299 s ago") || s.message.contains("300 s ago"));
        // A start still under way somewhere, or a container that ran: not abandoned.
        let fresh = "2026-12-04T10:04:30Z";
        assert!(abandoned_start(&c(ContainerStateStatusEnum::CREATED, fresh), now).is_none());
        assert!(abandoned_start(&c(ContainerStateStatusEnum::RUNNING, old), now).is_none());
        assert!(abandoned_start(&c(ContainerStateStatusEnum::EXITED, old), now).is_none());
    }
}
