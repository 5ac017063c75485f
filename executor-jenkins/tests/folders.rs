//! Jobs inside a Jenkins folder (option `folder`): URLs, lifecycle, gc, a missing folder,
//! and validation of the option.

mod common;

use common::*;
use executor_base::{ErrorKind, Executor, Phase};
use executor_jenkins::fake::FakeJenkins;
use executor_jenkins::{JenkinsConfig, JenkinsExecutor, JenkinsExecutorBuilder};

/// An executor of `j` whose jobs live in `folder`.
async fn in_folder(j: &FakeJenkins, folder: &str) -> JenkinsExecutor {
    let e = j
        .executor_builder()
        .with_folder(folder)
        .build()
        .await
        .unwrap();
    j.clear_requests(); // the plugin check of build()
    e
}

/// Moves a job's `screwdriver.cd/expires-at` into the past.
fn expire(j: &FakeJenkins, job: &str) {
    let d = j.description(job).unwrap();
    let d: Vec<String> = d
        .lines()
        .map(|l| match l.starts_with("screwdriver.cd/expires-at=") {
            true => "screwdriver.cd/expires-at=1000".to_string(),
            false => l.to_string(),
        })
        .collect();
    assert!(j.set_description(job, &d.join("\n")));
}

#[tokio::test]
async fn a_build_lives_its_whole_life_in_a_nested_folder() {
    let j = FakeJenkins::start().await;
    assert!(j.create_folder("ci/screwdriver"));
    assert_eq!(j.folders(), ["ci", "ci/screwdriver"]);
    let e = in_folder(&j, "ci/screwdriver").await;
    assert_eq!(e.folder(), "ci/screwdriver");

    e.start(&build(42)).await.unwrap();
    assert_eq!(
        calls(&j),
        [
            "GET /crumbIssuer/api/json",
            "POST /job/ci/job/screwdriver/createItem",
            "POST /job/ci/job/screwdriver/job/SD-42/buildWithParameters"
        ]
    );
    assert_eq!(j.requests()[1].query, "name=SD-42");
    assert_eq!(
        j.job_names(),
        ["ci/screwdriver/SD-42"],
        "the job is in the folder, not at the root"
    );
    assert_eq!(
        j.queue_items("ci/screwdriver/SD-42")[0].params["SD_BUILD_ID"],
        "42"
    );

    assert_eq!(status(&e, 42).await.phase, Phase::Pending);
    assert_eq!(j.start_queued("ci/screwdriver/SD-42"), Some(1));
    j.clear_requests();
    let s = status(&e, 42).await;
    assert_eq!(s.phase, Phase::Running, "{s}");
    assert_eq!(
        calls(&j),
        [
            "GET /queue/item/1/api/json",
            "GET /job/ci/job/screwdriver/job/SD-42/1/api/json"
        ]
    );

    j.clear_requests();
    e.stop(&stop_cfg(42)).await.unwrap();
    assert_eq!(calls(&j), ["POST /job/ci/job/screwdriver/job/SD-42/1/stop"]);
    wait_for_phase(&e, 42, Phase::Canceled).await;
    assert_eq!(
        j.builds("ci/screwdriver/SD-42")[0].result.as_deref(),
        Some("ABORTED")
    );

    // A second build runs to success; a restarted executor reads builds from the folder.
    e.start(&build(43)).await.unwrap();
    j.start_queued("ci/screwdriver/SD-43").unwrap();
    assert!(j.finish("ci/screwdriver/SD-43", 1, "SUCCESS"));
    let restarted = in_folder(&j, "ci/screwdriver").await;
    assert_eq!(status(&restarted, 43).await.phase, Phase::Succeeded);
    wait_for_phase(&restarted, 42, Phase::Canceled).await;
    // Starting the same build again in the folder: the finished job is reused.
    e.start(&build(43)).await.unwrap();
    assert_eq!(j.job_names().len(), 2);

    // The same job name at the root is another job: unknown to the folder's executor.
    let root = j.executor_builder().build().await.unwrap();
    assert_eq!(
        root.status(&stop_cfg(42)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_folder_deleted_behind_our_back_makes_its_builds_lost() {
    let j = FakeJenkins::start().await;
    j.create_folder("ci/sd");
    let e = in_folder(&j, "ci/sd").await;
    e.start(&build(1)).await.unwrap();
    j.start_queued("ci/sd/SD-1").unwrap();
    assert_eq!(status(&e, 1).await.phase, Phase::Running);
    assert!(j.delete_folder("ci/sd"));
    assert_eq!(j.folders(), ["ci"]);
    assert!(j.job_names().is_empty());
    let s = status(&e, 1).await;
    assert_eq!(s.phase, Phase::Lost, "{s}");
    e.stop(&stop_cfg(1)).await.unwrap();
}

#[tokio::test]
async fn gc_in_a_folder_removes_only_our_expired_jobs_there() {
    let j = FakeJenkins::start().await;
    j.create_folder("ci/sd");
    j.create_folder("other");
    let e = in_folder(&j, "ci/sd").await;
    for id in 1..=3 {
        e.start(&build(id)).await.unwrap();
        j.start_queued(&format!("ci/sd/SD-{id}")).unwrap();
    }
    j.finish("ci/sd/SD-1", 1, "SUCCESS"); // finished, expired: collected
    expire(&j, "ci/sd/SD-1");
    expire(&j, "ci/sd/SD-2"); // expired but still running: kept
    j.finish("ci/sd/SD-3", 1, "FAILURE"); // finished, not expired: kept

    // The same names at the root and in another folder, and another prefix in our
    // folder: all finished and expired, none ours to collect.
    let root = j.executor_builder().build().await.unwrap();
    let other = in_folder(&j, "other").await;
    let other_prefix = j
        .executor_builder()
        .with_folder("ci/sd")
        .with_job_prefix("X-")
        .build()
        .await
        .unwrap();
    for (ex, job) in [
        (&root, "SD-1"),
        (&other, "other/SD-1"),
        (&other_prefix, "ci/sd/X-1"),
    ] {
        ex.start(&build(1)).await.unwrap();
        j.start_queued(job).unwrap();
        j.finish(job, 1, "SUCCESS");
        expire(&j, job);
    }
    // A sub-folder carrying our prefix is not a job.
    j.create_folder("ci/sd/SD-9");

    let dry = e.gc(true).await.unwrap();
    assert_eq!(dry.expired, ["job/ci/job/sd/job/SD-1"]);
    assert_eq!(j.job_names().len(), 6, "a dry run deletes nothing");

    j.clear_requests();
    let report = e.gc(false).await.unwrap();
    assert_eq!(report.expired, ["job/ci/job/sd/job/SD-1"]);
    assert_eq!(
        calls(&j),
        [
            "GET /job/ci/job/sd/api/json",
            "POST /job/ci/job/sd/job/SD-1/doDelete"
        ]
    );
    assert!(j.requests()[0].query.starts_with("tree=jobs"));
    assert_eq!(
        j.job_names(),
        [
            "SD-1",
            "ci/sd/SD-2",
            "ci/sd/SD-3",
            "ci/sd/X-1",
            "other/SD-1"
        ]
    );
    assert_eq!(j.folders(), ["ci", "ci/sd", "ci/sd/SD-9", "other"]);
    assert_eq!(
        e.status(&stop_cfg(1)).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "a collected build is forgotten"
    );
    assert_eq!(status(&e, 2).await.phase, Phase::Running);

    // The root executor collects its root job only; folders are not jobs to it.
    let report = root.gc(false).await.unwrap();
    assert_eq!(report.expired, ["job/SD-1"]);
    assert_eq!(
        j.job_names(),
        ["ci/sd/SD-2", "ci/sd/SD-3", "ci/sd/X-1", "other/SD-1"]
    );
}

#[tokio::test]
async fn a_missing_folder_is_a_config_error_and_nothing_is_created() {
    let j = FakeJenkins::start().await;
    j.create_folder("ci"); // the parent exists, `ci/sd` does not
    let e = in_folder(&j, "ci/sd").await;

    let err = e.start(&build(42)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(!err.is_temporary());
    let msg = err.to_string();
    assert!(
        msg.contains("folder: Jenkins folder 'ci/sd' does not exist"),
        "{msg}"
    );
    assert!(msg.contains("does not create folders"), "{msg}");
    assert!(
        err.context()
            .iter()
            .any(|(k, v)| *k == "folder" && v == "ci/sd"),
        "{:?}",
        err.context()
    );
    assert_eq!(
        calls(&j),
        [
            "GET /crumbIssuer/api/json",
            "POST /job/ci/job/sd/createItem"
        ],
        "one attempt, no retry, no trigger"
    );
    assert!(j.job_names().is_empty());
    assert_eq!(j.folders(), ["ci"], "folders are never created");
    assert!(j.queue_items("ci/sd/SD-42").is_empty());
    assert_eq!(e.stats().builds.started, 0);
    assert_eq!(
        e.status(&stop_cfg(42)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    e.stop(&stop_cfg(42)).await.unwrap();

    // gc and the doctor check name the folder too.
    let gc = e.gc(false).await.unwrap_err();
    assert_eq!(gc.kind(), ErrorKind::ConfigInvalid, "{gc}");
    assert!(gc.to_string().contains("'ci/sd'"), "{gc}");
    let doctor = e.jenkins_version().await.unwrap_err();
    assert_eq!(doctor.kind(), ErrorKind::ConfigInvalid, "{doctor}");
    assert!(doctor.to_string().contains("folder: "), "{doctor}");

    // Once someone creates the folder, the same executor starts the build.
    j.create_folder("ci/sd");
    e.jenkins_version().await.unwrap();
    e.start(&build(42)).await.unwrap();
    assert_eq!(j.job_names(), ["ci/sd/SD-42"]);
}

#[tokio::test]
async fn folder_segments_are_percent_encoded() {
    let j = FakeJenkins::start().await;
    let folder = "team a/ü%?#";
    j.create_folder(folder);
    let e = in_folder(&j, folder).await;
    e.start(&build(5)).await.unwrap();
    let enc = "/job/team%20a/job/%C3%BC%25%3F%23";
    assert_eq!(
        calls(&j)[1..],
        [
            format!("POST {enc}/createItem"),
            format!("POST {enc}/job/SD-5/buildWithParameters")
        ]
    );
    let job = format!("{folder}/SD-5");
    assert_eq!(j.job_names(), [job.as_str()]);
    j.start_queued(&job).unwrap();
    assert_eq!(status(&e, 5).await.phase, Phase::Running);
    j.clear_requests();
    e.stop(&stop_cfg(5)).await.unwrap();
    assert_eq!(calls(&j), [format!("POST {enc}/job/SD-5/1/stop")]);
    wait_for_phase(&e, 5, Phase::Canceled).await;
}

#[tokio::test]
async fn the_folder_option_is_validated_naming_the_key() {
    for bad in [
        "/ci",
        "ci/",
        "ci//sd",
        "ci/ /sd",
        "ci/../sd",
        "./ci",
        "..",
        "ci/s\td",
        "ci/\u{7f}",
    ] {
        let err = JenkinsExecutorBuilder::from_iter([
            ("url", "http://127.0.0.1:8080"),
            ("apiToken", "t"),
            ("folder", bad),
        ])
        .build()
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad:?}");
        assert!(err.to_string().contains("folder: "), "{bad:?}: {err}");
    }
    for (good, shown) in [
        ("", "/"),
        ("  ", "/"),
        (" ci/screwdriver ", "ci/screwdriver"),
    ] {
        let e = JenkinsExecutorBuilder::from_iter([
            ("url", "http://127.0.0.1:8080"),
            ("apiToken", "t"),
            ("folder", good),
        ])
        .build()
        .await
        .unwrap();
        assert_eq!(e.folder(), shown);
    }
    // The serde key, the typed setter and the list of option keys.
    let c: JenkinsConfig = serde_json::from_value(serde_json::json!({
        "url": "http://127.0.0.1:8080", "apiToken": "t", "folder": "ci/sd"
    }))
    .unwrap();
    assert_eq!(c.folder, "ci/sd");
    let e = JenkinsExecutorBuilder::new()
        .with_config(c)
        .build()
        .await
        .unwrap();
    assert_eq!(e.folder(), "ci/sd");
    assert!(format!("{e:?}").contains("ci/sd"));
    let options =
        <executor_jenkins::JenkinsConfig as executor_base::options::Configurable>::options();
    assert!(options.find_exact("folder").is_some());
    let err = JenkinsExecutorBuilder::new()
        .with_url("http://127.0.0.1:8080")
        .with_credentials("u", "t")
        .with_folder("a//b")
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("folder: \"a//b\" has an empty segment"),
        "{err}"
    );
}
