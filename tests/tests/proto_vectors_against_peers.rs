//! The codec against live peers: chronyd's replies on loopback decode,
//! validate and re-encode byte for byte.

use std::net::UdpSocket;
use std::time::Duration;

use ntp_e2e::free_udp_port;
use ntp_e2e::peers::ChronyServer;
use ntp_proto::packet::{Header, Mode, Packet, Stratum, Version};
use ntp_proto::NtpTimestamp;

fn ask(port: u16, version: Version, nonce: u64) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let request = Header { version, mode: Mode::Client, transmit: NtpTimestamp::from_bits(nonce), ..Header::default() };
    socket.send_to(&request.encode(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 1024];
    let (len, _) = socket.recv_from(&mut buf).expect("chronyd answered");
    buf[..len].to_vec()
}

#[test]
fn live_chrony_replies_decode_validate_and_reencode() {
    let port = free_udp_port();
    let _chrony = ChronyServer::start(port, Some(1));
    for (version, nonce) in [(Version::V3, 0x1122_3344_5566_7788u64), (Version::V4, 0x8877_6655_4433_2211)] {
        let bytes = ask(port, version, nonce);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.encode(), bytes);
        let reply = packet.header;
        assert_eq!(reply.version, version, "chrony answers in the request's version");
        assert_eq!(reply.stratum, Stratum(1));
        assert_eq!(ntp_proto::validate_reply(&reply, NtpTimestamp::from_bits(nonce)), Ok(()));
    }
}
