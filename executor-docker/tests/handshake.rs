//! The launch handshake on the real `dockerd`: in native mode a build whose launcher exits
//! 0 without proving it ran the build is never `Succeeded`.
//!
//! The stand-in for upstream's `screwdrivercd/launcher` ([`testing::STOCK_LAUNCH`]) prints
//! its usage on native mode's unknown `--token-file` flag and exits 0, as the real one
//! does; the build must fail with `launchProtocol`, naming the image. The test launcher
//! that writes the handshake still succeeds, and Screwdriver mode keeps upstream's
//! exit-code meaning.

use std::time::Duration;

use executor_base::testkit::daemon::require;
use executor_base::{Executor, ExecutorExt, FailureReason, Fault, LaunchMode, Phase, StartConfig};
use executor_docker::testing;
use executor_docker::{DockerExecutorBuilder, PullPolicy};

const STOCK_REPO: &str = "sdx-test/stock-launcher";

fn build(id: u64, path: &str, image: &str) -> StartConfig {
    StartConfig::builder(
        id,
        format!("http://127.0.0.1:9{path}"),
        image,
        "tok-handshake",
    )
    .build()
    .expect("start config")
}

#[tokio::test]
async fn a_launcher_that_exits_0_without_the_handshake_is_never_succeeded() {
    if !require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket",
    ) {
        return;
    }
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let stock = format!("{STOCK_REPO}:{}", testing::TAG);
    testing::build_launcher_image(&docker, &stock, testing::STOCK_LAUNCH.as_bytes()).await;
    let prefix = format!("sdx-hs-{}-", std::process::id());
    let exec = |repo: &str, mode: LaunchMode| {
        DockerExecutorBuilder::new()
            .with_host(testing::docker_host())
            .with_launcher_image(repo, testing::TAG)
            .with_launch_mode(mode)
            .with_prefix(prefix.clone())
            .with_network("none")
            .with_pull_policy(PullPolicy::Never)
            .build()
    };
    let wait = Duration::from_secs(60);
    let poll = Duration::from_millis(100);

    // The stock stand-in in native mode: exit 0, no handshake -> failed, launchProtocol.
    let e = exec(STOCK_REPO, LaunchMode::Native).await.unwrap();
    let b = build(701, "/exit/0", &images.build);
    e.start(&b).await.unwrap();
    let s = e
        .wait_until_finished(&b.to_stop(), poll, wait)
        .await
        .unwrap();
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert_eq!(s.exit_code, Some(0), "{s:?}");
    let r = s.reason().unwrap();
    assert_eq!(r, FailureReason::LaunchProtocol, "{s:?}");
    assert_eq!(r.fault(), Fault::Configuration);
    assert!(!r.retry_safe());
    assert!(s.message.contains(&stock), "{}", s.message);
    assert!(
        s.message.contains("sdx launcher-image build"),
        "{}",
        s.message
    );
    assert_eq!(s.api_status().as_str(), "FAILURE");
    // The answer is kept: asked again, and after stop, it is still the failure.
    let again = e.status(&b.to_stop()).await.unwrap();
    assert_eq!(again.reason(), Some(FailureReason::LaunchProtocol));
    e.stop(&b.to_stop()).await.unwrap();
    assert_eq!(
        e.status(&b.to_stop()).await.unwrap().reason(),
        Some(FailureReason::LaunchProtocol)
    );

    // The test launcher writes the handshake: the same build succeeds.
    let e = exec(&images.launcher_repo, LaunchMode::Native)
        .await
        .unwrap();
    let b = build(702, "/exit/0", &images.build);
    e.start(&b).await.unwrap();
    let s = e
        .wait_until_finished(&b.to_stop(), poll, wait)
        .await
        .unwrap();
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    e.stop(&b.to_stop()).await.unwrap();

    // Screwdriver mode: upstream's launcher exits 0 whatever happened, so exit 0 is all
    // an executor can know there (documented); it stays success.
    let e = exec(&images.launcher_repo, LaunchMode::Screwdriver)
        .await
        .unwrap();
    let b = build(703, "/exit/0", &images.build);
    e.start(&b).await.unwrap();
    let s = e
        .wait_until_finished(&b.to_stop(), poll, wait)
        .await
        .unwrap();
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    e.stop(&b.to_stop()).await.unwrap();
}
