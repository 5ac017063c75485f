//! The library's metrics, rendered by a real Prometheus recorder (installed for the test's
//! thread only), and the README table.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::catalog;
use crate::engine::{BreakerConfig, CallClass, EngineCalls, Idempotency, RetryPolicy};
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::router::Router;
use crate::status::{BuildStatus, FailureReason};
use crate::testkit::fake::FakeExecutor;
use crate::timer::{StoredDeadline, TimerService};
use crate::{BuildId, JobId, StartConfig, StopConfig};

fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// Every series' metric name, without the histogram suffixes.
fn names(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let series = l.rsplit_once(' ').map(|(s, _)| s).unwrap_or(l);
            let n = series.split('{').next().unwrap();
            ["_bucket", "_sum", "_count"]
                .iter()
                .fold(n, |n, s| n.strip_suffix(s).unwrap_or(n))
                .to_string()
        })
        .collect();
    out.dedup();
    out
}

fn unavailable() -> Error {
    Error::new(ErrorKind::Unavailable, "connection refused").temporary()
}

#[test]
fn readme_table_matches_the_catalog() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    catalog::check_readme_file(&readme).unwrap_or_else(|e| panic!("{e}"));
    for d in catalog::CATALOG {
        assert!(d.name.starts_with("sdx_"), "{}", d.name);
        assert_eq!(
            d.kind == catalog::MetricKind::Counter,
            d.name.ends_with("_total"),
            "{}: counters and only counters end in _total",
            d.name
        );
        assert_eq!(
            d.kind == catalog::MetricKind::Histogram,
            d.name.ends_with("_seconds") && d.kind != catalog::MetricKind::Gauge,
            "{}",
            d.name
        );
    }
}

#[tokio::test(start_paused = true)]
async fn engine_calls_are_counted_per_attempt_with_retries_and_latency() {
    let rec = recorder();
    let handle = rec.handle();
    let _g = metrics::set_default_local_recorder(&rec);
    let calls = EngineCalls::with_defaults("docker");
    let tries = AtomicU32::new(0);
    let got: u32 = calls
        .call_in(CallClass::Read, "inspect", Idempotency::Idempotent, || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if n < 2 { Err(unavailable()) } else { Ok(n) }
            }
        })
        .await
        .unwrap();
    assert_eq!(got, 2);
    let text = handle.render();
    let l = |o: &'static str| {
        [
            ("backend", "docker"),
            ("operation", "inspect"),
            ("class", "read"),
            ("outcome", o),
        ]
    };
    assert_eq!(
        sample(&text, "sdx_engine_calls_total", &l("unavailable")),
        2.0
    );
    assert_eq!(sample(&text, "sdx_engine_calls_total", &l("ok")), 1.0);
    let retries = [("backend", "docker"), ("operation", "inspect")];
    assert_eq!(sample(&text, "sdx_engine_retries_total", &retries), 2.0);
    // Without buckets the recorder renders a summary: _count and _sum.
    assert_eq!(
        sample(&text, "sdx_engine_call_duration_seconds_count", &retries),
        3.0
    );
    let sum = sample(&text, "sdx_engine_call_duration_seconds_sum", &retries);
    assert!(
        (sum - 0.060).abs() < 1e-6,
        "three 20 ms attempts, got {sum}"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_transitions_and_refusals_are_counted() {
    let rec = recorder();
    let handle = rec.handle();
    let _g = metrics::set_default_local_recorder(&rec);
    let breaker = BreakerConfig {
        max_failures: 2,
        reset_timeout: Duration::from_secs(30),
        ..BreakerConfig::default()
    };
    let calls = EngineCalls::new("k8s", RetryPolicy::none(), breaker);
    let fail = || async { Err::<(), _>(unavailable()) };
    for _ in 0..3 {
        let _ = calls
            .call_in(
                CallClass::Start,
                "create pod",
                Idempotency::NotIdempotent,
                fail,
            )
            .await;
    }
    tokio::time::advance(Duration::from_secs(31)).await;
    calls
        .call_in(
            CallClass::Start,
            "create pod",
            Idempotency::NotIdempotent,
            || async { Ok(()) },
        )
        .await
        .unwrap();
    let text = handle.render();
    let t = |s: &'static str| [("backend", "k8s"), ("class", "start"), ("state", s)];
    assert_eq!(
        sample(&text, "sdx_breaker_transitions_total", &t("open")),
        1.0
    );
    assert_eq!(
        sample(&text, "sdx_breaker_transitions_total", &t("half_open")),
        1.0
    );
    assert_eq!(
        sample(&text, "sdx_breaker_transitions_total", &t("closed")),
        1.0
    );
    let o = |o: &'static str| [("backend", "k8s"), ("outcome", o)];
    assert_eq!(sample(&text, "sdx_engine_calls_total", &o("refused")), 1.0);
    assert_eq!(
        sample(&text, "sdx_engine_calls_total", &o("unavailable")),
        2.0
    );
    assert_eq!(sample(&text, "sdx_engine_calls_total", &o("ok")), 1.0);
}

fn start(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", "tok")
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_router_counts_each_build_once_with_its_start_latency() {
    let rec = recorder();
    let handle = rec.handle();
    let _g = metrics::set_default_local_recorder(&rec);
    let fake = FakeExecutor::named("docker");
    let router = Router::builder()
        .backend(Arc::new(fake.clone()))
        .build()
        .unwrap();
    let id = |n| BuildId::new(n).unwrap();

    // 1: runs 3 s after start, succeeds; polled several times.
    router.start(&start(1)).await.unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    fake.set_status(id(1), BuildStatus::running()).unwrap();
    router.status(&StopConfig::new(id(1))).await.unwrap();
    router.status(&StopConfig::new(id(1))).await.unwrap();
    fake.set_status(id(1), BuildStatus::succeeded()).unwrap();
    for _ in 0..3 {
        router.status(&StopConfig::new(id(1))).await.unwrap();
    }
    // 2: stopped while pending.
    router.start(&start(2)).await.unwrap();
    router.stop(&StopConfig::new(id(2))).await.unwrap();
    router.status(&StopConfig::new(id(2))).await.unwrap();
    // 3: killed for memory; still in flight until seen.
    router.start(&start(3)).await.unwrap();
    let text = handle.render();
    assert_eq!(
        sample(&text, "sdx_builds_in_flight", &[("backend", "docker")]),
        1.0
    );
    fake.set_status(id(3), BuildStatus::oom(Some(0), "OOMKilled"))
        .unwrap();
    router.status(&StopConfig::new(id(3))).await.unwrap();

    let text = handle.render();
    let b = [("backend", "docker")];
    assert_eq!(sample(&text, "sdx_builds_started_total", &b), 3.0);
    assert_eq!(sample(&text, "sdx_builds_in_flight", &b), 0.0);
    let fin =
        |p: &'static str, r: &'static str| [("backend", "docker"), ("phase", p), ("reason", r)];
    assert_eq!(
        sample(
            &text,
            "sdx_builds_finished_total",
            &fin("succeeded", "none")
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "sdx_builds_finished_total", &fin("canceled", "none")),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "sdx_builds_finished_total",
            &fin("failed", FailureReason::OutOfMemory.as_str())
        ),
        1.0
    );
    assert_eq!(sample(&text, "sdx_builds_finished_total", &b), 3.0);
    assert_eq!(
        sample(&text, "sdx_build_start_latency_seconds_count", &b),
        1.0
    );
    let latency = sample(&text, "sdx_build_start_latency_seconds_sum", &b);
    assert!((latency - 3.0).abs() < 1e-3, "{latency}");
}

#[tokio::test]
async fn timers_report_pending_fired_and_lateness() {
    let rec = recorder();
    let handle = rec.handle();
    let _g = metrics::set_default_local_recorder(&rec);
    let timers = TimerService::builder().build().await.unwrap();
    let mut fired = timers.subscribe();
    let now = chrono::Utc::now();
    let arm = |n: u64, deadline| StoredDeadline {
        build_id: BuildId::new(n).unwrap(),
        job_id: JobId::new(1).unwrap(),
        deadline,
        timeout_minutes: 1,
    };
    timers
        .arm(arm(1, now + chrono::Duration::hours(1)))
        .await
        .unwrap();
    timers
        .arm(arm(2, now - chrono::Duration::seconds(2)))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), fired.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.build_id, BuildId::new(2).unwrap());
    let text = handle.render();
    assert_eq!(sample(&text, "sdx_timers_pending", &[]), 1.0);
    assert_eq!(sample(&text, "sdx_timers_fired_total", &[]), 1.0);
    assert_eq!(sample(&text, "sdx_timer_lateness_seconds_count", &[]), 1.0);
    assert!(sample(&text, "sdx_timer_lateness_seconds_sum", &[]) >= 2.0);
    timers.stop_timer(BuildId::new(1).unwrap()).await.unwrap();
    assert_eq!(sample(&handle.render(), "sdx_timers_pending", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn every_recorded_name_is_in_the_catalog() {
    let rec = recorder();
    let handle = rec.handle();
    let _g = metrics::set_default_local_recorder(&rec);
    let calls = EngineCalls::with_defaults("docker");
    let first = AtomicU32::new(0);
    calls
        .call("ping", Idempotency::Idempotent, || {
            let n = first.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(unavailable()) } else { Ok(()) } }
        })
        .await
        .unwrap();
    let fake = FakeExecutor::named("process");
    let router = Router::builder()
        .backend(Arc::new(fake.clone()))
        .build()
        .unwrap();
    router.start(&start(9)).await.unwrap();
    fake.set_status(BuildId::new(9).unwrap(), BuildStatus::running())
        .unwrap();
    router
        .status(&StopConfig::new(BuildId::new(9).unwrap()))
        .await
        .unwrap();
    router
        .stop(&StopConfig::new(BuildId::new(9).unwrap()))
        .await
        .unwrap();
    router.gc(false).await.unwrap();
    super::record::k8s_watch_state("builds", true, Some(1.0));
    super::record::k8s_watch_relist("builds");
    super::record::k8s_watch_error("builds");
    super::record::gearman_in_flight("worker", 1.0);
    let timers = super::record::TimerMetrics::register();
    timers.pending(0);
    timers.fired(Duration::ZERO);
    super::record::breaker_transition("docker", CallClass::Read, "open");
    let text = handle.render();
    let seen = names(&text);
    for n in &seen {
        assert!(
            catalog::find(n).is_some(),
            "{n} is recorded but not declared"
        );
    }
    for d in catalog::CATALOG {
        assert!(
            seen.iter().any(|n| n == d.name),
            "{} never recorded here",
            d.name
        );
    }
    // Descriptions reach the exposition as HELP lines.
    catalog::describe();
    let text = handle.render();
    assert!(text.contains("# HELP sdx_builds_started_total Builds the router started"));
}
