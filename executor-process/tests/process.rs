//! Behaviour of the process backend with real child processes: `launch` is a shell
//! script each test writes into a temporary job-tools directory.

mod common;

use common::{alive, build, executor, file, finished, job_tools, wait_dead, wait_file};
use executor_base::record_file;
use executor_base::{Error, ErrorKind, Executor, FailureReason, Phase, Verdict};
use std::os::unix::fs::PermissionsExt;

/// Records its arguments, environment, token and working directory, prints to stdout
/// and stderr, and succeeds.
const RECORDING_LAUNCH: &str = r#"
printf '%s\n' "$@" > "$OUT/args"
env > "$OUT/env"
tokfile=""
while [ $# -gt 0 ]; do
  case "$1" in --token-file) tokfile="$2"; shift 2 ;; *) shift ;; esac
done
cat "$tokfile" > "$OUT/token"
stat -c %a "$tokfile" > "$OUT/mode"
pwd > "$OUT/pwd"
echo "hello from launch"
echo "oops on stderr" >&2
"#;

#[tokio::test]
async fn successful_build_gets_the_documented_args_and_a_private_token_file() {
    let tools = job_tools(RECORDING_LAUNCH);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let token = "tok-successful-build-7f3a";
    let b = build(11, token);
    exec.start(&b).await.unwrap();
    let s = common::finished(&exec, &b.to_stop()).await;
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(exec.verify(&b).await.unwrap(), Verdict::Healthy);

    let build_dir = state.path().join("builds").join("11");
    let token_path = build_dir.join("token");
    let args = std::fs::read_to_string(file(out.path(), "args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "--api-uri",
            "http://127.0.0.1:9/",
            "--store-uri",
            "http://localhost:8081/",
            "--ui-uri",
            "http://localhost:4200/",
            "--build-timeout",
            "90",
            "--token-file",
            token_path.to_str().unwrap(),
            "11",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(file(out.path(), "token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(file(out.path(), "mode"))
            .unwrap()
            .trim(),
        "600"
    );
    let env = std::fs::read_to_string(file(out.path(), "env")).unwrap();
    assert!(
        !env.contains(token),
        "the token is in the environment:\n{env}"
    );
    for expected in [
        "SD_BUILD_ID=11",
        "SD_API_URI=http://127.0.0.1:9/",
        "SD_BUILD_TIMEOUT=90",
        "OUT=",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(expected)),
            "{expected} missing from:\n{env}"
        );
    }
    assert!(
        !env.lines().any(|l| l.starts_with("CARGO_")),
        "the server's environment leaked:\n{env}"
    );
    assert_eq!(
        std::fs::read_to_string(file(out.path(), "pwd"))
            .unwrap()
            .trim(),
        build_dir.join("work").to_str().unwrap()
    );

    // output captured, token gone once the process exited
    let log = std::fs::read_to_string(exec.log_path(b.build_id)).unwrap();
    assert!(
        log.contains("hello from launch") && log.contains("oops on stderr"),
        "{log}"
    );
    assert!(!token_path.exists(), "the token file outlived the process");

    let stats = exec.stats();
    assert_eq!(
        (
            stats.builds.started,
            stats.builds.running,
            stats.builds.finished
        ),
        (1, 0, 1)
    );
    assert!(stats.requests.total >= 2);
}

#[tokio::test]
async fn non_zero_exit_is_a_failure_with_the_exit_code() {
    let tools = job_tools("echo failing; exit 7");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(12, "tok");
    exec.start(&b).await.unwrap();
    let s = finished(&exec, &b.to_stop()).await;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.exit_code, Some(7));
    assert_eq!(s.reason(), Some(FailureReason::NonZeroExit));
    let v = exec.verify(&b).await.unwrap();
    assert!(v.is_failure());
    assert!(v.to_string().contains("code 7"), "{v}");
    assert_eq!(exec.stats().builds.failed, 1);
    // stop of a finished build is Ok and keeps its status
    exec.stop(&b.to_stop()).await.unwrap();
    assert_eq!(exec.status(&b.to_stop()).await.unwrap(), s);
}

#[tokio::test]
async fn killed_by_a_signal_we_did_not_send_names_the_signal() {
    let tools = job_tools("kill -USR1 $$; sleep 5");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(13, "tok");
    exec.start(&b).await.unwrap();
    let s = finished(&exec, &b.to_stop()).await;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.exit_code, None);
    assert_eq!(s.failure.unwrap().evidence.as_deref(), Some("SIGUSR1"));
}

#[tokio::test]
async fn stop_kills_the_whole_process_group_and_is_idempotent() {
    let tools = job_tools(r#"sleep 3600 & echo $! > "$OUT/grandchild"; wait"#);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(14, "tok");
    exec.start(&b).await.unwrap();
    let grandchild: u32 = wait_file(&file(out.path(), "grandchild"))
        .await
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Running
    );
    let token = state.path().join("builds/14/token");
    assert!(token.exists());
    let pid = exec.pid(b.build_id).unwrap();

    // two concurrent stops, then a third
    let stop = b.to_stop();
    let (a, c) = tokio::join!(exec.stop(&stop), exec.stop(&stop));
    a.unwrap();
    c.unwrap();
    exec.stop(&b.to_stop()).await.unwrap();
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    wait_dead(grandchild).await;
    wait_dead(pid).await;
    assert!(!token.exists(), "the token file outlived the stop");
    assert_eq!(exec.verify(&b).await.unwrap(), Verdict::Healthy);
    let stats = exec.stats();
    assert_eq!(
        (
            stats.builds.running,
            stats.builds.finished,
            stats.builds.failed
        ),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn stop_escalates_to_sigkill_for_a_group_ignoring_sigterm() {
    let tools = job_tools(
        r#"trap '' TERM; sleep 3600 & echo $! > "$OUT/grandchild"; while :; do wait; done"#,
    );
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(15, "tok");
    exec.start(&b).await.unwrap();
    let grandchild: u32 = wait_file(&file(out.path(), "grandchild"))
        .await
        .parse()
        .unwrap();
    let pid = exec.pid(b.build_id).unwrap();
    exec.stop(&b.to_stop()).await.unwrap();
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    wait_dead(pid).await;
    wait_dead(grandchild).await;
}

#[tokio::test]
async fn leftovers_in_the_group_die_with_launch() {
    let tools = job_tools(r#"sleep 3600 & echo $! > "$OUT/grandchild""#);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(16, "tok");
    exec.start(&b).await.unwrap();
    assert_eq!(finished(&exec, &b.to_stop()).await.phase, Phase::Succeeded);
    let grandchild: u32 = wait_file(&file(out.path(), "grandchild"))
        .await
        .parse()
        .unwrap();
    wait_dead(grandchild).await;
}

#[tokio::test]
async fn a_live_build_id_is_already_exists_and_a_finished_one_can_run_again() {
    let tools = job_tools(r#"[ -e "$OUT/quick" ] && exit 0; exec sleep 3600"#);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(17, "tok");
    exec.start(&b).await.unwrap();
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    exec.stop(&b.to_stop()).await.unwrap();
    std::fs::write(file(out.path(), "quick"), "").unwrap();
    exec.start(&b).await.unwrap();
    assert_eq!(finished(&exec, &b.to_stop()).await.phase, Phase::Succeeded);
}

#[tokio::test]
async fn missing_or_non_executable_launch_is_config_invalid_and_leaves_nothing() {
    let tools = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(18, "tok-missing-launch");
    let check = |e: Error| {
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{e}");
        assert!(e.to_string().contains("jobTools"), "{e}");
        assert!(!e.to_string().contains("tok-missing-launch"));
    };
    check(exec.start(&b).await.unwrap_err());
    std::fs::write(tools.path().join("launch"), "#!/bin/sh\n").unwrap();
    check(exec.start(&b).await.unwrap_err());
    // executable, but its interpreter does not exist: spawn itself fails
    std::fs::write(tools.path().join("launch"), "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(
        tools.path().join("launch"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    check(exec.start(&b).await.unwrap_err());
    assert_eq!(
        std::fs::read_dir(state.path().join("builds"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(exec.stats().builds.started, 0);
}

#[tokio::test]
async fn token_env_option_puts_the_token_in_sd_token_instead_of_a_file() {
    let tools =
        job_tools(r#"printf '%s\n' "$@" > "$OUT/args"; printf '%s' "$SD_TOKEN" > "$OUT/token""#);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = common::builder(tools.path(), state.path(), out.path())
        .with_token_env(true)
        .build()
        .await
        .unwrap();
    let b = build(19, "tok-in-env");
    exec.start(&b).await.unwrap();
    assert_eq!(finished(&exec, &b.to_stop()).await.phase, Phase::Succeeded);
    assert_eq!(
        std::fs::read_to_string(file(out.path(), "token")).unwrap(),
        "tok-in-env"
    );
    let args = std::fs::read_to_string(file(out.path(), "args")).unwrap();
    assert!(
        !args.contains("--token-file") && !args.contains("tok-in-env"),
        "{args}"
    );
}

#[tokio::test]
async fn a_new_instance_on_the_same_state_dir_sees_finished_and_running_builds() {
    let tools = job_tools(r#"[ "$SD_BUILD_ID" = 21 ] && exit 5; exec sleep 3600"#);
    let state = tempfile::tempdir().unwrap();
    let first = executor(tools.path(), state.path(), state.path()).await;
    let done = build(21, "tok");
    let running = build(22, "tok");
    first.start(&done).await.unwrap();
    first.start(&running).await.unwrap();
    let s = finished(&first, &done.to_stop()).await;
    assert_eq!(s.exit_code, Some(5));

    let second = executor(tools.path(), state.path(), state.path()).await;
    assert_eq!(second.status(&done.to_stop()).await.unwrap(), s);
    assert_eq!(
        second.status(&running.to_stop()).await.unwrap().phase,
        Phase::Running
    );
    let e = second.start(&running).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let pid = second.pid(running.build_id).unwrap();
    second.stop(&running.to_stop()).await.unwrap();
    assert_eq!(
        second.status(&running.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    wait_dead(pid).await;
    // the instance that spawned it records the same outcome
    assert_eq!(
        finished(&first, &running.to_stop()).await.phase,
        Phase::Canceled
    );
    assert!(!state.path().join("builds/22/token").exists());
}

#[test]
fn a_build_whose_process_vanished_while_no_executor_ran_is_lost() {
    let tools = job_tools("exec sleep 3600");
    let state = tempfile::tempdir().unwrap();
    let b = build(23, "tok");
    // The "old server": its runtime (and the reaper task) goes away with the build running.
    let pid = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pid = rt.block_on(async {
            let exec = executor(tools.path(), state.path(), state.path()).await;
            exec.start(&b).await.unwrap();
            exec.pid(b.build_id).unwrap()
        });
        rt.shutdown_background();
        pid
    };
    assert!(alive(pid), "dropping the executor must not kill its builds");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        wait_dead(pid).await;
        let exec = executor(tools.path(), state.path(), state.path()).await;
        let s = exec.status(&b.to_stop()).await.unwrap();
        assert_eq!(s.phase, Phase::Lost, "{s}");
        assert_eq!(s.failure.as_ref().unwrap().build_started, Some(true));
        assert!(exec.verify(&b).await.unwrap().is_failure());
        exec.stop(&b.to_stop()).await.unwrap();
        assert_eq!(exec.status(&b.to_stop()).await.unwrap().phase, Phase::Lost);
        assert!(!state.path().join("builds/23/token").exists());
    });
}

#[test]
fn a_build_that_ended_while_no_executor_ran_keeps_its_exit_code() {
    // Build 24 fails with code 4, build 25 succeeds, build 26 dies of SIGUSR1, each after
    // its executor (the "old server") is gone.
    let tools = job_tools(
        r#"sleep 0.3; case "$SD_BUILD_ID" in 24) exit 5 ;; 26) kill -USR1 $$; sleep 5 ;; esac; exit 0"#,
    );
    let state = tempfile::tempdir().unwrap();
    let builds = [build(24, "tok"), build(25, "tok"), build(26, "tok")];
    let pids: Vec<u32> = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pids = rt.block_on(async {
            let exec = executor(tools.path(), state.path(), state.path()).await;
            let mut pids = Vec::new();
            for b in &builds {
                exec.start(b).await.unwrap();
                pids.push(exec.pid(b.build_id).unwrap());
            }
            pids
        });
        rt.shutdown_background();
        pids
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for pid in &pids {
            wait_dead(*pid).await;
        }
        let exec = executor(tools.path(), state.path(), state.path()).await;
        let failed = exec.status(&builds[0].to_stop()).await.unwrap();
        assert_eq!(failed.phase, Phase::Failed, "{failed}");
        assert_eq!(failed.exit_code, Some(5));
        assert_eq!(failed.reason(), Some(FailureReason::NonZeroExit));
        let ok = exec.status(&builds[1].to_stop()).await.unwrap();
        assert_eq!(ok.phase, Phase::Succeeded, "{ok}");
        assert_eq!(exec.verify(&builds[1]).await.unwrap(), Verdict::Healthy);
        let signalled = exec.status(&builds[2].to_stop()).await.unwrap();
        assert_eq!(signalled.phase, Phase::Failed, "{signalled}");
        assert_eq!(
            signalled.failure.unwrap().evidence.as_deref(),
            Some("SIGUSR1")
        );
        for id in [24, 25, 26] {
            assert!(!state.path().join(format!("builds/{id}/token")).exists());
        }
    });
}

#[tokio::test]
async fn cleanup_never_stops_live_builds_and_stop_all_does() {
    let tools = job_tools("exec sleep 3600");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let builds = [build(24, "tok"), build(25, "tok")];
    for b in &builds {
        exec.start(b).await.unwrap();
    }
    let pids: Vec<u32> = builds
        .iter()
        .map(|b| exec.pid(b.build_id).unwrap())
        .collect();
    exec.cleanup().await.unwrap();
    exec.cleanup().await.unwrap();
    for (b, pid) in builds.iter().zip(&pids) {
        assert_eq!(
            exec.status(&b.to_stop()).await.unwrap().phase,
            Phase::Running
        );
        assert!(alive(*pid));
    }
    // A second instance (a restarted server) stops what the first one started.
    let second = executor(tools.path(), state.path(), state.path()).await;
    second.stop_all().await.unwrap();
    for (b, pid) in builds.iter().zip(pids) {
        assert_eq!(
            second.status(&b.to_stop()).await.unwrap().phase,
            Phase::Canceled
        );
        wait_dead(pid).await;
    }
    let report = exec.gc(true).await.unwrap();
    assert!(
        report.expired.is_empty(),
        "nothing is expired yet: {report:?}"
    );
}

/// A launch that starts a step in a process group of its own (as `sd-launch` does) and a
/// daemon that left the session with `setsid`, records their pids, and waits.
const ESCAPING_LAUNCH: &str = r#"
set -m
sleep 3600 & echo $! > "$OUT/step"
setsid sh -c 'echo $$ > "$OUT/daemon.tmp"; mv "$OUT/daemon.tmp" "$OUT/daemon"; exec sleep 3600' < /dev/null > /dev/null 2>&1 &
while :; do sleep 1; done
"#;

async fn escaped_pids(out: &std::path::Path) -> Vec<u32> {
    let step: u32 = wait_file(&file(out, "step")).await.parse().unwrap();
    let daemon: u32 = wait_file(&file(out, "daemon")).await.parse().unwrap();
    vec![step, daemon]
}

async fn stop_kills_processes_that_left_the_group(cgroups: bool, id: u64) {
    let tools = job_tools(ESCAPING_LAUNCH);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = common::builder(tools.path(), state.path(), out.path())
        .with_cgroups(cgroups)
        .build()
        .await
        .unwrap();
    let b = build(id, "tok");
    exec.start(&b).await.unwrap();
    let pids = escaped_pids(out.path()).await;
    for pid in &pids {
        assert!(alive(*pid));
        assert!(
            exec.processes(b.build_id).contains(pid),
            "process {pid} is not found as part of the build (cgroups {cgroups})"
        );
    }
    exec.stop(&b.to_stop()).await.unwrap();
    for pid in &pids {
        assert!(
            !alive(*pid),
            "process {pid} survived stop (cgroups {cgroups})"
        );
    }
    assert!(exec.processes(b.build_id).is_empty());
}

#[tokio::test]
async fn stop_kills_step_groups_and_setsid_daemons_with_cgroups() {
    stop_kills_processes_that_left_the_group(true, 27).await;
}

#[tokio::test]
async fn stop_kills_step_groups_and_setsid_daemons_without_cgroups() {
    stop_kills_processes_that_left_the_group(false, 28).await;
}

/// A daemon that leaves the session *and* drops the marker from its environment: only the
/// build's cgroup still holds it.
const UNMARKED_DAEMON: &str = r#"
env -i setsid /bin/sh -c 'echo $$ > "$0/daemon.tmp"; mv "$0/daemon.tmp" "$0/daemon"; exec sleep 3600' "$OUT" < /dev/null > /dev/null 2>&1 &
while :; do sleep 1; done
"#;

#[tokio::test]
async fn with_a_cgroup_even_an_unmarked_daemon_in_its_own_session_is_killed() {
    let tools = job_tools(UNMARKED_DAEMON);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    if !exec.uses_cgroups() {
        eprintln!("skipped: this machine gives no writable cgroup v2 hierarchy");
        return;
    }
    let b = build(32, "tok");
    exec.start(&b).await.unwrap();
    let daemon: u32 = wait_file(&file(out.path(), "daemon"))
        .await
        .parse()
        .unwrap();
    let record = std::fs::read_to_string(state.path().join("builds/32/state.json")).unwrap();
    assert!(record.contains("\"cgroup\""), "{record}");
    assert!(exec.processes(b.build_id).contains(&daemon));
    exec.stop(&b.to_stop()).await.unwrap();
    assert!(
        !alive(daemon),
        "the daemon survived although it was in the build's cgroup"
    );
}

#[tokio::test]
async fn without_cgroups_an_unmarked_daemon_in_its_own_session_escapes_as_documented() {
    let tools = job_tools(UNMARKED_DAEMON);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = common::builder(tools.path(), state.path(), out.path())
        .with_cgroups(false)
        .build()
        .await
        .unwrap();
    let b = build(33, "tok");
    exec.start(&b).await.unwrap();
    let daemon: u32 = wait_file(&file(out.path(), "daemon"))
        .await
        .parse()
        .unwrap();
    exec.stop(&b.to_stop()).await.unwrap();
    let escaped = alive(daemon);
    // Ours to clean up: the documented escape.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::SIGKILL,
    );
    assert!(
        escaped,
        "the crate docs say this daemon escapes without a cgroup"
    );
}

#[tokio::test]
async fn a_build_that_ends_takes_its_daemons_along() {
    let tools = job_tools(
        r#"setsid sh -c 'echo $$ > "$OUT/daemon.tmp"; mv "$OUT/daemon.tmp" "$OUT/daemon"; exec sleep 3600' < /dev/null > /dev/null 2>&1 &
while [ ! -e "$OUT/daemon" ]; do sleep 0.05; done"#,
    );
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(29, "tok");
    exec.start(&b).await.unwrap();
    assert_eq!(finished(&exec, &b.to_stop()).await.phase, Phase::Succeeded);
    let daemon: u32 = wait_file(&file(out.path(), "daemon"))
        .await
        .parse()
        .unwrap();
    assert!(!alive(daemon), "the daemon outlived its build");
}

#[test]
fn the_backstop_of_a_restarted_executor_kills_every_process_of_the_build() {
    // Before: only the supervisor's group was signalled, so the step (own group) and the
    // daemon (own session) of a build adopted after a restart survived its timeout.
    let tools = job_tools(ESCAPING_LAUNCH);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let b = build(30, "tok");
    let (pid, pids) = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(async {
            let exec = executor(tools.path(), state.path(), out.path()).await;
            exec.start(&b).await.unwrap();
            (
                exec.pid(b.build_id).unwrap(),
                escaped_pids(out.path()).await,
            )
        });
        rt.shutdown_background();
        r
    };
    // The deadline passed while no executor ran.
    let state_file = state.path().join("builds/30/state.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&record_file::read(&state_file).unwrap().unwrap()).unwrap();
    record["killAt"] = serde_json::json!("2000-01-01T00:00:00Z");
    std::fs::write(&state_file, record.to_string()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let exec = executor(tools.path(), state.path(), out.path()).await;
        let s = finished(&exec, &b.to_stop()).await;
        assert_eq!(s.phase, Phase::TimedOut, "{s}");
        wait_dead(pid).await;
        for p in pids {
            assert!(!alive(p), "process {p} survived the backstop");
        }
    });
}

#[tokio::test]
async fn launch_gets_the_stop_grace_the_spool_file_and_the_marker() {
    let tools = job_tools(RECORDING_LAUNCH);
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(31, "tok");
    exec.start(&b).await.unwrap();
    finished(&exec, &b.to_stop()).await;
    let env = std::fs::read_to_string(file(out.path(), "env")).unwrap();
    let dir = state.path().join("builds/31");
    for expected in [
        "SD_STOP_GRACE_MS=300".to_string(),
        format!("SD_SPOOL_FILE={}", exec.spool_path(b.build_id).display()),
        format!("SD_PROCESS_BUILD={}", dir.display()),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from:\n{env}"
        );
    }
    assert_eq!(exec.spool_path(b.build_id), dir.join("spool.jsonl"));
}

#[tokio::test]
async fn stop_and_status_of_unknown_builds() {
    let tools = job_tools("exit 0");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(26, "tok");
    exec.stop(&b.to_stop()).await.unwrap();
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        exec.verify(&b).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn a_build_whose_executor_died_before_recording_its_pid_is_found_by_its_marker() {
    // Before: such a build was unknown to a restarted executor (no state file yet), so the
    // API started it a second time or called it lost.
    let tools = job_tools("exec sleep 3600");
    let state = tempfile::tempdir().unwrap();
    let b = build(34, "tok");
    let pid = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pid = rt.block_on(async {
            let exec = executor(tools.path(), state.path(), state.path()).await;
            exec.start(&b).await.unwrap();
            exec.pid(b.build_id).unwrap()
        });
        rt.shutdown_background();
        pid
    };
    // What a crash between spawning and recording the pid leaves.
    let state_file = state.path().join("builds/34/state.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&record_file::read(&state_file).unwrap().unwrap()).unwrap();
    record["pid"] = serde_json::Value::Null;
    record["procStart"] = serde_json::Value::Null;
    std::fs::write(&state_file, record.to_string()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let exec = executor(tools.path(), state.path(), state.path()).await;
        assert_eq!(
            exec.status(&b.to_stop()).await.unwrap().phase,
            Phase::Running
        );
        assert_eq!(exec.pid(b.build_id), Some(pid));
        let e = exec.start(&b).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "never started twice");
        exec.stop(&b.to_stop()).await.unwrap();
        wait_dead(pid).await;
        assert_eq!(
            exec.status(&b.to_stop()).await.unwrap().phase,
            Phase::Canceled
        );
    });
}

#[tokio::test]
async fn a_start_interrupted_before_its_claim_leaves_nothing_under_the_id() {
    let tools = job_tools("exit 0");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    // A crash while preparing build 35 left its temporary directory behind.
    std::fs::create_dir_all(state.path().join("builds/.35.1.abcdef01/work")).unwrap();
    let b = build(35, "tok");
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    exec.start(&b).await.unwrap();
    assert_eq!(finished(&exec, &b.to_stop()).await.phase, Phase::Succeeded);
}

#[tokio::test]
async fn a_launch_that_exits_0_without_the_handshake_is_failed_launch_protocol() {
    // Upstream's launcher given native mode's `--token-file`: usage, exit 0, nothing ran.
    let tools = common::job_tools_without_handshake(
        r#"echo "Incorrect Usage. flag provided but not defined: -token-file"; exit 0"#,
    );
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(61, "tok-silent");
    exec.start(&b).await.unwrap();
    let s = finished(&exec, &b.to_stop()).await;
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol), "{s:?}");
    assert_eq!(s.exit_code, Some(0));
    let launch = tools.path().join("launch");
    assert!(
        s.message.contains(launch.to_str().unwrap()),
        "{}",
        s.message
    );
    assert_eq!(s.api_status().as_str(), "FAILURE");
    assert!(exec.verify(&b).await.unwrap().is_failure());

    // A handshake for another build proves nothing about this one.
    let tools = common::job_tools_without_handshake(
        r#"echo "sdx-launch-result protocol=1 build=999 status=SUCCESS"; exit 0"#,
    );
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(62, "tok-silent");
    exec.start(&b).await.unwrap();
    let s = finished(&exec, &b.to_stop()).await;
    assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol), "{s:?}");
    assert!(
        s.message.contains("without the launch handshake"),
        "{}",
        s.message
    );

    // Through the result file only (stdout silent): succeeded.
    let tools = common::job_tools_without_handshake(
        r#"echo "sdx-launch-result protocol=1 build=$SD_BUILD_ID status=SUCCESS" > "$SD_LAUNCH_RESULT_FILE"; exit 0"#,
    );
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = build(63, "tok");
    exec.start(&b).await.unwrap();
    assert_eq!(finished(&exec, &b.to_stop()).await.phase, Phase::Succeeded);
}

#[test]
fn a_silent_launch_that_ended_while_no_executor_ran_is_launch_protocol_after_a_restart() {
    let tools = common::job_tools_without_handshake(
        r#"while [ ! -e "$OUT/go" ]; do sleep 0.02; done; exit 0"#,
    );
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let b = build(64, "tok-silent");
    // The first instance starts the build, then its runtime (and reaper) goes away.
    let pid = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let exec = executor(tools.path(), state.path(), out.path()).await;
            exec.start(&b).await.unwrap();
            exec.pid(b.build_id).unwrap()
        })
    };
    std::fs::write(out.path().join("go"), "").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        wait_dead(pid).await;
        let second = executor(tools.path(), state.path(), out.path()).await;
        let s = finished(&second, &b.to_stop()).await;
        assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol), "{s:?}");
        assert_eq!(s.exit_code, Some(0));
    });
}

#[tokio::test]
async fn timings_come_from_the_supervisor_and_survive_a_restart() {
    let tools = job_tools("sleep 0.4");
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), out.path()).await;
    let b = build(41, "tok-timings");
    let before = chrono::Utc::now();
    exec.start(&b).await.unwrap();
    let s = common::finished(&exec, &b.to_stop()).await;
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    let t = exec.timings(&b.to_stop()).await.unwrap().unwrap();
    let (accepted, running, done) = (t.accepted.unwrap(), t.running.unwrap(), t.finished.unwrap());
    assert!(before <= accepted && accepted <= running, "{t:?}");
    assert!(
        done - running >= chrono::Duration::milliseconds(350),
        "`launch` slept 0.4 s: {t:?}"
    );
    // cgroup v2 memory.peak only where the build got a cgroup that accounts memory.
    if !exec.uses_cgroups() {
        assert_eq!(t.peak_memory_bytes, None);
    }
    // The record on disk carries them: a new executor on the same state tells the same.
    drop(exec);
    let again = executor(tools.path(), state.path(), out.path()).await;
    assert_eq!(again.timings(&b.to_stop()).await.unwrap(), Some(t));
    // An unknown build has none.
    assert_eq!(
        again.timings(&build(42, "x").to_stop()).await.unwrap(),
        None
    );
}
