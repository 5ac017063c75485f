//! `wait_for_change` on the process backend: woken by the build's record (exit, stop),
//! also for a build adopted by a new instance; and the build's own `env` reaches `launch`.

mod common;

use std::time::Duration;

use common::{API, build, executor, job_tools};
use executor_base::{BuildId, ErrorKind, Executor, Phase, StartConfig, StopConfig};

const WITHIN: Duration = Duration::from_secs(20);

/// `launch` waits for `$OUT/go-<build id>`, then exits with code 4.
const WAIT_FOR_GO: &str = "while [ ! -f \"$OUT/go-$SD_BUILD_ID\" ]; do sleep 0.01; done; exit 5";

#[tokio::test]
async fn an_exit_and_a_stop_wake_the_waiter_with_the_new_status() {
    let tools = job_tools(WAIT_FOR_GO);
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let (a, b) = (build(31, "tok"), build(32, "tok"));
    exec.start(&a).await.unwrap();
    exec.start(&b).await.unwrap();

    let running = exec.status(&a.to_stop()).await.unwrap();
    // A status other than the current one comes back at once.
    let stale = executor_base::BuildStatus::pending("stale");
    assert_eq!(
        exec.wait_for_change(&a.to_stop(), &stale).await.unwrap(),
        running
    );

    let waiter = {
        let (exec, stop, seen) = (exec.clone(), a.to_stop(), running.clone());
        tokio::spawn(async move { exec.wait_for_change(&stop, &seen).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    std::fs::write(state.path().join("go-31"), "").unwrap();
    let ended = tokio::time::timeout(WITHIN, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ended.phase, Phase::Failed);
    assert_eq!(ended.exit_code, Some(5));
    // Terminal: returned at once, even when it is what the caller saw.
    assert_eq!(
        exec.wait_for_change(&a.to_stop(), &ended).await.unwrap(),
        ended
    );

    let running = exec.status(&b.to_stop()).await.unwrap();
    let waiter = {
        let (exec, stop, seen) = (exec.clone(), b.to_stop(), running);
        tokio::spawn(async move {
            let mut seen = seen;
            while !seen.is_terminal() {
                seen = exec.wait_for_change(&stop, &seen).await?;
            }
            Ok::<_, executor_base::Error>(seen)
        })
    };
    exec.stop(&b.to_stop()).await.unwrap();
    let stopped = tokio::time::timeout(WITHIN, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stopped.phase, Phase::Canceled);

    let unknown = StopConfig::new(BuildId::new(39).unwrap());
    let e = exec.wait_for_change(&unknown, &stopped).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn an_adopted_build_is_followed_too() {
    let tools = job_tools(WAIT_FOR_GO);
    let state = tempfile::tempdir().unwrap();
    let b = build(33, "tok");
    {
        let first = executor(tools.path(), state.path(), state.path()).await;
        first.start(&b).await.unwrap();
    }
    let second = executor(tools.path(), state.path(), state.path()).await;
    let running = second.status(&b.to_stop()).await.unwrap();
    assert_eq!(running.phase, Phase::Running);
    let waiter = {
        let (exec, stop) = (second.clone(), b.to_stop());
        tokio::spawn(async move { exec.wait_for_change(&stop, &running).await })
    };
    std::fs::write(state.path().join("go-33"), "").unwrap();
    let ended = tokio::time::timeout(WITHIN, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((ended.phase, ended.exit_code), (Phase::Failed, Some(5)));
}

#[tokio::test]
async fn the_build_env_reaches_launch_after_the_launch_variables() {
    let tools = job_tools("env > \"$OUT/env-$SD_BUILD_ID\"");
    let state = tempfile::tempdir().unwrap();
    let exec = executor(tools.path(), state.path(), state.path()).await;
    let b = StartConfig::builder(34, API, "busybox:latest", "secret-token-34")
        .env("ZUUL_REF", "refs/zuul/master/Z1")
        .env("LOG_PATH", "check/unit/abc")
        .build()
        .unwrap();
    exec.start(&b).await.unwrap();
    let mut seen = exec.status(&b.to_stop()).await.unwrap();
    while !seen.is_terminal() {
        seen = tokio::time::timeout(WITHIN, exec.wait_for_change(&b.to_stop(), &seen))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(seen.phase, Phase::Succeeded);
    let env = std::fs::read_to_string(state.path().join("env-34")).unwrap();
    assert!(env.contains("ZUUL_REF=refs/zuul/master/Z1\n"), "{env}");
    assert!(env.contains("LOG_PATH=check/unit/abc\n"), "{env}");
    assert!(env.contains("SD_BUILD_ID=34\n"), "{env}");
    assert!(
        !env.contains("secret-token-34"),
        "no token in the environment: {env}"
    );
}
