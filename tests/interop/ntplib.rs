//! Python's ntplib (Debian's `python3-ntplib`): a one-shot client of
//! ntpd-sim. It has no server side and no NTS.

use crate::bed::{package_version, Bed};
use crate::oneshot::{server, INJECTED};
use crate::report::{ensure, median, micros, works, Auth, Direction, Outcome, Row};

pub const NOTES: &str = "ntplib runs in Debian's Python (`/usr/bin/python3`) on host B, `NTPClient().request(host, \
version=4)` three times; it reads the host's clock with `time.time()` around a blocking socket, so its offset \
carries the interpreter's own time between stamping and sending (tens of µs). It reports stratum, leap, reference \
ID and root delay and dispersion as sent. It only queries (nothing to run as a server) and has no NTS.";

/// The bound on ntplib's offset from the injected one: Python stamps
/// T1 and T4 around interpreted code, a few µs each way when the machine
/// is quiet, milliseconds when the interpreter is kept off its CPU (as
/// ntpdig, the same kind of client, was once by 1.8 ms).
const BOUND: f64 = 2e-3;

pub fn pairs() -> Vec<Row> {
    let version = package_version("python3-ntplib");
    let row =
        |direction, auth, checked| Row::checked("ntplib", "NTPClient().request", &version, direction, auth, checked);
    vec![
        row(Direction::PeerClient, Auth::Plain, queries()),
        row(Direction::PeerClient, Auth::Nts, Ok(Outcome::NotApplicable("ntplib has no NTS".into()))),
        row(Direction::PeerServer, Auth::Plain, Ok(Outcome::NotApplicable("ntplib is a client only".into()))),
    ]
}

const SCRIPT: &str = r"
import ntplib, sys, json
c = ntplib.NTPClient()
for _ in range(3):
    r = c.request(sys.argv[1], version=4, timeout=2)
    print(json.dumps({'offset': r.offset, 'stratum': r.stratum, 'leap': r.leap, 'refid': '%08X' % r.ref_id,
                      'root_delay': r.root_delay, 'root_dispersion': r.root_dispersion}))
";

fn queries() -> Result<Outcome, String> {
    let bed = Bed::new("plib");
    let (_server, sent) = server(&bed);
    let output =
        bed.b.command("/usr/bin/python3").args(["-c", SCRIPT, &bed.a_ip()]).output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let replies: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    ensure(replies.len() == 3, || format!("ntplib said: {text}{}", String::from_utf8_lossy(&output.stderr)))?;
    let offset = median(replies.iter().filter_map(|r| r["offset"].as_f64()).collect());
    ensure((offset - INJECTED).abs() < BOUND, || format!("offset {offset} s where {INJECTED} s was injected"))?;
    let last = &replies[2];
    let hex: String = crate::report::refid_hex(sent["refid"].as_str().unwrap_or_default());
    ensure(last["stratum"] == sent["stratum"], || format!("stratum {}, sent {}", last["stratum"], sent["stratum"]))?;
    ensure(!hex.is_empty() && last["refid"].as_str().is_some_and(|r| r.starts_with(&hex)), || {
        format!("refid {}, sent {hex}", last["refid"])
    })?;
    ensure(last["leap"] == 0, || format!("leap {} where ntpd-sim sent none", last["leap"]))?;
    let dispersion = last["root_dispersion"].as_f64().unwrap_or(f64::NAN);
    let sent_dispersion = sent["root_dispersion"].as_f64().unwrap_or(f64::NAN);
    // Both lie in the primary's band: its base, growing at PHI for up to 8 s.
    ensure((dispersion - sent_dispersion).abs() <= crate::report::DISPERSION_BAND, || {
        format!("root dispersion {dispersion}, ntpd-sim sent {sent_dispersion}")
    })?;
    ensure(last["root_delay"] == 0.0, || format!("root delay {}, ntpd-sim sent 0", last["root_delay"]))?;
    Ok(works(
        format!("offset {} from the injected {INJECTED} s (median of 3)", micros(offset - INJECTED)),
        crate::report::bound(BOUND, "Python stamps around interpreted code"),
        format!("stratum 1, refid XSIM ({hex}), leap 0, root delay 0, root dispersion {:.1} µs", dispersion * 1e6),
    ))
}
