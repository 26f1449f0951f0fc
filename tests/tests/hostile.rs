//! Hostile traffic at a live `ntpd-sim serve` process: tens of thousands of
//! mutated, truncated, oversized, wrong-mode, wrong-version and
//! extension-field-laden datagrams with valid requests interleaved. Each is
//! judged by a model of a valid request written here from RFC 5905 and
//! RFC 7822 (not by the project's decoder): the server answers exactly the
//! valid ones, correctly and never with more bytes than were asked, and
//! stays up.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ntp_e2e::{log_field, ntpd_sim_serve, wait_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const OFFSET: f64 = 300.0;
/// Datagrams sent in all; each round ends with a valid marker request.
const ROUNDS: usize = 100;
const PER_ROUND: usize = 240;
/// The server reads at most this many bytes of a datagram.
const MAX_DATAGRAM: usize = 1024;

/// Is `d` a request a server must answer? RFC 5905 §7.3: version 3 or 4,
/// mode 3 (client), a non-zero transmit timestamp; RFC 7822: after the
/// header, extension fields whose length covers their 4-byte head, is a
/// multiple of 4 and fits, then optionally a 20- or 24-byte MAC.
fn is_valid_request(d: &[u8]) -> bool {
    if d.len() < 48 || d.len() > MAX_DATAGRAM {
        return false;
    }
    let (version, mode) = ((d[0] >> 3) & 7, d[0] & 7);
    if !(3..=4).contains(&version) || mode != 3 || d[40..48].iter().all(|&b| b == 0) {
        return false;
    }
    let mut rest = &d[48..];
    while !rest.is_empty() {
        if rest.len() == 20 || rest.len() == 24 {
            return true;
        }
        if rest.len() < 4 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len < 4 || len % 4 != 0 || len > rest.len() {
            return false;
        }
        rest = &rest[len..];
    }
    true
}

fn valid_request(rng: &mut StdRng) -> Vec<u8> {
    let mut d: Vec<u8> = (0..48).map(|_| rng.gen()).collect();
    d[0] = (rng.gen_range(0..4) << 6) | (rng.gen_range(3..=4) << 3) | 3;
    d
}

fn extension_field(rng: &mut StdRng) -> Vec<u8> {
    let len = 4 * rng.gen_range(4..=40);
    let mut field: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    field[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    field
}

/// One hostile (or not) datagram of a random kind.
fn datagram(rng: &mut StdRng) -> Vec<u8> {
    let mut d = valid_request(rng);
    match rng.gen_range(0..10) {
        0 => d.truncate(rng.gen_range(0..48)),
        1 => d.resize(rng.gen_range(MAX_DATAGRAM + 1..=1472), 0xab),
        2 => d[0] = (d[0] & !7) | [0, 1, 2, 4, 5, 6, 7][rng.gen_range(0..7)],
        3 => d[0] = (d[0] & !0x38) | ([0, 1, 2, 5, 6, 7][rng.gen_range(0..6)] << 3),
        4 => {
            // Well-formed extension fields, sometimes a MAC after them.
            for _ in 0..rng.gen_range(1..=3) {
                d.extend(extension_field(rng));
            }
            if rng.gen_bool(0.3) {
                d.extend((0..[20, 24][rng.gen_range(0..2)]).map(|_| rng.gen::<u8>()));
            }
        }
        5 => {
            // Extension fields with a length that lies, or a ragged tail.
            d.extend(extension_field(rng));
            let at = d.len() - rng.gen_range(4..16);
            d.truncate(at);
        }
        6 => {
            // Random bit flips anywhere in a request with a field.
            d.extend(extension_field(rng));
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..d.len());
                d[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        7 => d = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect(),
        8 => d[40..48].fill(0),
        _ => {} // plain valid request, odd header fields and all
    }
    d
}

/// Replaces the transmit timestamp (if there is room) by a tag that names
/// the datagram, unless it is the zero-transmit kind.
fn tag(d: &mut [u8], tag: u64) {
    if d.len() >= 48 && d[40..48].iter().any(|&b| b != 0) {
        d[40..48].copy_from_slice(&tag.to_be_bytes());
    }
}

fn now_ntp_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() + 2_208_988_800.0
}

fn ntp_seconds(bytes: &[u8]) -> f64 {
    let bits = u64::from_be_bytes(bytes.try_into().unwrap());
    (bits >> 32) as f64 + (bits & 0xffff_ffff) as f64 / 4_294_967_296.0
}

#[test]
fn hostile_datagrams_get_no_reply_and_interleaved_clients_are_all_answered() {
    let (daemon, port) = ntpd_sim_serve("127.0.0.1", &["--clock-offset", "300"]);
    let listen = format!("127.0.0.1:{port}");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Generous: a loaded machine may keep the server off its core for a while.
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rng = StdRng::seed_from_u64(7822);
    let mut buf = [0u8; 2048];
    // Up and answering?
    let marker = |n: u64| {
        let mut m = vec![0u8; 48];
        m[0] = (4 << 3) | 3;
        m[40..48].copy_from_slice(&(u64::MAX - n).to_be_bytes());
        m
    };
    let mut probes = 0u64;
    wait_for(Duration::from_secs(10), || {
        probes += 1;
        socket.send_to(&marker(0), &listen).unwrap();
        socket.recv(&mut buf).ok()
    })
    .expect("ntpd-sim answers");
    let mut probe_replies = 1;
    while socket.recv(&mut buf).is_ok() {
        probe_replies += 1;
    }

    let (mut sent, mut valid, mut answered) = (0u64, 0u64, 0u64);
    let mut kinds = [0u64; 2]; // [silent, answered] as the model says
    for round in 0..ROUNDS {
        // tag -> (request, whether it must be answered)
        let mut outstanding: HashMap<u64, (Vec<u8>, bool)> = HashMap::new();
        for i in 0..PER_ROUND {
            let id = ((round * PER_ROUND + i) as u64 + 1) << 8;
            let mut d = datagram(&mut rng);
            tag(&mut d, id);
            let must = is_valid_request(&d);
            kinds[usize::from(must)] += 1;
            valid += u64::from(must);
            socket.send_to(&d, &listen).unwrap();
            sent += 1;
            outstanding.insert(id, (d, must));
        }
        let end = marker(round as u64 + 1);
        socket.send_to(&end, &listen).unwrap();
        sent += 1;
        valid += 1;
        // The server answers in order, so once the marker's reply is in,
        // every reply of the round is.
        loop {
            let len = socket.recv(&mut buf).unwrap_or_else(|_| panic!("round {round}: the marker went unanswered"));
            let reply = &buf[..len];
            answered += 1;
            assert_eq!(len, 48, "replies are 48 bytes");
            assert_eq!(reply[0] & 7, 4, "a server reply");
            if reply[24..32] == end[40..48] {
                break;
            }
            let id = u64::from_be_bytes(reply[24..32].try_into().unwrap());
            let (request, must) = outstanding.remove(&id).unwrap_or_else(|| panic!("a reply to {id:#x}, sent no such"));
            assert!(must, "answered a datagram that is no valid request: {request:02x?}");
            assert!(len <= request.len(), "reply longer than its request");
            assert_eq!(reply[0] >> 3 & 7, request[0] >> 3 & 7, "in the request's version");
            assert_eq!(reply[2], request[2], "poll echoed");
            assert_eq!(reply[1], 1, "stratum 1");
            let transmit = ntp_seconds(&reply[40..48]);
            assert!((transmit - now_ntp_seconds() - OFFSET).abs() < 2.0, "the server's time, 300 s ahead");
        }
        let missed: Vec<_> = outstanding.values().filter(|(_, must)| *must).collect();
        assert!(missed.is_empty(), "round {round}: valid requests unanswered: {missed:02x?}");
    }
    assert!(sent >= 24_000, "{sent}");
    assert!(kinds[0] > 10_000 && kinds[1] > 5_000, "a mix of both: {kinds:?}");
    assert_eq!(answered, valid);

    // Still up, and it counted every datagram.
    let (status, output) = daemon.stop();
    assert!(status.success(), "{output}");
    let count = |name| log_field(&output, "stopped", name).expect("a final line with the counters");
    // Start-up probes sent before the socket was bound were never received.
    assert!((sent + 1..=sent + probes).contains(&count("received")), "{output}");
    assert_eq!(count("answered"), answered + probe_replies, "{output}");
}
