//! What the one-shot clients (ntpdig, sntp, ntplib) share: an ntpd-sim
//! whose clock is injected a known offset off the host's, so the truth
//! each must read is that offset, and what ntpd-sim sent, read by ntp-query.

use serde_json::Value;

use crate::bed::Bed;

/// The offset injected into ntpd-sim's clock (`--clock-offset`): what a
/// one-shot client on the same host must read.
pub const INJECTED: f64 = 0.25;

/// ntpd-sim on host A, its clock [`INJECTED`] ahead, refid XSIM; and what
/// it sends, as ntp-query on host A reads it.
pub fn server(bed: &Bed) -> (ntp_e2e::Daemon, Value) {
    let daemon = bed.serve(&["--refid", "XSIM", "--clock-offset", &INJECTED.to_string()]);
    let json = bed.query(&["-n", "1", &format!("{}:123", bed.a_ip())]).expect("ntp-query of ntpd-sim");
    let entry = json["servers"][0].clone();
    assert!(entry["error"].is_null() && entry["stratum"] == 1, "ntpd-sim did not answer ntp-query: {json}");
    (daemon, entry)
}
