//! The defects the review of this backend against Jenkins core's source found
//! (`shared/research/jenkins-real-controller.md`, §5a D1–D13), each pinned against the
//! faithful fake: what a real controller answers, and that the executor copes with it.
//! The script (D1, D9) is tested in `job_xml.rs`, where it is run as a Jenkins agent runs it.

mod common;

use std::time::Duration;

use common::*;
use executor_base::{ErrorKind, Executor, Phase, StartConfig};
use executor_jenkins::TimeoutBackstop;
use executor_jenkins::fake::{FakeJenkins, FakeOptions, Fault, FaultAction};

fn recorded(j: &FakeJenkins) -> Vec<String> {
    j.requests()
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

// --- D3: cancelItem answers 500 for an item that left the queue --------------------------

#[tokio::test]
async fn stop_of_a_build_that_just_left_the_queue_stops_it_without_retrying() {
    // core Queue.doCancelItem: 500 "Could not cancel run" for a LeftItem (≤ 5 min).
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.start_queued("SD-42").unwrap(); // Jenkins started it before the executor looked
    j.clear_requests();
    e.stop(&stop_cfg(42)).await.unwrap();
    assert_eq!(
        recorded(&j),
        [
            "POST /queue/cancelItem -> 500",
            "GET /queue/item/1/api/json -> 200",
            "POST /job/SD-42/1/stop -> 302",
        ],
        "no blind retry of the 500"
    );
    let stats = e.stats();
    assert_eq!(
        stats.requests.failure, 0,
        "a refused cancel is no engine failure"
    );
    assert!(stats.breaker.is_closed);
    wait_for_phase(&e, 42, Phase::Canceled).await;
}

#[tokio::test]
async fn stop_waits_for_the_build_a_left_item_is_becoming() {
    // core Queue.LeftItem.getExecutable: null until the executor thread created the Run.
    let (j, e) = setup_with(FakeOptions {
        executable_delay: Duration::from_millis(100),
        ..FakeOptions::default()
    })
    .await;
    e.start(&build(42)).await.unwrap();
    j.start_queued("SD-42").unwrap();
    assert!(j.builds("SD-42").is_empty(), "the Run does not exist yet");
    e.stop(&stop_cfg(42)).await.unwrap();
    let b = &j.builds("SD-42")[0];
    assert!(
        b.aborting || b.result.as_deref() == Some("ABORTED"),
        "{b:?}"
    );
    wait_for_phase(&e, 42, Phase::Canceled).await;
}

#[tokio::test]
async fn stop_without_the_cancel_permission_says_so() {
    // core Queue.doCancelItem: 422 when the user lacks Item.CANCEL.
    let (j, e) = setup().await;
    e.start(&build(42)).await.unwrap();
    j.deny("Job/Cancel");
    let err = e.stop(&stop_cfg(42)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("422"), "{err}");
    assert!(!j.queue_items("SD-42")[0].cancelled);
    assert_eq!(
        status(&e, 42).await.phase,
        Phase::Pending,
        "not reported stopped"
    );
}

// --- D4: redirects are not success ------------------------------------------------------

#[tokio::test]
async fn a_redirected_create_is_an_error_naming_the_status() {
    // core ItemGroupMixIn.createTopLevelItem answers an XML createItem with 200 only; a
    // 302 comes from something in between (an http→https or login redirect).
    let (j, e) = setup().await;
    j.inject(Fault::on(
        "POST",
        "/createItem",
        FaultAction::Respond {
            status: 302,
            body: String::new(),
            headers: vec![(
                "Location".into(),
                "https://jenkins.example/createItem".into(),
            )],
        },
    ));
    let err = e.start(&build(1)).await.unwrap_err();
    assert!(err.to_string().contains("302"), "{err}");
    assert!(
        err.to_string().contains("https://jenkins.example/"),
        "{err}"
    );
    assert!(!err.is_temporary());
    assert!(j.queue_items("SD-1").is_empty());
}

#[tokio::test]
async fn a_refused_schedule_is_an_error_and_leaves_nothing() {
    // core ParameterizedJobMixIn.doBuildWithParameters: 302 to the job when schedule2
    // gave no item (a QueueDecisionHandler refused it).
    let (j, e) = setup().await;
    j.refuse_next_schedules(1);
    let err = e.start(&build(1)).await.unwrap_err();
    assert!(err.to_string().contains("302"), "{err}");
    assert!(!err.is_temporary());
    assert!(
        j.job_names().is_empty(),
        "the job of the refused start is gone"
    );
    assert_eq!(
        e.status(&stop_cfg(1)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_merged_trigger_follows_the_existing_item() {
    // core: 303 to the existing item when identical parameters are already queued (2.308).
    let (j, e) = setup().await;
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::Respond {
            status: 303,
            body: String::new(),
            headers: vec![("Location".into(), format!("{}/queue/item/77/", j.url()))],
        },
    ));
    e.start(&build(1)).await.unwrap();
    j.clear_requests();
    let _ = e.status(&stop_cfg(1)).await;
    assert_eq!(
        calls(&j)[0],
        "GET /queue/item/77/api/json",
        "the item it was merged into"
    );
    // A 201 or 303 without a queue item Location is not taken on trust: Jenkins is asked
    // whether the build was queued before anything else (here it was not: sent again).
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::Respond {
            status: 201,
            body: String::new(),
            headers: vec![],
        },
    ));
    j.clear_requests();
    e.start(&build(2)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "POST /createItem",
            "POST /job/SD-2/buildWithParameters",
            "GET /job/SD-2/api/json",
            "POST /job/SD-2/buildWithParameters"
        ]
    );
    assert_eq!(j.queue_items("SD-2").len(), 1);
}

// --- D6: the crumb-rejection check ------------------------------------------------------

#[tokio::test]
async fn a_permission_403_is_not_read_as_a_crumb_rejection() {
    // Every layout page carries data-crumb-header (layout.jelly); a crumb rejection is
    // CrumbFilter's sendError(403, "No valid crumb was included in the request").
    let (j, e) = setup().await;
    e.start(&build(1)).await.unwrap(); // the crumb is cached
    j.deny("Job/Build");
    j.clear_requests();
    let err = e.start(&build(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("missing the Job/Build permission"),
        "{err}"
    );
    let triggers = calls(&j)
        .iter()
        .filter(|c| c.ends_with("/buildWithParameters"))
        .count();
    assert_eq!(triggers, 1, "not resent: {:?}", calls(&j));
    assert_eq!(j.crumbs_issued(), 1, "no crumb refetch");
}

// --- D7: a 409 on trigger is not AlreadyExists -----------------------------------------

#[tokio::test]
async fn a_job_that_is_not_buildable_is_not_already_exists() {
    // core ParameterizedJobMixIn: 409 "<job> is not buildable" (a disabled job).
    let (j, e) = setup().await;
    j.inject(Fault::on(
        "POST",
        "/buildWithParameters",
        FaultAction::Respond {
            status: 409,
            body: "<html><body><h2>HTTP ERROR 409 java.io.IOException: SD-1 is not buildable</h2></body></html>".into(),
            headers: vec![],
        },
    ));
    let err = e.start(&build(1)).await.unwrap_err();
    assert_ne!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("not buildable"), "{err}");
    assert!(j.job_names().is_empty());
}

// --- D5: the engine-side timeout never vanishes silently -------------------------------

#[tokio::test]
async fn without_the_timeout_plugin_the_executor_stops_an_overdue_build() {
    // core RobustCollectionConverter drops the build-timeout wrapper when the plugin is
    // missing (createItem still answers 200): nothing on Jenkins' side ends the build.
    let (j, e) = setup_with(FakeOptions {
        plugins: vec![],
        ..FakeOptions::default()
    })
    .await;
    let b = StartConfig::builder(5, "http://127.0.0.1:9", "node:22", BUILD_TOKEN)
        .annotation("screwdriver.cd/timeout", 30)
        .build()
        .unwrap();
    assert_eq!(e.timeout_backstop(), TimeoutBackstop::ExecutorPluginMissing);
    e.start(&b).await.unwrap();
    assert!(!j.has_job_timeout("SD-5"), "Jenkins dropped the wrapper");
    assert_eq!(j.old_data("SD-5").len(), 1);
    j.start_queued("SD-5").unwrap();
    assert_eq!(status(&e, 5).await.phase, Phase::Running);
    j.backdate("SD-5", 1, Duration::from_secs(34 * 60));
    assert_eq!(
        status(&e, 5).await.phase,
        Phase::Running,
        "not yet past 30 + 5 min"
    );
    j.backdate("SD-5", 1, Duration::from_secs(2 * 60));
    let s = wait_for_phase(&e, 5, Phase::TimedOut).await;
    assert!(s.message.contains("35 minutes"), "{s}");
    let build = &j.builds("SD-5")[0];
    assert_eq!(build.result.as_deref(), Some("ABORTED"));
    assert!(
        build
            .description
            .as_deref()
            .unwrap_or("")
            .starts_with("sdx-timeout:"),
        "the marker is on the build, for any later reader: {build:?}"
    );
    // A new executor (a restarted server) reads the same outcome.
    let again = j.executor_builder().build().await.unwrap();
    assert_eq!(status(&again, 5).await.phase, Phase::TimedOut);
}

#[tokio::test]
async fn the_timeout_plugin_can_be_required() {
    let j = FakeJenkins::start_with(FakeOptions {
        plugins: vec![],
        ..FakeOptions::default()
    })
    .await;
    let err = j
        .executor_builder()
        .with_option("requireTimeoutPlugin", "true")
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("requireTimeoutPlugin"), "{err}");
    assert!(err.to_string().contains("build-timeout"), "{err}");
    j.install_plugin("build-timeout");
    j.executor_builder()
        .with_option("requireTimeoutPlugin", "true")
        .build()
        .await
        .unwrap();
}

/// A started, running build 5 with a 30 min build timeout (job timeout 35 min), its start
/// time moved back by `minutes`.
async fn overdue(j: &FakeJenkins, e: &executor_jenkins::JenkinsExecutor, minutes: u64) {
    let b = StartConfig::builder(5, "http://127.0.0.1:9", "node:22", BUILD_TOKEN)
        .annotation("screwdriver.cd/timeout", 30)
        .build()
        .unwrap();
    e.start(&b).await.unwrap();
    j.start_queued("SD-5").unwrap();
    assert!(j.backdate("SD-5", 1, Duration::from_secs(minutes * 60)));
}

#[tokio::test]
async fn with_the_timeout_plugin_jenkins_enforces_it_and_the_executor_does_not() {
    let (j, e) = setup().await;
    assert_eq!(e.timeout_backstop(), TimeoutBackstop::Plugin);
    overdue(&j, &e, 40).await;
    j.clear_requests();
    assert_eq!(status(&e, 5).await.phase, Phase::Running);
    assert_eq!(
        calls(&j),
        ["GET /queue/item/1/api/json", "GET /job/SD-5/1/api/json"]
    );
    let disabled = FakeJenkins::start().await;
    disabled.disable_plugin("build-timeout");
    let e = disabled.executor_builder().build().await.unwrap();
    assert_eq!(e.timeout_backstop(), TimeoutBackstop::ExecutorPluginMissing);
}

#[tokio::test]
async fn without_the_permission_to_read_plugins_the_executor_enforces_the_timeout() {
    // core PluginManager.getApi: Jenkins.SYSTEM_READ, else 403.
    let j = FakeJenkins::start().await;
    j.deny("Overall/SystemRead");
    let e = j
        .executor_builder()
        .with_require_timeout_plugin(true)
        .build()
        .await
        .expect("an unreadable list is no reason to refuse");
    let TimeoutBackstop::ExecutorPluginUnknown(why) = e.timeout_backstop() else {
        panic!("{:?}", e.timeout_backstop())
    };
    assert!(why.contains("Overall/SystemRead"), "{why}");
    overdue(&j, &e, 36).await;
    j.clear_requests();
    assert_eq!(status(&e, 5).await.phase, Phase::Running);
    assert_eq!(
        calls(&j),
        [
            "GET /queue/item/1/api/json",
            "GET /job/SD-5/1/api/json",
            "POST /job/SD-5/1/submitDescription",
            "POST /job/SD-5/1/stop"
        ],
        "the list is not asked again: 403 will not change by itself"
    );
    wait_for_phase(&e, 5, Phase::TimedOut).await;
}

#[tokio::test]
async fn a_jenkins_unreachable_at_build_time_is_asked_again_at_the_first_start() {
    let j = FakeJenkins::start_with(FakeOptions {
        plugins: vec![],
        ..FakeOptions::default()
    })
    .await;
    j.inject(Fault::status("GET", "/pluginManager/", 503));
    let e = j
        .executor_builder()
        .with_require_timeout_plugin(true)
        .build()
        .await
        .expect("Jenkins may be down while the server starts");
    assert!(matches!(
        e.timeout_backstop(),
        TimeoutBackstop::ExecutorPluginUnknown(_)
    ));
    j.clear_requests();
    let err = e.start(&build(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("requireTimeoutPlugin"), "{err}");
    assert_eq!(
        calls(&j),
        ["GET /pluginManager/api/json"],
        "nothing created"
    );
    assert_eq!(e.timeout_backstop(), TimeoutBackstop::ExecutorPluginMissing);
    assert!(e.start(&build(1)).await.is_err(), "refused at every start");
    j.install_plugin("build-timeout");
    e.start(&build(1)).await.unwrap();
    assert_eq!(e.timeout_backstop(), TimeoutBackstop::Plugin);
    assert!(j.has_job_timeout("SD-1"));
}

#[tokio::test]
async fn a_marker_jenkins_refuses_still_reads_timed_out_here() {
    let (j, e) = setup_with(FakeOptions {
        plugins: vec![],
        ..FakeOptions::default()
    })
    .await;
    j.deny("Run/Update");
    overdue(&j, &e, 36).await;
    let s = status(&e, 5).await;
    assert_eq!(s.phase, Phase::Running);
    assert!(
        s.message.contains("ran past its job timeout of 35 minutes"),
        "{s}"
    );
    let s = wait_for_phase(&e, 5, Phase::TimedOut).await;
    assert!(s.message.contains("the job timeout of 35 minutes"), "{s}");
    assert_eq!(j.builds("SD-5")[0].description, None);
    assert_eq!(
        e.stats().builds.by_reason.get("timedOut"),
        Some(&1),
        "{:?}",
        e.stats().builds
    );
}

#[tokio::test]
async fn gc_stops_overdue_builds_when_the_executor_enforces_the_timeout() {
    let (j, e) = setup_with(FakeOptions {
        plugins: vec![],
        ..FakeOptions::default()
    })
    .await;
    overdue(&j, &e, 36).await;
    let report = e.gc(false).await.unwrap();
    assert!(report.expired.is_empty(), "a running job is not collected");
    let b = &j.builds("SD-5")[0];
    assert!(
        b.aborting
            && b.description
                .as_deref()
                .unwrap()
                .starts_with("sdx-timeout:"),
        "{b:?}"
    );
    wait_for_phase(&e, 5, Phase::TimedOut).await;
    // A template without the wrapper: the executor enforces it too.
    let t = executor_jenkins::BUILTIN_TEMPLATE;
    let start = t.find("<buildWrappers>").unwrap();
    let end = t.find("</buildWrappers>").unwrap() + "</buildWrappers>".len();
    let plain = format!("{}<buildWrappers/>{}", &t[..start], &t[end..]);
    let e = j
        .executor_builder()
        .with_template(executor_jenkins::JobTemplate::parse(&plain, "plain").unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(e.timeout_backstop(), TimeoutBackstop::ExecutorNoWrapper);
}

#[tokio::test]
async fn stop_on_a_core_before_jenkins_21311_reads_the_item_after_its_302() {
    // Before ≈2.212 cancelItem always answered 302 (forwardToPreviousPage).
    let (j, e) = setup_with(FakeOptions {
        version: "2.204.6".into(),
        ..FakeOptions::default()
    })
    .await;
    e.start(&build(1)).await.unwrap();
    j.clear_requests();
    e.stop(&stop_cfg(1)).await.unwrap();
    assert_eq!(
        recorded(&j),
        [
            "POST /queue/cancelItem -> 302",
            "GET /queue/item/1/api/json -> 200"
        ]
    );
    assert!(j.queue_items("SD-1")[0].cancelled);
    wait_for_phase(&e, 1, Phase::Canceled).await;
}

// --- D8: templates must declare the parameters, the token as a password ----------------

#[tokio::test]
async fn templates_without_the_build_parameters_are_refused() {
    let (j, _) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.xml");
    let cases = [
        (
            "<project><builders><hudson.tasks.Shell><command>{{script}}</command></hudson.tasks.Shell></builders></project>",
            "ParametersDefinitionProperty",
        ),
        (
            &executor_jenkins::BUILTIN_TEMPLATE
                .replace(
                    "<hudson.model.PasswordParameterDefinition>\n          <name>SD_TOKEN</name>",
                    "<hudson.model.StringParameterDefinition>\n          <name>SD_TOKEN</name>",
                )
                .replace(
                    "</defaultValue>\n        </hudson.model.PasswordParameterDefinition>",
                    "</defaultValue>\n        </hudson.model.StringParameterDefinition>",
                ),
            "PasswordParameterDefinition",
        ),
        (
            &executor_jenkins::BUILTIN_TEMPLATE.replace("<name>SD_UI</name>", "<name>UI</name>"),
            "SD_UI",
        ),
        (
            &executor_jenkins::BUILTIN_TEMPLATE
                .replace("<disabled>false</disabled>", "<disabled>true</disabled>"),
            "disabled",
        ),
    ];
    for (template, named) in cases {
        std::fs::write(&path, template).unwrap();
        let err = j
            .executor_builder()
            .with_template_path(&path)
            .build()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{named}: {err}");
        assert!(err.to_string().contains("templatePath:"), "{err}");
        assert!(err.to_string().contains(named), "{named}: {err}");
    }
}

// --- D10: no quiet period --------------------------------------------------------------

#[tokio::test]
async fn builds_skip_the_quiet_period() {
    // core: schedule2 with Jenkins' quiet period (5 s) unless `delay=` is given.
    let (j, e) = setup().await;
    e.start(&build(1)).await.unwrap();
    let trigger = j
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/buildWithParameters"))
        .unwrap();
    assert_eq!(trigger.query, "delay=0sec");
    assert_eq!(
        j.start_queued("SD-1"),
        Some(1),
        "ready for an executor at once"
    );
}

// --- D11: the timeout marker survives MessageFormat ------------------------------------

#[tokio::test]
async fn the_timeout_marker_arrives_as_written() {
    // build-timeout WriteDescriptionOperation: MessageFormat drops a lone apostrophe.
    let (j, e) = setup().await;
    e.start(&build(3)).await.unwrap();
    j.start_queued("SD-3").unwrap();
    assert!(j.fire_job_timeout("SD-3", 1));
    let s = wait_for_phase(&e, 3, Phase::TimedOut).await;
    let written = j.builds("SD-3")[0].description.clone().unwrap();
    let configured = j.job_config("SD-3").unwrap();
    assert!(
        configured.contains(&format!("<description>{written}</description>")),
        "the plugin wrote the configured text unchanged: {written}"
    );
    assert!(s.message.ends_with(&written), "{s}");
}

// --- D13: a stop takes effect asynchronously -------------------------------------------

#[tokio::test]
async fn a_stopped_build_reads_running_until_jenkins_aborted_it() {
    // core Executor.interrupt: the build stays `building` until the executor unwound.
    let (j, e) = setup_with(FakeOptions {
        abort_delay: Duration::from_millis(400),
        ..FakeOptions::default()
    })
    .await;
    e.start(&build(1)).await.unwrap();
    j.start_queued("SD-1").unwrap();
    e.stop(&stop_cfg(1)).await.unwrap();
    let s = status(&e, 1).await;
    assert_eq!(s.phase, Phase::Running, "{s}");
    assert_eq!(s.message, "SD-1 #1 is being stopped");
    let s = wait_for_phase(&e, 1, Phase::Canceled).await;
    assert_eq!(s.message, "SD-1 #1 was stopped");
}
