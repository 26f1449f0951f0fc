//! Interleaved mode against real peers, judged by chronyd's measurements
//! log (it says, per exchange, whether it was interleaved): chronyd with
//! `xleave` gets interleaved answers from ntpd-sim; `ntp-query
//! --interleaved` and an ntpd-sim upstream with `xleave` get them from
//! ntpd-sim and from chronyd; against a chronyd that cannot interleave
//! (`noclientlog`) both fall back to basic mode and still synchronize.

use std::time::Duration;

use ntp_e2e::chain::ChronyClient;
use ntp_e2e::peers::ChronyServer;
use ntp_e2e::process::{ntp_query_entry, ntpd_sim_serve, ntpd_sim_status, wait_for};
use ntp_e2e::{free_tcp_port_on, free_udp_port};

#[test]
fn chronyd_with_xleave_gets_interleaved_answers_from_ntpd_sim() {
    let (_server, port) = ntpd_sim_serve("127.0.0.1", &["--no-control-socket"]);
    let chrony = ChronyClient::follow_with("127.0.0.1", port, "iburst xleave minpoll -3 maxpoll -3");
    let enough = wait_for(Duration::from_secs(30), || {
        let seen = chrony.measurements();
        (seen.len() >= 40).then_some(seen)
    });
    let seen = enough.unwrap_or_else(|| panic!("chronyd logged too few exchanges: {}", chrony.log()));
    let interleaved: Vec<_> = seen.iter().filter(|m| m.interleaved).collect();
    // The first exchange is basic by design; a loaded machine may let a
    // transmit timestamp come back after the next request: basic again.
    assert!(interleaved.len() * 10 >= seen.len() * 9, "{} of {} interleaved: {seen:?}", interleaved.len(), seen.len());
    assert!(interleaved.iter().all(|m| m.timestamps == "K K"), "chrony used kernel timestamps: {seen:?}");
    // Same host, same clock: the truth is zero. The figures are the
    // benchmark's (bench/accuracy.sh); this only says the times are sane.
    let mut offsets: Vec<f64> = interleaved.iter().map(|m| m.offset).collect();
    offsets.sort_by(f64::total_cmp);
    let median = offsets[offsets.len() / 2];
    assert!(median.abs() < 50e-6, "median interleaved offset {median}");
    assert!(interleaved.iter().all(|m| m.delay >= 0.0 && m.delay < 0.01), "{seen:?}");
}

#[test]
fn ntp_query_interleaves_with_ntpd_sim_and_chronyd_and_falls_back_where_it_cannot() {
    let (_server, ours) = ntpd_sim_serve("127.0.0.1", &["--no-control-socket"]);
    let theirs = free_udp_port();
    let _chrony = ChronyServer::start(theirs, Some(1));
    let basic_only = free_udp_port();
    let _no_log = ChronyServer::start_with(basic_only, |_| "local stratum 1\nnoclientlog\n".into());
    for (port, expected) in [(ours, "interleaved"), (theirs, "interleaved"), (basic_only, "basic")] {
        let target = format!("127.0.0.1:{port}");
        let entry = ntp_query_entry(&["--interleaved", "-n", "4", "-i", "0.05", &target]);
        assert!(entry["error"].is_null(), "{target}: {entry}");
        assert_eq!(entry["mode"], expected, "{target}: {entry}");
        let offset = entry["offset"].as_f64().expect("an offset");
        assert!(offset.abs() < 1e-3, "{target}: offset {offset}");
        // Without the flag, no mode is claimed.
        assert!(ntp_query_entry(&["-n", "1", &target])["mode"].is_null());
    }
}

#[test]
fn an_xleave_upstream_is_polled_interleaved_and_falls_back_by_itself() {
    let theirs = free_udp_port();
    let _chrony = ChronyServer::start(theirs, Some(1));
    let basic_only = free_udp_port();
    let _no_log = ChronyServer::start_with(basic_only, |_| "local stratum 1\nnoclientlog\n".into());
    for (port, expected) in [(theirs, "interleaved"), (basic_only, "basic")] {
        let http = format!("127.0.0.1:{}", free_tcp_port_on("127.0.0.1"));
        let upstream = format!("127.0.0.1:{port} xleave");
        let args =
            ["--upstream", &upstream, "--min-poll", "-2", "--max-poll", "-2", "--http", &http, "--no-control-socket"];
        let (daemon, _) = ntpd_sim_serve("127.0.0.1", &args);
        let status = wait_for(Duration::from_secs(30), || {
            let status = ntpd_sim_status(&http)?;
            let upstream = &status["upstreams"][0];
            let synced = status["system"]["stratum"] == 2 && upstream["reach"].as_u64()? >= 0o17;
            (synced && upstream["mode"] == expected).then_some(status)
        });
        assert!(
            status.is_some(),
            "not synchronized in {expected} mode: {:?}\n{}",
            ntpd_sim_status(&http),
            daemon.output()
        );
    }
}
