//! End to end on the real `dockerd`: the reference `launch` (crate `sd-launch`, built
//! statically so it runs in a `FROM scratch` image) inside the build container, talking to
//! the reference API on loopback (the build container uses the host network), the build
//! reaching SUCCESS.
//!
//! * `sdx_demo_with_the_docker_executor_succeeds` runs `sdx demo --executor docker`.
//! * `docker_build_through_the_reference_api_succeeds` drives the API and the
//!   `DockerExecutor` directly (and also runs a failing build).
//!
//! Skipped outside CI when the daemon is absent (a failure under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use executor_api::{ApiConfig, ApiServer, NewBuild};
use executor_base::testkit::daemon::require;
use executor_base::{ApiBuildStatus, Executor};
use executor_docker::testing;
use executor_docker::{DockerExecutorBuilder, PullPolicy};
use serde_json::json;
use tokio::sync::OnceCell;

const LAUNCHER_REPO: &str = "sdx-e2e/launcher";
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the reference `launch` statically (its own target dir, so the workspace's
/// builds are not disturbed) and returns its bytes.
fn static_launch() -> Vec<u8> {
    let target_dir = workspace_root().join("target/static");
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "-p",
            "sd-launch",
            "--release",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "static build of sd-launch failed");
    let bin = target_dir.join(TARGET).join("release/launch");
    std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

/// The launcher image with the real `launch`, built once per test process; its tag.
async fn launcher_tag() -> String {
    static TAG: OnceCell<String> = OnceCell::const_new();
    TAG.get_or_init(|| async {
        let launch = tokio::task::spawn_blocking(static_launch)
            .await
            .expect("build task");
        // Tagged by content: reruns reuse the image, a rebuilt `launch` gets a new tag.
        let tag = testing::sha256_hex(&launch)[..16].to_string();
        let docker = testing::docker().await;
        testing::build_launcher_image(&docker, &format!("{LAUNCHER_REPO}:{tag}"), &launch).await;
        tag
    })
    .await
    .clone()
}

fn docker_up() -> bool {
    require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket (DOCKER_HOST or /var/run/docker.sock)",
    )
}

/// `sdx` next to this test binary (`cargo test --workspace` builds it for executor-cli's
/// own tests), else built on demand.
fn sdx_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug_dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let sdx = debug_dir.join("sdx");
    if !sdx.exists() {
        let status = Command::new(cargo())
            .current_dir(workspace_root())
            .args(["build", "-p", "executor-cli", "--bin", "sdx"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building sdx failed");
    }
    assert!(sdx.exists(), "{} missing", sdx.display());
    sdx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdx_demo_with_the_docker_executor_succeeds() {
    if !docker_up() {
        return;
    }
    let images = testing::test_images().await;
    let tag = launcher_tag().await;
    let sdx = sdx_binary();
    let prefix = format!("sdx-e2e-demo-{}-", std::process::id());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&sdx)
            .args(["demo", "--executor", "docker", "--container", &images.build])
            .env("EXECUTOR_DOCKER_LAUNCHER_IMAGE", LAUNCHER_REPO)
            .env("EXECUTOR_DOCKER_LAUNCHER_VERSION", &tag)
            .env("EXECUTOR_DOCKER_NETWORK", "host")
            .env("EXECUTOR_DOCKER_PULL_POLICY", "never")
            // The test launcher image has the real `launch` but not the launch-protocol
            // label the API's pre-flight asks for (`tests/launcher_image.rs` runs the
            // labelled sdx launcher image with pre-flight on).
            .env("EXECUTOR_API_PREFLIGHT", "false")
            .env("EXECUTOR_DOCKER_PREFIX", &prefix)
            .env("DOCKER_HOST", testing::docker_host())
            .output()
            .expect("run sdx demo")
    })
    .await
    .expect("demo task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdx demo --executor docker failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUCCESS"),
        "no SUCCESS in the demo's output:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("3 passed"),
        "the test step's output is missing:\n{stdout}"
    );
}

async fn wait_final(server: &ApiServer, id: u64) -> executor_api::BuildRecord {
    for _ in 0..600 {
        if let Some(b) = server.state().build(id).await
            && executor_api::model::is_final(b.status)
        {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "build {id} did not finish within 60 s: {:?}",
        server.state().build_json(id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_build_through_the_reference_api_succeeds() {
    if !docker_up() {
        return;
    }
    let images = testing::test_images().await;
    let tag = launcher_tag().await;
    let exec = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_launcher_image(LAUNCHER_REPO, &tag)
        .with_network("host")
        .with_pull_policy(PullPolicy::Never)
        .with_prefix(format!("sdx-e2e-api-{}-", std::process::id()))
        .build()
        .await
        .expect("docker executor");
    let exec = Arc::new(exec);
    // The test launcher image has the real `launch` but not the launch-protocol label
    // the API's pre-flight asks for (`tests/launcher_image.rs` runs the labelled sdx
    // launcher image through the API with pre-flight on).
    let server = ApiServer::start(
        exec.clone(),
        ApiConfig {
            preflight: false,
            ..ApiConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("reference API");

    let ok = NewBuild::parse(&json!({
        "container": images.build,
        "steps": [
            {"name": "hello", "command": "echo hello from $SD_BUILD_ID"},
            {"name": "test", "command": "echo '3 passed'"}
        ]
    }))
    .expect("build body");
    let id = server.state().submit(ok).await.expect("submit").get();
    let b = wait_final(&server, id).await;
    assert_eq!(
        b.status,
        ApiBuildStatus::Success,
        "{:?}",
        server.state().build_json(id).await
    );
    assert!(b.steps.iter().any(|s| s.name == "test"), "{:?}", b.steps);

    let failing = NewBuild::parse(&json!({
        "container": images.build,
        "steps": [{"name": "broken", "command": "echo failing >&2; exit 3"}]
    }))
    .expect("build body");
    let id2 = server.state().submit(failing).await.expect("submit").get();
    let b = wait_final(&server, id2).await;
    assert_eq!(
        b.status,
        ApiBuildStatus::Failure,
        "{:?}",
        server.state().build_json(id2).await
    );

    server
        .shutdown(executor_api::Shutdown::CancelOpen, Duration::from_secs(20))
        .await;
    // The API stops each build when it ends: nothing of ours is left on the daemon.
    let docker = testing::docker().await;
    for build in [id, id2] {
        let selector = format!("sdbuild={}{build}", exec.config().prefix);
        let (c, v) = testing::labelled(&docker, &selector).await;
        assert!(c.is_empty() && v.is_empty(), "left behind: {c:?} {v:?}");
    }
    assert!(exec.stats().builds.started >= 2);
}
