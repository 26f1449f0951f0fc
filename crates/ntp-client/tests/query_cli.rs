//! `ntp-query`'s command line and output formats: usage errors exit 2 with
//! a message, the JSON has every documented key with the right type, and
//! the table shows what it says.

mod support;

use serde_json::Value;
use support::{ntp_query, silent_port, FakeServer};

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let cases: [(&[&str], &str); 9] = [
        (&[], "SERVER"),
        (&["--samples", "0", "localhost"], "--samples"),
        (&["--ntp-version", "5", "localhost"], "--ntp-version"),
        (&["--timeout", "soon", "localhost"], "not a number of seconds"),
        (&["--timeout", "0", "localhost"], "--timeout"),
        (&["--interval=-1", "localhost"], "out of range"),
        (&["[::1", "localhost"], "[IPv6-address]"),
        (&["localhost:99999"], "bad port"),
        (&["-4", "-6", "localhost"], "cannot be used with"),
    ];
    for (args, message) in cases {
        let run = ntp_query(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?} should say {message:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    let help = ntp_query(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--samples") && help.stdout.contains("Exit status"));
}

fn is_number_or_null(value: &Value, ok: bool) -> bool {
    if ok {
        value.is_number()
    } else {
        value.is_number() || value.is_null()
    }
}

#[test]
fn json_has_every_key_with_its_type() {
    let good = FakeServer::with_offset(0.25);
    let (_socket, silent) = silent_port();
    let run =
        ntp_query(&["--json", "-n", "2", "-i", "0.01", "-t", "0.5", &good.address.to_string(), &silent.to_string()]);
    assert_eq!(run.code, 1);
    let json = run.json();
    let object = json.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["agreement", "servers"]);
    assert!(json["agreement"].is_null(), "one usable server: no vote");
    let servers = json["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    let numbers = [
        "stratum",
        "version",
        "poll",
        "precision",
        "root_delay",
        "root_dispersion",
        "offset",
        "delay",
        "jitter",
        "root_distance",
    ];
    let strings = ["refid", "leap", "reference_time", "server_time"];
    for (entry, ok) in servers.iter().zip([true, false]) {
        let keys = entry.as_object().unwrap();
        assert_eq!(keys.len(), numbers.len() + strings.len() + 5, "{entry}");
        assert!(entry["server"].is_string() && entry["address"].is_string());
        assert!(entry["samples"].is_u64());
        assert!(entry["kiss"].is_null());
        for key in numbers {
            assert!(is_number_or_null(&entry[key], ok), "{key} in {entry}");
        }
        for key in strings {
            assert!(if ok { entry[key].is_string() } else { entry[key].is_null() }, "{key} in {entry}");
        }
        assert_eq!(entry["error"].is_null(), ok, "{entry}");
    }
    assert_eq!(servers[0]["leap"], "none");
    assert!((servers[0]["root_dispersion"].as_f64().unwrap() - 0.010).abs() < 1e-4);
    assert!((servers[0]["precision"].as_f64().unwrap() - 2f64.powi(-20)).abs() < 1e-12);
    assert!(servers[1]["error"].is_string());
    let time = |key: &str| chrono::DateTime::parse_from_rfc3339(servers[0][key].as_str().unwrap()).unwrap();
    let age = (time("server_time") - time("reference_time")).num_milliseconds();
    assert!((9_990..=10_010).contains(&age), "the fake server's clock was set 10 s before it answered: {age} ms");
}

#[test]
fn the_table_shows_each_address_and_its_offset() {
    let fake = FakeServer::with_offset(-2.0);
    let (_socket, silent) = silent_port();
    let run = ntp_query(&["-n", "1", "-t", "0.3", &fake.address.to_string(), &silent.to_string()]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("ADDRESS") && lines[0].contains("OFFSET"), "{}", run.stdout);
    let row = lines.iter().find(|l| l.starts_with(&fake.address.to_string())).unwrap();
    assert!(row.contains("-1.99") || row.contains("-2.00"), "{row}");
    assert!(run.stdout.contains(&format!("{silent}: no reply within 300ms")), "{}", run.stdout);
}

#[test]
fn a_server_without_an_address_of_the_family_is_a_server_error_not_a_usage_error() {
    // (Names that do not resolve are not tried: that would ask a DNS server off this host.)
    let run = ntp_query(&["--json", "-6", "127.0.0.1:123"]);
    assert_eq!(run.code, 1);
    let entry = &run.json()["servers"][0];
    assert!(entry["address"].is_null());
    assert_eq!(entry["error"], "127.0.0.1:123 has no address of the requested family");
}

#[test]
fn watch_prints_a_report_every_interval_until_sigterm_then_exits_0() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let good = FakeServer::with_offset(0.25);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ntp-query"))
        .args(["--watch", "0.2", "-n", "1", &good.address.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ntp-query --watch");
    let (lines, received) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|l| drop(lines.send(l))));
    let mut tables = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tables < 3 && Instant::now() < deadline {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(100)) {
            if line.starts_with(&good.address.to_string()) {
                // OFFSET is the only signed column: about +250.0ms.
                let offset = line.split_whitespace().find_map(|t| t.strip_prefix('+')?.strip_suffix("ms"));
                let offset: f64 = offset.and_then(|o| o.parse().ok()).unwrap_or_else(|| panic!("no offset: {line}"));
                assert!((245.0..255.0).contains(&offset), "the fake server is 250 ms ahead: {line}");
                tables += 1;
            }
        }
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(tables, 3, "three reports within 20 s");
    assert_eq!(status.code(), Some(0), "SIGTERM ends a watch cleanly");
}

#[test]
fn a_watch_whose_reader_goes_away_ends_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let good = FakeServer::with_offset(0.0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ntp-query"))
        .args(["--watch", "0.1", "-n", "1", &good.address.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ntp-query --watch");
    // Read the first report's opening, then hang up, as `| head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ntp-query kept running with no reader");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "a closed pipe is not an error to report: {stderr}");
}
