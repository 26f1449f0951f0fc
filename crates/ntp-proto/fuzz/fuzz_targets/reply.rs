//! Fuzz target: the client's handling of replies never panics. Each 56-byte
//! record of the input is one datagram's worth: 48 bytes of reply, then
//! which upstream it came from, whether it echoes our nonce, and how long
//! it took, fed through decode, `validate_reply`, `Sample::new` and a
//! three-upstream `Synchronizer` steering a disciplined clock, as the
//! daemon does. Whatever arrives, the clock's time stays finite and the
//! advertised state decodable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::association::PollConfig;
use ntp_proto::clock::DisciplinedClock;
use ntp_proto::discipline::DisciplineConfig;
use ntp_proto::packet::ReferenceId;
use ntp_proto::responder::{respond, Admission, Response};
use ntp_proto::synchronizer::Synchronizer;
use ntp_proto::system::SystemConfig;
use ntp_proto::{validate_reply, Header, NtpDuration, NtpTimestamp, Sample, Timestamps};

const RECORD: usize = 56;

/// A version 4 client request with a non-zero transmit timestamp.
const REQUEST: [u8; 48] = {
    let mut request = [0u8; 48];
    request[0] = 0x23;
    request[47] = 1;
    request
};

fuzz_target!(|data: &[u8]| {
    let start = NtpTimestamp::from_unix(1_800_000_000, 0);
    let config = SystemConfig {
        discipline: DisciplineConfig { min_poll: 0, max_poll: 2, ..DisciplineConfig::default() },
        ..SystemConfig::default()
    };
    let poll = PollConfig { min_poll: 0, max_poll: 2, iburst: true };
    let ids = [ReferenceId([127, 0, 0, 1]), ReferenceId([127, 0, 0, 2]), ReferenceId([127, 0, 0, 3])];
    let mut clock = DisciplinedClock::new(start, NtpDuration::from_seconds(3), 20.0);
    let mut sync = Synchronizer::new(config, poll, &ids, clock.raw_at(start));
    let mut system = start;
    for record in data.chunks(RECORD) {
        let (bytes, extra) = record.split_at(record.len().min(48));
        let Ok(mut reply) = Header::decode(bytes) else { continue };
        let [index, echo, delay_ms, advance_s, ..] = *extra else { continue };
        let index = usize::from(index % 3);
        let t1 = clock.raw_at(system);
        sync.poll_sent(index, t1);
        // Mostly a reply to our own request, sometimes a forged or stale one.
        let nonce = NtpTimestamp::from_bits(t1.to_bits() | 1);
        if echo % 4 != 0 {
            reply.origin = nonce;
        }
        system = system + NtpDuration::from_nanos(i64::from(delay_ms) * 1_000_000);
        let t4 = clock.raw_at(system);
        let timestamps = Timestamps { t1, t2: reply.receive, t3: reply.transmit, t4 };
        match validate_reply(&reply, nonce) {
            Ok(()) => {
                let sample = Sample::new(&timestamps, reply.precision, -20);
                assert!(sample.delay.to_seconds_f64().is_finite() && sample.dispersion >= NtpDuration::ZERO);
                let _ = sync.on_reply(index, &mut clock, t4, &reply, nonce, &timestamps);
            }
            Err(error) => sync.on_reply_error(index, &reply, error),
        }
        // What we would advertise now still makes a reply a client decodes.
        let state = sync.server_state(t4);
        if let Response::Reply { bytes, .. } = respond(&REQUEST, clock.time_at(system), &state, Admission::Serve) {
            assert!(Header::decode(&bytes).is_ok());
        }
        system = system + NtpDuration::from_seconds(i64::from(advance_s % 32));
        assert!((clock.time_at(system) - system).to_seconds_f64().is_finite());
    }
});
