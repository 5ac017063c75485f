//! `Executor::preflight` through the wrappers (router, timer wrapper, `Arc`/`Box`), its
//! default, and the shared `preflight.*` option keys.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use executor_base::options::{ConfigBuilder, Configurable, Configured, Options};
use executor_base::testkit::fake::FakeExecutor;
use executor_base::{
    Error, Executor, Finding, Level, Preflight, PreflightOptions, Router, StartConfig, StopConfig,
    TimedExecutor, TimerService,
};

fn build(executor: Option<&str>) -> StartConfig {
    let mut b = StartConfig::builder(5, "http://127.0.0.1:9", "busybox:latest", "tok");
    if let Some(e) = executor {
        b = b.annotation("screwdriver.cd/executor", e);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn the_router_and_the_timer_wrapper_forward_preflight_to_the_builds_backend() {
    let docker = FakeExecutor::named("docker");
    let k8s = FakeExecutor::named("k8s");
    docker.set_preflight(vec![Finding::fail("docker.daemon", "down")]);
    k8s.set_preflight(vec![Finding::ok("k8s.namespace", "builds exists")]);
    let router = Router::builder()
        .backend(Arc::new(docker.clone()))
        .backend(Arc::new(k8s.clone()))
        .default_backend("k8s")
        .build()
        .unwrap();
    let p = router.preflight(&build(None)).await.unwrap();
    assert_eq!(p.backend, "k8s");
    assert!(p.passed());
    let p = router.preflight(&build(Some("docker"))).await.unwrap();
    assert_eq!(p.backend, "docker");
    assert!(!p.passed());
    assert_eq!(p.summary(), "docker.daemon [fail]: down");
    let e = router.preflight(&build(Some("jenkins"))).await.unwrap_err();
    assert!(e.message().contains("jenkins"), "{e}");

    let timed = TimedExecutor::new(
        Arc::new(router),
        TimerService::builder().build().await.unwrap(),
    );
    let boxed: Box<dyn Executor> = Box::new(timed);
    let p = boxed.preflight(&build(Some("docker"))).await.unwrap();
    assert_eq!(p.findings, vec![Finding::fail("docker.daemon", "down")]);
}

/// A backend that overrides nothing but the required methods.
#[derive(Debug)]
struct Minimal;

#[async_trait::async_trait]
impl Executor for Minimal {
    fn name(&self) -> &str {
        "minimal"
    }
    async fn start(&self, _: &StartConfig) -> Result<(), Error> {
        Ok(())
    }
    async fn stop(&self, _: &StopConfig) -> Result<(), Error> {
        Ok(())
    }
    async fn status(&self, b: &StopConfig) -> Result<executor_base::BuildStatus, Error> {
        Err(Error::build_not_found(b.build_id))
    }
    fn stats(&self) -> executor_base::Stats {
        executor_base::Stats::default()
    }
}

#[tokio::test]
async fn the_default_has_nothing_to_check_and_passes() {
    let p = Minimal.preflight(&build(None)).await.unwrap();
    assert_eq!(p, Preflight::new("minimal"));
    assert!(p.passed());
    assert_eq!(p.level(), Level::Ok);
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Toy {
    preflight: PreflightOptions,
}

impl Configurable for Toy {
    fn options() -> &'static Options<Self> {
        static O: LazyLock<Options<Toy>> =
            LazyLock::new(|| Options::<Toy>::new("toy").preflight(|c| &mut c.preflight));
        &O
    }
}

#[test]
fn preflight_keys_are_shared_option_keys() {
    let d = Toy::default();
    assert_eq!(d.preflight.cache_ttl, Duration::from_secs(10));
    assert_eq!(d.preflight.check_timeout, Duration::from_secs(5));
    let c = Configured::<Toy>::default()
        .with_vars([("EXECUTOR_TOY_PREFLIGHT_CACHE_MS", "0")])
        .with_option("preflight.timeoutMs", "750")
        .finish()
        .unwrap();
    assert_eq!(c.preflight.cache_ttl, Duration::ZERO);
    assert_eq!(c.preflight.check_timeout, Duration::from_millis(750));
    let e = Configured::<Toy>::default()
        .with_option("preflight.cacheMs", "soon")
        .finish()
        .unwrap_err();
    assert!(e.message().starts_with("preflight.cacheMs:"), "{e}");
    assert!(Toy::options().undeclared_fields().is_empty());
    let json = serde_json::to_value(c.preflight).unwrap();
    assert_eq!(json, serde_json::json!({"cacheMs": 0, "timeoutMs": 750}));
}
