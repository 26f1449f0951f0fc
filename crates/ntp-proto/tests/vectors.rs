//! Known-answer tests: real packets captured from chrony 4.3 and ntplib 0.3.3
//! (a copy of `shared/vectors/`) decode to the fields Wireshark read from
//! them, and encode back to the same bytes.

use chrono::{DateTime, NaiveDateTime, Utc};
use ntp_proto::packet::{LeapIndicator, Mode, Packet, Version};
use ntp_proto::NtpTimestamp;
use serde_json::Value;

const VECTORS: &str = include_str!("data/chrony-4.3-loopback.jsonl");

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// Wireshark's rendering, e.g. "Nov 21, 2026 04:39:42.428239822 UTC".
fn wireshark_time(text: &str) -> Option<DateTime<Utc>> {
    if text == "NULL" {
        return None;
    }
    let squeezed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let naive = NaiveDateTime::parse_from_str(&squeezed, "%b %d, %Y %H:%M:%S%.9f UTC").unwrap();
    Some(naive.and_utc())
}

fn assert_timestamp(field: &str, got: NtpTimestamp, want: &Value) {
    match wireshark_time(want.as_str().unwrap()) {
        None => assert!(got.is_zero(), "{field}: expected NULL, got {got:?}"),
        Some(want) => {
            let diff = (got.to_datetime() - want).num_nanoseconds().unwrap();
            // Wireshark truncates to whole nanoseconds; we round.
            assert!(diff.abs() <= 1, "{field}: {} vs {want}", got.to_datetime());
        }
    }
}

#[test]
fn captured_packets_decode_to_wiresharks_fields_and_reencode_exactly() {
    let mut count = 0;
    for line in VECTORS.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let bytes = hex(v["hex"].as_str().unwrap());
        let packet = Packet::decode(&bytes).unwrap_or_else(|e| panic!("frame {}: {e}", v["frame"]));
        let h = packet.header;
        let frame = &v["frame"];
        assert_eq!(u64::from(h.leap.to_bits()), v["leap"].as_u64().unwrap(), "frame {frame}");
        assert_eq!(u64::from(h.version.to_bits()), v["version"].as_u64().unwrap(), "frame {frame}");
        assert_eq!(u64::from(h.mode.to_bits()), v["mode"].as_u64().unwrap(), "frame {frame}");
        assert_eq!(u64::from(h.stratum.0), v["stratum"].as_u64().unwrap(), "frame {frame}");
        assert_eq!(i64::from(h.poll), v["poll"].as_i64().unwrap(), "frame {frame}");
        // Wireshark shows chrony's client precision byte 0x20 as 32.
        assert_eq!(i64::from(h.precision), v["precision"].as_i64().unwrap(), "frame {frame}");
        assert_eq!(h.root_delay.to_seconds_f64(), v["root_delay_s"].as_f64().unwrap(), "frame {frame}");
        assert_eq!(h.root_dispersion.to_seconds_f64(), v["root_dispersion_s"].as_f64().unwrap(), "frame {frame}");
        assert_eq!(h.reference_id.0.to_vec(), hex(v["refid_hex"].as_str().unwrap()), "frame {frame}");
        assert_timestamp("reference", h.reference, &v["reference"]);
        assert_timestamp("origin", h.origin, &v["origin"]);
        assert_timestamp("receive", h.receive, &v["receive"]);
        assert_timestamp("transmit", h.transmit, &v["transmit"]);
        assert!(packet.trailer.extensions.is_empty() && packet.trailer.mac.is_none());
        assert_eq!(packet.encode(), bytes, "frame {frame} re-encodes");
        count += 1;
    }
    assert_eq!(count, 9, "every captured frame was checked");
}

#[test]
fn chrony_replies_echo_the_request_transmit_as_origin() {
    let packets: Vec<Packet> = VECTORS
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| Packet::decode(&hex(v["hex"].as_str().unwrap())).unwrap())
        .collect();
    for pair in packets[..8].chunks(2) {
        let (request, reply) = (&pair[0].header, &pair[1].header);
        assert_eq!(request.mode, Mode::Client);
        assert_eq!(reply.mode, Mode::Server);
        assert_eq!(reply.version, request.version, "answered in the request's version");
        assert_eq!(reply.origin, request.transmit);
        assert!(ntp_proto::validate_reply(reply, request.transmit).is_ok());
    }
    assert_eq!(packets[0].header.version, Version::V3);
    let unsync = &packets[8].header;
    assert_eq!(unsync.leap, LeapIndicator::Unsynchronized);
    assert!(ntp_proto::validate_reply(unsync, unsync.origin).is_err());
}
