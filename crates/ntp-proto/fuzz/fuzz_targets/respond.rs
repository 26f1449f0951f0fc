//! Fuzz target: the server's decision for any datagram never panics, and a
//! reply is never larger than the request that caused it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::packet::{LeapIndicator, ReferenceId, Stratum};
use ntp_proto::responder::{respond, Admission, Response, ServerState};
use ntp_proto::{NtpShort, NtpTimestamp};

fuzz_target!(|data: &[u8]| {
    let state = ServerState {
        leap: LeapIndicator::NoWarning,
        stratum: Stratum(2),
        precision: -20,
        root_delay: NtpShort::from_bits(0x10),
        root_dispersion: NtpShort::from_bits(0x20),
        reference_id: ReferenceId([127, 0, 0, 1]),
        reference_time: NtpTimestamp::from_bits(0xeeab_9f0e_0000_0000),
    };
    for admission in [Admission::Serve, Admission::Kiss(ntp_proto::packet::KissCode::Rate), Admission::Drop] {
        if let Response::Reply { bytes, .. } = respond(data, NtpTimestamp::from_bits(0xeeab_9f0f_0000_0000), &state, admission) {
            assert!(bytes.len() <= data.len());
        }
    }
});
