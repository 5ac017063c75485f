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

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::instrument::WithSubscriber;

use super::conformance::capture;
use super::proxy::{FaultMode, FaultProxy};
use crate::config::StartConfig;
use crate::engine::refused_by_breaker;
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::ids::BuildId;
use crate::status::{BuildStatus, FailureReason, Phase};

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
    /// [`FailureReason::InfrastructureLost`]; the matrix then accepts that outcome (never
    /// `Succeeded`, and stop and gc must still leave nothing of the build).
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

struct Run {
    exec: Arc<dyn Executor>,
    proxy: FaultProxy,
    cfg: FaultMatrixConfig,
    name: String,
    nonce: String,
    first: u64,
}

/// What a fault may answer: kinds that say "the engine did not do it (or we cannot
/// tell)", never a judgement on the build or its config.
fn allowed_kinds(m: &FaultMode) -> &'static [ErrorKind] {
    use ErrorKind::*;
    match m {
        FaultMode::Refuse => &[Unavailable],
        FaultMode::Blackhole | FaultMode::Delay(_) => &[Timeout, Unavailable],
        FaultMode::Status { code: 429, .. } => &[RateLimited],
        FaultMode::Status { .. } => &[Unavailable, Unexpected],
        _ => &[Unavailable, Timeout, Unexpected],
    }
}

/// Whether the fault lets calls through unharmed (a short delay).
fn harmless(m: &FaultMode, cfg: &FaultMatrixConfig) -> bool {
    matches!(m, FaultMode::Pass) || matches!(m, FaultMode::Delay(d) if *d < cfg.call_timeout)
}

impl Run {
    fn config(&self, n: u64) -> StartConfig {
        let id = self.first + n;
        StartConfig::builder(id, &self.cfg.api_uri, &self.cfg.container, self.token(id))
            .job_id(1)
            .build()
            .unwrap_or_else(|e| panic!("fault matrix: config is not usable: {e}"))
    }

    fn token(&self, id: u64) -> String {
        format!("sdx-fault-matrix-secret-{}-{id}", self.nonce)
    }

    fn look(&self, what: &str, text: &str) {
        if text.contains(&self.nonce) {
            broken!(self.name, "a token appears in {what}: {text}");
        }
    }

    fn look_error(&self, e: &Error) {
        self.look("an error", &e.to_string());
        self.look("an error", &format!("{e:?}"));
    }

    fn look_status(&self, s: &BuildStatus) {
        self.look("a status", &s.to_string());
        self.look("a status", &format!("{s:?}"));
        if s.phase == Phase::Succeeded {
            broken!(self.name, "a build that runs until stopped is reported {s}");
        }
    }

    /// A fault's error: temporary, of an allowed kind, never `CircuitOpen`.
    fn check_fault_error(&self, m: &FaultMode, what: &str, e: &Error) {
        self.look_error(e);
        if e.kind() == ErrorKind::CircuitOpen {
            broken!(
                self.name,
                "{what} answered CircuitOpen, not the real cause: {e}"
            );
        }
        if !allowed_kinds(m).contains(&e.kind()) && !refused_by_breaker(e) {
            broken!(
                self.name,
                "{what} answered {:?} (allowed: {:?}): {e}",
                e.kind(),
                allowed_kinds(m)
            );
        }
        if !e.is_temporary() {
            broken!(
                self.name,
                "{what} answered a permanent error for an engine fault: {e}"
            );
        }
        if e.message().is_empty() {
            broken!(self.name, "{what} answered an error without a message");
        }
    }

    async fn timed<T>(&self, what: &str, f: impl Future<Output = T>) -> (T, Duration) {
        let t = Instant::now();
        let r = f.await;
        let d = t.elapsed();
        if d > self.cfg.call_bound {
            broken!(
                self.name,
                "{what} took {d:?} (bound {:?})",
                self.cfg.call_bound
            );
        }
        (r, d)
    }

    async fn start_ok(&self, b: &StartConfig) {
        if let Err(e) = self.exec.start(b).await {
            self.look_error(&e);
            broken!(self.name, "start without a fault failed: {e}");
        }
        self.wait_running(b).await;
    }

    async fn wait_running(&self, b: &StartConfig) {
        self.wait_running_or_lost(b, false).await;
    }

    /// Whether `s` is the outcome a fault that broke the backend's connection may cause
    /// ([`FaultMatrixConfig::lost_on_disconnect`]).
    fn lost_to_fault(&self, s: &BuildStatus, faulty: bool) -> bool {
        faulty
            && self.cfg.lost_on_disconnect
            && s.reason() == Some(FailureReason::InfrastructureLost)
    }

    /// Waits until build `b` runs; returns `false` instead when it was lost to the fault
    /// (`faulty`: the scenario's fault may have broken the backend's connection).
    async fn wait_running_or_lost(&self, b: &StartConfig, faulty: bool) -> bool {
        let t = Instant::now();
        loop {
            match self.exec.status(&b.to_stop()).await {
                Ok(s) => {
                    self.look_status(&s);
                    if s.phase == Phase::Running {
                        return true;
                    }
                    if self.lost_to_fault(&s, faulty) {
                        return false;
                    }
                    if s.is_terminal() {
                        broken!(self.name, "build {} ended: {s}", b.build_id);
                    }
                }
                Err(e) => self.look_error(&e),
            }
            if t.elapsed() > self.cfg.recovery_bound {
                broken!(
                    self.name,
                    "build {} not Running within {:?}",
                    b.build_id,
                    self.cfg.recovery_bound
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// With the engine back: the build is stopped (retried within the recovery bound),
    /// never reported succeeded, and after gc nothing of it is left.
    async fn stop_clean(&self, b: &StartConfig) {
        let t = Instant::now();
        loop {
            match self.exec.stop(&b.to_stop()).await {
                Ok(()) => break,
                Err(e) => {
                    self.look_error(&e);
                    if t.elapsed() > self.cfg.recovery_bound {
                        broken!(
                            self.name,
                            "stop of build {} still fails once the engine is back: {e}",
                            b.build_id
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A stop may be asynchronous on the engine (Jenkins aborts a build in its own
        // time): the build must have ended within the recovery bound.
        loop {
            match self.exec.status(&b.to_stop()).await {
                Ok(s) => {
                    self.look_status(&s);
                    if !matches!(s.phase, Phase::Running | Phase::Pending | Phase::Pulling) {
                        return;
                    }
                    if t.elapsed() > self.cfg.recovery_bound {
                        broken!(self.name, "build {} still {s} after stop", b.build_id);
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                Err(e) => {
                    // A backend may still be reconnecting (a watch re-listing): fine
                    // while temporary and within the recovery bound.
                    self.look_error(&e);
                    if !e.is_temporary() || t.elapsed() > self.cfg.recovery_bound {
                        broken!(self.name, "status after stop failed: {e}");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After stop, `gc` leaves nothing of `builds`: a request a killed start had already
    /// sent may land on the engine after the first `gc` (a busy daemon creates the
    /// container a moment later), so `gc` runs again until nothing is left or the
    /// recovery bound has passed, as a periodic `gc` would.
    async fn no_orphans(&self, builds: &[&StartConfig]) {
        let t = Instant::now();
        loop {
            if let Err(e) = self.exec.gc(false).await {
                self.look_error(&e);
                broken!(self.name, "gc failed once the engine is back: {e}");
            }
            let Some(left) = &self.cfg.leftovers else {
                break;
            };
            let mut found = Vec::new();
            for b in builds {
                let l = left(b.build_id).await;
                if !l.is_empty() {
                    found.push((b.build_id, l));
                }
            }
            let Some((id, l)) = found.into_iter().next() else {
                break;
            };
            if t.elapsed() > self.cfg.recovery_bound {
                broken!(self.name, "build {id} left {l:?} after stop and gc");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats = self.exec.stats();
        self.look("stats", &format!("{stats:?}"));
    }

    /// With the engine back, a new build starts at once (retried within the bound).
    async fn recovers(&self, n: u64) -> Duration {
        let b = self.config(n);
        let t = Instant::now();
        loop {
            match self.exec.start(&b).await {
                Ok(()) => break,
                Err(e) => {
                    self.look_error(&e);
                    if t.elapsed() > self.cfg.recovery_bound {
                        broken!(
                            self.name,
                            "no start works {:?} after the engine is back: {e}",
                            t.elapsed()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let d = t.elapsed();
        self.wait_running(&b).await;
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        d
    }

    async fn play(&self, sc: &Scenario) -> Outcome {
        let (answered, call) = match sc {
            Scenario::Fault(m, w) => self.fault(m, *w).await,
            Scenario::BackAfter(d) => self.back_after(*d).await,
            Scenario::HalfOpen => self.half_open().await,
            Scenario::Storm429 => self.storm().await,
            Scenario::CrashMidStart(d) => self.crash_mid_start(*d).await,
        };
        self.proxy.set(FaultMode::Pass);
        let recovery = self.recovers(9).await;
        Outcome {
            scenario: self.name.clone(),
            answered,
            call,
            recovery,
        }
    }

    fn answer<T>(&self, m: &FaultMode, what: &str, r: &Result<T, Error>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => {
                self.check_fault_error(m, what, e);
                format!("{:?}", e.kind())
            }
        }
    }

    async fn fault(&self, m: &FaultMode, w: When) -> (String, Duration) {
        let b = self.config(0);
        let harmless = harmless(m, &self.cfg);
        let out = match w {
            When::AtStart => {
                self.proxy.set(m.clone());
                let (r, d) = self.timed("start", self.exec.start(&b)).await;
                let a = self.answer(m, "start", &r);
                if harmless && r.is_err() {
                    broken!(self.name, "start failed under a harmless delay: {a}");
                }
                self.proxy.set(FaultMode::Pass);
                if r.is_ok() {
                    self.wait_running_or_lost(&b, !harmless).await;
                }
                (a, d)
            }
            When::MidBuild => {
                self.start_ok(&b).await;
                self.proxy.set(m.clone());
                let (r, d) = self.timed("status", self.exec.status(&b.to_stop())).await;
                let mut lost = false;
                let a = match &r {
                    Ok(s) if self.lost_to_fault(s, !harmless) => {
                        lost = true;
                        "lost with the connection".to_string()
                    }
                    Ok(s) => {
                        self.look_status(s);
                        if s.is_terminal() {
                            broken!(self.name, "a fault mid-build made the build {s}");
                        }
                        format!("ok ({})", s.phase)
                    }
                    Err(e) => {
                        if harmless {
                            broken!(self.name, "status failed under a harmless delay: {e}");
                        }
                        self.answer(m, "status", &r)
                    }
                };
                self.proxy.set(FaultMode::Pass);
                // The build kept running through the fault (or, where the backend
                // observes it through the broken connection, is known lost).
                if !lost && !self.wait_running_or_lost(&b, !harmless).await {
                    (format!("{a}, then lost with the connection"), d)
                } else {
                    (a, d)
                }
            }
            When::AtStop => {
                self.start_ok(&b).await;
                self.proxy.set(m.clone());
                let before = (self.proxy.accepted(), self.proxy.received());
                let (r, d) = self.timed("stop", self.exec.stop(&b.to_stop())).await;
                let a = self.answer(m, "stop", &r);
                if harmless && r.is_err() {
                    broken!(self.name, "stop failed under a harmless delay: {a}");
                }
                if *m != FaultMode::Refuse
                    && (self.proxy.accepted(), self.proxy.received()) == before
                {
                    broken!(
                        self.name,
                        "stop was not attempted (nothing reached the engine)"
                    );
                }
                self.proxy.set(FaultMode::Pass);
                (a, d)
            }
        };
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        out
    }

    async fn back_after(&self, after: Duration) -> (String, Duration) {
        let b = self.config(0);
        self.proxy.set(FaultMode::Refuse);
        let proxy = self.proxy.clone();
        let back = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            proxy.set(FaultMode::Pass);
        });
        let (r, d) = self.timed("start", self.exec.start(&b)).await;
        let a = self.answer(&FaultMode::Refuse, "start", &r);
        let _ = back.await;
        if r.is_ok() {
            self.wait_running(&b).await;
        }
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        (a, d)
    }

    async fn half_open(&self) -> (String, Duration) {
        let m = if self.cfg.http {
            FaultMode::status(503)
        } else {
            FaultMode::CutAfter(0)
        };
        // A build that runs before the engine starts failing: its stop must still be
        // sent once every breaker is open.
        let running = self.config(9);
        self.start_ok(&running).await;
        self.proxy.set(m.clone());
        let mut builds = Vec::new();
        let mut last = String::new();
        let mut took = Duration::ZERO;
        let mut opened = false;
        for n in 0..8 {
            let b = self.config(n);
            let (r, d) = self.timed("start", self.exec.start(&b)).await;
            last = self.answer(&m, "start", &r);
            took = d;
            if r.is_ok() {
                broken!(self.name, "a start succeeded while every call fails");
            }
            builds.push(b);
            if r.as_ref().err().is_some_and(refused_by_breaker) {
                opened = true;
                break;
            }
        }
        if !opened {
            broken!(self.name, "8 failing starts opened no breaker");
        }
        // A stop goes to the engine however open the breakers are.
        let before = (self.proxy.accepted(), self.proxy.received());
        let (r, _) = self.timed("stop", self.exec.stop(&running.to_stop())).await;
        let _ = self.answer(&m, "stop", &r);
        if (self.proxy.accepted(), self.proxy.received()) == before {
            broken!(self.name, "a stop with the breakers open was not attempted");
        }
        self.proxy.set(FaultMode::Pass);
        builds.push(running);
        for b in &builds {
            self.stop_clean(b).await;
        }
        let refs: Vec<&StartConfig> = builds.iter().collect();
        self.no_orphans(&refs).await;
        (format!("{last}, breaker opened"), took)
    }

    async fn storm(&self) -> (String, Duration) {
        let b = self.config(0);
        let m = FaultMode::too_many_requests(1);
        self.proxy.script(std::iter::repeat_n(m.clone(), 20));
        let (r, d) = self.timed("start", self.exec.start(&b)).await;
        let a = self.answer(&m, "start", &r);
        self.proxy.script([]);
        if r.is_ok() {
            self.wait_running(&b).await;
        }
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        (a, d)
    }

    async fn crash_mid_start(&self, after: Duration) -> (String, Duration) {
        let b = self.config(0);
        let exec = self.exec.clone();
        let bb = b.clone();
        let t = Instant::now();
        let task = tokio::spawn(async move { exec.start(&bb).await });
        tokio::time::sleep(after).await;
        task.abort();
        let a = match task.await {
            Ok(Ok(())) => "finished before the kill".to_string(),
            Ok(Err(e)) => {
                self.look_error(&e);
                format!("{:?}", e.kind())
            }
            Err(_) => "killed".to_string(),
        };
        let d = t.elapsed();
        self.stop_clean(&b).await;
        self.no_orphans(&[&b]).await;
        (a, d)
    }
}
