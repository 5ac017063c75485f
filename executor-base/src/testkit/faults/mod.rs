//! The fault matrix every backend runs: the same scenarios, through the same code, with a
//! [`FaultProxy`] between the executor and its engine.
//!
//! ```no_run
//! # async fn demo(proxy: executor_base::testkit::proxy::FaultProxy) {
//! use std::sync::Arc;
//! use executor_base::testkit::proxy::FaultProxy;
//! use executor_base::Executor;
//! use executor_base::testkit::faults::{fault_matrix, FaultMatrixConfig};
//! use executor_base::testkit::fake::FakeExecutor;
//! let report = fault_matrix(
//!     |_proxy: &FaultProxy| async { Arc::new(FakeExecutor::new()) as Arc<dyn Executor> },
//!     &proxy,
//!     FaultMatrixConfig { first_build_id: 7000, ..Default::default() },
//! )
//! .await;
//! println!("{report}");
//! # }
//! ```
//!
//! Each scenario ([`scenarios`]) puts one fault on the engine's connections at one moment
//! of a build (at start, mid-build, at stop) or plays a longer story (the engine back
//! after N s, breakers opened then half-open recovery, a 429 storm, a start killed half
//! way). Every scenario asserts:
//!
//! - **the right error**: a fault answers a temporary error of the kinds that fault can
//!   cause (never [`ErrorKind::CircuitOpen`]: an open breaker reports the last real
//!   cause), within [`FaultMatrixConfig::call_bound`];
//! - **no build reported succeeded that did not run** (the builds run until stopped, so
//!   `Succeeded` is always wrong);
//! - **stop always attempted**: a stop under a fault that accepts connections reaches
//!   the proxy, whatever the breakers;
//! - **recovery within a bound**: once the engine is back, the build is stopped and a new
//!   build starts within [`FaultMatrixConfig::recovery_bound`];
//! - **no orphan after gc**: after stop and `gc`, [`FaultMatrixConfig::leftovers`] finds
//!   nothing of the scenario's builds;
//! - **no token in any output**: errors, statuses, stats and every `tracing` line seen.
//!
//! A broken rule panics with `fault matrix: <scenario>: ...`. The returned
//! [`MatrixReport`] is a Markdown table of what each scenario saw.
//!
//! [`ErrorKind::CircuitOpen`]: crate::error::ErrorKind::CircuitOpen

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::instrument::WithSubscriber;

use super::conformance::capture;
use super::proxy::{FaultMode, FaultProxy};
use crate::executor::Executor;
use crate::ids::BuildId;

/// Finds what is left of a build in the engine (containers, pods, jobs...), by name.
pub type Leftovers = Arc<dyn Fn(BuildId) -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// Settings of the matrix.
#[derive(Clone)]
pub struct FaultMatrixConfig {
    /// `apiUri` of the start configs: builds must run until stopped.
    pub api_uri: String,
    /// An image the backend can run.
    pub container: String,
    /// Build ids used are `first_build_id ..= first_build_id + 10 * scenarios`.
    pub first_build_id: u64,
    /// Whether the engine speaks plain HTTP through the proxy (adds the 5xx, 429 and
    /// 429-storm scenarios).
    pub http: bool,
    /// The executor's per-call timeout (the "slow engine" scenario delays past it).
    pub call_timeout: Duration,
    /// The longest one call may take while the engine is faulty.
    pub call_bound: Duration,
    /// The longest the executor may take to work again once the engine is back.
    pub recovery_bound: Duration,
    /// What is left of a build after stop and gc (required: no orphan).
    pub leftovers: Option<Leftovers>,
    /// The backend observes a build through the one connection that started it (Gearman:
    /// only the submitting connection hears the job's result), so a fault that breaks
    /// that connection while the build runs may end the build
    /// [`InfrastructureLost`](crate::status::FailureReason::InfrastructureLost); the matrix
    /// then accepts that outcome (never `Succeeded`, and stop and gc must still leave
    /// nothing of the build).
    pub lost_on_disconnect: bool,
    /// Scenarios run this many at a time, each lane with its own proxy
    /// ([`FaultProxy::twin`]) and its own executors; most of a scenario is waiting on a
    /// timeout, so lanes cut the matrix's run time about as many times.
    pub lanes: usize,
}

impl Default for FaultMatrixConfig {
    fn default() -> Self {
        Self {
            api_uri: "http://127.0.0.1:9".into(),
            container: "busybox:latest".into(),
            first_build_id: 8_000_000,
            http: true,
            call_timeout: Duration::from_secs(10),
            call_bound: Duration::from_secs(40),
            recovery_bound: Duration::from_secs(30),
            leftovers: None,
            lost_on_disconnect: false,
            lanes: 4,
        }
    }
}

impl fmt::Debug for FaultMatrixConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultMatrixConfig")
            .field("api_uri", &self.api_uri)
            .field("container", &self.container)
            .field("first_build_id", &self.first_build_id)
            .field("http", &self.http)
            .field("call_timeout", &self.call_timeout)
            .field("call_bound", &self.call_bound)
            .field("recovery_bound", &self.recovery_bound)
            .field("leftovers", &self.leftovers.is_some())
            .field("lost_on_disconnect", &self.lost_on_disconnect)
            .field("lanes", &self.lanes)
            .finish()
    }
}

/// When a fault hits a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Around `start`.
    AtStart,
    /// While the build runs (`status` calls).
    MidBuild,
    /// Around `stop`.
    AtStop,
}

/// One scenario of the matrix.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// One fault at one moment.
    Fault(FaultMode, When),
    /// The engine refuses connections during a start and comes back after this long.
    BackAfter(Duration),
    /// Failing starts open the breakers; a stop still reaches the engine; once the
    /// engine is back the next start works.
    HalfOpen,
    /// A run of 429s with `Retry-After` around a start, then the engine answers.
    Storm429,
    /// A start dropped (as if its process died) after this long; stop and gc leave
    /// nothing.
    CrashMidStart(Duration),
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fault(m, w) => write!(f, "{} {}", mode_name(m), when_name(*w)),
            Self::BackAfter(d) => write!(f, "engine back after {}s during a start", d.as_secs()),
            Self::HalfOpen => {
                f.write_str("breakers open, a running build's stop still sent, half-open recovery")
            }
            Self::Storm429 => f.write_str("429 storm with Retry-After, then the engine"),
            Self::CrashMidStart(d) => write!(f, "start killed after {} ms, then gc", d.as_millis()),
        }
    }
}

fn when_name(w: When) -> &'static str {
    match w {
        When::AtStart => "at start",
        When::MidBuild => "mid-build",
        When::AtStop => "at stop",
    }
}

fn mode_name(m: &FaultMode) -> String {
    match m {
        FaultMode::Pass => "no fault".into(),
        FaultMode::Refuse => "engine down (refused)".into(),
        FaultMode::Blackhole => "blackhole".into(),
        FaultMode::Delay(d) => format!("engine slow ({} ms)", d.as_millis()),
        FaultMode::ResetAfter(n) => format!("reset after {n} B"),
        FaultMode::CutAfter(n) => format!("answer cut after {n} B"),
        FaultMode::Status {
            code,
            retry_after: Some(r),
        } => format!("{code} Retry-After {r}"),
        FaultMode::Status { code, .. } => format!("{code}"),
    }
}

/// The scenarios for `cfg`: 8 connection faults (and 3 HTTP ones when `cfg.http`) × the
/// three moments, plus the engine back after 2 s and 8 s, half-open recovery, a 429 storm
/// (HTTP) and a start killed after 30, 150 and 600 ms. 30 scenarios, 40 with HTTP.
pub fn scenarios(cfg: &FaultMatrixConfig) -> Vec<Scenario> {
    let mut faults = vec![
        FaultMode::Refuse,
        FaultMode::Blackhole,
        FaultMode::Delay(Duration::from_millis(300)),
        FaultMode::Delay(cfg.call_timeout + Duration::from_secs(2)),
        FaultMode::ResetAfter(0),
        FaultMode::ResetAfter(64),
        FaultMode::CutAfter(0),
        FaultMode::CutAfter(64),
    ];
    if cfg.http {
        faults.extend([
            FaultMode::status(500),
            FaultMode::status(503),
            FaultMode::too_many_requests(1),
        ]);
    }
    let mut out = Vec::new();
    for w in [When::AtStart, When::MidBuild, When::AtStop] {
        out.extend(faults.iter().map(|m| Scenario::Fault(m.clone(), w)));
    }
    out.push(Scenario::BackAfter(Duration::from_secs(2)));
    out.push(Scenario::BackAfter(Duration::from_secs(8)));
    out.push(Scenario::HalfOpen);
    if cfg.http {
        out.push(Scenario::Storm429);
    }
    for ms in [30, 150, 600] {
        out.push(Scenario::CrashMidStart(Duration::from_millis(ms)));
    }
    out
}

/// What one scenario saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario.
    pub scenario: String,
    /// What the faulty call answered (`ok` or the error's kind).
    pub answered: String,
    /// How long the faulty call took.
    pub call: Duration,
    /// How long until the executor worked again after the engine was back.
    pub recovery: Duration,
}

/// The matrix's outcomes, shown as a Markdown table.
#[derive(Debug, Clone, Default)]
pub struct MatrixReport {
    /// One per scenario, in order.
    pub outcomes: Vec<Outcome>,
}

impl fmt::Display for MatrixReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| scenario | answer | call | recovery |")?;
        writeln!(f, "|---|---|---|---|")?;
        for o in &self.outcomes {
            writeln!(
                f,
                "| {} | {} | {:.1} s | {:.1} s |",
                o.scenario,
                o.answered,
                o.call.as_secs_f64(),
                o.recovery.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// Fails the matrix naming the scenario.
macro_rules! broken {
    ($sc:expr, $($arg:tt)*) => {
        panic!("fault matrix: {}: {}", $sc, format!($($arg)*))
    };
}

mod run;
mod stories;

use run::Run;

/// Runs every scenario of [`scenarios`], each on a fresh executor from `factory` that
/// talks to its engine through the proxy it is given: `proxy` or, with
/// [`FaultMatrixConfig::lanes`] > 1, one of its twins (lanes run concurrently, each its
/// scenarios in turn). Panics naming the first broken rule, or when fewer than 30
/// scenarios ran. `SDX_FAULT_SCENARIOS=2,36` runs only those (debugging).
pub async fn fault_matrix<F, Fut>(
    factory: F,
    proxy: &FaultProxy,
    cfg: FaultMatrixConfig,
) -> MatrixReport
where
    F: Fn(&FaultProxy) -> Fut,
    Fut: Future<Output = Arc<dyn Executor>>,
{
    let only = only_scenarios();
    let all: Vec<(usize, Scenario)> = scenarios(&cfg)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| only.as_ref().is_none_or(|o| o.contains(&(i + 1))))
        .collect();
    let lanes = cfg.lanes.clamp(1, all.len().max(1));
    let mut proxies = vec![proxy.clone()];
    for _ in 1..lanes {
        proxies.push(proxy.twin().await.expect("fault matrix: a twin proxy"));
    }
    let runs = proxies.iter().enumerate().map(|(lane, p)| {
        let mine: Vec<(usize, Scenario)> = all
            .iter()
            .filter(|(i, _)| i % lanes == lane)
            .cloned()
            .collect();
        let (factory, cfg) = (&factory, &cfg);
        async move {
            let mut out = Vec::new();
            for (i, sc) in mine {
                p.set(FaultMode::Pass);
                let exec = factory(p).await;
                let first = cfg.first_build_id + 10 * i as u64;
                eprintln!("fault matrix: scenario {}: {sc}", i + 1);
                let o = run_scenario(exec, p, cfg, &sc, first).await;
                eprintln!(
                    "fault matrix: scenario {}: {} in {:.1} s, recovered in {:.1} s",
                    i + 1,
                    o.answered,
                    o.call.as_secs_f64(),
                    o.recovery.as_secs_f64()
                );
                out.push((i, o));
            }
            p.set(FaultMode::Pass);
            out
        }
    });
    let mut done: Vec<(usize, Outcome)> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    done.sort_by_key(|(i, _)| *i);
    let report = MatrixReport {
        outcomes: done.into_iter().map(|(_, o)| o).collect(),
    };
    if only.is_none() {
        assert!(
            report.outcomes.len() >= 30,
            "fault matrix: only {} scenarios",
            report.outcomes.len()
        );
    }
    report
}

/// The scenarios `SDX_FAULT_SCENARIOS` names (1-based numbers, comma-separated), to
/// rerun a few while debugging; all when it is unset.
fn only_scenarios() -> Option<Vec<usize>> {
    let v = std::env::var("SDX_FAULT_SCENARIOS").ok()?;
    Some(v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
}

/// Runs one scenario (builds `first .. first + 10`).
pub async fn run_scenario(
    exec: Arc<dyn Executor>,
    proxy: &FaultProxy,
    cfg: &FaultMatrixConfig,
    sc: &Scenario,
    first: u64,
) -> Outcome {
    let nonce = format!("{:016x}", fastrand::u64(..));
    let dispatch = capture::install(&nonce);
    let p = Run {
        exec,
        proxy: proxy.clone(),
        cfg: cfg.clone(),
        name: sc.to_string(),
        nonce: nonce.clone(),
        first,
    };
    let outcome = p.play(sc).with_subscriber(dispatch).await;
    let leaks = capture::finish(&nonce);
    if let Some(line) = leaks.first() {
        broken!(p.name, "a token appears in a log line: {line}");
    }
    outcome
}
