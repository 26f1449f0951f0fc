//! Operating a real daemon: a two-tier chain on 127.0.0.1 and 127.0.0.2 with
//! `--http` and `--stats-dir`; `/metrics` scraped and parsed while queries
//! and bad packets arrive, `/status` and `ntpd-sim status` naming the system
//! peer, the statistics plotted, and `validate` catching a typo.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;

use ntp_e2e::chain::refid_of;
use ntp_e2e::nts::free_tcp_port_on;
use ntp_e2e::{bin, free_udp_port_on, ntpd_sim_status, wait_for, Daemon};
use serde_json::Value;

/// A plain HTTP/1.1 GET, the way any scraper does it; the body on 200.
fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// `/metrics` parsed: `name{labels}` to value.
fn scrape(address: &str) -> HashMap<String, f64> {
    let text = http_get(address, "/metrics").unwrap_or_else(|| panic!("GET {address}/metrics"));
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF: {text}");
    let mut metrics = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("metric line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("value of {line}: {e}"));
        metrics.insert(name.to_string(), value);
    }
    metrics
}

fn metric(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    *metrics.get(name).unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
}

fn ntpd_sim(args: &[&str]) -> Output {
    Command::new(bin("ntpd-sim")).args(args).output().expect("run ntpd-sim")
}

/// A 48-byte NTPv4 packet of `mode` with a nonzero transmit timestamp.
fn packet(mode: u8) -> [u8; 48] {
    let mut bytes = [0u8; 48];
    bytes[0] = (4 << 3) | mode;
    bytes[40..48].copy_from_slice(&0xE000_0000_1234_5678u64.to_be_bytes());
    bytes
}

#[test]
fn status_metrics_and_statistics_of_a_chain() {
    let (p1, p2) = (free_udp_port_on("127.0.0.1"), free_udp_port_on("127.0.0.2"));
    let (h1, h2) = (
        format!("127.0.0.1:{}", free_tcp_port_on("127.0.0.1")),
        format!("127.0.0.2:{}", free_tcp_port_on("127.0.0.2")),
    );
    let upstream = format!("127.0.0.1:{p1}");
    let stats = tempfile::tempdir().expect("temp dir");
    let stats_dir = stats.path().to_str().expect("utf-8 path");
    let _primary = Daemon::spawn(bin("ntpd-sim"), &["serve", "--listen", &upstream, "--http", &h1]);
    let downstream = Daemon::spawn(
        bin("ntpd-sim"),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.2:{p2}"),
            "--upstream",
            &upstream,
            "--min-poll",
            "0",
            "--max-poll",
            "1",
            "--clock-offset",
            "2",
            "--clock-drift-ppm",
            "20",
            "--http",
            &h2,
            "--stats-dir",
            stats_dir,
        ],
    );

    // /status, through `ntpd-sim status --json`: synchronized to the primary.
    let status = wait_for(Duration::from_secs(30), || {
        let status = ntpd_sim_status(&h2)?;
        let synced = status["system"]["synchronized"] == true && status["upstreams"][0]["state"] == "system-peer";
        synced.then_some(status)
    })
    .unwrap_or_else(|| panic!("downstream never synchronized: {:?}", ntpd_sim_status(&h2)));
    assert_eq!(status["system"]["stratum"], 2);
    assert_eq!(status["system"]["reference_id"], refid_of(&upstream));
    assert_eq!(status["system"]["system_peer"], upstream.as_str());
    assert_eq!(status["upstreams"][0]["stratum"], 1);
    assert_eq!(status["upstreams"][0]["reach"].as_u64().map(|r| r & 1), Some(1));
    let raw = http_get(&h2, "/status").expect("GET /status");
    assert_eq!(serde_json::from_str::<Value>(&raw).expect("JSON")["system"]["stratum"], 2);

    // The same as tables.
    let text = String::from_utf8(ntpd_sim(&["status", "--http", &h2]).stdout).expect("utf-8");
    assert!(text.contains("Synchronized      : yes") && text.contains("Stratum           : 2"), "{text}");
    let row = text
        .lines()
        .skip_while(|l| !l.contains("UPSTREAM"))
        .find(|l| l.contains(&upstream))
        .unwrap_or_else(|| panic!("no upstream row: {text}"));
    assert!(row.starts_with('*') && row.ends_with("system peer"), "{row}");

    // The downstream's metrics: clock and upstream gauges.
    let m = scrape(&h2);
    assert_eq!(metric(&m, "ntp_clock_synchronized"), 1.0);
    assert_eq!(metric(&m, "ntp_clock_stratum"), 2.0);
    let label = format!("{{upstream=\"{upstream}\"}}");
    assert_eq!(metric(&m, &format!("ntp_upstream_system_peer{label}")), 1.0);
    assert_eq!(metric(&m, &format!("ntp_upstream_reachable{label}")), 1.0);
    assert_eq!(metric(&m, &format!("ntp_upstream_stratum{label}")), 1.0);
    assert!(metric(&m, &format!("ntp_upstream_delay_seconds{label}")) > 0.0);
    assert!(metric(&m, "ntp_clock_frequency_ppm").is_finite());

    // The primary's counters move with queries and bad packets.
    let before = scrape(&h1);
    let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    client.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    for _ in 0..5 {
        client.send_to(&packet(3), &upstream).expect("send request");
        let mut reply = [0u8; 128];
        let (n, _) = client.recv_from(&mut reply).expect("a reply");
        assert_eq!((n, reply[0] & 7), (48, 4), "a server reply");
    }
    for short in [&[0x23u8][..], &[0u8; 20][..], &[0x23; 47][..]] {
        client.send_to(short, &upstream).expect("send short datagram");
    }
    for _ in 0..2 {
        client.send_to(&packet(4), &upstream).expect("send server-mode packet");
    }
    let delta = |after: &HashMap<String, f64>, name: &str| metric(after, name) - metric(&before, name);
    let after = wait_for(Duration::from_secs(5), || {
        let after = scrape(&h1);
        (delta(&after, "ntp_requests_dropped_total{reason=\"wrong_mode\"}") >= 2.0).then_some(after)
    })
    .expect("the wrong-mode drops are counted");
    assert_eq!(delta(&after, "ntp_requests_dropped_total{reason=\"malformed\"}"), 3.0);
    assert_eq!(delta(&after, "ntp_requests_dropped_total{reason=\"wrong_mode\"}"), 2.0);
    assert!(delta(&after, "ntp_requests_answered_total") >= 5.0);
    assert!(delta(&after, "ntp_requests_received_total") >= 10.0);
    assert_eq!(metric(&after, "ntp_kiss_of_death_sent_total{code=\"RATE\"}"), 0.0);
    assert_eq!(metric(&after, "ntp_clock_stratum"), 1.0);

    // Statistics: let the drift be learnt, stop, plot.
    std::thread::sleep(Duration::from_secs(6));
    let (exit, log) = downstream.stop();
    assert!(exit.success(), "{log}");
    let loopstats = std::fs::read_to_string(stats.path().join("loopstats")).expect("loopstats");
    let peerstats = std::fs::read_to_string(stats.path().join("peerstats")).expect("peerstats");
    let data = |text: &str, fields: usize| {
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.iter().all(|l| l.split_whitespace().count() == fields), "{text}");
        lines.len()
    };
    assert!(data(&loopstats, 8) >= 5, "{loopstats}");
    assert!(data(&peerstats, 9) >= 5, "{peerstats}");
    assert!(loopstats.contains(" step") && peerstats.contains(&upstream));
    // The last update's frequency correction cancels the 20 ppm drift.
    let last = loopstats.lines().last().expect("a line");
    let frequency: f64 = last.split_whitespace().nth(2).and_then(|f| f.parse().ok()).expect("frequency field");
    assert!((frequency + 20.0).abs() < 10.0, "{last}");

    for name in ["report.svg", "report.html"] {
        let out = stats.path().join(name);
        let output = ntpd_sim(&["plot", "--stats-dir", stats_dir, "--out", out.to_str().expect("path")]);
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && said.contains("converged:"), "{said}");
        let document = std::fs::read_to_string(&out).expect("plot written");
        for series in ["clock", upstream.as_str(), "offset", "delay", "jitter", "frequency"] {
            assert!(document.contains(series), "{name} lacks {series}");
        }
        assert!(document.matches("<polyline").count() >= 6, "{name}: a line per series");
    }
    // The SVG is well-formed XML.
    let svg = stats.path().join("report.svg");
    let parsed = Command::new("/usr/bin/python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; print(E.parse(sys.argv[1]).getroot().tag)"])
        .arg(&svg)
        .output()
        .expect("run python3");
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "{http://www.w3.org/2000/svg}svg");
}

#[test]
fn validate_names_every_bad_key_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ntpd-sim.toml");
    std::fs::write(&path, "[server]\nstratun = 2\n\n[sync]\nholdover = -5\n").expect("write config");
    let output = ntpd_sim(&["validate", "--config", path.to_str().expect("path")]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("line 2: server.stratun: unknown field `stratun`"), "{text}");
    assert!(text.contains("line 5: sync.holdover:"), "{text}");
    let good = ntpd_sim(&["validate", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/../config/ntpd-sim.toml")]);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
}

#[test]
fn help_completions_and_man_page_are_complete() {
    let help = String::from_utf8(ntpd_sim(&["serve", "--help"]).stdout).expect("utf-8");
    for flag in ["--http", "--stats-dir", "--upstream", "--config"] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
    let bash = String::from_utf8(ntpd_sim(&["completions", "bash"]).stdout).expect("utf-8");
    for word in ["validate", "status", "plot", "--stats-dir"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let man = String::from_utf8(ntpd_sim(&["man"]).stdout).expect("utf-8");
    assert!(man.starts_with(".ie") && man.contains(".TH ntpd-sim 1") && man.contains("validate"), "{man}");
}
