//! Property tests of the packet decoder: arbitrary bytes never panic, every packet the
//! encoder writes decodes back, how the input is split into reads does not matter, and a
//! packet too large to accept is skipped without losing the stream.

use bytes::{Bytes, BytesMut};
use executor_gearman::codec::{CodecError, Frame, PacketCodec, SkipReason};
use executor_gearman::packet::{Magic, Packet, PacketType};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

/// Decodes everything in `buf`; stops at the first error (the stream is then unusable).
fn decode_all(codec: &mut PacketCodec, buf: &mut BytesMut) -> Result<Vec<Frame>, CodecError> {
    let mut out = Vec::new();
    while let Some(f) = codec.decode(buf)? {
        out.push(f);
    }
    Ok(out)
}

fn frames(packets: &[Packet]) -> Vec<Frame> {
    packets.iter().cloned().map(Frame::Packet).collect()
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let kind = proptest::sample::select(PacketType::ALL.to_vec());
    (
        kind,
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 8),
    )
        .prop_map(|(kind, req, raw)| {
            let n = kind.arg_count();
            let args: Vec<Bytes> = raw
                .into_iter()
                .take(n)
                .enumerate()
                .map(|(i, mut a)| {
                    let last = i + 1 == n;
                    if !last {
                        a.retain(|b| *b != 0); // separators cannot appear inside
                    } else if !kind.data_last() {
                        // String arguments lose trailing NULs on decode.
                        while a.last() == Some(&0) {
                            a.pop();
                        }
                    }
                    Bytes::from(a)
                })
                .collect();
            Packet::new(if req { Magic::Req } else { Magic::Res }, kind, args)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
        let mut codec = PacketCodec::new(max);
        let mut buf = BytesMut::from(&data[..]);
        let _ = decode_all(&mut codec, &mut buf);
    }

    #[test]
    fn valid_headers_with_arbitrary_bodies_never_panic(
        type_num in 0u32..50, body in proptest::collection::vec(any::<u8>(), 0..200), res in any::<bool>()
    ) {
        let mut buf = BytesMut::from(if res { &b"\0RES"[..] } else { &b"\0REQ"[..] });
        buf.extend_from_slice(&type_num.to_be_bytes());
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        match PacketCodec::default().decode(&mut buf) {
            Ok(Some(Frame::Packet(p))) => prop_assert_eq!(p.args.len(), p.kind.arg_count()),
            Ok(Some(Frame::Skipped(s))) => match s.reason {
                SkipReason::UnknownType(n) => prop_assert!(PacketType::from_u32(n).is_none()),
                SkipReason::Malformed { found, expected } => prop_assert!(found < expected || expected == 0),
                SkipReason::TooLarge { .. } => prop_assert!(false, "within the default maximum"),
            },
            Ok(None) => prop_assert!(false, "a complete frame must decode or be skipped"),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
        prop_assert!(buf.is_empty(), "the whole frame is consumed");
    }

    #[test]
    fn encoded_packets_decode_back(packets in proptest::collection::vec(arb_packet(), 1..8)) {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::new();
        for p in &packets {
            codec.encode(p.clone(), &mut buf).unwrap();
        }
        let back = decode_all(&mut codec, &mut buf).unwrap();
        prop_assert_eq!(back, frames(&packets));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn read_boundaries_do_not_matter(packets in proptest::collection::vec(arb_packet(), 1..6), cuts in proptest::collection::vec(1usize..30, 0..40)) {
        let mut codec = PacketCodec::default();
        let mut wire = BytesMut::new();
        for p in &packets {
            codec.encode(p.clone(), &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for c in cuts.iter().copied().chain(std::iter::repeat(7)) {
            if at >= wire.len() {
                break;
            }
            let end = (at + c).min(wire.len());
            buf.extend_from_slice(&wire[at..end]);
            at = end;
            got.extend(decode_all(&mut codec, &mut buf).unwrap());
        }
        prop_assert_eq!(got, frames(&packets));
    }

    #[test]
    fn an_oversized_packet_is_skipped_whatever_the_reads(
        size in 65usize..3000, cuts in proptest::collection::vec(1usize..400, 0..40), after in arb_packet()
    ) {
        prop_assume!(after.body_len() <= 64);
        let mut wire = BytesMut::from(&b"\0RES"[..]);
        wire.extend_from_slice(&(PacketType::WORK_DATA as u32).to_be_bytes());
        wire.extend_from_slice(&(size as u32).to_be_bytes());
        wire.extend_from_slice(b"H:1\0");
        wire.extend_from_slice(&vec![b'x'; size - 4]);
        PacketCodec::default().encode(after.clone(), &mut wire).unwrap();
        let mut codec = PacketCodec::new(64);
        let wire = wire.freeze();
        let (mut buf, mut got, mut at) = (BytesMut::new(), Vec::new(), 0);
        for c in cuts.iter().copied().chain(std::iter::repeat(97)) {
            if at >= wire.len() {
                break;
            }
            let end = (at + c).min(wire.len());
            buf.extend_from_slice(&wire[at..end]);
            at = end;
            got.extend(decode_all(&mut codec, &mut buf).unwrap());
        }
        prop_assert_eq!(got.len(), 2);
        prop_assert!(matches!(&got[0], Frame::Skipped(s) if s.arg_lossy(0) == "H:1" && s.size == size));
        prop_assert_eq!(&got[1], &Frame::Packet(after));
    }

    #[test]
    fn garbage_after_a_packet_is_an_error_not_a_panic(p in arb_packet(), junk in proptest::collection::vec(1u8..=255, 1..20)) {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(p.clone(), &mut buf).unwrap();
        buf.extend_from_slice(&junk);
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Packet(p)));
        prop_assert!(matches!(codec.decode(&mut buf), Err(CodecError::BadMagic(_))));
    }
}
