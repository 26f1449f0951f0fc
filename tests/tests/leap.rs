//! Leap seconds announced by real processes: a primary server reading a
//! leap-seconds.list the test writes (with a valid SHA-1 line, made by
//! `LeapSecondsList::emit`), its virtual clock put on the day of a leap
//! with `--clock-offset`; a chain passing the announcement on; a single
//! announcer among three outvoted; a file deciding for a server with
//! upstreams; a bad file reported and not used. The leap itself, at
//! midnight, is `leap_midnight.rs`.

use std::time::Duration;

use ntp_e2e::chain::{query, serve, wait_synced};
use ntp_e2e::leap::{current_leap_file, leap_file, offset_to, LEAP_AT};
use ntp_e2e::{free_udp_port_on, wait_for, Daemon};

fn leap_of(target: &str) -> String {
    query(target, 1)["leap"].as_str().unwrap_or("no answer").to_string()
}

#[test]
fn a_primary_announces_a_leap_on_its_last_day_and_a_chain_passes_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ip = "127.0.0.1";
    let (p1, p2, p3) = (free_udp_port_on(ip), free_udp_port_on(ip), free_udp_port_on(ip));
    // An hour before the leap: the last day of the month, announced.
    let last_day = offset_to(3600.0);
    let _primary = serve(ip, p1, &["--leap-file", &file, "--clock-offset", &last_day]);
    let primary = format!("{ip}:{p1}");
    wait_for(Duration::from_secs(5), || (leap_of(&primary) == "insert").then_some(()))
        .unwrap_or_else(|| panic!("the primary does not announce the leap: {}", query(&primary, 1)));
    // Its client, started right, steps to the primary's day and passes the leap on.
    let _below = serve(ip, p2, &["--upstream", &primary, "--min-poll", "0", "--max-poll", "1"]);
    let below = format!("{ip}:{p2}");
    wait_for(Duration::from_secs(30), || {
        (leap_of(&below) == "insert" && query(&below, 1)["stratum"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("stratum 2 does not pass the leap on: {}", query(&below, 1)));
    // Two days before, the same file announces nothing.
    let early = offset_to(2.0 * 86_400.0);
    let _quiet = serve(ip, p3, &["--leap-file", &file, "--clock-offset", &early]);
    let quiet = format!("{ip}:{p3}");
    wait_synced(&quiet, 1, 1e9, Duration::from_secs(5));
    assert_eq!(leap_of(&quiet), "none", "not announced before the last day");
}

#[test]
fn one_announcer_among_three_upstreams_is_outvoted() {
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ips = ["127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74"];
    let ports: Vec<u16> = ips.iter().map(|ip| free_udp_port_on(ip)).collect();
    let target = |i: usize| format!("{}:{}", ips[i], ports[i]);
    let last_day = offset_to(3600.0);
    let _liar = serve(ips[0], ports[0], &["--refid", "GPS", "--leap-file", &file, "--clock-offset", &last_day]);
    let _honest: Vec<Daemon> =
        (1..3).map(|i| serve(ips[i], ports[i], &["--refid", "GPS", "--clock-offset", &last_day])).collect();
    let upstreams: Vec<String> = (0..3).flat_map(|i| ["--upstream".to_string(), target(i)]).collect();
    let mut args: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--min-poll", "0", "--max-poll", "1"]);
    let _below = serve(ips[3], ports[3], &args);
    wait_for(Duration::from_secs(5), || (leap_of(&target(0)) == "insert").then_some(()))
        .unwrap_or_else(|| panic!("the one with the file does not announce: {}", query(&target(0), 1)));
    // Synchronized to the three (its clock steps to their day), never announcing.
    let entry = wait_for(Duration::from_secs(30), || {
        let entry = query(&target(3), 1);
        (entry["stratum"] == 2).then_some(entry)
    })
    .unwrap_or_else(|| panic!("not synchronized to the three: {}", query(&target(3), 1)));
    assert_eq!(entry["leap"], "none", "{entry}");
    for _ in 0..10 {
        assert_eq!(leap_of(&target(3)), "none", "a single announcer among three inserted a second");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn with_upstreams_a_leap_file_decides_instead_of_their_majority() {
    let dir = tempfile::tempdir().unwrap();
    let file = current_leap_file(dir.path());
    let ip = "127.0.0.1";
    let (p1, p2) = (free_udp_port_on(ip), free_udp_port_on(ip));
    // The upstream has no file: on the last day it announces nothing.
    let last_day = offset_to(3600.0);
    let _upstream = serve(ip, p1, &["--clock-offset", &last_day]);
    let upstream = format!("{ip}:{p1}");
    let follower =
        serve(ip, p2, &["--upstream", &upstream, "--leap-file", &file, "--min-poll", "0", "--max-poll", "1"]);
    let below = format!("{ip}:{p2}");
    wait_for(Duration::from_secs(30), || {
        let entry = query(&below, 1);
        (entry["stratum"] == 2 && entry["leap"] == "insert").then_some(())
    })
    .unwrap_or_else(|| panic!("the file does not decide: {}", query(&below, 1)));
    assert_eq!(leap_of(&upstream), "none");
    let (_, log) = follower.stop();
    assert!(log.contains("leap file loaded") && log.contains("leap second scheduled"), "{log}");
}

#[test]
fn an_expired_or_corrupt_leap_file_is_reported_and_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.0.1";
    let last_day = offset_to(3600.0);
    // Expired: valid until a day before our (virtual) now.
    let expired = leap_file(dir.path(), LEAP_AT - 200 * 86_400, LEAP_AT - 86_400);
    // Corrupt: its expiry moved a day on by hand, so the #h line no longer matches.
    let expires = LEAP_AT + 150 * 86_400;
    let good = leap_file(dir.path(), LEAP_AT - 200 * 86_400, expires);
    let corrupt = dir.path().join("corrupt.list");
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(&corrupt, text.replacen(&format!("#@\t{expires}"), &format!("#@\t{}", expires + 86_400), 1))
        .unwrap();
    let corrupt = corrupt.to_string_lossy().into_owned();
    assert_ne!(std::fs::read_to_string(&corrupt).unwrap(), text, "the corruption changed the file");
    for (name, file) in [("expired", &expired), ("corrupt", &corrupt)] {
        let port = free_udp_port_on(ip);
        let daemon = serve(ip, port, &["--leap-file", file, "--clock-offset", &last_day]);
        let target = format!("{ip}:{port}");
        wait_synced(&target, 1, 1e9, Duration::from_secs(5));
        assert_eq!(leap_of(&target), "none", "{name} file: no leap announced");
        let (status, log) = daemon.stop();
        assert!(status.success());
        assert!(log.contains("leap file not used"), "{name} file not reported:\n{log}");
    }
    // Replaced on disk by a current one (as a tzdata update does), the file
    // is read again and taken by the running daemon.
    let port = free_udp_port_on(ip);
    let replaced = dir.path().join("replaced.list");
    std::fs::copy(&expired, &replaced).unwrap();
    let daemon = serve(ip, port, &["--leap-file", &replaced.to_string_lossy(), "--clock-offset", &last_day]);
    let target = format!("{ip}:{port}");
    wait_synced(&target, 1, 1e9, Duration::from_secs(5));
    assert_eq!(leap_of(&target), "none", "the expired file announces nothing");
    // A later modification time than the first read's, on any file system.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&replaced, std::fs::read(&good).unwrap()).unwrap();
    wait_for(Duration::from_secs(5), || (leap_of(&target) == "insert").then_some(()))
        .unwrap_or_else(|| panic!("the replaced file was not taken: {}", daemon.output()));
    let (_, log) = daemon.stop();
    assert!(log.contains("leap file reloaded"), "{log}");
    // A file that is not there at all stops the start, with its name.
    let missing = dir.path().join("missing.list");
    let output = std::process::Command::new(ntp_e2e::bin("ntpd-sim"))
        .args(["serve", "--listen", &format!("{ip}:{}", free_udp_port_on(ip)), "--leap-file"])
        .arg(&missing)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && said.contains("missing.list"), "{said}");
}
