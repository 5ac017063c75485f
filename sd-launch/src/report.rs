//! Reporting that survives an unreachable API: step starts and ends, log lines and the
//! final status go through one ordered [`Reporter`], which delivers them at once while
//! the API answers and otherwise spools them (see [`crate::spool`]) and keeps retrying
//! with bounded, exponential backoff.
//!
//! A report the API refuses (a 4xx other than 429, e.g. 403 because the build is already
//! final) is dropped with a message: retrying would not change the answer. Transport
//! errors, 5xx and 429 are "unreachable": the report waits in the spool.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::api::{ApiClient, ApiError};
use crate::spool::{Entry, Spool};

/// First wait between delivery attempts while the API is unreachable.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between delivery attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether an error means "try again later" rather than "the API said no".
pub fn is_transient(e: &ApiError) -> bool {
    e.status.is_none_or(|s| s >= 500 || s == 429)
}

/// The next backoff after `d`.
fn grow(d: Duration) -> Duration {
    (d * 2).min(MAX_BACKOFF)
}

/// Calls `f` until it succeeds, fails for good (a 4xx other than 429), or `deadline`
/// passes, waiting with exponential backoff between attempts; the last error otherwise.
pub fn retry_until<T>(
    deadline: Instant,
    mut f: impl FnMut() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut backoff = FIRST_BACKOFF;
    let mut warned = false;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if !is_transient(&e) => return Err(e),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(e);
                }
                if !warned {
                    eprintln!(
                        "launch: {e}; retrying for up to {:.1} s",
                        (deadline - now).as_secs_f64()
                    );
                    warned = true;
                }
                std::thread::sleep(backoff.min(deadline - now));
                backoff = grow(backoff);
            }
        }
    }
}

#[derive(Debug)]
struct State {
    /// Reports not delivered yet, oldest first (also in the spool file).
    backlog: VecDeque<Entry>,
    /// When the next delivery attempt may be made.
    next_try: Instant,
    backoff: Duration,
    warned: bool,
}

/// The ordered, spooling reporter of one build; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Reporter {
    api: ApiClient,
    /// The same client without its own quick retries, for backlog attempts.
    once: ApiClient,
    spool: Option<Spool>,
    state: Arc<Mutex<State>>,
}

impl Reporter {
    /// A reporter delivering through `api` and spooling to `spool` (`None`: reports that
    /// cannot be delivered are kept in memory only).
    pub fn new(api: ApiClient, spool: Option<Spool>) -> Self {
        let once = api.clone().with_max_retries(0);
        Self {
            api,
            once,
            spool,
            state: Arc::new(Mutex::new(State {
                backlog: VecDeque::new(),
                next_try: Instant::now(),
                backoff: FIRST_BACKOFF,
                warned: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver(client: &ApiClient, e: &Entry) -> Result<(), ApiError> {
        match e {
            Entry::Status { status, message } => client.update_status(status, message.as_deref()),
            Entry::StepStart { step, start_time } => client.step_started_at(step, start_time),
            Entry::StepEnd {
                step,
                end_time,
                code,
            } => client.step_ended_at(step, end_time, *code),
            Entry::Logs { step, lines } => client.post_logs(step, lines),
        }
    }

    /// Reports `entry`: delivered now if the API answers and nothing waits before it,
    /// else added to the spool (and delivered later, in order).
    pub fn send(&self, entry: Entry) {
        let mut st = self.lock();
        if st.backlog.is_empty() {
            match Self::deliver(&self.api, &entry) {
                Ok(()) => return,
                Err(e) if !is_transient(&e) => {
                    eprintln!("launch: the API refused a report: {e}");
                    return;
                }
                Err(e) => {
                    if !st.warned {
                        let to = self
                            .spool
                            .as_ref()
                            .map(|s| format!("spooling to {}", s.path().display()))
                            .unwrap_or_else(|| "keeping reports in memory".into());
                        eprintln!("launch: the API is unreachable ({e}); {to} and retrying");
                        st.warned = true;
                    }
                    st.next_try = Instant::now() + st.backoff;
                }
            }
        }
        self.keep(&mut st, entry);
        if Instant::now() >= st.next_try {
            self.drain(&mut st);
        }
    }

    fn keep(&self, st: &mut State, entry: Entry) {
        if let Some(spool) = &self.spool
            && let Err(e) = spool.append(&entry)
        {
            eprintln!(
                "launch: cannot write the spool {}: {e}",
                spool.path().display()
            );
        }
        st.backlog.push_back(entry);
    }

    /// Delivers waiting reports in order until one fails transiently (then backs off).
    /// Returns whether nothing waits any more.
    fn drain(&self, st: &mut State) -> bool {
        while let Some(entry) = st.backlog.front() {
            match Self::deliver(&self.once, entry) {
                Ok(()) => {}
                Err(e) if !is_transient(&e) => {
                    eprintln!("launch: the API refused a spooled report: {e}");
                }
                Err(_) => {
                    st.next_try = Instant::now() + st.backoff;
                    st.backoff = grow(st.backoff);
                    return false;
                }
            }
            st.backlog.pop_front();
        }
        st.backoff = FIRST_BACKOFF;
        if let Some(spool) = &self.spool
            && let Err(e) = spool.remove()
        {
            eprintln!(
                "launch: cannot remove the spool {}: {e}",
                spool.path().display()
            );
        }
        true
    }

    /// How many reports wait for the API.
    pub fn pending(&self) -> usize {
        self.lock().backlog.len()
    }

    /// Tries to deliver every waiting report before `deadline`, with backoff. Returns
    /// whether all were delivered; otherwise they stay in the spool for the API to read
    /// when it adopts the build.
    pub fn flush(&self, deadline: Instant) -> bool {
        loop {
            let wait = {
                let mut st = self.lock();
                if st.backlog.is_empty() {
                    return true;
                }
                let now = Instant::now();
                if now >= st.next_try && self.drain(&mut st) {
                    if st.warned {
                        eprintln!("launch: the API is reachable again; every report was delivered");
                    }
                    return true;
                }
                let now = Instant::now();
                if now >= deadline {
                    if let Some(spool) = &self.spool {
                        let _ = spool.sync();
                        eprintln!(
                            "launch: {} report(s) could not be delivered; they stay in {}",
                            st.backlog.len(),
                            spool.path().display()
                        );
                    }
                    return false;
                }
                st.next_try
                    .saturating_duration_since(now)
                    .min(deadline - now)
            };
            std::thread::sleep(wait.max(Duration::from_millis(10)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    #[test]
    fn an_unreachable_api_spools_in_order_and_flush_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool.jsonl"));
        let api = ApiClient::new("http://127.0.0.1:9", 1, Token::new("t")).with_max_retries(0);
        let r = Reporter::new(api, Some(spool.clone()));
        let start = Entry::StepStart {
            step: "a".into(),
            start_time: "2025-01-01T00:00:00.000Z".into(),
        };
        let done = Entry::Status {
            status: "SUCCESS".into(),
            message: None,
        };
        r.send(start.clone());
        r.send(done.clone());
        assert_eq!(r.pending(), 2);
        assert!(!r.flush(Instant::now() + Duration::from_millis(300)));
        assert_eq!(crate::spool::read(spool.path()), vec![start, done]);
    }

    #[test]
    fn transient_errors_are_told_apart() {
        let e = |status| ApiError {
            request: "PUT /v4/builds/1".into(),
            status,
            message: String::new(),
        };
        assert!(is_transient(&e(None)));
        assert!(is_transient(&e(Some(503))));
        assert!(is_transient(&e(Some(429))));
        assert!(!is_transient(&e(Some(403))));
    }

    #[test]
    fn retry_until_stops_at_the_deadline_or_a_refusal() {
        let mut calls = 0;
        let r: Result<(), _> = retry_until(Instant::now() + Duration::from_millis(300), || {
            calls += 1;
            Err(ApiError {
                request: "GET /x".into(),
                status: None,
                message: "refused".into(),
            })
        });
        assert!(r.is_err());
        assert!(calls >= 2, "{calls}");
        let mut calls = 0;
        let r: Result<(), _> = retry_until(Instant::now() + Duration::from_secs(60), || {
            calls += 1;
            Err(ApiError {
                request: "GET /x".into(),
                status: Some(403),
                message: "no".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
