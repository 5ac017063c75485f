//! Router: backend choice per build, remembered routes, fan-out, shared timers, and the
//! conformance suite over fake backends.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use executor_base::testkit::conformance::{ConformanceConfig, conformance};
use executor_base::testkit::fake::FakeExecutor;
use executor_base::timer::TimerService;
use executor_base::{
    Annotations, ApiBuildStatus, BuildId, ErrorKind, Executor, JobId, Phase, Router, StartConfig,
    StopConfig, TimedExecutor, TimerConfig,
};
use parking_lot::Mutex;

fn fakes() -> (FakeExecutor, FakeExecutor, FakeExecutor) {
    (
        FakeExecutor::named("docker"),
        FakeExecutor::named("k8s"),
        FakeExecutor::named("process"),
    )
}

fn router(d: &FakeExecutor, k: &FakeExecutor, p: &FakeExecutor) -> Router {
    Router::builder()
        .backend(Arc::new(d.clone()))
        .backend(Arc::new(k.clone()))
        .backend(Arc::new(p.clone()))
        .default_backend("process")
        .build()
        .unwrap()
}

fn build(id: u64, executor: Option<&str>) -> StartConfig {
    let mut b = StartConfig::builder(id, "http://127.0.0.1:9", "busybox:latest", "tok").job_id(3);
    if let Some(e) = executor {
        b = b.annotation("beta.screwdriver.cd/executor", e);
    }
    b.build().unwrap()
}

fn bid(n: u64) -> BuildId {
    BuildId::new(n).unwrap()
}

#[tokio::test]
async fn router_over_fakes_passes_conformance() {
    conformance(
        || async {
            let (d, k, p) = fakes();
            Arc::new(router(&d, &k, &p)) as Arc<dyn Executor>
        },
        ConformanceConfig {
            first_build_id: 500,
            concurrent_builds: 20,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test]
async fn router_with_shared_timers_passes_conformance() {
    conformance(
        || async {
            let (d, k, p) = fakes();
            let timers = TimerService::builder().build().await.unwrap();
            let r = Router::builder()
                .backend(Arc::new(d))
                .backend(Arc::new(k))
                .backend(Arc::new(p))
                .timers(timers)
                .stop_on_timeout(true)
                .build()
                .unwrap();
            Arc::new(r) as Arc<dyn Executor>
        },
        ConformanceConfig {
            first_build_id: 700,
            concurrent_builds: 10,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test]
async fn picks_the_annotated_backend_or_the_default() {
    let (d, k, p) = fakes();
    let r = router(&d, &k, &p);
    r.start(&build(1, Some("docker"))).await.unwrap();
    r.start(&build(2, Some("K8S"))).await.unwrap();
    r.start(&build(3, None)).await.unwrap();
    assert_eq!(d.live_builds(), vec![bid(1)]);
    assert_eq!(k.live_builds(), vec![bid(2)]);
    assert_eq!(p.live_builds(), vec![bid(3)]);
    assert_eq!(r.backend_of(bid(2)).as_deref(), Some("k8s"));
    assert_eq!(r.backends(), vec!["docker", "k8s", "process"]);
}

#[tokio::test]
async fn an_unknown_executor_is_refused_naming_the_annotation_and_the_known_ones() {
    let (d, k, p) = fakes();
    let r = router(&d, &k, &p);
    let e = r.start(&build(1, Some("jenkins"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(
        e.field_errors()[0].field,
        "annotations[screwdriver.cd/executor]"
    );
    assert!(
        e.to_string()
            .contains("unknown executor \"jenkins\", expected one of docker, k8s, process"),
        "{e}"
    );
    assert_eq!(
        d.calls().total() + k.calls().total() + p.calls().total(),
        0,
        "no backend was called"
    );
}

#[tokio::test]
async fn stop_status_and_verify_go_to_the_backend_that_started_the_build() {
    let (d, k, p) = fakes();
    let r = router(&d, &k, &p);
    let b = build(1, Some("docker"));
    r.start(&b).await.unwrap();
    // The server's stop config carries no annotations: the route is remembered.
    let bare = StopConfig::new(b.build_id);
    assert!(!r.status(&bare).await.unwrap().is_terminal());
    let plain = build(1, None);
    assert!(!r.verify(&plain).await.unwrap().is_failure());
    r.stop(&bare).await.unwrap();
    assert_eq!(r.status(&bare).await.unwrap().phase, Phase::Canceled);
    assert_eq!((d.calls().stop, p.calls().total()), (1, 0));
}

#[tokio::test]
async fn builds_the_router_did_not_start_fall_back_to_the_annotation_then_the_default() {
    let (d, k, p) = fakes();
    let b = build(1, Some("k8s"));
    k.start(&b).await.unwrap(); // started by an earlier process
    let r = router(&d, &k, &p);
    assert!(!r.status(&b.to_stop()).await.unwrap().is_terminal());
    let e = r.status(&StopConfig::new(b.build_id)).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "no annotation: asked the default"
    );
    assert_eq!(p.calls().status, 1);
}

#[tokio::test]
async fn a_build_id_live_on_another_backend_is_already_exists() {
    let (d, k, p) = fakes();
    let r = router(&d, &k, &p);
    r.start(&build(1, Some("docker"))).await.unwrap();
    let e = r.start(&build(1, Some("k8s"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(k.calls().start, 0);
}

#[tokio::test]
async fn stats_fan_out_and_sum() {
    let (d, k, p) = fakes();
    let r = router(&d, &k, &p);
    r.start(&build(1, Some("docker"))).await.unwrap();
    r.start(&build(2, Some("docker"))).await.unwrap();
    r.start(&build(3, Some("k8s"))).await.unwrap();
    let _ = r.status(&StopConfig::new(bid(9))).await; // a failed call on process
    let s = r.stats();
    assert_eq!(s.executors.len(), 3);
    assert_eq!(s.executors["docker"].builds.started, 2);
    assert_eq!(s.builds.started, 3);
    assert_eq!(s.requests.total, 4);
    assert_eq!((s.requests.success, s.requests.failure), (3, 1));
    assert!(s.breaker.is_closed);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["executors"]["k8s"]["builds"]["started"], 1);
}

#[tokio::test]
async fn cleanup_and_gc_fan_out_to_every_backend() {
    let (d, k, p) = fakes();
    let r = router(&d, &k, &p);
    for (id, e) in [(1, "docker"), (2, "k8s")] {
        let b = build(id, Some(e));
        r.start(&b).await.unwrap();
        r.stop(&b.to_stop()).await.unwrap();
    }
    let g = r.gc(true).await.unwrap();
    assert_eq!(
        g.expired,
        vec!["build/1".to_string(), "build/2".to_string()]
    );
    r.cleanup().await.unwrap();
    r.cleanup().await.unwrap();
    for f in [&d, &k, &p] {
        assert_eq!(f.calls().cleanup, 2);
    }
    assert!(r.gc(false).await.unwrap().expired.is_empty());
    d.refuse(
        executor_base::testkit::fake::FakeOp::Cleanup,
        ErrorKind::Unavailable,
    );
    assert_eq!(
        r.cleanup().await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(k.calls().cleanup, 3, "the others were still cleaned up");
}

#[tokio::test]
async fn shared_timers_stop_the_build_on_its_backend_and_report_timed_out() {
    let (d, k, p) = fakes();
    let timers = TimerService::builder().build().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let r = Router::builder()
        .backend(Arc::new(d.clone()))
        .backend(Arc::new(k.clone()))
        .backend(Arc::new(p.clone()))
        .timers(timers.clone())
        .stop_on_timeout(true)
        .on_expiry(move |e| s2.lock().push(e.build_id))
        .build()
        .unwrap();
    let late = build(1, Some("k8s"));
    let fine = build(2, Some("docker"));
    r.start(&late).await.unwrap();
    r.start(&fine).await.unwrap();
    let t = |b: &StartConfig, start| {
        TimerConfig::new(
            b.build_id,
            JobId::new(3).unwrap(),
            ApiBuildStatus::Running,
            start,
            Annotations::default(),
        )
    };
    r.start_timer(&t(&late, Utc::now() - chrono::Duration::minutes(95)))
        .await
        .unwrap();
    r.start_timer(&t(&fine, Utc::now())).await.unwrap();
    assert_eq!(
        timers.pending(),
        2,
        "nothing fired yet (current-thread runtime)"
    );
    for _ in 0..500 {
        if k.live_builds().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(k.live_builds().is_empty(), "stopped on k8s");
    assert_eq!(
        r.status(&StopConfig::new(late.build_id))
            .await
            .unwrap()
            .phase,
        Phase::TimedOut
    );
    assert!(r.verify(&late).await.unwrap().is_failure());
    assert_eq!(*seen.lock(), vec![late.build_id]);
    assert_eq!(d.live_builds(), vec![fine.build_id]);
    r.stop_timer(&fine.to_stop()).await.unwrap();
    assert_eq!(timers.pending(), 0);
}

#[tokio::test]
async fn without_shared_timers_timer_calls_go_to_the_build_backend() {
    let d = FakeExecutor::named("docker");
    let docker_timers = TimerService::builder().build().await.unwrap();
    let timed = Arc::new(TimedExecutor::new(
        Arc::new(d.clone()),
        docker_timers.clone(),
    ));
    let r = Router::builder()
        .backend(timed)
        .backend(Arc::new(FakeExecutor::named("process")))
        .build()
        .unwrap();
    assert_eq!(
        r.default_backend(),
        "docker",
        "the first backend is the default"
    );
    let b = build(1, None);
    r.start(&b).await.unwrap();
    r.start_timer(&TimerConfig::new(
        b.build_id,
        JobId::new(3).unwrap(),
        ApiBuildStatus::Running,
        Utc::now(),
        Annotations::default(),
    ))
    .await
    .unwrap();
    assert_eq!(docker_timers.pending(), 1);
    r.stop_timer(&b.to_stop()).await.unwrap();
    assert_eq!(docker_timers.pending(), 0);
}

#[tokio::test]
async fn the_builder_refuses_bad_setups() {
    let f = || Arc::new(FakeExecutor::named("docker")) as Arc<dyn Executor>;
    let msg = |b: executor_base::RouterBuilder| {
        let e = b.build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
        e.to_string()
    };
    assert!(msg(Router::builder()).contains("no backend"));
    assert!(
        msg(Router::builder().backend(f()).backend(f()))
            .contains("two backends are named \"docker\"")
    );
    assert!(
        msg(Router::builder().backend(f()).default_backend("k8s"))
            .contains("default backend \"k8s\" is not one of docker")
    );
    assert!(msg(Router::builder().backend(f()).stop_on_timeout(true)).contains("need timers"));
    assert!(msg(Router::builder().backend_named("no spaces", f())).contains("not letters"));
}

#[tokio::test]
async fn stop_all_stops_every_live_build_and_cleanup_none() {
    use executor_base::testkit::fake::FakeExecutor;
    use executor_base::{Executor, Phase, Router, StartConfig};
    use std::sync::Arc;
    let a = Arc::new(FakeExecutor::named("docker"));
    let b = Arc::new(FakeExecutor::named("k8s"));
    let router = Router::builder()
        .backend(a.clone())
        .backend(b.clone())
        .default_backend("docker")
        .build()
        .unwrap();
    let start = |id: u64, on: &str| {
        StartConfig::builder(id, "http://127.0.0.1:8080", "busybox", "t")
            .annotation("screwdriver.cd/executor", on)
            .build()
            .unwrap()
    };
    router.start(&start(9101, "docker")).await.unwrap();
    router.start(&start(9102, "k8s")).await.unwrap();
    router.cleanup().await.unwrap();
    assert_eq!(
        a.live_builds().len() + b.live_builds().len(),
        2,
        "cleanup never stops a live build"
    );
    let mut stopped = router.stop_all().await.unwrap();
    stopped.sort();
    assert_eq!(
        stopped.iter().map(|i| i.get()).collect::<Vec<_>>(),
        [9101, 9102]
    );
    for (e, id) in [(&a, 9101), (&b, 9102)] {
        let s = e.status(&start(id, "x").to_stop()).await.unwrap();
        assert_eq!(s.phase, Phase::Canceled);
    }
}

#[tokio::test]
async fn stop_all_is_unsupported_unless_a_backend_knows_its_builds() {
    let e = executor_base::testkit::fake::FakeExecutor::new();
    #[derive(Debug)]
    struct Minimal(executor_base::testkit::fake::FakeExecutor);
    #[async_trait::async_trait]
    impl executor_base::Executor for Minimal {
        fn name(&self) -> &str {
            "minimal"
        }
        async fn start(&self, b: &executor_base::StartConfig) -> executor_base::Result<()> {
            self.0.start(b).await
        }
        async fn stop(&self, b: &executor_base::StopConfig) -> executor_base::Result<()> {
            self.0.stop(b).await
        }
        async fn status(
            &self,
            b: &executor_base::StopConfig,
        ) -> executor_base::Result<executor_base::BuildStatus> {
            self.0.status(b).await
        }
        fn stats(&self) -> executor_base::Stats {
            self.0.stats()
        }
    }
    use executor_base::Executor;
    let m = Minimal(e);
    let err = m.stop_all().await.unwrap_err();
    assert_eq!(err.kind(), executor_base::ErrorKind::Unsupported);
    // `verify` is the trait's default: the verdict of `status`.
    let b = executor_base::StartConfig::builder(9103, "http://127.0.0.1:8080", "busybox", "t")
        .build()
        .unwrap();
    m.start(&b).await.unwrap();
    assert_eq!(
        m.verify(&b).await.unwrap(),
        executor_base::Verdict::from_status(&m.status(&b.to_stop()).await.unwrap())
    );
}
