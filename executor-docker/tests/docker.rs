//! Integration tests against the real `dockerd` (and the loopback registry for pulls).
//! Outside CI they skip when the daemon is absent; under `CI=true` they fail instead.
//!
//! Every test uses its own name prefix and build ids, so they run in parallel.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use executor_base::engine::{BreakerConfig, RetryPolicy};
use executor_base::testkit::daemon::require;
use executor_base::verdict::IMAGE_INVALID_MESSAGE;
use executor_base::{
    BuildId, Error, ErrorKind, Executor, ExecutorExt, FailureReason, LaunchMode, Phase,
    ResourceTable, StartConfig, TierTable, Verdict,
};
use executor_docker::testing::{self, TestImages};
use executor_docker::{DockerExecutor, DockerExecutorBuilder, PullPolicy, StartStep, TokenMode};

const TOKEN: &str = "header.payload-of-a-very-secret-token.signature";

fn docker_up() -> bool {
    require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket (DOCKER_HOST or /var/run/docker.sock)",
    )
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A unique prefix per test (and per process, so concurrent runs don't collide).
fn prefix(test: &str) -> String {
    format!("sdxt-{test}-{}-", std::process::id())
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        multiplier: 2.0,
        jitter: false,
        budget: None,
    }
}

fn builder(images: &TestImages, test: &str) -> DockerExecutorBuilder {
    DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .with_prefix(prefix(test))
        .with_network("none")
        .with_pull_policy(PullPolicy::Never)
        .with_retry(fast_retry())
}

async fn setup(test: &str) -> Option<(Docker, TestImages, DockerExecutor)> {
    if !docker_up() {
        return None;
    }
    init_tracing();
    let images = testing::test_images().await;
    let exec = builder(&images, test).build().await.expect("executor");
    Some((testing::docker().await, images, exec))
}

/// A build whose test launcher behaves as `path` says (see `testing::TEST_LAUNCH`).
fn build(id: u64, path: &str, image: &str) -> StartConfig {
    StartConfig::builder(id, format!("http://127.0.0.1:9{path}"), image, TOKEN)
        .job_id(7)
        .build()
        .expect("start config")
}

async fn finish(exec: &DockerExecutor, b: &StartConfig) -> executor_base::BuildStatus {
    exec.wait_until_finished(
        &b.to_stop(),
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .await
    .expect("build finishes")
}

async fn assert_nothing_left(docker: &Docker, exec: &DockerExecutor, id: u64) {
    let selector = format!("sdbuild={}{id}", exec.config().prefix);
    let (c, v) = testing::labelled(docker, &selector).await;
    assert!(
        c.is_empty() && v.is_empty(),
        "left behind for {selector}: containers {c:?}, volumes {v:?}"
    );
}

async fn wait_running(exec: &DockerExecutor, b: &StartConfig) {
    for _ in 0..100 {
        if exec.status(&b.to_stop()).await.expect("status").phase == Phase::Running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("build {} never ran", b.build_id);
}

#[tokio::test]
async fn a_build_that_succeeds() {
    let Some((docker, images, exec)) = setup("ok").await else {
        return;
    };
    let b = build(101, "/exit/0", &images.build);
    exec.start(&b).await.expect("start");
    let s = finish(&exec, &b).await;
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(exec.verify(&b).await.unwrap(), Verdict::Healthy);

    // Limits, labels, mounts and the launch command on the engine.
    let c = docker
        .inspect_container(&exec.build_container_name(b.build_id), None)
        .await
        .unwrap();
    let hc = c.host_config.unwrap();
    // LOW = 2 cores, capped at the daemon's CPU count.
    let ncpu = docker.info().await.unwrap().ncpu.unwrap_or(2).clamp(1, 2);
    assert_eq!(hc.nano_cpus, Some(ncpu * 1_000_000_000));
    assert_eq!(hc.memory, Some(2 << 30)); // LOW = 2 GiB
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    let labels = c.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["sdbuild"], format!("{}101", exec.config().prefix));
    assert_eq!(labels["screwdriver.cd/job-id"], "7");
    assert!(labels.contains_key("screwdriver.cd/expires-at"));
    let mounts = c.mounts.unwrap();
    let tools = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/opt/sd"))
        .expect("tools mount");
    assert_eq!(tools.rw, Some(false), "job-tools must be read-only");
    let args = c.args.unwrap().join(" ");
    assert!(args.ends_with("--token-file /dev/stdin 101"), "{args}");
    let config = c.config.unwrap();
    assert_eq!(
        (config.open_stdin, config.stdin_once),
        (Some(true), Some(true)),
        "the token goes in through a once-only stdin"
    );

    exec.stop(&b.to_stop()).await.expect("stop");
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Succeeded,
        "stop keeps the outcome"
    );
    assert_nothing_left(&docker, &exec, 101).await;
    let counts = exec.stats().builds;
    assert_eq!(
        (
            counts.started,
            counts.finished,
            counts.failed,
            counts.running
        ),
        (1, 1, 0, 0)
    );
}

#[tokio::test]
async fn a_build_that_exits_non_zero() {
    let Some((docker, images, exec)) = setup("fail").await else {
        return;
    };
    let b = build(102, "/exit/1", &images.build);
    exec.start(&b).await.expect("start");
    let s = finish(&exec, &b).await;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason(), Some(FailureReason::NonZeroExit));
    assert_eq!(s.exit_code, Some(1));
    assert!(exec.verify(&b).await.unwrap().is_failure());
    exec.stop(&b.to_stop()).await.expect("stop");
    assert_nothing_left(&docker, &exec, 102).await;
    assert_eq!(exec.stats().builds.by_reason["nonZeroExit"], 1);
}

#[tokio::test]
async fn a_build_killed_for_memory_is_an_oom_failure_even_with_exit_code_0() {
    if !docker_up() {
        return;
    }
    init_tracing();
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let table = ResourceTable {
        cpu: TierTable::CPU_DEFAULT,
        ram: TierTable {
            micro: 32.0 / 1024.0, // 32 MiB
            ..TierTable::RAM_DEFAULT
        },
    };
    let exec = builder(&images, "oom")
        .with_resources(table)
        .build()
        .await
        .unwrap();
    // The kernel usually kills only the memory hog (the launcher then exits 0); now and
    // then it also kills the launcher (exit 137) before the hog's memory is reclaimed.
    // Every run must be an OOM failure; the exit-code-0 case must show up.
    let mut codes = Vec::new();
    for id in [103, 123, 124, 125, 126, 127] {
        let b = StartConfig::builder(id, "http://127.0.0.1:9/oom", &images.build, TOKEN)
            .annotation("screwdriver.cd/ram", "MICRO")
            .build()
            .unwrap();
        exec.start(&b).await.expect("start");
        let s = finish(&exec, &b).await;
        assert_eq!(s.phase, Phase::Failed, "{s}");
        assert_eq!(s.reason(), Some(FailureReason::OutOfMemory), "{s}");
        let c = docker
            .inspect_container(&exec.build_container_name(b.build_id), None)
            .await
            .unwrap();
        assert_eq!(c.host_config.unwrap().memory, Some(32 << 20));
        exec.stop(&b.to_stop()).await.unwrap();
        assert_nothing_left(&docker, &exec, id).await;
        codes.push(s.exit_code);
        if s.exit_code == Some(0) {
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&Some(0)),
        "never saw the launcher exit 0 after an OOM kill: {codes:?}"
    );
    assert_eq!(
        exec.stats().builds.by_reason["outOfMemory"],
        codes.len() as u64
    );
}

#[tokio::test]
async fn docker_build_timings_and_peak_memory() {
    let Some((docker, images, exec)) = setup("timings").await else {
        return;
    };
    // A build that runs until stopped: the stats stream has time for samples.
    let before = chrono::Utc::now();
    let b = build(128, "/run", &images.build);
    exec.start(&b).await.expect("start");
    wait_running(&exec, &b).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let t = exec.timings(&b.to_stop()).await.unwrap().unwrap();
    let (accepted, created, running) = (
        t.accepted.unwrap(),
        t.scheduled.unwrap(),
        t.running.unwrap(),
    );
    assert!(before <= accepted, "{t:?}");
    // The daemon's clock and ours are the same machine's, at Docker's precision.
    let slack = chrono::Duration::milliseconds(50);
    assert!(accepted <= created + slack && created <= running, "{t:?}");
    assert_eq!(t.finished, None, "still running: {t:?}");
    assert_eq!(t.pull_started, None, "pull policy never: {t:?}");
    let peak = t.peak_memory_bytes.expect("stats samples");
    assert!(peak > 0 && peak < 1 << 30, "{peak}");
    exec.stop(&b.to_stop()).await.unwrap();
    // The container is gone; what this process saw remains.
    let after = exec.timings(&b.to_stop()).await.unwrap().unwrap();
    assert_eq!(
        (after.accepted, after.running, after.peak_memory_bytes),
        (Some(accepted), None, Some(peak))
    );

    // A build that ends by itself: finished from the container, before `stop`.
    let b = build(129, "/exit/3", &images.build);
    exec.start(&b).await.expect("start");
    assert_eq!(finish(&exec, &b).await.exit_code, Some(3));
    let t = exec.timings(&b.to_stop()).await.unwrap().unwrap();
    // Docker records StartedAt once its start call returns, so a launcher that exits at
    // once can read as finished a few ms before it started (phases clamp it to zero).
    assert!(t.running.unwrap() <= t.finished.unwrap() + slack, "{t:?}");
    exec.stop(&b.to_stop()).await.unwrap();
    assert_nothing_left(&docker, &exec, 128).await;
    assert_nothing_left(&docker, &exec, 129).await;
    // A build this process never saw, without a container, has none.
    assert_eq!(
        exec.timings(&build(130, "/run", &images.build).to_stop())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_missing_image_with_pull_policy_never_fails_and_leaves_nothing() {
    let Some((docker, _images, exec)) = setup("never").await else {
        return;
    };
    let b = build(104, "/exit/0", "sdx-test/does-not-exist:never");
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImagePull, "{e}");
    assert!(e.to_string().contains("pull policy is never"), "{e}");
    // The launcher container and volumes were created before the build image was found
    // missing: all removed again.
    assert_nothing_left(&docker, &exec, 104).await;
    let s = exec.status(&b.to_stop()).await.unwrap();
    assert_eq!(s.reason(), Some(FailureReason::ImagePull));
    assert_eq!(
        exec.verify(&b).await.unwrap().as_str(),
        IMAGE_INVALID_MESSAGE
    );
    assert_eq!(exec.stats().builds.by_reason["imagePull"], 1);
    exec.stop(&b.to_stop())
        .await
        .expect("stop after a failed start");
}

#[tokio::test]
async fn pulls_from_the_local_registry_by_policy() {
    if !docker_up()
        || !require(
            "docker-registry",
            testing::registry_reachable(),
            "nothing listens on 127.0.0.1:5000",
        )
    {
        return;
    }
    init_tracing();
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let tag = format!("pull-{}", std::process::id());
    let remote = testing::push(&docker, &images.build, "sdx-test/build", &tag).await;
    testing::remove_image(&docker, &remote).await;

    // missing: pulled because absent.
    let exec = builder(&images, "pull")
        .with_pull_policy(PullPolicy::Missing)
        .build()
        .await
        .unwrap();
    let b = build(105, "/exit/0", &remote);
    exec.start(&b).await.expect("start pulls the missing image");
    assert_eq!(exec.pull_stats().success, 1);
    assert_eq!(finish(&exec, &b).await.phase, Phase::Succeeded);
    exec.stop(&b.to_stop()).await.unwrap();

    // missing again: present now, no pull.
    let b = build(106, "/exit/0", &remote);
    exec.start(&b).await.unwrap();
    assert_eq!(exec.pull_stats().total, 1);
    exec.stop(&b.to_stop()).await.unwrap();

    // always: pulled although present (launcher pull is attempted too and fails: the
    // launcher only exists locally, so use a registry copy of it).
    let launcher_remote = testing::push(
        &docker,
        &format!("{}:{}", images.launcher_repo, images.launcher_tag),
        "sdx-test/launcher",
        &tag,
    )
    .await;
    let always = builder(&images, "pull")
        .with_launcher_image(launcher_remote.rsplit_once(':').unwrap().0, &tag)
        .with_pull_policy(PullPolicy::Always)
        .build()
        .await
        .unwrap();
    let b = build(107, "/exit/0", &remote);
    always.start(&b).await.expect("start with always");
    assert_eq!(
        always.pull_stats().success,
        2,
        "launcher and build image pulled"
    );
    assert_eq!(finish(&always, &b).await.phase, Phase::Succeeded);
    always.stop(&b.to_stop()).await.unwrap();
    for id in [105, 106, 107] {
        assert_nothing_left(&docker, &exec, id).await;
    }
    testing::remove_image(&docker, &remote).await;
    testing::remove_image(&docker, &launcher_remote).await;
}

#[tokio::test]
async fn pull_failures_are_image_pull_failures() {
    if !docker_up()
        || !require(
            "docker-registry",
            testing::registry_reachable(),
            "nothing listens on 127.0.0.1:5000",
        )
    {
        return;
    }
    init_tracing();
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let exec = builder(&images, "pullfail")
        .with_pull_policy(PullPolicy::Missing)
        .build()
        .await
        .unwrap();

    // Manifest unknown: the registry answers, the tag does not exist.
    let b = build(
        108,
        "/exit/0",
        &format!("{}/sdx-test/nothing-here:nope", testing::REGISTRY),
    );
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImagePull, "{e}");
    assert!(e.message().contains("nothing-here"), "{e}");
    let s = exec.status(&b.to_stop()).await.unwrap();
    assert_eq!(s.reason(), Some(FailureReason::ImagePull));
    assert!(
        s.failure
            .unwrap()
            .evidence
            .unwrap()
            .contains("nothing-here")
    );
    assert_eq!(
        exec.verify(&b).await.unwrap().as_str(),
        IMAGE_INVALID_MESSAGE
    );
    assert_nothing_left(&docker, &exec, 108).await;

    // Registry refused: nothing listens there.
    let b = build(109, "/exit/0", "127.0.0.1:5999/sdx-test/build:x");
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImagePull, "{e}");
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().reason(),
        Some(FailureReason::ImagePull)
    );
    assert_nothing_left(&docker, &exec, 109).await;
}

#[tokio::test]
async fn stop_of_a_running_build_kills_and_removes_everything() {
    let Some((docker, images, exec)) = setup("stop").await else {
        return;
    };
    let b = build(110, "/run-until-stopped", &images.build);
    exec.start(&b).await.expect("start");
    wait_running(&exec, &b).await;
    assert_eq!(exec.stats().builds.running, 1);
    exec.stop(&b.to_stop()).await.expect("stop");
    assert_nothing_left(&docker, &exec, 110).await;
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    exec.stop(&b.to_stop()).await.expect("stop is idempotent");
    let unknown = executor_base::StopConfig::new(BuildId::new(999_999).unwrap());
    exec.stop(&unknown)
        .await
        .expect("stop of an unknown build is fine");
    assert_eq!(
        exec.status(&unknown).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let counts = exec.stats().builds;
    assert_eq!(
        (
            counts.started,
            counts.running,
            counts.finished,
            counts.failed
        ),
        (1, 0, 1, 0)
    );
}

/// Starts build `id` (whose stand-in launcher checks the token's SHA-256), checks the token
/// is in no `docker inspect` and in no volume of ours, and that the build succeeds.
async fn token_reaches_the_launcher_unseen(docker: &Docker, exec: &DockerExecutor, id: u64) {
    let sha = testing::sha256_hex(TOKEN.as_bytes());
    let b = build(
        id,
        &format!("/token-sha256/{sha}"),
        &testing::test_images().await.build,
    );
    exec.start(&b).await.expect("start");
    for name in [
        exec.build_container_name(b.build_id),
        exec.init_container_name(b.build_id),
    ] {
        let c = docker.inspect_container(&name, None).await.unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains(TOKEN),
            "token visible in docker inspect of {name}"
        );
    }
    // The launcher read exactly the token.
    let s = finish(exec, &b).await;
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    exec.stop(&b.to_stop()).await.unwrap();
    assert_nothing_left(docker, exec, id).await;
}

#[tokio::test]
async fn the_token_is_not_in_docker_inspect_by_default() {
    let Some((docker, _, exec)) = setup("token").await else {
        return;
    };
    assert_eq!(exec.config().token_mode, TokenMode::Stdin);
    token_reaches_the_launcher_unseen(&docker, &exec, 111).await;
}

#[tokio::test]
async fn token_mode_file_writes_it_to_a_per_build_volume() {
    let Some((docker, images, _)) = setup("tokenfile").await else {
        return;
    };
    let exec = builder(&images, "tokenfile")
        .with_token_mode(TokenMode::File)
        .build()
        .await
        .unwrap();
    let sha = testing::sha256_hex(TOKEN.as_bytes());
    let b = build(129, &format!("/token-sha256/{sha}"), &images.build);
    exec.start(&b).await.expect("start");
    let c = docker
        .inspect_container(&exec.build_container_name(b.build_id), None)
        .await
        .unwrap();
    assert!(
        c.args
            .unwrap()
            .join(" ")
            .ends_with("--token-file /run/sd/token 129")
    );
    let token_volume = c
        .mounts
        .unwrap()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some("/run/sd"))
        .expect("token volume mounted");
    assert_eq!(token_volume.rw, Some(false));
    assert_eq!(finish(&exec, &b).await.phase, Phase::Succeeded);
    exec.stop(&b.to_stop()).await.unwrap();
    assert_nothing_left(&docker, &exec, 129).await;
    token_reaches_the_launcher_unseen(&docker, &exec, 130).await;
}

#[tokio::test]
async fn every_one_of_many_concurrent_builds_gets_its_token_through_stdin() {
    let Some((docker, images, exec)) = setup("stdin-many").await else {
        return;
    };
    let sha = testing::sha256_hex(TOKEN.as_bytes());
    let builds: Vec<StartConfig> = (0..20)
        .map(|i| build(140 + i, &format!("/token-sha256/{sha}"), &images.build))
        .collect();
    for r in futures::future::join_all(builds.iter().map(|b| exec.start(b))).await {
        r.expect("start");
    }
    for b in &builds {
        let s = finish(&exec, b).await;
        assert_eq!(s.phase, Phase::Succeeded, "build {}: {s}", b.build_id);
    }
    let stops: Vec<_> = builds.iter().map(StartConfig::to_stop).collect();
    for r in futures::future::join_all(stops.iter().map(|s| exec.stop(s))).await {
        r.expect("stop");
    }
    for b in &builds {
        assert_nothing_left(&docker, &exec, b.build_id.get()).await;
    }
}

#[tokio::test]
async fn env_and_screwdriver_modes_deliver_the_token_visibly_as_documented() {
    let Some((docker, images, _)) = setup("tokenmodes").await else {
        return;
    };
    let sha = testing::sha256_hex(TOKEN.as_bytes());
    let env = builder(&images, "tokenmodes")
        .with_token_mode(TokenMode::Env)
        .build()
        .await
        .unwrap();
    let b = build(112, &format!("/env-token-sha256/{sha}"), &images.build);
    env.start(&b).await.expect("start");
    let c = docker
        .inspect_container(&env.build_container_name(b.build_id), None)
        .await
        .unwrap();
    assert!(serde_json::to_string(&c).unwrap().contains(TOKEN));
    assert_eq!(finish(&env, &b).await.phase, Phase::Succeeded);
    env.stop(&b.to_stop()).await.unwrap();

    let sd = builder(&images, "tokenmodes")
        .with_launch_mode(LaunchMode::Screwdriver)
        .build()
        .await
        .unwrap();
    let b = build(113, "/exit/0", &images.build);
    sd.start(&b).await.expect("start");
    let c = docker
        .inspect_container(&sd.build_container_name(b.build_id), None)
        .await
        .unwrap();
    assert_eq!(c.path.as_deref(), Some("/opt/sd/launcher_entrypoint.sh"));
    assert_eq!(finish(&sd, &b).await.phase, Phase::Succeeded);
    sd.stop(&b.to_stop()).await.unwrap();
    for id in [112, 113] {
        assert_nothing_left(&docker, &env, id).await;
    }
}

#[tokio::test]
async fn a_crash_half_way_through_start_leaves_nothing_behind() {
    let Some((docker, images, _)) = setup("crash").await else {
        return;
    };
    for (id, step) in [
        (114, StartStep::ImagesReady),
        (115, StartStep::InitCreated),
        (116, StartStep::BuildCreated),
        (128, StartStep::TokenWritten),
    ] {
        let hook: executor_docker::FaultHook = Arc::new(move |at| {
            if at == step {
                Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("injected fault at {at:?}"),
                ))
            } else {
                Ok(())
            }
        });
        // Token mode stdin (default): the token step comes after the start, so that fault
        // also proves a started container is removed. Mode file: before it.
        for (mode, id) in [(TokenMode::Stdin, id), (TokenMode::File, id + 100)] {
            let exec = builder(&images, "crash")
                .with_fault_hook(hook.clone())
                .with_token_mode(mode)
                .build()
                .await
                .unwrap();
            let b = build(id, "/run-until-stopped", &images.build);
            let e = exec.start(&b).await.unwrap_err();
            assert!(e.message().contains("injected fault"), "{mode:?}: {e}");
            assert_nothing_left(&docker, &exec, id).await;
        }
    }
}

#[tokio::test]
async fn a_second_start_of_a_live_build_is_refused_without_harming_it() {
    let Some((docker, images, exec)) = setup("dup").await else {
        return;
    };
    let b = build(117, "/run-until-stopped", &images.build);
    exec.start(&b).await.expect("start");
    assert_eq!(
        exec.start(&b).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    // Another executor process with the same prefix: the daemon's name conflict.
    let other = builder(&images, "dup").build().await.unwrap();
    assert_eq!(
        other.start(&b).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    wait_running(&exec, &b).await;
    let (containers, volumes) =
        testing::labelled(&docker, &format!("sdbuild={}117", exec.config().prefix)).await;
    assert_eq!(
        (containers.len(), volumes.len()),
        (2, 1),
        "{containers:?} {volumes:?}"
    );
    exec.stop(&b.to_stop()).await.unwrap();
    assert_nothing_left(&docker, &exec, 117).await;
}

#[tokio::test]
async fn a_container_removed_behind_our_back_is_lost() {
    let Some((docker, images, exec)) = setup("lost").await else {
        return;
    };
    let b = build(118, "/run-until-stopped", &images.build);
    exec.start(&b).await.expect("start");
    wait_running(&exec, &b).await;
    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .build();
    docker
        .remove_container(&exec.build_container_name(b.build_id), Some(opts))
        .await
        .unwrap();
    let s = exec.status(&b.to_stop()).await.unwrap();
    assert_eq!(s.phase, Phase::Lost, "{s}");
    assert!(exec.verify(&b).await.unwrap().is_failure());

    // A fresh executor (a restarted server) sees the leftovers and also says Lost.
    let fresh = builder(&images, "lost").build().await.unwrap();
    assert_eq!(fresh.status(&b.to_stop()).await.unwrap().phase, Phase::Lost);
    exec.stop(&b.to_stop()).await.unwrap();
    assert_nothing_left(&docker, &exec, 118).await;
    assert_eq!(exec.stats().builds.by_reason["lost"], 1);
}

#[tokio::test]
async fn gc_removes_expired_resources_of_our_prefix_only() {
    let Some((docker, images, exec)) = setup("gc").await else {
        return;
    };
    let other = builder(&images, "gc-other").build().await.unwrap();
    let b = build(119, "/run-until-stopped", &images.build);
    exec.start(&b).await.expect("start");
    let o = build(119, "/run-until-stopped", &images.build);
    other.start(&o).await.expect("start other prefix");

    // Nothing is expired now.
    assert!(exec.gc(false).await.unwrap().expired.is_empty());
    wait_running(&exec, &b).await;

    // A day later (timeout 90 min + 30 min grace passed): everything of ours is expired.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let dry = exec.gc_at(later, true).await.unwrap();
    assert!(dry.dry_run);
    let p = &exec.config().prefix;
    assert_eq!(
        dry.expired,
        vec![
            format!("container/{p}119-build"),
            format!("container/{p}119-init"),
            format!("volume/{p}119-tools"),
        ]
    );
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Running,
        "dry run removes nothing"
    );
    let report = exec.gc_at(later, false).await.unwrap();
    assert_eq!(report.expired, dry.expired);
    assert_nothing_left(&docker, &exec, 119).await;
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::TimedOut
    );

    // The other prefix's build is untouched.
    assert_eq!(
        other.status(&o.to_stop()).await.unwrap().phase,
        Phase::Running
    );
    other.cleanup().await.unwrap();
    assert_eq!(
        other.status(&o.to_stop()).await.unwrap().phase,
        Phase::Running
    );
    other.stop(&o.to_stop()).await.unwrap();
    assert_nothing_left(&docker, &other, 119).await;
}

#[tokio::test]
async fn an_unreachable_daemon_is_a_temporary_unavailable_error_naming_it() {
    let path = format!("/tmp/sdx-no-docker-{}.sock", std::process::id());
    let exec = DockerExecutorBuilder::new()
        .with_socket_path(&path)
        .with_retry(RetryPolicy::none())
        .build()
        .await
        .unwrap();
    let b = build(120, "/exit/0", "busybox:latest");
    let e = exec.status(&b.to_stop()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert!(e.to_string().contains(&path), "{e}");
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(!e.to_string().contains(TOKEN));

    let tcp = DockerExecutorBuilder::new()
        .with_host("tcp://127.0.0.1:1")
        .with_retry(RetryPolicy::none())
        .with_breaker(BreakerConfig::default())
        .build()
        .await
        .unwrap();
    let e = tcp.status(&b.to_stop()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("tcp://127.0.0.1:1"), "{e}");
    assert!(!tcp.stats().breaker.is_closed || tcp.stats().requests.failure >= 1);
}

#[tokio::test]
async fn a_build_image_with_its_own_opt_sd_still_runs_the_launchers_tools() {
    let Some((docker, _images, exec)) = setup("shadow").await else {
        return;
    };
    // A build image shipping its own /opt/sd/launch (which would exit 42).
    let tag = format!("sdx-test/build-with-opt-sd:{}", testing::TAG);
    let impostor = testing::File::exec("opt/sd/launch", "#!/bin/sh\nexit 42\n");
    testing::build_image(&docker, &tag, testing::busybox_context(&[impostor], "")).await;
    for (id, path) in [(121, "/exit/0"), (122, "/exit/0")] {
        let b = build(id, path, &tag);
        exec.start(&b).await.expect("start");
        let s = finish(&exec, &b).await;
        assert_eq!(
            s.phase,
            Phase::Succeeded,
            "the build image's /opt/sd leaked into the tools volume: {s}"
        );
        exec.stop(&b.to_stop()).await.unwrap();
        assert_nothing_left(&docker, &exec, id).await;
    }
}
