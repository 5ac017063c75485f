//! An async Gearman client: submit foreground jobs and receive each job's events.
//!
//! One [`GearmanClient`] owns one TCP connection, driven by a background task; clones
//! share it. Requests are answered by gearmand in order, so the task keeps a FIFO of
//! outstanding requests (`SUBMIT_JOB` -> `JOB_CREATED`, `GET_STATUS` -> `STATUS_RES`,
//! `GET_STATUS_UNIQUE` -> `STATUS_RES_UNIQUE`, `ECHO_REQ` -> `ECHO_RES`, `OPTION_REQ` ->
//! `OPTION_RES`, any of them -> `ERROR`) and routes `WORK_*` packets to the job they
//! name through a per-job channel registered when `JOB_CREATED` arrives, before any
//! later packet is read.
//!
//! **Optional answers.** `ECHO_REQ`, `OPTION_REQ` and `GET_STATUS_UNIQUE` are answered
//! by gearmand but not by OpenStack's `geard`, so nothing waits for them: `OPTION_REQ
//! exceptions` is sent after connecting without waiting, and when the answer to a later
//! request arrives first, each unanswered optional request before it fails with
//! [`GearmanError::Unanswered`] (the caller learns the server does not support it) while
//! the answer goes to its own request. An optional request with nothing after it waits
//! for its answer until `request_timeout`.
//!
//! Reconnects: when the connection breaks, every job in flight receives
//! [`JobEvent::Disconnected`] (gearmand abandons a client's foreground jobs with its
//! connection, so their outcome can no longer be observed) and every outstanding request
//! fails with [`GearmanError::Disconnected`]. The next request connects again (and
//! re-sends `OPTION_REQ exceptions`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{DEFAULT_MAX_PACKET_SIZE, Frame, Skipped};
use crate::conn::{Conn, connect};
use crate::error::GearmanError;
use crate::packet::{Packet, PacketType};

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on the TCP connect (default 5 s).
    pub connect_timeout: Duration,
    /// Bound on each request's answer (default 10 s).
    pub request_timeout: Duration,
    /// Largest packet body sent or accepted (default 16 MiB).
    pub max_packet_size: usize,
    /// Ask gearmand to forward `WORK_EXCEPTION` packets (`OPTION_REQ exceptions`, sent
    /// without waiting for its answer; default true). Without it gearmand turns them into
    /// a bare `WORK_FAIL`; `geard` forwards them either way.
    pub exceptions: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            exceptions: true,
        }
    }
}

/// Something that happened to a submitted job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// `WORK_DATA`.
    Data(Bytes),
    /// `WORK_WARNING`.
    Warning(Bytes),
    /// `WORK_STATUS`.
    Status {
        /// Progress numerator.
        numerator: u64,
        /// Progress denominator.
        denominator: u64,
    },
    /// `WORK_COMPLETE` with its data (terminal).
    Complete(Bytes),
    /// `WORK_FAIL` (terminal).
    Fail,
    /// `WORK_EXCEPTION` with its data (terminal).
    Exception(Bytes),
    /// The connection to gearmand broke (terminal: the outcome can no longer be seen).
    Disconnected,
}

impl JobEvent {
    /// Whether no further event follows.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Complete(_)
                | JobEvent::Fail
                | JobEvent::Exception(_)
                | JobEvent::Disconnected
        )
    }
}

/// A job gearmand accepted.
#[derive(Debug)]
pub struct SubmittedJob {
    /// gearmand's handle (`H:host:42`).
    pub handle: String,
    /// The job's events, in order; ends after the terminal event.
    pub events: mpsc::UnboundedReceiver<JobEvent>,
}

impl SubmittedJob {
    /// Waits for the terminal event, collecting the `WORK_DATA` seen before it.
    pub async fn wait(mut self) -> (Vec<Bytes>, JobEvent) {
        let mut data = Vec::new();
        while let Some(ev) = self.events.recv().await {
            match ev {
                JobEvent::Data(d) => data.push(d),
                e if e.is_terminal() => return (data, e),
                _ => {}
            }
        }
        (data, JobEvent::Disconnected)
    }
}

/// A job's status as gearmand reports it (`STATUS_RES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Whether gearmand knows the handle (queued or running).
    pub known: bool,
    /// Whether a worker holds the job now (false while queued or re-queued).
    pub running: bool,
    /// Last reported progress numerator.
    pub numerator: u64,
    /// Last reported progress denominator.
    pub denominator: u64,
}

/// A job's status looked up by its unique id (`STATUS_RES_UNIQUE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueStatus {
    /// Whether gearmand knows a job with this unique id.
    pub known: bool,
    /// Whether a worker holds it.
    pub running: bool,
    /// Last reported progress numerator.
    pub numerator: u64,
    /// Last reported progress denominator.
    pub denominator: u64,
    /// Clients waiting for its result (0: nobody can see its outcome any more).
    pub clients: u64,
}

enum Command {
    Submit {
        function: String,
        unique: String,
        data: Bytes,
        reply: oneshot::Sender<Result<SubmittedJob, GearmanError>>,
    },
    Status {
        handle: String,
        reply: oneshot::Sender<Result<JobStatus, GearmanError>>,
    },
    Echo {
        data: Bytes,
        reply: oneshot::Sender<Result<Bytes, GearmanError>>,
    },
    StatusUnique {
        unique: String,
        reply: oneshot::Sender<Result<UniqueStatus, GearmanError>>,
    },
}

enum Pending {
    Submit(oneshot::Sender<Result<SubmittedJob, GearmanError>>),
    Status(oneshot::Sender<Result<JobStatus, GearmanError>>),
    Echo(oneshot::Sender<Result<Bytes, GearmanError>>),
    StatusUnique(oneshot::Sender<Result<UniqueStatus, GearmanError>>),
    /// `OPTION_REQ exceptions`, sent on connect; nobody waits for it.
    Option,
}

impl Pending {
    fn fail(self, e: GearmanError) {
        // A caller that stopped waiting no longer needs the answer.
        let _ = match self {
            Pending::Submit(r) => r.send(Err(e)).map_err(drop),
            Pending::Status(r) => r.send(Err(e)).map_err(drop),
            Pending::Echo(r) => r.send(Err(e)).map_err(drop),
            Pending::StatusUnique(r) => r.send(Err(e)).map_err(drop),
            Pending::Option => Ok(()),
        };
    }

    /// The request, for messages.
    fn name(&self) -> &'static str {
        match self {
            Pending::Submit(_) => "SUBMIT_JOB",
            Pending::Status(_) => "GET_STATUS",
            Pending::Echo(_) => "ECHO_REQ",
            Pending::StatusUnique(_) => "GET_STATUS_UNIQUE",
            Pending::Option => "OPTION_REQ",
        }
    }

    /// The answer packet this request gets, when answered.
    fn answer(&self) -> PacketType {
        match self {
            Pending::Submit(_) => PacketType::JOB_CREATED,
            Pending::Status(_) => PacketType::STATUS_RES,
            Pending::Echo(_) => PacketType::ECHO_RES,
            Pending::StatusUnique(_) => PacketType::STATUS_RES_UNIQUE,
            Pending::Option => PacketType::OPTION_RES,
        }
    }

    /// Whether some servers never answer it (see the module docs).
    fn optional(&self) -> bool {
        matches!(
            self,
            Pending::Echo(_) | Pending::StatusUnique(_) | Pending::Option
        )
    }
}

/// A Gearman client connection (cheap to clone; clones share the connection).
///
/// ```no_run
/// # async fn demo() -> Result<(), executor_gearman::GearmanError> {
/// use executor_gearman::client::{GearmanClient, ClientOptions, JobEvent};
/// let client = GearmanClient::connect("127.0.0.1:4730", ClientOptions::default()).await?;
/// let job = client.submit("reverse", "unique-1", "hello".into()).await?;
/// let (_data, end) = job.wait().await;
/// assert!(matches!(end, JobEvent::Complete(_)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GearmanClient {
    addr: String,
    opts: ClientOptions,
    tx: mpsc::UnboundedSender<Command>,
}

impl fmt::Debug for GearmanClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GearmanClient")
            .field("addr", &self.addr)
            .field("opts", &self.opts)
            .finish()
    }
}

impl GearmanClient {
    /// Connects to gearmand at `addr` (`host:port`) now, so a wrong address fails here.
    pub async fn connect(addr: &str, opts: ClientOptions) -> Result<Self, GearmanError> {
        let conn = open(addr, &opts).await?;
        Ok(Self::spawn(addr, opts, Some(conn)))
    }

    /// A client that connects on its first request.
    pub fn lazy(addr: &str, opts: ClientOptions) -> Self {
        Self::spawn(addr, opts, None)
    }

    fn spawn(addr: &str, opts: ClientOptions, conn: Option<Conn>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(addr.to_string(), opts.clone(), conn, rx));
        Self {
            addr: addr.to_string(),
            opts,
            tx,
        }
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn request<T>(
        &self,
        op: &'static str,
        make: impl FnOnce(oneshot::Sender<Result<T, GearmanError>>) -> Command,
    ) -> Result<T, GearmanError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| GearmanError::Closed)?;
        match tokio::time::timeout(self.opts.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(GearmanError::Disconnected),
            Err(_) => Err(GearmanError::Timeout(op)),
        }
    }

    /// Submits a foreground job (`SUBMIT_JOB`) and returns once gearmand created it.
    ///
    /// Jobs with the same function and non-empty `unique` are coalesced by gearmand: the
    /// second submitter is attached to the first job.
    pub async fn submit(
        &self,
        function: &str,
        unique: &str,
        data: Bytes,
    ) -> Result<SubmittedJob, GearmanError> {
        let (function, unique) = (function.to_string(), unique.to_string());
        self.request("SUBMIT_JOB", |reply| Command::Submit {
            function,
            unique,
            data,
            reply,
        })
        .await
    }

    /// Asks gearmand for a job's status (`GET_STATUS`).
    pub async fn status(&self, handle: &str) -> Result<JobStatus, GearmanError> {
        let handle = handle.to_string();
        self.request("GET_STATUS", |reply| Command::Status { handle, reply })
            .await
    }

    /// Asks gearmand for the status of the job with this unique id
    /// (`GET_STATUS_UNIQUE`), including how many clients wait for it.
    pub async fn status_unique(&self, unique: &str) -> Result<UniqueStatus, GearmanError> {
        let unique = unique.to_string();
        self.request("GET_STATUS_UNIQUE", |reply| Command::StatusUnique {
            unique,
            reply,
        })
        .await
    }

    /// Round trip through gearmand (`ECHO_REQ`).
    pub async fn echo(&self, data: Bytes) -> Result<Bytes, GearmanError> {
        self.request("ECHO_REQ", |reply| Command::Echo { data, reply })
            .await
    }
}

/// Connects (the connection's options are sent by [`Session::begin`]).
async fn open(addr: &str, opts: &ClientOptions) -> Result<Conn, GearmanError> {
    let (conn, _) = connect(addr, opts.connect_timeout, opts.max_packet_size).await?;
    Ok(conn)
}

/// The state of one live connection.
#[derive(Default)]
struct Session {
    pending: VecDeque<Pending>,
    jobs: HashMap<String, mpsc::UnboundedSender<JobEvent>>,
}

impl Session {
    /// Sets a fresh connection's options: `OPTION_REQ exceptions`, not waited for.
    async fn begin(&mut self, c: &mut Conn, opts: &ClientOptions) -> Result<(), GearmanError> {
        if opts.exceptions {
            c.send(Packet::req(PacketType::OPTION_REQ, ["exceptions"]))
                .await?;
            self.pending.push_back(Pending::Option);
        }
        Ok(())
    }

    /// The request an answer of type `kind` belongs to: the oldest outstanding one,
    /// after failing the optional requests before it that the server skipped. `ERROR`
    /// answers the oldest. `None` when nothing waits for it.
    fn answered(&mut self, kind: PacketType) -> Option<Pending> {
        while let Some(front) = self.pending.pop_front() {
            if kind == PacketType::ERROR || front.answer() == kind || !front.optional() {
                return Some(front);
            }
            tracing::debug!(request = front.name(), answer = %kind, "the server skipped an optional request");
            let name = front.name();
            front.fail(GearmanError::Unanswered(name));
        }
        None
    }

    /// Tells everyone waiting that the connection is gone.
    fn shut(self) {
        for (_, tx) in self.jobs {
            let _ = tx.send(JobEvent::Disconnected);
        }
        for p in self.pending {
            p.fail(GearmanError::Disconnected);
        }
    }

    /// Handles one packet from gearmand; `Err` means the stream is out of sync.
    fn on_packet(&mut self, p: Packet) -> Result<(), GearmanError> {
        let event = match p.kind {
            PacketType::JOB_CREATED => {
                let handle = p.arg_lossy(0);
                match self.answered(p.kind) {
                    Some(Pending::Submit(reply)) => {
                        let (tx, events) = mpsc::unbounded_channel();
                        self.jobs.insert(handle.clone(), tx);
                        let _ = reply.send(Ok(SubmittedJob { handle, events }));
                        return Ok(());
                    }
                    other => return Err(self.desync(other, p.kind)),
                }
            }
            PacketType::STATUS_RES => match self.answered(p.kind) {
                Some(Pending::Status(reply)) => {
                    let num = |i| {
                        p.arg_str(i)
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    let _ = reply.send(Ok(JobStatus {
                        known: p.arg_str(1) == Some("1"),
                        running: p.arg_str(2) == Some("1"),
                        numerator: num(3),
                        denominator: num(4),
                    }));
                    return Ok(());
                }
                other => return Err(self.desync(other, p.kind)),
            },
            PacketType::STATUS_RES_UNIQUE => match self.answered(p.kind) {
                Some(Pending::StatusUnique(reply)) => {
                    let num = |i| {
                        p.arg_str(i)
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    let _ = reply.send(Ok(UniqueStatus {
                        known: p.arg_str(1) == Some("1"),
                        running: p.arg_str(2) == Some("1"),
                        numerator: num(3),
                        denominator: num(4),
                        clients: num(5),
                    }));
                    return Ok(());
                }
                other => return Err(self.desync(other, p.kind)),
            },
            PacketType::ECHO_RES => match self.answered(p.kind) {
                Some(Pending::Echo(reply)) => {
                    let _ = reply.send(Ok(p.args.into_iter().next().unwrap_or_default()));
                    return Ok(());
                }
                other => return Err(self.desync(other, p.kind)),
            },
            PacketType::ERROR => {
                let e = GearmanError::Server {
                    code: p.arg_lossy(0),
                    text: p.arg_lossy(1),
                };
                match self.answered(p.kind) {
                    Some(Pending::Option) => {
                        tracing::warn!(error = %e, "gearmand refused OPTION_REQ exceptions")
                    }
                    Some(pending) => pending.fail(e),
                    None => tracing::warn!(error = %e, "gearmand sent an ERROR nobody waited for"),
                }
                return Ok(());
            }
            PacketType::OPTION_RES => {
                return match self.answered(p.kind) {
                    Some(Pending::Option) => Ok(()),
                    other => Err(self.desync(other, p.kind)),
                };
            }
            PacketType::NOOP => return Ok(()),
            PacketType::WORK_DATA => JobEvent::Data(p.args[1].clone()),
            PacketType::WORK_WARNING => JobEvent::Warning(p.args[1].clone()),
            PacketType::WORK_STATUS => {
                let num = |i| {
                    p.arg_str(i)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                JobEvent::Status {
                    numerator: num(1),
                    denominator: num(2),
                }
            }
            PacketType::WORK_COMPLETE => JobEvent::Complete(p.args[1].clone()),
            PacketType::WORK_FAIL => JobEvent::Fail,
            PacketType::WORK_EXCEPTION => JobEvent::Exception(p.args[1].clone()),
            other => {
                return Err(GearmanError::Unexpected(format!(
                    "{other} sent to a client"
                )));
            }
        };
        let handle = p.arg_lossy(0);
        let terminal = event.is_terminal();
        let delivered = match self.jobs.get(&handle) {
            Some(tx) => tx.send(event).is_ok(),
            None => {
                tracing::debug!(%handle, "event for a job this connection does not track");
                false
            }
        };
        if terminal || !delivered {
            self.jobs.remove(&handle);
        }
        Ok(())
    }

    /// Handles a packet the codec skipped: an answer fails its request, a terminal
    /// `WORK_*` still ends its job (without its data), anything else is dropped.
    fn on_skipped(&mut self, s: Skipped) {
        let why = format!("{} of {} bytes: {}", s.kind_name(), s.size, s.reason);
        match s.kind {
            Some(
                k @ (PacketType::JOB_CREATED
                | PacketType::STATUS_RES
                | PacketType::STATUS_RES_UNIQUE
                | PacketType::ECHO_RES
                | PacketType::OPTION_RES
                | PacketType::ERROR),
            ) => {
                if let Some(p) = self.answered(k) {
                    p.fail(GearmanError::Unreadable(why));
                }
            }
            Some(
                k
                @ (PacketType::WORK_COMPLETE | PacketType::WORK_FAIL | PacketType::WORK_EXCEPTION),
            ) => {
                let handle = s.arg_lossy(0);
                tracing::warn!(%handle, "{why}; the job ended without its data");
                if let Some(tx) = self.jobs.remove(&handle) {
                    let _ = tx.send(match k {
                        PacketType::WORK_COMPLETE => JobEvent::Complete(Bytes::new()),
                        PacketType::WORK_FAIL => JobEvent::Fail,
                        _ => JobEvent::Exception(Bytes::new()),
                    });
                }
            }
            _ => tracing::warn!(handle = %s.arg_lossy(0), "skipped an unreadable packet: {why}"),
        }
    }

    fn desync(&mut self, got: Option<Pending>, kind: PacketType) -> GearmanError {
        if let Some(p) = got {
            p.fail(GearmanError::Unexpected(format!("{kind} out of order")));
        }
        GearmanError::Unexpected(format!(
            "{kind} does not answer the oldest outstanding request"
        ))
    }
}

/// The connection task: sends commands, reads packets, reconnects on the next command
/// after a failure, ends when every client handle is dropped.
async fn drive(
    addr: String,
    opts: ClientOptions,
    mut conn: Option<Conn>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut session = Session::default();
    if let Some(c) = conn.as_mut()
        && let Err(e) = session.begin(c, &opts).await
    {
        tracing::debug!(error = %e, "gearman client connection failed");
        conn = None;
        std::mem::take(&mut session).shut();
    }
    loop {
        let Some(c) = conn.as_mut() else {
            let Some(cmd) = rx.recv().await else { return };
            match open(&addr, &opts).await {
                Ok(mut c) => {
                    let begun = session.begin(&mut c, &opts).await;
                    conn = Some(c);
                    let sent = match begun {
                        Ok(()) => {
                            send_command(conn.as_mut().expect("just set"), &mut session, cmd).await
                        }
                        Err(e) => {
                            fail_command(cmd, GearmanError::Disconnected);
                            Err(e)
                        }
                    };
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "gearman client connection failed");
                        conn = None;
                        std::mem::take(&mut session).shut();
                    }
                }
                Err(e) => fail_command(cmd, e),
            }
            continue;
        };
        let broken = tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(cmd) => send_command(c, &mut session, cmd).await.err(),
            },
            pkt = c.next() => match pkt {
                Some(Ok(Frame::Packet(p))) => session.on_packet(p).err(),
                Some(Ok(Frame::Skipped(s))) => {
                    session.on_skipped(s);
                    None
                }
                Some(Err(e)) => Some(e.into()),
                None => Some(GearmanError::Disconnected),
            },
        };
        if let Some(e) = broken {
            tracing::debug!(error = %e, %addr, "gearman client connection lost");
            conn = None;
            std::mem::take(&mut session).shut();
        }
    }
}

fn fail_command(cmd: Command, e: GearmanError) {
    match cmd {
        Command::Submit { reply, .. } => Pending::Submit(reply).fail(e),
        Command::Status { reply, .. } => Pending::Status(reply).fail(e),
        Command::Echo { reply, .. } => Pending::Echo(reply).fail(e),
        Command::StatusUnique { reply, .. } => Pending::StatusUnique(reply).fail(e),
    }
}

async fn send_command(
    c: &mut Conn,
    session: &mut Session,
    cmd: Command,
) -> Result<(), GearmanError> {
    let (packet, pending) = match cmd {
        Command::Submit {
            function,
            unique,
            data,
            reply,
        } => (
            Packet::req(
                PacketType::SUBMIT_JOB,
                [Bytes::from(function), Bytes::from(unique), data],
            ),
            Pending::Submit(reply),
        ),
        Command::Status { handle, reply } => (
            Packet::req(PacketType::GET_STATUS, [handle]),
            Pending::Status(reply),
        ),
        Command::Echo { data, reply } => (
            Packet::req(PacketType::ECHO_REQ, [data]),
            Pending::Echo(reply),
        ),
        Command::StatusUnique { unique, reply } => (
            Packet::req(PacketType::GET_STATUS_UNIQUE, [unique]),
            Pending::StatusUnique(reply),
        ),
    };
    match c.send(packet).await {
        Ok(()) => {
            session.pending.push_back(pending);
            Ok(())
        }
        // A packet the codec refuses (NUL in a function name, too large) fails only this
        // request; an I/O error breaks the connection.
        Err(crate::codec::CodecError::Io(e)) => {
            pending.fail(GearmanError::Disconnected);
            Err(GearmanError::Codec(crate::codec::CodecError::Io(e)))
        }
        Err(e) => {
            pending.fail(GearmanError::Codec(e));
            Ok(())
        }
    }
}
