//! Gearman binary packets: magic, type and arguments.
//!
//! A packet on the wire is a 12-byte header (`\0REQ` or `\0RES`, a big-endian `u32` type
//! and a big-endian `u32` body size) followed by the body: the packet's arguments
//! separated by NUL bytes. The last argument is not NUL-terminated and, for packets that
//! carry opaque data (`SUBMIT_JOB`, `WORK_DATA`, ...), may itself contain NULs. See
//! <http://gearman.org/protocol/>.

use std::fmt;

use bytes::Bytes;

/// The packet's direction: a request (`\0REQ`) or a response (`\0RES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `\0REQ`: sent by clients and workers.
    Req,
    /// `\0RES`: sent by the server.
    Res,
}

impl Magic {
    /// The four magic bytes.
    pub fn bytes(self) -> &'static [u8; 4] {
        match self {
            Magic::Req => b"\0REQ",
            Magic::Res => b"\0RES",
        }
    }

    /// Parses the four magic bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            b"\0REQ" => Some(Magic::Req),
            b"\0RES" => Some(Magic::Res),
            _ => None,
        }
    }
}

macro_rules! packet_types {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $args:literal, $data_last:literal;)*) => {
        /// Every packet type of the Gearman protocol (type numbers as on the wire).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum PacketType {
            $($(#[$doc])* $name = $num,)*
        }

        impl PacketType {
            /// Every packet type.
            pub const ALL: &'static [PacketType] = &[$(PacketType::$name,)*];

            /// The type for a wire number, `None` for numbers the protocol does not define.
            pub fn from_u32(n: u32) -> Option<Self> {
                match n {
                    $($num => Some(PacketType::$name),)*
                    _ => None,
                }
            }

            /// How many arguments the packet carries.
            pub fn arg_count(self) -> usize {
                match self {
                    $(PacketType::$name => $args,)*
                }
            }

            /// Whether the last argument is opaque data (may contain NULs) rather than a
            /// string (a handle, function name or number), whose trailing NULs gearmand
            /// sometimes includes and the decoder trims.
            pub fn data_last(self) -> bool {
                match self {
                    $(PacketType::$name => $data_last,)*
                }
            }

            /// The protocol's name (`SUBMIT_JOB`).
            pub fn name(self) -> &'static str {
                match self {
                    $(PacketType::$name => stringify!($name),)*
                }
            }
        }
    };
}

packet_types! {
    /// Worker: can do a function.
    CAN_DO = 1, 1, false;
    /// Worker: can no longer do a function (gearmand re-queues its running jobs of it).
    CANT_DO = 2, 1, false;
    /// Worker: forget every function (gearmand re-queues its running jobs).
    RESET_ABILITIES = 3, 0, false;
    /// Worker: going to sleep until a `NOOP`.
    PRE_SLEEP = 4, 0, false;
    /// Server: wake up, there may be work.
    NOOP = 6, 0, false;
    /// Client: submit a foreground job (function, unique, data).
    SUBMIT_JOB = 7, 3, true;
    /// Server: the submitted job's handle.
    JOB_CREATED = 8, 1, false;
    /// Worker: give me a job.
    GRAB_JOB = 9, 0, false;
    /// Server: no job for you.
    NO_JOB = 10, 0, false;
    /// Server: a job (handle, function, data).
    JOB_ASSIGN = 11, 3, true;
    /// Worker/server: progress (handle, numerator, denominator).
    WORK_STATUS = 12, 3, false;
    /// Worker/server: job done (handle, data).
    WORK_COMPLETE = 13, 2, true;
    /// Worker/server: job failed (handle).
    WORK_FAIL = 14, 1, false;
    /// Client: status of a job (handle).
    GET_STATUS = 15, 1, false;
    /// Echo request (data).
    ECHO_REQ = 16, 1, true;
    /// Echo response (data).
    ECHO_RES = 17, 1, true;
    /// Client: submit a background job.
    SUBMIT_JOB_BG = 18, 3, true;
    /// Server: error (code, text).
    ERROR = 19, 2, false;
    /// Server: job status (handle, known, running, numerator, denominator).
    STATUS_RES = 20, 5, false;
    /// Client: submit a high-priority job.
    SUBMIT_JOB_HIGH = 21, 3, true;
    /// Worker: set its id (shown by the admin `workers` command).
    SET_CLIENT_ID = 22, 1, false;
    /// Worker: can do a function with a timeout (function, seconds).
    CAN_DO_TIMEOUT = 23, 2, false;
    /// Worker: all yours (unused by gearmand).
    ALL_YOURS = 24, 0, false;
    /// Worker/server: job failed with an exception (handle, data); terminal in gearmand 1.1.
    WORK_EXCEPTION = 25, 2, true;
    /// Client/worker: set a connection option (`exceptions`).
    OPTION_REQ = 26, 1, false;
    /// Server: option accepted.
    OPTION_RES = 27, 1, false;
    /// Worker/server: intermediate data (handle, data).
    WORK_DATA = 28, 2, true;
    /// Worker/server: a warning (handle, data).
    WORK_WARNING = 29, 2, true;
    /// Worker: give me a job, with its unique id.
    GRAB_JOB_UNIQ = 30, 0, false;
    /// Server: a job (handle, function, unique, data).
    JOB_ASSIGN_UNIQ = 31, 4, true;
    /// Client: submit a high-priority background job.
    SUBMIT_JOB_HIGH_BG = 32, 3, true;
    /// Client: submit a low-priority job.
    SUBMIT_JOB_LOW = 33, 3, true;
    /// Client: submit a low-priority background job.
    SUBMIT_JOB_LOW_BG = 34, 3, true;
    /// Client: submit a scheduled job.
    SUBMIT_JOB_SCHED = 35, 8, true;
    /// Client: submit a job to run at an epoch time.
    SUBMIT_JOB_EPOCH = 36, 4, true;
    /// Client: submit a map/reduce job.
    SUBMIT_REDUCE_JOB = 37, 4, true;
    /// Client: submit a background map/reduce job.
    SUBMIT_REDUCE_JOB_BACKGROUND = 38, 4, true;
    /// Worker: give me a job, with everything.
    GRAB_JOB_ALL = 39, 0, false;
    /// Server: a job with everything (handle, function, unique, reducer, data).
    JOB_ASSIGN_ALL = 40, 5, true;
    /// Client: status of a job by unique id.
    GET_STATUS_UNIQUE = 41, 1, false;
    /// Server: job status by unique id (unique, known, running, numerator, denominator, clients).
    STATUS_RES_UNIQUE = 42, 6, false;
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One Gearman packet.
///
/// ```
/// use executor_gearman::packet::{Packet, PacketType};
/// let p = Packet::req(PacketType::SUBMIT_JOB, ["build:unit", "uuid-1", "{}"]);
/// assert_eq!(p.arg_str(0), Some("build:unit"));
/// assert_eq!(p.arg(2).unwrap().as_ref(), b"{}");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// Request or response.
    pub magic: Magic,
    /// The packet type.
    pub kind: PacketType,
    /// The arguments, exactly [`PacketType::arg_count`] of them.
    pub args: Vec<Bytes>,
}

impl Packet {
    /// A packet from its parts.
    pub fn new<I, A>(magic: Magic, kind: PacketType, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        Self {
            magic,
            kind,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// A request packet.
    pub fn req<I, A>(kind: PacketType, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        Self::new(Magic::Req, kind, args)
    }

    /// A request packet without arguments (`GRAB_JOB_UNIQ`, `PRE_SLEEP`, ...).
    pub fn bare(kind: PacketType) -> Self {
        Self {
            magic: Magic::Req,
            kind,
            args: Vec::new(),
        }
    }

    /// A response packet.
    pub fn res<I, A>(kind: PacketType, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        Self::new(Magic::Res, kind, args)
    }

    /// Argument `i`, if present.
    pub fn arg(&self, i: usize) -> Option<&Bytes> {
        self.args.get(i)
    }

    /// Argument `i` as UTF-8 text, if present and valid.
    pub fn arg_str(&self, i: usize) -> Option<&str> {
        self.args.get(i).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Argument `i` as lossy text (for handles and messages in logs).
    pub fn arg_lossy(&self, i: usize) -> String {
        self.args
            .get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// The body size on the wire.
    pub fn body_len(&self) -> usize {
        self.args.iter().map(Bytes::len).sum::<usize>() + self.args.len().saturating_sub(1)
    }
}

/// Debug shows the type, handle-like arguments and the data size, never the data: job
/// arguments can carry build tokens.
impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Packet");
        d.field("magic", &self.magic).field("kind", &self.kind);
        let n = self.args.len();
        let shown: Vec<String> = self
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i + 1 == n && self.kind.data_last() {
                    format!("<{} bytes>", a.len())
                } else {
                    String::from_utf8_lossy(a).into_owned()
                }
            })
            .collect();
        d.field("args", &shown).finish()
    }
}
