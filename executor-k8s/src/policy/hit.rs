//! Whether a rule's [`Match`] applies to a pod, with the evidence and since when.

use chrono::{DateTime, Utc};

use super::Match;
use crate::view::PodView;

/// A rule's match on a pod: the evidence and when the condition began.
pub(super) struct Hit {
    pub(super) evidence: String,
    pub(super) detail: Option<String>,
    pub(super) since: Option<DateTime<Utc>>,
}

impl Match {
    pub(super) fn hit(&self, pod: &PodView) -> Option<Hit> {
        let containers = [&pod.init, &pod.build];
        match self {
            Match::Waiting { reason } => containers.iter().find_map(|c| {
                let (r, msg, since) = c.waiting()?;
                (r == reason).then(|| Hit {
                    evidence: evidence(r, msg),
                    detail: msg.map(str::to_string),
                    since: Some(since),
                })
            }),
            Match::Terminated { reason } => containers.iter().find_map(|c| {
                let (code, r, msg) = c.terminated()?;
                (r == Some(reason.as_str())).then(|| Hit {
                    evidence: format!("{} (exit code {code})", evidence(reason, msg)),
                    detail: msg.map(str::to_string),
                    since: pod.created,
                })
            }),
            Match::PodReason { reason } => {
                (pod.reason.as_deref() == Some(reason.as_str())).then(|| Hit {
                    evidence: evidence(reason, pod.message.as_deref()),
                    detail: pod.message.as_deref().map(str::to_string),
                    since: pod.created,
                })
            }
            // Since the pod last changed shape (a condition's transition), not since its
            // creation: a pod that ran for hours and just went `Unknown` gets its grace.
            Match::PodPhase { phase } => (pod.phase.as_str() == phase).then(|| Hit {
                evidence: format!("pod phase {phase}"),
                detail: pod.message.as_deref().map(str::to_string),
                since: pod.changed.or(pod.created),
            }),
            Match::Condition {
                type_,
                status,
                reason,
            } => pod
                .conditions
                .iter()
                .find(|c| {
                    *c.type_ == **type_
                        && *c.status == **status
                        && reason
                            .as_deref()
                            .is_none_or(|r| c.reason.as_deref() == Some(r))
                })
                .map(|c| Hit {
                    evidence: format!(
                        "{}={}{}",
                        c.type_,
                        c.status,
                        c.reason
                            .as_deref()
                            .map(|r| format!(" ({})", evidence(r, c.message.as_deref())))
                            .unwrap_or_default()
                    ),
                    detail: c.message.as_deref().map(str::to_string),
                    since: c.since.or(pod.created),
                }),
        }
    }

    /// Whether this rule needs the cache to keep a condition of this type and status.
    pub(super) fn wants_condition(&self, t: &str, st: &str) -> bool {
        matches!(self, Match::Condition { type_, status, .. } if type_ == t && status == st)
    }
}

pub(super) fn evidence(reason: &str, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("{reason}: {m}"),
        _ => reason.to_string(),
    }
}
