//! Through a leap second's midnight with real processes: a primary whose
//! virtual clock `--clock-offset` puts seconds before the midnight of the
//! leap its leap file lists (2027-01-01), read every 100 ms across it from
//! a plain UDP socket; a chain below it with chronyd -x below that, judged
//! by chronyd's own measurements log; a smearing primary; a smearing
//! server below a stepping one.

use std::time::Duration;

use ntp_e2e::chain::{serve, ChronyClient};
use ntp_e2e::leap::{current_leap_file, offset_to, prompt, watch_server, Reading};
use ntp_e2e::{free_tcp_port_on, free_udp_port_on, ntpd_sim_status, wait_for};
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
    let readings = watch_server(ip, port, EVERY, Duration::from_secs(6));
    let jumps = backward_jumps(&readings, 0.5);
    assert_eq!(jumps.len(), 1, "one step back, the inserted second: {jumps:?}\n{readings:#?}");
    let (after, by) = jumps[0];
    // Back by one second less the time between two readings.
    assert!((-1.0..-0.7).contains(&by), "stepped back by {by} s");
    let (before, repeated) = readings.split_at(after);
    assert!(before.iter().all(|r| r.from_midnight() < 0.0 && r.leap == LeapIndicator::Insert), "{before:#?}");
    // The repeated second: 23:59:59 again, still announced; then midnight, no warning.
    let (again, next_day): (Vec<Reading>, Vec<Reading>) = repeated.iter().partition(|r| r.from_midnight() < 0.0);
    assert!(again.len() >= 5, "23:59:59 served again for a second: {again:#?}");
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

/// Seconds until the leap's midnight on the served clock of the daemon
/// whose `/status` system section is `system`.
fn until_midnight(system: &serde_json::Value) -> f64 {
    let at = system["leap_second"]["pending_at_unix"].as_f64().expect("a leap pending");
    at - (ntp_e2e::leap::host_unix() + system["host_offset"].as_f64().expect("host_offset"))
}

#[test]
fn a_chain_and_chronyd_below_take_the_leap_without_a_spike() {
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ip = "127.0.0.1";
    let (p1, p2) = (free_udp_port_on(ip), free_udp_port_on(ip));
    let http = format!("{ip}:{}", free_tcp_port_on(ip));
    // 40 s before midnight: time for the tier below to step to the
    // primary's day and hear the announcement, and for chronyd to follow it.
    let _primary = serve(ip, p1, &["--leap-file", &file, "--clock-offset", &offset_to(40.0)]);
    let upstream = format!("{ip}:{p1}");
    let tier = serve(ip, p2, &["--upstream", &upstream, "--min-poll", "0", "--max-poll", "1", "--http", &http]);
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
    // A 20 s window from 10 s before midnight to 10 s after; start 12 s before.
    let args = ["--leap-file", &file, "--leap-smear", "20", "--clock-offset", &offset_to(12.0), "--http", &http];
    let primary = serve(ip, port, &args);
    let first = wait_for(Duration::from_secs(3), || ntp_e2e::leap::read_server(ip, port)).expect("answers");
    let readings = watch_server(ip, port, EVERY, Duration::from_secs_f64(12.0 - first.from_midnight()));
    assert!(readings.iter().all(|r| r.leap == LeapIndicator::NoWarning), "a smearing server never announces");
    assert!(backward_jumps(&readings, 0.0).is_empty(), "served time went back");
    // Served minus host time: 0 before the window, -1 s after, falling at
    // 1/21 (20 served seconds in 21 real ones) in between, without a jump.
    let readings = prompt(&readings);
    let base = readings[0].offset();
    for pair in readings.windows(2) {
        let (fell, elapsed) = (pair[0].offset() - pair[1].offset(), pair[1].host - pair[0].host);
        assert!(fell > -0.005 && fell < elapsed / 21.0 + 0.005, "fell {fell} s in {elapsed} s");
    }
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
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ip = "127.0.0.1";
    let (p1, p2) = (free_udp_port_on(ip), free_udp_port_on(ip));
    let http = format!("{ip}:{}", free_tcp_port_on(ip));
    let _primary = serve(ip, p1, &["--leap-file", &file, "--clock-offset", &offset_to(40.0)]);
    let upstream = format!("{ip}:{p1}");
    let args = ["--upstream", &upstream, "--leap-smear", "20", "--min-poll", "0", "--max-poll", "1", "--http", &http];
    let smearing = serve(ip, p2, &args);
    // Synchronized, the leap learned from the upstream's announcement,
    // and never passed on.
    let learned = wait_for(Duration::from_secs(25), || {
        let system = status(&http)["system"].clone();
        (system["stratum"] == 2 && system["leap_second"]["pending"] == "insert").then_some(system)
    });
    let system = learned.unwrap_or_else(|| panic!("the leap was not learned: {}", status(&http)));
    assert_eq!(system["leap"], "none", "a smearing server announced: {system}");
    // Watch until the window (10.5 s after midnight) is over.
    let span = until_midnight(&system) + 13.0;
    let readings = watch_server(ip, p2, EVERY, Duration::from_secs_f64(span));
    assert!(readings.iter().all(|r| r.leap == LeapIndicator::NoWarning));
    assert!(backward_jumps(&readings, 0.0).is_empty(), "served time went back");
    let readings = prompt(&readings);
    for pair in readings.windows(2) {
        let (fell, elapsed) = (pair[0].offset() - pair[1].offset(), pair[1].host - pair[0].host);
        assert!(fell > -0.005 && fell < elapsed / 21.0 + 0.005, "fell {fell} s in {elapsed} s");
    }
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
