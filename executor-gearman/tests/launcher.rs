//! The Gearman executor driving the launcher worker (wrapping the FakeExecutor) through
//! the real gearmand: success, failure, stop, a launcher killed mid-build, an unknown
//! job, a drain, and the launcher's own validation and control functions.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use executor_base::testkit::fake::{FakeExecutor, Script};
use executor_base::{BuildStatus, ErrorKind, Executor, FailureReason, Phase};
use executor_gearman::zuul::LauncherException;
use executor_gearman::{ClientOptions, GearmanClient, JobEvent};
use serde_json::json;

fn fake(script: Script) -> FakeExecutor {
    let f = FakeExecutor::new();
    f.set_default_script(script);
    f
}

on_both_servers! {
async fn a_build_succeeds_and_is_announced(server: Server) {
    let job = unique("succeed");
    let w = RunningWorker::start(
        server,
        &job,
        fake(Script::succeed_after(Duration::from_millis(300))),
        |_| {},
    )
    .await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    let s = exec.status(&b.to_stop()).await.unwrap();
    assert!(!s.is_terminal(), "{s}");
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    let info = exec.build_info(b.build_id).unwrap();
    assert_eq!(info.manager.as_deref(), Some(w.worker.manager()));
    assert_eq!(info.name.as_deref(), Some(job.as_str()));
    assert_eq!(info.function, format!("build:{job}"));
    assert_eq!(
        info.url.as_deref(),
        Some(format!("http://127.0.0.1:4200/pipelines/3/builds/{}", b.build_id).as_str())
    );
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Succeeded, "{s}");
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(w.fake.calls().start, 1);
    let stats = exec.stats();
    assert_eq!((stats.builds.started, stats.builds.finished), (1, 1));
    assert!(
        stats.requests.total >= 2,
        "admin check and submit are counted: {stats:?}"
    );
    // The launcher released the build on the engine after reporting it.
    assert!(w.fake.calls().stop >= 1);
    // Timings by the executor's clock as the packets arrived; the build ran ~300 ms.
    let t = exec.timings(&b.to_stop()).await.unwrap().unwrap();
    let (a, sc, r, f) = (
        t.accepted.unwrap(),
        t.scheduled.unwrap(),
        t.running.unwrap(),
        t.finished.unwrap(),
    );
    assert!(a <= sc && sc <= r && r <= f, "{t:?}");
    assert!(f - r >= chrono::Duration::milliseconds(100), "{t:?}");
    assert_eq!((t.pull_started, t.peak_memory_bytes), (None, None));
    assert_eq!(
        exec.timings(&executor_base::StopConfig::new(executor_base::BuildId::new(999_999_999).unwrap()))
            .await
            .unwrap(),
        None
    );
}
}

on_both_servers! {
async fn a_failing_build_is_failed_with_its_reason(server: Server) {
    let job = unique("fail");
    let f = fake(Script::finish_after(
        Duration::from_millis(100),
        BuildStatus::exited(3),
    ));
    let oom = build(build_id());
    f.script_for(
        oom.build_id,
        Script::oom_exit_zero(Duration::from_millis(100)),
    );
    let _w = RunningWorker::start(server, &job, f, |_| {}).await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    exec.start(&oom).await.unwrap();
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Failed, "{s}");
    assert_eq!(s.reason(), Some(FailureReason::NonZeroExit));
    assert_eq!(s.exit_code, Some(3));
    // An OOM kill with exit code 0 is a failure, never a success.
    let s = wait_for(&exec, &oom, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.reason(), Some(FailureReason::OutOfMemory), "{s}");
    assert_eq!(exec.stats().builds.failed, 2);
}
}

on_both_servers! {
async fn stop_while_running_cancels_the_build_on_the_launcher(server: Server) {
    let job = unique("stop");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    exec.stop(&b.to_stop()).await.unwrap();
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    wait_on_fake(
        &w.fake,
        b.build_id.get(),
        |s| s.phase == Phase::Canceled,
        "Canceled",
    )
    .await;
    exec.stop(&b.to_stop()).await.unwrap(); // idempotent
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
}
}

on_both_servers! {
async fn a_launcher_killed_mid_build_is_lost_never_success(server: Server) {
    let job = unique("kill");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    w.kill().await;
    // gearmand re-queues the job; with no launcher left, GET_STATUS shows it held by no
    // worker after its start was announced. geard fails the job of a worker that went
    // away: WORK_FAIL without a result.
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Lost, "{s}");
    assert_eq!(s.failure.as_ref().unwrap().build_started, Some(true));
    assert!(s.message.contains("went away mid-build"), "{s}");
    exec.stop(&b.to_stop()).await.unwrap();
    assert_eq!(exec.status(&b.to_stop()).await.unwrap().phase, Phase::Lost);
}
}

on_both_servers! {
async fn a_build_re_queued_to_another_launcher_is_lost_and_that_attempt_stopped(server: Server) {
    let job = unique("requeue");
    let first = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    // Slow liveness checks, so the second launcher's announcement is what tells.
    let exec = executor_with(server, &job, |b| {
        b.with_liveness_interval(Duration::from_secs(3600))
    })
    .await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    let second = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    first.kill().await;
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Lost, "{s}");
    if !server.requeues() {
        // geard fails the job instead of re-queueing it: the second launcher never
        // sees it.
        assert!(s.message.contains("went away mid-build"), "{s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(second.fake.calls().start, 0);
        return;
    }
    assert!(s.message.contains("re-queued"), "{s}");
    // The second attempt was stopped: the build does not run twice.
    wait_on_fake(
        &second.fake,
        b.build_id.get(),
        |s| s.phase == Phase::Canceled,
        "Canceled",
    )
    .await;
}
}

on_both_servers! {
async fn an_unknown_job_is_reported_not_hung(server: Server) {
    let job = unique("nobody");
    let exec = executor(server, &job).await;
    let b = build(build_id());
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&format!("build:{job}")), "{e}");
    assert_eq!(
        exec.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Without the admin check, the queue timeout fails it and withdraws the job.
    let exec = executor_with(server, &job, |b| {
        b.with_check_workers(false)
            .with_queue_timeout(Duration::from_secs(1))
    })
    .await;
    exec.start(&b).await.unwrap();
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.reason(), Some(FailureReason::Unschedulable), "{s}");
    // A launcher that shows up later never runs the withdrawn build.
    let w = RunningWorker::start(
        server,
        &job,
        fake(Script::succeed_after(Duration::from_millis(10))),
        |_| {},
    )
    .await;
    let later = build(build_id());
    exec.start(&later).await.unwrap();
    wait_for(&exec, &later, |s| s.phase == Phase::Succeeded, "Succeeded").await;
    // gearmand never hands out a job whose submitter left; one taken in the very instant
    // the submitter left is not started (or is stopped) by the launcher.
    wait_not_live(&w.fake, &[b.build_id]).await;
}
}

on_both_servers! {
async fn a_queued_build_is_withdrawn_by_stop(server: Server) {
    let job = unique("queued");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |c| {
        c.max_builds = 1
    })
    .await;
    let exec = executor(server, &job).await;
    let (running, queued, after) = (build(build_id()), build(build_id()), build(build_id()));
    exec.start(&running).await.unwrap();
    wait_for(&exec, &running, |s| s.phase == Phase::Running, "Running").await;
    exec.start(&queued).await.unwrap();
    assert_eq!(
        exec.status(&queued.to_stop()).await.unwrap().phase,
        Phase::Pending
    );
    exec.stop(&queued.to_stop()).await.unwrap();
    assert_eq!(
        exec.status(&queued.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
    exec.start(&after).await.unwrap();
    exec.stop(&running.to_stop()).await.unwrap();
    // gearmand's queue is FIFO: had the withdrawn build been handed out, it would run
    // before `after`.
    wait_for(&exec, &after, |s| s.phase == Phase::Running, "Running").await;
    assert_eq!(w.fake.calls().start, 2);
    exec.stop(&after.to_stop()).await.unwrap();
}
}

on_both_servers! {
async fn stop_during_a_slow_start_leaves_nothing_running(server: Server) {
    let job = unique("slowstart");
    let f = fake(Script::run_until_stopped());
    f.set_latency(Duration::from_millis(300));
    let w = RunningWorker::start(server, &job, f, |_| {}).await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    exec.stop(&b.to_stop()).await.unwrap();
    let s = exec.status(&b.to_stop()).await.unwrap();
    assert_eq!(s.phase, Phase::Canceled, "{s}");
    // Whether the launcher had grabbed it or not, the fake has no live build.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !w.fake.live_builds().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still live: {:?}",
            w.fake.live_builds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
}

on_both_servers! {
async fn a_start_the_backend_refuses_is_a_typed_failure(server: Server) {
    let job = unique("refused");
    let f = fake(Script::run_until_stopped());
    f.refuse_start(ErrorKind::ImagePull);
    let _w = RunningWorker::start(server, &job, f, |_| {}).await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.reason(), Some(FailureReason::ImagePull), "{s}");
    assert_eq!(s.failure.as_ref().unwrap().build_started, Some(false));
}
}

on_both_servers! {
async fn bad_zuul_parameters_are_refused_by_name(server: Server) {
    let job = unique("params");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    let args = json!({"ZUUL_UUID": "u-1", "ZUUL_PIPELINE": "gate", "ZUUL_REF": "refs/zuul/x",
                      "ZUUL_CHANGE": "12", "LOG_PATH": "/abs", "apiUri": "http://127.0.0.1:9"});
    let submitted = client
        .submit(
            &format!("build:{job}"),
            "u-1",
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap();
    let (_, end) = submitted.wait().await;
    let JobEvent::Exception(data) = end else {
        panic!("expected WORK_EXCEPTION, got {end:?}")
    };
    let x = LauncherException::from_data(&data);
    assert_eq!(x.kind, "invalid");
    let fields: Vec<&str> = x.fields.iter().map(|f| f.field.as_str()).collect();
    for f in [
        "ZUUL_PROJECT",
        "ZUUL_BRANCH",
        "ZUUL_PATCHSET",
        "LOG_PATH",
        "container",
        "token",
    ] {
        assert!(fields.contains(&f), "{f} not named in {fields:?}");
    }
    // A plain Zuul client (no exceptions asked for) gets WORK_FAIL, and the reason as the
    // last WORK_DATA before it.
    let plain = GearmanClient::connect(
        &server.addr(),
        ClientOptions {
            exceptions: false,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let submitted = plain
        .submit(
            &format!("build:{job}"),
            "u-2",
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap();
    let (data, end) = submitted.wait().await;
    assert!(matches!(end, JobEvent::Fail | JobEvent::Exception(_)), "{end:?}");
    let report: serde_json::Value =
        serde_json::from_slice(data.last().expect("a refusal report")).unwrap();
    assert_eq!(report["result"], json!("ERROR"), "{report}");
    let why = report.to_string();
    for f in ["ZUUL_PROJECT", "LOG_PATH", "container", "token"] {
        assert!(why.contains(f), "{f} not named for a plain client: {why}");
    }
    assert_eq!(w.fake.calls().start, 0, "nothing reached the executor");
}
}

on_both_servers! {
async fn a_plain_zuul_job_runs_with_worker_defaults_and_can_go_offline(server: Server) {
    let job = unique("zuul");
    let mut w = RunningWorker::start(
        server,
        &job,
        fake(Script::succeed_after(Duration::from_millis(50))),
        |c| {
            c.nodes = vec!["bionic".into()];
            c.default_api_uri = Some("http://127.0.0.1:9".into());
            c.default_container = Some("busybox:latest".into());
            c.default_token = Some("worker-default-token".to_string().into());
            c.build_url = Some("http://logs.example/{name}/{number}".into());
        },
    )
    .await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    let args = json!({"ZUUL_UUID": "9f1c", "ZUUL_PROJECT": "org/repo", "ZUUL_PIPELINE": "check",
        "ZUUL_REF": "refs/zuul/master/Z9", "ZUUL_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "OFFLINE_NODE_WHEN_COMPLETE": "1"});
    let submitted = client
        .submit(
            &format!("build:{job}:bionic"),
            "9f1c",
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap();
    let (data, end) = submitted.wait().await;
    assert!(matches!(end, JobEvent::Complete(_)), "{end:?}");
    let first: serde_json::Value = serde_json::from_slice(&data[0]).unwrap();
    assert_eq!(first["name"], json!(job));
    assert_eq!(first["manager"], json!(w.worker.manager()));
    assert_eq!(first["worker_program"], json!("sdx-gearman-worker"));
    assert_eq!(first["worker_extra"]["node"], json!("bionic"));
    assert_eq!(first["worker_ips"], json!(["127.0.0.1"]));
    let number = first["number"].as_u64().unwrap();
    assert_eq!(
        first["url"],
        json!(format!("http://logs.example/{job}/{number}"))
    );
    // Without a buildId the build number is the build id.
    assert_eq!(first["worker_extra"]["buildId"], json!(number));
    let last: serde_json::Value = serde_json::from_slice(data.last().unwrap()).unwrap();
    assert_eq!(last["result"], json!("SUCCESS"));
    // OFFLINE_NODE_WHEN_COMPLETE: the worker went offline once the build was done.
    let ran = tokio::time::timeout(SETTLE, &mut w.task)
        .await
        .expect("worker exited");
    ran.unwrap().unwrap();
    w.drain();
}
}

on_both_servers! {
async fn set_description_is_recorded_and_stop_of_unknown_builds_is_ok(server: Server) {
    let job = unique("describe");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    let m = w.worker.manager().to_string();
    let args = json!({"name": job, "number": 17, "html_description": "<b>gate</b> passed"});
    let (_, end) = client
        .submit(
            &format!("set_description:{m}"),
            "",
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap()
        .wait()
        .await;
    assert!(matches!(end, JobEvent::Complete(_)), "{end:?}");
    assert_eq!(
        w.worker.description(&job, 17).as_deref(),
        Some("<b>gate</b> passed")
    );

    let (_, end) = client
        .submit(
            &format!("stop:{m}"),
            "",
            br#"{"name":"x","number":"5"}"#.to_vec().into(),
        )
        .await
        .unwrap()
        .wait()
        .await;
    let JobEvent::Complete(answer) = end else {
        panic!("{end:?}")
    };
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["stopped"], json!(false));

    let (_, end) = client
        .submit(&format!("stop:{m}"), "", br#"{"number":0}"#.to_vec().into())
        .await
        .unwrap()
        .wait()
        .await;
    let JobEvent::Exception(x) = end else {
        panic!("{end:?}")
    };
    let x = LauncherException::from_data(&x);
    assert_eq!(x.fields.len(), 2, "{x:?}");
}
}

on_both_servers! {
async fn a_drain_finishes_running_builds_and_takes_no_new_ones(server: Server) {
    let job = unique("drain");
    let f = fake(Script::run_until_stopped());
    let mut w = RunningWorker::start(server, &job, f.clone(), |_| {}).await;
    let exec = executor(server, &job).await;
    let running = build(build_id());
    exec.start(&running).await.unwrap();
    wait_for(&exec, &running, |s| s.phase == Phase::Running, "Running").await;
    w.drain();
    // Still registered while the build runs (gearmand would re-queue it otherwise) ...
    let late = build(build_id());
    exec.start(&late).await.unwrap();
    // ... and it finishes the running build, then exits.
    f.set_status(running.build_id, BuildStatus::succeeded())
        .unwrap();
    let s = wait_for(&exec, &running, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Succeeded);
    tokio::time::timeout(SETTLE, &mut w.task)
        .await
        .expect("worker exited after the drain")
        .unwrap()
        .unwrap();
    assert_eq!(f.calls().start, 1, "the draining worker took no new build");
    assert_eq!(
        exec.status(&late.to_stop()).await.unwrap().phase,
        Phase::Pending
    );
    exec.stop(&late.to_stop()).await.unwrap();
    assert_eq!(
        exec.status(&late.to_stop()).await.unwrap().phase,
        Phase::Canceled
    );
}
}

on_both_servers! {
async fn the_drain_timeout_aborts_what_still_runs(server: Server) {
    let job = unique("draintimeout");
    let mut w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |c| {
        c.drain_timeout_secs = Some(1)
    })
    .await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    w.drain();
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::Canceled, "{s}");
    tokio::time::timeout(SETTLE, &mut w.task)
        .await
        .expect("worker exited")
        .unwrap()
        .unwrap();
}
}

on_both_servers! {
async fn a_live_build_id_cannot_start_twice_and_tokens_stay_out_of_errors(server: Server) {
    let job = unique("twice");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let exec = executor(server, &job).await;
    let b = build(build_id());
    exec.start(&b).await.unwrap();
    let e = exec.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(!format!("{e} {e:?} {exec:?}").contains("secret-token"));
    // Stopped once its launcher announced it (a stop landing while the job is still
    // queued withdraws it instead, and a launcher that grabbed it in that instant stops it
    // at its next abandonment check, seconds later).
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    exec.stop(&b.to_stop()).await.unwrap();
    wait_not_live(&w.fake, &[b.build_id]).await;
    // A finished build id may start again.
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    exec.stop(&b.to_stop()).await.unwrap();
}
}

on_both_servers! {
async fn annotations_choose_the_job_and_are_validated(server: Server) {
    let job = unique("annotated");
    let _w = RunningWorker::start(
        server,
        &job,
        fake(Script::succeed_after(Duration::from_millis(10))),
        |_| {},
    )
    .await;
    let exec = executor(server, "some-default-job").await;
    let id = build_id();
    let b = executor_base::StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", "t")
        .annotation("screwdriver.cd/gearmanJob", job.clone())
        .build()
        .unwrap();
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Succeeded, "Succeeded").await;
    let bad = executor_base::StartConfig::builder(
        build_id(),
        "http://127.0.0.1:9",
        "busybox:latest",
        "t",
    )
    .annotation("screwdriver.cd/gearmanJob", "has space")
    .build()
    .unwrap();
    let e = exec.start(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(
        e.field_errors()[0].field,
        "annotations[screwdriver.cd/gearmanJob]"
    );
    assert_eq!(
        exec.status(&bad.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
}

on_both_servers! {
async fn a_build_nobody_waits_for_is_stopped_by_the_launcher(server: Server) {
    let job = unique("abandoned");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    let id = build_id();
    let mut args = build(id).to_json_with_token();
    for (k, v) in [
        ("ZUUL_UUID", "gone-1"),
        ("ZUUL_PROJECT", "org/repo"),
        ("ZUUL_PIPELINE", "check"),
        ("ZUUL_REF", "refs/zuul/master/Z1"),
        ("ZUUL_COMMIT", "0123456"),
    ] {
        args[k] = json!(v);
    }
    let uuid = format!("gone-{id}");
    args["ZUUL_UUID"] = json!(uuid);
    let mut submitted = client
        .submit(
            &format!("build:{job}"),
            &uuid,
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap();
    // Wait until it runs (WORK_STATUS), then the submitter goes away.
    while let Some(ev) = submitted.events.recv().await {
        if matches!(ev, JobEvent::Status { .. }) {
            break;
        }
    }
    drop(submitted);
    drop(client);
    wait_on_fake(&w.fake, id, |s| s.phase == Phase::Canceled, "Canceled").await;
}
}

on_both_servers! {
async fn the_launcher_arms_the_build_timer_and_a_timeout_ends_the_job_timed_out(server: Server) {
    let job = unique("timer");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let exec = executor(server, &job).await;
    let id = build_id();
    let b = executor_base::StartConfig::builder(
        id,
        "http://127.0.0.1:9",
        "busybox:latest",
        "secret-token-timer",
    )
    .job_id(7)
    .annotation("screwdriver.cd/timeout", 5)
    .build()
    .unwrap();
    let before = chrono::Utc::now();
    exec.start(&b).await.unwrap();
    wait_for(&exec, &b, |s| s.phase == Phase::Running, "Running").await;
    // Armed on the wrapped executor with the build's job, start and timeout annotation.
    let timers = w.fake.armed_timers();
    let t = timers
        .iter()
        .find(|t| t.build_id == b.build_id)
        .expect("timer armed");
    assert_eq!(t.job_id.get(), 7);
    assert_eq!(t.annotations.timeout_minutes(), Some(5));
    assert!(t.start_time >= before - chrono::Duration::seconds(1));

    // What the wrapped router does when the timer fires: stop the build, report TimedOut.
    w.fake
        .set_status(
            b.build_id,
            BuildStatus::timed_out("build ran past its 5-minute timeout"),
        )
        .unwrap();
    let s = wait_for(&exec, &b, |s| s.is_terminal(), "a terminal status").await;
    assert_eq!(s.phase, Phase::TimedOut, "{s}");
    // Disarmed once the job ended.
    for _ in 0..100 {
        if !w
            .fake
            .armed_timers()
            .iter()
            .any(|t| t.build_id == b.build_id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the build's timer is still armed after its job ended");
}
}

on_both_servers! {
async fn a_submitter_gone_during_the_start_is_noticed_right_after_it(server: Server) {
    let job = unique("gone-early");
    let fake = fake(Script::run_until_stopped());
    // A slow engine: the submitter leaves while the launcher is still starting the build.
    fake.set_latency(Duration::from_millis(400));
    // The production period (the tests' default is 100 ms).
    let w = RunningWorker::start(server, &job, fake, |c| c.abandon_check_ms = 5000).await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    let id = build_id();
    let uuid = format!("gone-early-{id}");
    let mut args = build(id).to_json_with_token();
    for (k, v) in [
        ("ZUUL_UUID", uuid.as_str()),
        ("ZUUL_PROJECT", "org/repo"),
        ("ZUUL_PIPELINE", "check"),
        ("ZUUL_REF", "refs/zuul/master/Z1"),
        ("ZUUL_COMMIT", "0123456"),
    ] {
        args[k] = json!(v);
    }
    let mut submitted = client
        .submit(
            &format!("build:{job}"),
            &uuid,
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap();
    // The announcement comes before the start; leave as soon as it does.
    while let Some(ev) = submitted.events.recv().await {
        match ev {
            JobEvent::Data(_) => break,
            other => assert!(
                !matches!(other, JobEvent::Exception(_) | JobEvent::Fail),
                "{other:?}"
            ),
        }
    }
    drop(submitted);
    drop(client);
    let left = tokio::time::Instant::now();
    wait_on_fake(&w.fake, id, |s| s.phase == Phase::Canceled, "Canceled").await;
    // Well before the first periodic check, 5 s after the start.
    assert!(
        left.elapsed() < Duration::from_secs(4),
        "stopped only after {:?}",
        left.elapsed()
    );
}
}

on_both_servers! {
async fn an_oversized_job_is_failed_with_its_reason_and_nothing_restarts(server: Server) {
    // gearmand: the worker's default limit (16 MiB), a 17 MiB job. geard (Python) takes
    // too long to read 17 MiB within a request timeout: a 1 MiB limit and a 2 MiB job.
    // A job over the limit is refused, the connection stays, and a build running
    // meanwhile is neither restarted nor started twice.
    let (limit, pad) = match server {
        Server::Gearmand => (None, 17 << 20),
        Server::Geard => (Some(1 << 20), 2 << 20),
    };
    let job = unique("oversized");
    let w = RunningWorker::start(server, &job, fake(Script::succeed_after(Duration::from_millis(1500))), |c| {
        if let Some(limit) = limit {
            c.max_packet_size = limit;
        }
        c.default_api_uri = Some("http://127.0.0.1:9".into());
        c.default_container = Some("busybox:latest".into());
        c.default_token = Some("worker-default-token".to_string().into());
    })
    .await;
    // A plain Zuul client: it did not ask for exceptions.
    let plain = GearmanClient::connect(
        &server.addr(),
        ClientOptions {
            exceptions: false,
            // Big enough to send the oversized job.
            max_packet_size: 64 << 20,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let zuul = |uuid: &str, pad: usize| {
        let mut args = json!({"ZUUL_UUID": uuid, "ZUUL_PROJECT": "org/repo", "ZUUL_PIPELINE": "check",
            "ZUUL_REF": "refs/zuul/master/Z9", "ZUUL_COMMIT": "0123456789abcdef0123456789abcdef01234567"});
        if pad > 0 {
            args["PADDING"] = json!("x".repeat(pad));
        }
        serde_json::to_vec(&args).unwrap()
    };
    let normal = plain
        .submit(&format!("build:{job}"), "u-normal", zuul("u-normal", 0).into())
        .await
        .unwrap();
    let big = plain
        .submit(&format!("build:{job}"), "u-big", zuul("u-big", pad).into())
        .await
        .unwrap();
    let (data, end) = tokio::time::timeout(SETTLE, big.wait()).await.expect("the oversized job ends");
    assert!(matches!(end, JobEvent::Fail | JobEvent::Exception(_)), "{end:?}");
    let report: serde_json::Value = serde_json::from_slice(data.last().expect("a refusal report")).unwrap();
    assert_eq!(report["result"], json!("ERROR"), "{report}");
    let why = report.to_string();
    assert!(why.contains("maxPacketSize"), "the reason names the limit: {why}");
    if limit.is_none() {
        assert!(why.contains("16777216"), "the default limit: {why}");
    }
    let (data, end) = tokio::time::timeout(SETTLE, normal.wait()).await.expect("the normal job ends");
    assert!(matches!(end, JobEvent::Complete(_)), "{end:?}");
    let last: serde_json::Value = serde_json::from_slice(data.last().unwrap()).unwrap();
    assert_eq!(last["result"], json!("SUCCESS"));
    assert_eq!(w.fake.calls().start, 1, "the normal build started once, the oversized one never");
    // Still connected and taking jobs: one more build runs.
    let again = plain
        .submit(&format!("build:{job}"), "u-after", zuul("u-after", 0).into())
        .await
        .unwrap();
    let (_, end) = tokio::time::timeout(SETTLE, again.wait()).await.expect("the next job ends");
    assert!(matches!(end, JobEvent::Complete(_)), "{end:?}");
    assert_eq!(w.fake.calls().start, 2);
}
}

on_both_servers! {
async fn a_stop_by_uuid_reaches_a_build_whose_announcement_never_arrived(server: Server) {
    // What the executor sends when a start failed after its job went out: it knows the
    // job's uuid, not the launcher nor the build number.
    let job = unique("by-uuid");
    let w = RunningWorker::start(server, &job, fake(Script::run_until_stopped()), |_| {}).await;
    let client = GearmanClient::connect(&server.addr(), ClientOptions::default())
        .await
        .unwrap();
    let id = build_id();
    let uuid = format!("lost-announcement-{id}");
    let mut args = build(id).to_json_with_token();
    for (k, v) in [
        ("ZUUL_UUID", uuid.as_str()),
        ("ZUUL_PROJECT", "org/repo"),
        ("ZUUL_PIPELINE", "check"),
        ("ZUUL_REF", "refs/zuul/master/Z1"),
        ("ZUUL_COMMIT", "0123456"),
    ] {
        args[k] = json!(v);
    }
    let mut submitted = client
        .submit(
            &format!("build:{job}"),
            &uuid,
            serde_json::to_vec(&args).unwrap().into(),
        )
        .await
        .unwrap();
    loop {
        match submitted.events.recv().await {
            Some(JobEvent::Status { .. }) => break,
            Some(e) if e.is_terminal() => panic!("the build ended: {e:?}"),
            Some(_) => {}
            None => panic!("the build's job ended"),
        }
    }
    let stop = |body: serde_json::Value| {
        let (client, m) = (&client, w.worker.manager().to_string());
        async move {
            client
                .submit(
                    &format!("stop:{m}"),
                    "",
                    serde_json::to_vec(&body).unwrap().into(),
                )
                .await
                .unwrap()
                .wait()
                .await
                .1
        }
    };
    let JobEvent::Complete(answer) = stop(json!({"uuid": "nobody-runs-this"})).await else {
        panic!("a stop of an unknown uuid is answered")
    };
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer, json!({"uuid": "nobody-runs-this", "stopped": false, "message": "no such running build on this launcher"}));
    let JobEvent::Complete(answer) = stop(json!({"uuid": uuid})).await else {
        panic!("a stop by uuid is answered")
    };
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer, json!({"uuid": uuid, "stopped": true}));
    wait_on_fake(&w.fake, id, |s| s.phase == Phase::Canceled, "Canceled").await;
    let JobEvent::Exception(x) = stop(json!({"uuid": ""})).await else {
        panic!("an empty uuid is refused")
    };
    let x = LauncherException::from_data(&x);
    assert_eq!(x.fields[0].field, "uuid", "{x:?}");
}
}
