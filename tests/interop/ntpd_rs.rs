//! ntpd-rs (crates.io's `ntpd`, a version pinned in .ci/run, built into
//! /opt/ntp-peers/ntpd-rs): its `ntp-daemon` as ntpd-sim's client, in the
//! test VM (tests/interop/ntpd_rs_vm.rs), and as a server on host B with
//! no source, a local stratum 1, without the right to set any clock.

use crate::bed::{follow, nts_query_relayed, query_peer, unpacked, without_clock_rights, Bed, KE_PORT};
use crate::ntpd_rs_vm;
use crate::report::{ensure, micros, works, Auth, Direction, Outcome, Row};

pub const NOTES: &str = "ntpd-rs 1.9.0 (crates.io's `ntpd`, `cargo install --locked`, into /opt/ntp-peers/ntpd-rs). \
As a client its `ntp-daemon` disciplines the clock it runs on and will not start its clock control without \
`CAP_SYS_TIME` (\"Could not control clock: Insufficient permissions\"), so it runs only in the test VM: qemu in the \
bed's host A, the guest routing the bed's addresses through qemu's NAT, one boot for four phases \
(tests/vm/ntpd-rs.sh): plain, NTS, NTS through the faithful relay, NTS through the tampering one, each a fresh \
ntp-daemon with one source, `minimum-agreeing-sources = 1` and poll 2^0-2^1 s. ntpd-sim serves the host's time \
+2.5 s, so ntpd-rs has a step to make; the truth it is held to is the guest clock's offset from ntpd-sim read by \
ntp-query in the guest, within ±5 ms (TCG holds some replies up by milliseconds), as is ntpd-rs's own estimate \
(`ntp-ctl status`). What it shows of ntpd-sim (`ntp-ctl status -f prometheus`): its stratum (ntpd-rs's is one \
more), leap, the root delay and dispersion as sent; ntpd-rs keeps no reference ID of its source, and serves \
ntpd-sim's IPv4 address as its own (checked through its server on the guest's loopback). It synchronizes (stratum 2) \
on its first reply, stepping the clock (logged as a warning, `Jumped offset by 3468 ms`, unless `warn-on-jump = \
false`). Tampered NTS replies are logged as \"received invalid packet: Failed to decrypt NTS extension fields\" \
and never synchronize it. As a server it needs no clock rights when it \
has no source: `local-stratum = 1`, `reference-id = \"XNRS\"`, started with `CAP_SYS_TIME` dropped; it then sends \
root delay and dispersion 0 (they do not grow with time) and leap 0. Quirk (1.9.0), which ntpd-sim tolerates: \
that server's reference timestamp lies about two minutes before the daemon's start (116-126 s seen) and never \
moves.";

/// The bound on the offset measured of ntpd-rs's server across the bed's
/// veth link: ntpd-rs serves the host's clock and ntp-query and ntpd-sim
/// read it on the same clock; a veth hop, the debug build and the other
/// pairs running at once leave tens of microseconds.
const BOUND: f64 = 100e-6;

/// The reference ID ntpd-rs's local stratum 1 is given.
const REFID: &str = "XNRS";

pub fn pairs() -> Vec<Row> {
    let (daemon, version) = unpacked("ntpd-rs", "bin/ntp-daemon");
    let (ctl, _) = unpacked("ntpd-rs", "bin/ntp-ctl");
    let row = |direction, auth, checked| Row::checked("ntpd-rs", "ntp-daemon", &version, direction, auth, checked);
    let (plain, nts) = ntpd_rs_vm::follows(&daemon, &ctl);
    vec![
        row(Direction::PeerClient, Auth::Plain, plain),
        row(Direction::PeerClient, Auth::Nts, nts),
        row(Direction::PeerServer, Auth::Plain, serves(false, &daemon, &ctl)),
        row(Direction::PeerServer, Auth::Nts, serves(true, &daemon, &ctl)),
    ]
}

/// ntpd-rs as a local stratum 1 on host B: ntp-query reads it, and an
/// ntpd-sim follows it and serves as stratum 2.
fn serves(nts: bool, daemon: &str, ctl: &str) -> Result<Outcome, String> {
    let bed = Bed::new(if nts { "nrsn" } else { "nrsp" });
    let b = bed.b_ip();
    let dir = bed.b.dir();
    let conf = dir.join("ntp.toml");
    let ke = if nts {
        format!(
            "[[nts-ke-server]]\nlisten = \"{b}:{KE_PORT}\"\ncertificate-chain-path = \"{}\"\nprivate-key-path = \"{}\"\n",
            bed.ca.server_cert().display(),
            bed.ca.server_key().display()
        )
    } else {
        String::new()
    };
    let text = format!(
        "[observability]\nlog-level = \"info\"\nansi-colors = false\nobservation-path = \"{}\"\n\n\
         [synchronization]\nlocal-stratum = 1\nreference-id = \"{REFID}\"\n\n[[server]]\nlisten = \"{b}:123\"\n\n{ke}",
        dir.join("observe.sock").display()
    );
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let conf = conf.display().to_string();
    let server = without_clock_rights(&bed.b, daemon, &["-c", &conf]);
    let (target, entry) = query_peer(&bed, nts, 1).map_err(|e| format!("ntpd-rs: {e}\n{}", server.output()))?;
    let offset = entry["offset"].as_f64().unwrap_or(f64::NAN);
    ensure(offset.abs() < BOUND, || format!("ntp-query's offset {} beyond {}", micros(offset), micros(BOUND)))?;
    ensure(entry["refid"] == REFID && entry["leap"] == "none", || {
        format!("refid {} leap {}, ntpd-rs is configured {REFID}, leap none", entry["refid"], entry["leap"])
    })?;
    // What it sent is what it says of itself.
    let own = Metrics::read(ctl, &conf)?;
    let (delay, dispersion) = (entry["root_delay"].as_f64(), entry["root_dispersion"].as_f64());
    ensure(
        delay == Some(own.get("ntp_system_root_delay_seconds")?)
            && dispersion == Some(own.get("ntp_system_root_dispersion_seconds")?)
            && own.get("ntp_system_stratum")? == 1.0,
        || format!("sent root delay/dispersion {delay:?}/{dispersion:?}, ntp-ctl says {own:?}"),
    )?;

    // ntpd-sim's upstream side: synchronized to ntpd-rs, serving stratum 2.
    let upstream = if nts { format!("nts://{target}") } else { target.clone() };
    let (upstream_offset, _follower) = follow(&bed, &format!("{}:12300", bed.a_ip()), &upstream, (0, 1), 2)?;
    ensure(upstream_offset.abs() < BOUND, || format!("ntpd-sim's offset of ntpd-rs {}", micros(upstream_offset)))?;
    let mut auth = String::new();
    if nts {
        let refused = nts_query_relayed(&bed, &b)?;
        let accepted = Metrics::read(ctl, &conf)?.get("ntp_server_nts_accepted_packets_total")?;
        ensure(accepted > 0.0, || "ntpd-rs counted no NTS request accepted".into())?;
        auth = format!("; {accepted} NTS requests accepted by ntpd-rs; tampered replies refused ({refused})");
    }
    Ok(works(
        format!("ntp-query offset {}; ntpd-sim upstream offset {}", micros(offset), micros(upstream_offset)),
        crate::report::bound(BOUND, "same clock; veth hop"),
        format!(
            "stratum 1, refid {REFID}, leap none, root distance {:.1} µs (as ntp-ctl reports); ntpd-sim synchronized, \
             serving stratum 2{auth}",
            crate::report::sent_distance(&entry) * 1e6
        ),
    ))
}

/// `ntp-ctl status -f prometheus`: metric names (labels left out) and values.
#[derive(Debug)]
struct Metrics(Vec<(String, f64)>);

impl Metrics {
    fn read(ctl: &str, conf: &str) -> Result<Self, String> {
        let output = std::process::Command::new(ctl)
            .args(["status", "-f", "prometheus", "-c", conf])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout);
        let metrics = text.lines().filter_map(metric).collect();
        Ok(Self(metrics))
    }

    fn get(&self, name: &str) -> Result<f64, String> {
        let found = self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        found.ok_or_else(|| format!("ntp-ctl shows no {name}"))
    }
}

/// One line of `ntp-ctl status -f prometheus`: the metric's name (labels
/// left out) and value; `None` for comments.
pub fn metric(line: &str) -> Option<(String, f64)> {
    let (metric, value) = line.strip_prefix("ntp_")?.rsplit_once(' ')?;
    Some((format!("ntp_{}", metric.split('{').next()?), value.parse().ok()?))
}
