//! `ntp-query --nts` against chronyd's NTS server on loopback, with a CA
//! made on the spot: authenticated, the NTP port taken from the key
//! exchange; refused without the CA.

use std::process::Command;

use ntp_e2e::nts::{free_tcp_port, ChronyNtsServer, TestCa};
use ntp_e2e::{bin, free_udp_port};

use ntp_e2e::ntp_query_json as ntp_query;

#[test]
fn ntp_query_nts_is_authenticated_by_chrony() {
    let ca = TestCa::new();
    let (port, ke_port) = (free_udp_port(), free_tcp_port());
    let _chrony = ChronyNtsServer::start(port, ke_port, &ca);
    let ca_file = ca.ca_cert();
    let ke = format!("localhost:{ke_port}");
    // Ten samples need more cookies than the eight of the key exchange:
    // the replies must have refilled the jar.
    let (code, json) =
        ntp_query(&["--json", "--nts", "--ca-file", ca_file.to_str().unwrap(), "-n", "10", "-i", "0.05", &ke]);
    assert_eq!(code, 0, "{json}");
    let entry = &json["servers"][0];
    assert_eq!(entry["authenticated"], true, "{json}");
    assert_eq!(entry["samples"], 10, "{json}");
    assert_eq!(entry["address"], format!("127.0.0.1:{port}"), "NTP port from chrony's Port record");
    assert_eq!(entry["stratum"], 1);
    assert!(entry["offset"].as_f64().unwrap().abs() < 0.005, "{json}");

    // The table says so too.
    let output = Command::new(bin("ntp-query"))
        .args(["--nts", "--ca-file", ca_file.to_str().unwrap(), "-n", "1", &ke])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("NTS authenticated"), "{table}");

    // Without the CA the certificate is not trusted: no answer at all.
    let (code, json) = ntp_query(&["--json", "--nts", "-n", "1", &ke]);
    assert_eq!(code, 1);
    let error = json["servers"][0]["error"].as_str().unwrap();
    assert!(error.contains("UnknownIssuer") || error.contains("certificate"), "{error}");
    assert!(json["servers"][0]["offset"].is_null());
}
