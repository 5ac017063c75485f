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

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::codec::DEFAULT_MAX_PACKET_SIZE;
use crate::conn::Conn;
use crate::error::GearmanError;

mod session;

use session::{drive, open};

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
