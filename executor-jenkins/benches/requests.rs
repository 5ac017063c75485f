//! Benchmark of the Jenkins executor against the fake Jenkins (counted, not guessed):
//!
//! 1. HTTP requests per build from `start` to a finished status, counted by the fake,
//!    with the crumb cached (target: at most 6), for three polling patterns.
//! 2. Wall time to start 100 builds (concurrently and one after another), against a
//!    baseline measured in the same run: the same 100 builds' raw HTTP calls (crumb once,
//!    `createItem` with the same XML, `buildWithParameters` with the same form) sent with
//!    plain reqwest, without the executor. Ratios executor / baseline are reported.
//!
//! Run: `cargo bench -p executor-jenkins --bench requests` (`-- --rounds N` to change
//! the number of rounds; the median is reported).

use std::time::{Duration, Instant};

use executor_base::{Executor, Phase, StartConfig};
use executor_jenkins::JenkinsExecutor;
use executor_jenkins::fake::{FAKE_TOKEN, FAKE_USER, FakeJenkins};
use futures::future::join_all;

const BUILDS: u64 = 100;

fn build(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9", "node:22", "bench-token")
        .job_id(1)
        .build()
        .expect("valid build")
}

async fn executor(j: &FakeJenkins) -> JenkinsExecutor {
    j.executor_builder().build().await.expect("executor")
}

async fn phase(e: &JenkinsExecutor, id: u64) -> Phase {
    e.status(&build(id).to_stop()).await.expect("status").phase
}

/// Requests for one build with the crumb already cached, for a polling pattern.
async fn requests_per_build(polls_queued: usize, polls_running: usize) -> f64 {
    let j = FakeJenkins::start().await;
    let e = executor(&j).await;
    e.start(&build(1)).await.expect("warm-up start"); // caches the crumb
    let n = 20;
    j.clear_requests();
    for id in 10..10 + n {
        let job = format!("SD-{id}");
        e.start(&build(id)).await.expect("start");
        for _ in 0..polls_queued {
            assert_eq!(phase(&e, id).await, Phase::Pending);
        }
        j.start_queued(&job).expect("queued");
        for _ in 0..polls_running {
            assert_eq!(phase(&e, id).await, Phase::Running);
        }
        j.finish(&job, 1, "SUCCESS");
        assert_eq!(phase(&e, id).await, Phase::Succeeded);
    }
    j.request_count() as f64 / n as f64
}

/// The raw HTTP calls of starting `ids` on the fake, without the executor.
async fn raw_starts(
    j: &FakeJenkins,
    ids: std::ops::Range<u64>,
    xml: &str,
    concurrent: bool,
) -> Duration {
    executor_base::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("{}/", j.url());
    let t0 = Instant::now();
    // Crumb once, bound to the session cookie it was issued with (as the executor does).
    let answer = http
        .get(format!("{base}crumbIssuer/api/json"))
        .basic_auth(FAKE_USER, Some(FAKE_TOKEN))
        .send()
        .await
        .expect("crumb");
    let cookie = answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    let crumb: serde_json::Value = answer.json().await.expect("crumb json");
    let one = |id: u64| {
        let http = http.clone();
        let base = base.clone();
        let crumb = crumb["crumb"].as_str().unwrap_or_default().to_string();
        let cookie = cookie.clone();
        let xml = xml.replace("SD-0", &format!("SD-{id}"));
        async move {
            let name = format!("SD-{id}");
            let r = http
                .post(format!("{base}createItem?name={name}"))
                .basic_auth(FAKE_USER, Some(FAKE_TOKEN))
                .header("Jenkins-Crumb", &crumb)
                .header("Cookie", &cookie)
                .header("Content-Type", "application/xml; charset=utf-8")
                .body(xml)
                .send()
                .await
                .expect("createItem");
            assert!(r.status().is_success(), "createItem {}", r.status());
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("SD_BUILD_ID", &id.to_string())
                .append_pair("SD_API", "http://127.0.0.1:9/")
                .append_pair("SD_STORE", "http://localhost:8081/")
                .append_pair("SD_UI", "http://localhost:4200/")
                .append_pair("SD_CONTAINER", "node:22")
                .append_pair("SD_BUILD_TIMEOUT", "90")
                .append_pair("SD_TOKEN", "bench-token")
                .finish();
            let r = http
                .post(format!("{base}job/{name}/buildWithParameters?delay=0sec"))
                .basic_auth(FAKE_USER, Some(FAKE_TOKEN))
                .header("Jenkins-Crumb", &crumb)
                .header("Cookie", &cookie)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .expect("buildWithParameters");
            assert_eq!(r.status().as_u16(), 201);
        }
    };
    if concurrent {
        join_all(ids.map(one)).await;
    } else {
        for id in ids {
            one(id).await;
        }
    }
    t0.elapsed()
}

async fn executor_starts(j: &FakeJenkins, ids: std::ops::Range<u64>, concurrent: bool) -> Duration {
    let e = executor(j).await;
    let t0 = Instant::now();
    if concurrent {
        let builds: Vec<_> = ids.map(build).collect();
        for r in join_all(builds.iter().map(|b| e.start(b))).await {
            r.expect("start");
        }
    } else {
        for id in ids {
            e.start(&build(id)).await.expect("start");
        }
    }
    t0.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("executor-jenkins benchmark (fake Jenkins on loopback, {rounds} rounds, medians)\n");
        println!("HTTP requests per build, start -> finished status, crumb cached (target <= 6):");
        for (what, q, r) in [
            ("status read once, after the build finished", 0, 0),
            ("read once queued, once running, once finished", 1, 1),
            ("read 3x queued, 3x running, once finished", 3, 3),
        ] {
            println!("  {:<48} {:>5.2}", what, requests_per_build(q, r).await);
        }

        let j = FakeJenkins::start().await;
        // The job XML the executor renders, reused by the baseline for the same body size.
        let probe = executor(&j).await;
        probe.start(&build(1_000_000)).await.expect("probe start");
        let xml = j.job_config("SD-1000000").expect("probe job").replace("1000000", "0");
        let mut next = 1u64;
        let mut take = || {
            let r = next..next + BUILDS;
            next += BUILDS;
            r
        };
        println!("\nTime to start {BUILDS} builds:");
        for concurrent in [true, false] {
            let (mut exe, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                exe.push(executor_starts(&j, take(), concurrent).await);
                let ids = take();
                raw.push(raw_starts(&j, ids, &xml, concurrent).await);
            }
            let (e, r) = (median(exe), median(raw));
            println!(
                "  {:<12} executor {:>8.1} ms ({:>6.2} ms/build)   raw HTTP baseline {:>8.1} ms   ratio {:.2}",
                if concurrent { "concurrent" } else { "sequential" },
                ms(e),
                ms(e) / BUILDS as f64,
                ms(r),
                ms(e) / ms(r)
            );
        }
    });
}
