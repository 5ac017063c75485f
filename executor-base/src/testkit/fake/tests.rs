//! The fake's own tests: scripts, faults and call counts.

use super::*;
use crate::status::FailureReason;
use crate::status::Phase;

fn cfg(id: u64) -> StartConfig {
    StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", "secret-token")
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn default_script_runs_until_stopped() {
    let f = FakeExecutor::new();
    let b = cfg(1);
    f.start(&b).await.unwrap();
    assert_eq!(f.status(&b.to_stop()).await.unwrap().phase, Phase::Pending);
    tokio::time::sleep(STEP).await;
    assert_eq!(f.status(&b.to_stop()).await.unwrap().phase, Phase::Pulling);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(f.status(&b.to_stop()).await.unwrap().phase, Phase::Running);
    assert_eq!(f.live_builds(), vec![b.build_id]);
    f.stop(&b.to_stop()).await.unwrap();
    assert_eq!(f.status(&b.to_stop()).await.unwrap().phase, Phase::Canceled);
    let s = f.stats();
    assert_eq!(
        (s.builds.started, s.builds.running, s.builds.finished),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn timers_are_recorded_armed_and_disarmed() {
    let fake = FakeExecutor::new();
    let id = BuildId::new(9).unwrap();
    let job = crate::ids::JobId::new(2).unwrap();
    let now = chrono::Utc::now();
    let t = |status| TimerConfig::new(id, job, status, now, Default::default());
    fake.start_timer(&t(ApiBuildStatus::Queued)).await.unwrap();
    assert!(fake.armed_timers().is_empty(), "only RUNNING arms a timer");
    fake.start_timer(&t(ApiBuildStatus::Running)).await.unwrap();
    assert_eq!(fake.armed_timers().len(), 1);
    assert_eq!(fake.armed_timers()[0].build_id, id);
    let stop = StartConfig::builder(9, "http://127.0.0.1:9", "busybox:latest", "t")
        .build()
        .unwrap()
        .to_stop();
    fake.stop_timer(&stop).await.unwrap();
    assert!(fake.armed_timers().is_empty());
    assert_eq!(fake.calls().total(), 0, "timers are not engine calls");
}

#[tokio::test(start_paused = true)]
async fn scripted_failures() {
    let f = FakeExecutor::new();
    let (pull, oom, lost) = (cfg(1), cfg(2), cfg(3));
    f.script_for(pull.build_id, Script::image_pull_failure());
    f.script_for(oom.build_id, Script::oom_exit_zero(Duration::from_secs(1)));
    f.script_for(lost.build_id, Script::lost_after(Duration::from_secs(1)));
    for b in [&pull, &oom, &lost] {
        f.start(b).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = f.status(&pull.to_stop()).await.unwrap();
    assert_eq!(s.reason(), Some(FailureReason::ImagePull));
    assert!(f.verify(&pull).await.unwrap().is_failure());
    let s = f.status(&oom.to_stop()).await.unwrap();
    assert_eq!(
        (s.phase, s.exit_code, s.reason()),
        (Phase::Failed, Some(0), Some(FailureReason::OutOfMemory))
    );
    assert_eq!(f.status(&lost.to_stop()).await.unwrap().phase, Phase::Lost);
    let st = f.stats();
    assert_eq!(st.builds.failed, 3);
    assert_eq!(st.builds.by_reason["lost"], 1);
    // Stopping finished builds is fine and changes nothing.
    f.stop(&lost.to_stop()).await.unwrap();
    assert_eq!(f.status(&lost.to_stop()).await.unwrap().phase, Phase::Lost);
}

#[tokio::test]
async fn refused_start_creates_nothing() {
    let f = FakeExecutor::new();
    f.refuse_start(ErrorKind::PermissionDenied);
    let b = cfg(1);
    let e = f.start(&b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(!e.is_temporary());
    assert_eq!(
        f.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(f.stats().builds.started, 0);
    f.clear_faults();
    f.start(&b).await.unwrap();
    assert_eq!(f.calls().start, 2);
    assert_eq!(f.stats().requests.failure, 2); // the refusal and the NotFound
}

#[tokio::test]
async fn transient_errors_then_success_and_already_exists() {
    let f = FakeExecutor::new();
    let b = cfg(1);
    f.fail_next(FakeOp::Status, 2, ErrorKind::RateLimited);
    f.start(&b).await.unwrap();
    for _ in 0..2 {
        let e = f.status(&b.to_stop()).await.unwrap_err();
        assert!(e.is_temporary() && e.kind() == ErrorKind::RateLimited);
    }
    f.status(&b.to_stop()).await.unwrap();
    assert_eq!(
        f.start(&b).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    f.stop(&b.to_stop()).await.unwrap();
    f.start(&b).await.unwrap(); // a stopped build id may start again
}

#[tokio::test(start_paused = true)]
async fn slow_engine_and_manual_control() {
    let f = FakeExecutor::new();
    f.set_latency(Duration::from_secs(2));
    let b = cfg(1);
    f.script_for(b.build_id, Script::manual());
    let t0 = Instant::now();
    f.start(&b).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2));
    f.clear_faults();
    f.advance(b.build_id).unwrap();
    f.advance(b.build_id).unwrap();
    assert_eq!(f.advance(b.build_id).unwrap().phase, Phase::Succeeded);
    assert!(f.advance(b.build_id).is_err());
    assert!(f.set_status(b.build_id, BuildStatus::running()).is_err());
    assert_eq!(
        f.gc(true).await.unwrap().expired,
        vec!["build/1".to_string()]
    );
    f.cleanup().await.unwrap();
    assert_eq!(
        f.status(&b.to_stop()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
#[should_panic(expected = "succeeded cannot become running")]
fn scripts_follow_the_state_machine() {
    let _ = Script::starting_with(BuildStatus::succeeded()).then_manual(BuildStatus::running());
}
