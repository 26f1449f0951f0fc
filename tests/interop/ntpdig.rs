//! NTPsec's ntpdig (Debian's `ntpsec-ntpdig`) and Debian's `sntp` (the
//! same program under the old name): one-shot clients of ntpd-sim, on port
//! 123 only (host A's, in the bed). Neither serves, neither speaks NTS.

use crate::bed::{package_version, Bed};
use crate::oneshot::{server, INJECTED};
use crate::report::{ensure, median, micros, works, Auth, Direction, Outcome, Row};

pub const NOTES: &str = "ntpdig (NTPsec 1.2.2, a Python program) queries port 123 only, so it runs on host B \
against ntpd-sim on host A's port 123: `ntpdig -j -p 3 HOST` (JSON, three samples) for the offset, stratum and \
leap, and `-p 3` in text, whose offsets must agree. It never sets the clock without `-s`/`-S`, which the matrix \
never gives. It shows no reference ID and no root delay or dispersion. Debian's `sntp` package is a symlink to \
ntpdig (`sntp 1:4.2.8p15+dfsg-2~1.2.2` is a transitional package), run under that name as its own row. Neither \
has an NTS option (ntpdig 1.2.2's `-a`/`-k` are symmetric keys).";

/// ntpdig reads the clock in Python, around a blocking socket, and prints
/// offsets to the microsecond: a few µs on a quiet machine, but 1.8 ms
/// was seen once with the other pairs and a VM busy on two cores.
const BOUND: f64 = 2e-3;

pub fn pairs() -> Vec<Row> {
    let version = package_version("ntpsec-ntpdig");
    let sntp = package_version("sntp");
    let none = |why: &str| Ok(Outcome::NotApplicable(why.into()));
    vec![
        Row::checked("ntpdig", "ntpdig -j", &version, Direction::PeerClient, Auth::Plain, queries("ntpdig")),
        Row::checked("ntpdig", "ntpdig", &version, Direction::PeerClient, Auth::Nts, none("ntpdig has no NTS")),
        Row::checked("ntpdig", "ntpdig", &version, Direction::PeerServer, Auth::Plain, none("ntpdig is a client only")),
        Row::checked("ntpdig", "sntp (= ntpdig)", &sntp, Direction::PeerClient, Auth::Plain, queries("sntp")),
    ]
}

fn queries(program: &str) -> Result<Outcome, String> {
    let bed = Bed::new(if program == "sntp" { "sntp" } else { "ndig" });
    let (_server, sent) = server(&bed);
    let run = |args: &[&str]| {
        let output = bed.b.command(program).args(args).arg(bed.a_ip()).output().map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr))
    };
    let json = run(&["-j", "-p", "3"])?;
    let reply: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|_| format!("{program} -j said: {json}"))?;
    let offset = reply["offset"].as_f64().ok_or_else(|| format!("{program} -j said: {json}"))?;
    ensure((offset - INJECTED).abs() < BOUND, || format!("offset {offset} s where {INJECTED} s was injected"))?;
    ensure(reply["stratum"] == sent["stratum"], || format!("stratum {}, sent {}", reply["stratum"], sent["stratum"]))?;
    ensure(reply["leap"] == "no-leap", || format!("leap {} where ntpd-sim sent none", reply["leap"]))?;
    // The text form: "DATE TIME (+0000) +0.250034 +/- 0.000102 HOST s1 no-leap", one line per sample.
    let text = run(&["-p", "3"])?;
    let offsets: Vec<f64> =
        text.lines().filter_map(|l| l.split_whitespace().nth(3).and_then(|o| o.parse().ok())).collect();
    ensure(!offsets.is_empty(), || format!("{program} said: {text}"))?;
    let text_offset = median(offsets);
    ensure((text_offset - INJECTED).abs() < BOUND, || format!("offset {text_offset} s in its text output"))?;
    Ok(works(
        format!("offset {} from the injected {INJECTED} s", micros(offset - INJECTED)),
        crate::report::bound(BOUND, "Python; µs resolution"),
        "stratum 1, leap no-leap (no refid or root distance shown)",
    ))
}
