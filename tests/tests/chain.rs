//! Stratum chains of real `ntpd-sim serve` processes on loopback, each on an
//! address of its own (127.0.0.x), as separate hosts would be (the same on
//! one address, told apart by ports, is `one_address.rs`). Judged from
//! outside with `ntp-query` (whose clock, the host's, is true time here) and
//! by a chronyd below the chain.

use std::time::{Duration, Instant};

use ntp_e2e::chain::{offset, query, refid_of, serve, stratum, wait_synced, ChronyClient};
use ntp_e2e::{free_udp_port_on, wait_for};

#[test]
fn four_tier_chain_converges_and_a_chronyd_below_it_is_stratum_5() {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let ports: Vec<u16> = ips.iter().map(|ip| free_udp_port_on(ip)).collect();
    let target = |i: usize| format!("{}:{}", ips[i], ports[i]);
    let poll = ["--min-poll", "0", "--max-poll", "2"];
    let tiers: [&[&str]; 4] = [
        &[],
        &["--clock-offset", "300", "--clock-drift-ppm", "50"],
        &["--clock-offset", "-120", "--clock-drift-ppm", "-30"],
        &["--clock-offset", "5"],
    ];
    let started = Instant::now();
    let mut daemons = Vec::new();
    for (i, clock) in tiers.iter().enumerate() {
        let upstream = if i > 0 { vec!["--upstream".to_string(), target(i - 1)] } else { Vec::new() };
        let mut args: Vec<&str> = clock.to_vec();
        args.extend(upstream.iter().map(String::as_str));
        if i > 0 {
            args.extend_from_slice(&poll);
        }
        daemons.push(serve(ips[i], ports[i], &args));
    }
    for (i, expected) in (1..=4).enumerate() {
        let entry = wait_synced(&target(i), expected, 1e-3, Duration::from_secs(60));
        eprintln!("stratum {expected} within 1 ms after {:.1} s: {entry}", started.elapsed().as_secs_f64());
    }
    assert!(started.elapsed() < Duration::from_secs(60), "the whole chain within 1 ms in under a minute");
    // Reference IDs name the upstream's address and port.
    for i in 1..4 {
        assert_eq!(query(&target(i), 1)["refid"], refid_of(&target(i - 1)), "refid of stratum {}", i + 1);
    }

    // Steady state: every tier stays close to true time. The bound leaves
    // room for a loaded CI machine; docs/performance.md has the figures.
    let mut worst = [0.0f64; 4];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        for (i, w) in worst.iter_mut().enumerate() {
            let entry = query(&target(i), 4);
            assert_eq!(stratum(&entry), Some(i as u64 + 1), "stratum of tier {i}: {entry}");
            *w = w.max(offset(&entry).expect("offset").abs());
        }
    }
    eprintln!("steady state, worst |offset| per stratum over 15 s: {worst:?}");
    assert!(worst.iter().all(|&w| w < 200e-6), "every tier within 200 µs: {worst:?}");

    // chronyd below stratum 4 synchronizes to it and calls itself stratum 5.
    let chronyd = ChronyClient::follow(ips[3], ports[3]);
    let seconds = chronyd.wait_stratum(5, Duration::from_secs(40));
    assert!(seconds.abs() < 1e-3, "chronyd's view of its offset from stratum 4: {seconds} s");
    drop(daemons);
}

#[test]
fn a_lying_stratum_1_among_three_is_voted_out() {
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
    let ports: Vec<u16> = ips.iter().map(|ip| free_udp_port_on(ip)).collect();
    let target = |i: usize| format!("{}:{}", ips[i], ports[i]);
    let _honest1 = serve(ips[0], ports[0], &["--refid", "GPS"]);
    let _liar = serve(ips[1], ports[1], &["--refid", "GPS", "--clock-offset", "10"]);
    let _honest2 = serve(ips[2], ports[2], &["--refid", "GPS"]);
    let upstreams: Vec<String> = (0..3).flat_map(|i| ["--upstream".to_string(), target(i)]).collect();
    let mut args: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--min-poll", "0", "--max-poll", "1", "--clock-offset", "3"]);
    let _downstream = serve(ips[3], ports[3], &args);
    let entry = wait_synced(&target(3), 2, 1e-3, Duration::from_secs(30));
    let refid = entry["refid"].as_str().unwrap().to_string();
    assert!(
        refid == refid_of(&target(0)) || refid == refid_of(&target(2)),
        "system peer is an honest server, not the liar: {refid}"
    );
    // It stays with the honest majority.
    std::thread::sleep(Duration::from_secs(3));
    let entry = query(&target(3), 4);
    assert!(offset(&entry).is_some_and(|o| o.abs() < 1e-3), "{entry}");
}

#[test]
fn losing_the_upstream_means_holdover_then_unsynchronized_then_recovery() {
    let (up_ip, down_ip) = ("127.0.0.21", "127.0.0.22");
    let (up_port, down_port) = (free_udp_port_on(up_ip), free_udp_port_on(down_ip));
    let upstream_target = format!("{up_ip}:{up_port}");
    let downstream = format!("{down_ip}:{down_port}");
    let upstream = serve(up_ip, up_port, &[]);
    let _down = serve(
        down_ip,
        down_port,
        &[
            "--upstream",
            &upstream_target,
            "--min-poll",
            "0",
            "--max-poll",
            "0",
            "--holdover",
            "6",
            "--clock-offset",
            "-2",
        ],
    );
    let synced = wait_synced(&downstream, 2, 1e-3, Duration::from_secs(30));
    let dispersion_synced = synced["root_dispersion"].as_f64().unwrap();

    let (status, _) = upstream.stop();
    assert!(status.success());
    // Within the holdover it keeps serving, still stratum 2, with a root
    // dispersion that grows with the time since its last update.
    std::thread::sleep(Duration::from_secs(3));
    let holding = query(&downstream, 1);
    assert_eq!(stratum(&holding), Some(2), "{holding}");
    let dispersion_holding = holding["root_dispersion"].as_f64().unwrap();
    assert!(dispersion_holding > dispersion_synced, "{dispersion_holding} > {dispersion_synced}");
    // After the holdover it says it is unsynchronized.
    let unsynced = wait_for(Duration::from_secs(15), || {
        let entry = query(&downstream, 1);
        (entry["leap"] == "unsynchronized").then_some(entry)
    })
    .expect("unsynchronized after the holdover");
    assert!(unsynced["error"].as_str().is_some_and(|e| e.contains("unsynchronized")), "{unsynced}");
    // The upstream comes back on the same address: the downstream recovers by itself.
    let _upstream = serve(up_ip, up_port, &[]);
    wait_synced(&downstream, 2, 1e-3, Duration::from_secs(30));
}
