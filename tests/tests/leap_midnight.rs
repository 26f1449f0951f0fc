//! Through a leap second's midnight with real processes: a primary whose
//! virtual clock `--clock-offset` puts seconds before the midnight of the
//! leap its leap file lists (2027-01-01), read every 100 ms across it from
//! a plain UDP socket; a chain below it with chronyd -x below that, judged
//! by chronyd's own measurements log; a smearing primary; a smearing
//! server below a stepping one.

use std::time::Duration;

use ntp_e2e::chain::{serve, ChronyClient};
use ntp_e2e::leap::{current_leap_file, deletion_leap_file, offset_to, prompt, watch_server, Reading};
use ntp_e2e::{bin, free_tcp_port_on, free_udp_port_on, ntpd_sim_status, wait_for, Daemon};
use ntp_proto::packet::LeapIndicator;

const EVERY: Duration = Duration::from_millis(100);

/// The one place served time went back by more than `at_least` seconds:
/// (index after the jump, how far back).
fn backward_jumps(readings: &[Reading], at_least: f64) -> Vec<(usize, f64)> {
    readings
        .windows(2)
        .enumerate()
        .filter_map(|(i, pair)| {
            let step = pair[1].served - pair[0].served;
            (step < -at_least).then_some((i + 1, step))
        })
        .collect()
}

/// (leap, server time) of every report in the output of `ntp-query --watch
/// --json`: JSON objects, each under a line with the time it started.
fn server_times(output: &str) -> Vec<(String, String)> {
    let json: String = output.lines().filter(|l| !l.ends_with(" UTC")).collect::<Vec<_>>().join("\n");
    serde_json::Deserializer::from_str(&json)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .filter_map(|report| {
            let server = &report["servers"][0];
            Some((server["leap"].as_str()?.to_string(), server["server_time"].as_str()?.to_string()))
        })
        .collect()
}

/// `/status` of a daemon serving HTTP on `http`, once it answers.
fn status(http: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(5), || ntpd_sim_status(http)).expect("/status answers")
}

#[test]
fn a_stepping_primary_serves_23_59_59_twice_and_announces_until_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ip = "127.0.0.1";
    let (port, http) = (free_udp_port_on(ip), format!("{ip}:{}", free_tcp_port_on(ip)));
    let primary = serve(ip, port, &["--leap-file", &file, "--clock-offset", &offset_to(4.0), "--http", &http]);
    wait_for(Duration::from_secs(3), || ntp_e2e::leap::read_server(ip, port)).expect("the primary answers");
    let pending = status(&http)["system"]["leap_second"].clone();
    assert_eq!(pending["pending"], "insert", "{pending}");
    assert_eq!(pending["mode"], "step", "{pending}");
    // ntp-query watches too, as a user would (docs/leap.md shows it).
    let target = format!("{ip}:{port}");
    let watcher = Daemon::spawn(bin("ntp-query"), &["-n", "1", "-w", "0.25", "--json", &target]);
    let readings = watch_server(ip, port, EVERY, Duration::from_secs(6));
    let (_, watched) = watcher.stop();
    let seen = server_times(&watched);
    let repeated = seen.windows(2).filter(|p| p[1].1 < p[0].1 && p[0].1.starts_with("2026-12-31T23:59:59")).count();
    assert_eq!(repeated, 1, "ntp-query did not see 23:59:59 twice: {seen:#?}");
    assert!(seen.iter().any(|(leap, time)| leap == "none" && time.starts_with("2027-01-01T00:00:0")), "{seen:#?}");
    let jumps = backward_jumps(&readings, 0.5);
    assert_eq!(jumps.len(), 1, "one step back, the inserted second: {jumps:?}\n{readings:#?}");
    let (after, by) = jumps[0];
    // Back by one second less the time between the two readings.
    let (a, b) = (readings[after - 1], readings[after]);
    let expected = -1.0 + (b.host - a.host);
    let slack = 0.002 + (a.round_trip + b.round_trip) / 2.0;
    assert!((by - expected).abs() < slack, "stepped back by {by} s, not {expected} (±{slack})");
    let (before, repeated) = readings.split_at(after);
    assert!(before.iter().all(|r| r.from_midnight() < 0.0 && r.leap == LeapIndicator::Insert), "{before:#?}");
    // The repeated second: 23:59:59 again, still announced; then midnight, no warning.
    let (again, next_day): (Vec<Reading>, Vec<Reading>) = repeated.iter().partition(|r| r.from_midnight() < 0.0);
    assert!(again.len() >= 3, "23:59:59 served again for a second: {again:#?}");
    assert!(again.iter().all(|r| r.from_midnight() >= -1.0 && r.leap == LeapIndicator::Insert), "{again:#?}");
    assert!(!next_day.is_empty() && next_day.iter().all(|r| r.leap == LeapIndicator::NoWarning), "{next_day:#?}");
    // One second behind the host clock from the leap on: the host, here, had no leap.
    let offsets: Vec<f64> = prompt(&next_day).iter().map(Reading::offset).collect();
    let before_offset = prompt(before)[0].offset();
    assert!(offsets.iter().all(|o| (o - before_offset + 1.0).abs() < 0.01), "{before_offset} then {offsets:?}");
    let settled = status(&http)["system"]["leap_second"].clone();
    assert!(settled["pending"].is_null(), "{settled}");
    let (_, log) = primary.stop();
    assert!(log.contains("leap second inserted"), "{log}");
}

#[test]
fn a_deleted_second_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = deletion_leap_file(dir.path());
    let ip = "127.0.0.1";
    let port = free_udp_port_on(ip);
    let primary = serve(ip, port, &["--leap-file", &file, "--clock-offset", &offset_to(4.0)]);
    wait_for(Duration::from_secs(3), || ntp_e2e::leap::read_server(ip, port)).expect("the primary answers");
    let readings = watch_server(ip, port, EVERY, Duration::from_secs(5));
    assert!(backward_jumps(&readings, 0.0).is_empty(), "served time went back");
    let (before, after): (Vec<Reading>, Vec<Reading>) = readings.iter().partition(|r| r.from_midnight() < 0.0);
    assert!(before.iter().all(|r| r.from_midnight() < -1.0 && r.leap == LeapIndicator::Delete), "{before:#?}");
    assert!(!after.is_empty() && after.iter().all(|r| r.leap == LeapIndicator::NoWarning), "{after:#?}");
    // A second ahead of the host from 23:59:59 on.
    let (first, last) = (prompt(&before)[0].offset(), prompt(&after)[prompt(&after).len() - 1].offset());
    assert!((last - first - 1.0).abs() < 0.01, "{first} then {last}");
    let (_, log) = primary.stop();
    assert!(log.contains("leap second deleted"), "{log}");
}

/// Asserts that between any two prompt readings served time fell behind
/// the host's by no more than a smear over a window of `window` s allows
/// (1/(window + 1) of the time between them), and never gained on it.
fn assert_smeared_smoothly(readings: &[Reading], window: f64) {
    for pair in prompt(readings).windows(2) {
        let (fell, elapsed) = (pair[0].offset() - pair[1].offset(), pair[1].host - pair[0].host);
        assert!(fell > -0.005 && fell < elapsed / (window + 1.0) + 0.005, "fell {fell} s in {elapsed} s");
    }
}

/// A primary 40 s before the leap's midnight and, on the same address, a
/// daemon below it started with `tier_args` and serving `/status`: time
/// for the tier to step to the primary's day and hear the announcement.
struct PrimaryAndTier {
    _dir: tempfile::TempDir,
    _primary: Daemon,
    tier: Daemon,
    ip: &'static str,
    primary_port: u16,
    tier_port: u16,
    http: String,
}

impl PrimaryAndTier {
    fn start(tier_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = current_leap_file(dir.path());
        let ip = "127.0.0.1";
        let (primary_port, tier_port) = (free_udp_port_on(ip), free_udp_port_on(ip));
        let http = format!("{ip}:{}", free_tcp_port_on(ip));
        let primary = serve(ip, primary_port, &["--leap-file", &file, "--clock-offset", &offset_to(40.0)]);
        let upstream = format!("{ip}:{primary_port}");
        let mut args = vec!["--upstream", &upstream, "--min-poll", "0", "--max-poll", "1", "--http", &http];
        args.extend_from_slice(tier_args);
        let tier = serve(ip, tier_port, &args);
        Self { _dir: dir, _primary: primary, tier, ip, primary_port, tier_port, http }
    }
}

/// Seconds until the leap's midnight on the served clock of the daemon
/// whose `/status` system section is `system`.
fn until_midnight(system: &serde_json::Value) -> f64 {
    let at = system["leap_second"]["pending_at_unix"].as_f64().expect("a leap pending");
    at - (ntp_e2e::leap::host_unix() + system["host_offset"].as_f64().expect("host_offset"))
}

#[test]
fn a_chain_and_chronyd_below_take_the_leap_without_a_spike() {
    // Bound by name, not `..`: what is left unbound would be dropped, and stopped, now.
    let PrimaryAndTier { _dir: _kept, _primary: _running, tier, ip, tier_port: p2, http, .. } =
        PrimaryAndTier::start(&[]);
    let chrony = ChronyClient::follow(ip, p2);
    let synchronized = wait_for(Duration::from_secs(25), || {
        let system = status(&http)["system"].clone();
        (system["stratum"] == 2 && system["leap"] == "insert").then_some(system)
    });
    let system = synchronized.unwrap_or_else(|| panic!("stratum 2 does not announce: {}", status(&http)));
    let until = until_midnight(&system);
    assert!(until > 6.0, "synchronized too late to watch the leap: {until} s before it");
    // chronyd, the independent judge, reads the announcement...
    let announced = wait_for(Duration::from_secs_f64(until - 4.0), || {
        chrony.ntpdata(ip).filter(|(leap, _)| leap == "Insert second")
    });
    assert!(announced.is_some(), "chronyd never saw the announcement: {:?}\n{}", chrony.ntpdata(ip), chrony.log());
    // ... while we watch the tier from 3 s before its midnight to 4 s after,
    // and chronyd's samples of it from 3 s before to 6 s after.
    std::thread::sleep(Duration::from_secs_f64((until_midnight(&status(&http)["system"]) - 3.0).max(0.0)));
    let judged = std::thread::scope(|scope| {
        let judge = scope.spawn(|| {
            let mut seen: Vec<(String, f64)> = Vec::new();
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(9) {
                if let Some(sample) = chrony.ntpdata(ip) {
                    if seen.last() != Some(&sample) {
                        seen.push(sample);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let readings = watch_server(ip, p2, EVERY, Duration::from_secs(7));
        let jumps = backward_jumps(&readings, 0.5);
        assert_eq!(jumps.len(), 1, "the tier below inserted one second: {jumps:?}\n{readings:#?}");
        assert!(readings.last().is_some_and(|r| r.leap == LeapIndicator::NoWarning && r.from_midnight() > 0.0));
        judge.join().expect("chronyc")
    });
    eprintln!("chronyd's samples across the leap: {judged:#?}\n{}", chrony.tracking());
    // chronyd's clock (the host's) had no leap: it saw the tier's time go
    // back one second at once, during the repeated second (still
    // announced), and the announcement end after it. What chronyd makes of
    // its own clock afterwards is its business: it does not take the leap,
    // its date (the host's) not being a month's last day.
    let back = judged.windows(2).position(|pair| {
        let moved = pair[1].1 - pair[0].1;
        pair[0].0 == "Insert second" && pair[0].1.abs() < 0.005 && (moved + 1.0).abs() < 0.005
    });
    let back = back.unwrap_or_else(|| panic!("chronyd did not see the tier go back one second: {judged:#?}"));
    assert!(judged[back + 1..].iter().any(|(leap, _)| leap == "Normal"), "the announcement did not end: {judged:#?}");
    // The tier's discipline saw no 1 s spike: the upstream's samples across
    // the leap were measured against a clock that took the leap too.
    std::thread::sleep(Duration::from_secs(4));
    let after = status(&http)["system"].clone();
    assert_eq!(after["stratum"], 2, "{after}");
    let offset = after["offset"].as_f64().unwrap();
    assert!(offset.abs() < 0.01, "last update after the leap saw {offset} s: {after}");
    let (_, log) = tier.stop();
    assert!(log.contains("leap second inserted"), "{log}");
    assert!(log.matches("clock stepped").count() <= 1, "stepped for the leap: {log}");
}

#[test]
fn a_smearing_primary_runs_slow_through_the_window_and_never_jumps() {
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ip = "127.0.0.1";
    let (port, http) = (free_udp_port_on(ip), format!("{ip}:{}", free_tcp_port_on(ip)));
    // A 20 s window from 10 s before midnight to 10 s after; start 20 s
    // before, so a slow start on a loaded machine is still before the window.
    let args = ["--leap-file", &file, "--leap-smear", "20", "--clock-offset", &offset_to(20.0), "--http", &http];
    let primary = serve(ip, port, &args);
    let first = wait_for(Duration::from_secs(3), || ntp_e2e::leap::read_server(ip, port)).expect("answers");
    let readings = watch_server(ip, port, EVERY, Duration::from_secs_f64(12.0 - first.from_midnight()));
    assert!(readings.iter().all(|r| r.leap == LeapIndicator::NoWarning), "a smearing server never announces");
    assert!(backward_jumps(&readings, 0.0).is_empty(), "served time went back");
    // Served minus host time: 0 before the window, -1 s after, falling at
    // 1/21 (20 served seconds in 21 real ones) in between, without a jump.
    assert_smeared_smoothly(&readings, 20.0);
    let readings = prompt(&readings);
    let base = readings[0].offset();
    let mid: Vec<&Reading> = readings.iter().filter(|r| r.from_midnight().abs() < 5.0).collect();
    let slope = (mid[mid.len() - 1].offset() - mid[0].offset()) / (mid[mid.len() - 1].host - mid[0].host);
    assert!((slope + 1.0 / 21.0).abs() < 0.004, "smear rate {slope}, not -1/21");
    let total = readings[readings.len() - 1].offset() - base;
    assert!((total + 1.0).abs() < 0.005, "the smear took {total} s, not one second");
    let (_, log) = primary.stop();
    assert!(log.contains("leap seconds are smeared") && log.contains("leap second inserted"), "{log}");
}

#[test]
fn a_smearing_server_below_a_stepping_one_follows_it_and_smears_on_top() {
    let PrimaryAndTier { _dir: _kept, _primary: _running, tier: smearing, ip, primary_port: p1, tier_port: p2, http } =
        PrimaryAndTier::start(&["--leap-smear", "20"]);
    // Synchronized, the leap learned from the upstream's announcement,
    // and never passed on.
    let learned = wait_for(Duration::from_secs(25), || {
        let system = status(&http)["system"].clone();
        (system["stratum"] == 2 && system["leap_second"]["pending"] == "insert").then_some(system)
    });
    let system = learned.unwrap_or_else(|| panic!("the leap was not learned: {}", status(&http)));
    assert_eq!(system["leap"], "none", "a smearing server announced: {system}");
    let until = until_midnight(&system);
    assert!(until > 10.5, "learned {until} s before midnight, after the window (10 s before) began");
    // Watch until the window (10.5 s after midnight) is over.
    let span = until + 13.0;
    let readings = watch_server(ip, p2, EVERY, Duration::from_secs_f64(span));
    assert!(readings.iter().all(|r| r.leap == LeapIndicator::NoWarning));
    assert!(backward_jumps(&readings, 0.0).is_empty(), "served time went back");
    assert_smeared_smoothly(&readings, 20.0);
    let readings = prompt(&readings);
    let total = readings[readings.len() - 1].offset() - readings[0].offset();
    assert!((total + 1.0).abs() < 0.01, "the smear took {total} s, not one second");
    let after = status(&http)["system"].clone();
    assert_eq!(after["stratum"], 2, "{after}");
    assert!(after["offset"].as_f64().unwrap().abs() < 0.01, "the discipline saw a spike: {after}");
    // Back on the upstream's UTC once the window is over.
    let (tier, top) = (readings[readings.len() - 1], ntp_e2e::leap::read_server(ip, p1).expect("primary"));
    assert!((tier.offset() - top.offset()).abs() < 0.005, "tier {} s, primary {} s", tier.offset(), top.offset());
    let (_, log) = smearing.stop();
    assert!(log.contains("leap second inserted"), "{log}");
}
