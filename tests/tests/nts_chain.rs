//! A chain of `ntpd-sim serve` processes authenticated with NTS end to end:
//! a primary NTS server, a stratum 2 polling it over `nts://` and serving
//! NTS itself, a stratum 3 polling that over `nts://`. Each on its own
//! loopback address; the clocks of tiers 2 and 3 start far off and must
//! converge to true time through authenticated exchanges only.

use std::time::Duration;

use ntp_e2e::nts::{free_tcp_port, wait_tcp_open, TestCa};
use ntp_e2e::{bin, free_udp_port_on, ntp_query_entry, ntpd_sim_status, wait_for, Daemon};
use serde_json::Value;

fn query(args: &[&str]) -> Value {
    ntp_query_entry(&[&["-n", "1", "-t", "1"], args].concat())
}

#[test]
fn a_three_tier_nts_chain_converges() {
    let ca = TestCa::new();
    let (cert, key, ca_file) = (ca.server_cert(), ca.server_key(), ca.ca_cert());
    let (cert, key, ca_file) = (cert.to_str().unwrap(), key.to_str().unwrap(), ca_file.to_str().unwrap());
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let ports: Vec<u16> = ips.iter().map(|ip| free_udp_port_on(ip)).collect();
    let ke_ports = [free_tcp_port(), free_tcp_port()];
    let clocks = [[].as_slice(), &["--clock-offset", "300"], &["--clock-offset", "-120"]];
    let mut daemons = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let listen = format!("{ip}:{}", ports[i]);
        let mut args: Vec<String> = ["serve", "--listen", &listen, "--log-level", "info"].map(String::from).to_vec();
        args.extend(clocks[i].iter().map(|s| s.to_string()));
        if i < 2 {
            let ke = format!("{ip}:{}", ke_ports[i]);
            args.extend(["--nts-cert", cert, "--nts-key", key, "--nts-listen", &ke].map(String::from));
        }
        if i > 0 {
            let upstream = format!("nts://{}:{}", ips[i - 1], ke_ports[i - 1]);
            args.extend(
                ["--upstream", &upstream, "--nts-ca-file", ca_file, "--min-poll", "0", "--max-poll", "2"]
                    .map(String::from),
            );
        }
        daemons.push(Daemon::spawn(bin("ntpd-sim"), &args.iter().map(String::as_str).collect::<Vec<_>>()));
        if i < 2 {
            wait_tcp_open(ip, ke_ports[i]);
        }
    }
    let bottom = format!("127.0.0.3:{}", ports[2]);
    let entry = wait_for(Duration::from_secs(60), || {
        let entry = query(&[&bottom]);
        let ok = entry["stratum"] == 3 && entry["offset"].as_f64().is_some_and(|o| o.abs() < 0.05);
        ok.then_some(entry)
    })
    .unwrap_or_else(|| panic!("tier 3 never converged: {}", query(&[&bottom])));
    assert!(entry["error"].is_null());
    // Tier 2 is itself an NTS server whose time is the primary's.
    let middle = query(&["--nts", "--ca-file", ca_file, &format!("127.0.0.2:{}", ke_ports[1])]);
    assert_eq!(middle["authenticated"], true, "{middle}");
    assert_eq!(middle["stratum"], 2, "{middle}");
    for daemon in daemons {
        let (status, output) = daemon.stop();
        assert_eq!(status.code(), Some(0), "{output}");
        assert!(!output.contains("panicked"), "{output}");
    }
}

#[test]
fn an_nts_upstream_rekeys_when_its_server_forgets_the_cookie_keys() {
    let ca = TestCa::new();
    let (cert, key, ca_file) = (ca.server_cert(), ca.server_key(), ca.ca_cert());
    let (cert, key, ca_file) = (cert.to_str().unwrap(), key.to_str().unwrap(), ca_file.to_str().unwrap());
    let (port, ke_port, http_port) = (free_udp_port_on("127.0.0.1"), free_tcp_port(), free_tcp_port());
    let listen = format!("127.0.0.1:{port}");
    let ke = format!("127.0.0.1:{ke_port}");
    let primary_args = ["serve", "--listen", &listen, "--nts-cert", cert, "--nts-key", key, "--nts-listen", &ke];
    let start_primary = || {
        let daemon = Daemon::spawn(bin("ntpd-sim"), &primary_args);
        wait_tcp_open("127.0.0.1", ke_port);
        daemon
    };
    let primary = start_primary();
    let (listen2, http) = (format!("127.0.0.2:{}", free_udp_port_on("127.0.0.2")), format!("127.0.0.1:{http_port}"));
    let upstream = format!("nts://localhost:{ke_port}");
    let _secondary = Daemon::spawn(
        bin("ntpd-sim"),
        &[
            "serve",
            "--listen",
            &listen2,
            "--upstream",
            &upstream,
            "--nts-ca-file",
            ca_file,
            "--min-poll",
            "0",
            "--max-poll",
            "0",
            "--http",
            &http,
        ],
    );
    let reach = |http: &str| ntpd_sim_status(http).and_then(|s| s["upstreams"][0]["reach"].as_u64());
    wait_for(Duration::from_secs(30), || reach(&http).filter(|r| r & 0x0f == 0x0f))
        .expect("the NTS upstream was reached");
    // A restart loses the master keys: the secondary's cookies now get NTS
    // NAKs, and only a new NTS-KE brings it back.
    let (status_code, _) = primary.stop();
    assert_eq!(status_code.code(), Some(0));
    let _primary = start_primary();
    std::thread::sleep(Duration::from_secs(3));
    let recovered = wait_for(Duration::from_secs(30), || reach(&http).filter(|r| r & 0x0f == 0x0f));
    assert!(recovered.is_some(), "upstream not reached again after the restart: reach {:?}", reach(&http));
}
