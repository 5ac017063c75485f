//! `sdx launcher-image build` on the real `dockerd` and the loopback registry, and the
//! Docker backend with its **default** launcher image (the one that command makes)
//! running a real build through the reference API.
//!
//! Skipped outside CI when the daemon or the registry is absent (a failure under
//! `CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::CreateImageOptionsBuilder;
use executor_api::{ApiConfig, ApiServer, NewBuild};
use executor_base::launch_protocol::{
    LABEL_LAUNCH_PROTOCOL, LABEL_SDX_VERSION, LAUNCH_PROTOCOL, SDX_LAUNCHER_REFERENCE,
};
use executor_base::testkit::daemon::require;
use executor_base::{ApiBuildStatus, Executor};
use executor_docker::{DockerExecutorBuilder, testing};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::OnceCell;

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

/// The reference `launch` built statically, as the README tells a user to build it.
fn static_launch() -> PathBuf {
    let target_dir = workspace_root().join("target/static");
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "-p", "sd-launch", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "static build of sd-launch failed");
    target_dir.join(TARGET).join("release/launch")
}

/// `sdx` next to this test binary, else built on demand.
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
    sdx
}

fn up() -> bool {
    require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket (DOCKER_HOST or /var/run/docker.sock)",
    ) && require(
        "docker-registry",
        testing::registry_reachable(),
        "nothing answers on 127.0.0.1:5000",
    )
}

/// The `--json` report of one `sdx launcher-image build --push`, run once per process.
async fn built() -> serde_json::Value {
    static REPORT: OnceCell<serde_json::Value> = OnceCell::const_new();
    REPORT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let launch = static_launch();
                let remote = format!(
                    "{}/sdx-test/launcher:{}",
                    testing::REGISTRY,
                    std::process::id()
                );
                let out = Command::new(sdx_binary())
                    .args(["launcher-image", "build", "--push", "--json", "--tag"])
                    .arg(&remote)
                    .arg("--launch")
                    .arg(&launch)
                    .env("DOCKER_HOST", testing::docker_host())
                    .env_remove("SDX_CONFIG")
                    .output()
                    .expect("run sdx launcher-image build");
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success(),
                    "sdx launcher-image build failed ({}):\n{stdout}\n{stderr}",
                    out.status
                );
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
            })
            .await
            .expect("build task")
        })
        .await
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_image_is_built_labelled_loaded_and_pushed() {
    if !up() {
        return;
    }
    let report = built().await;
    let tags: Vec<String> = serde_json::from_value(report["tags"].clone()).unwrap();
    assert_eq!(tags[0], SDX_LAUNCHER_REFERENCE, "{report}");
    let remote = tags[1].clone();
    assert_eq!(
        report["pushed"][0]["reference"],
        remote.as_str(),
        "{report}"
    );
    let digest = report["pushed"][0]["digest"].as_str().unwrap_or_default();
    assert!(digest.starts_with("sha256:"), "{report}");

    // Loaded into the daemon under the native-mode default name, with the labels.
    let docker = testing::docker().await;
    let local = docker.inspect_image(SDX_LAUNCHER_REFERENCE).await.unwrap();
    assert_eq!(local.id.as_deref(), report["imageId"].as_str());
    let labels = local.config.unwrap().labels.unwrap();
    assert_eq!(labels[LABEL_LAUNCH_PROTOCOL], LAUNCH_PROTOCOL.to_string());
    assert_eq!(labels[LABEL_SDX_VERSION], env!("CARGO_PKG_VERSION"));
    // FROM scratch: one layer, holding launch and nothing else.
    assert_eq!(local.root_fs.unwrap().layers.unwrap().len(), 1);
    assert_eq!(local.size, report["size"].as_i64());

    // The registry has it: drop the local name and pull it back by digest-checked tag.
    testing::remove_image(&docker, &remote).await;
    let (repo, tag) = remote.rsplit_once(':').unwrap();
    let mut pull = docker.create_image(
        Some(
            CreateImageOptionsBuilder::new()
                .from_image(repo)
                .tag(tag)
                .build(),
        ),
        None,
        None,
    );
    while let Some(item) = pull.next().await {
        item.unwrap_or_else(|e| panic!("pull {remote}: {e}"));
    }
    let pulled = docker.inspect_image(&remote).await.unwrap();
    assert_eq!(pulled.id, local.id);
    let digests = pulled.repo_digests.unwrap_or_default();
    assert!(
        digests.iter().any(|d| d.ends_with(digest)),
        "{digests:?} vs {digest}"
    );
    testing::remove_image(&docker, &remote).await;
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
async fn a_default_docker_build_runs_its_steps_with_the_sdx_launcher_image() {
    if !up() {
        return;
    }
    built().await;
    let images = testing::test_images().await;
    // Defaults, except what loopback needs: the build reaches the API on 127.0.0.1.
    let exec = DockerExecutorBuilder::new()
        .with_host(testing::docker_host())
        .with_network("host")
        .with_prefix(format!("sdx-li-{}-", std::process::id()))
        .build()
        .await
        .expect("docker executor");
    assert_eq!(exec.config().launcher_reference(), SDX_LAUNCHER_REFERENCE);
    let exec = Arc::new(exec);
    let server = ApiServer::start(
        exec.clone(),
        ApiConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("reference API");
    // The API's pre-flight (on by default) passes with the defaults and the sdx image.
    let pre = server
        .state()
        .dry_run(
            NewBuild::parse(
                &json!({"container": images.build, "steps": [{"name": "x", "command": "true"}]}),
            )
            .expect("build body"),
        )
        .await
        .expect("pre-flight");
    assert!(pre.passed(), "{pre:#?}");
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
    // Both steps really ran: each ended with code 0 and its output reached the API.
    for name in ["hello", "test"] {
        let s = b.steps.iter().find(|s| s.name == name);
        let s = s.unwrap_or_else(|| panic!("no step {name}: {:?}", b.steps));
        assert_eq!(s.code, Some(0), "{s:?}");
        assert!(s.next_line > 0, "{s:?}");
    }
    server
        .shutdown(executor_api::Shutdown::CancelOpen, Duration::from_secs(20))
        .await;
    assert!(exec.stats().builds.started >= 1);
}
