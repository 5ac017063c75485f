//! start / status / verify / stop against the stateful fake Jenkins.

mod common;

use std::collections::BTreeMap;

use common::*;
use executor_base::{ErrorKind, Executor, FailureReason, Phase, Verdict};
use executor_jenkins::fake::{FAKE_VERSION, FakeJenkins, FakeOptions};

#[tokio::test]
async fn start_creates_the_job_and_queues_one_build_with_parameters() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "GET /crumbIssuer/api/json",
            "POST /createItem",
            "POST /job/SD-42/buildWithParameters"
        ]
    );
    let reqs = j.requests();
    assert_eq!(reqs[1].query, "name=SD-42");
    assert!(reqs[1].with_crumb && reqs[2].with_crumb);

    let config = j.job_config("SD-42").unwrap();
    assert!(
        config.contains(
            "<hudson.model.PasswordParameterDefinition>\n          <name>SD_TOKEN</name>"
        )
    );
    assert!(
        !config.contains(BUILD_TOKEN),
        "the token is a parameter, not part of the job"
    );
    assert!(config.contains("<assignedNode>screwdriver</assignedNode>"));

    let items = j.queue_items("SD-42");
    assert_eq!(items.len(), 1);
    let expected: BTreeMap<String, String> = [
        ("SD_BUILD_ID", "42"),
        ("SD_API", "http://127.0.0.1:9/api"),
        ("SD_STORE", "http://localhost:8081/"),
        ("SD_UI", "http://localhost:4200/"),
        ("SD_CONTAINER", "node:22"),
        ("SD_BUILD_TIMEOUT", "90"),
        ("SD_TOKEN", BUILD_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        items[0].params, expected,
        "every parameter is declared by the job and arrives"
    );
    assert_eq!(e.stats().builds.started, 1);
}

#[tokio::test]
async fn status_follows_the_queue_item_to_the_build() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.set_why("SD-42", "There are no nodes with the label ‘screwdriver’");
    let s = status(&e, 42).await;
    assert_eq!(s.phase, Phase::Pending);
    assert_eq!(s.message, "There are no nodes with the label ‘screwdriver’");
    assert_eq!(e.verify(&build(42)).await.unwrap(), Verdict::Waiting);

    assert_eq!(j.start_queued("SD-42"), Some(1));
    let s = status(&e, 42).await;
    assert_eq!(s.phase, Phase::Running, "{s}");
    assert_eq!(s.message, "running as SD-42 #1");
    assert_eq!(e.verify(&build(42)).await.unwrap().to_string(), "");

    assert!(j.finish("SD-42", 1, "SUCCESS"));
    assert_eq!(status(&e, 42).await.phase, Phase::Succeeded);
    // A final status is remembered: no more requests for it.
    let n = j.request_count();
    assert_eq!(status(&e, 42).await.phase, Phase::Succeeded);
    assert_eq!(j.request_count(), n);
    let counts = e.stats().builds;
    assert_eq!(
        (
            counts.started,
            counts.running,
            counts.finished,
            counts.failed
        ),
        (1, 0, 1, 0)
    );
}

#[tokio::test]
async fn results_map_onto_statuses_and_verdicts() {
    let (j, e) = setup().await;
    let cases = [
        ("SUCCESS", Phase::Succeeded, None),
        ("FAILURE", Phase::Failed, Some(FailureReason::NonZeroExit)),
        ("UNSTABLE", Phase::Failed, Some(FailureReason::NonZeroExit)),
        ("ABORTED", Phase::Canceled, None),
        (
            "NOT_BUILT",
            Phase::Failed,
            Some(FailureReason::StartRefused),
        ),
    ];
    for (i, (result, phase, reason)) in cases.into_iter().enumerate() {
        let id = 100 + i as u64;
        let job = format!("SD-{id}");
        e.start(&build(id)).await.unwrap();
        j.start_queued(&job).unwrap();
        assert_eq!(status(&e, id).await.phase, Phase::Running);
        assert!(j.finish(&job, 1, result));
        let s = status(&e, id).await;
        assert_eq!((s.phase, s.reason()), (phase, reason), "{result}: {s}");
        let v = e.verify(&build(id)).await.unwrap();
        assert_eq!(v.is_failure(), phase == Phase::Failed, "{result}: {v:?}");
        if phase == Phase::Failed {
            assert_eq!(
                v.to_string(),
                format!("SD-{id} #1 finished with {result}")
                    .replace("finished with NOT_BUILT", "was not built",)
            );
            assert_eq!(
                s.failure.unwrap().evidence,
                Some(format!("Jenkins result {result}"))
            );
        }
    }
    assert_eq!(e.stats().builds.failed, 3);
}

#[tokio::test]
async fn the_jobs_own_timeout_reads_as_timed_out() {
    let (j, e) = setup().await;
    let b = executor_base::StartConfig::builder(7, "http://127.0.0.1:9", "node:22", BUILD_TOKEN)
        .annotation("screwdriver.cd/timeout", 30)
        .build()
        .unwrap();
    e.start(&b).await.unwrap();
    let config = j.job_config("SD-7").unwrap();
    assert!(
        config.contains("<timeoutMinutes>35</timeoutMinutes>"),
        "build timeout + 5 min margin"
    );
    assert_eq!(j.queue_items("SD-7")[0].params["SD_BUILD_TIMEOUT"], "30");
    j.start_queued("SD-7").unwrap();
    assert!(j.fire_job_timeout("SD-7", 1));
    let s = wait_for_phase(&e, 7, Phase::TimedOut).await;
    assert!(s.message.contains("timeout of 35 minutes"), "{s}");
}

#[tokio::test]
async fn stop_cancels_a_queued_item() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.clear_requests();
    e.stop(&stop_cfg(42)).await.unwrap();
    assert_eq!(calls(&j), ["POST /queue/cancelItem"]);
    assert_eq!(j.requests()[0].query, "id=1");
    assert!(j.queue_items("SD-42")[0].cancelled);
    wait_for_phase(&e, 42, Phase::Canceled).await;
    j.clear_requests();
    e.stop(&stop_cfg(42)).await.unwrap();
    assert_eq!(j.request_count(), 0, "a second stop has nothing to do");
    assert!(j.builds("SD-42").is_empty());
    let counts = e.stats().builds;
    assert_eq!((counts.running, counts.finished), (0, 1));
}

#[tokio::test]
async fn stop_aborts_a_running_build() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.start_queued("SD-42").unwrap();
    assert_eq!(status(&e, 42).await.phase, Phase::Running);
    j.clear_requests();
    e.stop(&stop_cfg(42)).await.unwrap();
    assert_eq!(calls(&j), ["POST /job/SD-42/1/stop"]);
    let s = wait_for_phase(&e, 42, Phase::Canceled).await;
    assert_eq!(s.message, "SD-42 #1 was stopped");
    e.stop(&stop_cfg(42)).await.unwrap();
    assert_eq!(j.builds("SD-42")[0].result.as_deref(), Some("ABORTED"));
}

#[tokio::test]
async fn a_forgotten_queue_item_is_followed_through_the_job() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.start_queued("SD-42").unwrap();
    assert_eq!(j.forget_left_items("SD-42"), 1);
    j.clear_requests();
    let s = status(&e, 42).await;
    assert_eq!(s.phase, Phase::Running, "{s}");
    assert_eq!(
        calls(&j),
        ["GET /queue/item/1/api/json", "GET /job/SD-42/api/json"]
    );
    j.finish("SD-42", 1, "SUCCESS");
    assert_eq!(status(&e, 42).await.phase, Phase::Succeeded);
}

#[tokio::test]
async fn unknown_builds_stop_ok_and_have_no_status() {
    let (j, e) = setup().await;
    e.stop(&stop_cfg(9)).await.unwrap();
    assert_eq!(calls(&j), ["GET /job/SD-9/api/json"]);
    let err = e.status(&stop_cfg(9)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "jenkins status: not_found: build 9 not found"
    );
    assert_eq!(
        e.verify(&build(9)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_job_deleted_behind_our_back_is_lost() {
    let (j, e) = setup().await;
    // Running.
    e.start(&build(1)).await.unwrap();
    j.start_queued("SD-1").unwrap();
    assert_eq!(status(&e, 1).await.phase, Phase::Running);
    assert!(j.delete_job("SD-1"));
    let s = status(&e, 1).await;
    assert_eq!(s.phase, Phase::Lost, "{s}");
    let f = s.failure.clone().unwrap();
    assert_eq!(
        (f.reason, f.build_started),
        (FailureReason::InfrastructureLost, Some(true))
    );
    assert!(e.verify(&build(1)).await.unwrap().is_failure());
    e.stop(&stop_cfg(1)).await.unwrap();
    assert_eq!(
        status(&e, 1).await.phase,
        Phase::Lost,
        "stop does not turn lost into canceled"
    );

    // Queued: deleting the job cancels its queue item, which must not read as a stop.
    e.start(&build(2)).await.unwrap();
    assert_eq!(status(&e, 2).await.phase, Phase::Pending);
    assert!(j.delete_job("SD-2"));
    let s = status(&e, 2).await;
    assert_eq!(s.phase, Phase::Lost, "{s}");
    assert_eq!(s.failure.unwrap().build_started, Some(false));

    // Never polled before the deletion.
    e.start(&build(3)).await.unwrap();
    j.start_queued("SD-3").unwrap();
    assert!(j.delete_job("SD-3"));
    assert_eq!(status(&e, 3).await.phase, Phase::Lost);
    assert_eq!(e.stats().builds.by_reason.get("lost"), Some(&3));
}

#[tokio::test]
async fn a_new_executor_reads_builds_from_jenkins() {
    let (j, first) = setup().await;
    first.start(&build(5)).await.unwrap();
    let second = j.executor_builder().build().await.unwrap();
    assert_eq!(status(&second, 5).await.phase, Phase::Pending);
    j.start_queued("SD-5").unwrap();
    assert_eq!(status(&second, 5).await.phase, Phase::Running);
    second.stop(&stop_cfg(5)).await.unwrap();
    wait_for_phase(&second, 5, Phase::Canceled).await;
    wait_for_phase(&first, 5, Phase::Canceled).await;
    // Stopping a queued build through an executor that did not start it.
    first.start(&build(6)).await.unwrap();
    let third = j.executor_builder().build().await.unwrap();
    third.stop(&stop_cfg(6)).await.unwrap();
    assert!(j.queue_items("SD-6")[0].cancelled);
}

#[tokio::test]
async fn starting_a_live_build_again_is_already_exists() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    let err = e.start(&build(42)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("SD-42"));
    // An executor without memory of it asks Jenkins.
    let other = j.executor_builder().build().await.unwrap();
    assert_eq!(
        other.start(&build(42)).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    j.start_queued("SD-42").unwrap();
    assert_eq!(
        other.start(&build(42)).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(j.queue_items("SD-42").len(), 1, "never queued twice");
    assert_eq!(j.builds("SD-42").len(), 1);
}

#[tokio::test]
async fn starting_a_finished_build_again_updates_its_job() {
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.start_queued("SD-42").unwrap();
    j.finish("SD-42", 1, "FAILURE");
    assert_eq!(status(&e, 42).await.phase, Phase::Failed);
    j.clear_requests();
    e.start(&build(42)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "POST /createItem",
            "GET /job/SD-42/api/json",
            "POST /job/SD-42/config.xml",
            "POST /job/SD-42/buildWithParameters"
        ]
    );
    assert_eq!(
        status(&e, 42).await.phase,
        Phase::Pending,
        "the new run, not the old result"
    );
    assert_eq!(j.start_queued("SD-42"), Some(2));
    assert_eq!(status(&e, 42).await.message, "running as SD-42 #2");
}

#[tokio::test]
async fn a_job_not_created_by_us_is_left_alone() {
    let (j, e) = setup().await;
    let theirs = "<project><description>someone's job</description></project>";
    j.put_job("SD-42", theirs);
    let err = e.start(&build(42)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("not created by sdx"), "{err}");
    assert_eq!(j.job_config("SD-42").unwrap(), theirs);
    assert!(j.queue_items("SD-42").is_empty());
}

#[tokio::test]
async fn path_prefix_and_job_prefix_are_honoured() {
    let j = FakeJenkins::start_with(FakeOptions {
        path_prefix: "/jenkins".into(),
        ..FakeOptions::default()
    })
    .await;
    let e = j
        .executor_builder()
        .with_job_prefix("ci.build-")
        .build()
        .await
        .unwrap();
    assert_eq!(e.base_url().path(), "/jenkins/");
    e.start(&build(5)).await.unwrap();
    assert_eq!(j.job_names(), ["ci.build-5"]);
    j.start_queued("ci.build-5").unwrap();
    assert_eq!(status(&e, 5).await.phase, Phase::Running);
    e.stop(&stop_cfg(5)).await.unwrap();
    assert!(j.requests().iter().all(|r| r.path.starts_with("/jenkins/")));
    assert!(calls(&j).contains(&"POST /jenkins/job/ci.build-5/1/stop".to_string()));
    // Without the prefix the same fake has nothing.
    let wrong = j
        .executor_builder()
        .with_path_prefix("")
        .build()
        .await
        .unwrap();
    assert_eq!(
        wrong.status(&stop_cfg(5)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_build_takes_at_most_seven_requests_from_start_to_finished() {
    let (j, e) = setup().await;
    e.start(&build(1)).await.unwrap(); // fetches and caches the crumb
    j.clear_requests();
    e.start(&build(2)).await.unwrap();
    assert_eq!(status(&e, 2).await.phase, Phase::Pending);
    j.start_queued("SD-2").unwrap();
    assert_eq!(status(&e, 2).await.phase, Phase::Running);
    j.finish("SD-2", 1, "SUCCESS");
    assert_eq!(status(&e, 2).await.phase, Phase::Succeeded);
    assert_eq!(status(&e, 2).await.phase, Phase::Succeeded);
    assert_eq!(
        calls(&j),
        [
            "POST /createItem",
            "POST /job/SD-2/buildWithParameters",
            "GET /queue/item/2/api/json",
            "GET /queue/item/2/api/json",
            "GET /job/SD-2/1/api/json",
            "GET /job/SD-2/1/api/json",
            // Once, when it ended SUCCESS: the launch handshake in the console's tail.
            "GET /job/SD-2/1/consoleText",
        ]
    );
    let stats = e.stats();
    assert_eq!(
        stats.requests.total, 9,
        "engine calls: 2 starts + 4 status reads + 1 console read"
    );
    assert!(stats.breaker.is_closed);
}

#[tokio::test]
async fn the_jenkins_version_is_read_with_the_credentials() {
    let (j, e) = setup().await;
    assert_eq!(e.jenkins_version().await.unwrap(), FAKE_VERSION);
    let wrong = j
        .executor_builder()
        .with_credentials("screwdriver", "nope")
        .build()
        .await
        .unwrap();
    let err = wrong.jenkins_version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert_eq!(err.operation(), "version");
}

/// Native mode: a job Jenkins finished `SUCCESS` whose launcher never wrote the launch
/// handshake to the console (upstream's launcher prints its usage on `--token-file` and
/// exits 0, so the job script ends well) is `Failed` with `launchProtocol`; the reference
/// launcher's handshake, followed by the script's cleanup output, is `Succeeded`.
#[tokio::test]
async fn success_without_the_handshake_in_the_console_is_launch_protocol() {
    let (j, e) = setup().await;
    j.set_launcher_handshake(false);
    e.start(&build(31)).await.unwrap();
    j.start_queued("SD-31").unwrap();
    j.finish("SD-31", 1, "SUCCESS");
    let s = status(&e, 31).await;
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert_eq!(s.reason(), Some(FailureReason::LaunchProtocol), "{s:?}");
    assert!(
        s.message.contains("SD-31 #1 ended SUCCESS"),
        "{}",
        s.message
    );
    assert!(
        s.message.contains("localhost/sdx-launcher:"),
        "{}",
        s.message
    );
    assert!(e.verify(&build(31)).await.unwrap().is_failure());
    // Remembered: asked again, no console read.
    j.clear_requests();
    assert_eq!(
        status(&e, 31).await.reason(),
        Some(FailureReason::LaunchProtocol)
    );
    assert!(j.requests().is_empty(), "{:?}", calls(&j));

    // The reference launcher after 200 KiB of step output, then cleanup lines.
    j.set_launcher_handshake(true);
    e.start(&build(32)).await.unwrap();
    j.start_queued("SD-32").unwrap();
    j.append_console("SD-32", 1, &"step output line\n".repeat(12_000));
    j.finish("SD-32", 1, "SUCCESS");
    j.append_console("SD-32", 1, "+ docker rm --force SD-32-build SD-32-init\n");
    assert!(j.console("SD-32", 1).unwrap().len() > 200_000);
    assert_eq!(status(&e, 32).await.phase, Phase::Succeeded);

    // A FAILURE stays what Jenkins says (no console read needed).
    e.start(&build(33)).await.unwrap();
    j.start_queued("SD-33").unwrap();
    j.finish("SD-33", 1, "FAILURE");
    j.clear_requests();
    assert_eq!(status(&e, 33).await.phase, Phase::Failed);
    assert!(!calls(&j).iter().any(|c| c.ends_with("consoleText")));
}

/// Screwdriver mode: upstream's launcher exits 0 whatever happened, so `SUCCESS` is all
/// that can be known; the console is not read.
#[tokio::test]
async fn screwdriver_mode_keeps_success_without_a_handshake() {
    let j = FakeJenkins::start().await;
    let e = j
        .executor_builder()
        .with_launch_mode(executor_base::LaunchMode::Screwdriver)
        .build()
        .await
        .unwrap();
    j.set_launcher_handshake(false);
    e.start(&build(34)).await.unwrap();
    j.start_queued("SD-34").unwrap();
    j.finish("SD-34", 1, "SUCCESS");
    j.clear_requests();
    assert_eq!(status(&e, 34).await.phase, Phase::Succeeded);
    assert!(!calls(&j).iter().any(|c| c.ends_with("consoleText")));
}

#[tokio::test]
async fn timings_come_from_the_queue_item_and_the_build() {
    let (j, e) = setup().await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    e.start(&build(42)).await.unwrap();
    // Queued: the queue item's inQueueSince, nothing else yet.
    let t = e.timings(&stop_cfg(42)).await.unwrap().unwrap();
    let accepted = t.accepted.expect("inQueueSince");
    assert!(accepted >= before, "{t:?}");
    assert_eq!((t.scheduled, t.running, t.finished), (None, None, None));

    assert_eq!(j.start_queued("SD-42"), Some(1));
    let t = e.timings(&stop_cfg(42)).await.unwrap().unwrap();
    let running = t.running.expect("the build's timestamp");
    assert_eq!(t.scheduled, Some(running));
    assert!(running >= accepted && t.finished.is_none(), "{t:?}");

    // The build ran 3 s (its timestamp moved back), then finished.
    assert!(j.backdate("SD-42", 1, std::time::Duration::from_secs(3)));
    assert!(j.finish("SD-42", 1, "SUCCESS"));
    assert_eq!(status(&e, 42).await.phase, Phase::Succeeded);
    let t = e.timings(&stop_cfg(42)).await.unwrap().unwrap();
    let ran = t.finished.unwrap() - t.running.unwrap();
    assert!(
        ran >= chrono::Duration::seconds(3) && ran < chrono::Duration::seconds(30),
        "timestamp + duration: {t:?}"
    );
    assert_eq!(t.running, Some(running - chrono::Duration::seconds(3)));
    assert_eq!(t.peak_memory_bytes, None, "Jenkins does not account memory");
    // The end is known: no more requests for it.
    let n = j.request_count();
    assert_eq!(e.timings(&stop_cfg(42)).await.unwrap(), Some(t));
    assert_eq!(j.request_count(), n);

    // A build Jenkins never had has none.
    assert_eq!(e.timings(&stop_cfg(7)).await.unwrap(), None);
}
