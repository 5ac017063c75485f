//! The packet codec: a `tokio_util::codec` [`Decoder`]/[`Encoder`] for [`Packet`]s.
//!
//! The decoder never panics on any input (property-tested with arbitrary bytes): bad
//! magic, unknown types, frames above the configured maximum and bodies with too few
//! arguments are typed [`CodecError`]s, after which the connection is unusable (the
//! stream is out of sync) and is dropped by its owner.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::packet::{Magic, Packet, PacketType};

/// Header size: magic (4), type (4), body size (4).
pub const HEADER_LEN: usize = 12;

/// The default largest body accepted or sent (16 MiB).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;

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
    /// The type number is not one the protocol defines.
    #[error("unknown packet type {0}")]
    UnknownType(u32),
    /// The body is larger than the configured maximum.
    #[error("{kind} packet of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The packet type (when known).
        kind: String,
        /// The body size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The body does not hold the packet type's arguments.
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

/// Encodes and decodes Gearman packets, refusing bodies above `max_packet_size`.
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
/// use executor_gearman::codec::PacketCodec;
/// use executor_gearman::packet::{Packet, PacketType};
///
/// let mut codec = PacketCodec::default();
/// let mut buf = BytesMut::new();
/// codec.encode(Packet::req(PacketType::CAN_DO, ["build:unit"]), &mut buf).unwrap();
/// assert_eq!(&buf[..12], b"\0REQ\0\0\0\x01\0\0\0\x0a");
/// let p = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(p.arg_str(0), Some("build:unit"));
///
/// let mut bad = BytesMut::from(&b"\0XYZ\0\0\0\x01\0\0\0\0"[..]);
/// assert!(codec.decode(&mut bad).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PacketCodec {
    max_packet_size: usize,
}

impl Default for PacketCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

impl PacketCodec {
    /// A codec accepting bodies up to `max_packet_size` bytes.
    pub fn new(max_packet_size: usize) -> Self {
        Self { max_packet_size }
    }

    /// The largest body accepted.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
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
        let kind = PacketType::from_u32(type_num).ok_or(CodecError::UnknownType(type_num))?;
        let size = u32::from_be_bytes([src[8], src[9], src[10], src[11]]) as usize;
        if size > self.max_packet_size {
            return Err(CodecError::TooLarge {
                kind: kind.name().to_string(),
                size,
                max: self.max_packet_size,
            });
        }
        if src.len() < HEADER_LEN + size {
            src.reserve(HEADER_LEN + size - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(size).freeze();
        let args = split_args(kind, body)?;
        Ok(Some(Packet { magic, kind, args }))
    }
}

/// Splits a body into the type's arguments: the first `n - 1` at NULs, the rest is the
/// last argument (trailing NULs trimmed when it is a string rather than data).
fn split_args(kind: PacketType, mut body: Bytes) -> Result<Vec<Bytes>, CodecError> {
    let n = kind.arg_count();
    if n == 0 {
        return if body.is_empty() {
            Ok(Vec::new())
        } else {
            Err(CodecError::Malformed {
                kind,
                expected: 0,
                found: 1,
            })
        };
    }
    let mut args = Vec::with_capacity(n);
    for found in 0..n - 1 {
        match body.iter().position(|&b| b == 0) {
            Some(i) => {
                args.push(body.split_to(i));
                body.advance(1);
            }
            None => {
                return Err(CodecError::Malformed {
                    kind,
                    expected: n,
                    found: found + 1,
                });
            }
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

    fn roundtrip(p: Packet) -> Packet {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(p, &mut buf).unwrap();
        let out = codec.decode(&mut buf).unwrap().unwrap();
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
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().kind,
            PacketType::NOOP
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().kind,
            PacketType::NO_JOB
        );
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
    fn unknown_types_are_rejected() {
        for t in [0u32, 5, 43, u32::MAX] {
            let mut buf = BytesMut::from(&b"\0RES"[..]);
            buf.put_u32(t);
            buf.put_u32(0);
            let e = PacketCodec::default().decode(&mut buf).unwrap_err();
            assert!(
                matches!(e, CodecError::UnknownType(n) if n == t),
                "{t}: {e}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_rejected_before_buffering() {
        let mut codec = PacketCodec::new(16);
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::WORK_DATA as u32);
        buf.put_u32(17);
        let e = codec.decode(&mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WORK_DATA packet of 17 bytes exceeds the maximum of 16 bytes"
        );
        let big = Packet::req(PacketType::ECHO_REQ, [vec![b'x'; 17]]);
        assert!(matches!(
            codec.encode(big, &mut BytesMut::new()),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn too_few_arguments_are_malformed() {
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::JOB_ASSIGN_UNIQ as u32);
        buf.put_u32(3);
        buf.put_slice(b"h\0f");
        let e = PacketCodec::default().decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                e,
                CodecError::Malformed {
                    expected: 4,
                    found: 2,
                    ..
                }
            ),
            "{e}"
        );
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::NOOP as u32);
        buf.put_u32(1);
        buf.put_u8(b'x');
        assert!(PacketCodec::default().decode(&mut buf).is_err());
    }

    #[test]
    fn trailing_nul_of_string_arguments_is_trimmed() {
        // gearmand 1.1 sends WORK_FAIL with the handle's NUL terminator included.
        let mut buf = BytesMut::from(&b"\0RES"[..]);
        buf.put_u32(PacketType::WORK_FAIL as u32);
        buf.put_u32(7);
        buf.put_slice(b"H:vm:2\0");
        let p = PacketCodec::default().decode(&mut buf).unwrap().unwrap();
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
