//! Reference clocks for real: a stratum 1 on gpsd. An NMEA receiver (a
//! small TCP server writing RMC/GGA/ZDA each second of the host's clock)
//! is read by a real gpsd (`ntp_e2e::gps`), which writes the NTP SHM
//! segments; ntpd-sim reads them as it would a GPS's, and chronyd (`-x`,
//! it never touches the clock) reads the same gpsd in the same run for a
//! side-by-side figure. The host's clock is the truth here: the receiver
//! stamps its sentences with it, so whatever gpsd, the daemon and the
//! serving path add shows as an error against it.
//!
//! SOCK samples are sent in gpsd's exact datagram by the test: gpsd 3.22
//! opens chrony sockets only for serial, USB and PPS devices (see
//! `gps.rs`); `vm_pps.rs` has gpsd send its own, from a kernel PPS.
//! gpsd's SHM keys are the host's: these tests run one at a time.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ntp_e2e::gps::{serial, Gpsd, Receiver, ShmCleanup, SockSender};
use ntp_e2e::peers::{require, ChronyServer};
use ntp_e2e::{free_tcp_port_on, free_udp_port, ntp_query_entry, ntpd_sim_serve, ntpd_sim_status, wait_for, Daemon};
use serde_json::Value;

const POLLS: [&str; 5] = ["--min-poll", "0", "--max-poll", "2", "--no-control-socket"];

/// ntpd-sim with `args`, its HTTP on a free loopback port.
fn start(args: &[&str]) -> (Daemon, u16, String) {
    let http = format!("127.0.0.1:{}", free_tcp_port_on("127.0.0.1"));
    let mut all = vec!["--http", http.as_str()];
    all.extend_from_slice(&POLLS);
    all.extend_from_slice(args);
    let (daemon, port) = ntpd_sim_serve("127.0.0.1", &all);
    (daemon, port, http)
}

fn status(http: &str) -> Value {
    ntpd_sim_status(http).unwrap_or_default()
}

fn row<'a>(status: &'a Value, address: &str) -> Option<&'a Value> {
    status["upstreams"].as_array()?.iter().find(|u| u["address"] == address)
}

/// Waits until the daemon is stratum 1 on refid `refid`, its system peer
/// settled (the filter full enough that its distance is small).
fn wait_for_stratum_one(http: &str, refid: &str, daemon: &Daemon, timeout: Duration) -> Value {
    let synced = wait_for(timeout, || {
        let s = status(http);
        let settled = s["upstreams"].as_array()?.iter().any(|u| u["state"] == "system-peer");
        (s["system"]["stratum"] == 1 && s["system"]["reference_id"] == refid && settled).then_some(s)
    });
    synced.unwrap_or_else(|| panic!("not stratum 1 on {refid}: {}\n{}", status(http), daemon.output()))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// chronyd (`-x`) reading `refclock` (a chrony.conf `refclock` line), with
/// its command socket where the test can ask `chronyc sources`.
fn chronyd(refclock: &str) -> (ChronyServer, std::path::PathBuf) {
    let mut socket = std::path::PathBuf::new();
    let chrony = ChronyServer::start_with(free_udp_port(), |dir| {
        // chronyd makes its command socket only in a directory closed to others.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        socket = dir.join("cmd.sock");
        format!("{refclock}\nbindcmdaddress {}\n", socket.display())
    });
    (chrony, socket)
}

/// One line of `chronyc -c COMMAND` on chronyd's command socket.
fn chronyc(socket: &Path, command: &str) -> Option<Vec<String>> {
    let chronyc = require("chronyc");
    let output = Command::new(chronyc).arg("-h").arg(socket).args(["-n", "-c", command]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next()?.split(',').map(String::from).collect())
}

/// chrony's last measured offset of its refclock from its own clock, as
/// reference minus its clock (chronyc prints local minus reference), once
/// it has one.
fn chrony_offset(socket: &Path) -> Option<f64> {
    let fields = chronyc(socket, "sources")?;
    let reach = u32::from_str_radix(fields.get(5)?, 8).ok()?;
    (reach != 0).then_some(())?;
    fields.get(8)?.parse::<f64>().ok().map(|local_minus_reference| -local_minus_reference)
}

/// chrony's clock minus the host's, from `tracking` ("System time", which
/// `-c` prints as NTP time minus system time): with `-x` it disciplines a
/// clock of its own, as ntpd-sim does, and this is its error here.
fn chrony_served(socket: &Path) -> Option<f64> {
    let fields = chronyc(socket, "tracking")?;
    (fields.get(2)? == "1").then_some(())?;
    fields.get(4)?.parse().ok()
}

/// ntpd-sim on `shm:0` becomes a stratum 1 with refid GPS and serves the
/// host's time (the truth here) within a millisecond; chronyd reading the
/// same receiver through gpsd's unit 1 measures what ntpd-sim measures.
#[test]
fn shm_from_gpsd_makes_a_stratum_one_measured_beside_chronyd() {
    let _one_at_a_time = serial();
    let _cleanup = ShmCleanup::new();
    let receiver = Receiver::start(0.0);
    let gpsd = Gpsd::start(&[&receiver, &receiver]);
    let (daemon, port, http) = start(&["--refclock", "shm:0,poll=0,delay=0.2"]);
    let (_chrony, socket) = chronyd("refclock SHM 1 refid GPS poll 0 delay 0.2");
    let status = wait_for_stratum_one(&http, "GPS", &daemon, Duration::from_secs(60));
    assert_eq!(row(&status, "shm:0").map(|r| r["state"].clone()), Some("system-peer".into()), "{status}");
    wait_for(Duration::from_secs(30), || chrony_offset(&socket)).expect("chronyd never read gpsd's unit 1");

    std::thread::sleep(Duration::from_secs(10));
    let (mut ours, mut chrony, mut served, mut chrony_clock, mut queried) = (vec![], vec![], vec![], vec![], vec![]);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let status = self::status(&http);
        ours.extend(row(&status, "shm:0").and_then(|r| r["offset"].as_f64()));
        served.extend(status["system"]["host_offset"].as_f64());
        chrony.extend(chrony_offset(&socket));
        chrony_clock.extend(chrony_served(&socket));
        let entry = ntp_query_entry(&[&format!("127.0.0.1:{port}")]);
        queried.extend(entry["offset"].as_f64());
        std::thread::sleep(Duration::from_secs(1));
    }
    let (ours, chrony, served, queried) = (median(ours), median(chrony), median(served), median(queried));
    let chrony_clock = median(chrony_clock);
    let root_dispersion = self::status(&http)["system"]["root_dispersion"].as_f64().unwrap_or(f64::NAN);
    println!(
        "SHM via gpsd, 20 s after 10 s: clock minus host: ntpd-sim {:+.1} us (ntp-query sees {:+.1} us), \
         chronyd {:+.1} us; GPS minus own clock: ntpd-sim {:+.1} us, chronyd {:+.1} us; \
         ntpd-sim root dispersion {:.1} us",
        served * 1e6,
        queried * 1e6,
        chrony_clock * 1e6,
        ours * 1e6,
        chrony * 1e6,
        root_dispersion * 1e6
    );
    // NMEA over TCP reaches gpsd well within a millisecond here; a real
    // receiver's serial NMEA is tens of ms late (the `offset` setting).
    // Generous bounds: on a loaded machine gpsd stamps NMEA later and
    // noisier, for both daemons alike (docs/performance.md has figures).
    assert!(served.abs() < 5e-3, "served {served} s off the host's clock\n{}", gpsd.process.output());
    assert!(queried.abs() < 6e-3, "a client sees {queried} s");
    assert!((served - chrony_clock).abs() < 5e-3, "ntpd-sim's clock {served}, chronyd's {chrony_clock}");
    assert!(root_dispersion > 0.0 && root_dispersion < 0.01, "root dispersion {root_dispersion}");
}

/// The `offset` setting corrects a receiver whose NMEA is late: here one
/// 50 ms behind, corrected to the host's clock. The daemon runs as
/// `nobody` after opening root's SHM unit 0, and logs the refclock's
/// samples in `peerstats` and its clock updates in `loopstats`.
#[test]
fn the_offset_setting_corrects_late_nmea() {
    let _one_at_a_time = serial();
    let _cleanup = ShmCleanup::new();
    let stats = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(stats.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let receiver = Receiver::start(-0.05);
    let _gpsd = Gpsd::start(&[&receiver]);
    let stats_dir = stats.path().to_string_lossy().into_owned();
    let refclock = "shm:0,poll=0,delay=0.2,offset=0.05";
    let (daemon, _, http) = start(&["--refclock", refclock, "--user", "nobody", "--stats-dir", &stats_dir]);
    wait_for_stratum_one(&http, "GPS", &daemon, Duration::from_secs(60));
    let settled = wait_for(Duration::from_secs(30), || {
        let served = status(&http)["system"]["host_offset"].as_f64()?;
        (served.abs() < 2e-3).then_some(served)
    });
    assert!(settled.is_some(), "never within 2 ms: {}", status(&http));
    assert!(daemon.output().contains("privileges dropped"), "{}", daemon.output());
    let peerstats = std::fs::read_to_string(stats.path().join("peerstats")).unwrap_or_default();
    assert!(peerstats.contains("shm:0"), "peerstats: {peerstats}");
    let loopstats = std::fs::read_to_string(stats.path().join("loopstats")).unwrap_or_default();
    assert!(loopstats.contains("shm:0"), "loopstats: {loopstats}");
}

/// A GPS that stops: the daemon holds over for `--holdover`, then says
/// it is unsynchronized.
#[test]
fn a_gps_that_stops_is_held_over_then_unsynchronized() {
    let _one_at_a_time = serial();
    let _cleanup = ShmCleanup::new();
    let receiver = Receiver::start(0.0);
    let _gpsd = Gpsd::start(&[&receiver]);
    let (daemon, _, http) = start(&["--refclock", "shm:0,poll=0,delay=0.2", "--holdover", "10"]);
    wait_for_stratum_one(&http, "GPS", &daemon, Duration::from_secs(60));
    receiver.silence();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(status(&http)["system"]["stratum"], 1, "held over: still stratum 1");
    let unsynchronized = wait_for(Duration::from_secs(30), || (status(&http)["system"]["stratum"] == 0).then_some(()));
    assert!(unsynchronized.is_some(), "still synchronized: {}", status(&http));
    let after = stopped.elapsed().as_secs_f64();
    assert!(after >= 9.0, "unsynchronized {after} s after the GPS stopped, before the holdover ran out");
    assert!(daemon.wait_for_line("now unsynchronized", Duration::from_secs(2)).is_some(), "{}", daemon.output());
}

/// A GPS 2 s wrong against two network upstreams that agree: voted out
/// as a falseticker, and the time served is the upstreams'.
#[test]
fn a_gps_two_seconds_wrong_is_voted_out_by_two_upstreams() {
    let _one_at_a_time = serial();
    let _cleanup = ShmCleanup::new();
    let receiver = Receiver::start(2.0);
    let _gpsd = Gpsd::start(&[&receiver]);
    let (_a, a) = ntpd_sim_serve("127.0.0.1", &["--no-control-socket"]);
    let (_b, b) = ntpd_sim_serve("127.0.0.1", &["--no-control-socket"]);
    let (a, b) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    let (daemon, _, http) = start(&["--refclock", "shm:0,poll=0,delay=0.2", "--upstream", &a, "--upstream", &b]);
    let voted_out = wait_for(Duration::from_secs(90), || {
        let s = status(&http);
        let gps = row(&s, "shm:0")?;
        let served = s["system"]["host_offset"].as_f64()?;
        (gps["state"] == "falseticker" && gps["reach"].as_u64()? > 0 && served.abs() < 0.01).then_some(s)
    });
    let s = voted_out.unwrap_or_else(|| panic!("the GPS was not voted out: {}\n{}", status(&http), daemon.output()));
    assert_eq!(s["system"]["stratum"], 2, "{s}");
}

/// chrony's SOCK protocol: ntpd-sim binds the socket and takes gpsd's
/// datagram; a PPS takes its seconds from the NMEA source it is locked
/// to (only its fraction counts), and a PPS alone is never used.
#[test]
fn sock_samples_and_a_pps_locked_to_nmea() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (nmea, pps, chrony_sock) =
        (dir.path().join("chrony.gps0.sock"), dir.path().join("chrony.gps0.pps.sock"), dir.path().join("c.sock"));
    let nmea_flag = format!("sock:{},refid=NMEA,poll=0,delay=0.2,noselect", nmea.display());
    let pps_flag = format!("sock:{},refid=PPS,poll=0,lock=NMEA", pps.display());
    let (daemon, _, http) = start(&["--refclock", &nmea_flag, "--refclock", &pps_flag]);
    let (alone, _, alone_http) =
        start(&["--refclock", &format!("sock:{},refid=PPS,poll=0", dir.path().join("alone.sock").display())]);
    let (_chrony, socket) = chronyd(&format!("refclock SOCK {} refid NMEA poll 0 delay 0.2", chrony_sock.display()));
    let nmea_sender = SockSender::new(&[&nmea, &chrony_sock]);
    let pps_sender = SockSender::new(&[&pps, &dir.path().join("alone.sock")]);
    // NMEA says the reference is 30 ms ahead; the pulse, 400 us (its
    // whole seconds deliberately wrong: only the fraction counts).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut synced = None;
    while Instant::now() < deadline && synced.is_none() {
        nmea_sender.send(0.030, false);
        pps_sender.send(5.0004, true);
        std::thread::sleep(Duration::from_millis(500));
        let s = status(&http);
        let served = s["system"]["host_offset"].as_f64().unwrap_or(f64::NAN);
        if s["system"]["reference_id"] == "PPS" && (served - 0.0004).abs() < 2e-4 {
            synced = Some(s);
        }
    }
    let s = synced.unwrap_or_else(|| panic!("not on the locked PPS: {}\n{}", status(&http), daemon.output()));
    assert_eq!(s["system"]["stratum"], 1);
    assert_eq!(row(&s, &format!("sock:{}", nmea.display())).map(|r| r["state"].clone()), Some("no-select".into()));
    let chrony = chrony_offset(&socket).expect("chronyd read the SOCK samples");
    println!("SOCK: chronyd measures {:+.1} us of the 30000 us sent", chrony * 1e6);
    assert!((chrony - 0.030).abs() < 1e-3, "chronyd measures {chrony}");
    let lone = status(&alone_http);
    assert_eq!(lone["system"]["stratum"], 0, "a PPS alone is not used: {lone}\n{}", alone.output());
}
