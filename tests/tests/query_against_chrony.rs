//! `ntp-query` against a real chronyd on loopback: a synchronized one gives
//! an offset near zero that agrees with chrony's own one-shot client, an
//! unsynchronized one is an error.

use ntp_e2e::free_udp_port;
use ntp_e2e::peers::{chronyd_query_offset, ChronyServer};

use ntp_e2e::ntp_query_json as ntp_query;

#[test]
fn synchronized_chrony_gives_an_offset_near_zero() {
    let port = free_udp_port();
    let _chrony = ChronyServer::start(port, Some(1));
    let target = format!("127.0.0.1:{port}");
    for version in ["3", "4"] {
        let (code, json) = ntp_query(&["--json", "-n", "4", "-i", "0.01", "--ntp-version", version, &target]);
        assert_eq!(code, 0, "{json}");
        let entry = &json["servers"][0];
        assert_eq!(entry["stratum"], 1);
        assert_eq!(entry["version"].to_string(), version);
        assert_eq!(entry["leap"], "none");
        let offset = entry["offset"].as_f64().unwrap();
        let delay = entry["delay"].as_f64().unwrap();
        // Both clocks are this host's: only the measurement's error remains.
        assert!(offset.abs() < 0.005, "offset {offset}");
        assert!(delay > 0.0 && delay < 0.05, "delay {delay}");
        assert!(entry["error"].is_null());
    }
    let chrony_offset = chronyd_query_offset(port).expect("chronyd -Q measured");
    let (_, json) = ntp_query(&["--json", "-n", "4", "-i", "0.01", &target]);
    let ours = json["servers"][0]["offset"].as_f64().unwrap();
    assert!((ours - chrony_offset).abs() < 0.005, "ours {ours}, chrony {chrony_offset}");
}

#[test]
fn unsynchronized_chrony_is_an_error() {
    let port = free_udp_port();
    let _chrony = ChronyServer::start(port, None);
    let (code, json) = ntp_query(&["--json", "-n", "2", "-i", "0.05", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "{json}");
    let entry = &json["servers"][0];
    assert!(entry["offset"].is_null());
    assert_eq!(entry["leap"], "unsynchronized");
    assert!(entry["error"].as_str().unwrap().contains("unsynchronized"), "{entry}");
}
