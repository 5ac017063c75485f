//! Following one submitted build until it ends: the Gearman executor's per-build task.
//!
//! Each build has its own client connection to gearmand, so that withdrawing a queued
//! build is exact: gearmand drops a foreground job that was never handed to a worker
//! once its only client disconnects. The task maps the job's packets to a
//! [`BuildStatus`]:
//!
//! | seen                                         | status                                   |
//! |----------------------------------------------|------------------------------------------|
//! | `JOB_CREATED`                                | `Pending` (queued on gearmand)           |
//! | first `WORK_DATA` {name, number, manager}    | `Running` (`Pending` while `worker_extra.starting`) |
//! | `WORK_STATUS` after the announcement         | `Running`                                |
//! | `WORK_DATA` {result} + `WORK_COMPLETE`/`FAIL` | from `result` (`SUCCESS`, `ABORTED`, ...) |
//! | `WORK_EXCEPTION`                             | `Failed` (typed from the launcher error) |
//! | a second announcement with another manager or number | `Lost` (re-queued to another attempt, which is stopped) |
//! | `GET_STATUS`: known but no worker after the announcement | `Lost` (launcher died; the re-queued job is withdrawn) |
//! | `GET_STATUS`: unknown job                    | `Lost`                                   |
//! | connection to gearmand broken                | `Lost` (outcome unobservable; the build is stopped) |
//! | no launcher took it within `queueTimeoutSecs` | `Failed(unschedulable)`, withdrawn      |
//! | `stop` answered by the launcher              | `Canceled`                               |

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use executor_base::engine::{CallClass, Idempotency};
use executor_base::{BuildStatus, BuildTimings, Error, ErrorKind, FailureReason, Phase};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::client::{GearmanClient, JobEvent, SubmittedJob};
use crate::executor::Inner;
use crate::zuul::{BuildRef, BuildReport, LauncherException, StartAnnouncement, StopTarget};

/// What the executor knows about a build's Gearman job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct GearmanBuildInfo {
    /// The function it was submitted to (`build:<job>[:<node>]`).
    pub function: String,
    /// gearmand's job handle.
    pub handle: String,
    /// `ZUUL_UUID` (also the Gearman unique id).
    pub uuid: String,
    /// The launcher that runs it (`stop:<manager>`), once announced.
    pub manager: Option<String>,
    /// The job name the launcher announced.
    pub name: Option<String>,
    /// The build number the launcher announced.
    pub number: Option<u64>,
    /// The build URL the launcher announced.
    pub url: Option<String>,
    /// The last `WORK_STATUS` (numerator, denominator).
    pub progress: Option<(u64, u64)>,
    /// How long after `start` was called the launcher announced the build (its first
    /// `WORK_DATA`): the dispatch latency.
    pub time_to_announcement: Option<Duration>,
}

/// Requests to a build's task.
pub(crate) enum Cmd {
    Stop(oneshot::Sender<Result<(), Error>>),
}

/// A tracked build, shared between the executor and its task.
pub(crate) struct Tracked {
    pub(crate) status: watch::Sender<BuildStatus>,
    pub(crate) info: Mutex<GearmanBuildInfo>,
    pub(crate) cmds: mpsc::UnboundedSender<Cmd>,
    pub(crate) finished_at: Mutex<Option<Instant>>,
    /// When `start` was called.
    pub(crate) began: Instant,
    /// The launcher of a build lost with the connection while it ran, until a stop of it
    /// was confirmed: the build may still run there, so `stop` (and `stop_all`) ask that
    /// launcher again.
    pub(crate) orphaned_on: Mutex<Option<StartAnnouncement>>,
    /// What the job's packets told of its timings (see [`Tracked::mark`]).
    pub(crate) timings: Mutex<BuildTimings>,
}

impl Tracked {
    pub(crate) fn new(
        info: GearmanBuildInfo,
        began: Instant,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Cmd>) {
        let (cmds, rx) = mpsc::unbounded_channel();
        let status = watch::Sender::new(BuildStatus::pending(format!(
            "queued on gearmand as {} ({})",
            info.handle, info.function
        )));
        let t = Arc::new(Self {
            status,
            info: Mutex::new(info),
            cmds,
            finished_at: Mutex::new(None),
            began,
            orphaned_on: Mutex::new(None),
            timings: Mutex::new(BuildTimings {
                accepted: chrono::Duration::from_std(began.elapsed())
                    .ok()
                    .map(|ago| chrono::Utc::now() - ago),
                ..BuildTimings::default()
            }),
        });
        (t, rx)
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.status.borrow().is_terminal()
    }

    /// Sets the timestamp `field` picks to now, unless it is already known. Gearman
    /// knows: accepted (`start` called), scheduled (a launcher announced the build, its
    /// first `WORK_DATA`), running (announced running, or its first `WORK_STATUS`) and
    /// finished (the job's end, when the build ran), all by this process' clock as the
    /// packets arrive; no pulls, no memory.
    fn mark(&self, field: fn(&mut BuildTimings) -> &mut Option<DateTime<Utc>>) {
        let mut t = self.timings.lock();
        let slot = field(&mut t);
        if slot.is_none() {
            *slot = Some(Utc::now());
        }
    }
}

/// Whether the task goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

struct Tracker {
    inner: Arc<Inner>,
    shared: Arc<Tracked>,
    client: GearmanClient,
    events: mpsc::UnboundedReceiver<JobEvent>,
    handle: String,
    announced: Option<StartAnnouncement>,
    report: Option<BuildReport>,
    stop_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    stop_deadline: Option<Instant>,
}

/// Follows the build until it ends; see the module docs.
pub(crate) async fn track(
    inner: Arc<Inner>,
    shared: Arc<Tracked>,
    client: GearmanClient,
    job: SubmittedJob,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let _in_flight = crate::in_flight::InFlight::enter("executor");
    let mut t = Tracker {
        inner,
        shared,
        client,
        events: job.events,
        handle: job.handle,
        announced: None,
        report: None,
        stop_waiters: Vec::new(),
        stop_deadline: None,
    };
    let queue_deadline = Instant::now() + t.inner.cfg.queue_timeout();
    let every = t.inner.cfg.liveness_interval();
    let mut liveness = tokio::time::interval_at(Instant::now() + every, every);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop_deadline = t
            .stop_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let flow = tokio::select! {
            ev = t.events.recv() => t.on_event(ev.unwrap_or(JobEvent::Disconnected)).await,
            Some(Cmd::Stop(reply)) = cmds.recv() => t.on_stop(reply).await,
            _ = liveness.tick() => t.check_liveness().await,
            _ = tokio::time::sleep_until(queue_deadline), if t.announced.is_none() && t.stop_deadline.is_none() => {
                let mut s = BuildStatus::failed(
                    FailureReason::Unschedulable,
                    format!("no launcher took the build within {:?}; withdrawn from gearmand", t.inner.cfg.queue_timeout()),
                    None,
                );
                if let Some(f) = s.failure.as_mut() {
                    f.build_started = Some(false);
                }
                t.finish(s)
            }
            _ = tokio::time::sleep_until(stop_deadline), if t.stop_deadline.is_some() => {
                t.stop_deadline = None;
                let msg = "the launcher has not started the build yet; the stop is applied once it does";
                t.reply_stop(|| Err(Error::new(ErrorKind::Timeout, msg).with_executor(crate::SCHEME).temporary()));
                Flow::Continue
            }
        };
        if flow == Flow::Done {
            break;
        }
    }
    // Dropping the client closes this build's connection: a job still queued on gearmand
    // is withdrawn.
}

impl Tracker {
    fn status(&self) -> BuildStatus {
        self.shared.status.borrow().clone()
    }

    /// Records the terminal status (once), answers waiting stops and ends the task.
    fn finish(&mut self, status: BuildStatus) -> Flow {
        if !self.shared.is_terminal() {
            tracing::info!(handle = %self.handle, status = %status, "gearman build finished");
            self.inner.counter.finished(&status);
            // Before the status: whoever sees it final finds the end in the timings.
            if self.shared.timings.lock().running.is_some() {
                self.shared.mark(|t| &mut t.finished);
            }
            self.shared.status.send_replace(status);
            *self.shared.finished_at.lock() = Some(Instant::now());
        }
        self.reply_stop(|| Ok(()));
        Flow::Done
    }

    fn reply_stop(&mut self, answer: impl Fn() -> Result<(), Error>) {
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(answer());
        }
    }

    fn started(&self) -> bool {
        self.announced.is_some()
    }

    async fn on_event(&mut self, ev: JobEvent) -> Flow {
        match ev {
            JobEvent::Data(d) => {
                if let Some(r) = BuildReport::from_data(&d) {
                    self.report = Some(r);
                } else if let Some(a) = StartAnnouncement::from_data(&d) {
                    return self.on_announcement(a).await;
                }
                Flow::Continue
            }
            JobEvent::Warning(w) => {
                tracing::debug!(handle = %self.handle, warning = %String::from_utf8_lossy(&w), "launcher warning");
                Flow::Continue
            }
            JobEvent::Status {
                numerator,
                denominator,
            } => {
                self.shared.info.lock().progress = Some((numerator, denominator));
                // Zuul launchers send WORK_STATUS once the build runs.
                if self.started() && self.status().phase == Phase::Pending {
                    self.shared.mark(|t| &mut t.running);
                    self.shared.status.send_replace(BuildStatus::running());
                }
                Flow::Continue
            }
            JobEvent::Disconnected => {
                if let Some(a) = self.announced.clone() {
                    // Nobody can see this build's outcome any more: do not let it run on.
                    // If gearmand cannot be reached now, the next `stop` asks again.
                    *self.shared.orphaned_on.lock() = Some(a.clone());
                    let (inner, shared) = (self.inner.clone(), self.shared.clone());
                    tokio::spawn(async move { stop_orphan(&inner, &shared).await });
                }
                let s = BuildStatus::lost(
                    Some(self.started()),
                    "connection to gearmand lost: the build's outcome can no longer be observed",
                );
                self.finish(s)
            }
            terminal => {
                let s = self.terminal_status(terminal);
                self.finish(s)
            }
        }
    }

    /// The status for `WORK_COMPLETE`, `WORK_FAIL` or `WORK_EXCEPTION`.
    fn terminal_status(&self, ev: JobEvent) -> BuildStatus {
        match ev {
            JobEvent::Complete(d) => self
                .report
                .clone()
                .or_else(|| BuildReport::from_data(&d))
                .map_or_else(BuildStatus::succeeded, |r| r.to_status()),
            JobEvent::Exception(d) => LauncherException::from_data(&d).to_status(),
            _ => match &self.report {
                Some(r) => r.to_status(),
                None if self.started() => BuildStatus::lost(
                    Some(true),
                    "the launcher failed the job without a result (geard fails the job of a worker that went away mid-build)",
                ),
                None => {
                    let mut s = BuildStatus::failed(
                        FailureReason::StartRefused,
                        "the launcher failed the job before starting the build",
                        None,
                    );
                    if let Some(f) = s.failure.as_mut() {
                        f.build_started = Some(false);
                    }
                    s
                }
            },
        }
    }

    async fn on_announcement(&mut self, a: StartAnnouncement) -> Flow {
        match &self.announced {
            None => {
                {
                    let mut info = self.shared.info.lock();
                    info.manager = Some(a.manager.clone());
                    info.name = Some(a.name.clone());
                    info.number = Some(a.number);
                    info.url = a.url.clone();
                    info.time_to_announcement = Some(self.shared.began.elapsed());
                }
                tracing::debug!(handle = %self.handle, manager = %a.manager, number = a.number, "build started on a launcher");
                self.shared.mark(|t| &mut t.scheduled);
                if self.status().phase == Phase::Pending {
                    if a.is_starting() {
                        self.shared
                            .status
                            .send_replace(BuildStatus::pending(format!(
                                "starting on launcher {}",
                                a.manager
                            )));
                    } else {
                        self.shared.mark(|t| &mut t.running);
                        self.shared.status.send_replace(BuildStatus::running());
                    }
                }
                self.announced = Some(a);
                if !self.stop_waiters.is_empty() {
                    self.stop_deadline = None;
                    return self.stop_announced().await;
                }
                Flow::Continue
            }
            Some(prev) if prev.manager == a.manager && prev.number == a.number => {
                if a.url.is_some() {
                    self.shared.info.lock().url = a.url;
                }
                Flow::Continue
            }
            Some(prev) => {
                // gearmand handed the job out again: the first launcher dropped it
                // mid-build. Stop the new attempt and report the build lost.
                let msg = format!(
                    "launcher {} lost the build (#{}); gearmand re-queued it to {} (#{}), which was stopped",
                    prev.manager, prev.number, a.manager, a.number
                );
                let (inner, client) = (self.inner.clone(), self.client.clone());
                tokio::spawn(async move { request_stop(&inner, &client, &a).await });
                self.finish(BuildStatus::lost(Some(true), msg))
            }
        }
    }

    async fn on_stop(&mut self, reply: oneshot::Sender<Result<(), Error>>) -> Flow {
        if self.shared.is_terminal() {
            let _ = reply.send(Ok(()));
            return Flow::Continue;
        }
        self.stop_waiters.push(reply);
        if self.announced.is_some() {
            return self.stop_announced().await;
        }
        // Not started yet: withdraw it if it is still queued, else wait for the
        // launcher's announcement (it is starting the build) and stop it then.
        match self.client.status(&self.handle).await {
            Ok(s) if !s.running => {
                if let Some(flow) = self.absorb_pending() {
                    return flow;
                }
                self.finish(BuildStatus::canceled())
            }
            Ok(_) => {
                self.stop_deadline = Some(Instant::now() + self.inner.cfg.stop_timeout());
                Flow::Continue
            }
            Err(e) => {
                let e = Error::from(e);
                self.reply_stop(|| {
                    Err(Error::new(e.kind(), e.message()).with_executor(crate::SCHEME))
                });
                Flow::Continue
            }
        }
    }

    /// Stops a build whose launcher is known.
    async fn stop_announced(&mut self) -> Flow {
        let a = self.announced.clone().expect("announced");
        match request_stop(&self.inner, &self.client, &a).await {
            Ok(()) => {
                if let Some(flow) = self.absorb_pending() {
                    return flow;
                }
                self.finish(BuildStatus::canceled())
            }
            Err(e) => {
                tracing::warn!(handle = %self.handle, error = %e, "stop failed");
                self.reply_stop(|| {
                    let mut x = Error::new(e.kind(), e.message()).with_executor(crate::SCHEME);
                    if e.is_temporary() {
                        x = x.temporary();
                    }
                    Err(x)
                });
                Flow::Continue
            }
        }
    }

    /// Handles events already received; `Some` when one of them ended the build.
    fn absorb_pending(&mut self) -> Option<Flow> {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                JobEvent::Data(d) => {
                    if let Some(r) = BuildReport::from_data(&d) {
                        self.report = Some(r);
                    }
                }
                JobEvent::Disconnected => return None,
                ev if ev.is_terminal() => {
                    let s = self.terminal_status(ev);
                    return Some(self.finish(s));
                }
                _ => {}
            }
        }
        None
    }

    /// `GET_STATUS`: a launcher that died mid-build leaves the job re-queued (known, not
    /// running); a job gearmand forgot is gone.
    async fn check_liveness(&mut self) -> Flow {
        let Ok(s) = self.client.status(&self.handle).await else {
            // A broken connection arrives as `Disconnected`; a slow answer is retried
            // at the next tick.
            return Flow::Continue;
        };
        // Everything gearmand sent before this answer is queued already: handle it first.
        while let Ok(ev) = self.events.try_recv() {
            if self.on_event(ev).await == Flow::Done {
                return Flow::Done;
            }
        }
        if !s.known {
            return self.finish(BuildStatus::lost(
                Some(self.started()),
                format!("gearmand no longer knows job {}", self.handle),
            ));
        }
        if !s.running
            && let Some(a) = &self.announced
        {
            let msg = format!(
                "launcher {} went away mid-build; gearmand re-queued the job, which was withdrawn",
                a.manager
            );
            return self.finish(BuildStatus::lost(Some(true), msg));
        }
        Flow::Continue
    }
}

/// Stops a build lost with the connection on the launcher that announced it, if it has
/// not been stopped yet ([`Tracked::orphaned_on`]); forgets the launcher once it confirmed.
pub(crate) async fn stop_orphan(inner: &Inner, t: &Tracked) -> Result<(), Error> {
    let Some(a) = t.orphaned_on.lock().clone() else {
        return Ok(());
    };
    let client = GearmanClient::lazy(&inner.cfg.server, inner.cfg.client_options());
    request_stop(inner, &client, &a).await?;
    t.orphaned_on.lock().take();
    tracing::info!(manager = %a.manager, "stopped a build lost with the connection");
    Ok(())
}

/// Stops the build of the job `uuid` wherever it runs: a `start` that failed after its
/// `SUBMIT_JOB` went out (the connection broke before `JOB_CREATED` arrived) may have left
/// a job a launcher took, and nobody knows which launcher. Every `stop:<manager>`
/// function registered now is asked to stop the build of that uuid (an sdx extension of
/// the stop arguments: [`StopTarget::Uuid`]); launchers that do not run it answer
/// `"stopped": false`, launchers that do not know the extension refuse it (ignored).
/// Whether one launcher stopped it; an error when gearmand or a launcher could not be
/// asked (try again).
pub(crate) async fn stop_by_uuid(inner: &Inner, uuid: &str) -> Result<bool, Error> {
    let cfg = &inner.cfg;
    let managers = inner
        .workers
        .served_with_prefix(&inner.calls, "stop", "stop:")
        .await?;
    if managers.is_empty() {
        return Ok(false);
    }
    let client = GearmanClient::lazy(&cfg.server, cfg.client_options());
    let args = Bytes::from(
        serde_json::to_vec(&StopTarget::Uuid {
            uuid: uuid.to_string(),
        })
        .unwrap_or_default(),
    );
    let asks = managers.iter().map(|function| {
        let (client, args) = (&client, args.clone());
        async move {
            let stopped: Result<bool, Error> = match send_stop(inner, client, function, args).await? {
                JobEvent::Complete(d) => Ok(serde_json::from_slice::<serde_json::Value>(&d)
                    .ok()
                    .and_then(|v| v.get("stopped").and_then(serde_json::Value::as_bool))
                    .unwrap_or(false)),
                other => {
                    tracing::debug!(%function, answer = ?other, "a launcher refused a stop by uuid");
                    Ok(false)
                }
            };
            stopped
        }
    });
    let mut stopped = false;
    for r in futures::future::join_all(asks).await {
        stopped |= r?;
    }
    if stopped {
        tracing::info!(%uuid, "stopped a build whose start had failed after its job was sent");
    }
    Ok(stopped)
}

/// Asks the announcing launcher to stop the build (`stop:<manager>`) and waits for its
/// answer. A launcher that is gone has nothing left to stop.
async fn request_stop(
    inner: &Inner,
    client: &GearmanClient,
    a: &StartAnnouncement,
) -> Result<(), Error> {
    let function = format!("stop:{}", a.manager);
    let workers = inner
        .workers
        .workers(&inner.calls, "stop", &function)
        .await?;
    if workers == 0 {
        tracing::info!(manager = %a.manager, "launcher is gone; nothing to stop");
        return Ok(());
    }
    let args = Bytes::from(
        serde_json::to_vec(&BuildRef {
            name: a.name.clone(),
            number: a.number,
        })
        .unwrap_or_default(),
    );
    match send_stop(inner, client, &function, args).await? {
        JobEvent::Complete(_) => Ok(()),
        JobEvent::Exception(d) => {
            let x = LauncherException::from_data(&d);
            Err(Error::new(
                ErrorKind::Unexpected,
                format!("the launcher refused the stop: {}", x.message),
            ))
        }
        other => Err(Error::new(
            ErrorKind::Unexpected,
            format!("the launcher answered the stop with {other:?}"),
        )),
    }
}

/// Submits one `stop:<manager>` job (a stop-class call: no breaker refuses it) and waits
/// up to the stop timeout for its end; a broken connection and no answer in time are
/// temporary errors, any other end is returned for the caller to read.
async fn send_stop(
    inner: &Inner,
    client: &GearmanClient,
    function: &str,
    args: Bytes,
) -> Result<JobEvent, Error> {
    let cfg = &inner.cfg;
    let job = inner
        .calls
        .call_in(CallClass::Stop, "stop", Idempotency::Idempotent, || async {
            client
                .submit(function, "", args.clone())
                .await
                .map_err(Error::from)
        })
        .await?;
    match tokio::time::timeout(cfg.stop_timeout(), job.wait()).await {
        Ok((_, JobEvent::Disconnected)) => Err(Error::new(
            ErrorKind::Unexpected,
            "connection to gearmand lost while stopping",
        )
        .temporary()),
        Ok((_, end)) => Ok(end),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "{function} did not confirm the stop within {:?}",
                cfg.stop_timeout()
            ),
        )
        .temporary()),
    }
}
