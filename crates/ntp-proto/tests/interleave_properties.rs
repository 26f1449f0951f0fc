//! Property tests for interleaved mode: whatever a server (or an attacker)
//! answers, the client never panics, takes only answers echoing one of its
//! nonces, and never accepts an interleaved measurement with a negative
//! delay or a server transmit time before the receive time it completes;
//! the server's table never hands one client's transmit time to another.

use std::net::{IpAddr, Ipv4Addr};

use ntp_proto::interleave::client::InterleaveError;
use ntp_proto::interleave::{ExchangeMode, Interleaved, TransmitTable};
use ntp_proto::packet::{Header, Mode, Version};
use ntp_proto::{NtpDuration, NtpTimestamp};
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = NtpTimestamp> {
    (1u64..).prop_map(NtpTimestamp::from_bits)
}

proptest! {
    #[test]
    fn the_client_takes_only_consistent_answers(
        exchanges in prop::collection::vec((timestamp(), timestamp(), timestamp(), 0u64..1 << 40, any::<bool>()), 1..12),
        nonces in prop::collection::vec((1u64.., 1u64..), 12),
    ) {
        let mut client = Interleaved::new();
        let start = NtpTimestamp::from_unix(1_800_000_000, 0);
        for (n, (origin, receive, transmit, elapsed, echo_interleaved)) in exchanges.into_iter().enumerate() {
            let (basic, other) = nonces[n];
            let sent = client.request(Version::V4, [NtpTimestamp::from_bits(basic), NtpTimestamp::from_bits(other)]);
            // The reply echoes one of the nonces, or something random.
            let echoed = match (n % 3, echo_interleaved) {
                (0, _) => origin,
                (_, true) => sent.interleaved.unwrap_or(origin),
                (_, false) => sent.basic,
            };
            let reply = Header { mode: Mode::Server, origin: echoed, receive, transmit, ..Header::default() };
            let t1 = start + NtpDuration::from_seconds(n as i64);
            let t4 = t1 + NtpDuration::from_bits(elapsed as i64);
            match client.complete(&sent, &reply, t1, t4) {
                Ok((ExchangeMode::Interleaved, t)) => {
                    prop_assert_eq!(Some(echoed), sent.interleaved);
                    prop_assert!(t.t3 - t.t2 >= NtpDuration::ZERO);
                    prop_assert!(t.delay() >= NtpDuration::ZERO);
                }
                Ok((ExchangeMode::Basic, t)) => {
                    prop_assert_eq!(echoed, sent.basic);
                    prop_assert_eq!((t.t1, t.t4, t.t3), (t1, t4, transmit));
                }
                Err(InterleaveError::NotAnAnswer) => {
                    prop_assert!(echoed != sent.basic && Some(echoed) != sent.interleaved);
                }
                Err(InterleaveError::Inconsistent) => prop_assert_eq!(Some(echoed), sent.interleaved),
            }
        }
    }

    #[test]
    fn the_table_answers_only_the_client_a_reply_went_to(
        entries in prop::collection::vec((timestamp(), 0u8..4, timestamp()), 1..200),
        asked in prop::collection::vec((timestamp(), 0u8..4), 0..50),
    ) {
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
        let mut table = TransmitTable::new(64);
        let mut sent = Vec::new();
        for (receive, client, transmit) in entries {
            let receive = table.unique_receive(receive);
            table.insert(receive, ip(client), transmit);
            sent.push((receive, client, transmit));
        }
        // What it answers is what was last recorded for that reply and client.
        for (receive, client) in asked.into_iter().chain(sent.iter().map(|&(r, c, _)| (r, c))) {
            if let Some(transmit) = table.transmit_of(receive, ip(client)) {
                let last = sent.iter().rev().find(|&&(r, _, _)| r == receive);
                prop_assert_eq!(last, Some(&(receive, client, transmit)));
            }
        }
        // The newest entry is always there.
        let &(receive, client, transmit) = sent.last().unwrap();
        prop_assert_eq!(table.transmit_of(receive, ip(client)), Some(transmit));
    }
}
