//! Unit tests of the codec with hand-built byte vectors.

use super::*;
use crate::time::{NtpShort, NtpTimestamp};

fn client_request() -> [u8; 48] {
    let mut bytes = [0u8; 48];
    bytes[0] = 0x23; // leap 0, version 4, mode 3
    bytes[40..48].copy_from_slice(&0xeeab_9f0e_6da1_2000u64.to_be_bytes());
    bytes
}

#[test]
fn decodes_every_header_field() {
    let mut bytes = [0u8; 48];
    bytes[0] = 0b11_100_100; // leap 3, version 4, mode 4
    bytes[1] = 2;
    bytes[2] = 6;
    bytes[3] = 0xe6; // -26
    bytes[4..8].copy_from_slice(&0x0001_8000u32.to_be_bytes());
    bytes[8..12].copy_from_slice(&0x0000_0010u32.to_be_bytes());
    bytes[12..16].copy_from_slice(&[192, 0, 2, 1]);
    for (i, chunk) in bytes[16..48].chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(0x1111_1111_1111_1111u64 * (i as u64 + 1)).to_be_bytes());
    }
    let header = Header::decode(&bytes).unwrap();
    assert_eq!(header.leap, LeapIndicator::Unsynchronized);
    assert_eq!(header.version, Version::V4);
    assert_eq!(header.mode, Mode::Server);
    assert_eq!(header.stratum, Stratum(2));
    assert_eq!(header.poll, 6);
    assert_eq!(header.precision, -26);
    assert_eq!(header.root_delay, NtpShort::from_bits(0x0001_8000));
    assert_eq!(header.root_delay.to_seconds_f64(), 1.5);
    assert_eq!(header.root_dispersion.to_bits(), 0x10);
    assert_eq!(header.reference_id.display(header.stratum), "192.0.2.1");
    assert_eq!(header.reference, NtpTimestamp::from_bits(0x1111_1111_1111_1111));
    assert_eq!(header.origin, NtpTimestamp::from_bits(0x2222_2222_2222_2222));
    assert_eq!(header.receive, NtpTimestamp::from_bits(0x3333_3333_3333_3333));
    assert_eq!(header.transmit, NtpTimestamp::from_bits(0x4444_4444_4444_4444));
    assert_eq!(header.encode(), bytes);
}

#[test]
fn too_short_and_wrong_versions_are_typed_errors() {
    assert_eq!(Packet::decode(&[]), Err(DecodeError::TooShort { len: 0 }));
    assert_eq!(Packet::decode(&[0x23; 47]), Err(DecodeError::TooShort { len: 47 }));
    for version in [0u8, 1, 2, 5, 6, 7] {
        let mut bytes = client_request();
        bytes[0] = (version << 3) | 3;
        assert_eq!(Packet::decode(&bytes), Err(DecodeError::UnsupportedVersion(version)));
    }
    let mut v3 = client_request();
    v3[0] = 0x1b;
    assert_eq!(Packet::decode(&v3).unwrap().header.version, Version::V3);
}

#[test]
fn extension_fields_are_walked_and_kept() {
    let mut bytes = client_request().to_vec();
    // A unique-identifier field (0x0104) of 36 bytes, then an unknown one of 28.
    bytes.extend_from_slice(&[0x01, 0x04, 0x00, 0x24]);
    bytes.extend_from_slice(&[0xab; 32]);
    bytes.extend_from_slice(&[0x7f, 0x00, 0x00, 0x1c]);
    bytes.extend_from_slice(&[0x01; 24]);
    let packet = Packet::decode(&bytes).unwrap();
    assert_eq!(packet.trailer.extensions.len(), 2);
    assert_eq!(packet.trailer.extensions[0].field_type, 0x0104);
    assert_eq!(packet.trailer.extensions[0].value, vec![0xab; 32]);
    assert_eq!(packet.trailer.extensions[1].field_type, 0x7f00);
    assert_eq!(packet.trailer.mac, None);
    assert_eq!(packet.encode(), bytes);
}

#[test]
fn a_trailing_mac_is_recognised() {
    for digest_len in [16usize, 20] {
        let mut bytes = client_request().to_vec();
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0x5a, digest_len));
        let packet = Packet::decode(&bytes).unwrap();
        let mac = packet.trailer.mac.clone().unwrap();
        assert_eq!((mac.key_id, mac.digest.len()), (7, digest_len));
        assert_eq!(packet.encode(), bytes);
    }
}

#[test]
fn extension_then_mac() {
    let mut bytes = client_request().to_vec();
    bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x10]);
    bytes.extend_from_slice(&[0; 12]);
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&[0xee; 16]);
    let packet = Packet::decode(&bytes).unwrap();
    assert_eq!(packet.trailer.extensions.len(), 1);
    assert!(packet.trailer.mac.is_some());
    assert_eq!(packet.encode(), bytes);
}

#[test]
fn malformed_extension_fields_are_named() {
    let cases: [(&[u8], &str); 4] = [
        (&[0x01, 0x04], "fewer than 4 bytes left for a field header"),
        (&[0x01, 0x04, 0x00, 0x02, 0, 0, 0, 0], "length shorter than the field header"),
        (&[0x01, 0x04, 0x00, 0x06, 0, 0, 0, 0], "length not a multiple of 4"),
        (&[0x01, 0x04, 0x00, 0x40, 0, 0, 0, 0], "length runs past the end of the packet"),
    ];
    for (trailer, reason) in cases {
        let mut bytes = client_request().to_vec();
        bytes.extend_from_slice(trailer);
        assert_eq!(
            Packet::decode(&bytes),
            Err(DecodeError::MalformedExtension { offset: 48, reason }),
            "trailer {trailer:?}"
        );
    }
    let err = DecodeError::MalformedExtension { offset: 48, reason: "length not a multiple of 4" };
    assert_eq!(err.to_string(), "malformed extension field at byte 48: length not a multiple of 4");
}

#[test]
fn transmit_can_be_stamped_after_encoding() {
    let mut bytes = Header::default().encode();
    let t3 = NtpTimestamp::from_bits(0x0123_4567_89ab_cdef);
    write_transmit(&mut bytes, t3);
    assert_eq!(Header::decode(&bytes).unwrap().transmit, t3);
}
