//! Timer service: arming rules, one deadline per build, notifications, one task for all
//! builds, durable deadlines across a restart, and the stop-on-expiry wrapper.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use executor_base::testkit::fake::FakeExecutor;
use executor_base::timer::{
    MemoryTimerStore, SqliteTimerStore, StoredDeadline, TimedExecutor, TimerService, TimerStore,
};
use executor_base::{
    AnnotationMode, Annotations, ApiBuildStatus, BuildId, Executor, JobId, Phase, StartConfig,
    TimeoutPolicy, TimerConfig, Verdict,
};
use serde_json::json;

fn bid(n: u64) -> BuildId {
    BuildId::new(n).unwrap()
}

fn timer(
    build: u64,
    status: ApiBuildStatus,
    start: DateTime<Utc>,
    timeout: Option<u32>,
) -> TimerConfig {
    let annotations = match timeout {
        Some(m) => Annotations::parse(
            &json!({"screwdriver.cd/timeout": m}),
            AnnotationMode::Strict,
        )
        .unwrap(),
        None => Annotations::default(),
    };
    TimerConfig::new(
        bid(build),
        JobId::new(build + 1000).unwrap(),
        status,
        start,
        annotations,
    )
}

fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

#[tokio::test]
async fn only_running_builds_arm_a_timer() {
    let timers = TimerService::builder().build().await.unwrap();
    let now = Utc::now();
    for status in ApiBuildStatus::ALL {
        let armed = timers
            .start_timer(&timer(1, status, now, None))
            .await
            .unwrap();
        assert_eq!(
            armed.is_some(),
            status == ApiBuildStatus::Running,
            "{status}"
        );
    }
    assert_eq!(timers.pending(), 1);
}

#[tokio::test]
async fn deadline_is_start_time_plus_the_resolved_timeout() {
    let policy = TimeoutPolicy {
        default_minutes: 90,
        max_minutes: 120,
    };
    let timers = TimerService::builder()
        .policy(policy)
        .build()
        .await
        .unwrap();
    let start = Utc::now();
    let d = timers
        .start_timer(&timer(1, ApiBuildStatus::Running, start, None))
        .await
        .unwrap();
    assert_eq!(d, Some(start + minutes(90)));
    let d = timers
        .start_timer(&timer(2, ApiBuildStatus::Running, start, Some(30)))
        .await
        .unwrap();
    assert_eq!(d, Some(start + minutes(30)));
    let d = timers
        .start_timer(&timer(3, ApiBuildStatus::Running, start, Some(600)))
        .await
        .unwrap();
    assert_eq!(d, Some(start + minutes(120)), "capped by the policy");
    assert_eq!(timers.deadline(bid(2)), Some(start + minutes(30)));
}

#[tokio::test]
async fn registering_a_build_twice_keeps_one_deadline_the_latest() {
    let store = Arc::new(MemoryTimerStore::new());
    let timers = TimerService::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let start = Utc::now();
    timers
        .start_timer(&timer(1, ApiBuildStatus::Running, start, Some(10)))
        .await
        .unwrap();
    timers
        .start_timer(&timer(1, ApiBuildStatus::Running, start, Some(20)))
        .await
        .unwrap();
    assert_eq!(timers.pending(), 1);
    assert_eq!(store.len(), 1);
    assert_eq!(timers.deadline(bid(1)), Some(start + minutes(20)));
    assert_eq!(store.load().await.unwrap()[0].deadline, start + minutes(20));
}

#[tokio::test]
async fn stop_timer_removes_the_deadline_and_nothing_fires() {
    let store = Arc::new(MemoryTimerStore::new());
    let timers = TimerService::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let mut rx = timers.subscribe();
    let past = Utc::now() - minutes(200);
    // Armed and removed before the timer task runs (current-thread runtime).
    timers
        .start_timer(&timer(1, ApiBuildStatus::Running, past, None))
        .await
        .unwrap();
    assert!(timers.stop_timer(bid(1)).await.unwrap());
    assert!(
        !timers.stop_timer(bid(1)).await.unwrap(),
        "a second stop_timer is a no-op"
    );
    assert!(
        !timers.stop_timer(bid(2)).await.unwrap(),
        "stop_timer of an unknown build is a no-op"
    );
    assert!(store.is_empty());
    timers
        .start_timer(&timer(3, ApiBuildStatus::Running, past, None))
        .await
        .unwrap();
    let e = rx.recv().await.unwrap();
    assert_eq!(e.build_id, bid(3), "build 1 never fired");
}

#[tokio::test(start_paused = true)]
async fn expiry_carries_build_job_and_lateness_in_deadline_order() {
    let timers = TimerService::builder().build().await.unwrap();
    let mut rx = timers.subscribe();
    let now = Utc::now();
    // 60 s and 120 s from now, and one 5 minutes overdue.
    timers
        .start_timer(&timer(2, ApiBuildStatus::Running, now - minutes(88), None))
        .await
        .unwrap();
    timers
        .start_timer(&timer(1, ApiBuildStatus::Running, now - minutes(89), None))
        .await
        .unwrap();
    timers
        .start_timer(&timer(3, ApiBuildStatus::Running, now - minutes(95), None))
        .await
        .unwrap();
    let first = rx.recv().await.unwrap();
    assert_eq!(
        (first.build_id, first.job_id),
        (bid(3), JobId::new(1003).unwrap())
    );
    assert!(first.lateness >= Duration::from_secs(300));
    assert_eq!(first.timeout_minutes, 90);
    let t0 = tokio::time::Instant::now();
    assert_eq!(rx.recv().await.unwrap().build_id, bid(1));
    assert_eq!(rx.recv().await.unwrap().build_id, bid(2));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(119) && waited <= Duration::from_secs(121),
        "{waited:?}"
    );
    assert_eq!(timers.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn deadlines_wait_for_a_handler() {
    let timers = TimerService::builder().build().await.unwrap();
    timers
        .start_timer(&timer(
            1,
            ApiBuildStatus::Running,
            Utc::now() - minutes(100),
            None,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        timers.pending(),
        1,
        "no handler yet: nothing fired, nothing lost"
    );
    let mut rx = timers.subscribe();
    assert_eq!(rx.recv().await.unwrap().build_id, bid(1));
}

#[tokio::test]
async fn one_task_serves_every_timer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let timers = TimerService::builder()
        .handler(|_| {})
        .build()
        .await
        .unwrap();
    let now = Utc::now();
    for b in 1..=2000 {
        timers
            .start_timer(&timer(b, ApiBuildStatus::Running, now, None))
            .await
            .unwrap();
    }
    assert_eq!(timers.pending(), 2000);
    assert_eq!(metrics.num_alive_tasks(), before + 1);
    drop(timers);
    tokio::task::yield_now().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "the task ends with the service"
    );
}

#[tokio::test]
async fn sqlite_deadlines_survive_a_restart_and_overdue_ones_fire_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timers.db");
    let now = Utc::now();
    {
        let store = Arc::new(SqliteTimerStore::open(&path).await.unwrap());
        let timers = TimerService::builder()
            .store(store.clone())
            .build()
            .await
            .unwrap();
        // Overdue by the time we "restart": 90 min timeout, deadline 300 ms from now.
        timers
            .start_timer(&timer(
                1,
                ApiBuildStatus::Running,
                now - minutes(90) + chrono::Duration::milliseconds(300),
                None,
            ))
            .await
            .unwrap();
        timers
            .start_timer(&timer(2, ApiBuildStatus::Running, now, None))
            .await
            .unwrap();
        timers
            .start_timer(&timer(3, ApiBuildStatus::Running, now, None))
            .await
            .unwrap();
        timers.stop_timer(bid(3)).await.unwrap();
        // No handler was set: the process "crashes" before anything fires.
        drop(timers);
        drop(store);
    }
    let store = Arc::new(SqliteTimerStore::open(&path).await.unwrap());
    let mut loaded = store.load().await.unwrap();
    loaded.sort_by_key(|d| d.build_id);
    assert_eq!(
        loaded.iter().map(|d| d.build_id.get()).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        loaded[1].deadline.timestamp_millis(),
        (now + minutes(90)).timestamp_millis()
    );
    tokio::time::sleep(Duration::from_millis(400)).await; // build 1's deadline passes while "down"
    let timers = TimerService::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(timers.pending(), 2);
    let mut rx = timers.subscribe();
    let e = rx.recv().await.unwrap();
    assert_eq!((e.build_id, e.job_id), (bid(1), JobId::new(1001).unwrap()));
    assert!(e.lateness >= Duration::from_millis(50), "{:?}", e.lateness);
    // The fired deadline is removed from the database; the pending one stays.
    let mut left = Vec::new();
    for _ in 0..100 {
        left = store.load().await.unwrap();
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        left.iter().map(|d| d.build_id.get()).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(timers.pending(), 1);
}

#[tokio::test]
async fn sqlite_store_keeps_one_row_per_build_and_reports_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteTimerStore::open(dir.path().join("t.db"))
        .await
        .unwrap();
    let d = |b: u64, ms: i64| StoredDeadline {
        build_id: bid(b),
        job_id: JobId::new(9).unwrap(),
        deadline: DateTime::from_timestamp_millis(ms).unwrap(),
        timeout_minutes: 5,
    };
    store.put(&d(1, 1_000)).await.unwrap();
    store.put(&d(1, 2_000)).await.unwrap();
    store.put(&d(2, 3_000)).await.unwrap();
    store.remove_many(&[bid(2), bid(77)]).await.unwrap();
    assert_eq!(store.load().await.unwrap(), vec![d(1, 2_000)]);
    let err = SqliteTimerStore::open(dir.path().join("missing-dir/t.db"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timer store: open"), "{err}");
}

#[tokio::test]
async fn timed_executor_stops_the_build_and_reports_timed_out() {
    let fake = FakeExecutor::new();
    let timers = TimerService::builder().build().await.unwrap();
    let timed = TimedExecutor::new(Arc::new(fake.clone()), timers);
    let build = StartConfig::builder(5, "http://127.0.0.1:9", "busybox:latest", "tok")
        .job_id(1)
        .build()
        .unwrap();
    let other = StartConfig::builder(6, "http://127.0.0.1:9", "busybox:latest", "tok")
        .job_id(1)
        .build()
        .unwrap();
    timed.start(&build).await.unwrap();
    timed.start(&other).await.unwrap();
    let t = TimerConfig::new(
        build.build_id,
        JobId::new(1).unwrap(),
        ApiBuildStatus::Running,
        Utc::now() - minutes(91),
        Annotations::default(),
    );
    timed.start_timer(&t).await.unwrap();
    let t = TimerConfig::new(
        other.build_id,
        JobId::new(1).unwrap(),
        ApiBuildStatus::Running,
        Utc::now(),
        Annotations::default(),
    );
    timed.start_timer(&t).await.unwrap();
    while fake.live_builds().contains(&build.build_id) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = timed.status(&build.to_stop()).await.unwrap();
    assert_eq!(s.phase, Phase::TimedOut);
    assert!(s.message.contains("90 minutes"), "{}", s.message);
    assert_eq!(
        fake.status(&build.to_stop()).await.unwrap().phase,
        Phase::Canceled,
        "stopped on the engine"
    );
    assert!(matches!(
        timed.verify(&build).await.unwrap(),
        Verdict::Failed(_)
    ));
    assert!(
        !timed.status(&other.to_stop()).await.unwrap().is_terminal(),
        "the other build runs on"
    );
    timed.stop_timer(&other.to_stop()).await.unwrap();
    assert_eq!(timed.timers().pending(), 0);
    // Starting the same id again forgets the old timeout.
    fake.gc(false).await.unwrap();
    timed.start(&build).await.unwrap();
    assert!(!timed.status(&build.to_stop()).await.unwrap().is_terminal());
}
