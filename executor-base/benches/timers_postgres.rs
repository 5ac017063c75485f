//! The PostgreSQL timer store against a real PostgreSQL (`SDX_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; a throwaway database is created and
//! dropped): `cargo bench -p executor-base --features postgres --bench timers_postgres`.
//!
//! * `start_timer` + `stop_timer` pairs per second, one service, 64 callers at once, next
//!   to the SQLite and memory stores measured in the same run;
//! * three services on one database with 10,000 pending (far) deadlines, then 2,000
//!   deadlines armed round robin to pass within 2 s: firing lateness p50/p99 (each fired
//!   exactly once is checked), next to the same with one memory-store service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use executor_base::testkit::postgres::TestDb;
use executor_base::timer::{
    MemoryTimerStore, PostgresTimerStore, SqliteTimerStore, StoredDeadline, TimerService,
    TimerStore,
};
use executor_base::{Annotations, ApiBuildStatus, BuildId, JobId, TimerConfig};
use parking_lot::Mutex;

const PAIRS: u64 = 4_000;
const CALLERS: u64 = 64;

fn cfg(id: u64) -> TimerConfig {
    TimerConfig::new(
        BuildId::new(id).unwrap(),
        JobId::new(1).unwrap(),
        ApiBuildStatus::Running,
        Utc::now(),
        Annotations::default(),
    )
}

async fn pairs_per_s(store: Arc<dyn TimerStore>) -> f64 {
    let timers = TimerService::builder().store(store).build().await.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let t = timers.clone();
            tokio::spawn(async move {
                for i in 0..PAIRS / CALLERS {
                    let cfg = cfg(1 + c * 1_000_000 + i);
                    t.start_timer(&cfg).await.unwrap();
                    t.stop_timer(cfg.build_id).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    PAIRS as f64 / started.elapsed().as_secs_f64()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Lateness (ms) of `n` deadlines within 2 s, armed round robin over `services`, with
/// `pending` far deadlines already stored; also checks each fired once.
async fn lateness(stores: Vec<Arc<dyn TimerStore>>, pending: u64, n: u64) -> (f64, f64) {
    let seen: Arc<Mutex<HashMap<u64, Vec<f64>>>> = Arc::default();
    let far = Utc::now() + chrono::Duration::hours(2);
    let fill: Vec<_> = (0..CALLERS)
        .map(|c| {
            let store = stores[0].clone();
            tokio::spawn(async move {
                for i in (c..pending).step_by(CALLERS as usize) {
                    store
                        .put(&StoredDeadline {
                            build_id: BuildId::new(10_000_000 + i).unwrap(),
                            job_id: JobId::new(1).unwrap(),
                            deadline: far,
                            timeout_minutes: 90,
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in fill {
        t.await.unwrap();
    }
    let mut services = Vec::new();
    for s in stores {
        let seen = seen.clone();
        services.push(
            TimerService::builder()
                .store(s)
                .handler(move |e| {
                    seen.lock()
                        .entry(e.build_id.get())
                        .or_default()
                        .push(e.lateness.as_secs_f64() * 1000.0)
                })
                .build()
                .await
                .unwrap(),
        );
    }
    // Armed by 64 callers well before the window opens (arming throughput is the pairs
    // figure); the window is 2 s wide.
    let base = Utc::now() + chrono::Duration::seconds(12);
    let arm: Vec<_> = (0..CALLERS)
        .map(|c| {
            let services = services.clone();
            tokio::spawn(async move {
                for i in (c..n).step_by(CALLERS as usize) {
                    let d = StoredDeadline {
                        build_id: BuildId::new(1 + i).unwrap(),
                        job_id: JobId::new(1).unwrap(),
                        deadline: base + chrono::Duration::microseconds((i * 2_000_000 / n) as i64),
                        timeout_minutes: 1,
                    };
                    services[(i as usize) % services.len()]
                        .arm(d)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in arm {
        t.await.unwrap();
    }
    assert!(Utc::now() < base, "arming took longer than the lead time");
    let until = Instant::now() + Duration::from_secs(60);
    while seen.lock().len() < n as usize && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let seen = seen.lock();
    assert_eq!(seen.len() as u64, n, "every deadline fired");
    assert!(
        seen.values().all(|v| v.len() == 1),
        "a deadline fired twice"
    );
    let mut all: Vec<f64> = seen.values().map(|v| v[0]).collect();
    all.sort_by(f64::total_cmp);
    (pct(&all, 0.5), pct(&all, 0.99))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(db) = TestDb::create("bench_timers").await else {
            return;
        };
        let pg = Arc::new(PostgresTimerStore::connect(db.uri()).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteTimerStore::open(dir.path().join("t.db")).await.unwrap());
        let p = pairs_per_s(pg).await;
        let s = pairs_per_s(sqlite).await;
        let m = pairs_per_s(Arc::new(MemoryTimerStore::new())).await;
        println!("start+stop pairs/s ({CALLERS} callers): postgres {p:.0}, sqlite {s:.0} ({:.2}x), memory {m:.0} ({:.3}x)", p / s, p / m);
        drop(db);
        let Some(db) = TestDb::create("bench_late").await else {
            return;
        };
        let mut stores: Vec<Arc<dyn TimerStore>> = Vec::new();
        for _ in 0..3 {
            stores.push(Arc::new(PostgresTimerStore::connect(db.uri()).await.unwrap()));
        }
        let (p50, p99) = lateness(stores, 10_000, 2_000).await;
        let (b50, b99) = lateness(vec![Arc::new(MemoryTimerStore::new())], 10_000, 2_000).await;
        println!(
            "lateness of 2,000 deadlines within 2 s, 10,000 pending: 3 postgres services p50 {p50:.1} ms p99 {p99:.1} ms; one memory service p50 {b50:.1} ms p99 {b99:.1} ms"
        );
    });
}
