//! A compact projection of a pod: only what status classification needs.
//!
//! The watch keeps one [`PodView`] per pod instead of the whole `Pod` object (a few
//! kilobytes of JSON each), so the cache stays small for thousands of builds.
//!
//! Times come from the pod itself, so they mean the same after an executor restart: a
//! container waiting (for its image, say) waits since the kubelet could start it — the
//! build container since the pod's `Initialized` condition turned true (its init
//! containers finished), an init container since the pod's `status.startTime` — falling
//! back to the `PodScheduled` condition and the creation time. The view also remembers
//! whether the build container ever started (for "did the build start" on evictions and
//! deletions), which a later status may no longer show.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A pod's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some("Unknown") => PodPhase::Unknown,
            _ => PodPhase::Pending,
        }
    }

    /// The API's spelling (`Pending`, `Running`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

/// One container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerState {
    /// No status reported yet.
    Unknown,
    /// Waiting, with the reason and since when (from the pod's timestamps).
    Waiting {
        reason: Box<str>,
        message: Option<Box<str>>,
        since: DateTime<Utc>,
    },
    /// Running.
    Running,
    /// Terminated.
    Terminated {
        exit_code: i32,
        reason: Option<Box<str>>,
        message: Option<Box<str>>,
    },
}

/// A container's state plus whether its process ever started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerView {
    pub(crate) state: ContainerState,
    pub(crate) started: bool,
}

fn opt_len(s: &Option<Box<str>>) -> usize {
    s.as_deref().map_or(0, str::len)
}

impl ContainerView {
    /// Heap bytes this view owns (beyond its own size).
    fn heap_bytes(&self) -> usize {
        match &self.state {
            ContainerState::Waiting {
                reason, message, ..
            } => reason.len() + opt_len(message),
            ContainerState::Terminated {
                reason, message, ..
            } => opt_len(reason) + opt_len(message),
            _ => 0,
        }
    }

    const UNKNOWN: ContainerView = ContainerView {
        state: ContainerState::Unknown,
        started: false,
    };

    /// The view of `cs`; a waiting container waits since `waiting_since`, else (a pod
    /// without timestamps) since the previous view said, else since `now`.
    fn from_status(
        cs: &ContainerStatus,
        previous: Option<&ContainerView>,
        waiting_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let st = cs.state.as_ref();
        let mut started = previous.is_some_and(|p| p.started);
        let state = if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            // A container that could not start (StartError) terminates without startedAt.
            started |= t.started_at.is_some();
            ContainerState::Terminated {
                exit_code: t.exit_code,
                reason: boxed(t.reason.as_deref()),
                message: boxed(t.message.as_deref()),
            }
        } else if st.and_then(|s| s.running.as_ref()).is_some() {
            started = true;
            ContainerState::Running
        } else if let Some(w) = st.and_then(|s| s.waiting.as_ref()) {
            ContainerState::Waiting {
                reason: w.reason.as_deref().unwrap_or("Waiting").into(),
                message: boxed(w.message.as_deref()),
                since: waiting_since
                    .or(previous.and_then(|p| p.waiting().map(|w| w.2)))
                    .unwrap_or(now),
            }
        } else {
            ContainerState::Unknown
        };
        Self { state, started }
    }

    /// The waiting reason, if waiting.
    pub(crate) fn waiting(&self) -> Option<(&str, Option<&str>, DateTime<Utc>)> {
        match &self.state {
            ContainerState::Waiting {
                reason,
                message,
                since,
            } => Some((reason, message.as_deref(), *since)),
            _ => None,
        }
    }

    /// The termination reason and exit code, if terminated.
    pub(crate) fn terminated(&self) -> Option<(i32, Option<&str>, Option<&str>)> {
        match &self.state {
            ContainerState::Terminated {
                exit_code,
                reason,
                message,
            } => Some((*exit_code, reason.as_deref(), message.as_deref())),
            _ => None,
        }
    }
}

/// One pod condition the policy cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConditionView {
    pub(crate) type_: Box<str>,
    pub(crate) status: Box<str>,
    pub(crate) reason: Option<Box<str>>,
    pub(crate) message: Option<Box<str>>,
    pub(crate) since: Option<DateTime<Utc>>,
}

/// What the cache keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodView {
    pub(crate) name: Box<str>,
    /// `metadata.resourceVersion` as a number, when it is one (etcd's revision, as every
    /// API server stores it; the API calls it opaque, so `None` just means "cannot
    /// order"): tells an older answer from a newer one, see [`PodView::is_newer_than`].
    pub(crate) resource_version: Option<u64>,
    pub(crate) created: Option<DateTime<Utc>>,
    /// `metadata.deletionTimestamp` is set (someone asked for deletion).
    pub(crate) deleting: bool,
    pub(crate) phase: PodPhase,
    pub(crate) reason: Option<Box<str>>,
    pub(crate) message: Option<Box<str>>,
    pub(crate) node_assigned: bool,
    pub(crate) conditions: Box<[ConditionView]>,
    /// The latest `lastTransitionTime` of any condition (else the creation time): since
    /// when the pod is in its current shape, e.g. how long phase `Unknown` has lasted.
    pub(crate) changed: Option<DateTime<Utc>>,
    /// The first init container that has not completed (or the last one).
    pub(crate) init: ContainerView,
    /// The build container (the pod's first container).
    pub(crate) build: ContainerView,
}

/// Converts an API timestamp to `chrono`.
pub(crate) fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

fn boxed(s: Option<&str>) -> Option<Box<str>> {
    s.filter(|s| !s.is_empty()).map(Into::into)
}

/// When the condition `type_` of `pod` last turned `True`.
pub(crate) fn became_true(pod: &Pod, type_: &str) -> Option<DateTime<Utc>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")?
        .last_transition_time
        .as_ref()
        .and_then(to_chrono)
}

impl PodView {
    /// Projects `pod`, carrying the `started` flags over from `previous` (the view of
    /// the same pod before this update). Only conditions whose type and status
    /// `keep_condition` accepts are kept. `now` stands in for timestamps the pod lacks.
    pub(crate) fn from_pod(
        pod: &Pod,
        previous: Option<&PodView>,
        now: DateTime<Utc>,
        keep_condition: impl Fn(&str, &str) -> bool,
    ) -> Self {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let spec = pod.spec.as_ref();
        let build_name = spec
            .and_then(|s| s.containers.first())
            .map(|c| c.name.as_str());
        let created = meta.creation_timestamp.as_ref().and_then(to_chrono);
        let scheduled = became_true(pod, "PodScheduled");
        let started_at = status
            .and_then(|s| s.start_time.as_ref())
            .and_then(to_chrono);
        let init_since = started_at.or(scheduled).or(created);
        let build_since = became_true(pod, "Initialized").or(init_since);
        let build = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| Some(c.name.as_str()) == build_name)
                    .or_else(|| cs.first())
            })
            .map(|cs| ContainerView::from_status(cs, previous.map(|p| &p.build), build_since, now))
            .unwrap_or_else(|| {
                previous
                    .map(|p| p.build.clone())
                    .unwrap_or(ContainerView::UNKNOWN)
            });
        let init = status
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| {
                        let done = c.state.as_ref().and_then(|s| s.terminated.as_ref());
                        done.is_none_or(|t| t.exit_code != 0)
                    })
                    .or_else(|| cs.last())
            })
            .map(|cs| ContainerView::from_status(cs, previous.map(|p| &p.init), init_since, now))
            .unwrap_or(ContainerView::UNKNOWN);
        let conditions = status
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .filter(|c| keep_condition(&c.type_, &c.status))
                    .map(|c| ConditionView {
                        type_: c.type_.as_str().into(),
                        status: c.status.as_str().into(),
                        reason: boxed(c.reason.as_deref()),
                        message: boxed(c.message.as_deref()),
                        since: c.last_transition_time.as_ref().and_then(to_chrono),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let changed = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref().and_then(to_chrono))
            .chain(created)
            .max();
        Self {
            name: meta.name.as_deref().unwrap_or_default().into(),
            resource_version: meta
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
            created,
            deleting: meta.deletion_timestamp.is_some(),
            phase: PodPhase::parse(status.and_then(|s| s.phase.as_deref())),
            reason: boxed(status.and_then(|s| s.reason.as_deref())),
            message: boxed(status.and_then(|s| s.message.as_deref())),
            node_assigned: spec
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty()),
            conditions,
            changed,
            init,
            build,
        }
    }

    /// Whether `other` (a view of the same pod) was read later than this one: a GET
    /// answered after a watch event, or a watch event lagging behind a GET, must not put
    /// an older state back in the cache (a running build shown `pulling` again). When a
    /// resource version is not a number, the later arrival wins, as before.
    pub(crate) fn is_newer_than(&self, other: &PodView) -> bool {
        match (self.resource_version, other.resource_version) {
            (Some(mine), Some(theirs)) => mine > theirs,
            _ => false,
        }
    }

    /// Whether the build's own process ever started.
    pub(crate) fn build_started(&self) -> bool {
        self.build.started
    }

    /// Heap bytes this view owns (beyond its own size).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.name.len()
            + opt_len(&self.reason)
            + opt_len(&self.message)
            + std::mem::size_of_val(&*self.conditions)
            + self
                .conditions
                .iter()
                .map(|c| c.type_.len() + c.status.len() + opt_len(&c.reason) + opt_len(&c.message))
                .sum::<usize>()
            + self.init.heap_bytes()
            + self.build.heap_bytes()
    }
}
