//! Least privilege: started as root (as CI runs), `ntpd-sim serve --user
//! nobody` binds, then runs as nobody with no supplementary groups, and
//! still serves; an unknown user stops it before it serves anything.

use std::process::Command;
use std::time::Duration;

use ntp_e2e::{bin, free_udp_port, require_root, udp_exchange, wait_for, Daemon, CLIENT_REQUEST};

fn query(port: u16) -> Option<usize> {
    udp_exchange("127.0.0.1", port, &CLIENT_REQUEST).map(|reply| reply.len())
}

fn status_line(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with(key)).unwrap_or_default().to_string()
}

#[test]
fn started_as_root_it_serves_as_nobody_after_binding() {
    require_root();
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::spawn(bin("ntpd-sim"), &["serve", "--listen", &listen, "--user", "nobody"]);
    assert_eq!(wait_for(Duration::from_secs(10), || query(port)), Some(48), "serves after dropping root");
    let uids = status_line(daemon.pid(), "Uid:");
    let ids: Vec<&str> = uids.split_whitespace().skip(1).collect();
    assert_eq!(ids, [nobody.as_str(); 4], "real, effective, saved and filesystem uid: {uids}");
    assert_eq!(status_line(daemon.pid(), "Groups:").split_whitespace().count(), 1, "no supplementary groups");
    assert_eq!(status_line(daemon.pid(), "CapEff:"), "CapEff:\t0000000000000000", "no capabilities left");
    let (status, output) = daemon.stop();
    assert!(status.success(), "{output}");
    assert!(output.contains("privileges dropped after binding"), "{output}");
}

#[test]
fn an_unknown_user_is_an_error_before_serving() {
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let output = Command::new(bin("ntpd-sim"))
        .args(["serve", "--listen", &listen, "--user", "no-such-user-here"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no user named `no-such-user-here`"), "{stderr}");
}

/// Port 123 itself, in a network namespace of the test's own (so nothing
/// on the host is in the way, and nothing outside can reach it): started
/// as root, it binds the privileged port on every address, becomes nobody,
/// and answers `ntp-query` run inside the same namespace.
#[test]
fn as_root_it_binds_port_123_then_serves_it_as_nobody() {
    require_root();
    let serve = format!("ip link set lo up && exec {} serve --port 123 --user nobody", bin("ntpd-sim").display());
    let daemon = Daemon::spawn("unshare", &["--net", "--", "sh", "-c", &serve]);
    // Until unshare(2) has run, /proc/PID/ns/net is still the host's.
    let namespace_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let own = wait_for(Duration::from_secs(10), || {
        namespace_of(&daemon.pid().to_string()).filter(|ns| Some(ns) != namespace_of("self").as_ref())
    });
    assert!(own.is_some(), "unshare --net did not take effect");
    let namespace = format!("--net=/proc/{}/ns/net", daemon.pid());
    let query = || {
        let output = Command::new("nsenter")
            .args([namespace.as_str(), "--"])
            .arg(bin("ntp-query"))
            .args(["127.0.0.1:123", "--json", "--samples", "1"])
            .output()
            .unwrap();
        output.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap())
    };
    let Some(reply) = wait_for(Duration::from_secs(10), query) else {
        panic!("no answer on port 123 in the namespace: {}", daemon.stop().1);
    };
    assert_eq!(reply["servers"][0]["stratum"], 1, "{reply}");
    let uid = status_line(daemon.pid(), "Uid:");
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    assert_eq!(uid.split_whitespace().nth(2), Some(String::from_utf8_lossy(&nobody.stdout).trim()), "{uid}");
    assert_eq!(status_line(daemon.pid(), "CapEff:"), "CapEff:\t0000000000000000", "no capabilities left");
    let (status, output) = daemon.stop();
    assert!(status.success(), "{output}");
    assert!(output.contains("privileges dropped after binding"), "{output}");
}
