//! Fuzz target: `Packet::decode` never panics, and whatever it accepts
//! encodes back to exactly the bytes it read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_proto::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        assert_eq!(packet.encode(), data);
    }
});
