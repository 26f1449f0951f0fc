//! Fuzz target: the server's decision for any datagram never panics, and a
//! reply is never larger than the request that caused it, in basic or
//! interleaved mode (an interleaved answer echoes the request's receive
//! field and carries the remembered transmit time).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::packet::{LeapIndicator, ReferenceId, Stratum};
use ntp_proto::responder::{respond, respond_interleaved, Admission, ReplyKind, Response, ServerState};
use ntp_proto::Header;
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
        let remembered = NtpTimestamp::from_bits(0xeeab_9f0e_8000_0000);
        let receive = NtpTimestamp::from_bits(0xeeab_9f0f_0000_0000);
        let response = respond_interleaved(data, receive, &state, admission, |_| Some(remembered));
        if let Response::Reply { bytes, kind } = response {
            assert!(bytes.len() <= data.len());
            if kind == ReplyKind::Interleaved {
                let (request, reply) = (Header::decode(data).unwrap(), Header::decode(&bytes).unwrap());
                assert_eq!((reply.origin, reply.transmit), (request.receive, remembered));
                assert!(!request.origin.is_zero() && request.receive != request.transmit);
            }
        }
    }
});
