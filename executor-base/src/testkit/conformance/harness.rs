//! What each rule runs in: a [`Probe`] over a fresh executor, token capture in every
//! event and error, and the stop of every build a rule started.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use parking_lot::Mutex;
use tracing::instrument::WithSubscriber;

use crate::config::{StartConfig, StopConfig};
use crate::error::{Error, ErrorKind};
use crate::executor::Executor;
use crate::ids::BuildId;
use crate::status::{BuildStatus, Phase};
use crate::verdict::Verdict;

use super::ConformanceConfig;

/// What one check uses: the executor, its tokens, the builds it started.
pub(crate) struct Probe {
    pub(crate) rule: &'static str,
    pub(crate) exec: Arc<dyn Executor>,
    pub(crate) cfg: ConformanceConfig,
    pub(crate) nonce: String,
    pub(crate) started: Mutex<Vec<StopConfig>>,
    /// The last phase seen per build: every change must follow the state machine.
    pub(crate) phases: Mutex<HashMap<BuildId, Phase>>,
}

impl Probe {
    pub(crate) fn id(&self, offset: u64) -> u64 {
        self.cfg.first_build_id + offset
    }

    /// A distinctive token per build: `sdx-conformance-secret-<nonce>-<id>`.
    pub(crate) fn token(&self, id: u64) -> String {
        format!("sdx-conformance-secret-{}-{id}", self.nonce)
    }

    pub(crate) fn config(&self, offset: u64) -> StartConfig {
        let id = self.id(offset);
        StartConfig::builder(id, &self.cfg.api_uri, &self.cfg.container, self.token(id))
            .job_id(1)
            .build()
            .unwrap_or_else(|e| panic!("conformance: ConformanceConfig is not usable: {e}"))
    }

    /// Panics when `text` (something the executor produced) contains a token.
    pub(crate) fn look(&self, what: &str, text: &str) {
        if text.contains(&self.nonce) {
            broken!("tokens_never_leak", "a token appears in {what}: {text}");
        }
    }

    pub(crate) fn look_error(&self, what: &str, e: &Error) {
        self.look(what, &e.to_string());
        self.look(what, &format!("{e:?}"));
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            self.look(what, &s.to_string());
            source = s.source();
        }
    }

    pub(crate) fn look_status(&self, s: &BuildStatus) {
        self.look("a status", &s.to_string());
        self.look("a status", &format!("{s:?}"));
        self.look("a status", &serde_json::to_string(s).unwrap_or_default());
    }

    pub(crate) fn look_stats(&self) {
        let s = self.exec.stats();
        self.look("stats()", &format!("{s:?}"));
        self.look("stats()", &serde_json::to_string(&s).unwrap_or_default());
    }

    pub(crate) fn seen<T>(&self, what: &str, r: &Result<T, Error>) {
        if let Err(e) = r {
            self.look_error(what, e);
        }
    }

    pub(crate) async fn start(&self, b: &StartConfig) -> Result<(), Error> {
        let r = self.exec.start(b).await;
        self.seen("a start error", &r);
        // Tracked even when start failed: the suite stops what may have been created.
        self.started.lock().push(b.to_stop());
        r
    }

    pub(crate) async fn stop(&self, b: &StartConfig) -> Result<(), Error> {
        let r = self.exec.stop(&b.to_stop()).await;
        self.seen("a stop error", &r);
        r
    }

    pub(crate) async fn status(&self, b: &StartConfig) -> Result<BuildStatus, Error> {
        let r = self.exec.status(&b.to_stop()).await;
        self.seen("a status error", &r);
        if let Ok(s) = &r {
            self.look_status(s);
            let prev = self.phases.lock().insert(b.build_id, s.phase);
            if let Some(prev) = prev
                && !prev.can_become(s.phase)
            {
                broken!(
                    self.rule,
                    "build {} went from {prev} to {}, which the state machine forbids",
                    b.build_id,
                    s.phase
                );
            }
        }
        r
    }

    pub(crate) async fn verify(&self, b: &StartConfig) -> Result<Verdict, Error> {
        let r = self.exec.verify(b).await;
        self.seen("a verify error", &r);
        if let Ok(v) = &r {
            self.look("a verdict", &format!("{v} {v:?}"));
        }
        r
    }

    /// Polls `status` until `pred` holds.
    pub(crate) async fn wait_for(
        &self,
        rule: &str,
        b: &StartConfig,
        pred: impl Fn(&BuildStatus) -> bool,
        what: &str,
    ) -> BuildStatus {
        let deadline = tokio::time::Instant::now() + self.cfg.settle;
        let mut every = Duration::from_millis(10);
        let mut last: Option<BuildStatus> = None;
        let mut last_err: Option<String> = None;
        loop {
            match self.status(b).await {
                Ok(s) => {
                    if pred(&s) {
                        return s;
                    }
                    if s.is_terminal() {
                        broken!(
                            rule,
                            "build {} became {s} while waiting for {what}",
                            b.build_id
                        );
                    }
                    last = Some(s);
                }
                Err(e) if e.kind() == ErrorKind::NotFound || e.is_temporary() => {
                    last_err = Some(e.to_string())
                }
                Err(e) => broken!(rule, "status of build {} failed: {e}", b.build_id),
            }
            if tokio::time::Instant::now() >= deadline {
                broken!(
                    rule,
                    "build {} did not reach {what} within {:?} (last status: {}, last error: {})",
                    b.build_id,
                    self.cfg.settle,
                    last.map_or("none".into(), |s| s.to_string()),
                    last_err.unwrap_or_else(|| "none".into())
                );
            }
            tokio::time::sleep(every).await;
            every = (every * 2).min(Duration::from_millis(250));
        }
    }

    /// After `stop`, `status` must settle on a terminal status other than `Succeeded`
    /// and `Lost` (the build was running until stopped).
    pub(crate) async fn expect_stopped(&self, rule: &str, b: &StartConfig) {
        let deadline = tokio::time::Instant::now() + self.cfg.settle;
        loop {
            match self.status(b).await {
                Ok(s) if s.is_terminal() => {
                    if matches!(s.phase, Phase::Succeeded | Phase::Lost) {
                        broken!(
                            rule,
                            "build {} stopped while running reports {s}, expected canceled",
                            b.build_id
                        );
                    }
                    return;
                }
                Ok(s) if tokio::time::Instant::now() >= deadline => {
                    broken!(
                        rule,
                        "build {} still {s} {:?} after stop",
                        b.build_id,
                        self.cfg.settle
                    )
                }
                Ok(_) => {}
                Err(e) if e.is_temporary() && tokio::time::Instant::now() < deadline => {}
                Err(e) => broken!(
                    rule,
                    "status of build {} after stop: expected canceled, got {e}",
                    b.build_id
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs one check: capture on, the body, then stop every build it started (also when
/// the body panicked), then no captured log line may hold a token.
pub(crate) async fn check<F, Fut>(
    rule: &'static str,
    exec: Arc<dyn Executor>,
    cfg: &ConformanceConfig,
    body: F,
) where
    F: FnOnce(Arc<Probe>) -> Fut,
    Fut: Future<Output = ()>,
{
    let nonce = format!("{:016x}", fastrand::u64(..));
    let probe = Arc::new(Probe {
        rule,
        exec,
        cfg: cfg.clone(),
        nonce: nonce.clone(),
        started: Mutex::new(Vec::new()),
        phases: Mutex::new(HashMap::new()),
    });
    let dispatch = capture::install(&nonce);
    let outcome = AssertUnwindSafe(body(probe.clone()))
        .catch_unwind()
        .with_subscriber(dispatch.clone())
        .await;
    let started: Vec<StopConfig> = std::mem::take(&mut *probe.started.lock());
    let stops = join_all(started.iter().map(|s| probe.exec.stop(s)))
        .with_subscriber(dispatch)
        .await;
    let leaks = capture::finish(&nonce);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    for (s, r) in started.iter().zip(stops) {
        if let Err(e) = r {
            probe.look_error("a stop error", &e);
            broken!(
                "stop_is_idempotent",
                "stop of build {} at the end of `{rule}` failed: {e}",
                s.build_id
            );
        }
    }
    if let Some(line) = leaks.first() {
        broken!(
            "tokens_never_leak",
            "a token appears in a log line captured during `{rule}`: {line}"
        );
    }
}

/// A `tracing` layer that looks for the running checks' tokens in every event and span.
pub(crate) mod capture {
    use std::fmt::Write as _;
    use std::sync::OnceLock;

    use parking_lot::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::{Dispatch, Event, Subscriber, span};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    /// (nonce, leaked lines) of the checks running now.
    static WATCHED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());
    static DISPATCH: OnceLock<Dispatch> = OnceLock::new();

    struct Capture;

    #[derive(Default)]
    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
        fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
            let _ = write!(self.0, " {}={} ({:?})", field.name(), value, value);
        }
    }

    fn inspect(target: &str, line: Line) {
        let mut w = WATCHED.lock();
        for (nonce, leaks) in w.iter_mut() {
            if line.0.contains(nonce.as_str()) {
                leaks.push(format!("[{target}]{}", line.0));
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut line = Line::default();
            event.record(&mut line);
            inspect(event.metadata().target(), line);
        }
        fn on_new_span(&self, attrs: &span::Attributes<'_>, _id: &span::Id, _ctx: Context<'_, S>) {
            let mut line = Line(format!(" span {}", attrs.metadata().name()));
            attrs.record(&mut line);
            inspect(attrs.metadata().target(), line);
        }
        fn on_record(&self, _id: &span::Id, values: &span::Record<'_>, _ctx: Context<'_, S>) {
            let mut line = Line::default();
            values.record(&mut line);
            inspect("span", line);
        }
    }

    /// Watches for `nonce`; returns the capturing dispatcher (also made the global
    /// default when no global subscriber was set yet).
    pub(crate) fn install(nonce: &str) -> Dispatch {
        let d = DISPATCH
            .get_or_init(|| {
                let d = Dispatch::new(tracing_subscriber::registry().with(Capture));
                let _ = tracing::dispatcher::set_global_default(d.clone());
                d
            })
            .clone();
        WATCHED.lock().push((nonce.to_string(), Vec::new()));
        d
    }

    /// Stops watching `nonce`; returns the lines that contained it.
    pub(crate) fn finish(nonce: &str) -> Vec<String> {
        let mut w = WATCHED.lock();
        match w.iter().position(|(n, _)| n == nonce) {
            Some(i) => w.swap_remove(i).1,
            None => Vec::new(),
        }
    }
}
