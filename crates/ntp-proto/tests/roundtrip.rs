//! Property tests: decode never panics on any input, and encode∘decode is
//! the identity on every packet decode accepts.

use ntp_proto::packet::{ExtensionField, Header, LeapIndicator, Mode, Packet, ReferenceId, Stratum, Trailer, Version};
use ntp_proto::{NtpShort, NtpTimestamp};
use proptest::prelude::*;

fn header() -> impl Strategy<Value = Header> {
    (
        (0u8..4, prop::bool::ANY, 0u8..8, any::<u8>(), any::<i8>(), any::<i8>()),
        (any::<u32>(), any::<u32>(), any::<[u8; 4]>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(|((leap, v4, mode, stratum, poll, precision), (delay, disp, refid), (r, o, rx, tx))| Header {
            leap: LeapIndicator::from_bits(leap),
            version: if v4 { Version::V4 } else { Version::V3 },
            mode: Mode::from_bits(mode),
            stratum: Stratum(stratum),
            poll,
            precision,
            root_delay: NtpShort::from_bits(delay),
            root_dispersion: NtpShort::from_bits(disp),
            reference_id: ReferenceId(refid),
            reference: NtpTimestamp::from_bits(r),
            origin: NtpTimestamp::from_bits(o),
            receive: NtpTimestamp::from_bits(rx),
            transmit: NtpTimestamp::from_bits(tx),
        })
}

fn extension() -> impl Strategy<Value = ExtensionField> {
    (any::<u16>(), 3usize..40).prop_flat_map(|(field_type, words)| {
        prop::collection::vec(any::<u8>(), words * 4).prop_map(move |value| ExtensionField { field_type, value })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..=1024)) {
        let _ = Packet::decode(&bytes);
    }

    #[test]
    fn decode_then_encode_is_identity_on_valid_input(
        header in header(),
        extensions in prop::collection::vec(extension(), 0..4),
        // Nothing, a MAC's worth (key ID + MD5 or SHA-1), or any bytes.
        tail in prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(any::<u8>(), 20),
            prop::collection::vec(any::<u8>(), 24),
            prop::collection::vec(any::<u8>(), 0..64),
        ],
    ) {
        // Built from a real header and extension fields, so most inputs
        // decode and the identity is checked on them, not on a handful.
        let mut bytes = Packet { header, trailer: Trailer { extensions, mac: None } }.encode();
        let well_formed = tail.is_empty() && Packet::decode(&bytes).is_ok();
        bytes.extend_from_slice(&tail);
        match Packet::decode(&bytes) {
            Ok(packet) => prop_assert_eq!(packet.encode(), bytes),
            Err(error) => prop_assert!(!well_formed, "a well-formed packet was refused: {}", error),
        }
    }

    #[test]
    fn encode_then_decode_is_identity(header in header(), extensions in prop::collection::vec(extension(), 0..4)) {
        // The last field must be at least 28 bytes when no MAC follows (RFC 7822 §7.5).
        let last_ok = extensions.last().is_none_or(|f| f.wire_len() >= 28);
        prop_assume!(last_ok);
        let packet = Packet { header, trailer: Trailer { extensions, mac: None } };
        let bytes = packet.encode();
        prop_assert_eq!(Packet::decode(&bytes), Ok(packet));
    }
}
