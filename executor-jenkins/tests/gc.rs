//! gc and cleanup: finished jobs past their expiry are deleted, nothing else.

mod common;

use common::*;
use executor_base::{ErrorKind, Executor, Phase};
use executor_jenkins::fake::FakeJenkins;

/// Moves a job's `screwdriver.cd/expires-at` into the past.
fn expire(j: &FakeJenkins, job: &str) {
    let d = j.description(job).unwrap();
    let d: Vec<String> = d
        .lines()
        .map(|l| {
            if l.starts_with("screwdriver.cd/expires-at=") {
                "screwdriver.cd/expires-at=1000".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(j.set_description(job, &d.join("\n")));
}

#[tokio::test]
async fn gc_deletes_finished_jobs_past_their_expiry_only() {
    let (j, e) = setup().await;
    for id in 1..=4 {
        e.start(&build(id)).await.unwrap();
    }
    j.start_queued("SD-1").unwrap();
    j.finish("SD-1", 1, "SUCCESS"); // finished, never polled
    j.start_queued("SD-2").unwrap(); // still running
    // SD-3 stays queued; SD-4 finishes but has not expired.
    j.start_queued("SD-4").unwrap();
    j.finish("SD-4", 1, "FAILURE");
    for job in ["SD-1", "SD-2", "SD-3"] {
        expire(&j, job);
    }
    // Someone else's job with our prefix and an old date: not ours, never touched.
    j.put_job(
        "SD-900",
        "<project><description>screwdriver.cd/expires-at=1000</description></project>",
    );

    let dry = e.gc(true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.expired, ["job/SD-1", "job/SD-3"]);
    assert_eq!(j.job_names().len(), 5, "a dry run deletes nothing");

    j.clear_requests();
    let report = e.gc(false).await.unwrap();
    assert_eq!(report.expired, ["job/SD-1", "job/SD-3"]);
    assert_eq!(
        calls(&j),
        [
            "GET /api/json",
            "POST /job/SD-1/doDelete",
            "POST /job/SD-3/doDelete"
        ]
    );
    assert_eq!(j.job_names(), ["SD-2", "SD-4", "SD-900"]);
    assert!(
        j.queue_items("SD-3")[0].cancelled,
        "deleting a job cancels its queue item"
    );

    // Collected builds are forgotten with their jobs (and counted as finished); the
    // others are untouched.
    for id in [1, 3] {
        assert_eq!(
            e.status(&stop_cfg(id)).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    assert_eq!(status(&e, 2).await.phase, Phase::Running);
    assert_eq!(status(&e, 4).await.phase, Phase::Failed);
    let counts = e.stats().builds;
    assert_eq!((counts.started, counts.running, counts.finished), (4, 1, 3));
    assert_eq!(counts.by_reason.get("lost"), Some(&1), "{counts:?}");
}

#[tokio::test]
async fn cleanup_collects_and_is_idempotent() {
    let (j, e) = setup().await;
    e.start(&build(1)).await.unwrap();
    j.start_queued("SD-1").unwrap();
    j.finish("SD-1", 1, "SUCCESS");
    e.cleanup().await.unwrap();
    assert_eq!(j.job_names(), ["SD-1"], "not expired yet");
    expire(&j, "SD-1");
    e.cleanup().await.unwrap();
    e.cleanup().await.unwrap();
    assert!(j.job_names().is_empty());
    let again = e.gc(false).await.unwrap();
    assert!(again.expired.is_empty());
}
