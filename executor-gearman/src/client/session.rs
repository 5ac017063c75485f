//! The connection behind a [`GearmanClient`](super::GearmanClient): the background task
//! that connects, sends requests, matches each answer to its request (the FIFO of the
//! module docs, with optional answers) and routes `WORK_*` packets to their job.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{ClientOptions, Command, JobEvent, JobStatus, SubmittedJob, UniqueStatus};
use crate::codec::{Frame, Skipped};
use crate::conn::{Conn, connect};
use crate::error::GearmanError;
use crate::packet::{Packet, PacketType};

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

/// Connects (the connection's options are sent by [`Session::begin`]).
pub(super) async fn open(addr: &str, opts: &ClientOptions) -> Result<Conn, GearmanError> {
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
                    let _ = reply.send(Ok(job_status(&p)));
                    return Ok(());
                }
                other => return Err(self.desync(other, p.kind)),
            },
            PacketType::STATUS_RES_UNIQUE => match self.answered(p.kind) {
                Some(Pending::StatusUnique(reply)) => {
                    // The same fields as STATUS_RES, then the waiting clients.
                    let s = job_status(&p);
                    let _ = reply.send(Ok(UniqueStatus {
                        known: s.known,
                        running: s.running,
                        numerator: s.numerator,
                        denominator: s.denominator,
                        clients: number_arg(&p, 5),
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
pub(super) async fn drive(
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

/// The fields `STATUS_RES` and `STATUS_RES_UNIQUE` share: the job is known (1), running
/// (1), and its progress numerator and denominator.
fn job_status(p: &Packet) -> JobStatus {
    JobStatus {
        known: p.arg_str(1) == Some("1"),
        running: p.arg_str(2) == Some("1"),
        numerator: number_arg(p, 3),
        denominator: number_arg(p, 4),
    }
}

/// Argument `i` of `p` as a number; 0 when absent or not a number.
fn number_arg(p: &Packet, i: usize) -> u64 {
    p.arg_str(i)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
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
