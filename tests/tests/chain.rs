//! Stratum chains of real `ntpd-sim serve` processes on loopback, each on an
//! address of its own (127.0.0.x) so that reference IDs and loop detection
//! see separate hosts. Judged from outside with `ntp-query` (whose clock,
//! the host's, is true time here) and by a chronyd below the chain.

use std::process::Command;
use std::time::{Duration, Instant};

use ntp_e2e::peers::require;
use ntp_e2e::{bin, free_udp_port_on, ntp_query_entry, wait_for, Daemon};
use serde_json::Value;

/// `ntpd-sim serve` on `ip:port` with `args`.
fn serve(ip: &str, port: u16, args: &[&str]) -> Daemon {
    let listen = format!("{ip}:{port}");
    let mut all = vec!["serve", "--listen", &listen, "--log-level", "info"];
    all.extend_from_slice(args);
    Daemon::spawn(bin("ntpd-sim"), &all)
}

/// `ntp-query --json` of one server: its entry in `servers`.
fn query(target: &str, samples: u32) -> Value {
    ntp_query_entry(&["-n", &samples.to_string(), "-i", "0.05", "-t", "1", target])
}

fn offset(entry: &Value) -> Option<f64> {
    entry["offset"].as_f64()
}

fn stratum(entry: &Value) -> Option<u64> {
    entry["stratum"].as_u64()
}

/// Waits until `target` answers at `expected` stratum within `bound` of true time.
fn wait_synced(target: &str, expected: u64, bound: f64, timeout: Duration) -> Value {
    wait_for(timeout, || {
        let entry = query(target, 1);
        let ok = entry["error"].is_null()
            && stratum(&entry) == Some(expected)
            && offset(&entry).is_some_and(|o| o.abs() < bound);
        ok.then_some(entry)
    })
    .unwrap_or_else(|| panic!("{target} not at stratum {expected} within {bound} s: {}", query(target, 1)))
}

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
    // Reference IDs name the upstream's address.
    for i in 1..4 {
        assert_eq!(query(&target(i), 1)["refid"], ips[i - 1], "refid of stratum {}", i + 1);
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
    let chronyd = require("chronyd");
    let chronyc = require("chronyc");
    let dir = tempfile::tempdir().unwrap();
    let cmdport = free_udp_port_on("127.0.0.1");
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "server {} port {} iburst minpoll 0 maxpoll 2\nport 0\ncmdport {cmdport}\nbindcmdaddress 127.0.0.1\n\
             pidfile {}/chronyd.pid\ndriftfile {}/drift\n",
            ips[3],
            ports[3],
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let conf = conf.to_string_lossy().into_owned();
    let _chrony = Daemon::spawn(chronyd, &["-x", "-d", "-u", "root", "-f", &conf]);
    let tracking = wait_for(Duration::from_secs(40), || {
        let output =
            Command::new(&chronyc).args(["-h", "127.0.0.1", "-p", &cmdport.to_string(), "tracking"]).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (text.contains("Stratum         : 5") && text.contains("Leap status     : Normal")).then_some(text)
    })
    .expect("chronyd below stratum 4 reports stratum 5");
    eprintln!("{tracking}");
    let system_time = tracking.lines().find(|l| l.starts_with("System time")).expect("System time line");
    let seconds: f64 =
        system_time.split(':').nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap();
    assert!(seconds.abs() < 1e-3, "chronyd's view of its offset from stratum 4: {system_time}");
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
    assert!(refid == ips[0] || refid == ips[2], "system peer is an honest server, not the liar: {refid}");
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
