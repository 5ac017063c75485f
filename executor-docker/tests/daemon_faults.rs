//! Engine faults with the **default** retry and breaker settings (issue #17's Docker
//! defects), against real daemons:
//!
//! * a dockerd outage and the daemon's return, builds killed by a daemon shutdown or a
//!   daemon killed and restarted: on a private dockerd ([`PrivateDockerd`]), so the shared
//!   one and the tests using it are never disturbed;
//! * a registry that refuses connections, and the request counters: on the shared daemon
//!   and the loopback registry.
//!
//! Skipped outside CI when dockerd is absent (a failure under `CI=true`).

use std::time::{Duration, Instant};

use executor_base::testkit::daemon::require;
use executor_base::{
    Error, ErrorKind, Executor, ExecutorExt, FailureReason, Fault, Phase, StartConfig,
};
use executor_docker::testing::{self, PrivateDockerd, TestImages};
use executor_docker::{DockerExecutor, DockerExecutorBuilder, PullPolicy};

const TOKEN: &str = "header.payload-of-the-daemon-faults-token.signature";

fn docker_up() -> bool {
    require(
        "dockerd",
        testing::docker_reachable(),
        "nothing answers on the Docker socket",
    )
}

/// An executor with the default retry, breaker and budget settings.
async fn executor(images: &TestImages, host: &str, test: &str) -> DockerExecutor {
    DockerExecutorBuilder::new()
        .with_host(host)
        .with_launcher_image(&images.launcher_repo, &images.launcher_tag)
        .with_prefix(format!("sdxf-{test}-{}-", std::process::id()))
        .with_network("none")
        .with_pull_policy(PullPolicy::Missing)
        .build()
        .await
        .expect("valid options")
}

/// A build whose test launcher runs until stopped (or does what `path` says).
fn build(id: u64, path: &str, image: &str) -> StartConfig {
    StartConfig::builder(id, format!("http://127.0.0.1:9{path}"), image, TOKEN)
        .build()
        .expect("start config")
}

async fn wait_running(exec: &DockerExecutor, b: &StartConfig) {
    for _ in 0..200 {
        if exec.status(&b.to_stop()).await.expect("status").phase == Phase::Running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("build {} never ran", b.build_id);
}

fn assert_unavailable_naming(e: &Error, socket: &str) {
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary(), "{e}");
    assert!(e.to_string().contains(socket), "names the socket: {e}");
    assert!(!e.to_string().contains(TOKEN));
}

async fn private_daemon(name: &str) -> Option<(PrivateDockerd, TestImages)> {
    if !docker_up() {
        return None;
    }
    let images = testing::test_images().await;
    let d = PrivateDockerd::start(name).await;
    d.copy_images(&[
        &images.build,
        &format!("{}:{}", images.launcher_repo, images.launcher_tag),
    ])
    .await;
    Some((d, images))
}

#[tokio::test]
async fn a_dockerd_outage_is_unavailable_naming_the_socket_and_the_first_start_after_it_works() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some((mut d, images)) = private_daemon("outage").await else {
        return;
    };
    let socket = d.socket().display().to_string();
    let exec = executor(&images, &d.host(), "outage").await;
    let running = build(1801, "/run-until-stopped", &images.build);
    exec.start(&running).await.expect("start");
    wait_running(&exec, &running).await;

    d.kill().await;
    // The first status call answers within the retry budget (5 s), not after the whole
    // backoff series (it took 22 s).
    let t0 = Instant::now();
    let e = exec.status(&running.to_stop()).await.unwrap_err();
    let first = t0.elapsed();
    assert_unavailable_naming(&e, &socket);
    assert!(
        first < Duration::from_secs(7),
        "first status took {first:?}"
    );

    // Starts and reads during the outage open their breakers; the errors stay the real
    // cause (never CircuitOpen), with the breaker's state as context.
    let mut refused = None;
    for i in 0..6 {
        let b = build(1810 + i, "/run-until-stopped", &images.build);
        let t = Instant::now();
        let e = exec.start(&b).await.unwrap_err();
        assert_unavailable_naming(&e, &socket);
        let e = exec.status(&b.to_stop()).await.unwrap_err();
        assert_unavailable_naming(&e, &socket);
        if executor_base::engine::refused_by_breaker(&e) {
            refused = Some(t.elapsed());
            break;
        }
    }
    assert!(refused.is_some(), "the breakers never opened");
    assert!(!exec.stats().breaker.is_closed);
    // An open breaker answers at once (a failed ping, then the last real cause).
    let t = Instant::now();
    let e = exec.status(&running.to_stop()).await.unwrap_err();
    assert_unavailable_naming(&e, &socket);
    assert!(
        e.context()
            .iter()
            .any(|(k, v)| *k == "breaker" && v.contains("open")),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // The daemon returns: the very next start works, though the start breaker had ~30 s
    // left to stay open.
    d.restart().await;
    let after = build(1802, "/run-until-stopped", &images.build);
    let t = Instant::now();
    exec.start(&after)
        .await
        .expect("first start after the daemon returned");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(exec.stats().breaker.is_closed);
    wait_running(&exec, &after).await;

    // The build the killed daemon's restart took down is Lost, not the build's failure.
    let s = exec.status(&running.to_stop()).await.unwrap();
    assert_lost_by_infrastructure(&s);

    for b in [&running, &after] {
        exec.stop(&b.to_stop()).await.unwrap();
    }
    let (c, v) = testing::labelled(&d.client().await, "app.kubernetes.io/managed-by=sdx").await;
    assert!(c.is_empty() && v.is_empty(), "left: {c:?} {v:?}");
    d.stop().await;
}

fn assert_lost_by_infrastructure(s: &executor_base::BuildStatus) {
    assert_eq!(s.phase, Phase::Lost, "{s}");
    let f = s.failure.as_ref().expect("failure");
    assert_eq!(f.reason, FailureReason::InfrastructureLost, "{s}");
    assert_eq!(f.reason.fault(), Fault::Infrastructure);
    assert!(f.reason.retry_safe());
    assert_eq!(f.build_started, Some(true));
    assert!(s.message.contains("killed from outside"), "{s}");
}

#[tokio::test]
async fn builds_killed_by_a_daemon_shutdown_are_lost_not_the_builds_fault() {
    let Some((mut d, images)) = private_daemon("shutdown").await else {
        return;
    };
    let exec = executor(&images, &d.host(), "shutdown").await;
    let b = build(1820, "/run-until-stopped", &images.build);
    exec.start(&b).await.expect("start");
    wait_running(&exec, &b).await;
    // A service manager's stop: the daemon stops its containers (SIGTERM, which the
    // launcher as PID 1 ignores, then SIGKILL after 10 s: exit 137).
    d.stop().await;
    d.restart().await;
    let s = exec.status(&b.to_stop()).await.unwrap();
    assert_lost_by_infrastructure(&s);
    assert_eq!(s.exit_code, Some(137));
    assert_eq!(
        exec.verify(&b).await.unwrap().as_str(),
        executor_base::Verdict::from_status(&s).as_str()
    );
    exec.stop(&b.to_stop()).await.unwrap();
    // Stopped after it was lost: still Lost (how it ended), and nothing is left.
    assert_eq!(exec.status(&b.to_stop()).await.unwrap().phase, Phase::Lost);
    let (c, v) = testing::labelled(&d.client().await, "app.kubernetes.io/managed-by=sdx").await;
    assert!(c.is_empty() && v.is_empty(), "left: {c:?} {v:?}");
    d.stop().await;
}

/// A loopback port nothing listens on (bound, then released).
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_registry_that_refuses_connections_fails_the_build_quickly_and_never_blocks_other_pulls()
{
    if !docker_up()
        || !require(
            "docker-registry",
            testing::registry_reachable(),
            "nothing listens on 127.0.0.1:5000",
        )
    {
        return;
    }
    let images = testing::test_images().await;
    let docker = testing::docker().await;
    let exec = executor(&images, &testing::docker_host(), "badreg").await;
    let port = refused_port();
    let registry = format!("127.0.0.1:{port}");

    // More bad pulls than the breaker's threshold (5): each is the build's ImagePull
    // failure, named, quick, and remembered; no breaker opens.
    for i in 0..7 {
        let b = build(1830 + i, "/exit/0", &format!("{registry}/sdx-test/build:x"));
        let t = Instant::now();
        let e = exec.start(&b).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(e.kind(), ErrorKind::ImagePull, "{e}");
        assert!(e.message().contains(&registry), "names the registry: {e}");
        assert!(
            e.message().contains("connection refused"),
            "names the cause: {e}"
        );
        assert!(
            e.is_temporary(),
            "an unreachable registry may come back: {e}"
        );
        assert!(!executor_base::engine::refused_by_breaker(&e), "{e:?}");
        let s = exec
            .status(&b.to_stop())
            .await
            .expect("the build is not forgotten");
        assert_eq!(s.reason(), Some(FailureReason::ImagePull), "{s}");
        let (c, v) = testing::labelled(
            &docker,
            &format!("sdbuild={}{}", exec.config().prefix, b.build_id),
        )
        .await;
        assert!(c.is_empty() && v.is_empty(), "left: {c:?} {v:?}");
    }
    assert!(exec.stats().breaker.is_closed);

    // Another build's valid pull right after works at once.
    let tag = format!("badreg-{}", std::process::id());
    let remote = testing::push(&docker, &images.build, "sdx-test/build", &tag).await;
    testing::remove_image(&docker, &remote).await;
    let b = build(1840, "/exit/0", &remote);
    let t = Instant::now();
    exec.start(&b).await.expect("a valid pull right after");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let s = exec
        .wait_until_finished(
            &b.to_stop(),
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    exec.stop(&b.to_stop()).await.unwrap();
    testing::remove_image(&docker, &remote).await;
}

#[tokio::test]
async fn expected_404s_are_not_counted_as_failed_requests() {
    if !docker_up() {
        return;
    }
    let images = testing::test_images().await;
    let exec = executor(&images, &testing::docker_host(), "stats").await;
    let b = build(1850, "/exit/0", &images.build);
    exec.start(&b).await.expect("start");
    exec.wait_until_finished(
        &b.to_stop(),
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    exec.stop(&b.to_stop()).await.unwrap();
    // A stop of a build that is already gone, and a gc with nothing to collect.
    exec.stop(&b.to_stop()).await.unwrap();
    exec.gc(false).await.unwrap();
    let r = exec.stats().requests;
    assert!(r.total > 5, "{r:?}");
    assert_eq!(
        r.failure, 0,
        "the missing token volume's 404 is not a failure: {r:?}"
    );
    assert_eq!(r.success, r.total, "{r:?}");
}

/// A daemon that accepts connections and never answers (a hung dockerd, a wedged proxy):
/// with the default settings each call answers a temporary `Timeout` naming the socket
/// within the call timeout (10 s) plus the retry budget, never bollard's own bound
/// (which was the pull's 600 s, so a start hung for 10 minutes). Nothing is left once it
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_never_answers_times_out_within_the_call_timeout() {
    use executor_base::testkit::proxy::{FaultMode, FaultProxy};
    if !docker_up() {
        return;
    }
    let images = testing::test_images().await;
    let at = format!("/tmp/sdxbh-{}.sock", std::process::id());
    let proxy = FaultProxy::unix(testing::socket_path(), &at)
        .await
        .expect("proxy");
    let exec = executor(&images, &proxy.url("unix"), "blackhole").await;
    let bound = Duration::from_secs(10 + 5 + 3);
    let b = build(1901, "/run-until-stopped", &images.build);

    proxy.set(FaultMode::Blackhole);
    let t = Instant::now();
    let e = exec.start(&b).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_temporary(), "{e}");
    assert!(e.to_string().contains(&at), "names the socket: {e}");
    assert!(took < bound, "start took {took:?}");

    // Once connected, a read and a stop are bounded the same way.
    proxy.set(FaultMode::Pass);
    exec.start(&b).await.expect("start once the daemon answers");
    wait_running(&exec, &b).await;
    proxy.set(FaultMode::Blackhole);
    let t = Instant::now();
    let e = exec.status(&b.to_stop()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() < bound, "status took {:?}", t.elapsed());

    proxy.set(FaultMode::Pass);
    exec.stop(&b.to_stop()).await.expect("stop");
    let sel = format!("sdbuild={}1901", exec.config().prefix);
    let (c, v) = testing::labelled(&testing::docker().await, &sel).await;
    assert!(c.is_empty() && v.is_empty(), "left: {c:?} {v:?}");
}
