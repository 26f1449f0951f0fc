//! `ntpd-sim serve --nts-cert --nts-key` as a real process: chronyd as its
//! NTS client (chronyd prints an offset only when NTS authenticated), and
//! `ntp-query --nts`; a plain client is still served as before, and a
//! forged NTS request gets an NTS NAK.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use ntp_e2e::nts::{chronyd_nts_query_offset, free_tcp_port, wait_tcp_open, TestCa};
use ntp_e2e::peers::chronyd_query_offset;
use ntp_e2e::{bin, free_udp_port, ntp_query_json, Daemon};

const OFFSET: f64 = 2.5;

/// Starts an NTS server with the CA's certificate, its clock `OFFSET` ahead.
fn nts_server(ca: &TestCa, port: u16, ke_port: u16) -> Daemon {
    nts_server_with(ca, port, ke_port, &[])
}

/// [`nts_server`] with more flags.
fn nts_server_with(ca: &TestCa, port: u16, ke_port: u16, more: &[&str]) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    let ke_listen = format!("127.0.0.1:{ke_port}");
    let (cert, key) = (ca.server_cert(), ca.server_key());
    let daemon = Daemon::spawn(
        bin("ntpd-sim"),
        &[
            &[
                "serve",
                "--listen",
                &listen,
                "--clock-offset",
                &OFFSET.to_string(),
                "--nts-cert",
                cert.to_str().unwrap(),
                "--nts-key",
                key.to_str().unwrap(),
                "--nts-listen",
                &ke_listen,
            ],
            more,
        ]
        .concat(),
    );
    wait_tcp_open("127.0.0.1", ke_port);
    daemon
}

#[test]
fn nts_ke_sends_clients_to_the_advertised_port_of_a_relay() {
    let ca = TestCa::new();
    let (port, relayed, ke_port) = (free_udp_port(), free_udp_port(), free_tcp_port());
    let _daemon = nts_server_with(&ca, port, ke_port, &["--nts-ntp-port", &relayed.to_string()]);
    let listen = format!("127.0.0.1:{relayed}");
    let upstream = format!("127.0.0.1:{port}");
    let relay = Daemon::spawn(bin("ntp-relay"), &["--listen", &listen, "--upstream", &upstream]);
    assert!(relay.wait_for_line("relaying", Duration::from_secs(10)).is_some(), "{}", relay.output());
    let ke = format!("localhost:{ke_port}");
    let ca_file = ca.ca_cert();
    let (_, json) = ntp_query_json(&["--json", "--nts", "--ca-file", ca_file.to_str().unwrap(), "-n", "3", &ke]);
    let entry = &json["servers"][0];
    assert_eq!(entry["authenticated"], true, "{json}\n{}", relay.output());
    assert_eq!(entry["address"], listen, "NTP went where NTS-KE said: {json}");
}

#[test]
fn chronyd_is_an_authenticated_nts_client_of_ntpd_sim() {
    let ca = TestCa::new();
    let (port, ke_port) = (free_udp_port(), free_tcp_port());
    let daemon = nts_server(&ca, port, ke_port);
    let measured = chronyd_nts_query_offset(ke_port, port, &ca).expect("chronyd authenticated over NTS");
    assert!((measured - OFFSET).abs() < 0.1, "chronyd measured {measured}");
    // Plain NTP on the same socket is unchanged.
    let plain = chronyd_query_offset(port).expect("plain chronyd");
    assert!((plain - OFFSET).abs() < 0.1, "plain chronyd measured {plain}");
    let (status, output) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("serving NTS-KE"), "{output}");
}

#[test]
fn ntp_query_nts_authenticates_ntpd_sim_and_forgeries_get_a_nak() {
    let ca = TestCa::new();
    let (port, ke_port) = (free_udp_port(), free_tcp_port());
    let _daemon = nts_server(&ca, port, ke_port);
    let ke = format!("localhost:{ke_port}");
    let (_, json) = ntp_query_json(&[
        "--json",
        "--nts",
        "--ca-file",
        ca.ca_cert().to_str().unwrap(),
        "-n",
        "12",
        "-i",
        "0.02",
        &ke,
    ]);
    let entry = &json["servers"][0];
    assert_eq!(entry["authenticated"], true, "{json}");
    assert_eq!(entry["samples"], 12, "cookies were refilled: {json}");
    assert_eq!(entry["address"], format!("127.0.0.1:{port}"), "the Port record named the NTP socket");
    assert!((entry["offset"].as_f64().unwrap() - OFFSET).abs() < 0.1, "{json}");

    // A request with NTS fields and a cookie that is not the server's gets
    // an NTS NAK (stratum 0, NTSN) echoing the unique identifier, and no time.
    let mut request = vec![0x23u8];
    request.resize(48, 0);
    request[40..48].copy_from_slice(&7u64.to_be_bytes());
    let unique_id = [0xab; 32];
    for (field_type, value) in [(0x0104u16, &unique_id[..]), (0x0204, &[0x11; 104][..])] {
        request.extend_from_slice(&field_type.to_be_bytes());
        request.extend_from_slice(&u16::try_from(value.len() + 4).unwrap().to_be_bytes());
        request.extend_from_slice(value);
    }
    // Authenticator: nonce length 16, ciphertext length 16, zeros.
    request.extend_from_slice(&[0x04, 0x04, 0, 40, 0, 16, 0, 16]);
    request.extend_from_slice(&[0; 32]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    socket.send_to(&request, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let len = socket.recv(&mut buf).expect("an NTS NAK");
    assert_eq!(buf[1], 0, "stratum 0");
    assert_eq!(&buf[12..16], b"NTSN");
    assert_eq!(&buf[48..52], &[0x01, 0x04, 0, 36]);
    assert_eq!(&buf[52..84], &unique_id);
    assert_eq!(len, 84, "nothing but the unique identifier");
    assert_eq!(buf[32..40], 7u64.to_be_bytes(), "a kiss carries none of our time: T2 echoes the client");
}

/// Sends `request` over TLS 1.3 with ALPN ntske/1 (openssl s_client) and
/// returns what the NTS-KE server answered.
fn raw_ke(ca: &TestCa, ke_port: u16, request: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(ntp_e2e::peers::require("openssl"))
        .args(["s_client", "-quiet", "-tls1_3", "-alpn", "ntske/1", "-servername", "localhost", "-CAfile"])
        .arg(ca.ca_cert())
        .arg("-connect")
        .arg(format!("127.0.0.1:{ke_port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    child.stdin.take().unwrap().write_all(request).unwrap();
    let output = child.wait_with_output().unwrap();
    output.stdout
}

#[test]
fn bad_nts_ke_requests_get_the_rfc_error_records() {
    let ca = TestCa::new();
    let (port, ke_port) = (free_udp_port(), free_tcp_port());
    let daemon = nts_server(&ca, port, ke_port);
    // Next Protocol NTPv4, an unknown critical record 0x1234, End of Message:
    // Error 0 (unrecognized critical record), End of Message.
    let unknown = [0x80, 1, 0, 2, 0, 0, 0x92, 0x34, 0, 0, 0x80, 0, 0, 0];
    assert_eq!(raw_ke(&ca, ke_port, &unknown), [0x80, 2, 0, 2, 0, 0, 0x80, 0, 0, 0]);
    // No Next Protocol record: Error 1 (bad request).
    let bad = [0x80, 4, 0, 2, 0, 15, 0x80, 0, 0, 0];
    assert_eq!(raw_ke(&ca, ke_port, &bad), [0x80, 2, 0, 2, 0, 1, 0x80, 0, 0, 0]);
    // A good request: NTPv4, AES-SIV, the Port record, then cookies.
    let good = raw_ke(&ca, ke_port, &[0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15, 0x80, 0, 0, 0]);
    assert_eq!(good[..12], [0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15]);
    assert_eq!(good[12..16], [0x80, 7, 0, 2]);
    assert_eq!(good[16..18], port.to_be_bytes());
    assert_eq!(good[18..22], [0, 5, 0, 104], "a 104-byte cookie follows");
    // The daemon is still up and serving after all that.
    assert!(chronyd_nts_query_offset(ke_port, port, &ca).is_ok());
    let (status, output) = daemon.stop();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
