//! A real `sdx run` on the Docker backend killed with SIGKILL, half-way through its
//! `start` and while its build runs: a fresh `sdx status` calls the orphan `Lost` (never
//! `running`), and a fresh `sdx gc` removes every container and volume at once, hours
//! before their expiry, because their owner (the killed process) is gone.
//!
//! Needs the shared dockerd (skipped outside CI when absent, a failure under `CI=true`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use executor_base::testkit::daemon::require;
use executor_docker::testing;

const SDX: &str = env!("CARGO_BIN_EXE_sdx");

/// `sdx` on the Docker backend with the test images, its own prefix, no config file.
fn sdx(home: &Path, prefix: &str, images: &testing::TestImages) -> Command {
    let mut c = Command::new(SDX);
    for var in [
        "SDX_CONFIG",
        "SDX_EXECUTOR",
        "SDX_API",
        "SDX_API_TOKEN",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.env("HOME", home)
        .env("EXECUTOR_PROCESS_STATE_DIR", home.join("state"))
        .env("EXECUTOR_DOCKER_HOST", testing::docker_host())
        .env("EXECUTOR_DOCKER_PREFIX", prefix)
        .env("EXECUTOR_DOCKER_LAUNCHER_IMAGE", &images.launcher_repo)
        .env("EXECUTOR_DOCKER_LAUNCHER_VERSION", &images.launcher_tag)
        .env("EXECUTOR_DOCKER_NETWORK", "none")
        .env("EXECUTOR_DOCKER_PULL_POLICY", "missing")
        // These tests kill `sdx` in the middle of a start (a pull that hangs, a running
        // build) with the unlabelled test launcher: the API's pre-flight, which would
        // refuse both before anything starts, is off.
        .env("EXECUTOR_API_PREFLIGHT", "false")
        .args(["-e", "docker"]);
    c
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Containers and volumes of `prefix`, with their role label.
async fn leftovers(prefix: &str) -> (Vec<String>, Vec<String>) {
    let docker = testing::docker().await;
    let (c, v) = testing::labelled(&docker, "app.kubernetes.io/managed-by=sdx").await;
    (
        c.into_iter().filter(|n| n.starts_with(prefix)).collect(),
        v.into_iter().filter(|n| n.starts_with(prefix)).collect(),
    )
}

/// The id `sdx run` announces on its first line (`build <id> submitted: ...`).
fn run_id(child: &mut Child) -> u64 {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout piped");
    let mut lines = std::io::BufReader::new(out).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    // Keep draining so sdx never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    first
        .strip_prefix("build ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sdx run said {first:?}"))
}

/// Waits until `prefix` has `sdx run`'s container `<prefix>run-<id>-<suffix>` in `state`
/// (`docker ps` status word, e.g. `Up`, `Created`).
async fn wait_for(prefix: &str, id: u64, suffix: &str, state: &str, child: &mut Child) {
    let docker = testing::docker().await;
    let name = format!("{prefix}run-{id}-{suffix}");
    let t0 = Instant::now();
    loop {
        if let Ok(c) = docker.inspect_container(&name, None).await {
            let s = c.state.and_then(|s| s.status).map(|s| s.to_string());
            if s.as_deref() == Some(state) {
                return;
            }
        }
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "sdx ended before {name} was {state}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name} never {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills `sdx run` with SIGKILL, then checks a fresh `status` and `gc` on its leftovers.
async fn kill_then_status_and_gc(
    mut child: Child,
    id: u64,
    home: &Path,
    prefix: &str,
    images: &testing::TestImages,
) -> String {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let (c, v) = leftovers(prefix).await;
    assert!(
        !c.is_empty() || !v.is_empty(),
        "the killed start left something"
    );

    let status = sdx(home, prefix, images)
        .args(["status", &id.to_string()])
        .output()
        .unwrap();
    let shown = text(&status);
    assert!(
        shown.to_ascii_lowercase().contains("lost"),
        "a fresh status calls the orphan lost: {shown}"
    );
    assert!(!shown.to_ascii_lowercase().contains("running"), "{shown}");

    let t0 = Instant::now();
    let gc = sdx(home, prefix, images).arg("gc").output().unwrap();
    assert!(gc.status.success(), "{}", text(&gc));
    assert!(t0.elapsed() < Duration::from_secs(30));
    let (c, v) = leftovers(prefix).await;
    assert!(c.is_empty() && v.is_empty(), "gc left {c:?} {v:?}");
    shown
}

fn docker_up() -> bool {
    require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket",
    )
}

#[tokio::test]
async fn a_start_killed_while_its_image_is_pulled_is_lost_and_collected_at_once() {
    if !docker_up() {
        return;
    }
    let images = testing::test_images().await;
    let home = tempfile::tempdir().unwrap();
    let prefix = format!("sdxf-killpull-{}-", std::process::id());
    // A "registry" that accepts connections and never answers: the pull of the build
    // image hangs, so `start` is half-way (launcher container and tools volume made).
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in blackhole.incoming().take(16).flatten() {
            conns.push(c);
        }
    });
    let mut child = sdx(home.path(), &prefix, &images)
        .args(["run", "--step", "a=true", "--container"])
        .arg(format!("127.0.0.1:{port}/sdx-test/never:1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = run_id(&mut child);
    wait_for(&prefix, id, "init", "created", &mut child).await;
    kill_then_status_and_gc(child, id, home.path(), &prefix, &images).await;
    drop(held);
}

#[tokio::test]
async fn a_build_whose_sdx_was_killed_is_lost_not_running_and_collected_at_once() {
    if !docker_up() {
        return;
    }
    let images = testing::test_images().await;
    let home = tempfile::tempdir().unwrap();
    let prefix = format!("sdxf-killrun-{}-", std::process::id());
    let mut child = sdx(home.path(), &prefix, &images)
        .args(["run", "--step", "a=true", "--container", &images.build])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = run_id(&mut child);
    // The test launcher runs until stopped: the build container is up.
    wait_for(&prefix, id, "build", "running", &mut child).await;
    let shown = kill_then_status_and_gc(child, id, home.path(), &prefix, &images).await;
    assert!(shown.contains("orphaned"), "{shown}");
}
