//! The one declaration of every metric the library records: name, kind, labels, meaning.
//!
//! The recording code names metrics only through these constants, and the README's table
//! is generated from [`CATALOG`] (a test checks it), so the documented names and labels
//! stay the ones recorded.

use std::path::Path;

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (Prometheus `counter`, name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations (seconds).
    Histogram,
}

impl MetricKind {
    /// The lowercase name Prometheus uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric: its stable name, kind, label names and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// The metric's name (`sdx_` prefix, unit suffix).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Its label names; every value of each is bounded (no build ids, no image names).
    pub labels: &'static [&'static str],
    /// What it measures and when it changes.
    pub help: &'static str,
}

/// `sdx_engine_calls_total`.
pub const ENGINE_CALLS: MetricDef = MetricDef {
    name: "sdx_engine_calls_total",
    kind: MetricKind::Counter,
    labels: &["backend", "operation", "class", "outcome"],
    help: "Attempts of engine calls (every retry counts). outcome: `ok`, the error kind (`unavailable`, `timeout`, `not_found`, ...), or `refused` when an open circuit breaker failed the call without sending it.",
};

/// `sdx_engine_call_duration_seconds`.
pub const ENGINE_CALL_DURATION: MetricDef = MetricDef {
    name: "sdx_engine_call_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["backend", "operation", "class"],
    help: "Duration of each engine call attempt that was sent (refused calls are not timed).",
};

/// `sdx_engine_retries_total`.
pub const ENGINE_RETRIES: MetricDef = MetricDef {
    name: "sdx_engine_retries_total",
    kind: MetricKind::Counter,
    labels: &["backend", "operation", "class"],
    help: "Retries after a temporary engine error (the backoff sleep that follows).",
};

/// `sdx_breaker_transitions_total`.
pub const BREAKER_TRANSITIONS: MetricDef = MetricDef {
    name: "sdx_breaker_transitions_total",
    kind: MetricKind::Counter,
    labels: &["backend", "class", "state"],
    help: "Circuit breaker state changes; state is the new one: `open`, `half_open` or `closed`.",
};

/// `sdx_builds_started_total`.
pub const BUILDS_STARTED: MetricDef = MetricDef {
    name: "sdx_builds_started_total",
    kind: MetricKind::Counter,
    labels: &["backend"],
    help: "Builds the router started (the engine accepted the start).",
};

/// `sdx_builds_finished_total`.
pub const BUILDS_FINISHED: MetricDef = MetricDef {
    name: "sdx_builds_finished_total",
    kind: MetricKind::Counter,
    labels: &["backend", "phase", "reason"],
    help: "Builds seen ending, once each: phase `succeeded`, `failed`, `canceled`, `timed_out` or `lost`; reason the failure reason (`nonZeroExit`, `outOfMemory`, `imagePull`, ...) or `none`.",
};

/// `sdx_builds_in_flight`.
pub const BUILDS_IN_FLIGHT: MetricDef = MetricDef {
    name: "sdx_builds_in_flight",
    kind: MetricKind::Gauge,
    labels: &["backend"],
    help: "Builds started (or adopted) and not yet seen ending.",
};

/// `sdx_build_start_latency_seconds`.
pub const BUILD_START_LATENCY: MetricDef = MetricDef {
    name: "sdx_build_start_latency_seconds",
    kind: MetricKind::Histogram,
    labels: &["backend"],
    help: "From `start` called to the build seen running, once per build this process started.",
};

/// `sdx_timers_pending`.
pub const TIMERS_PENDING: MetricDef = MetricDef {
    name: "sdx_timers_pending",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Build deadlines armed in the timer service and not yet fired or disarmed.",
};

/// `sdx_timers_fired_total`.
pub const TIMERS_FIRED: MetricDef = MetricDef {
    name: "sdx_timers_fired_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Build deadlines that passed and were handed to the expiry handler.",
};

/// `sdx_timer_lateness_seconds`.
pub const TIMER_LATENESS: MetricDef = MetricDef {
    name: "sdx_timer_lateness_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "How long after its deadline each timer fired (large after a restart).",
};

/// `sdx_k8s_watch_synced`.
pub const K8S_WATCH_SYNCED: MetricDef = MetricDef {
    name: "sdx_k8s_watch_synced",
    kind: MetricKind::Gauge,
    labels: &["namespace"],
    help: "1 while the shared pod watch of the namespace is connected and its cache complete, else 0.",
};

/// `sdx_k8s_cache_synced_timestamp_seconds`.
pub const K8S_CACHE_SYNCED_AT: MetricDef = MetricDef {
    name: "sdx_k8s_cache_synced_timestamp_seconds",
    kind: MetricKind::Gauge,
    labels: &["namespace"],
    help: "Unix time the pod cache was last known current (set when the watch syncs and when it loses sync; the executor's start before the first sync). While `sdx_k8s_watch_synced` is 0 the cache's age is `time() - sdx_k8s_cache_synced_timestamp_seconds`; while it is 1 the age is 0.",
};

/// `sdx_k8s_watch_relists_total`.
pub const K8S_WATCH_RELISTS: MetricDef = MetricDef {
    name: "sdx_k8s_watch_relists_total",
    kind: MetricKind::Counter,
    labels: &["namespace"],
    help: "Complete pod lists applied to the cache (the first one included).",
};

/// `sdx_k8s_watch_errors_total`.
pub const K8S_WATCH_ERRORS: MetricDef = MetricDef {
    name: "sdx_k8s_watch_errors_total",
    kind: MetricKind::Counter,
    labels: &["namespace"],
    help: "Pod watch failures (each failed reconnect attempt counts).",
};

/// `sdx_gearman_jobs_in_flight`.
pub const GEARMAN_JOBS_IN_FLIGHT: MetricDef = MetricDef {
    name: "sdx_gearman_jobs_in_flight",
    kind: MetricKind::Gauge,
    labels: &["side"],
    help: "Gearman build jobs in flight: side `executor` (submitted to gearmand, not complete) or `worker` (taken by the launcher worker, not complete).",
};

/// `sdx_gc_removed_total`.
pub const GC_REMOVED: MetricDef = MetricDef {
    name: "sdx_gc_removed_total",
    kind: MetricKind::Counter,
    labels: &["backend"],
    help: "Expired builds' leftovers garbage collection removed (dry runs do not count).",
};

/// Every metric the library records, in the README's order.
pub const CATALOG: &[MetricDef] = &[
    ENGINE_CALLS,
    ENGINE_CALL_DURATION,
    ENGINE_RETRIES,
    BREAKER_TRANSITIONS,
    BUILDS_STARTED,
    BUILDS_FINISHED,
    BUILDS_IN_FLIGHT,
    BUILD_START_LATENCY,
    TIMERS_PENDING,
    TIMERS_FIRED,
    TIMER_LATENESS,
    K8S_WATCH_SYNCED,
    K8S_CACHE_SYNCED_AT,
    K8S_WATCH_RELISTS,
    K8S_WATCH_ERRORS,
    GEARMAN_JOBS_IN_FLIGHT,
    GC_REMOVED,
];

/// The metric of `name`, if the catalog declares it.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    CATALOG.iter().find(|d| d.name == name)
}

/// Registers every metric's help text and unit with the installed recorder, so an
/// exporter prints `# HELP` lines. Call once after installing the recorder.
pub fn describe() {
    for d in CATALOG {
        let help = d.help.replace('`', "");
        match d.kind {
            MetricKind::Counter => ::metrics::describe_counter!(d.name, help),
            MetricKind::Gauge => ::metrics::describe_gauge!(d.name, help),
            MetricKind::Histogram => {
                ::metrics::describe_histogram!(d.name, ::metrics::Unit::Seconds, help)
            }
        }
    }
}

const OPEN: &str = "<!-- metrics -->";
const CLOSE: &str = "<!-- /metrics -->";

/// The Markdown table of [`CATALOG`] (name, kind, labels, meaning).
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | kind | labels | meaning |\n|---|---|---|---|\n");
    for d in CATALOG {
        let labels = if d.labels.is_empty() {
            "—".to_string()
        } else {
            d.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {} |\n",
            d.name,
            d.kind.as_str(),
            d.help.replace('|', "\\|")
        ));
    }
    out
}

/// Checks that `readme` holds [`markdown_table`] between `<!-- metrics -->` and
/// `<!-- /metrics -->`; the error shows the table to paste.
pub fn check_readme(readme: &str) -> Result<(), String> {
    let expected = markdown_table();
    let found = readme
        .split_once(OPEN)
        .and_then(|(_, rest)| rest.split_once(CLOSE))
        .map(|(t, _)| t.trim());
    match found {
        Some(t) if t == expected.trim() => Ok(()),
        Some(_) => Err(format!(
            "the README's metrics table disagrees with metrics::CATALOG; replace it with:\n{OPEN}\n{expected}{CLOSE}"
        )),
        None => Err(format!(
            "the README has no metrics table; add:\n{OPEN}\n{expected}{CLOSE}"
        )),
    }
}

/// [`check_readme`] on the file at `path`; with `SDX_BLESS_README` set, rewrites a stale
/// table in place instead (the markers must exist).
pub fn check_readme_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let Err(e) = check_readme(&text) else {
        return Ok(());
    };
    if std::env::var_os("SDX_BLESS_README").is_none() {
        return Err(format!(
            "{e}\n(or run the test with SDX_BLESS_README=1 to rewrite it)"
        ));
    }
    let (head, rest) = text.split_once(OPEN).ok_or_else(|| e.clone())?;
    let (_, tail) = rest.split_once(CLOSE).ok_or(e)?;
    let fresh = format!("{head}{OPEN}\n{}{CLOSE}{tail}", markdown_table());
    std::fs::write(path, fresh).map_err(|e| format!("{}: {e}", path.display()))
}
