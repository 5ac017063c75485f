//! The Gearman protocol's worker side: registers functions, grabs jobs, runs a handler
//! per job. (The Zuul launcher in [`crate::launcher`] is built on it.)
//!
//! After `SET_CLIENT_ID` and `CAN_DO` for each function, the worker sends a `GET_STATUS`
//! for a handle no job has: every Gearman server answers it, in order, so its answer
//! means the functions are registered ([`GearmanWorker::registered`]). Nothing relies on
//! `ECHO_REQ` or `OPTION_REQ`, which OpenStack's `geard` never answers. The loop then
//! follows the protocol's sleep cycle: `GRAB_JOB_UNIQ`; on `NO_JOB` send `PRE_SLEEP` and
//! wait for the server's `NOOP`; on `JOB_ASSIGN_UNIQ` run the handler.
//!
//! **Slots.** The worker runs at most `max_jobs` jobs: it grabs only while it holds a
//! free slot, which the job holds until its handler returns. A handler whose work
//! outlives its job (the launcher keeps a build running while its job is re-queued)
//! takes the slot with [`Job::take_slot`] and keeps the [`JobSlot`] as long as the work
//! runs; [`GearmanWorker::try_slot`] takes one for work that comes from elsewhere
//! (builds adopted after a restart).
//!
//! **Unreadable jobs.** A job whose packet the codec skipped (body over
//! `max_packet_size`, malformed) is still handed to the handler, with its handle,
//! function and unique id, empty data and [`Job::unreadable`] saying why, so the handler
//! can fail that one job; the connection stays up and the body is never buffered.
//!
//! **Reconnects.** When the connection breaks, gearmand re-queues every job this worker
//! held (`geard` fails them), so results can no longer be delivered from here: each
//! running job's [`JobSink::connection_lost`] fires. The worker waits, then reconnects
//! and registers again. The wait starts at `reconnect_initial` and doubles up to
//! `reconnect_max` for every connection that failed or broke within `reconnect_max` of
//! being made, with a random jitter (between half and all of it), so a connection that
//! keeps breaking never becomes a reconnect storm.
//!
//! **Draining.** When `shutdown` resolves the worker stops grabbing, lets the running
//! handlers finish and every slot come back (still reporting on the live connection),
//! then sends `RESET_ABILITIES` and closes. It never sends `CANT_DO`/`RESET_ABILITIES`
//! while jobs run: gearmand 1.1 re-queues a worker's running jobs of a function it stops
//! doing.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{DEFAULT_MAX_PACKET_SIZE, Frame, SkipReason, Skipped};
use crate::conn::{Conn, connect};
use crate::error::GearmanError;
use crate::packet::{Packet, PacketType};

/// The handle of the registration barrier's `GET_STATUS` (no job has it).
const BARRIER_HANDLE: &str = "sdx-registration-barrier";

/// How a worker connects and what it does.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// gearmand's `host:port`.
    pub addr: String,
    /// Functions registered with `CAN_DO`.
    pub functions: Vec<String>,
    /// Sent with `SET_CLIENT_ID` (shown by gearmand's admin `workers` command).
    pub client_id: Option<String>,
    /// Jobs run at once (at least 1): the number of [`JobSlot`]s.
    pub max_jobs: usize,
    /// Bound on each TCP connect.
    pub connect_timeout: Duration,
    /// Largest packet body sent or accepted.
    pub max_packet_size: usize,
    /// First wait before reconnecting; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest wait between reconnect attempts; a connection that lived this long counts
    /// as healthy (the next wait starts from `reconnect_initial` again).
    pub reconnect_max: Duration,
}

impl WorkerOptions {
    /// Options for `functions` on `addr` with defaults for the rest.
    pub fn new(addr: impl Into<String>, functions: Vec<String>) -> Self {
        Self {
            addr: addr.into(),
            functions,
            client_id: None,
            max_jobs: 1,
            connect_timeout: Duration::from_secs(5),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// One of the worker's `max_jobs` slots; given back when dropped (see the module docs).
#[derive(Debug)]
pub struct JobSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// The slot a job holds, shared between the worker (which frees it when the handler
/// returns) and the job (whose handler may take it to keep it longer).
type SlotCell = Arc<parking_lot::Mutex<Option<OwnedSemaphorePermit>>>;

/// A job handed to the worker.
pub struct Job {
    /// gearmand's handle.
    pub handle: String,
    /// The function it was submitted to.
    pub function: String,
    /// The submitter's unique id (Zuul: the build's `ZUUL_UUID`).
    pub unique: String,
    /// The job's argument (empty when [`Job::unreadable`]).
    pub data: Bytes,
    /// Why the job's packet could not be read (its body was dropped unread).
    pub unreadable: Option<SkipReason>,
    /// Our end of the connection (the launcher's address as gearmand sees it).
    pub local_addr: Option<SocketAddr>,
    /// Where results go.
    pub sink: JobSink,
    slot: SlotCell,
}

impl Job {
    /// Takes the job's slot, to hold it beyond the handler (the work goes on after the
    /// job: the worker grabs no job for it until the [`JobSlot`] is dropped). Without
    /// this the slot is freed when the handler returns. `None` when taken already.
    pub fn take_slot(&self) -> Option<JobSlot> {
        self.slot.lock().take().map(JobSlot)
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("handle", &self.handle)
            .field("function", &self.function)
            .field("unique", &self.unique)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .field("unreadable", &self.unreadable)
            .finish()
    }
}

/// The sending side of one job: `WORK_*` packets go out on the connection that grabbed it.
#[derive(Clone)]
pub struct JobSink {
    handle: Bytes,
    tx: mpsc::UnboundedSender<Packet>,
    lost: CancellationToken,
}

impl fmt::Debug for JobSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSink")
            .field("handle", &String::from_utf8_lossy(&self.handle))
            .field("connection_lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl JobSink {
    fn send(&self, kind: PacketType, rest: Vec<Bytes>) -> Result<(), GearmanError> {
        if self.lost.is_cancelled() {
            return Err(GearmanError::Disconnected);
        }
        let mut args = Vec::with_capacity(rest.len() + 1);
        args.push(self.handle.clone());
        args.extend(rest);
        self.tx
            .send(Packet::req(kind, args))
            .map_err(|_| GearmanError::Disconnected)
    }

    /// The job's handle.
    pub fn handle(&self) -> String {
        String::from_utf8_lossy(&self.handle).into_owned()
    }

    /// `WORK_DATA`.
    pub fn data(&self, data: impl Into<Bytes>) -> Result<(), GearmanError> {
        self.send(PacketType::WORK_DATA, vec![data.into()])
    }

    /// `WORK_WARNING`.
    pub fn warning(&self, data: impl Into<Bytes>) -> Result<(), GearmanError> {
        self.send(PacketType::WORK_WARNING, vec![data.into()])
    }

    /// `WORK_STATUS` (progress `numerator / denominator`).
    pub fn status(&self, numerator: u64, denominator: u64) -> Result<(), GearmanError> {
        self.send(
            PacketType::WORK_STATUS,
            vec![numerator.to_string().into(), denominator.to_string().into()],
        )
    }

    /// `WORK_COMPLETE` (terminal).
    pub fn complete(&self, data: impl Into<Bytes>) -> Result<(), GearmanError> {
        self.send(PacketType::WORK_COMPLETE, vec![data.into()])
    }

    /// `WORK_FAIL` (terminal).
    pub fn fail(&self) -> Result<(), GearmanError> {
        self.send(PacketType::WORK_FAIL, Vec::new())
    }

    /// `WORK_EXCEPTION` (terminal in gearmand 1.1: clients that asked for exceptions get
    /// it, the others a `WORK_FAIL`; `geard` forwards it to every client).
    pub fn exception(&self, data: impl Into<Bytes>) -> Result<(), GearmanError> {
        self.send(PacketType::WORK_EXCEPTION, vec![data.into()])
    }

    /// Whether the connection that grabbed the job broke (gearmand re-queued the job).
    pub fn is_connection_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Resolves when the connection that grabbed the job breaks.
    pub fn connection_lost(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }
}

/// A Gearman worker; see the module docs.
#[derive(Debug)]
pub struct GearmanWorker {
    opts: WorkerOptions,
    slots: Arc<Semaphore>,
    registered: watch::Sender<bool>,
}

/// What one connection's session leaves behind for the loop in [`GearmanWorker::run`].
struct Loop<'a, H, S> {
    handler: &'a H,
    jobs: JoinSet<()>,
    draining: bool,
    shutdown: std::pin::Pin<&'a mut S>,
}

impl GearmanWorker {
    /// A worker with these options.
    pub fn new(mut opts: WorkerOptions) -> Self {
        opts.max_jobs = opts.max_jobs.max(1);
        Self {
            slots: Arc::new(Semaphore::new(opts.max_jobs)),
            opts,
            registered: watch::channel(false).0,
        }
    }

    /// `true` while connected with every function registered.
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.registered.subscribe()
    }

    /// Takes a free slot for work that did not come with a job (none free: `None`).
    pub fn try_slot(&self) -> Option<JobSlot> {
        self.slots.clone().try_acquire_owned().ok().map(JobSlot)
    }

    /// Runs until `shutdown` resolves, every running handler has finished and every
    /// slot is back.
    pub async fn run<H, Fut>(
        &self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), GearmanError>
    where
        H: Fn(Job) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        tokio::pin!(shutdown);
        let mut l = Loop {
            handler: &handler,
            jobs: JoinSet::new(),
            draining: false,
            shutdown,
        };
        let mut backoff = self.opts.reconnect_initial;
        loop {
            if l.draining && self.idle(&l.jobs, 0) {
                return Ok(());
            }
            let began = Instant::now();
            let outcome = match connect(
                &self.opts.addr,
                self.opts.connect_timeout,
                self.opts.max_packet_size,
            )
            .await
            {
                Ok((conn, local)) => {
                    let r = self.session(conn, local, &mut l).await;
                    self.registered.send_replace(false);
                    r
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if began.elapsed() >= self.opts.reconnect_max {
                        backoff = self.opts.reconnect_initial;
                    }
                    let wait = jittered(backoff);
                    tracing::warn!(error = %e, retry_in = ?wait, addr = %self.opts.addr, "gearman worker connection failed or lost; reconnecting");
                    backoff = (backoff * 2).min(self.opts.reconnect_max);
                    if self.pause(wait, &mut l).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Waits `wait` before reconnecting, reaping handlers meanwhile; `true` when a
    /// drain finished during the wait.
    async fn pause<H, Fut, S>(&self, wait: Duration, l: &mut Loop<'_, H, S>) -> bool
    where
        H: Fn(Job) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
        S: Future<Output = ()>,
    {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return false,
                _ = &mut l.shutdown, if !l.draining => l.draining = true,
                Some(_) = l.jobs.join_next(), if !l.jobs.is_empty() => {}
                _ = self.slots.acquire_many(self.opts.max_jobs as u32), if l.draining && l.jobs.is_empty() => {}
            }
            if l.draining && self.idle(&l.jobs, 0) {
                return true;
            }
        }
    }

    /// Whether no handler runs and every slot is back (`reserved` of them held here).
    fn idle(&self, jobs: &JoinSet<()>, reserved: usize) -> bool {
        jobs.is_empty() && self.slots.available_permits() + reserved >= self.opts.max_jobs
    }

    /// One connection's life. `Ok` when drained, `Err` when the connection broke.
    async fn session<H, Fut, S>(
        &self,
        mut conn: Conn,
        local: Option<SocketAddr>,
        l: &mut Loop<'_, H, S>,
    ) -> Result<(), GearmanError>
    where
        H: Fn(Job) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
        S: Future<Output = ()>,
    {
        let lost = CancellationToken::new();
        // Handlers of this connection learn of its end through `lost`.
        let _guard = lost.clone().drop_guard();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Packet>();

        if let Some(id) = &self.opts.client_id {
            conn.feed(Packet::req(PacketType::SET_CLIENT_ID, [id.clone()]))
                .await?;
        }
        for f in &self.opts.functions {
            conn.feed(Packet::req(PacketType::CAN_DO, [f.clone()]))
                .await?;
        }
        // Answered in order after the CAN_DOs: its answer means they are registered.
        conn.send(Packet::req(PacketType::GET_STATUS, [BARRIER_HANDLE]))
            .await?;

        let mut reserved: Option<OwnedSemaphorePermit> = None;
        let mut grabbing = false;
        let mut sleeping = false;
        loop {
            if l.draining && self.idle(&l.jobs, usize::from(reserved.is_some())) {
                drop(reserved.take());
                while let Ok(p) = out_rx.try_recv() {
                    conn.feed(p).await?;
                }
                conn.feed(Packet::bare(PacketType::RESET_ABILITIES)).await?;
                conn.flush().await?;
                return Ok(());
            }
            if l.draining {
                drop(reserved.take());
            }
            if reserved.is_none() && !l.draining {
                reserved = self.slots.clone().try_acquire_owned().ok();
            }
            if reserved.is_some() && !l.draining && !grabbing && !sleeping {
                conn.send(Packet::bare(PacketType::GRAB_JOB_UNIQ)).await?;
                grabbing = true;
            }
            let want_slot = reserved.is_none() && !l.draining;
            let wait_all = l.draining && l.jobs.is_empty();
            tokio::select! {
                biased;
                Some(p) = out_rx.recv() => {
                    tracing::trace!(packet = ?p, "sending");
                    conn.feed(p).await?;
                    // Batch what is queued, then flush once.
                    while let Ok(p) = out_rx.try_recv() {
                        tracing::trace!(packet = ?p, "sending");
                        conn.feed(p).await?;
                    }
                    conn.flush().await?;
                }
                frame = conn.next() => {
                    let frame = match frame {
                        Some(Ok(f)) => f,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(GearmanError::Disconnected),
                    };
                    tracing::trace!(?frame, "received");
                    let p = match frame {
                        Frame::Packet(p) => p,
                        Frame::Skipped(s) => {
                            if let Some(job) = self.unreadable(s, local, &out_tx, &lost, &mut reserved) {
                                grabbing = false;
                                spawn_handler(&mut l.jobs, l.handler, job);
                            }
                            continue;
                        }
                    };
                    match p.kind {
                        PacketType::NOOP => sleeping = false,
                        PacketType::NO_JOB => {
                            grabbing = false;
                            if !l.draining {
                                conn.send(Packet::bare(PacketType::PRE_SLEEP)).await?;
                                sleeping = true;
                            }
                        }
                        PacketType::JOB_ASSIGN_UNIQ | PacketType::JOB_ASSIGN | PacketType::JOB_ASSIGN_ALL => {
                            grabbing = false;
                            let sink = JobSink { handle: Bytes::new(), tx: out_tx.clone(), lost: lost.clone() };
                            let slot = Arc::new(parking_lot::Mutex::new(reserved.take()));
                            let job = assigned(p, local, slot, sink);
                            tracing::debug!(handle = %job.handle, function = %job.function, "job assigned");
                            spawn_handler(&mut l.jobs, l.handler, job);
                        }
                        PacketType::STATUS_RES if p.arg_str(0) == Some(BARRIER_HANDLE) => {
                            self.registered.send_replace(true);
                        }
                        PacketType::ERROR => {
                            tracing::warn!(code = %p.arg_lossy(0), text = %p.arg_lossy(1), "gearmand error on worker connection");
                        }
                        PacketType::ECHO_RES | PacketType::OPTION_RES | PacketType::STATUS_RES => {}
                        other => tracing::warn!(packet = %other, "unexpected packet on worker connection"),
                    }
                }
                permit = self.slots.clone().acquire_owned(), if want_slot => {
                    reserved = permit.ok();
                }
                Some(done) = l.jobs.join_next(), if !l.jobs.is_empty() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!(error = %e, "gearman job handler panicked");
                    }
                }
                // Resolves once every slot kept by work outside the handlers is back.
                _ = self.slots.acquire_many((self.opts.max_jobs - usize::from(reserved.is_some())) as u32), if wait_all => {}
                _ = &mut l.shutdown, if !l.draining => {
                    tracing::info!(running = l.jobs.len(), "gearman worker draining");
                    l.draining = true;
                }
            }
        }
    }

    /// A job whose assignment packet was skipped, for the handler to fail; `None` (with
    /// a log line) for any other skipped packet.
    fn unreadable(
        &self,
        s: Skipped,
        local_addr: Option<SocketAddr>,
        tx: &mpsc::UnboundedSender<Packet>,
        lost: &CancellationToken,
        reserved: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Job> {
        let assignment = matches!(
            s.kind,
            Some(PacketType::JOB_ASSIGN_UNIQ | PacketType::JOB_ASSIGN | PacketType::JOB_ASSIGN_ALL)
        );
        let Some(handle) = s.leading.first().filter(|_| assignment).cloned() else {
            tracing::warn!(packet = %s.kind_name(), size = s.size, reason = %s.reason, "skipped an unreadable packet on the worker connection");
            return None;
        };
        tracing::warn!(handle = %s.arg_lossy(0), function = %s.arg_lossy(1), size = s.size, reason = %s.reason, "job packet unreadable; its body was dropped");
        let unique = match s.kind {
            Some(PacketType::JOB_ASSIGN) => String::new(),
            _ => s.arg_lossy(2),
        };
        Some(Job {
            function: s.arg_lossy(1),
            unique,
            handle: String::from_utf8_lossy(&handle).into_owned(),
            data: Bytes::new(),
            unreadable: Some(s.reason),
            local_addr,
            slot: Arc::new(parking_lot::Mutex::new(reserved.take())),
            sink: JobSink {
                handle,
                tx: tx.clone(),
                lost: lost.clone(),
            },
        })
    }
}

/// Runs `handler` for `job`; the job's slot is freed when the handler returns, unless
/// the handler took it.
fn spawn_handler<H, Fut>(jobs: &mut JoinSet<()>, handler: &H, job: Job)
where
    H: Fn(Job) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slot = job.slot.clone();
    let work = handler(job);
    jobs.spawn(async move {
        work.await;
        drop(slot.lock().take());
    });
}

/// Between half and all of `d`, at random.
fn jittered(d: Duration) -> Duration {
    d / 2 + d.mul_f64(fastrand::f64() / 2.0)
}

fn assigned(p: Packet, local_addr: Option<SocketAddr>, slot: SlotCell, mut sink: JobSink) -> Job {
    let mut args = p.args.into_iter();
    let handle = args.next().unwrap_or_default();
    let function = args.next().unwrap_or_default();
    let (unique, data) = match p.kind {
        PacketType::JOB_ASSIGN => (Bytes::new(), args.next().unwrap_or_default()),
        PacketType::JOB_ASSIGN_ALL => {
            let unique = args.next().unwrap_or_default();
            let _reducer = args.next();
            (unique, args.next().unwrap_or_default())
        }
        _ => (
            args.next().unwrap_or_default(),
            args.next().unwrap_or_default(),
        ),
    };
    sink.handle = handle.clone();
    Job {
        handle: String::from_utf8_lossy(&handle).into_owned(),
        function: String::from_utf8_lossy(&function).into_owned(),
        unique: String::from_utf8_lossy(&unique).into_owned(),
        data,
        unreadable: None,
        local_addr,
        slot,
        sink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_millis(800));
            assert!(j >= Duration::from_millis(400) && j <= Duration::from_millis(800));
        }
    }
}
