//! The serving loop over real loopback sockets, driven through the library
//! entry point: replies carry the right fields and times, every kind of bad
//! datagram is dropped without a reply, access lists and rate limits answer
//! with kiss codes, and counters say why.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use ntp_daemon::config::{FileConfig, Overrides, ServeConfig, ServerSection};
use ntp_daemon::daemon::primary_snapshot;
use ntp_daemon::policy::{AccessConfig, DenyAction, RateLimitConfig};
use ntp_daemon::{PolicyConfig, Server, SharedClock};
use ntp_proto::packet::{Header, KissCode, Mode, ReferenceId, Stratum, Version};
use ntp_proto::{NtpDuration, NtpTimestamp};

const OFFSET: f64 = 300.0;

fn start(policy: PolicyConfig) -> (Server, Arc<SharedClock>) {
    start_with(policy, 0.0)
}

fn start_with(policy: PolicyConfig, drift_ppm: f64) -> (Server, Arc<SharedClock>) {
    let args = Overrides {
        server: ServerSection { clock_offset: Some(OFFSET), clock_drift_ppm: Some(drift_ppm), ..Default::default() },
        ..Default::default()
    };
    let config = ServeConfig::merge(FileConfig::default(), &args).unwrap();
    let clock = Arc::new(SharedClock::new(primary_snapshot(&config, -20)));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // As the daemon sizes it, so a burst waits in the queue while the
    // serving thread is kept off its core (the whole suite runs at once).
    let _ = ntp_udp::set_receive_buffer(&socket, config.receive_buffer);
    (Server::start(vec![socket], &policy, Arc::clone(&clock)).unwrap(), clock)
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket
}

fn request(version: Version, transmit: u64) -> Vec<u8> {
    let header = Header {
        version,
        mode: Mode::Client,
        poll: 5,
        transmit: NtpTimestamp::from_bits(transmit),
        ..Header::default()
    };
    header.encode().to_vec()
}

fn exchange(server: &Server, client: &UdpSocket, datagram: &[u8]) -> Option<Vec<u8>> {
    client.send_to(datagram, server.local_addrs()[0]).unwrap();
    let mut buf = [0u8; 2048];
    match client.recv_from(&mut buf) {
        Ok((len, from)) => {
            assert_eq!(from, server.local_addrs()[0]);
            Some(buf[..len].to_vec())
        }
        Err(_) => None,
    }
}

#[test]
fn answers_v3_and_v4_with_its_virtual_time() {
    let (server, _clock) = start(PolicyConfig::default());
    let client = client();
    for (version, nonce) in [(Version::V3, 0x1234_5678_9abc_def0u64), (Version::V4, 0x0fed_cba9_8765_4321)] {
        let t1 = SharedClock::system_now();
        let bytes = exchange(&server, &client, &request(version, nonce)).expect("a reply");
        let t4 = SharedClock::system_now();
        assert_eq!(bytes.len(), 48);
        let reply = Header::decode(&bytes).unwrap();
        assert_eq!(reply.version, version);
        assert_eq!(reply.mode, Mode::Server);
        assert_eq!(reply.origin, NtpTimestamp::from_bits(nonce), "origin is the request's transmit, untouched");
        assert_eq!(reply.poll, 5);
        assert_eq!(reply.stratum, Stratum(1));
        assert_eq!(reply.reference_id, ReferenceId(*b"LOCL"));
        assert_eq!(reply.precision, -20);
        // T2 and T3 are the server's clock: within the client's window, 300 s on.
        let offset = NtpDuration::from_seconds_f64(OFFSET);
        let slack = NtpDuration::from_seconds_f64(0.001);
        for t in [reply.receive, reply.transmit] {
            assert!(t - (t1 + offset) >= -slack, "{t:?} before t1 + offset");
            assert!((t4 + offset) - t >= -slack, "{t:?} after t4 + offset");
        }
        assert!(reply.transmit - reply.receive >= NtpDuration::ZERO);
        assert!(reply.reference - (t1 + offset) <= slack);
    }
}

#[test]
fn a_request_with_an_extension_field_gets_no_larger_reply() {
    let (server, _clock) = start(PolicyConfig::default());
    let mut datagram = request(Version::V4, 42);
    datagram.extend_from_slice(&[0x01, 0x04, 0x00, 0x20]);
    datagram.extend_from_slice(&[0; 28]);
    let reply = exchange(&server, &client(), &datagram).expect("a reply");
    assert_eq!(reply.len(), 48);
}

#[test]
fn drops_everything_that_is_not_a_client_request_and_keeps_serving() {
    let (server, _clock) = start(PolicyConfig::default());
    let client = client();
    let valid = request(Version::V4, 7);
    let mut bad: Vec<Vec<u8>> = vec![Vec::new(), vec![0x23], valid[..47].to_vec(), vec![0xff; 1500]];
    for version in [0u8, 1, 2, 5, 6, 7] {
        let mut d = valid.clone();
        d[0] = (version << 3) | 3;
        bad.push(d);
    }
    for mode in [0u8, 1, 2, 4, 5, 6, 7] {
        let mut d = valid.clone();
        d[0] = (4 << 3) | mode;
        bad.push(d);
    }
    // A real mode 6 (ntpq) read-variables query and a mode 7 (ntpdc) monlist,
    // too short for an NTP header (the 48-byte ones are in the loop above).
    bad.push(vec![0x16, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    bad.push(vec![0x17, 0x00, 0x03, 0x2a, 0, 0, 0, 0]);
    bad.push(request(Version::V4, 0));
    let mut bad_extension = valid.clone();
    bad_extension.extend_from_slice(&[0x01, 0x04, 0x00, 0x64]);
    bad.push(bad_extension);
    // Loopback keeps order and the server answers in order: if the first
    // reply is the valid request's, none of the bad ones was answered.
    for datagram in &bad {
        client.send_to(datagram, server.local_addrs()[0]).unwrap();
    }
    let reply = exchange(&server, &client, &valid).expect("still serving");
    assert_eq!(Header::decode(&reply).unwrap().origin, NtpTimestamp::from_bits(7), "only the valid one answered");
    let mut buf = [0u8; 2048];
    assert!(client.recv(&mut buf).is_err(), "nothing else arrives");
    let counts = server.stop().unwrap().read();
    assert_eq!(counts.received, bad.len() as u64 + 1);
    assert_eq!(counts.answered, 1);
    assert_eq!(counts.dropped_zero_transmit, 1);
    assert_eq!(counts.dropped_not_request, 7);
    assert_eq!(counts.dropped_malformed, 4 + 6 + 2 + 1);
}

#[test]
fn random_datagrams_never_stop_it() {
    use rand::{Rng, SeedableRng};
    let (server, _clock) = start(PolicyConfig::default());
    let client = client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5905);
    for _ in 0..3000 {
        let len = if rng.gen_bool(0.5) { 48 } else { rng.gen_range(0..300) };
        let mut datagram: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Many of them valid-looking: version 3 or 4, client mode.
        if len > 0 && rng.gen_bool(0.5) {
            datagram[0] = (rng.gen_range(3..=4) << 3) | 3;
        }
        client.send_to(&datagram, server.local_addrs()[0]).unwrap();
    }
    // Answers to the valid-looking ones may be queued; drain them, then ask.
    let mut buf = [0u8; 2048];
    while client.recv(&mut buf).is_ok() {}
    let reply = exchange(&server, &client, &request(Version::V4, 77)).expect("still serving");
    assert_eq!(Header::decode(&reply).unwrap().origin, NtpTimestamp::from_bits(77));
    let counts = server.stop().unwrap().read();
    assert_eq!(counts.received, 3001);
    assert!(counts.answered > 100, "{counts:?}");
}

fn kiss_code(reply: &[u8]) -> Option<KissCode> {
    let header = Header::decode(reply).unwrap();
    header.stratum.is_unspecified().then(|| KissCode::from_bytes(header.reference_id.0))
}

#[test]
fn rate_limit_answers_rate_kisses_then_silence() {
    let rate_limit =
        RateLimitConfig { enabled: true, interval: 60.0, burst: 3, kiss_interval: 60.0, ..Default::default() };
    let (server, _clock) = start(PolicyConfig { rate_limit, ..Default::default() });
    let client = client();
    for n in 1..=3 {
        let reply = exchange(&server, &client, &request(Version::V4, n)).expect("within the burst");
        assert_eq!(kiss_code(&reply), None);
    }
    let kiss = exchange(&server, &client, &request(Version::V4, 4)).expect("a RATE kiss");
    assert_eq!(kiss_code(&kiss), Some(KissCode::Rate));
    let header = Header::decode(&kiss).unwrap();
    assert_eq!(header.origin, NtpTimestamp::from_bits(4));
    assert_eq!(header.transmit, NtpTimestamp::from_bits(4), "a kiss carries none of our time");
    assert_eq!(exchange(&server, &client, &request(Version::V4, 5)), None, "kisses are rate limited too");
    let counts = server.stop().unwrap().read();
    assert_eq!((counts.answered, counts.kissed_rate, counts.dropped_rate_limited), (3, 1, 1));
}

#[test]
fn access_lists_deny_with_a_kiss_or_silence() {
    let deny = vec!["127.0.0.0/8".parse().unwrap()];
    let allow = vec!["127.0.0.0/16".parse().unwrap()];
    let access = AccessConfig { deny: deny.clone(), ..Default::default() };
    let (server, _clock) = start(PolicyConfig { access, ..Default::default() });
    let reply = exchange(&server, &client(), &request(Version::V3, 9)).expect("a DENY kiss");
    assert_eq!(kiss_code(&reply), Some(KissCode::Deny));
    assert_eq!(Header::decode(&reply).unwrap().version, Version::V3);
    assert_eq!(server.stop().unwrap().read().kissed_deny, 1);

    let access = AccessConfig { deny: deny.clone(), deny_action: DenyAction::Drop, ..Default::default() };
    let (server, _clock) = start(PolicyConfig { access, ..Default::default() });
    assert_eq!(exchange(&server, &client(), &request(Version::V4, 9)), None);
    assert_eq!(server.stop().unwrap().read().dropped_denied, 1);

    // A more specific allow wins over the deny.
    let access = AccessConfig { deny, allow, ..Default::default() };
    let (server, _clock) = start(PolicyConfig { access, ..Default::default() });
    let reply = exchange(&server, &client(), &request(Version::V4, 9)).expect("served");
    assert_eq!(kiss_code(&reply), None);
}

#[test]
fn a_clock_update_reaches_the_next_reply() {
    let (server, clock) = start(PolicyConfig::default());
    let client = client();
    clock.update(|snapshot| {
        let raw = snapshot.clock.raw_at(SharedClock::system_now());
        snapshot.clock.correction.step(raw, NtpDuration::from_seconds(-OFFSET as i64));
        snapshot.state.stratum = Stratum(4);
        snapshot.state.reference_id = ReferenceId([127, 0, 0, 9]);
    });
    let t1 = SharedClock::system_now();
    let reply = Header::decode(&exchange(&server, &client, &request(Version::V4, 1)).unwrap()).unwrap();
    assert_eq!((reply.stratum, reply.reference_id), (Stratum(4), ReferenceId([127, 0, 0, 9])));
    assert!((reply.receive - t1).abs() < NtpDuration::from_seconds_f64(0.1));
}

#[test]
fn a_drifting_clock_runs_away_at_its_rate() {
    // 5 % fast: between two queries half a second apart the offset grows by
    // 25 ms, far above loopback jitter even on a loaded machine.
    let (server, _clock) = start_with(PolicyConfig::default(), 50_000.0);
    let client = client();
    let measure = || {
        let t1 = SharedClock::system_now();
        let reply = Header::decode(&exchange(&server, &client, &request(Version::V4, 1)).unwrap()).unwrap();
        let t4 = SharedClock::system_now();
        let offset = ntp_proto::Timestamps { t1, t2: reply.receive, t3: reply.transmit, t4 }.offset();
        (offset.to_seconds_f64(), t1)
    };
    let (first, at_first) = measure();
    std::thread::sleep(Duration::from_millis(500));
    let (second, at_second) = measure();
    assert!((first - OFFSET).abs() < 0.1, "offset {first}");
    let expected = (at_second - at_first).to_seconds_f64() * 0.05;
    let growth = second - first;
    assert!((growth - expected).abs() < 0.005, "grew {growth} s, expected {expected} s");
}

#[tokio::test]
async fn run_serves_until_the_shutdown_future_completes() {
    let config = ServeConfig::merge(FileConfig::default(), &Default::default()).unwrap();
    let clock = Arc::new(SharedClock::new(primary_snapshot(&config, -20)));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(ntp_daemon::run(vec![socket], PolicyConfig::default(), clock, async {
        let _ = stopped.await;
    }));
    let reply = tokio::task::spawn_blocking(move || {
        let client = client();
        client.send_to(&request(Version::V4, 3), address).unwrap();
        let mut buf = [0u8; 100];
        client.recv_from(&mut buf).map(|(len, _)| len)
    })
    .await
    .unwrap();
    assert_eq!(reply.unwrap(), 48);
    stop.send(()).unwrap();
    let stats = running.await.unwrap().unwrap();
    assert_eq!(stats.read().answered, 1);
}
