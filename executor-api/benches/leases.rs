//! Lease renewal cost against a real PostgreSQL (`SDX_TEST_POSTGRES`; a throwaway
//! database is created and dropped): `cargo bench -p executor-api --bench leases`.
//!
//! Three instances hold 1,000 leases each. One renewal of an instance's leases is one
//! statement ([`BuildStore::renew`]); the baseline, measured in the same run, renews the
//! same 1,000 leases one statement per build ([`BuildStore::acquire`] by the holder).
//! Cost per instance per second = time of one renewal / the renewal period (5 s default).

use std::time::{Duration, Instant};

use chrono::Utc;
use executor_api::model::{BuildRecord, StepRecord};
use executor_api::{BuildStore, PostgresBuildStore};
use executor_base::testkit::postgres::TestDb;
use executor_base::{Annotations, ApiBuildStatus, BuildId, ImageRef, JobId};
use serde_json::json;

const PER_INSTANCE: u64 = 1_000;
const ROUNDS: usize = 10;

fn record(id: u64) -> BuildRecord {
    BuildRecord {
        id: BuildId::new(id).unwrap(),
        owner: "serve".into(),
        version: 1,
        settled: false,
        job_id: JobId::new(1).unwrap(),
        event_id: None,
        pipeline_id: None,
        job_name: None,
        container: ImageRef::parse("busybox:latest").unwrap(),
        annotations: Annotations::default(),
        environment: Default::default(),
        status: ApiBuildStatus::Running,
        status_message: None,
        meta: json!({}),
        create_time: Utc::now(),
        start_time: None,
        end_time: None,
        steps: vec![StepRecord::new("one", "true")],
        timings: Default::default(),
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(db) = TestDb::create("bench_leases").await else {
            return;
        };
        let store = PostgresBuildStore::connect(db.uri()).await.unwrap();
        let ttl = Duration::from_secs(15);
        for (i, holder) in ["a", "b", "c"].iter().enumerate() {
            for n in 0..PER_INSTANCE {
                let id = 1 + i as u64 * PER_INSTANCE + n;
                store.insert_leased(&record(id), holder, ttl).await.unwrap();
            }
        }
        let (mut batch, mut each) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let held = store.renew("a", ttl).await.unwrap();
            batch.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(held.len() as u64, PER_INSTANCE);
            let t = Instant::now();
            for l in &held {
                store.acquire(l.build_id, "a", ttl).await.unwrap().unwrap();
            }
            each.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (b50, b99) = (pct(&mut batch, 0.5), pct(&mut batch, 0.99));
        let (e50, e99) = (pct(&mut each, 0.5), pct(&mut each, 0.99));
        println!(
            "renewing {PER_INSTANCE} leases (3,000 in the table): one statement p50 {b50:.2} ms p99 {b99:.2} ms; one statement per build p50 {e50:.1} ms p99 {e99:.1} ms ({:.0}x); cost per instance at the 5 s default period: {:.3} % of one connection's time",
            e50 / b50,
            b50 / 5_000.0 * 100.0
        );
    });
}
