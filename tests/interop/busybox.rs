//! BusyBox ntpd (built by .ci/run from Debian's `busybox` source: Debian's
//! own busybox and busybox-static leave the ntpd applet out) as ntpd-sim's
//! client and as its server, on host B of a bed: `ntpd -w` only queries,
//! and `ntpd -l` with no peer serves as a stratum 1 on the host's clock, so
//! neither needs to adjust a clock, and both run without CAP_SYS_TIME.

use std::time::Duration;

use ntp_e2e::process::wait_for;

use crate::bed::{follow, unpacked, without_clock_rights, Bed};
use crate::report::{ensure, micros, works, Auth, Direction, Outcome, Row};

pub const NOTES: &str = "Debian bookworm's `busybox` and `busybox-static` are built without the ntpd applet, so \
.ci/run builds BusyBox from Debian bookworm's `busybox` source package (`apt-get source`, Debian's patches \
applied) with only the ntpd applet, its server (`FEATURE_NTPD_SERVER`) and `/etc/ntp.conf` \
(`FEATURE_NTPD_CONF`), into /opt/ntp-peers/busybox-ntpd (about 20 s, once per machine). It runs on host B of \
the bed, without CAP_SYS_TIME, as root (it binds port 123 to serve, and asks port 123 only). As a client, \
`ntpd -n -w -p ntpd-sim` only queries (it never touches a clock with `-w`) and logs each reply: offset and \
delay in seconds to the microsecond, the packet's first byte (leap, version, mode), stratum, reference ID in \
hex and root delay (not the root dispersion: that is not shown, so neither is the root distance). BusyBox \
1.35.0 logs the reference ID byte-swapped on a little-endian machine (the word as read, without ntohl: ntpd-sim's \
`XSIM` shows as `0x4d495358`); what it sends as a server is in network order. As a \
server, `ntpd -n -l` with no peer is BusyBox's 'stratum 1 server' mode: it serves the host's clock as \
stratum 1 with a reference ID of zero, reference time = now and root delay and dispersion 0 (to serve as a \
stratum 2 it would have to set the clock it follows with). BusyBox ntpd has no NTS (its only \
authentication is symmetric keys, MD5/SHA1, `FEATURE_NTP_AUTH`).";

/// The bound on the offsets across the bed's veth link, the same clock on
/// both sides: BusyBox stamps with gettimeofday (1 µs) and takes a
/// packet's receive time after poll() wakes, before the recv, so the
/// scheduling of a busy two-core machine (other pairs and the VM running
/// at once) is in it; ntpd-sim's side is chrony's 100 µs.
const BOUND: f64 = 500e-6;

/// The replies read: BusyBox's initial burst, a second apart (its
/// `INITIAL_SAMPLES` + 1), before it backs off to 32 s.
const SAMPLES: usize = 4;

pub fn pairs() -> Vec<Row> {
    let (busybox, version) = unpacked("busybox-ntpd", "busybox");
    let row =
        |program: &str, direction, auth, checked| Row::checked("BusyBox", program, &version, direction, auth, checked);
    let no_nts = || Ok(Outcome::NotApplicable("BusyBox 1.35.0 ntpd has no NTS (symmetric keys only)".into()));
    vec![
        row("ntpd -n -w", Direction::PeerClient, Auth::Plain, queries(&busybox)),
        row("ntpd -n -w", Direction::PeerClient, Auth::Nts, no_nts()),
        row("ntpd -n -l", Direction::PeerServer, Auth::Plain, serves(&busybox)),
        row("ntpd -n -l", Direction::PeerServer, Auth::Nts, no_nts()),
    ]
}

/// One `reply from ...` line of `ntpd -w`.
#[derive(Debug, PartialEq)]
struct Reply {
    offset: f64,
    status: u8,
    stratum: u64,
    refid: u32,
    root_delay: f64,
}

impl Reply {
    /// `ntpd: reply from 10.77.1.1: offset:+0.000012 delay:0.000100
    /// status:0x24 strat:1 refid:0x4d495358 rootdelay:0.000000 reach:0x01`.
    fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.find("reply from ")?..];
        let value = |key: &str| rest.split_whitespace().find_map(|w| w.strip_prefix(key));
        let hex = |key: &str| value(key)?.strip_prefix("0x").and_then(|h| u32::from_str_radix(h, 16).ok());
        Some(Self {
            offset: value("offset:")?.parse().ok()?,
            status: hex("status:")?.try_into().ok()?,
            stratum: value("strat:")?.parse().ok()?,
            refid: hex("refid:")?,
            root_delay: value("rootdelay:")?.parse().ok()?,
        })
    }
}

/// `ntpd -n -w -p` ntpd-sim: the median offset of its first [`SAMPLES`]
/// replies, and what they carried.
fn queries(busybox: &str) -> Result<Outcome, String> {
    let bed = Bed::new("bbc");
    let server = bed.serve(&["--refid", "XSIM"]);
    let advertised = bed.query(&["-n", "1", &format!("{}:123", bed.a_ip())])?;
    let sent = &advertised["servers"][0];
    let ntpd = without_clock_rights(&bed.b, busybox, &["ntpd", "-n", "-w", "-p", &bed.a_ip()]);
    // A reply lost (a busy machine) costs its 16 s wait and a retry.
    let replies = wait_for(Duration::from_secs(60), || {
        let replies: Vec<Reply> = ntpd.output().lines().filter_map(Reply::parse).collect();
        (replies.len() >= SAMPLES).then_some(replies)
    })
    .ok_or_else(|| format!("fewer than {SAMPLES} replies in 60 s:\n{}\n{}", ntpd.output(), server.output()))?;
    let mut offsets: Vec<f64> = replies.iter().map(|r| r.offset).take(SAMPLES).collect();
    offsets.sort_by(f64::total_cmp);
    let offset = (offsets[1] + offsets[2]) / 2.0;
    let last = &replies[SAMPLES - 1];
    let sent_stratum = sent["stratum"].as_u64().unwrap_or(0);
    ensure(last.stratum == sent_stratum, || format!("stratum {}, ntpd-sim sent {sent_stratum}", last.stratum))?;
    // BusyBox logs the reference ID as the 32-bit word it read, without
    // ntohl: on this little-endian machine "XSIM" shows as 0x4d495358.
    ensure(last.refid == u32::from_le_bytes(*b"XSIM") && sent["refid"] == "XSIM", || {
        format!("refid {:#010x}, ntpd-sim sent {}", last.refid, sent["refid"])
    })?;
    // The first byte: leap (2 bits), version, mode 4 (server).
    ensure(last.status >> 6 == 0 && sent["leap"] == "none" && last.status & 7 == 4, || {
        format!("status {:#04x}, ntpd-sim sent leap {}", last.status, sent["leap"])
    })?;
    let sent_delay = sent["root_delay"].as_f64().unwrap_or(f64::NAN);
    ensure((last.root_delay - sent_delay).abs() <= 1e-6, || {
        format!("root delay {}, ntpd-sim sent {sent_delay}", last.root_delay)
    })?;
    ensure(offset.abs() <= BOUND, || format!("its offset {} is beyond ±{}", micros(offset), micros(BOUND)))?;
    Ok(works(
        format!("offset {} (median of its first {SAMPLES} replies, its initial burst)", micros(offset)),
        crate::report::bound(BOUND, "same clock; veth hop; receive stamped after poll()"),
        format!(
            "stratum {}, refid 0x{:08x} (XSIM, logged byte-swapped), leap 0 (status {:#04x}), root delay {:.1} µs (root dispersion not shown)",
            last.stratum,
            last.refid,
            last.status,
            last.root_delay * 1e6
        ),
    ))
}

/// `ntpd -n -l` (no peer: stratum 1 on the host's clock) on host B:
/// ntp-query reads it, and an ntpd-sim follows it.
fn serves(busybox: &str) -> Result<Outcome, String> {
    let bed = Bed::new("bbs");
    let b = bed.b_ip();
    // Without -p it reads /etc/ntp.conf's server lines: none.
    bed.b.set_etc_file("ntp.conf", "");
    let ntpd = without_clock_rights(&bed.b, busybox, &["ntpd", "-n", "-l"]);
    let target = format!("{b}:123");
    let entry = wait_for(Duration::from_secs(20), || {
        let json = bed.query(&["-n", "8", "-i", "0.1", &target]).ok()?;
        let entry = json["servers"][0].clone();
        entry["error"].is_null().then_some(entry)
    })
    .ok_or_else(|| format!("ntp-query got no answer from BusyBox: {:?}\n{}", bed.query(&[&target]), ntpd.output()))?;
    ensure(entry["stratum"] == 1, || format!("stratum {}, where BusyBox without peers serves 1", entry["stratum"]))?;
    ensure(entry["leap"] == "none", || format!("leap {}", entry["leap"]))?;
    // BusyBox's stratum-1 mode sends a reference ID of zero (ntp-query
    // shows it as an empty code) and no root delay or dispersion.
    ensure(entry["refid"] == "", || format!("refid {}, BusyBox sends zero", entry["refid"]))?;
    let (delay, dispersion) = (entry["root_delay"].as_f64(), entry["root_dispersion"].as_f64());
    ensure(delay == Some(0.0) && dispersion == Some(0.0), || {
        format!("root delay/dispersion {delay:?}/{dispersion:?}, BusyBox sends 0/0")
    })?;
    let offset = entry["offset"].as_f64().unwrap_or(f64::NAN);
    ensure(offset.abs() < BOUND, || format!("ntp-query's offset {} beyond {}", micros(offset), micros(BOUND)))?;
    let (follower_offset, _follower) = follow(&bed, &format!("{}:12300", bed.a_ip()), &target, (0, 1), 2)?;
    ensure(follower_offset.abs() < BOUND, || format!("ntpd-sim's offset of BusyBox {}", micros(follower_offset)))?;
    Ok(works(
        format!("ntp-query offset {}; ntpd-sim upstream offset {}", micros(offset), micros(follower_offset)),
        crate::report::bound(BOUND, "same clock; veth hop; receive stamped after poll()"),
        format!(
            "stratum 1, refid 0 (BusyBox's peerless mode), leap none, root delay 0, root dispersion 0, precision {:.3} ms; ntpd-sim synchronized, serving stratum 2",
            entry["precision"].as_f64().unwrap_or(f64::NAN) * 1e3
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_line_is_read() {
        let line = "ntpd: reply from 10.77.1.1: offset:+0.000012 delay:0.000100 status:0x24 strat:1 refid:0x5853494d rootdelay:0.000000 reach:0x01";
        let reply = Reply { offset: 0.000012, status: 0x24, stratum: 1, refid: 0x5853494d, root_delay: 0.0 };
        assert_eq!(Reply::parse(line), Some(reply));
    }
}
