//! `ntp-query` against fake servers in the test: offsets, bogus replies,
//! kiss-o'-death codes, unsynchronized and silent servers, IPv6, and the
//! vote among several servers.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use ntp_proto::packet::{LeapIndicator, Stratum};
use ntp_proto::NtpTimestamp;
use support::{good_reply, kiss, ntp_query, silent_port, FakeServer};

fn server(run: &support::Run, index: usize) -> serde_json::Value {
    run.json()["servers"][index].clone()
}

#[test]
fn reports_a_server_300_seconds_ahead() {
    let fake = FakeServer::with_offset(300.0);
    let run = ntp_query(&["--json", "-n", "3", "-i", "0.05", &fake.address.to_string()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let entry = server(&run, 0);
    let offset = entry["offset"].as_f64().unwrap();
    assert!((offset - 300.0).abs() < 0.05, "offset {offset}");
    assert!(entry["delay"].as_f64().unwrap() < 0.1);
    assert_eq!(entry["stratum"], 2);
    assert_eq!(entry["refid"], "127.0.0.9");
    assert_eq!(entry["samples"], 3);
    assert!(entry["error"].is_null());
}

#[test]
fn a_reply_with_the_wrong_origin_is_not_believed() {
    let fake = FakeServer::start(
        "127.0.0.1:0",
        Box::new(|_, request| {
            let mut reply = good_reply(request, 0.0);
            reply.origin = NtpTimestamp::from_bits(request.transmit.to_bits() ^ 1);
            Some(reply)
        }),
    );
    let run = ntp_query(&["--json", "-n", "1", "-t", "0.5", &fake.address.to_string()]);
    assert_eq!(run.code, 1);
    let entry = server(&run, 0);
    assert!(entry["offset"].is_null());
    assert!(entry["error"].as_str().unwrap().contains("origin"), "{entry}");
}

#[test]
fn the_request_transmit_timestamp_is_a_nonce_not_the_clock() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let fake = FakeServer::start(
        "127.0.0.1:0",
        Box::new(move |_, request| {
            record.lock().unwrap().push(request.transmit);
            Some(good_reply(request, 0.0))
        }),
    );
    let run = ntp_query(&["-n", "2", "-i", "0.01", &fake.address.to_string()]);
    assert_eq!(run.code, 0);
    let now = NtpTimestamp::from_system_time(std::time::SystemTime::now());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1]);
    // Random 64-bit values: the chance of one being within a minute of now is 2^-26.
    assert!(seen.iter().all(|t| (*t - now).abs() > ntp_proto::NtpDuration::from_seconds(60)), "{seen:?}");
}

#[test]
fn kiss_codes_are_reported_with_their_meaning() {
    for (code, meaning) in [(b"RATE", "poll less often"), (b"DENY", "stop"), (b"RSTR", "stop")] {
        let fake = FakeServer::start("127.0.0.1:0", Box::new(move |_, request| Some(kiss(request, code))));
        let run = ntp_query(&["--json", "-n", "2", "-i", "0.05", &fake.address.to_string()]);
        assert_eq!(run.code, 1);
        let entry = server(&run, 0);
        let text = std::str::from_utf8(code).unwrap();
        assert_eq!(entry["kiss"], text);
        assert_eq!(entry["stratum"], 0);
        assert!(entry["offset"].is_null());
        let error = entry["error"].as_str().unwrap();
        assert!(error.contains(text) && error.contains(meaning), "{error}");
        let table = ntp_query(&["-n", "1", &fake.address.to_string()]);
        assert!(table.stdout.contains(meaning), "{}", table.stdout);
    }
}

#[test]
fn rate_after_good_answers_keeps_them_and_stops_the_burst() {
    let fake = FakeServer::start(
        "127.0.0.1:0",
        Box::new(|n, request| Some(if n == 0 { good_reply(request, 0.0) } else { kiss(request, b"RATE") })),
    );
    let run = ntp_query(&["--json", "-n", "4", "-i", "0.5", &fake.address.to_string()]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let entry = server(&run, 0);
    assert_eq!(entry["kiss"], "RATE");
    assert_eq!(entry["samples"], 1);
    assert!(entry["error"].is_null());
    // The whole burst would take 1.5 s; it stops at the kiss, after 0.5 s.
    assert!(run.elapsed < Duration::from_millis(1300), "the burst stopped at the kiss: {:?}", run.elapsed);
}

#[test]
fn an_unsynchronized_server_is_an_error() {
    let leap3 = FakeServer::start(
        "127.0.0.1:0",
        Box::new(|_, request| {
            Some(ntp_proto::packet::Header { leap: LeapIndicator::Unsynchronized, ..good_reply(request, 0.0) })
        }),
    );
    let stratum16 = FakeServer::start(
        "127.0.0.1:0",
        Box::new(|_, request| Some(ntp_proto::packet::Header { stratum: Stratum(16), ..good_reply(request, 0.0) })),
    );
    let run = ntp_query(&["--json", "-n", "1", &leap3.address.to_string(), &stratum16.address.to_string()]);
    assert_eq!(run.code, 1);
    for i in 0..2 {
        let entry = server(&run, i);
        assert!(entry["error"].as_str().unwrap().contains("unsynchronized"), "{entry}");
        assert!(entry["offset"].is_null() && entry["kiss"].is_null());
    }
}

#[test]
fn a_silent_server_times_out_without_delaying_the_others() {
    let good = FakeServer::with_offset(0.0);
    let (_a, silent_a) = silent_port();
    let (_b, silent_b) = silent_port();
    let args =
        ["--json", "-n", "1", "-t", "3", &silent_a.to_string(), &good.address.to_string(), &silent_b.to_string()];
    let run = ntp_query(&args);
    assert_eq!(run.code, 1);
    assert!(server(&run, 1)["error"].is_null());
    assert!(server(&run, 1)["delay"].as_f64().unwrap() < 0.5, "the good server was answered at once");
    for i in [0, 2] {
        assert!(server(&run, i)["error"].as_str().unwrap().contains("no reply within 3s"));
    }
    // Queried one after the other, the two silent ports alone would take 6 s.
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    assert!(run.elapsed >= Duration::from_secs(3));
}

#[test]
fn ipv6_loopback_with_a_port_in_brackets() {
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this host");
    }
    let fake = FakeServer::start("[::1]:0", Box::new(|_, request| Some(good_reply(request, 1.5))));
    let target = format!("[::1]:{}", fake.address.port());
    let run = ntp_query(&["--json", "-n", "1", &target]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let entry = server(&run, 0);
    assert_eq!(entry["address"], target);
    assert!((entry["offset"].as_f64().unwrap() - 1.5).abs() < 0.05);
    let only_v4 = ntp_query(&["--json", "-4", &target]);
    assert_eq!(only_v4.code, 1);
    assert!(server(&only_v4, 0)["error"].as_str().unwrap().contains("no address"));
}

#[test]
fn the_vote_names_the_falseticker() {
    let servers = [FakeServer::with_offset(0.0), FakeServer::with_offset(0.001), FakeServer::with_offset(10.0)];
    let addresses: Vec<String> = servers.iter().map(|s| s.address.to_string()).collect();
    let mut args = vec!["--json", "-n", "1"];
    args.extend(addresses.iter().map(String::as_str));
    let run = ntp_query(&args);
    assert_eq!(run.code, 0);
    let agreement = &run.json()["agreement"];
    assert_eq!(agreement["majority"], true);
    assert_eq!(agreement["falsetickers"], serde_json::json!([addresses[2]]));
    assert_eq!(agreement["truechimers"], serde_json::json!([addresses[0], addresses[1]]));
    let (low, high) = (agreement["low"].as_f64().unwrap(), agreement["high"].as_f64().unwrap());
    assert!(low <= 0.001 && (0.0..1.0).contains(&high), "[{low}, {high}]");

    args.retain(|a| *a != "--json");
    let table = ntp_query(&args);
    assert!(table.stdout.contains(&format!("falsetickers: {}", addresses[2])), "{}", table.stdout);
    assert!(table.stdout.contains("2 of 3 agree"), "{}", table.stdout);
}
