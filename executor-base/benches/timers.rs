//! Timer service benchmark (`cargo bench -p executor-base --bench timers`).
//!
//! With 100,000 pending timers, on one core (a current-thread runtime):
//! * `start_timer` + `stop_timer` pairs per second with the in-memory store;
//! * heap bytes per pending timer (a counting global allocator);
//! * how late 100,000 deadlines fire (p50/p99) while start/stop churn keeps running;
//!
//! each next to a baseline measured in the same run: one `tokio::spawn` + `sleep` per
//! timer (a `HashMap` of join handles; stop = abort). Also the durable SQLite store's
//! pairs per second, for reference. The allocator counts every allocation with atomics,
//! which slows both sides alike.
//!
//! Then the cost of metrics: two TimerServices side by side in one runtime, one whose
//! metrics a Prometheus recorder (configured as `sdx serve --metrics` does) records, one
//! with none (the recorder switched off when it registered), their churn in alternating
//! chunks and their deadlines interleaved; three runs (`SDX_BENCH_METRICS_RUNS=<n>` for
//! more), each run's ratio and their median.

use std::alloc::System;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use executor_base::timer::{MemoryTimerStore, SqliteTimerStore, TimerService};
use executor_base::{Annotations, ApiBuildStatus, BuildId, JobId, TimerConfig};
use parking_lot::Mutex;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::task::JoinHandle;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PENDING: u64 = 100_000;
const PAIRS: u64 = 1_000_000;
const YIELD_EVERY: u64 = 1024;

fn cfg(id: u64, start: chrono::DateTime<Utc>) -> TimerConfig {
    TimerConfig::new(
        BuildId::new(id).unwrap(),
        JobId::new(1).unwrap(),
        ApiBuildStatus::Running,
        start,
        Annotations::default(),
    )
}

fn net_bytes(r: &Region<'_, System>) -> i64 {
    let c = r.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

/// The baseline: one task sleeping per timer.
#[derive(Default)]
struct SpawnPerTimer {
    tasks: HashMap<BuildId, JoinHandle<()>>,
}

impl SpawnPerTimer {
    fn start(
        &mut self,
        t: &TimerConfig,
        on_fire: Arc<dyn Fn(chrono::DateTime<Utc>) + Send + Sync>,
    ) {
        let deadline = t.start_time + chrono::Duration::minutes(90);
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        let at = tokio::time::Instant::now() + wait;
        let h = tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            on_fire(deadline);
        });
        if let Some(old) = self.tasks.insert(t.build_id, h) {
            old.abort();
        }
    }
    fn stop(&mut self, id: BuildId) {
        if let Some(h) = self.tasks.remove(&id) {
            h.abort();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    pairs_per_s: f64,
    bytes_per_timer: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The mean lateness: tokio's timer fires on 1 ms ticks, so a percentile of ~1 ms
    /// moves with where the deadlines fall between ticks; the mean averages that out.
    mean_ms: f64,
}

fn service_figures(rt: &tokio::runtime::Runtime) -> Figures {
    rt.block_on(async {
        let region = Region::new(GLOBAL);
        let store = Arc::new(MemoryTimerStore::new());
        let timers = TimerService::builder()
            .store(store)
            .handler(|_| {})
            .build()
            .await
            .unwrap();
        let far = Utc::now();
        for id in 1..=PENDING {
            timers.start_timer(&cfg(id, far)).await.unwrap();
        }
        tokio::task::yield_now().await;
        let bytes_per_timer = net_bytes(&region) as f64 / PENDING as f64;

        let pool: Vec<TimerConfig> = (0..YIELD_EVERY).map(|i| cfg(1_000_000 + i, far)).collect();
        let churn = |n: u64| {
            let (timers, pool) = (&timers, &pool);
            async move {
                for i in 0..n {
                    let c = &pool[(i % YIELD_EVERY) as usize];
                    timers.start_timer(c).await.unwrap();
                    timers.stop_timer(c.build_id).await.unwrap();
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        };
        churn(PAIRS / 10).await; // warm-up
        let t0 = Instant::now();
        churn(PAIRS).await;
        let pairs_per_s = PAIRS as f64 / t0.elapsed().as_secs_f64();
        assert_eq!(timers.pending() as u64, PENDING);
        drop(timers);

        // Lateness: 100,000 deadlines over 2 s, starting 0.5 s from now, under churn.
        let late = Arc::new(Mutex::new(Vec::with_capacity(PENDING as usize)));
        let l2 = late.clone();
        let timers = TimerService::builder()
            .handler(move |e| {
                let ms = (Utc::now() - e.deadline).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                l2.lock().push(ms);
            })
            .build()
            .await
            .unwrap();
        let base = Utc::now() - chrono::Duration::minutes(90) + chrono::Duration::milliseconds(500);
        for id in 1..=PENDING {
            let start = base + chrono::Duration::microseconds((id * 20) as i64);
            timers.start_timer(&cfg(id, start)).await.unwrap();
        }
        let churn = tokio::spawn({
            let (timers, pool, late) = (timers.clone(), pool.clone(), late.clone());
            async move {
                while late.lock().len() < PENDING as usize {
                    for c in &pool {
                        timers.start_timer(c).await.unwrap();
                        timers.stop_timer(c.build_id).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        churn.await.unwrap();
        let (p50_ms, p99_ms, max_ms) = summarize(&late.lock());
        let mean_ms = mean(&late.lock());
        Figures {
            pairs_per_s,
            bytes_per_timer,
            p50_ms,
            p99_ms,
            max_ms,
            mean_ms,
        }
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn summarize(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        *v.last().unwrap(),
    )
}

fn baseline_figures(rt: &tokio::runtime::Runtime) -> Figures {
    rt.block_on(async {
        let noop: Arc<dyn Fn(chrono::DateTime<Utc>) + Send + Sync> = Arc::new(|_| {});
        let region = Region::new(GLOBAL);
        let mut base = SpawnPerTimer::default();
        let far = Utc::now();
        for id in 1..=PENDING {
            base.start(&cfg(id, far), noop.clone());
        }
        tokio::task::yield_now().await; // every task polled once: its sleep is registered
        let bytes_per_timer = net_bytes(&region) as f64 / PENDING as f64;

        let pool: Vec<TimerConfig> = (0..YIELD_EVERY).map(|i| cfg(1_000_000 + i, far)).collect();
        let churn = async |n: u64, base: &mut SpawnPerTimer| {
            for i in 0..n {
                let c = &pool[(i % YIELD_EVERY) as usize];
                base.start(c, noop.clone());
                base.stop(c.build_id);
                if i % YIELD_EVERY == YIELD_EVERY - 1 {
                    tokio::task::yield_now().await;
                }
            }
        };
        churn(PAIRS / 10, &mut base).await;
        let t0 = Instant::now();
        churn(PAIRS, &mut base).await;
        let pairs_per_s = PAIRS as f64 / t0.elapsed().as_secs_f64();
        for id in 1..=PENDING {
            base.stop(BuildId::new(id).unwrap());
        }
        tokio::task::yield_now().await;

        let late = Arc::new(Mutex::new(Vec::with_capacity(PENDING as usize)));
        let l2 = late.clone();
        let record: Arc<dyn Fn(chrono::DateTime<Utc>) + Send + Sync> = Arc::new(move |deadline| {
            let ms = (Utc::now() - deadline).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            l2.lock().push(ms);
        });
        let start0 =
            Utc::now() - chrono::Duration::minutes(90) + chrono::Duration::milliseconds(500);
        let mut fired = SpawnPerTimer::default();
        for id in 1..=PENDING {
            let start = start0 + chrono::Duration::microseconds((id * 20) as i64);
            fired.start(&cfg(id, start), record.clone());
        }
        let churn = tokio::spawn({
            let late = late.clone();
            async move {
                while late.lock().len() < PENDING as usize {
                    for c in &pool {
                        base.start(c, noop.clone());
                        base.stop(c.build_id);
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        churn.await.unwrap();
        let (p50_ms, p99_ms, max_ms) = summarize(&late.lock());
        let mean_ms = mean(&late.lock());
        Figures {
            pairs_per_s,
            bytes_per_timer,
            p50_ms,
            p99_ms,
            max_ms,
            mean_ms,
        }
    })
}

fn sqlite_pairs_per_s(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteTimerStore::open(dir.path().join("timers.db"))
                .await
                .unwrap(),
        );
        let timers = TimerService::builder()
            .store(store)
            .handler(|_| {})
            .build()
            .await
            .unwrap();
        let now = Utc::now();
        let n = 2_000;
        let t0 = Instant::now();
        for i in 0..n {
            let c = cfg(1 + i % 64, now);
            timers.start_timer(&c).await.unwrap();
            timers.stop_timer(c.build_id).await.unwrap();
        }
        n as f64 / t0.elapsed().as_secs_f64()
    })
}

/// Two TimerServices in one runtime, one recording metrics and one not, measured side
/// by side: their start/stop churn in alternating chunks (each side's time summed), and
/// their deadlines interleaved (one side's 20 µs after the other's) under that churn. What
/// one round of the machine does to one side it does to the other, so their ratio holds
/// still where two separate runs differ by more than the effect (tokio's 1 ms timer ticks
/// set a run's lateness). `first_recording` says which side goes first: in each chunk,
/// and on the earlier of each pair of deadline slots.
fn paired_figures(
    rt: &tokio::runtime::Runtime,
    on: &std::sync::atomic::AtomicBool,
    first_recording: bool,
) -> (Figures, Figures) {
    use std::sync::atomic::Ordering::Relaxed;
    const SIDES: usize = 2;
    rt.block_on(async {
        // Side 0 records (its handles registered while the recorder is on), side 1 not.
        let mut lates = Vec::new();
        let mut services = Vec::new();
        let base = Utc::now() - chrono::Duration::minutes(90) + chrono::Duration::milliseconds(500);
        for side in 0..SIDES {
            on.store(side == 0, Relaxed);
            let late = Arc::new(Mutex::new(Vec::with_capacity(PENDING as usize)));
            let l2 = late.clone();
            let timers = TimerService::builder()
                .handler(move |e| {
                    let ms =
                        (Utc::now() - e.deadline).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    l2.lock().push(ms);
                })
                .build()
                .await
                .unwrap();
            lates.push(late);
            services.push(timers);
        }
        on.store(true, Relaxed);
        let order: [usize; SIDES] = if first_recording { [0, 1] } else { [1, 0] };
        // Deadlines over 4 s, starting 1.5 s from now: the side going first on even 20 µs
        // slots, the other on odd ones.
        for id in 1..=PENDING {
            for (position, &side) in order.iter().enumerate() {
                let timers = &services[side];
                let slot = 2 * id + position as u64;
                let start = base
                    + chrono::Duration::seconds(1)
                    + chrono::Duration::microseconds((slot * 20) as i64);
                timers.start_timer(&cfg(id, start)).await.unwrap();
            }
        }
        let far = Utc::now();
        let pool: Vec<TimerConfig> = (0..YIELD_EVERY).map(|i| cfg(1_000_000 + i, far)).collect();
        // Throughput: chunks of YIELD_EVERY pairs, alternating sides, before the first
        // deadline is due.
        let mut busy = [Duration::ZERO; SIDES];
        let chunks = PAIRS / YIELD_EVERY / 4;
        for _ in 0..chunks {
            for &side in &order {
                let t0 = Instant::now();
                for c in &pool {
                    services[side].start_timer(c).await.unwrap();
                    services[side].stop_timer(c.build_id).await.unwrap();
                }
                busy[side] += t0.elapsed();
                tokio::task::yield_now().await;
            }
        }
        let pairs = (chunks * YIELD_EVERY) as f64;
        // Lateness: both sides' deadlines fire under the same churn.
        let done = || lates.iter().all(|l| l.lock().len() >= PENDING as usize);
        while !done() {
            for &side in &order {
                for c in &pool {
                    services[side].start_timer(c).await.unwrap();
                    services[side].stop_timer(c.build_id).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        }
        on.store(false, Relaxed);
        let figures = |side: usize| {
            let late = lates[side].lock();
            let (p50_ms, p99_ms, max_ms) = summarize(&late);
            Figures {
                pairs_per_s: pairs / busy[side].as_secs_f64(),
                bytes_per_timer: 0.0,
                p50_ms,
                p99_ms,
                max_ms,
                mean_ms: mean(&late),
            }
        };
        (figures(0), figures(1))
    })
}

/// TimerService figures with metrics recorded against none, in one run.
fn metrics_overhead(rt: &tokio::runtime::Runtime) {
    // The recorder as `sdx serve --metrics` installs it.
    let (recorder, on, handle) = executor_base::testkit::metrics_switch::serve_like_recorder();
    metrics::set_global_recorder(recorder).expect("the only recorder");
    let (mut off_runs, mut on_runs) = (Vec::new(), Vec::new());
    let runs: usize = std::env::var("SDX_BENCH_METRICS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    for run in 0..runs {
        let (recording, none) = paired_figures(rt, &on, run % 2 == 0);
        on_runs.push(recording);
        off_runs.push(none);
    }
    let fired = handle
        .render()
        .lines()
        .find(|l| l.starts_with("sdx_timers_fired_total"))
        .map(str::to_string)
        .unwrap_or_default();
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "metrics: two TimerServices side by side in one runtime, one with a Prometheus recorder recording, one with none ({runs} runs; medians, and the median and range of the {runs} per-run ratios; {fired})"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>8} {:>16}",
        "", "recording", "no recorder", "ratio", "per run", "range"
    );
    for (name, f) in [
        (
            "start+stop pairs/s (memory store)",
            (|f: &Figures| f.pairs_per_s) as fn(&Figures) -> f64,
        ),
        ("lateness mean (ms)", |f: &Figures| f.mean_ms),
        ("lateness p50 (ms)", |f: &Figures| f.p50_ms),
        ("lateness p99 (ms)", |f: &Figures| f.p99_ms),
    ] {
        let a = sorted(on_runs.iter().map(f).collect());
        let b = sorted(off_runs.iter().map(f).collect());
        let ratios = sorted(
            on_runs
                .iter()
                .zip(&off_runs)
                .map(|(x, y)| f(x) / f(y).max(1e-9))
                .collect(),
        );
        println!(
            "{name:<34} {:>12.2} {:>12.2} {:>7.3}x {:>7.3}x {:>7.3}-{:.3}x",
            median(&a),
            median(&b),
            median(&a) / median(&b).max(1e-9),
            median(&ratios),
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: run anyway.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    if std::env::var_os("SDX_BENCH_METRICS_ONLY").is_some() {
        metrics_overhead(&rt);
        return;
    }
    let s = service_figures(&rt);
    let b = baseline_figures(&rt);
    let sql = sqlite_pairs_per_s(&rt);
    println!(
        "timers: {PENDING} pending, {PAIRS} start+stop pairs, one core (current-thread runtime)"
    );
    println!(
        "{:<34} {:>14} {:>16} {:>8}",
        "", "TimerService", "spawn+sleep", "ratio"
    );
    println!(
        "{:<34} {:>14.0} {:>16.0} {:>7.1}x",
        "start+stop pairs/s (memory store)",
        s.pairs_per_s,
        b.pairs_per_s,
        s.pairs_per_s / b.pairs_per_s
    );
    println!(
        "{:<34} {:>14.0} {:>16.0} {:>7.2}x",
        "heap bytes per pending timer",
        s.bytes_per_timer,
        b.bytes_per_timer,
        s.bytes_per_timer / b.bytes_per_timer
    );
    for (name, a, c) in [
        ("lateness p50 (ms)", s.p50_ms, b.p50_ms),
        ("lateness p99 (ms)", s.p99_ms, b.p99_ms),
        ("lateness max (ms)", s.max_ms, b.max_ms),
    ] {
        println!("{name:<34} {a:>14.2} {c:>16.2} {:>7.2}x", a / c.max(1e-9));
    }
    println!("{:<34} {:>14.0}", "start+stop pairs/s (SQLite store)", sql);
    let ok = s.pairs_per_s >= 500_000.0 && s.bytes_per_timer < 256.0 && s.p99_ms < 20.0;
    println!(
        "targets (>= 500000 pairs/s, < 256 B/timer, p99 < 20 ms): {}",
        if ok { "met" } else { "NOT met" }
    );
    metrics_overhead(&rt);
}
