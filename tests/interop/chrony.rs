//! chrony (Debian's `chrony`): chronyd as ntpd-sim's client and as its
//! server, plain and NTS. chronyd always runs with `-x`: it never adjusts
//! a clock, but tracks offset and frequency as if it did, and `chronyc`
//! reads what it measured at nanosecond resolution.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ntp_e2e::netns::Netns;
use ntp_e2e::peers::{clock_wrong_by, require};
use ntp_e2e::process::wait_for;
use ntp_e2e::Daemon;
use serde_json::Value;

use crate::bed::{follow, nts_query_relayed, package_version, query_peer, relayed, Bed, KE_PORT, NAMES};
use crate::report::{ensure, micros, works, Auth, Direction, Outcome, Row};

pub const NOTES: &str = "chronyd runs with `-x` (it never adjusts a clock, and tracks offset and frequency as if \
it did), as root in the test's network namespace, with a command socket in its own directory; `chronyc ntpdata` \
gives what it read of the server (stratum, reference ID, leap, root delay and dispersion, whether NTS \
authenticated the reply) and its measurements log the offset of each exchange at nanosecond resolution. As a \
server it is `local stratum 1` (and `ntsservercert` for NTS). The tampered case is `chronyd -Q` (it sets nothing) \
through the tampering relay: it must find no usable reply in 10 s.";

/// The bound on chronyd's offset from ntpd-sim across the bed's veth
/// link, the same host's clock on both sides: chrony reads loopback to
/// well under a microsecond (docs/interleaved.md); a veth hop, the debug
/// build and the other pairs running at once leave tens.
const BOUND: f64 = 100e-6;

pub fn pairs() -> Vec<Row> {
    let version = package_version("chrony");
    let row =
        |program: &str, direction, auth, checked| Row::checked("chrony", program, &version, direction, auth, checked);
    vec![
        row("chronyd -x", Direction::PeerClient, Auth::Plain, chronyd_follows(false)),
        row("chronyd -x", Direction::PeerClient, Auth::Nts, chronyd_follows(true)),
        row("chronyd -x", Direction::PeerServer, Auth::Plain, chronyd_serves(false)),
        row("chronyd -x", Direction::PeerServer, Auth::Nts, chronyd_serves(true)),
    ]
}

/// chronyd following ntpd-sim (with NTS, through the faithful relay).
fn chronyd_follows(nts: bool) -> Result<Outcome, String> {
    let bed = Bed::new(if nts { "chrn" } else { "chrp" });
    let server = bed.serve(&["--refid", "XSIM"]);
    let target = if nts { NAMES[0].to_string() } else { bed.a_ip() };
    let nts_option = if nts { "nts" } else { "" };
    let chronyd = Chronyd::start(
        &bed.b,
        &format!(
            "server {target} iburst minpoll 0 maxpoll 2 {nts_option}\nntstrustedcerts {}\n",
            bed.ca.ca_cert().display()
        ),
    );
    chronyd.wait_synchronized(2, Duration::from_secs(40)).map_err(|e| format!("{e}\n{}", server.output()))?;
    // A few more exchanges, then the offsets of the last ones.
    std::thread::sleep(Duration::from_secs(6));
    let offset = chronyd.median_offset(5)?;
    let advertised = bed.query(&["-n", "1", &format!("{}:123", bed.a_ip())])?;
    let data = chronyd.ntpdata(&bed.a_ip())?;
    let shows = shown_matches(&data, &advertised["servers"][0])?;
    ensure(offset.abs() < BOUND, || format!("chronyd's offset {} is beyond {}", micros(offset), micros(BOUND)))?;
    if nts {
        ensure(data.field("Authenticated") == Some("Yes"), || format!("chronyd did not authenticate: {data:?}"))?;
        relayed(&bed, &bed.a_ip(), |tamper| {
            chronyd_query(&bed.b, &format!("server {} iburst nts maxsamples 2", Bed::relay_name(tamper)), &bed)
        })?;
    }
    let auth = if nts { "; Authenticated: Yes; tampered replies refused" } else { "" };
    Ok(works(
        format!("offset {} (median of 5, chronyd's measurements log)", micros(offset)),
        crate::report::bound(BOUND, "same clock; veth hop"),
        format!("{shows}{auth}"),
    ))
}

/// chronyd as a stratum 1 server on host B: ntp-query reads it, and an
/// ntpd-sim follows it and serves as stratum 2.
fn chronyd_serves(nts: bool) -> Result<Outcome, String> {
    let bed = Bed::new(if nts { "chsn" } else { "chsp" });
    let b = bed.b_ip();
    let nts_lines = if nts {
        format!(
            "ntsport {KE_PORT}\nntsservercert {}\nntsserverkey {}\n",
            bed.ca.server_cert().display(),
            bed.ca.server_key().display()
        )
    } else {
        String::new()
    };
    let _chronyd =
        Chronyd::start(&bed.b, &format!("local stratum 1\nport 123\nbindaddress {b}\nallow all\n{nts_lines}"));
    let (target, entry) = query_peer(&bed, nts, 1).map_err(|e| format!("chronyd: {e}"))?;
    let offset = entry["offset"].as_f64().unwrap_or(f64::NAN);
    ensure(offset.abs() < BOUND, || format!("ntp-query's offset {} beyond {}", micros(offset), micros(BOUND)))?;
    // chronyd's `local` reference sends 127.127.1.1 (7F7F0101) as its code.
    ensure(entry["refid"] == "127.127.1.1", || {
        format!("refid {} where chronyd's local sends 127.127.1.1", entry["refid"])
    })?;
    // ntpd-sim's upstream side: synchronized to chronyd, serving stratum 2.
    let upstream = if nts { format!("nts://{target}") } else { target.clone() };
    let (follower_offset, _follower) = follow(&bed, &format!("{}:12300", bed.a_ip()), &upstream, (0, 1), 2)?;
    ensure(follower_offset.abs() < BOUND, || format!("ntpd-sim's offset of chronyd {}", micros(follower_offset)))?;
    let mut auth = String::new();
    if nts {
        auth = format!("; tampered replies refused ({})", nts_query_relayed(&bed, &b)?);
    }
    Ok(works(
        format!("ntp-query offset {}; ntpd-sim upstream offset {}", micros(offset), micros(follower_offset)),
        crate::report::bound(BOUND, "same clock; veth hop"),
        format!(
            "stratum 1, refid 127.127.1.1 (chronyd's local), leap {}, root distance {:.1} µs; ntpd-sim synchronized, serving stratum 2{auth}",
            entry["leap"].as_str().unwrap_or("?"),
            crate::report::sent_distance(&entry) * 1e6
        ),
    ))
}

/// What chronyd's `ntpdata` says, field by field.
#[derive(Debug)]
struct NtpData(String);

impl NtpData {
    fn field(&self, name: &str) -> Option<&str> {
        self.0.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim())
    }

    fn seconds(&self, name: &str) -> Option<f64> {
        self.field(name)?.split_whitespace().next()?.parse().ok()
    }
}

/// Checks that what chronyd read of the server is what ntp-query read
/// (`entry`), and says it in a line.
fn shown_matches(data: &NtpData, entry: &Value) -> Result<String, String> {
    let stratum = data.field("Stratum").and_then(|s| s.parse::<u64>().ok());
    ensure(stratum == entry["stratum"].as_u64(), || {
        format!("stratum {stratum:?}, ntpd-sim sent {}", entry["stratum"])
    })?;
    let refid = data.field("Reference ID").unwrap_or_default();
    let sent = entry["refid"].as_str().unwrap_or_default();
    let hex: String = crate::report::refid_hex(sent);
    ensure(!hex.is_empty() && refid.starts_with(&hex), || {
        format!("reference ID {refid}, ntpd-sim sent {sent} ({hex})")
    })?;
    let leap = data.field("Leap status").unwrap_or_default();
    ensure(leap == "Normal" && entry["leap"] == "none", || format!("leap {leap}, ntpd-sim sent {}", entry["leap"]))?;
    let (delay, dispersion) = (data.seconds("Root delay"), data.seconds("Root dispersion"));
    let sent_delay = entry["root_delay"].as_f64().unwrap_or(f64::NAN);
    let sent_dispersion = entry["root_dispersion"].as_f64().unwrap_or(f64::NAN);
    let band = crate::report::DISPERSION_BAND;
    let close = |a: Option<f64>, b: f64, within: f64| a.is_some_and(|a| (a - b).abs() <= within);
    ensure(close(delay, sent_delay, 1e-6) && close(dispersion, sent_dispersion, band), || {
        format!("root delay/dispersion {delay:?}/{dispersion:?}, ntpd-sim sent {sent_delay}/{sent_dispersion}")
    })?;
    let distance = delay.unwrap_or(0.0) / 2.0 + dispersion.unwrap_or(0.0);
    Ok(format!("stratum {}, refid {sent}, leap normal, root distance {:.1} µs", entry["stratum"], distance * 1e6))
}

/// A chronyd -x on a host of the bed, its files in a directory of its own.
pub struct Chronyd {
    _daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Chronyd {
    /// Starts `chronyd -x -d` on `ns` with `config` and a command socket,
    /// a measurements log and no command port.
    pub fn start(ns: &Netns, config: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        // chronyd disables a command socket in a directory others can enter.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let at = |name: &str| dir.path().join(name).display().to_string();
        let text = format!(
            "{config}\ncmdport 0\nbindcmdaddress {}\npidfile {}\ndriftfile {}\nntsdumpdir {}\nlogdir {}\n\
             log measurements\n",
            at("chronyd.sock"),
            at("chronyd.pid"),
            at("drift"),
            dir.path().display(),
            dir.path().display()
        );
        let conf = at("chrony.conf");
        std::fs::write(&conf, text).expect("write chrony.conf");
        let daemon = ns.spawn(require("chronyd"), &["-x", "-d", "-u", "root", "-f", &conf]);
        Self { _daemon: daemon, dir }
    }

    fn chronyc(&self, args: &[&str]) -> String {
        let socket = self.dir.path().join("chronyd.sock");
        let output = Command::new(require("chronyc")).arg("-h").arg(&socket).args(args).output();
        output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Waits until `chronyc tracking` says stratum `stratum`, leap normal.
    fn wait_synchronized(&self, stratum: u8, timeout: Duration) -> Result<(), String> {
        let wanted = format!("Stratum         : {stratum}\n");
        wait_for(timeout, || {
            let text = self.chronyc(&["tracking"]);
            (text.contains(&wanted) && text.contains("Leap status     : Normal")).then_some(())
        })
        .ok_or_else(|| format!("chronyd not synchronized at stratum {stratum}: {}", self.chronyc(&["tracking"])))
    }

    fn ntpdata(&self, address: &str) -> Result<NtpData, String> {
        let text = self.chronyc(&["ntpdata", address]);
        ensure(text.contains("Stratum"), || format!("chronyc ntpdata {address}: {text}"))?;
        Ok(NtpData(text))
    }

    /// The median offset of the last `n` exchanges in the measurements log.
    fn median_offset(&self, n: usize) -> Result<f64, String> {
        let log = std::fs::read_to_string(self.dir.path().join("measurements.log")).unwrap_or_default();
        let mut offsets: Vec<f64> =
            log.lines().filter_map(ntp_e2e::chain::ChronyMeasurement::parse).map(|m| m.offset).collect();
        ensure(offsets.len() >= n, || format!("only {} measurements logged:\n{log}", offsets.len()))?;
        let mut last = offsets.split_off(offsets.len() - n);
        last.sort_by(f64::total_cmp);
        Ok(last[n / 2])
    }
}

/// `chronyd -Q` (it sets nothing) on `ns` with one `server` line: its
/// offset estimate, or why it had none within 10 s.
fn chronyd_query(ns: &Netns, server: &str, bed: &Bed) -> Result<f64, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = ns
        .command(require("chronyd"))
        .args(["-u", "root", "-Q", "-t", "10"])
        .arg(format!("ntstrustedcerts {}", bed.ca.ca_cert().display()))
        .arg(format!("ntsdumpdir {}", Path::new(dir.path()).display()))
        .arg(server)
        .output()
        .map_err(|e| e.to_string())?;
    clock_wrong_by(&output)
}
