//! `ntpd-sim serve` as a real process on loopback, judged by clients and
//! decoders this project did not write: Python's ntplib (v3 and v4),
//! `chronyd -Q` and Wireshark's dissector. Also: kiss codes seen by a
//! client, drops with no reply, a typo in the config, clean signal exits.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ntp_e2e::peers::{chronyd_query_offset, ntplib_query, require};
use ntp_e2e::{bin, free_udp_port, log_field, ntpd_sim_serve, udp_exchange, wait_for, Daemon, CLIENT_REQUEST};

const OFFSET: f64 = 300.0;

/// Starts `ntpd-sim serve` with `args` on a port of its own choosing and
/// waits until it answers; returns it and the port.
fn serve(args: &[&str]) -> (Daemon, u16) {
    let (daemon, port) = ntpd_sim_serve("127.0.0.1", args);
    wait_for(Duration::from_secs(10), || raw_query(port, 4, 1).map(|_| ())).expect("ntpd-sim answers");
    (daemon, port)
}

/// One request from a plain socket; the reply, if any within 300 ms.
fn raw_query(port: u16, version: u8, transmit: u64) -> Option<Vec<u8>> {
    let mut request = [0u8; 48];
    request[0] = (version << 3) | 3;
    request[40..48].copy_from_slice(&transmit.to_be_bytes());
    udp_exchange("127.0.0.1", port, &request)
}

#[test]
fn ntplib_and_chronyd_accept_it_and_measure_its_clock_offset() {
    let offset = OFFSET.to_string();
    let (daemon, port) = serve(&["--clock-offset", &offset, "--refid", "GPS"]);
    for version in [3, 4] {
        let (stratum, measured, delay, refid) = ntplib_query(port, version).unwrap();
        assert_eq!((stratum, refid.as_str()), (1, "GPS"), "ntplib v{version}");
        // The offset's error is at most half the delay; both are sub-ms on an
        // idle loopback, the bounds leave room for a loaded CI machine.
        assert!((0.0..0.2).contains(&delay), "delay {delay}");
        assert!((measured - OFFSET).abs() < 0.1, "ntplib v{version} measured {measured}");
    }
    let measured = chronyd_query_offset(port).unwrap();
    assert!((measured - OFFSET).abs() < 0.1, "chronyd measured {measured}");
    let (status, output) = daemon.stop();
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM: {output}");
    let startup = output.lines().find(|l| l.contains("serving NTP")).expect("a start-up line");
    for field in [format!("127.0.0.1:{port}"), "stratum=1".into(), "refid=GPS".into()] {
        assert!(startup.contains(&field), "{field} in {startup}");
    }
}

#[test]
fn sigint_stops_it_cleanly_and_port_serves_every_address() {
    let port = free_udp_port();
    let mut daemon = Command::new(bin("ntpd-sim"))
        .args(["serve", "--port", &port.to_string(), "--stratum", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || raw_query(port, 4, 1)).expect("answers on 127.0.0.1");
    let socket = UdpSocket::bind("[::1]:0").expect("IPv6 loopback");
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let request = CLIENT_REQUEST;
    socket.send_to(&request, ("::1", port)).unwrap();
    let mut reply = [0u8; 64];
    let len = socket.recv(&mut reply).expect("answers on ::1");
    assert_eq!((len, reply[1]), (48, 3));
    // Bound to every address, it answers from the address the client asked:
    // a connected client of 127.0.0.2 takes replies from 127.0.0.2 only.
    let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
    connected.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    connected.connect(("127.0.0.2", port)).unwrap();
    connected.send(&request).unwrap();
    assert_eq!(connected.recv(&mut reply).ok(), Some(48), "reply from 127.0.0.2");
    let status = Command::new("kill").args(["-INT", &daemon.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = wait_for(Duration::from_secs(5), || daemon.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = daemon.kill();
    }
    let output = daemon.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn drops_bad_datagrams_without_reply_and_keeps_answering() {
    let (daemon, port) = serve(&[]);
    let mut valid = [0u8; 48];
    valid[0] = (4 << 3) | 3;
    valid[47] = 9;
    let mut cases: Vec<Vec<u8>> = vec![valid[..47].to_vec(), vec![0u8; 0], vec![0xff; 200]];
    for flags in [(2 << 3) | 3, (5 << 3) | 3, (4 << 3) | 1, (4 << 3) | 4, (4 << 3) | 6, (4 << 3) | 7, (3 << 3) | 7] {
        let mut case = valid.to_vec();
        case[0] = flags;
        cases.push(case);
    }
    cases.push(vec![0x16, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    cases.push(raw_request_with_zero_transmit());
    // From one socket, in order: loopback keeps it, and the server answers
    // in order, so the first reply being the valid request's means no bad
    // datagram was answered.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    for case in cases.iter().chain([&valid.to_vec()]) {
        socket.send_to(case, ("127.0.0.1", port)).unwrap();
    }
    let mut reply = [0u8; 2048];
    let len = socket.recv(&mut reply).expect("still answering");
    assert_eq!((len, reply[24..32].to_vec()), (48, valid[40..48].to_vec()), "the first reply is the valid request's");
    assert!(socket.recv(&mut reply).is_err(), "and no other reply follows");
    let (status, _) = daemon.stop();
    assert!(status.success());
}

fn raw_request_with_zero_transmit() -> Vec<u8> {
    let mut request = vec![0u8; 48];
    request[0] = (4 << 3) | 3;
    request
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("ntpd-sim.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn access_lists_and_rate_limits_as_clients_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let config = write_config(dir.path(), "[access]\ndeny = [\"127.0.0.0/8\"]\ndeny-action = \"kiss\"\n");
    let daemon =
        Daemon::spawn(bin("ntpd-sim"), &["serve", "--config", &config, "--listen", &format!("127.0.0.1:{port}")]);
    let seen = wait_for(Duration::from_secs(10), || ntplib_query(port, 4).ok()).expect("ntplib got a reply");
    assert_eq!((seen.0, seen.3.as_str()), (0, "DENY"));
    assert!(daemon.stop().0.success());

    // deny-action = "drop": silence; an allowed network more specific than
    // the denied one is still served.
    let port = free_udp_port();
    let config = write_config(
        dir.path(),
        "[access]\ndeny = [\"127.0.0.0/8\"]\nallow = [\"127.0.0.2\"]\ndeny-action = \"drop\"\n",
    );
    let daemon = Daemon::spawn(bin("ntpd-sim"), &["serve", "--config", &config, "--port", &port.to_string()]);
    let from_allowed = || udp_exchange("127.0.0.2", port, &CLIENT_REQUEST).map(|reply| reply[1]);
    assert_eq!(wait_for(Duration::from_secs(10), from_allowed), Some(1), "127.0.0.2 is served at stratum 1");
    assert_eq!(raw_query(port, 4, 2), None, "127.0.0.1 gets nothing");
    assert!(daemon.stop().0.success());

    let port = free_udp_port();
    let config =
        write_config(dir.path(), "[rate-limit]\nenabled = true\ninterval = 60\nburst = 1\nkiss-interval = 60\n");
    let daemon =
        Daemon::spawn(bin("ntpd-sim"), &["serve", "--config", &config, "--listen", &format!("127.0.0.1:{port}")]);
    // Every query below comes from 127.0.0.1: the first is served, the next gets RATE.
    let first = wait_for(Duration::from_secs(10), || ntplib_query(port, 4).ok()).expect("served");
    assert_eq!(first.0, 1);
    let kissed = ntplib_query(port, 3).expect("a RATE kiss");
    assert_eq!((kissed.0, kissed.3.as_str()), (0, "RATE"));
    assert_eq!(raw_query(port, 4, 5), None, "after a kiss, silence until kiss-interval passes");
    assert!(daemon.stop().0.success());
}

#[test]
fn a_typo_in_the_config_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nport = 12300\nstratun = 2\n");
    let output = Command::new(bin("ntpd-sim")).args(["serve", "--config", &config]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stratun"), "{stderr}");
}

#[test]
fn wireshark_decodes_its_replies_as_ntp() {
    let tshark = require("tshark");
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = serve(&["--clock-offset", "-2.5"]);
    let pcap = dir.path().join("capture.pcap");
    let log = dir.path().join("tshark.log");
    let filter = format!("udp port {port}");
    let mut capture = Command::new(&tshark)
        .args(["-i", "lo", "-f", &filter, "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let capturing = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).ok().filter(|text| text.contains("Capture started")).map(|_| ())
    });
    assert!(capturing.is_some(), "tshark did not start: {:?}", std::fs::read_to_string(&log));
    let nonce = 0x1122_3344_5566_7788u64;
    for version in [3, 4] {
        assert!(raw_query(port, version, nonce).is_some());
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill").args(["-INT", &capture.id().to_string()]).status().unwrap();
    assert!(status.success());
    capture.wait().unwrap();
    daemon.stop();

    let decode = format!("udp.port=={port},ntp");
    let output = Command::new(&tshark).arg("-r").arg(&pcap).args(["-d", &decode, "-T", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let packets: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ntp: Vec<&serde_json::Value> =
        packets.as_array().unwrap().iter().filter_map(|p| p.pointer("/_source/layers/ntp")).collect();
    let replies: Vec<_> = ntp.iter().filter(|n| field(n, "ntp.flags_tree", "ntp.flags.mode") == "4").collect();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(replies.len(), 2, "two server replies in {packets:#?}, tshark said {log}");
    let versions: Vec<String> = replies.iter().map(|r| field(r, "ntp.flags_tree", "ntp.flags.vn")).collect();
    assert_eq!(versions, ["3", "4"]);
    for reply in replies {
        assert_eq!(reply["ntp.stratum"], "1");
        assert_eq!(
            reply["ntp.refid"].as_str().map(|s| s.contains("LOCL") || s == "4c:4f:43:4c"),
            Some(true),
            "{reply:#?}"
        );
        assert!(reply["ntp.org"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(reply["ntp.xmt"].as_str().is_some_and(|s| s.contains(&this_year())), "{reply:#?}");
    }
}

fn field(layer: &serde_json::Value, tree: &str, name: &str) -> String {
    layer[tree][name].as_str().unwrap_or_default().to_string()
}

fn this_year() -> String {
    let output = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn flags_override_the_config_file_and_listen_takes_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, flag_port) = (free_udp_port(), free_udp_port());
    let config = write_config(
        dir.path(),
        &format!("[server]\nlisten = [\"127.0.0.1:{file_port}\"]\nstratum = 4\nrefid = \"FILE\"\n"),
    );
    let v4 = format!("127.0.0.1:{flag_port}");
    let v6 = format!("[::1]:{flag_port}");
    let daemon = Daemon::spawn(
        bin("ntpd-sim"),
        &["serve", "--config", &config, "--listen", &v4, "--listen", &v6, "--refid", "FLAG"],
    );
    let reply = wait_for(Duration::from_secs(10), || raw_query(flag_port, 4, 1)).expect("answers on the flag's port");
    assert_eq!((reply[1], &reply[12..16]), (4, &b"FLAG"[..]), "stratum from the file, refid from the flag");
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut request = [0u8; 48];
    request[0] = (3 << 3) | 3;
    request[47] = 2;
    socket.send_to(&request, ("::1", flag_port)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(socket.recv(&mut buf).ok(), Some(48), "answers on [::1]");
    assert_eq!(buf[0] >> 3 & 7, 3, "in the request's version");
    assert_eq!(raw_query(file_port, 4, 3), None, "the file's listen is overridden");
    assert!(daemon.stop().0.success());
}

fn resident_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_stays_flat_and_a_client_is_served_under_a_flood_of_sources() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), "[rate-limit]\nenabled = true\ninterval = 0.25\nburst = 4\ntable-size = 4096\n");
    let (daemon, port) = serve(&["--config", &config]);
    let before = resident_kb(daemon.pid());
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // A well-behaved client on 127.0.0.1 polls every 300 ms (within its
    // rate) all through the flood; like any NTP client it may ask twice.
    let client = {
        let flooding = std::sync::Arc::clone(&flooding);
        std::thread::spawn(move || {
            let (mut polls, mut first_try, mut unanswered) = (0u32, 0u32, 0u32);
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                polls += 1;
                match (0..3).find_map(|attempt| raw_query(port, 4, u64::from(polls)).map(|r| (attempt, r))) {
                    Some((attempt, reply)) => {
                        assert_eq!((reply.len(), reply[1]), (48, 1), "served time, not a kiss");
                        first_try += u32::from(attempt == 0);
                    }
                    None => unanswered += 1,
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            (polls, first_try, unanswered)
        })
    };
    // 24,000 distinct sources, six times the table; an unbounded table would
    // grow by over a megabyte. Every 127/8 address is this host's, so each
    // really is a new client, and each sends six requests at once: four
    // within its burst, then a RATE kiss, then silence. Paced at about
    // 6,000 sources a second so that the flood lasts a few seconds.
    let request = CLIENT_REQUEST;
    let started = std::time::Instant::now();
    for n in 0..24_000u32 {
        let source = std::net::Ipv4Addr::from(0x7f10_0000 + n);
        let socket = UdpSocket::bind((source, 0)).unwrap();
        for _ in 0..6 {
            socket.send_to(&request, ("127.0.0.1", port)).unwrap();
        }
        let due = Duration::from_micros(u64::from(n) * 1_000_000 / 6_000);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (polls, first_try, unanswered) = client.join().unwrap();
    eprintln!("flood of {:.1} s: client polls {polls}, answered at once {first_try}", started.elapsed().as_secs_f64());
    assert!(polls >= 8 && unanswered == 0, "{unanswered} of {polls} polls unanswered");
    let after = resident_kb(daemon.pid());
    assert!(after < before + 1024, "RSS grew from {before} kB to {after} kB");
    let (status, output) = daemon.stop();
    assert!(status.success());
    let kissed = log_field(&output, "stopped", "kissed").expect("a final line with the counters");
    assert!(kissed >= 10_000, "the flood was rate limited: {kissed} RATE kisses");
}
