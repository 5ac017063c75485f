//! [`BuildTimings`]: where one build's time went, and how much memory it peaked at, as
//! far as its engine can tell.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Timestamps of one build's life on its engine, each `None` where the engine does not
/// know it, plus its peak memory where the engine accounts it.
///
/// What each backend fills:
///
/// | field | process | Docker | Kubernetes | Jenkins | Gearman |
/// |---|---|---|---|---|---|
/// | `accepted` | `start` (the record) | `start` called (this process) | pod created | queue item `inQueueSince` | `start` called |
/// | `scheduled` | — | build container created | `PodScheduled` | build `timestamp` | a launcher announced it |
/// | `pullStarted` / `pullFinished` | — | our pulls (this process) | — | — | — |
/// | `running` | `launch` spawned | container `StartedAt` | build container `startedAt` | build `timestamp` | announced running / first `WORK_STATUS` |
/// | `finished` | the reaper saw `launch` exit | container `FinishedAt` | `terminated.finishedAt` | `timestamp + duration` | the job ended |
/// | `peakMemoryBytes` | cgroup v2 `memory.peak` | stats samples (`max_usage` on cgroup v1) | — (needs metrics-server) | — | — |
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use executor_base::BuildTimings;
/// let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
/// let t = BuildTimings {
///     accepted: Some(t0),
///     running: Some(t0 + chrono::Duration::milliseconds(1500)),
///     finished: Some(t0 + chrono::Duration::seconds(12)),
///     peak_memory_bytes: Some(48 << 20),
///     ..BuildTimings::default()
/// };
/// assert_eq!(t.to_string(), "starting 1.5s, running 10.5s; peak memory 48.0 MiB");
/// assert_eq!(t.start_latency(), Some(std::time::Duration::from_millis(1500)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BuildTimings {
    /// The executor accepted the build (`start` was called, the job was queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<DateTime<Utc>>,
    /// The engine placed it (a node chosen, a container created, the queue left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<DateTime<Utc>>,
    /// An image pull began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_started: Option<DateTime<Utc>>,
    /// The image pull ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_finished: Option<DateTime<Utc>>,
    /// The build's own process started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<DateTime<Utc>>,
    /// The build's process ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// The most memory the build used, in bytes, where the engine accounts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

fn between(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<Duration> {
    (b? - a?).to_std().ok()
}

impl BuildTimings {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// From accepted to running.
    pub fn start_latency(&self) -> Option<Duration> {
        between(self.accepted, self.running)
    }

    /// The phases known, in the order they happened: each timestamp known starts a
    /// phase that lasts until the next one known: `accepted` starts `queued` (when the
    /// engine tells when it placed the build) or `starting`, `scheduled` starts
    /// `starting`, `pullStarted` starts `pulling`, `pullFinished` starts `starting`
    /// again, `running` starts `running`, and `finished` ends it. `accepted` comes first
    /// and `running`, `finished` last; the placement and the pull come between in the
    /// order of their times (Docker pulls before it creates the container, Kubernetes
    /// after it placed the pod). A time earlier than the one before it (the clocks of two
    /// machines) counts as equal to it, so no phase is negative. Phases of no length are
    /// left out; two in a row of the same name are one.
    pub fn phases(&self) -> Vec<(&'static str, Duration)> {
        type Mark = (Option<DateTime<Utc>>, Option<&'static str>);
        let first = if self.scheduled.is_some() {
            "queued"
        } else {
            "starting"
        };
        let mut middle: Vec<Mark> = vec![
            (self.scheduled, Some("starting")),
            (self.pull_started, Some("pulling")),
            (self.pull_finished, Some("starting")),
        ];
        // Stable: equal times keep the order above.
        middle.sort_by_key(|(t, _)| *t);
        let marks = std::iter::once((self.accepted, Some(first)))
            .chain(middle)
            .chain([(self.running, Some("running")), (self.finished, None)])
            .filter_map(|(t, name)| Some((t?, name)));
        let mut out: Vec<(&'static str, Duration)> = Vec::new();
        let mut open: Option<(DateTime<Utc>, Option<&'static str>)> = None;
        for (t, name) in marks {
            let Some((from, current)) = open else {
                open = Some((t, name));
                continue;
            };
            let t = t.max(from);
            if let (Some(current), Some(d)) = (current, between(Some(from), Some(t)))
                && !d.is_zero()
            {
                match out.last_mut() {
                    Some((last, sum)) if *last == current => *sum += d,
                    _ => out.push((current, d)),
                }
            }
            open = Some((t, name));
        }
        out
    }
}

/// `queued 0.2s, pulling 3.1s, starting 0.4s, running 12.0s; peak memory 48.0 MiB`
/// (the parts known; empty when nothing is).
impl fmt::Display for BuildTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phases: Vec<String> = self
            .phases()
            .iter()
            .map(|(n, d)| format!("{n} {:.1}s", d.as_secs_f64()))
            .collect();
        f.write_str(&phases.join(", "))?;
        if let Some(b) = self.peak_memory_bytes {
            if !phases.is_empty() {
                f.write_str("; ")?;
            }
            write!(f, "peak memory {:.1} MiB", b as f64 / (1024.0 * 1024.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(ms: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_millis_opt(1_700_000_000_000 + ms).unwrap())
    }

    #[test]
    fn a_docker_start_with_a_pull_is_queued_pulling_starting_running() {
        // Docker: accepted, our pull, the container created (scheduled), started, exited.
        let t = BuildTimings {
            accepted: at(0),
            pull_started: at(100),
            pull_finished: at(3_100),
            scheduled: at(3_300),
            running: at(3_500),
            finished: at(13_500),
            peak_memory_bytes: Some(3 << 20),
        };
        assert_eq!(
            t.phases(),
            vec![
                ("queued", Duration::from_millis(100)),
                ("pulling", Duration::from_millis(3_000)),
                ("starting", Duration::from_millis(400)),
                ("running", Duration::from_millis(10_000)),
            ]
        );
        assert_eq!(
            t.to_string(),
            "queued 0.1s, pulling 3.0s, starting 0.4s, running 10.0s; peak memory 3.0 MiB"
        );
        assert_eq!(t.start_latency(), Some(Duration::from_millis(3_500)));
    }

    #[test]
    fn phases_of_no_length_are_left_out_and_skew_never_goes_negative() {
        // The process backend: accepted and running are the same instant.
        let t = BuildTimings {
            accepted: at(0),
            running: at(0),
            finished: at(900),
            ..BuildTimings::default()
        };
        assert_eq!(t.to_string(), "running 0.9s");
        // Jenkins' clock behind ours: its running is before our accepted.
        let t = BuildTimings {
            accepted: at(500),
            running: at(0),
            finished: at(2_000),
            ..BuildTimings::default()
        };
        assert_eq!(t.phases(), vec![("running", Duration::from_millis(1_500))]);
        assert_eq!(t.start_latency(), None);
    }

    #[test]
    fn nothing_known_is_empty_and_says_nothing() {
        let t = BuildTimings::default();
        assert!(t.is_empty());
        assert_eq!(t.to_string(), "");
        let only_memory = BuildTimings {
            peak_memory_bytes: Some(1 << 30),
            ..BuildTimings::default()
        };
        assert!(!only_memory.is_empty());
        assert_eq!(only_memory.to_string(), "peak memory 1024.0 MiB");
    }

    #[test]
    fn json_is_camel_case_and_leaves_unknown_fields_out() {
        let t = BuildTimings {
            pull_started: at(0),
            peak_memory_bytes: Some(7),
            ..BuildTimings::default()
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"pullStarted": "2023-11-14T22:13:20Z", "peakMemoryBytes": 7})
        );
        assert_eq!(serde_json::from_value::<BuildTimings>(v).unwrap(), t);
    }
}
