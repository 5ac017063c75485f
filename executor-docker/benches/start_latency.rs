//! Start latency of the Docker executor against plain bollard calls, on the real daemon.
//!
//! 1. `start()` until the build container runs (start returns after Docker's container
//!    start, i.e. with the process running; checked by an untimed inspect), in the default
//!    token mode `stdin` and in mode `file` (the token written to a volume), against a
//!    baseline of what a naive executor does for the same two containers: create the
//!    launcher container (job-tools volume from its `VOLUME`), create the build container
//!    with `VolumesFrom: [init:ro]` and the token in the environment, start it. Runs are
//!    interleaved; medians are compared.
//! 2. 20 builds started concurrently vs one after another, for both; the daemon's
//!    observed parallelism is baseline-sequential / baseline-concurrent.
//! 3. The cost of metrics: `start()` (token mode `stdin`) with a Prometheus recorder
//!    installed and recording (configured as `sdx serve --metrics` does), against the same
//!    start with the recorder switched off, each stopped at once, in the same iteration;
//!    the median of the per-iteration ratios.
//!
//! `cargo bench -p executor-docker --features test-support --bench start_latency`
//! (`ITERATIONS=<n>` to change the sample count). Skips when the daemon is absent.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use executor_base::{Executor, StartConfig};
use executor_docker::testing::{self, TestImages};
use executor_docker::{DockerExecutor, DockerExecutorBuilder, PullPolicy, TokenMode};

const PREFIX: &str = "sdx-bench-";
const FILE_PREFIX: &str = "sdx-benchf-";
const CONCURRENT: usize = 20;
const ROUNDS: usize = 3;
const BASELINE_LABEL: &str = "sdx-bench-baseline";

/// Removes what an interrupted earlier run left: the executor's resources (GC far in the
/// future, this prefix only) and the labelled baseline containers.
async fn sweep(e: &DockerExecutor, docker: &Docker) {
    e.gc_at(chrono::Utc::now() + chrono::Duration::days(365), false)
        .await
        .expect("gc");
    let (containers, _) = testing::labelled(docker, &format!("{BASELINE_LABEL}=1")).await;
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    for c in containers {
        let _ = docker.remove_container(&c, Some(opts.clone())).await;
    }
}

async fn executor(docker: &Docker, images: &TestImages, mode: TokenMode) -> DockerExecutor {
    let prefix = match mode {
        TokenMode::File => FILE_PREFIX,
        _ => PREFIX,
    };
    DockerExecutorBuilder::new()
        .with_client(docker.clone())
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .with_pull_policy(PullPolicy::Missing)
        .with_token_mode(mode)
        .with_prefix(prefix)
        .with_network("none")
        .build()
        .await
        .expect("executor")
}

fn build(id: u64, image: &str) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9", image, "bench-token")
        .build()
        .expect("config")
}

async fn ours_once(e: &DockerExecutor, docker: &Docker, id: u64, image: &str) -> Duration {
    let b = build(id, image);
    let t = Instant::now();
    e.start(&b).await.expect("start");
    let took = t.elapsed();
    let c = docker
        .inspect_container(&e.build_container_name(b.build_id), None)
        .await
        .expect("inspect");
    assert_eq!(
        c.state.and_then(|s| s.running),
        Some(true),
        "build container not running"
    );
    took
}

/// The baseline's two containers. `naive`: network mode `none` only (a libnetwork sandbox
/// per container); otherwise also `NetworkDisabled`, as the executor does for `none`.
fn baseline_bodies(
    id: u64,
    images: &TestImages,
    naive: bool,
) -> (String, ContainerCreateBody, String, ContainerCreateBody) {
    let init = format!("{PREFIX}base-{id}-init");
    let build = format!("{PREFIX}base-{id}-build");
    let labels = Some(std::collections::HashMap::from([(
        BASELINE_LABEL.to_string(),
        "1".to_string(),
    )]));
    let init_body = ContainerCreateBody {
        labels: labels.clone(),
        image: Some(format!("{}:{}", images.launcher_repo, images.launcher_tag)),
        entrypoint: Some(vec!["/bin/true".into()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let build_body = ContainerCreateBody {
        labels,
        network_disabled: (!naive).then_some(true),
        image: Some(images.build.clone()),
        entrypoint: Some(vec!["/opt/sd/launch".into()]),
        cmd: Some(vec![
            "--api-uri".into(),
            "http://127.0.0.1:9/".into(),
            id.to_string(),
        ]),
        env: Some(vec!["SD_TOKEN=bench-token".into()]),
        host_config: Some(HostConfig {
            volumes_from: Some(vec![format!("{init}:ro")]),
            network_mode: Some("none".into()),
            nano_cpus: Some(2_000_000_000),
            memory: Some(2 << 30),
            ..Default::default()
        }),
        ..Default::default()
    };
    (init, init_body, build, build_body)
}

async fn baseline_once(docker: &Docker, images: &TestImages, id: u64) -> Duration {
    baseline_variant(docker, images, id, false).await
}

async fn baseline_variant(docker: &Docker, images: &TestImages, id: u64, naive: bool) -> Duration {
    let (init, init_body, build, build_body) = baseline_bodies(id, images, naive);
    let t = Instant::now();
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&init).build()),
            init_body,
        )
        .await
        .expect("create init");
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&build).build()),
            build_body,
        )
        .await
        .expect("create build");
    docker.start_container(&build, None).await.expect("start");
    t.elapsed()
}

async fn baseline_cleanup(docker: &Docker, id: u64) {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    for n in [
        format!("{PREFIX}base-{id}-build"),
        format!("{PREFIX}base-{id}-init"),
    ] {
        let _ = docker.remove_container(&n, Some(opts.clone())).await;
    }
}

async fn stop(e: &DockerExecutor, id: u64, image: &str) {
    e.stop(&build(id, image).to_stop()).await.expect("stop");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn quartiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |f: f64| ms(v[((v.len() - 1) as f64 * f).round() as usize]);
    format!("{:7.1} / {:7.1} / {:7.1} ms", q(0.25), q(0.5), q(0.75))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("start_latency: a benchmark against the real daemon; run it with `cargo bench`");
        return;
    }
    if !testing::docker_reachable() {
        eprintln!(
            "Skipping start_latency: dockerd is not reachable on {}",
            testing::socket_path()
        );
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let iterations: u64 = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let docker = testing::docker().await;
    let images = testing::test_images().await;
    let exec = executor(&docker, &images, TokenMode::Stdin).await;
    let file_exec = executor(&docker, &images, TokenMode::File).await;
    let base_id = 900_000 + u64::from(std::process::id() % 1000) * 100;
    sweep(&exec, &docker).await;
    sweep(&file_exec, &docker).await;

    // Warm-up (first connection, page cache).
    for i in 0..2 {
        ours_once(&exec, &docker, base_id + 90 + i, &images.build).await;
        baseline_once(&docker, &images, base_id + 90 + i).await;
        exec.stop(&build(base_id + 90 + i, &images.build).to_stop())
            .await
            .expect("stop");
        baseline_cleanup(&docker, base_id + 90 + i).await;
    }

    // The recorder as `sdx serve --metrics` installs it.
    let (recorder, recording, handle) =
        executor_base::testkit::metrics_switch::serve_like_recorder();
    metrics::set_global_recorder(recorder).expect("the only recorder");
    let (mut ours, mut base, mut naive, mut file, mut metered, mut unmetered) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for i in 0..iterations {
        let id = base_id + i;
        // Rotate the order so no variant always runs right after the cleanups.
        for k in 0..5 {
            match (i + k) % 5 {
                // The metrics pair: the same start, stopped at once, with and without a
                // recorder recording, in alternating order (the first of the two follows
                // whatever cleanup the variant before left the daemon doing).
                4 => {
                    for recorded in [i % 2 == 0, i % 2 == 1] {
                        let id = id + if recorded { 2_000 } else { 3_000 };
                        recording.store(recorded, Ordering::Relaxed);
                        let took = ours_once(&exec, &docker, id, &images.build).await;
                        recording.store(false, Ordering::Relaxed);
                        stop(&exec, id, &images.build).await;
                        if recorded {
                            &mut metered
                        } else {
                            &mut unmetered
                        }
                        .push(took);
                    }
                }
                0 => ours.push(ours_once(&exec, &docker, id, &images.build).await),
                1 => base.push(baseline_once(&docker, &images, id).await),
                2 => {
                    file.push(ours_once(&file_exec, &docker, id, &images.build).await);
                    stop(&file_exec, id, &images.build).await;
                }
                _ => {
                    naive.push(baseline_variant(&docker, &images, id + 1_000, true).await);
                    baseline_cleanup(&docker, id + 1_000).await;
                }
            }
        }
        exec.stop(&build(id, &images.build).to_stop())
            .await
            .expect("stop");
        baseline_cleanup(&docker, id).await;
    }
    let (mo, mb) = (median(ours.clone()), median(base.clone()));
    // Each iteration's recorded start against its unrecorded twin (the same start, stopped
    // at once as well, in the same iteration), so the machine's drift weighs on both.
    let mut metered_ratios: Vec<f64> = metered
        .iter()
        .zip(&unmetered)
        .map(|(m, o)| ms(*m) / ms(*o))
        .collect();
    metered_ratios.sort_by(|a, b| a.total_cmp(b));
    println!("start -> build container running ({iterations} runs each; p25 / median / p75):");
    println!(
        "  executor-docker start():                 {}",
        quartiles(ours)
    );
    println!(
        "  executor-docker start(), tokenMode=file: {}",
        quartiles(file.clone())
    );
    println!(
        "  baseline, same containers (bollard):     {}",
        quartiles(base)
    );
    println!(
        "  baseline with network sandboxes (naive): {}",
        quartiles(naive.clone())
    );
    println!(
        "  ratio to the same-container baseline: {:.3}x  (overhead {:+.1} ms); to the naive one: {:.3}x",
        ms(mo) / ms(mb),
        ms(mo) - ms(mb),
        ms(mo) / ms(median(naive))
    );
    println!(
        "  tokenMode=file to the same-container baseline: {:.3}x",
        ms(median(file)) / ms(mb)
    );
    let calls: f64 = handle
        .render()
        .lines()
        .filter(|l| l.starts_with("sdx_engine_calls_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    println!(
        "  executor-docker start() with a Prometheus recorder recording: {}; without (its twin): {}; ratio {:.3}x, per iteration {:.3}x (p25 {:.3}x, p75 {:.3}x) ({calls} engine calls recorded)",
        quartiles(metered.clone()),
        quartiles(unmetered.clone()),
        ms(median(metered)) / ms(median(unmetered)),
        metered_ratios[metered_ratios.len() / 2],
        metered_ratios[(metered_ratios.len() - 1) / 4],
        metered_ratios[(metered_ratios.len() - 1) * 3 / 4],
    );

    // Concurrency: 20 at once vs one after another, ROUNDS rounds (medians).
    let ids: Vec<u64> = (0..CONCURRENT as u64).map(|i| base_id + 50 + i).collect();
    let (mut os, mut oc, mut bs, mut bc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for id in &ids {
            ours_once(&exec, &docker, *id, &images.build).await;
        }
        os.push(t.elapsed());
        futures::future::join_all(ids.iter().map(|id| stop(&exec, *id, &images.build))).await;

        let t = Instant::now();
        for id in &ids {
            baseline_once(&docker, &images, *id).await;
        }
        bs.push(t.elapsed());
        futures::future::join_all(ids.iter().map(|id| baseline_cleanup(&docker, *id))).await;

        let t = Instant::now();
        futures::future::join_all(
            ids.iter()
                .map(|id| ours_once(&exec, &docker, *id, &images.build)),
        )
        .await;
        oc.push(t.elapsed());
        futures::future::join_all(ids.iter().map(|id| stop(&exec, *id, &images.build))).await;

        let t = Instant::now();
        futures::future::join_all(ids.iter().map(|id| baseline_once(&docker, &images, *id))).await;
        bc.push(t.elapsed());
        futures::future::join_all(ids.iter().map(|id| baseline_cleanup(&docker, *id))).await;
    }
    let (ours_seq, ours_conc, base_seq, base_conc) =
        (median(os), median(oc), median(bs), median(bc));

    let parallelism = ms(base_seq) / ms(base_conc);
    println!("{CONCURRENT} builds (medians of {ROUNDS} rounds):");
    println!(
        "  executor-docker: sequential {:8.1} ms, concurrent {:8.1} ms, ratio {:.2}",
        ms(ours_seq),
        ms(ours_conc),
        ms(ours_conc) / ms(ours_seq)
    );
    println!(
        "  baseline:        sequential {:8.1} ms, concurrent {:8.1} ms, ratio {:.2}",
        ms(base_seq),
        ms(base_conc),
        ms(base_conc) / ms(base_seq)
    );
    println!(
        "  daemon parallelism {:.2}; target concurrent <= 1.5 x sequential / parallelism = {:.1} ms; got {:.1} ms ({:.2}x of that bound's base)",
        parallelism,
        1.5 * ms(ours_seq) / parallelism,
        ms(ours_conc),
        ms(ours_conc) / (ms(ours_seq) / parallelism)
    );
    sweep(&exec, &docker).await;
    sweep(&file_exec, &docker).await;
    let s = exec.stats();
    println!(
        "  engine calls: {} (avg {:.1} ms), builds started {}",
        s.requests.total, s.requests.average_time, s.builds.started
    );
}
