//! The trivial responder: the same batched I/O as ntpd-sim, but no policy,
//! no decoding beyond the length, one clock read per batch. What a server
//! could do at best on this machine with this generator.

use std::net::{SocketAddr, UdpSocket};

use ntp_proto::clock::Clock as _;
use ntp_proto::packet::write_transmit;
use ntp_udp::{RecvBatch, SendBatch, SystemClock};

const BATCH: usize = 64;

pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen)?;
    ntp_udp::prepare(&socket)?;
    // As much room as ntpd-sim's default, so the comparison is fair.
    let _ = ntp_udp::set_receive_buffer(&socket, ntp_udp::RECEIVE_BUFFER);
    let mut received = RecvBatch::new(BATCH);
    let mut replies = SendBatch::new(BATCH);
    loop {
        match received.recv(&socket, true) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        let now = SystemClock.now().to_bits().to_be_bytes();
        for datagram in received.iter() {
            let (Some(source), Some(request)) = (datagram.source, datagram.payload.first_chunk::<48>()) else {
                continue;
            };
            let mut reply = [0u8; 48];
            reply[0] = (request[0] & 0x38) | 4;
            reply[1] = 1;
            reply[2] = request[2];
            reply[12..16].copy_from_slice(b"LOCL");
            reply[24..32].copy_from_slice(&request[40..48]);
            reply[32..40].copy_from_slice(&now);
            let _ = replies.push(source, datagram.local, &reply);
        }
        let now = SystemClock.now();
        for payload in replies.to_stamp_mut() {
            write_transmit(payload, now);
        }
        if !replies.is_empty() {
            let _ = replies.send(&socket);
        }
    }
}
