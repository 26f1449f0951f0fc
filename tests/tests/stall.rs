//! A server kept off its CPU (here by SIGSTOP, as a busy host or a paused
//! VM does for milliseconds at a time) loses no request that its receive
//! buffer can hold: they wait in the kernel, stamped on arrival, and are
//! answered when it runs again. `--receive-buffer` sets how many that is;
//! started as root (as CI runs) it may exceed `net.core.rmem_max`.

use std::process::{Command, Stdio};
use std::time::Duration;

use ntp_e2e::{bin, ntpd_sim_serve, require_root, udp_exchange, wait_for, CLIENT_REQUEST};

/// How long the server is stopped, and the request rate meanwhile: some
/// 10,000 requests queue, at about 830 bytes of buffer each on loopback.
const STALL: Duration = Duration::from_millis(500);
const RATE: &str = "20000";
/// Room for over 40,000 queued datagrams (the kernel doubles the figure).
const LARGE: &str = "16777216";
/// Room for about 2,500.
const SMALL: &str = "1048576";

fn serves(port: u16) -> Option<()> {
    udp_exchange("127.0.0.1", port, &CLIENT_REQUEST).map(drop)
}

/// Runs `ntp-loadgen` open loop for two seconds while the server is
/// stopped for [`STALL`] in the middle; returns (sent, valid, lost).
fn load_through_a_stall(receive_buffer: &str) -> (u64, u64, u64) {
    let (server, port) = ntpd_sim_serve("127.0.0.1", &["--receive-buffer", receive_buffer]);
    let listen = format!("127.0.0.1:{port}");
    assert!(wait_for(Duration::from_secs(10), || serves(port)).is_some(), "server up");
    let load = Command::new(bin("ntp-loadgen"))
        .args(["run", "--server", &listen, "--rate", RATE, "--duration", "2", "--warmup", "0"])
        .args(["--receive-buffer", LARGE])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ntp-loadgen");
    std::thread::sleep(Duration::from_millis(600));
    server.signal("STOP");
    std::thread::sleep(STALL);
    server.signal("CONT");
    let output = load.wait_with_output().expect("ntp-loadgen");
    let line = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "ntp-loadgen: {line}");
    // "...: 19998 responses/s, sent 40000, bad 0, valid 40000, invalid 0, lost 0, latency ..."
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert_eq!(field("invalid"), 0, "{line}");
    (field("sent"), field("valid"), field("lost"))
}

#[test]
fn a_stopped_server_answers_every_request_its_buffer_held() {
    require_root();
    let (sent, valid, lost) = load_through_a_stall(LARGE);
    assert!(sent > 20_000, "{sent} sent");
    assert_eq!((valid, lost), (sent, 0), "every request answered through a {STALL:?} stall");
}

#[test]
fn a_small_buffer_loses_what_does_not_fit() {
    let (sent, valid, lost) = load_through_a_stall(SMALL);
    assert!(valid < sent && lost > 0, "1 MiB cannot hold {STALL:?} of requests at {RATE}/s: {valid} of {sent}");
    assert!(valid > sent / 2, "the rest answered: {valid} of {sent}");
}
