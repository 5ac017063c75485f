//! A real Prometheus scrapes a real `sdx serve --metrics`: builds run through the process
//! backend (the reference `launch`, steps that succeed and fail) and the Docker backend
//! (the test launcher image, builds that run until aborted through the API), then
//! Prometheus' own HTTP API (`/api/v1/query`) must report exactly those builds: started
//! and finished counters by backend and phase, and one start-latency observation per
//! build. The exposition also passes `promtool check metrics`.
//!
//! Settings are a user's defaults (the API polls each build's status every second).
//! Needs Debian's `prometheus` (with `promtool`) and the shared dockerd: skipped outside
//! CI when either is absent, a failure under `CI=true` (`.ci/run` installs them).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use executor_base::testkit::daemon::require;
use executor_docker::testing;
use serde_json::{Value, json};

#[path = "support/api.rs"]
mod api;
use api::Api;

const SDX: &str = env!("CARGO_BIN_EXE_sdx");
const PROMETHEUS: &str = "prometheus";
const PROMTOOL: &str = "promtool";

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn on_path(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get_text(url: &str) -> Result<String, String> {
    let mut r = agent().get(url).call().map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{url} answered {}", r.status()));
    }
    r.body_mut().read_to_string().map_err(|e| e.to_string())
}

fn wait_until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if t0.elapsed() > within => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `sdx serve` on the process (default) and Docker backends with metrics on `metrics`.
fn serve(dir: &Path, port: u16, metrics: u16, images: &testing::TestImages) -> (Killed, Api) {
    let token_file = dir.join("admin.token");
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut cmd = Command::new(SDX);
    for var in [
        "SDX_CONFIG",
        "SDX_EXECUTOR",
        "SDX_API",
        "SDX_API_TOKEN",
        "SDX_STORE",
        "SDX_METRICS",
        "RUST_LOG",
        "EXECUTOR_PROCESS_JOB_TOOLS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", dir)
        .env("EXECUTOR_PROCESS_STATE_DIR", dir.join("state"))
        .env("EXECUTOR_DOCKER_HOST", testing::docker_host())
        .env("EXECUTOR_DOCKER_PREFIX", format!("sdx-prom-{port}-"))
        .env("EXECUTOR_DOCKER_LAUNCHER_IMAGE", &images.launcher_repo)
        .env("EXECUTOR_DOCKER_LAUNCHER_VERSION", &images.launcher_tag)
        .env("EXECUTOR_DOCKER_NETWORK", "none")
        .env("EXECUTOR_DOCKER_PULL_POLICY", "missing")
        // The test launcher image carries no launch-protocol label: the API's pre-flight
        // would refuse its Docker builds (422), which this test does not measure.
        .env("EXECUTOR_API_PREFLIGHT", "false")
        .args(["-e", "process,docker", "serve", "-v", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics")
        .arg(format!("127.0.0.1:{metrics}"))
        .arg("--token-file")
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let child = Killed(child);
    assert!(
        first.contains("reference API at"),
        "serve said {first:?}; log: {}",
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    );
    let mut said = vec![first];
    said.extend(lines.by_ref().take(3).map_while(Result::ok));
    assert!(
        said.iter()
            .any(|l| l.contains(&format!("metrics at http://127.0.0.1:{metrics}/metrics"))),
        "serve said {said:?}"
    );
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let api = Api {
        url: format!("http://127.0.0.1:{port}"),
        token,
        agent: agent(),
    };
    (child, api)
}

/// Prometheus on `port` with its own data directory, scraping `target` every second.
fn prometheus(dir: &Path, port: u16, target: &str) -> Killed {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sdx\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start prometheus");
    Killed(child)
}

/// `query` against Prometheus' HTTP API: the result vector as (labels, value) pairs.
fn query(prom: u16, query: &str) -> Result<Vec<(Value, f64)>, String> {
    let mut r = agent()
        .get(format!("http://127.0.0.1:{prom}/api/v1/query"))
        .query("query", query)
        .call()
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{query}: {v}"));
    }
    Ok(v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let value = s["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            (s["metric"].clone(), value)
        })
        .collect())
}

/// Waits until `q` answers exactly `want` (label value of `by` -> value).
fn expect(prom: u16, q: &str, by: &[&str], want: &[(&[&str], f64)]) {
    wait_until(Duration::from_secs(60), q, || {
        let got = query(prom, q)?;
        let mut got: Vec<(Vec<String>, f64)> = got
            .into_iter()
            .map(|(m, v)| {
                (
                    by.iter()
                        .map(|k| m[*k].as_str().unwrap_or("").to_string())
                        .collect(),
                    v,
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want: Vec<(Vec<String>, f64)> = want
            .iter()
            .map(|(k, v)| (k.iter().map(|s| s.to_string()).collect(), *v))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?}, want {want:?}"))
        }
    })
}

fn submit(api: &Api, body: &Value) -> u64 {
    match api.call("POST", "/v4/builds", Some(body)) {
        Ok((201, v)) => v["id"].as_u64().unwrap(),
        other => panic!("submit: {other:?}"),
    }
}

fn status_of(api: &Api, id: u64) -> String {
    match api.call("GET", &format!("/v4/builds/{id}"), None) {
        Ok((200, v)) => v["status"].as_str().unwrap_or("").to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_builds_that_ran() {
    let tools = on_path(PROMETHEUS) && on_path(PROMTOOL);
    if !require(
        "prometheus",
        tools,
        "`prometheus` and `promtool` are not on PATH (Debian package prometheus)",
    ) {
        return;
    }
    if !require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket",
    ) {
        return;
    }
    let images = testing::test_images().await;
    let dir = tempfile::tempdir().unwrap();
    let (api_port, metrics_port, prom_port) = (free_port(), free_port(), free_port());
    let target = format!("127.0.0.1:{metrics_port}");
    let (_serve, api) = serve(dir.path(), api_port, metrics_port, &images);
    let _prom = prometheus(dir.path(), prom_port, &target);

    // Process: two that succeed, one that fails; each runs long enough to be seen running.
    let process = |code: i32| json!({"steps": [{"name": "work", "command": format!("sleep 3; exit {code}")}]});
    let mut ids = vec![
        submit(&api, &process(0)),
        submit(&api, &process(0)),
        submit(&api, &process(3)),
    ];
    // Docker: two builds whose launcher runs until they are aborted.
    let docker = json!({
        "container": images.build,
        "annotations": {"screwdriver.cd/executor": "docker"},
        "steps": [{"name": "work", "command": "true"}],
    });
    let dockers = [submit(&api, &docker), submit(&api, &docker)];
    ids.extend(dockers);

    // The Docker builds are aborted once the executor has seen them running.
    let metrics_url = format!("http://{target}/metrics");
    wait_until(Duration::from_secs(60), "docker builds running", || {
        let text = get_text(&metrics_url)?;
        let n: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("sdx_build_start_latency_seconds_count")
                    && l.contains("backend=\"docker\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if n == 2.0 {
            Ok(())
        } else {
            Err(format!("{n} seen running"))
        }
    });
    for id in dockers {
        let r = api.call(
            "PUT",
            &format!("/v4/builds/{id}"),
            Some(&json!({"status": "ABORTED", "statusMessage": "done with it"})),
        );
        assert!(matches!(r, Ok((200, _))), "abort {id}: {r:?}");
    }
    let finals = wait_until(Duration::from_secs(90), "builds final", || {
        let s: Vec<String> = ids.iter().map(|id| status_of(&api, *id)).collect();
        if s.iter()
            .all(|s| ["SUCCESS", "FAILURE", "ABORTED"].contains(&s.as_str()))
        {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert_eq!(
        finals,
        ["SUCCESS", "SUCCESS", "FAILURE", "ABORTED", "ABORTED"],
        "the builds' outcomes"
    );

    // Each build's JSON carries the timings its executor reported when it concluded:
    // the process record (spawn, exit) and the Docker container (created, started) with
    // the executor's own `start` time.
    wait_until(Duration::from_secs(30), "timings recorded", || {
        for id in &ids {
            let (_, b) = api.call("GET", &format!("/v4/builds/{id}"), None)?;
            let t = &b["timings"];
            let docker = dockers.contains(id);
            let ok = t["running"].is_string()
                && t["accepted"].is_string()
                && if docker {
                    t["scheduled"].is_string()
                } else {
                    t["finished"].is_string()
                };
            if !ok {
                return Err(format!("build {id}: {t}"));
            }
        }
        Ok(())
    });

    // What Prometheus scraped.
    expect(
        prom_port,
        "sum by (backend) (sdx_builds_started_total)",
        &["backend"],
        &[(&["process"], 3.0), (&["docker"], 2.0)],
    );
    expect(
        prom_port,
        "sum by (backend, phase, reason) (sdx_builds_finished_total)",
        &["backend", "phase", "reason"],
        &[
            (&["process", "succeeded", "none"], 2.0),
            (&["process", "failed", "nonZeroExit"], 1.0),
            (&["docker", "canceled", "none"], 2.0),
        ],
    );
    expect(
        prom_port,
        "sum by (backend) (sdx_build_start_latency_seconds_count)",
        &["backend"],
        &[(&["process"], 3.0), (&["docker"], 2.0)],
    );
    expect(
        prom_port,
        "sum by (backend) (sdx_builds_in_flight)",
        &["backend"],
        &[(&["process"], 0.0), (&["docker"], 0.0)],
    );
    // Start latency: every build was seen running within the poll interval of its start
    // plus the engine's start (a few seconds on this machine), never 0.
    let sums = query(
        prom_port,
        "sum by (backend) (sdx_build_start_latency_seconds_sum)",
    )
    .unwrap();
    for (m, v) in sums {
        assert!(v > 0.0 && v < 60.0, "{m}: {v}");
    }
    // Engine calls of the Docker backend went through EngineCalls and were scraped.
    let calls = query(
        prom_port,
        "sum(sdx_engine_calls_total{backend=\"docker\",outcome=\"ok\"})",
    )
    .unwrap();
    assert!(calls.first().is_some_and(|(_, v)| *v >= 4.0), "{calls:?}");

    // The exposition passes promtool's checks.
    let text = get_text(&metrics_url).unwrap();
    let mut check = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
