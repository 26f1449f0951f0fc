//! Pools, names that resolve late or change, and sources changed at
//! runtime, against a real DNS server: each test makes a network namespace
//! of its own (`ntp_e2e::netns`) with a dnsmasq on its loopback serving the
//! names from a hosts file the test rewrites, and runs every daemon inside
//! it, each upstream on an address of its own (127.0.0.11, .12, ...), port
//! 12300, so the daemon under test resolves through glibc exactly as on a
//! host. Polls are 1-2 s (`--min-poll 0 --max-poll 1`).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ntp_e2e::netns::Netns;
use ntp_e2e::{bin, Daemon};
use serde_json::Value;

const PORT: u16 = 12300;
const CLIENT: &str = "127.0.0.2:12300";
const HTTP: &str = "127.0.0.2:9123";
const POLLS: [&str; 4] = ["--min-poll", "0", "--max-poll", "1"];

fn at(last: u8) -> String {
    format!("127.0.0.{last}:{PORT}")
}

/// Primary servers on 127.0.0.`last` for each of `lasts`.
fn servers(ns: &Netns, lasts: impl IntoIterator<Item = u8>) -> Vec<(String, Daemon)> {
    lasts.into_iter().map(|last| (at(last), ns.serve(&at(last), &[]))).collect()
}

/// The daemon under test, with `args`, its HTTP on [`HTTP`].
fn client(ns: &Netns, args: &[&str]) -> Daemon {
    let mut all = vec!["--http", HTTP];
    all.extend_from_slice(&POLLS);
    all.extend_from_slice(args);
    ns.serve(CLIENT, &all)
}

fn upstream_addresses(status: &Value) -> Vec<String> {
    let rows = status["upstreams"].as_array().cloned().unwrap_or_default();
    rows.iter().filter_map(|u| u["address"].as_str().map(String::from)).collect()
}

fn synchronized(status: &Value) -> bool {
    status["system"]["synchronized"] == true && status["system"]["host_offset"].as_f64().is_some_and(|o| o.abs() < 0.01)
}

fn replaced(status: &Value, address: &str, reason: &str) -> bool {
    let rows = status["replacements"].as_array().cloned().unwrap_or_default();
    rows.iter().any(|r| r["address"] == address && r["reason"] == reason)
}

fn records<'a>(name: &'a str, lasts: &'a [u8]) -> Vec<(String, &'a str)> {
    lasts.iter().map(|last| (format!("127.0.0.{last}"), name)).collect()
}

fn set_hosts(ns: &Netns, records: &[(String, &str)]) {
    let pairs: Vec<(&str, &str)> = records.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    ns.set_hosts(&pairs);
}

/// A pool of six (and our own address, which must never be picked) with
/// max-sources 4 lends four, synchronizes, and when one of them dies, it is
/// replaced by one of the two spare addresses within a bounded time.
#[test]
fn a_pool_of_six_lends_four_and_replaces_one_that_dies() {
    let ns = Netns::new("pool");
    let mut hosts = records("pool.test", &[11, 12, 13, 14, 15, 16]);
    hosts.push(("127.0.0.2".into(), "pool.test"));
    set_hosts(&ns, &hosts);
    let _dns = ns.start_dns();
    let mut upstreams = servers(&ns, 11..=16);
    let daemon = client(&ns, &["--pool", "pool.test:12300", "--max-sources", "4", "--no-control-socket"]);
    let started = Instant::now();
    let four = ns.wait_status(HTTP, Duration::from_secs(60), |s| {
        let rows = s["upstreams"].as_array().cloned().unwrap_or_default();
        synchronized(s) && rows.len() == 4 && rows.iter().all(|u| u["pool"] == "pool.test:12300")
    });
    let four = four.unwrap_or_else(|| panic!("no four pool upstreams, synchronized:\n{}", daemon.output()));
    eprintln!("synchronized to four of the pool after {:.1} s", started.elapsed().as_secs_f64());
    let picked = upstream_addresses(&four);
    assert!(!picked.contains(&CLIENT.to_string()), "our own address is never polled: {picked:?}");

    let victim = picked[0].clone();
    upstreams.retain(|(address, _)| *address != victim); // dropped: killed by its pid
    let died = Instant::now();
    let after = ns.wait_status(HTTP, Duration::from_secs(60), |s| {
        let now = upstream_addresses(s);
        now.len() == 4 && !now.contains(&victim) && replaced(s, &victim, "unreachable")
    });
    let after = after.unwrap_or_else(|| panic!("{victim} not replaced:\n{}", daemon.output()));
    let took = died.elapsed().as_secs_f64();
    eprintln!("{victim} replaced {took:.1} s after it died: now {:?}", upstream_addresses(&after));
    assert!(took < 40.0, "replacement took {took:.1} s");
    assert!(
        ns.wait_status(HTTP, Duration::from_secs(30), synchronized).is_some(),
        "synchronized after the replacement"
    );
    let metrics = ns.metrics(HTTP);
    assert_eq!(metrics.matches("ntp_upstream_from_pool{").count(), 4, "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("ntp_source_replacements_total{") && l.contains("unreachable")),
        "{metrics}"
    );
    let text = ns.command(bin("ntpd-sim")).args(["status", "--http", HTTP]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("(pool)") && text.contains("REPLACED ADDRESS") && text.contains(&victim), "{text}");
    eprintln!("{text}");
    assert!(daemon.output().contains("pool member dropped"), "{}", daemon.output());
}

/// A member whose clock is 10 s wrong is voted a falseticker and, once it
/// has stayed one, replaced by a fresh address; our clock never follows it.
#[test]
fn a_falseticker_in_the_pool_is_replaced() {
    let ns = Netns::new("liar");
    set_hosts(&ns, &records("pool.test", &[11, 12, 13]));
    let dns = ns.start_dns();
    let _honest = servers(&ns, [11, 12, 13, 15]);
    let _liar = ns.serve(&at(14), &["--clock-offset", "10"]);
    let daemon = client(&ns, &["--pool", "pool.test:12300", "--max-sources", "4", "--no-control-socket"]);
    let three = ns.wait_status(HTTP, Duration::from_secs(60), |s| synchronized(s) && upstream_addresses(s).len() == 3);
    assert!(three.is_some(), "not synchronized to the three:\n{}", daemon.output());
    // The liar appears in DNS: the pool, one short, takes it.
    set_hosts(&ns, &records("pool.test", &[11, 12, 13, 14]));
    dns.signal("HUP");
    let liar = at(14);
    let taken = ns.wait_status(HTTP, Duration::from_secs(60), |s| upstream_addresses(s).contains(&liar));
    assert!(taken.is_some(), "the pool did not take {liar}:\n{}", daemon.output());
    // An honest fifth appears; the liar is replaced by it.
    set_hosts(&ns, &records("pool.test", &[11, 12, 13, 14, 15]));
    dns.signal("HUP");
    let taken_at = Instant::now();
    let after = ns.wait_status(HTTP, Duration::from_secs(60), |s| {
        let now = upstream_addresses(s);
        !now.contains(&liar) && now.contains(&at(15)) && replaced(s, &liar, "falseticker")
    });
    let after = after.unwrap_or_else(|| panic!("the liar was not replaced:\n{}", daemon.output()));
    eprintln!("falseticker replaced {:.1} s after it joined", taken_at.elapsed().as_secs_f64());
    assert!(synchronized(&after), "our clock never followed the liar: {}", after["system"]);
}

/// A member that answers with a DENY kiss-o'-death is dropped at once,
/// and not lent again: the next address DNS gives takes its place.
#[test]
fn a_member_that_refuses_us_is_dropped_at_once() {
    let ns = Netns::new("deny");
    set_hosts(&ns, &records("pool.test", &[11, 12]));
    let dns = ns.start_dns();
    let _honest = servers(&ns, [11, 12, 14]);
    // Our polls leave from loopback's own 127.0.0.1, not from the address
    // we serve on: that server refuses all of loopback.
    let config = ns.dir().join("deny.toml");
    std::fs::write(&config, "[access]\ndeny = [\"127.0.0.0/8\"]\ndeny-action = \"kiss\"\n").unwrap();
    let _refusing = ns.serve(&at(13), &["--config", &config.display().to_string()]);
    let daemon = client(&ns, &["--pool", "pool.test:12300", "--max-sources", "3", "--no-control-socket"]);
    let two = ns.wait_status(HTTP, Duration::from_secs(60), |s| synchronized(s) && upstream_addresses(s).len() == 2);
    assert!(two.is_some(), "not synchronized to the two:\n{}", daemon.output());
    set_hosts(&ns, &records("pool.test", &[11, 12, 13]));
    dns.signal("HUP");
    let refused = ns.wait_status(HTTP, Duration::from_secs(60), |s| replaced(s, &at(13), "refused-deny"));
    assert!(refused.is_some(), "{} was not dropped for its DENY:\n{}", at(13), daemon.output());
    set_hosts(&ns, &records("pool.test", &[11, 12, 13, 14]));
    dns.signal("HUP");
    let full = ns.wait_status(HTTP, Duration::from_secs(60), |s| {
        let now = upstream_addresses(s);
        now.len() == 3 && now.contains(&at(14)) && !now.contains(&at(13))
    });
    assert!(full.is_some(), "not refilled with {}:\n{}", at(14), daemon.output());
    let metrics = ns.metrics(HTTP);
    assert!(
        metrics.lines().any(|l| l.contains("source_replacements_total{") && l.contains("refused-deny")),
        "{metrics}"
    );
}

/// DNS is down when the daemon starts: it serves (unsynchronized), warns
/// once and retries quietly; once DNS is up it synchronizes within a minute.
#[test]
fn dns_down_at_start_then_up() {
    let ns = Netns::new("nodns");
    set_hosts(&ns, &records("pool.test", &[11, 12, 13]));
    let _upstreams = servers(&ns, 11..=13);
    let daemon = client(&ns, &["--pool", "pool.test:12300", "--no-control-socket"]);
    let failing = ns.wait_status(HTTP, Duration::from_secs(30), |s| s["sources"][0]["failures"].as_u64() >= Some(3));
    let failing = failing.unwrap_or_else(|| panic!("no failures recorded:\n{}", daemon.output()));
    assert_eq!(failing["system"]["synchronized"], false);
    assert!(failing["sources"][0]["error"].is_string(), "{}", failing["sources"]);
    // It answers NTP meanwhile, as unsynchronized.
    let query = ns.command(bin("ntp-query")).args(["--json", "-n", "1", "-t", "1", CLIENT]).output().unwrap();
    let query: Value = serde_json::from_slice(&query.stdout).unwrap_or_default();
    assert_eq!(query["servers"][0]["stratum"], 0, "{query}");
    let output = daemon.output();
    assert_eq!(output.matches("name does not resolve (yet)").count(), 1, "warned once:\n{output}");
    assert!(output.contains("name still does not resolve"), "then quietly, at debug:\n{output}");
    let _dns = ns.start_dns();
    let up = Instant::now();
    let synced = ns.wait_status(HTTP, Duration::from_secs(60), |s| synchronized(s) && upstream_addresses(s).len() == 3);
    assert!(synced.is_some(), "not synchronized a minute after DNS came up:\n{}", daemon.output());
    let took = up.elapsed().as_secs_f64();
    eprintln!("synchronized {took:.1} s after DNS came up");
    assert!(daemon.output().contains("name resolves now"));
}

/// A server named by a name that moves: when the old address goes silent,
/// the name is resolved again and the new address followed.
#[test]
fn a_server_follows_its_name_to_a_new_address() {
    let ns = Netns::new("moves");
    set_hosts(&ns, &records("time.test", &[21]));
    let dns = ns.start_dns();
    let mut upstreams = servers(&ns, [21, 22]);
    let daemon = client(&ns, &["--upstream", "time.test:12300", "--no-control-socket"]);
    let first = ns.wait_status(HTTP, Duration::from_secs(60), |s| synchronized(s) && upstream_addresses(s) == [at(21)]);
    assert!(first.is_some(), "not synchronized to {}:\n{}", at(21), daemon.output());
    set_hosts(&ns, &records("time.test", &[22]));
    dns.signal("HUP");
    upstreams.retain(|(address, _)| *address != at(21));
    let moved = Instant::now();
    let second = ns.wait_status(HTTP, Duration::from_secs(60), |s| {
        synchronized(s) && upstream_addresses(s) == [at(22)] && replaced(s, &at(21), "address-changed")
    });
    let second = second.unwrap_or_else(|| panic!("did not follow time.test:\n{}", daemon.output()));
    eprintln!("followed time.test to {} in {:.1} s", at(22), moved.elapsed().as_secs_f64());
    assert_eq!(second["upstreams"][0]["name"], "time.test:12300");
}

fn sources(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("ntpd-sim")).args(["sources", "--control-socket", socket]).args(args).output().unwrap()
}

/// `ntpd-sim sources add|remove|list` over the control socket, which only
/// its owner may use; what is added is not written to the config file.
#[test]
fn sources_are_added_and_removed_over_the_control_socket_by_its_owner_only() {
    let ns = Netns::new("control");
    set_hosts(&ns, &records("pool.test", &[11, 12]));
    let _dns = ns.start_dns();
    let _upstreams = servers(&ns, 11..=13);
    std::fs::set_permissions(ns.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = ns.dir().join("ntpd-sim.toml");
    let config_text = format!("[sync]\nupstreams = [\"{}\"]\n", at(13));
    std::fs::write(&config, &config_text).unwrap();
    let socket = ns.dir().join("control.sock").display().to_string();
    let config_arg = config.display().to_string();
    let daemon = client(&ns, &["--config", &config_arg, "--control-socket", &socket]);
    let synced =
        ns.wait_status(HTTP, Duration::from_secs(60), |s| synchronized(s) && upstream_addresses(s) == [at(13)]);
    assert!(synced.is_some(), "not synchronized:\n{}", daemon.output());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only");

    let added = sources(&socket, &["add", "pool.test:12300", "--pool"]);
    assert!(added.status.success(), "{added:?}");
    assert!(String::from_utf8_lossy(&added.stdout).contains("added pool pool.test:12300"), "{added:?}");
    let pooled = ns.wait_status(HTTP, Duration::from_secs(30), |s| upstream_addresses(s).len() == 3);
    let pooled = pooled.unwrap_or_else(|| panic!("the pool was not added:\n{}", daemon.output()));
    let rows = pooled["upstreams"].as_array().unwrap();
    assert_eq!(rows.iter().filter(|u| u["pool"] == "pool.test:12300" && u["origin"] == "runtime").count(), 2);
    let again = sources(&socket, &["add", &at(13)]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stdout).contains("a source already"));

    let removed = sources(&socket, &["remove", &at(13)]);
    assert!(removed.status.success(), "{removed:?}");
    let after = ns.wait_status(HTTP, Duration::from_secs(10), |s| {
        let now = upstream_addresses(s);
        now.len() == 2 && !now.contains(&at(13))
    });
    assert!(after.is_some(), "{} not removed:\n{}", at(13), daemon.output());
    let listed = sources(&socket, &["list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listed["sources"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["pool.test:12300"], "{listed}");
    let text = String::from_utf8_lossy(&sources(&socket, &["list"]).stdout).into_owned();
    assert!(text.contains("pool.test:12300") && text.contains("runtime") && text.contains("2/4"), "{text}");
    eprintln!("{text}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), config_text, "the config file is left alone");

    // Another user cannot even connect.
    let nobody = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin("ntpd-sim"))
        .args(["sources", "--control-socket", &socket, "remove", "pool.test:12300"])
        .output()
        .expect("setpriv");
    assert!(!nobody.status.success(), "{nobody:?}");
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("Permission denied"), "{nobody:?}");
    assert_eq!(upstream_addresses(&ns.status(HTTP).unwrap()).len(), 2, "nothing changed");
}
