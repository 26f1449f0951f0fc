//! NTPsec (Debian's `ntpsec`, unpacked: it conflicts with chrony): ntpd as
//! ntpd-sim's client and as its server, plain and NTS, and ntpq aimed at
//! ntpd-sim. ntpd insists on running as root and on port 123 (host B of a
//! bed); it runs without CAP_SYS_TIME, so the kernel refuses every clock
//! adjustment it tries, while it selects, synchronizes and serves as usual.

use std::time::Duration;

use ntp_e2e::process::wait_for;
use ntp_e2e::Daemon;

use crate::bed::{follow, nts_query_relayed, unpacked, without_clock_rights, Bed, KE_PORT, NAMES};
use crate::report::{ensure, micros, works, Auth, Direction, Row};

pub const NOTES: &str = "NTPsec's ntpd 1.2.2 refuses to start as anything but root (`INIT: must be run as root, \
not uid 65534`), binds the wildcard address of port 123 and takes no port in a `server` line, so it runs on host B \
of its own bed, as root without CAP_SYS_TIME (setpriv drops it from the bounding and inheritable sets; the test \
checks the running process's effective set): it logs `ntp_adjtime: Operation not permitted` at start and the \
kernel refuses any adjustment, but it polls, filters, selects and serves as ever. The host's clock is the truth on \
both sides, so nothing needed adjusting. Polls are `minpoll 2 maxpoll 2` with `discard average 0 minimum 0`: \
ntpd 1.2.2 counts every packet from an address against its rate limit, its server's replies too, and drops \
requests over it silently even with no `limited` in any restrict line (`ntpq -c sysstats`: `rate limited`), \
so an ntpd-sim following it from the address of its own server got no answer at 1 s polls. Without clock rights it \
advertises a root dispersion of tens to hundreds of milliseconds (63-188 ms seen): its estimate of its own error, \
with every correction it computed refused by the kernel; ntp-query and ntpd-sim show exactly what it sent. Figures are ntpq's (`rv &N`: offset in \
ms to the µs). As an NTS client it has three servers: ntpd-sim direct, through the faithful relay and through the \
tampering one; the last must stay unreachable (reach 0) while the others are reached, and `ntpq -c nts` counts \
the refused replies. As an NTS server (`nts enable`, the bed's certificate) it serves ntp-query --nts and an \
ntpd-sim `--upstream nts://`. ntpq -c rv aimed at ntpd-sim gets no answer: ntpd-sim answers no mode 6 (control) \
queries, as chrony and ntpd-rs do not; its state is in `ntpd-sim status` and /metrics (docs/operations.md). ntpq \
says `***Request timed out` and ntpd-sim goes on answering time requests. Quirk (1.2.2): with no `restrict` line at all ntpd answers no ntpq query, even from 127.0.0.1; the matrix gives `restrict default nomodify nopeer` (no `limited`: it would send RATE kisses to the matrix's 1-2 s polls) and `restrict 127.0.0.1`.";

/// NTPsec's offset bound: it reads the kernel's receive timestamps
/// (SO_TIMESTAMPNS) and its own transmit time; tens of µs on the veth hop
/// with the other pairs running at once.
const BOUND: f64 = 100e-6;

pub fn pairs() -> Vec<Row> {
    let (_, version) = unpacked("ntpsec", "usr/sbin/ntpd");
    let mut rows = plain(&version);
    rows.extend(nts(&version));
    rows
}

/// An ntpd on host B of `bed` with these configuration lines, and ntpq
/// against it.
struct Ntpsec {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Ntpsec {
    fn start(bed: &Bed, config: &str) -> Self {
        let (ntpd, _) = unpacked("ntpsec", "usr/sbin/ntpd");
        let dir = tempfile::tempdir().expect("temp dir");
        let at = |name: &str| dir.path().join(name).display().to_string();
        let text = format!(
            // Without restrict lines ntpd 1.2.2 answers no ntpq at all.
            "{config}\nrestrict default nomodify nopeer\nrestrict 127.0.0.1\ndiscard average 0 minimum 0\n\
             driftfile {}\nlogfile {}\nstatsdir {}/\n",
            at("drift"),
            at("ntpd.log"),
            dir.path().display()
        );
        let conf = at("ntp.conf");
        std::fs::write(&conf, text).expect("write ntp.conf");
        let daemon = without_clock_rights(&bed.b, &ntpd, &["-n", "-c", &conf]);
        Self { daemon, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ntpd.log")).unwrap_or_default() + &self.daemon.output()
    }
}

/// `ntpq -n -c COMMAND HOST` on `ns`: what it printed, out and err.
fn ntpq(ns: &ntp_e2e::netns::Netns, command: &str, host: &str) -> String {
    let (ntpq, _) = unpacked("ntpsec", "usr/bin/ntpq");
    let output = ns.command("/usr/bin/python3").args([ntpq.as_str(), "-n", "-c", command, host]).output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
        .unwrap_or_default()
}

/// The `name=value` pairs of an ntpq `rv` answer.
fn variables(text: &str) -> std::collections::BTreeMap<String, String> {
    text.split([',', '\n'])
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// ntpd's association with source address `ip`: its peer variables.
fn peer(bed: &Bed, ip: &str) -> Option<std::collections::BTreeMap<String, String>> {
    (1..=4)
        .map(|n| variables(&ntpq(&bed.b, &format!("rv &{n}"), "127.0.0.1")))
        .find(|v| v.get("srcadr").map(String::as_str) == Some(ip))
}

fn number(vars: &std::collections::BTreeMap<String, String>, name: &str) -> f64 {
    vars.get(name).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Waits until ntpd's system variables say stratum `stratum`, leap 00.
fn wait_synchronized(bed: &Bed, ntpd: &Ntpsec, stratum: u8) -> Result<(), String> {
    wait_for(Duration::from_secs(60), || {
        let system = variables(&ntpq(&bed.b, "rv 0 stratum,leap", "127.0.0.1"));
        (system.get("stratum") == Some(&stratum.to_string()) && system.get("leap") == Some(&"00".to_string()))
            .then_some(())
    })
    .ok_or_else(|| {
        format!("ntpd not synchronized at stratum {stratum}: {}\n{}", ntpq(&bed.b, "rv 0", "127.0.0.1"), ntpd.log())
    })
}

/// Checks what ntpd shows of ntpd-sim (its association with `ip`) against
/// what ntpd-sim sent, and returns (offset in s, the line for the table).
fn shows(bed: &Bed, ip: &str) -> Result<(f64, String), String> {
    let sent = bed.query(&["-n", "1", &format!("{}:123", bed.a_ip())])?;
    let sent = &sent["servers"][0];
    let vars = peer(bed, ip)
        .ok_or_else(|| format!("ntpd has no association with {ip}: {}", ntpq(&bed.b, "pe", "127.0.0.1")))?;
    // ntpd's offset is its clock filter's pick of the last eight; three
    // picks, one poll apart, so one burst of scheduling on a busy machine
    // does not decide.
    let mut picks = vec![number(&vars, "offset") / 1e3];
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(4));
        picks.extend(peer(bed, ip).map(|v| number(&v, "offset") / 1e3));
    }
    let offset = crate::report::median(picks);
    ensure(vars.get("stratum").map(String::as_str) == Some("1"), || {
        format!("ntpd shows stratum {:?}", vars.get("stratum"))
    })?;
    ensure(vars.get("refid").map(String::as_str) == sent["refid"].as_str(), || {
        format!("ntpd shows refid {:?}, sent {}", vars.get("refid"), sent["refid"])
    })?;
    ensure(vars.get("leap").map(String::as_str) == Some("00"), || format!("ntpd shows leap {:?}", vars.get("leap")))?;
    let (delay, dispersion) = (number(&vars, "rootdelay") / 1e3, number(&vars, "rootdisp") / 1e3);
    let sent_dispersion = sent["root_dispersion"].as_f64().unwrap_or(f64::NAN);
    ensure(delay.abs() < 1e-6 && (dispersion - sent_dispersion).abs() <= crate::report::DISPERSION_BAND, || {
        format!("ntpd shows root delay {delay} s, dispersion {dispersion} s; ntpd-sim sent 0 and {sent_dispersion}")
    })?;
    ensure(offset.abs() < BOUND, || format!("ntpd's offset {} beyond {}", micros(offset), micros(BOUND)))?;
    Ok((
        offset,
        format!(
            "stratum 1, refid {}, leap 00, root distance {:.1} µs",
            vars["refid"],
            (delay / 2.0 + dispersion) * 1e6
        ),
    ))
}

/// ntp-query of ntpd on host B at `target` (with `extra` options), and an
/// ntpd-sim on host A's second address following it: both must see it
/// synchronized at stratum 2, naming one of `followed` (ntpd-sim's
/// addresses it reaches) as its reference.
fn serves(bed: &Bed, target: &str, extra: &[&str], upstream: &str, followed: &[String]) -> Result<String, String> {
    let query: Vec<&str> =
        ["-n", "4", "-i", "0.2"].iter().copied().chain(extra.iter().copied()).chain([target]).collect();
    let entry = wait_for(Duration::from_secs(20), || {
        let json = bed.query(&query).ok()?;
        let entry = json["servers"][0].clone();
        (entry["error"].is_null() && entry["stratum"] == 2).then_some(entry)
    })
    .ok_or_else(|| format!("ntp-query got no stratum-2 answer from ntpd: {:?}", bed.query(&query)))?;
    let offset = entry["offset"].as_f64().unwrap_or(f64::NAN);
    ensure(offset.abs() < BOUND, || format!("ntp-query's offset of ntpd {}", micros(offset)))?;
    let refid = entry["refid"].as_str().unwrap_or_default();
    ensure(followed.iter().any(|f| f == refid), || format!("ntpd serves refid {refid} where it follows {followed:?}"))?;
    // On host A's other address (ntpd-sim's own polls leave from the first).
    let listen = format!("{}:123", bed.relay_ip(true));
    let (follower_offset, _follower) = follow(bed, &listen, upstream, (1, 2), 3)?;
    ensure(follower_offset.abs() < BOUND, || format!("ntpd-sim's offset of ntpd {}", micros(follower_offset)))?;
    Ok(format!(
        "ntp-query offset {}; ntpd-sim upstream offset {}|stratum 2, refid {}, leap {}, root distance {:.1} ms (its own estimate, every adjustment refused); ntpd-sim synchronized, serving stratum 3",
        micros(offset),
        micros(follower_offset),
        entry["refid"].as_str().unwrap_or_default(),
        entry["leap"].as_str().unwrap_or_default(),
        crate::report::sent_distance(&entry) * 1e3
    ))
}

fn bound() -> String {
    crate::report::bound(BOUND, "same clock; veth hop")
}

/// Plain: ntpd follows ntpd-sim and serves; ntpq aimed at ntpd-sim.
fn plain(version: &str) -> Vec<Row> {
    let bed = Bed::new("nsp");
    let _server = bed.serve(&["--refid", "XSIM"]);
    let ntpd = Ntpsec::start(&bed, &format!("server {} iburst minpoll 2 maxpoll 2", bed.a_ip()));
    let client = wait_synchronized(&bed, &ntpd, 2).and_then(|()| {
        std::thread::sleep(Duration::from_secs(4));
        let (offset, line) = shows(&bed, &bed.a_ip())?;
        Ok(works(format!("offset {} (ntpq rv, median of 3 polls)", micros(offset)), bound(), line))
    });
    let server = client.as_ref().map_err(|e| format!("not run: the client pair failed ({e})")).and_then(|_| {
        let text = serves(&bed, &format!("{}:123", bed.b_ip()), &[], &bed.b_ip(), &[bed.a_ip()])?;
        let (measured, shown) = text.split_once('|').unwrap_or_default();
        Ok(works(measured, bound(), shown))
    });
    let control = ntpq_at_ntpd_sim(&bed);
    vec![
        Row::checked("NTPsec", "ntpd", version, Direction::PeerClient, Auth::Plain, client),
        Row::checked("NTPsec", "ntpd", version, Direction::PeerServer, Auth::Plain, server),
        Row::checked("NTPsec", "ntpq -c rv, ntpq -p (mode 6)", version, Direction::PeerClient, Auth::Plain, control),
    ]
}

/// ntpq aimed at ntpd-sim: no answer, a clear message, and ntpd-sim
/// still serving time.
fn ntpq_at_ntpd_sim(bed: &Bed) -> Result<crate::report::Outcome, String> {
    for command in ["rv", "peers"] {
        let text = ntpq(&bed.b, command, &bed.a_ip());
        ensure(text.contains("***Request timed out"), || format!("ntpq -c {command} said: {text}"))?;
    }
    let after = bed.query(&["-n", "1", &format!("{}:123", bed.a_ip())])?;
    ensure(after["servers"][0]["error"].is_null(), || format!("ntpd-sim stopped answering: {after}"))?;
    Ok(works(
        "no answer: ntpq says `***Request timed out`; time requests still answered",
        "ntpd-sim answers no mode 6",
        "nothing (by design, as chrony and ntpd-rs)",
    ))
}

/// NTS: ntpd follows ntpd-sim over NTS (direct, and through both relays)
/// and serves NTS itself.
fn nts(version: &str) -> Vec<Row> {
    let bed = Bed::new("nsn");
    let _server = bed.serve(&["--refid", "XSIM"]);
    let faithful = bed.relay(&bed.a_ip(), false);
    let tampering = bed.relay(&bed.a_ip(), true);
    let ca = bed.ca.ca_cert().display().to_string();
    let servers: String = [NAMES[0], NAMES[2], NAMES[3]]
        .iter()
        .map(|name| format!("server {name} nts ca {ca} iburst minpoll 2 maxpoll 2\n"))
        .collect();
    let config = format!(
        "{servers}nts enable\nnts cert {}\nnts key {}\nnts ca {ca}\n",
        bed.ca.server_cert().display(),
        bed.ca.server_key().display()
    );
    let ntpd = Ntpsec::start(&bed, &config);
    let client = wait_synchronized(&bed, &ntpd, 2).and_then(|()| {
        std::thread::sleep(Duration::from_secs(8));
        let (offset, line) = shows(&bed, &bed.a_ip())?;
        let through = peer(&bed, &faithful.address).ok_or("no association with the faithful relay")?;
        let tampered = peer(&bed, &tampering.address).ok_or("no association with the tampering relay")?;
        let reach = |vars: &std::collections::BTreeMap<String, String>| {
            vars.get("reach").and_then(|r| u8::from_str_radix(r, 8).ok())
        };
        ensure(reach(&through).is_some_and(|r| r != 0), || format!("the faithful relay unreached: {through:?}"))?;
        ensure(reach(&tampered) == Some(0), || format!("tampered replies reached ntpd: {tampered:?}"))?;
        ensure(tampering.tampered() > 0, || "the tampering relay changed no reply".into())?;
        let counters = ntpq(&bed.b, "nts", "127.0.0.1");
        Ok(works(
            format!("offset {} (ntpq rv, median of 3 polls)", micros(offset)),
            bound(),
            format!(
                "{line}; NTS: reach 0 through the tampering relay ({} replies changed), {}",
                tampering.tampered(),
                nts_counters(&counters)
            ),
        ))
    });
    drop((faithful, tampering));
    let server = client.as_ref().map_err(|e| format!("not run: the client pair failed ({e})")).and_then(|_| {
        ntp_e2e::nts::wait_tcp_open_in(&bed.a, &bed.b_ip(), KE_PORT);
        let ca = ca.as_str();
        // Its system peer is ntpd-sim direct or through the faithful relay, never the tampering one.
        let followed = [bed.a_ip(), bed.relay_ip(false)];
        let text = serves(&bed, NAMES[1], &["--nts", "--ca-file", ca], &format!("nts://{}", NAMES[1]), &followed)?;
        let refused = nts_query_relayed(&bed, &bed.b_ip())?;
        let (measured, shown) = text.split_once('|').unwrap_or_default();
        Ok(works(measured, bound(), format!("{shown}; tampered replies refused ({refused})")))
    });
    vec![
        Row::checked("NTPsec", "ntpd", version, Direction::PeerClient, Auth::Nts, client),
        Row::checked("NTPsec", "ntpd", version, Direction::PeerServer, Auth::Nts, server),
    ]
}

/// The NTS client counters of `ntpq -c nts` that say replies were
/// authenticated and some refused, in a few words.
fn nts_counters(text: &str) -> String {
    let count = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("?")
            .to_string()
    };
    format!("`ntpq -c nts`: {} good, {} with error", count("NTS client recvs good"), count("NTS client recvs w error"))
}
