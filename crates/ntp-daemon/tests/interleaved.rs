//! Interleaved mode on the serving loop, over real loopback sockets: the
//! origin/transmit bookkeeping (an interleaved answer echoes the receive
//! nonce and carries when the previous reply really left, per the
//! client's own clock), basic T3 never later than the reply leaves, and
//! requests that name another client's reply, a reply never sent or a
//! replayed one cannot hand a client someone else's time.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ntp_daemon::config::{FileConfig, Overrides, ServeConfig};
use ntp_daemon::daemon::primary_snapshot;
use ntp_daemon::{PolicyConfig, Server, SharedClock};
use ntp_proto::packet::{Header, Mode, Version};
use ntp_proto::{NtpDuration, NtpTimestamp};

fn start() -> Server {
    let config = ServeConfig::merge(FileConfig::default(), &Overrides::default()).unwrap();
    let clock = Arc::new(SharedClock::new(primary_snapshot(&config, -20)));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    Server::start(vec![socket], &PolicyConfig::default(), clock).unwrap()
}

fn client(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket
}

fn now() -> NtpTimestamp {
    NtpTimestamp::from_system_time(SystemTime::now())
}

/// Sends a request with these origin, receive and transmit fields; returns
/// the reply and the client's clock right before the send and right after
/// the reply came (the server serves the host clock: no offset).
fn ask(server: SocketAddr, client: &UdpSocket, fields: [u64; 3]) -> (Header, NtpTimestamp, NtpTimestamp) {
    let [origin, receive, transmit] = fields.map(NtpTimestamp::from_bits);
    let request = Header { version: Version::V4, mode: Mode::Client, origin, receive, transmit, ..Header::default() };
    let before = now();
    client.send_to(&request.encode(), server).unwrap();
    let mut buf = [0u8; 128];
    let (len, _) = client.recv_from(&mut buf).expect("a reply");
    let after = now();
    assert_eq!(len, 48, "never longer than the request");
    (Header::decode(&buf[..len]).unwrap(), before, after)
}

#[test]
fn an_interleaved_request_gets_when_the_previous_reply_really_left() {
    let server = start();
    let address = server.local_addrs()[0];
    let a = client("127.0.0.1");
    // A basic request's reply asks the kernel for nothing, so it is not
    // remembered: the first interleaved request naming it gets a basic
    // answer, and that answer is the one remembered.
    let (plain, _, _) = ask(address, &a, [0, 0, 0x0101]);
    let (first, _, first_back) = ask(address, &a, [plain.receive.to_bits(), 0x0202, 0x1111]);
    assert_eq!(first.origin.to_bits(), 0x1111, "basic: echoes the transmit field");
    // A basic T3 is read before the send, moved on by the least latency
    // seen: never after the reply is back.
    assert!(first_back - first.transmit >= NtpDuration::ZERO);

    for n in 0..20u64 {
        let (reply, _, _) = ask(address, &a, [first.receive.to_bits(), 0x2222 + n, 0x3333 + n]);
        if reply.origin.to_bits() == 0x2222 + n {
            // Interleaved: T3 is the first reply's kernel transmit time,
            // after its T2 and its basic T3, before it was back here.
            assert!(reply.transmit - first.receive > NtpDuration::ZERO, "{reply:?}");
            assert!(reply.transmit - first.transmit >= NtpDuration::ZERO, "basic T3 not later than the real one");
            assert!(first_back - reply.transmit >= NtpDuration::ZERO, "left before it arrived");
            // Asking again (a replay, or a retry after a lost answer)
            // gives the same time: it is the same reply's.
            let (again, _, _) = ask(address, &a, [first.receive.to_bits(), 0x4444, 0x5555]);
            assert_eq!((again.origin.to_bits(), again.transmit), (0x4444, reply.transmit));
            // Counted once the batch is done, just after its send.
            for _ in 0..100 {
                if server.stats().read().answered_interleaved >= 2 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("interleaved answers not counted: {:?}", server.stats().read());
        }
        // The timestamp was not back yet (a loaded machine): basic.
        assert_eq!(reply.origin.to_bits(), 0x3333 + n);
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("never answered in interleaved mode");
}

#[test]
fn another_client_or_a_reply_never_sent_gets_a_basic_answer() {
    let server = start();
    let address = server.local_addrs()[0];
    let a = client("127.0.0.1");
    // Asking for interleaved mode, naming no reply sent: a basic answer,
    // remembered for A's next request.
    let (first, _, _) = ask(address, &a, [0x0101, 0x0202, 0x1111]);
    assert_eq!(first.origin.to_bits(), 0x1111, "{first:?}");
    std::thread::sleep(Duration::from_millis(50));
    // Another address naming A's T2: basic, so A's transmit time is not
    // given away (chrony keys by T2 alone).
    let b = client("127.0.0.2");
    let (stolen, _, _) = ask(address, &b, [first.receive.to_bits(), 0x2222, 0x3333]);
    assert_eq!(stolen.origin.to_bits(), 0x3333, "{stolen:?}");
    // A T2 this server never sent, and the T2 off by one.
    for origin in [0x0123_4567_89ab_cdef, first.receive.to_bits() + 1] {
        let (reply, _, _) = ask(address, &a, [origin, 0x2222, 0x3333]);
        assert_eq!(reply.origin.to_bits(), 0x3333, "{reply:?}");
    }
    // Receive equal to transmit is a basic request (as chrony reads it).
    let (reply, _, _) = ask(address, &a, [first.receive.to_bits(), 0x3333, 0x3333]);
    assert_eq!(reply.origin.to_bits(), 0x3333);
    // And A itself still gets its interleaved answer.
    let (own, _, _) = ask(address, &a, [first.receive.to_bits(), 0x2222, 0x3333]);
    assert_eq!(own.origin.to_bits(), 0x2222, "{own:?}");
}

#[test]
fn every_reply_has_its_own_receive_time() {
    let server = start();
    let address = server.local_addrs()[0];
    let a = client("127.0.0.1");
    // A burst: the serving thread answers several in one batch.
    for n in 0..32u64 {
        let request = Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(n + 1), ..Header::default() };
        a.send_to(&request.encode(), address).unwrap();
    }
    let mut receives = Vec::new();
    let mut buf = [0u8; 128];
    while receives.len() < 32 {
        let (len, _) = a.recv_from(&mut buf).expect("every request answered");
        receives.push(Header::decode(&buf[..len]).unwrap().receive.to_bits());
    }
    receives.sort();
    receives.dedup();
    assert_eq!(receives.len(), 32, "a T2 names one reply only");
}
