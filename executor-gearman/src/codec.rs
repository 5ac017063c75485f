//! The packet codec: a `tokio_util::codec` [`Decoder`] of [`Frame`]s and [`Encoder`] of
//! [`Packet`]s.
//!
//! The decoder never panics on any input (property-tested with arbitrary bytes) and keeps
//! the stream in sync whenever the header can be read: a packet it cannot use (a body
//! above the configured maximum, a type number the protocol does not define, a body with
//! too few arguments) is read past and yielded as [`Frame::Skipped`], with the leading
//! arguments (a job's handle, function and unique id) that fit in its first
//! [`SKIP_HEAD_LEN`] bytes, so the connection's owner can answer that one job and go on.
//! An oversized body is never buffered: its bytes are dropped as they arrive. Only bad
//! magic is an error ([`CodecError::BadMagic`]): the stream is then out of sync and the
//! connection is dropped by its owner.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::packet::{Magic, Packet, PacketType};

/// Header size: magic (4), type (4), body size (4).
pub const HEADER_LEN: usize = 12;

/// The default largest body accepted or sent (16 MiB).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;

/// How many leading body bytes of a skipped packet are kept to find its leading
/// arguments (gearmand limits handles and unique ids to 64 bytes, function names to 512).
pub const SKIP_HEAD_LEN: usize = 1024;

/// Why a packet could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The first four bytes are neither `\0REQ` nor `\0RES`.
    #[error("bad magic {0:02x?}, expected \\0REQ or \\0RES")]
    BadMagic([u8; 4]),
    /// The body is larger than the configured maximum (encoding).
    #[error("{kind} packet of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The packet type.
        kind: String,
        /// The body size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The packet does not hold its type's arguments (encoding).
    #[error("malformed {kind} packet: expected {expected} arguments, found {found}")]
    Malformed {
        /// The packet type.
        kind: PacketType,
        /// Arguments the type carries.
        expected: usize,
        /// Arguments found.
        found: usize,
    },
    /// An argument that is not the last contains a NUL byte (it would split on the wire).
    #[error("{kind} argument {index} contains a NUL byte")]
    NulInArgument {
        /// The packet type.
        kind: PacketType,
        /// The argument's index.
        index: usize,
    },
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A packet.
    Packet(Packet),
    /// A packet that was read past without being decoded.
    Skipped(Skipped),
}

impl Frame {
    /// The packet, unless it was skipped.
    pub fn into_packet(self) -> Option<Packet> {
        match self {
            Frame::Packet(p) => Some(p),
            Frame::Skipped(_) => None,
        }
    }
}

/// A packet the decoder read past: see the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Request or response.
    pub magic: Magic,
    /// The type number on the wire.
    pub type_num: u32,
    /// The type, when the protocol defines the number.
    pub kind: Option<PacketType>,
    /// The body size the header announced.
    pub size: usize,
    /// Why it was skipped.
    pub reason: SkipReason,
    /// The leading arguments found complete (NUL-terminated) in the body's first
    /// [`SKIP_HEAD_LEN`] bytes, at most all but the type's last one; none for unknown types.
    pub leading: Vec<Bytes>,
}

impl Skipped {
    /// Leading argument `i` as lossy text.
    pub fn arg_lossy(&self, i: usize) -> String {
        self.leading
            .get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// The packet type's name, or `type <n>` for numbers the protocol does not define.
    pub fn kind_name(&self) -> String {
        self.kind
            .map_or_else(|| format!("type {}", self.type_num), |k| k.name().into())
    }
}

/// The leading arguments are handles, function names and unique ids; the body is never
/// shown (it may carry a token).
impl std::fmt::Debug for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let leading: Vec<String> = (0..self.leading.len()).map(|i| self.arg_lossy(i)).collect();
        f.debug_struct("Skipped")
            .field("magic", &self.magic)
            .field("kind", &self.kind_name())
            .field("size", &self.size)
            .field("reason", &self.reason)
            .field("leading", &leading)
            .finish()
    }
}

/// Why a packet was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The body is larger than the configured maximum.
    #[error("its body of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The body size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The type number is not one the protocol defines.
    #[error("the protocol defines no packet type {0}")]
    UnknownType(u32),
    /// The body does not hold the type's arguments.
    #[error("it holds {found} of its {expected} arguments")]
    Malformed {
        /// Arguments the type carries.
        expected: usize,
        /// Arguments found.
        found: usize,
    },
}

/// Encodes and decodes Gearman packets; bodies above `max_packet_size` are skipped when
/// decoding and refused when encoding.
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
/// use executor_gearman::codec::{Frame, PacketCodec, SkipReason};
/// use executor_gearman::packet::{Packet, PacketType};
///
/// let mut codec = PacketCodec::new(64);
/// let mut buf = BytesMut::new();
/// codec.encode(Packet::req(PacketType::CAN_DO, ["build:unit"]), &mut buf).unwrap();
/// assert_eq!(&buf[..12], b"\0REQ\0\0\0\x01\0\0\0\x0a");
/// let Some(Frame::Packet(p)) = codec.decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!(p.arg_str(0), Some("build:unit"));
///
/// // A job too large to accept: its handle is kept, its 100 body bytes are dropped.
/// let mut big = BytesMut::from(&b"\0RES\0\0\0\x1f\0\0\0\x64H:1\0build:x\0u1\0"[..]);
/// big.extend_from_slice(&[b'x'; 85]); // 15 + 85 = the declared 100
/// let Some(Frame::Skipped(s)) = codec.decode(&mut big).unwrap() else { panic!() };
/// assert_eq!((s.arg_lossy(0).as_str(), s.reason), ("H:1", SkipReason::TooLarge { size: 100, max: 64 }));
/// assert!(big.is_empty());
///
/// let mut bad = BytesMut::from(&b"\0XYZ\0\0\0\x01\0\0\0\0"[..]);
/// assert!(codec.decode(&mut bad).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PacketCodec {
    max_packet_size: usize,
    /// Bytes of a skipped body still to drop as they arrive.
    discard: usize,
}

impl Default for PacketCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

impl PacketCodec {
    /// A codec accepting bodies up to `max_packet_size` bytes.
    pub fn new(max_packet_size: usize) -> Self {
        Self {
            max_packet_size,
            discard: 0,
        }
    }

    /// The largest body accepted.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Drops what is buffered of a skipped body; whether all of it is gone.
    fn drain_discard(&mut self, src: &mut BytesMut) -> bool {
        let n = self.discard.min(src.len());
        src.advance(n);
        self.discard -= n;
        self.discard == 0
    }
}

impl Decoder for PacketCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if !self.drain_discard(src) {
            return Ok(None);
        }
        // Reject garbage as early as its first bytes allow.
        let seen = src.len().min(4);
        if seen > 0 && !(b"\0REQ".starts_with(&src[..seen]) || b"\0RES".starts_with(&src[..seen])) {
            let mut m = [0u8; 4];
            m[..seen].copy_from_slice(&src[..seen]);
            return Err(CodecError::BadMagic(m));
        }
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let magic = Magic::from_bytes(&src[..4]).ok_or_else(|| {
            let mut m = [0u8; 4];
            m.copy_from_slice(&src[..4]);
            CodecError::BadMagic(m)
        })?;
        let type_num = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
        let kind = PacketType::from_u32(type_num);
        let size = u32::from_be_bytes([src[8], src[9], src[10], src[11]]) as usize;
        let reason = match kind {
            None => Some(SkipReason::UnknownType(type_num)),
            Some(_) if size > self.max_packet_size => Some(SkipReason::TooLarge {
                size,
                max: self.max_packet_size,
            }),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            // Keep the head (for the leading arguments), drop the rest as it arrives.
            let head = size.min(SKIP_HEAD_LEN);
            if src.len() < HEADER_LEN + head {
                src.reserve(HEADER_LEN + head - src.len());
                return Ok(None);
            }
            src.advance(HEADER_LEN);
            let head = src.split_to(head).freeze();
            self.discard = size - head.len();
            self.drain_discard(src);
            let leading = kind.map_or_else(Vec::new, |k| leading_args(k, head));
            return Ok(Some(Frame::Skipped(Skipped {
                magic,
                type_num,
                kind,
                size,
                reason,
                leading,
            })));
        }
        let kind = kind.expect("known type");
        if src.len() < HEADER_LEN + size {
            src.reserve(HEADER_LEN + size - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(size).freeze();
        match split_args(kind, body.clone()) {
            Ok(args) => Ok(Some(Frame::Packet(Packet { magic, kind, args }))),
            Err((expected, found)) => Ok(Some(Frame::Skipped(Skipped {
                magic,
                type_num,
                kind: Some(kind),
                size,
                reason: SkipReason::Malformed { expected, found },
                leading: leading_args(kind, body),
            }))),
        }
    }
}

/// The complete (NUL-terminated) arguments at the start of `head`, at most all but the
/// type's last one.
fn leading_args(kind: PacketType, mut head: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while out.len() + 1 < kind.arg_count() {
        let Some(i) = head.iter().position(|&b| b == 0) else {
            break;
        };
        out.push(head.split_to(i));
        head.advance(1);
    }
    out
}

/// Splits a body into the type's arguments: the first `n - 1` at NULs, the rest is the
/// last argument (trailing NULs trimmed when it is a string rather than data). On a
/// short body: (arguments expected, arguments found).
fn split_args(kind: PacketType, mut body: Bytes) -> Result<Vec<Bytes>, (usize, usize)> {
    let n = kind.arg_count();
    if n == 0 {
        return if body.is_empty() {
            Ok(Vec::new())
        } else {
            Err((0, 1))
        };
    }
    let mut args = Vec::with_capacity(n);
    for found in 0..n - 1 {
        match body.iter().position(|&b| b == 0) {
            Some(i) => {
                args.push(body.split_to(i));
                body.advance(1);
            }
            None => return Err((n, found + 1)),
        }
    }
    if !kind.data_last() {
        let keep = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        body.truncate(keep);
    }
    args.push(body);
    Ok(args)
}

impl Encoder<Packet> for PacketCodec {
    type Error = CodecError;

    fn encode(&mut self, p: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        let n = p.kind.arg_count();
        if p.args.len() != n {
            return Err(CodecError::Malformed {
                kind: p.kind,
                expected: n,
                found: p.args.len(),
            });
        }
        if let Some(index) = p
            .args
            .iter()
            .take(n.saturating_sub(1))
            .position(|a| a.contains(&0))
        {
            return Err(CodecError::NulInArgument {
                kind: p.kind,
                index,
            });
        }
        let size = p.body_len();
        if size > self.max_packet_size {
            return Err(CodecError::TooLarge {
                kind: p.kind.name().to_string(),
                size,
                max: self.max_packet_size,
            });
        }
        let size32 = u32::try_from(size).map_err(|_| CodecError::TooLarge {
            kind: p.kind.name().to_string(),
            size,
            max: u32::MAX as usize,
        })?;
        dst.reserve(HEADER_LEN + size);
        dst.put_slice(p.magic.bytes());
        dst.put_u32(p.kind as u32);
        dst.put_u32(size32);
        for (i, a) in p.args.iter().enumerate() {
            if i > 0 {
                dst.put_u8(0);
            }
            dst.put_slice(a);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes one frame that must be a packet.
    fn packet(codec: &mut PacketCodec, buf: &mut BytesMut) -> Packet {
        match codec.decode(buf).unwrap() {
            Some(Frame::Packet(p)) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Decodes one frame that must be skipped.
    fn skipped(codec: &mut PacketCodec, buf: &mut BytesMut) -> Skipped {
        match codec.decode(buf).unwrap() {
            Some(Frame::Skipped(s)) => s,
            other => panic!("expected a skipped packet, got {other:?}"),
        }
    }

    fn roundtrip(p: Packet) -> Packet {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(p, &mut buf).unwrap();
        let out = packet(&mut codec, &mut buf);
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn every_type_round_trips() {
        for &kind in PacketType::ALL {
            let args: Vec<Bytes> = (0..kind.arg_count())
                .map(|i| Bytes::from(format!("a{i}")))
                .collect();
            let p = Packet::new(Magic::Res, kind, args);
            assert_eq!(roundtrip(p.clone()), p, "{kind}");
        }
    }

    #[test]
    fn data_may_contain_nuls() {
        let p = Packet::req(PacketType::SUBMIT_JOB, [&b"f"[..], b"u", b"a\0b\0"]);
        assert_eq!(roundtrip(p.clone()), p);
    }

    #[test]
    fn wire_bytes_match_the_protocol() {
        let mut buf = BytesMut::new();
        PacketCodec::default()
            .encode(
                Packet::req(PacketType::SUBMIT_JOB, ["reverse", "", "test"]),
                &mut buf,
            )
            .unwrap();
        assert_eq!(&buf[..], b"\0REQ\0\0\0\x07\0\0\0\x0dreverse\0\0test");
        let mut buf = BytesMut::new();
        PacketCodec::default()
            .encode(Packet::bare(PacketType::GRAB_JOB_UNIQ), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"\0REQ\0\0\0\x1e\0\0\0\0");
    }

    #[test]
    fn partial_input_waits() {
        let mut codec = PacketCodec::default();
        let mut full = BytesMut::new();
        codec
            .encode(Packet::res(PacketType::JOB_CREATED, ["H:vm:1"]), &mut full)
            .unwrap();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(codec.decode(&mut part).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn two_packets_in_one_buffer() {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::new();
        codec
            .encode(Packet::res(PacketType::NOOP, Vec::<Bytes>::new()), &mut buf)
            .unwrap();
        codec
            .encode(
                Packet::res(PacketType::NO_JOB, Vec::<Bytes>::new()),
                &mut buf,
            )
            .unwrap();
        assert_eq!(packet(&mut codec, &mut buf).kind, PacketType::NOOP);
        assert_eq!(packet(&mut codec, &mut buf).kind, PacketType::NO_JOB);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn bad_magic_is_rejected_from_the_first_byte() {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::from(&b"s"[..]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::BadMagic(m)) if m[0] == b's'));
        let mut buf = BytesMut::from(&b"\0REX\0\0\0\x06\0\0\0\0"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::BadMagic(_))
        ));
    }

    #[test]
    fn unknown_types_are_skipped_and_the_stream_goes_on() {
        for t in [0u32, 5, 43, u32::MAX] {
            let mut codec = PacketCodec::default();
            let mut buf = BytesMut::from(&b"\0RES"[..]);
            buf.put_u32(t);
            buf.put_u32(3);
            buf.put_slice(b"a\0b");
            codec
                .encode(Packet::res(PacketType::NOOP, Vec::<Bytes>::new()), &mut buf)
                .unwrap();
            let s = skipped(&mut codec, &mut buf);
            assert_eq!(
                (s.reason, s.kind, s.size),
                (SkipReason::UnknownType(t), None, 3)
            );
            assert!(s.leading.is_empty());
            assert_eq!(packet(&mut codec, &mut buf).kind, PacketType::NOOP);
        }
    }

    #[test]
    fn an_oversized_body_is_dropped_as_it_arrives_never_buffered() {
        let mut codec = PacketCodec::new(2048);
        let size = 10_000usize;
        let mut wire = BytesMut::from(&b"\0RES"[..]);
        wire.put_u32(PacketType::JOB_ASSIGN_UNIQ as u32);
        wire.put_u32(size as u32);
        wire.put_slice(b"H:vm:7\0build:unit\0uuid-1\0");
        let body_rest = size - (wire.len() - HEADER_LEN);
        wire.put_slice(&vec![b'{'; body_rest]);
        codec
            .encode(
                Packet::res(PacketType::NOOP, Vec::<Bytes>::new()),
                &mut wire,
            )
            .unwrap();
        // Fed in 500-byte reads: the buffer never holds more than a read.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in wire.chunks(500) {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            assert!(buf.len() <= 500 + HEADER_LEN + SKIP_HEAD_LEN);
        }
        assert_eq!(frames.len(), 2, "{frames:?}");
        let Frame::Skipped(s) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(s.kind, Some(PacketType::JOB_ASSIGN_UNIQ));
        assert_eq!(s.reason, SkipReason::TooLarge { size, max: 2048 });
        let leading: Vec<String> = (0..3).map(|i| s.arg_lossy(i)).collect();
        assert_eq!(leading, ["H:vm:7", "build:unit", "uuid-1"]);
        assert!(matches!(&frames[1], Frame::Packet(p) if p.kind == PacketType::NOOP));
        assert!(!format!("{s:?}").contains("{{{"), "the body is never shown");
    }

    #[test]
    fn too_few_arguments_are_skipped_with_what_was_found() {
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::JOB_ASSIGN_UNIQ as u32);
        buf.put_u32(3);
        buf.put_slice(b"h\0f");
        let s = skipped(&mut PacketCodec::default(), &mut buf);
        assert_eq!(
            s.reason,
            SkipReason::Malformed {
                expected: 4,
                found: 2
            }
        );
        assert_eq!(s.arg_lossy(0), "h");
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::NOOP as u32);
        buf.put_u32(1);
        buf.put_u8(b'x');
        assert!(matches!(
            skipped(&mut PacketCodec::default(), &mut buf).reason,
            SkipReason::Malformed { expected: 0, .. }
        ));
    }

    #[test]
    fn trailing_nul_of_string_arguments_is_trimmed() {
        // gearmand 1.1 sends WORK_FAIL with the handle's NUL terminator included.
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::WORK_FAIL as u32);
        buf.put_u32(7);
        buf.put_slice(b"H:vm:2\0");
        let p = packet(&mut PacketCodec::default(), &mut buf);
        assert_eq!(p.arg_str(0), Some("H:vm:2"));
    }

    #[test]
    fn encoder_refuses_bad_packets() {
        let mut codec = PacketCodec::default();
        let e = codec
            .encode(
                Packet::req(PacketType::SUBMIT_JOB, ["a\0b", "u", "d"]),
                &mut BytesMut::new(),
            )
            .unwrap_err();
        assert!(matches!(e, CodecError::NulInArgument { index: 0, .. }));
        let e = codec
            .encode(
                Packet::req(PacketType::SUBMIT_JOB, ["only-one"]),
                &mut BytesMut::new(),
            )
            .unwrap_err();
        assert!(matches!(
            e,
            CodecError::Malformed {
                expected: 3,
                found: 1,
                ..
            }
        ));
        let big = Packet::req(PacketType::ECHO_REQ, [vec![b'x'; 17]]);
        assert!(matches!(
            PacketCodec::new(16).encode(big, &mut BytesMut::new()),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn debug_hides_job_data() {
        let p = Packet::req(
            PacketType::SUBMIT_JOB,
            ["build:x", "u", r#"{"token":"secret-jwt"}"#],
        );
        let d = format!("{p:?}");
        assert!(d.contains("build:x") && !d.contains("secret-jwt"), "{d}");
    }
}
