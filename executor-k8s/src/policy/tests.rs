//! The policy table against hand-made pods.

use chrono::{DateTime, TimeZone, Utc};
use executor_base::{FailureReason, Phase};
use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::view::PodView;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn base(status: serde_json::Value) -> Pod {
    pod(serde_json::json!({
        "metadata": {"name": "sd-1-abcde", "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "sd-1"}], "initContainers": [{"name": "launcher-sd-1"}]},
        "status": status,
    }))
}

fn view(p: &Pod, prev: Option<&PodView>, now: DateTime<Utc>, policy: &ReasonPolicy) -> PodView {
    PodView::from_pod(p, prev, now, |c, st| policy.wants_condition(c, st))
}

fn waiting(reason: &str) -> Pod {
    base(
        serde_json::json!({"phase": "Pending", "containerStatuses": [
        {"name": "sd-1", "ready": false, "restartCount": 0, "image": "", "imageID": "",
         "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
    )
}

/// An RFC 3339 time `secs` after t(0).
fn ts(secs: i64) -> String {
    t(secs).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The build container waiting for `reason`, the pod started at t(2) and its init
/// containers done at t(5) (as a kubelet reports it).
fn pulling(reason: &str) -> Pod {
    base(serde_json::json!({"phase": "Pending", "startTime": ts(2),
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(1)},
            {"type": "Initialized", "status": "True", "lastTransitionTime": ts(5)}],
        "containerStatuses": [
        {"name": "sd-1", "ready": false, "restartCount": 0, "image": "", "imageID": "",
         "state": {"waiting": {"reason": reason, "message": "m"}}}]}))
}

#[test]
fn image_pull_grace_counts_from_the_pods_own_timestamps() {
    let p = ReasonPolicy {
        image_pull_grace_seconds: 60,
        ..ReasonPolicy::default()
    };
    // The build container could start pulling once the pod was initialized, at t(5).
    let first = view(&pulling("ErrImagePull"), None, t(10), &p);
    let s = p.classify(&first, t(10));
    assert_eq!(s.phase, Phase::Pulling);
    assert!(s.message.contains("ErrImagePull: m (fails in 55s)"), "{s}");
    // A fresh view (an executor that just restarted) knows the same.
    let restarted = view(&pulling("ErrImagePull"), None, t(64), &p);
    assert_eq!(p.classify(&restarted, t(64)).phase, Phase::Pulling);
    let s = p.classify(&restarted, t(65));
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Failed, Some(FailureReason::ImagePull))
    );
    // The kubelet alternating ErrImagePull and ImagePullBackOff does not restart it.
    let backoff = view(&pulling("ImagePullBackOff"), Some(&first), t(40), &p);
    assert!(p.classify(&backoff, t(65)).is_terminal());
}

#[test]
fn waiting_falls_back_to_start_time_then_creation() {
    let p = ReasonPolicy::default();
    // Not initialized yet: the init container (the launcher image) waits since startTime.
    let pd = base(serde_json::json!({"phase": "Pending", "startTime": ts(3),
        "initContainerStatuses": [
        {"name": "launcher-sd-1", "ready": false, "restartCount": 0, "image": "", "imageID": "",
         "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}));
    let v = view(&pd, None, t(30), &p);
    assert_eq!(v.init.waiting().unwrap().2, t(3));
    assert!(!p.classify(&v, t(62)).is_terminal());
    assert!(p.classify(&v, t(63)).is_terminal());
    // Nothing but the creation time.
    let v = view(&waiting("ErrImagePull"), None, t(30), &p);
    assert_eq!(v.build.waiting().unwrap().2, t(0));
}

#[test]
fn immediate_reasons_fail_at_once() {
    let p = ReasonPolicy::default();
    for (reason, want) in [
        ("InvalidImageName", FailureReason::InvalidImage),
        ("ErrImageNeverPull", FailureReason::ImagePull),
        ("CreateContainerConfigError", FailureReason::ContainerConfig),
        ("CreateContainerError", FailureReason::ContainerConfig),
        ("CrashLoopBackOff", FailureReason::CrashLoop),
    ] {
        let v = view(&waiting(reason), None, t(0), &p);
        assert_eq!(p.classify(&v, t(0)).reason(), Some(want), "{reason}");
    }
    // A reason the table does not know is just "initializing".
    let v = view(&waiting("ContainerCreating"), None, t(0), &p);
    let s = p.classify(&v, t(1000));
    assert_eq!(
        (s.phase, s.message.as_str()),
        (Phase::Pulling, "initializing: ContainerCreating")
    );
}

#[test]
fn the_table_is_data_first_match_wins_and_can_be_changed() {
    let mut p = ReasonPolicy::default();
    // Make CrashLoopBackOff transient for 30 s by putting a rule before the default.
    p.rules.insert(
        0,
        ReasonRule::new(
            Match::Waiting {
                reason: "CrashLoopBackOff".into(),
            },
            Outcome::Fail {
                reason: FailureReason::CrashLoop,
            },
            Grace::Seconds(30),
        ),
    );
    p.rules.retain(|r| {
        !(r.on
            == Match::Waiting {
                reason: "CrashLoopBackOff".into(),
            }
            && r.grace == Grace::Immediate)
    });
    let v = view(&waiting("CrashLoopBackOff"), None, t(0), &p);
    assert!(!p.classify(&v, t(29)).is_terminal());
    assert!(p.classify(&v, t(30)).is_terminal());
    // An empty table: only phases and exit codes count.
    let none = ReasonPolicy {
        rules: vec![],
        ..ReasonPolicy::default()
    };
    assert!(
        !none
            .classify(
                &view(&waiting("InvalidImageName"), None, t(0), &none),
                t(999)
            )
            .is_terminal()
    );
    assert!(none.validate().is_ok());
}

#[test]
fn unschedulable_fails_after_the_pending_timeout_with_the_schedulers_message() {
    let p = ReasonPolicy {
        pending_timeout_seconds: 300,
        ..ReasonPolicy::default()
    };
    let mut pd = pod(serde_json::json!({
        "metadata": {"name": "sd-1-abcde", "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"containers": [{"name": "sd-1"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory.",
            "lastTransitionTime": "2027-01-15T08:00:00Z"}]}
    }));
    let since = crate::view::to_chrono(
        pd.status.as_ref().unwrap().conditions.as_ref().unwrap()[0]
            .last_transition_time
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let v = view(&pd, None, since, &p);
    let s = p.classify(&v, since + chrono::Duration::seconds(299));
    assert_eq!(s.phase, Phase::Pending);
    assert!(s.message.contains("Insufficient memory"), "{s}");
    let s = p.classify(&v, since + chrono::Duration::seconds(300));
    assert_eq!(
        (s.phase, s.reason()),
        (Phase::Failed, Some(FailureReason::Unschedulable))
    );
    assert_eq!(
        s.message,
        "build could not be scheduled: 0/3 nodes are available: 3 Insufficient memory."
    );
    // Scheduled after all: no longer matches.
    pd.status.as_mut().unwrap().conditions = None;
    assert_eq!(
        p.classify(
            &view(&pd, Some(&v), since, &p),
            since + chrono::Duration::seconds(900)
        )
        .phase,
        Phase::Pending
    );
}

#[test]
fn phase_unknown_is_lost_after_its_grace_and_says_when_meanwhile() {
    let p = ReasonPolicy::default();
    // Running for an hour, then the node stopped reporting: Ready turned false at t(3600).
    let pd = base(serde_json::json!({"phase": "Unknown",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": ts(3600)}],
        "containerStatuses": [
        {"name": "sd-1", "ready": true, "restartCount": 0, "image": "", "imageID": "",
         "state": {"running": {"startedAt": "2027-01-15T08:00:01Z"}}}]}));
    let v = view(&pd, None, t(3600), &p);
    let s = p.classify(&v, t(3660));
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.message, "running: pod phase Unknown (fails in 240s)");
    let s = p.classify(&v, t(3900));
    assert_eq!(
        (s.phase, s.failure.unwrap().build_started),
        (Phase::Lost, Some(true))
    );
    // Without conditions the grace counts from the pod's creation.
    let pd = base(
        serde_json::json!({"phase": "Unknown", "containerStatuses": [
        {"name": "sd-1", "ready": true, "restartCount": 0, "image": "", "imageID": "",
         "state": {"running": {"startedAt": "2027-01-15T08:00:01Z"}}}]}),
    );
    let v = view(&pd, None, t(0), &p);
    assert_eq!(p.classify(&v, t(299)).phase, Phase::Running);
    assert_eq!(p.classify(&v, t(300)).phase, Phase::Lost);
}

#[test]
fn oom_with_exit_code_zero_is_still_oom() {
    let p = ReasonPolicy::default();
    let pd = base(
        serde_json::json!({"phase": "Succeeded", "containerStatuses": [
        {"name": "sd-1", "ready": false, "restartCount": 0, "image": "", "imageID": "",
         "state": {"terminated": {"exitCode": 0, "reason": "OOMKilled", "startedAt": "2027-01-15T08:00:01Z"}}}]}),
    );
    let s = p.classify(&view(&pd, None, t(0), &p), t(0));
    assert_eq!(
        (s.reason(), s.exit_code),
        (Some(FailureReason::OutOfMemory), Some(0))
    );
}

#[test]
fn the_default_table_serialises_readably() {
    let v = serde_json::to_value(ReasonPolicy::default()).unwrap();
    assert_eq!(
        v["rules"][0],
        serde_json::json!({
            "on": {"terminated": {"reason": "OOMKilled"}},
            "then": {"status": "fail", "reason": "outOfMemory"},
            "grace": "immediate"
        })
    );
    assert_eq!(v["rules"][6]["grace"], "imagePull");
    assert_eq!(
        v["rules"].as_array().unwrap().last().unwrap()["grace"],
        serde_json::json!({"seconds": 300})
    );
}
