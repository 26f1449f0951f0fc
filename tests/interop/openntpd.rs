//! OpenNTPD (Debian's `openntpd`): ntpd as ntpd-sim's client and, once
//! synchronized, as its server, in the test VM ([`crate::vm_peers`]): it
//! adjusts the clock it runs on (no option only to measure), and without
//! the right to it never says "synced" nor serves as synchronized.

use crate::bed::unpacked;
use crate::report::{ensure, micros, works, Auth, Direction, Outcome, Row};
use crate::vm_peers::{lines, run, VmRun};

pub const NOTES: &str = "OpenNTPD 6.2p3 (portable, as Debian bookworm builds it: privilege separation as user \
`ntpd`, chrooted to `/var/lib/openntpd`) runs in the test VM as `ntpd -d -f ntpd.conf`, with `server 10.0.2.2` \
(ntpd-sim on the loopback of the network namespace qemu runs in) and `listen on *`. On this host it cannot be \
kept off the clock and still be tested: without CAP_SYS_TIME every `adjtime` fails, and it only calls itself \
synced (and only then serves a leap indicator other than 'unsynchronized') after an `adjtime` that found the \
previous one finished. Before it, `chronyd -q` and systemd-timesyncd have put the guest clock on ntpd-sim's, so \
the truth of its offset is zero. By design it is slow to synchronize: it needs all eight slots of its filter \
good (replies at 5 s, then at 30 s intervals once it trusts the server), adjusts by the lowest-delay one, \
clears that slot and the older ones, and says \"clock synced\" at the next adjustment: about 2 to 6 minutes from \
start with one server (107, 146, 261, 270 and 342 s in five runs here). `ntpctl -s all` shows the peer's stratum and its offset, delay and jitter in ms (three \
decimals), and its own \"clock synced, stratum N\"; it shows no reference ID, leap or root distance of the \
peer, but serves them on: as a server it advertises the peer's leap, stratum + 1, the peer's address as \
reference ID and the delay to it as root delay, checked here through qemu's port forward with ntp-query and \
an ntpd-sim following it. OpenNTPD has no NTS (its only authentication is the TLS 'constraints' check of a \
server's time against HTTPS Date headers, not configured here).";

/// The bound on the offsets, OpenNTPD's and the host side's of it: the
/// guest clock starts on ntpd-sim's, but OpenNTPD adjusts it only when
/// its filter has eight good replies again (30 s to 4 minutes apart), and
/// meanwhile the guest's oscillator (TCG's TSC, -13 to +1 ppm seen,
/// docs/performance.md) drifts up to 3 ms; a reply held up by a TCG stall
/// (1-6 ms) is off by up to half that. Seen: -0.2 to -0.9 ms by ntpctl,
/// +2.5 ms by ntp-query through the forward.
const BOUND: f64 = 10e-3;

pub fn pairs() -> Vec<Row> {
    let (_, version) = unpacked("openntpd", "usr/sbin/ntpd");
    let row =
        |direction, auth, checked| Row::checked("OpenNTPD", "ntpd (in the VM)", &version, direction, auth, checked);
    let no_nts =
        || Ok(Outcome::NotApplicable("OpenNTPD 6.2p3 has no NTS (no release of OpenNTPD implements it)".into()));
    let vm = run().as_ref().map_err(|e| format!("the VM run failed: {e}"));
    vec![
        row(Direction::PeerClient, Auth::Plain, vm.clone().and_then(follows)),
        row(Direction::PeerClient, Auth::Nts, no_nts()),
        row(Direction::PeerServer, Auth::Plain, vm.and_then(serves)),
        row(Direction::PeerServer, Auth::Nts, no_nts()),
    ]
}

/// OpenNTPD synchronized to ntpd-sim, by `ntpctl -s all`.
fn follows(vm: &VmRun) -> Result<Outcome, String> {
    let ntpctl = lines(&vm.console, "ntpctl");
    let text = ntpctl.join("\n");
    let sent = &vm.advertised["servers"][0];
    let sent_stratum = sent["stratum"].as_u64().unwrap_or(0);
    let synced = lines(&vm.console, "openntpd synced").first().copied();
    let after = synced.and_then(|l| ntp_e2e::vm::text_field(l, "after"));
    let after = after.ok_or_else(|| format!("not synced within its limit:\n{text}\n{}", log(vm)))?;
    let own = format!("clock synced, stratum {}", sent_stratum + 1);
    ensure(text.contains(&own), || format!("ntpctl does not say '{own}':\n{text}"))?;
    let peer = Peer::parse(&ntpctl).ok_or_else(|| format!("no peer line for 10.0.2.2 in ntpctl:\n{text}"))?;
    ensure(peer.selected, || format!("10.0.2.2 not selected (*):\n{text}"))?;
    ensure(peer.stratum == sent_stratum, || format!("peer stratum {}, ntpd-sim sent {sent_stratum}", peer.stratum))?;
    let offset = peer.offset_ms / 1e3;
    ensure(offset.abs() <= BOUND, || format!("its offset {} is beyond ±{}", micros(offset), micros(BOUND)))?;
    Ok(works(
        format!(
            "offset {:+.3} ms, delay {:.3} ms (ntpctl); synced {after} s after start",
            peer.offset_ms, peer.delay_ms
        ),
        format!("±{:.0} ms (guest clock on ntpd-sim's; TCG stalls, guest drift)", BOUND * 1e3),
        format!("peer stratum {}, selected; \"{own}\" (no refid, leap or root distance in ntpctl)", peer.stratum),
    ))
}

/// OpenNTPD serving, synchronized: what ntp-query read through the
/// forward, and ntpd-sim following it.
fn serves(vm: &VmRun) -> Result<Outcome, String> {
    let served = vm.served.as_ref().map_err(|e| format!("{e}\n{}", log(vm)))?;
    let entry = &served.entry;
    let sent = &vm.advertised["servers"][0];
    let stratum = sent["stratum"].as_u64().unwrap_or(0) + 1;
    ensure(entry["stratum"].as_u64() == Some(stratum), || {
        format!("stratum {}, not ntpd-sim's + 1 ({stratum})", entry["stratum"])
    })?;
    // Its reference ID is the address of the peer it follows, as the
    // guest sees it.
    ensure(entry["refid"] == "10.0.2.2", || format!("refid {}, not 10.0.2.2 (its peer)", entry["refid"]))?;
    ensure(entry["leap"] == sent["leap"], || format!("leap {}, ntpd-sim sent {}", entry["leap"], sent["leap"]))?;
    let offset = entry["offset"].as_f64().unwrap_or(f64::NAN);
    ensure(offset.abs() <= BOUND, || format!("ntp-query's offset {} beyond ±{}", micros(offset), micros(BOUND)))?;
    ensure(served.follower_stratum == stratum + 1, || {
        format!("ntpd-sim following it serves stratum {}, not {}", served.follower_stratum, stratum + 1)
    })?;
    ensure(served.follower_offset.abs() <= BOUND, || {
        format!("ntpd-sim's offset of it {}", micros(served.follower_offset))
    })?;
    Ok(works(
        format!(
            "ntp-query offset {:+.3} ms; ntpd-sim upstream offset {:+.3} ms",
            offset * 1e3,
            served.follower_offset * 1e3
        ),
        format!("±{:.0} ms (guest clock vs ntpd-sim's; TCG stalls)", BOUND * 1e3),
        format!(
            "stratum {stratum}, refid 10.0.2.2 (its peer), leap {}, root distance {:.1} µs; ntpd-sim synchronized, serving stratum {}",
            entry["leap"].as_str().unwrap_or("?"),
            crate::report::sent_distance(entry) * 1e6,
            served.follower_stratum
        ),
    ))
}

/// OpenNTPD's own log, for a failure's message.
fn log(vm: &VmRun) -> String {
    lines(&vm.console, "openntpd").join("\n")
}

/// The peer's line of `ntpctl -s all`:
/// ` *  1 10  1   17s   30s        -0.031ms     0.543ms     0.054ms`,
/// under the line naming it.
#[derive(Debug, PartialEq)]
struct Peer {
    selected: bool,
    stratum: u64,
    /// Milliseconds, as ntpctl shows it.
    offset_ms: f64,
    /// Milliseconds.
    delay_ms: f64,
}

impl Peer {
    fn parse(ntpctl: &[&str]) -> Option<Self> {
        let at = ntpctl.iter().position(|l| l.trim_start().starts_with("10.0.2.2"))?;
        let words: Vec<&str> = ntpctl.get(at + 1)?.split_whitespace().collect();
        let ms = |w: &str| w.strip_suffix("ms")?.parse::<f64>().ok();
        let [.., stratum, _next, _poll, offset, delay, _jitter] = words.as_slice() else { return None };
        Some(Self {
            selected: words[0] == "*",
            stratum: stratum.parse().ok()?,
            offset_ms: ms(offset)?,
            delay_ms: ms(delay)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_line_is_read() {
        let text = [
            "peer",
            "   wt tl st  next  poll          offset       delay      jitter",
            "10.0.2.2 ",
            " *  1 10  1   17s   30s        -0.031ms     0.543ms     0.054ms",
        ];
        assert_eq!(Peer::parse(&text), Some(Peer { selected: true, stratum: 1, offset_ms: -0.031, delay_ms: 0.543 }));
    }
}
