//! An async Gearman worker: registers functions, grabs jobs, runs a handler per job.
//!
//! After `CAN_DO` for each function and an `ECHO_REQ` round trip (so the functions are
//! known to gearmand before [`GearmanWorker::registered`] says so), the loop follows the
//! protocol's sleep cycle: `GRAB_JOB_UNIQ`; on `NO_JOB` send
//! `PRE_SLEEP` and wait for gearmand's `NOOP` wake-up; on `JOB_ASSIGN_UNIQ` run the
//! handler and, while fewer than `max_jobs` handlers run, grab again. Several jobs run
//! at once on the one connection; each handler answers through its [`JobSink`].
//!
//! Reconnects: when the connection breaks, gearmand re-queues every job this worker held,
//! so their results can no longer be delivered from here. Each running job's
//! [`JobSink::connection_lost`] fires (the handler should abandon the job), and the loop
//! reconnects with exponential backoff and registers its functions again.
//!
//! Draining: when `shutdown` resolves the worker stops grabbing, lets the running
//! handlers finish (still reporting on the live connection), then sends
//! `RESET_ABILITIES` and closes. It never sends `CANT_DO`/`RESET_ABILITIES` while jobs
//! run: gearmand 1.1 re-queues a worker's running jobs of a function it stops doing.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::codec::DEFAULT_MAX_PACKET_SIZE;
use crate::conn::{Conn, connect};
use crate::error::GearmanError;
use crate::packet::{Packet, PacketType};

/// How a worker connects and what it does.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// gearmand's `host:port`.
    pub addr: String,
    /// Functions registered with `CAN_DO`.
    pub functions: Vec<String>,
    /// Sent with `SET_CLIENT_ID` (shown by gearmand's admin `workers` command).
    pub client_id: Option<String>,
    /// Jobs run at once (at least 1).
    pub max_jobs: usize,
    /// Bound on each TCP connect.
    pub connect_timeout: Duration,
    /// Largest packet body sent or accepted.
    pub max_packet_size: usize,
    /// First wait before reconnecting; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest wait between reconnect attempts.
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

/// A job handed to the worker.
pub struct Job {
    /// gearmand's handle.
    pub handle: String,
    /// The function it was submitted to.
    pub function: String,
    /// The submitter's unique id (Zuul: the build's `ZUUL_UUID`).
    pub unique: String,
    /// The job's argument.
    pub data: Bytes,
    /// Our end of the connection (the launcher's address as gearmand sees it).
    pub local_addr: Option<SocketAddr>,
    /// Where results go.
    pub sink: JobSink,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("handle", &self.handle)
            .field("function", &self.function)
            .field("unique", &self.unique)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
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

    /// `WORK_EXCEPTION` (terminal in gearmand 1.1; clients without the `exceptions`
    /// option see a `WORK_FAIL`).
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
    registered: watch::Sender<bool>,
}

impl GearmanWorker {
    /// A worker with these options.
    pub fn new(mut opts: WorkerOptions) -> Self {
        opts.max_jobs = opts.max_jobs.max(1);
        Self {
            opts,
            registered: watch::channel(false).0,
        }
    }

    /// `true` while connected with every function registered.
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.registered.subscribe()
    }

    /// Runs until `shutdown` resolves and every running handler has finished.
    pub async fn run<H, Fut>(
        &self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), GearmanError>
    where
        H: Fn(Job) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut draining = false;
        let mut backoff = self.opts.reconnect_initial;
        tokio::pin!(shutdown);
        loop {
            if draining && jobs.is_empty() {
                return Ok(());
            }
            let (conn, local) = match connect(
                &self.opts.addr,
                self.opts.connect_timeout,
                self.opts.max_packet_size,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "gearman worker cannot connect");
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    backoff = (backoff * 2).min(self.opts.reconnect_max);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            _ = &mut shutdown, if !draining => draining = true,
                            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                        }
                        if draining && jobs.is_empty() {
                            return Ok(());
                        }
                    }
                    continue;
                }
            };
            backoff = self.opts.reconnect_initial;
            let outcome = self
                .session(
                    conn,
                    local,
                    &handler,
                    &mut jobs,
                    &mut draining,
                    &mut shutdown,
                )
                .await;
            self.registered.send_replace(false);
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "gearman worker connection lost; reconnecting")
                }
            }
        }
    }

    /// One connection's life. `Ok` when drained, `Err` when the connection broke.
    async fn session<H, Fut>(
        &self,
        mut conn: Conn,
        local: Option<SocketAddr>,
        handler: &H,
        jobs: &mut JoinSet<()>,
        draining: &mut bool,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), GearmanError>
    where
        H: Fn(Job) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
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
        // gearmand handles a connection's packets in order: the echo's answer means the
        // functions are registered (and visible to the admin `status` command).
        conn.send(Packet::req(PacketType::ECHO_REQ, ["registered"]))
            .await?;
        let echoed = tokio::time::timeout(self.opts.connect_timeout, async {
            loop {
                match conn.next().await {
                    Some(Ok(p)) if p.kind == PacketType::ECHO_RES => return Ok(()),
                    Some(Ok(p)) => tracing::debug!(packet = %p.kind, "ignored while registering"),
                    Some(Err(e)) => return Err(GearmanError::from(e)),
                    None => return Err(GearmanError::Disconnected),
                }
            }
        })
        .await
        .map_err(|_| GearmanError::Timeout("registration"))?;
        echoed?;
        self.registered.send_replace(true);

        let mut grabbing = false;
        let mut sleeping = false;
        loop {
            if *draining && jobs.is_empty() {
                while let Ok(p) = out_rx.try_recv() {
                    conn.feed(p).await?;
                }
                conn.feed(Packet::bare(PacketType::RESET_ABILITIES)).await?;
                conn.flush().await?;
                return Ok(());
            }
            if !*draining && !grabbing && !sleeping && jobs.len() < self.opts.max_jobs {
                conn.send(Packet::bare(PacketType::GRAB_JOB_UNIQ)).await?;
                grabbing = true;
            }
            tokio::select! {
                biased;
                Some(p) = out_rx.recv() => {
                    conn.feed(p).await?;
                    // Batch what is queued, then flush once.
                    while let Ok(p) = out_rx.try_recv() {
                        conn.feed(p).await?;
                    }
                    conn.flush().await?;
                }
                pkt = conn.next() => {
                    let p = match pkt {
                        Some(Ok(p)) => p,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(GearmanError::Disconnected),
                    };
                    match p.kind {
                        PacketType::NOOP => sleeping = false,
                        PacketType::NO_JOB => {
                            grabbing = false;
                            if !*draining {
                                conn.send(Packet::bare(PacketType::PRE_SLEEP)).await?;
                                sleeping = true;
                            }
                        }
                        PacketType::JOB_ASSIGN_UNIQ | PacketType::JOB_ASSIGN | PacketType::JOB_ASSIGN_ALL => {
                            grabbing = false;
                            let job = assigned(p, local, JobSink {
                                handle: Bytes::new(),
                                tx: out_tx.clone(),
                                lost: lost.clone(),
                            });
                            tracing::debug!(handle = %job.handle, function = %job.function, "job assigned");
                            jobs.spawn(handler(job));
                        }
                        PacketType::ERROR => {
                            tracing::warn!(code = %p.arg_lossy(0), text = %p.arg_lossy(1), "gearmand error on worker connection");
                        }
                        PacketType::ECHO_RES | PacketType::OPTION_RES => {}
                        other => tracing::warn!(packet = %other, "unexpected packet on worker connection"),
                    }
                }
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!(error = %e, "gearman job handler panicked");
                    }
                }
                _ = &mut *shutdown, if !*draining => {
                    tracing::info!(running = jobs.len(), "gearman worker draining");
                    *draining = true;
                }
            }
        }
    }
}

fn assigned(p: Packet, local_addr: Option<SocketAddr>, mut sink: JobSink) -> Job {
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
        local_addr,
        sink,
    }
}
