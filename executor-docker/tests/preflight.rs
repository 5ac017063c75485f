//! Pre-flight on the real `dockerd` and the loopback registry: the sdx launcher image
//! (built by `launcher_image`, the code behind `sdx launcher-image build`) passes; a
//! launcher without the launch-protocol label fails in native mode, naming the label and
//! the image; an image neither present nor in the registry fails naming it; a pushed
//! image that is not present is pullable; a daemon nobody answers on fails naming its
//! address, within the check timeout. Every executor is built with the defaults a user
//! gets, except the launcher image and the daemon address where the case needs them.

use std::time::{Duration, Instant};

use executor_base::testkit::daemon::require;
use executor_base::{Executor, LaunchMode, Level, Preflight, StartConfig};
use executor_docker::launcher_image::{ImageClient, LauncherImage};
use executor_docker::testing;
use executor_docker::{DockerExecutorBuilder, PullPolicy};

fn build(image: &str) -> StartConfig {
    StartConfig::builder(801, "http://127.0.0.1:9/", image, "tok-preflight")
        .build()
        .expect("start config")
}

fn finding<'a>(p: &'a Preflight, check: &str) -> &'a executor_base::Finding {
    p.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no finding {check} in {p:#?}"))
}

fn daemon_up() -> bool {
    require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket",
    )
}

/// The sdx launcher image made by the launcher-image code, tagged `tag`.
async fn sdx_launcher(tag: &str) {
    let launch = std::fs::read(testing::BUSYBOX).expect("busybox-static as the launch binary");
    let client = ImageClient::connect(&testing::docker_host()).unwrap();
    client
        .build(
            &LauncherImage::new(launch, "launch test"),
            &[tag.to_string()],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_sdx_launcher_image_passes_and_a_stock_one_fails_in_native_mode() {
    if !daemon_up() {
        return;
    }
    let images = testing::test_images().await;
    let sdx = format!("sdx-test/preflight-sdx-launcher:{}", testing::TAG);
    sdx_launcher(&sdx).await;
    let (repo, tag) = sdx.split_once(':').unwrap();
    let e = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(repo, tag)
        .build()
        .await
        .unwrap();
    let p = e.preflight(&build(&images.build)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(p.backend, "docker");
    let daemon = finding(&p, "docker.daemon");
    assert_eq!(daemon.level, Level::Ok);
    assert!(daemon.message.contains("API"), "{}", daemon.message);
    let l = finding(&p, "docker.launcherImage");
    assert_eq!(l.level, Level::Ok, "{l:?}");
    assert!(l.message.contains("launch protocol 1"), "{}", l.message);
    assert_eq!(finding(&p, "docker.buildImage").level, Level::Ok);
    assert_eq!(finding(&p, "docker.launchMode").level, Level::Ok);

    // The test launcher image: busybox and a launch script, no launch-protocol label.
    let stock = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .build()
        .await
        .unwrap();
    let p = stock.preflight(&build(&images.build)).await.unwrap();
    assert!(!p.passed(), "{p:#?}");
    let l = finding(&p, "docker.launcherImage");
    assert_eq!(l.level, Level::Fail);
    assert!(
        l.message.contains("cd.screwdriver.sdx.launch-protocol"),
        "{}",
        l.message
    );
    assert!(l.message.contains(&images.launcher_repo), "{}", l.message);
    assert!(
        l.message.contains("sdx launcher-image build"),
        "{}",
        l.message
    );

    // Screwdriver mode takes the same image (upstream's contract) and warns that success
    // cannot be proven; the sdx image is refused there (no launcher_entrypoint.sh).
    let sd = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .with_launch_mode(LaunchMode::Screwdriver)
        .build()
        .await
        .unwrap();
    let p = sd.preflight(&build(&images.build)).await.unwrap();
    assert!(p.passed(), "{p:#?}");
    assert_eq!(finding(&p, "docker.launchMode").level, Level::Warn);
    let sd_sdx = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(repo, tag)
        .with_launch_mode(LaunchMode::Screwdriver)
        .build()
        .await
        .unwrap();
    let p = sd_sdx.preflight(&build(&images.build)).await.unwrap();
    assert_eq!(finding(&p, "docker.launcherImage").level, Level::Fail);
}

#[tokio::test]
async fn images_are_present_pullable_or_a_failure_naming_them() {
    if !daemon_up()
        || !require(
            "docker-registry",
            testing::registry_reachable(),
            "nothing answers on 127.0.0.1:5000",
        )
    {
        return;
    }
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let sdx = format!("sdx-test/preflight-sdx-launcher:{}", testing::TAG);
    sdx_launcher(&sdx).await;
    // In the registry, not on the daemon: pullable.
    let remote = testing::push(
        &docker,
        &images.build,
        "sdx-test/preflight-build",
        testing::TAG,
    )
    .await;
    testing::remove_image(&docker, &remote).await;
    let (repo, tag) = sdx.split_once(':').unwrap();
    let e = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(repo, tag)
        .build()
        .await
        .unwrap();
    let p = e.preflight(&build(&remote)).await.unwrap();
    let b = finding(&p, "docker.buildImage");
    assert_eq!(b.level, Level::Ok, "{p:#?}");
    assert!(
        b.message.contains("pullable from 127.0.0.1:5000"),
        "{}",
        b.message
    );
    assert!(b.message.contains("sha256:"), "{}", b.message);

    // Neither present nor in the registry: fails naming the image and the registry.
    let missing = "127.0.0.1:5000/sdx-test/preflight-never-pushed:1";
    let p = e.preflight(&build(missing)).await.unwrap();
    assert!(!p.passed());
    let b = finding(&p, "docker.buildImage");
    assert_eq!(b.level, Level::Fail);
    assert!(b.message.contains(missing), "{}", b.message);
    assert!(b.message.contains("127.0.0.1:5000"), "{}", b.message);

    // A launcher that is neither present nor pullable fails the same way.
    let e = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image("127.0.0.1:5000/sdx-test/no-launcher", "1")
        .build()
        .await
        .unwrap();
    let p = e.preflight(&build(&images.build)).await.unwrap();
    let l = finding(&p, "docker.launcherImage");
    assert_eq!(l.level, Level::Fail);
    assert!(
        l.message.contains("sdx-test/no-launcher:1"),
        "{}",
        l.message
    );

    // Pull policy never: a build image that is not present fails, naming the policy.
    let never = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(repo, tag)
        .with_pull_policy(PullPolicy::Never)
        .build()
        .await
        .unwrap();
    let p = never.preflight(&build(&remote)).await.unwrap();
    let b = finding(&p, "docker.buildImage");
    assert_eq!(b.level, Level::Fail);
    assert!(b.message.contains("pullPolicy=never"), "{}", b.message);
}

#[tokio::test]
async fn an_unreachable_daemon_fails_naming_its_address_within_the_timeout() {
    // A listener that accepts and never answers: the worst case for a timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let e = DockerExecutorBuilder::new()
        .with_host(format!("tcp://{addr}"))
        .with_option("preflight.timeoutMs", "500")
        .build()
        .await
        .unwrap();
    let t = Instant::now();
    let p = e.preflight(&build("busybox:latest")).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!p.passed());
    let d = finding(&p, "docker.daemon");
    assert_eq!(d.level, Level::Fail);
    assert!(d.message.contains(&addr.to_string()), "{}", d.message);
    assert!(
        p.findings
            .iter()
            .all(|f| !f.check.starts_with("docker.buildImage")),
        "nothing is asked of a daemon that is not there: {p:#?}"
    );

    // Nothing listens at all: refused at once, naming the address.
    let e = DockerExecutorBuilder::new()
        .with_host("tcp://127.0.0.1:9")
        .build()
        .await
        .unwrap();
    let p = e.preflight(&build("busybox:latest")).await.unwrap();
    let d = finding(&p, "docker.daemon");
    assert_eq!(d.level, Level::Fail);
    assert!(d.message.contains("127.0.0.1:9"), "{}", d.message);
}

#[tokio::test]
async fn answers_are_cached_per_key_for_preflight_cache_ms() {
    if !daemon_up() {
        return;
    }
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let e = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .build()
        .await
        .unwrap();
    // A build image that appears after the first answer: the cached answer still says
    // it is missing (same key), a build with another image is checked afresh.
    let late = format!("sdx-test/preflight-late:{}", std::process::id());
    testing::remove_image(&docker, &late).await;
    let first = e.preflight(&build(&late)).await.unwrap();
    assert_eq!(finding(&first, "docker.buildImage").level, Level::Fail);
    docker
        .tag_image(
            &images.build,
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::new()
                    .repo(late.split_once(':').unwrap().0)
                    .tag(late.split_once(':').unwrap().1)
                    .build(),
            ),
        )
        .await
        .unwrap();
    let cached = e.preflight(&build(&late)).await.unwrap();
    assert_eq!(cached, first, "within preflight.cacheMs: the kept answer");
    let uncached = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .with_option("preflight.cacheMs", "0")
        .build()
        .await
        .unwrap();
    let fresh = uncached.preflight(&build(&late)).await.unwrap();
    assert_eq!(
        finding(&fresh, "docker.buildImage").level,
        Level::Ok,
        "{fresh:#?}"
    );
    testing::remove_image(&docker, &late).await;
}
