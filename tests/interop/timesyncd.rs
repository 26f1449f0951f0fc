//! systemd-timesyncd (Debian's `systemd-timesyncd`), the default client of
//! most Linux hosts, as ntpd-sim's client in the test VM
//! ([`crate::vm_peers`]): it adjusts the clock it runs on, and has no
//! option to only measure.

use serde_json::Value;

use crate::bed::unpacked;
use crate::report::{ensure, works, Auth, Direction, Outcome, Row};
use crate::vm_peers::{lines, run, REFID};

pub const NOTES: &str = "systemd-timesyncd 252 runs in the test VM, not under systemd: the guest's init (busybox) \
starts `/lib/systemd/systemd-timesyncd` as root with `SYSTEMD_LOG_LEVEL=debug`, having made what its unit would \
(the user `systemd-timesync`, `/var/lib/systemd/timesync` and `/run/systemd/timesync` owned by it) and \
`/etc/systemd/timesyncd.conf` with `NTP=10.0.2.2` and no fallback. It needs neither systemd as PID 1 nor D-Bus: \
with no system bus it waits for one to appear (sd-bus's watch-bind) and goes on synchronizing meanwhile. It asks \
port 123 only (`NTP=` takes no port), so qemu runs in a network namespace whose loopback is the guest's 10.0.2.2 \
and ntpd-sim serves on port 123 there. Before it, `chronyd -q` steps the guest's clock (booted from the RTC, to \
the second) onto ntpd-sim's, so the truth of its offset is zero. Its debug log's `NTP response:` block gives what \
it read (leap, stratum, reference, root distance) and the offset, to the millisecond (`%+.3f sec`); 'Initial \
clock synchronization' is logged on the first reply it accepts, one exchange after it starts. Quirks of 252.39: \
an empty `FallbackNTP=` does not empty the fallback list (it still adds Debian's four pool names, never asked \
here since 10.0.2.2 answers, and unreachable: the namespace has no route out); it logs 'Failed to get link NTP \
servers' (no systemd-networkd) and goes on. It is only a client (SNTP): the server rows \
cannot exist. It has no NTS (none in 252; Debian bookworm's is 252).";

/// The bound on its offset from ntpd-sim: the guest clock was stepped onto
/// ntpd-sim's seconds before, so what is left is TCG's: a reply held up
/// by a stall (1-6 ms seen, docs/performance.md) puts one exchange's
/// offset off by up to half that, and timesyncd reads one exchange; its
/// own figure has millisecond resolution.
const BOUND: f64 = 5e-3;

pub fn pairs() -> Vec<Row> {
    let (_, version) = unpacked("systemd-timesyncd", "lib/systemd/systemd-timesyncd");
    let program = "systemd-timesyncd (in the VM)";
    let row = |direction, auth, checked| Row::checked("systemd-timesyncd", program, &version, direction, auth, checked);
    let only_client =
        || Ok(Outcome::NotApplicable("systemd-timesyncd is only a client (SNTP): it serves no time".into()));
    vec![
        row(Direction::PeerClient, Auth::Plain, follows()),
        row(
            Direction::PeerClient,
            Auth::Nts,
            Ok(Outcome::NotApplicable("systemd-timesyncd 252 has no NTS (no NTS code or option in it)".into())),
        ),
        row(Direction::PeerServer, Auth::Plain, only_client()),
        row(Direction::PeerServer, Auth::Nts, only_client()),
    ]
}

/// Its first synchronization to ntpd-sim, and what it read.
fn follows() -> Result<Outcome, String> {
    let vm = run().as_ref().map_err(|e| format!("the VM run failed: {e}"))?;
    let log = lines(&vm.console, "timesyncd");
    let end = lines(&vm.console, "timesyncd end").first().copied().unwrap_or_default();
    let text = log.join("\n");
    ensure(text.contains("Initial clock synchronization"), || {
        format!("no 'Initial clock synchronization' ({end}):\n{text}")
    })?;
    // The last "NTP response:" block: the reply it synchronized on.
    let block = log.rsplit(|l| l.contains("NTP response:")).next().unwrap_or_default();
    let field =
        |name: &str| block.iter().find_map(|l| l.trim().strip_prefix(name)?.trim().strip_prefix(':').map(str::trim));
    let seconds = |name: &str| field(name).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    let offset = seconds("offset").ok_or_else(|| format!("no offset in its NTP response block:\n{text}"))?;
    let shows = shown_matches(
        &vm.advertised["servers"][0],
        field("leap"),
        field("stratum"),
        field("reference"),
        seconds("root distance"),
    )?;
    ensure(offset.abs() <= BOUND, || format!("its offset {offset:+.3} s is beyond ±{BOUND} s"))?;
    let after = ntp_e2e::vm::text_field(end, "after").unwrap_or("?");
    Ok(works(
        format!("offset {:+.1} ms (its debug log, ms resolution); synchronized {after} s after start", offset * 1e3),
        format!("±{:.0} ms (guest clock stepped onto ntpd-sim's; TCG stalls)", BOUND * 1e3),
        shows,
    ))
}

/// Checks what timesyncd read against what ntpd-sim sent (`sent`), and
/// says it in a line.
fn shown_matches(
    sent: &Value,
    leap: Option<&str>,
    stratum: Option<&str>,
    reference: Option<&str>,
    distance: Option<f64>,
) -> Result<String, String> {
    ensure(leap == Some("0") && sent["leap"] == "none", || format!("leap {leap:?}, ntpd-sim sent {}", sent["leap"]))?;
    let sent_stratum = sent["stratum"].as_u64().unwrap_or(0);
    ensure(stratum.and_then(|s| s.parse().ok()) == Some(sent_stratum), || {
        format!("stratum {stratum:?}, ntpd-sim sent {sent_stratum}")
    })?;
    ensure(reference == Some(REFID) && sent["refid"] == REFID, || {
        format!("reference {reference:?}, ntpd-sim sent {}", sent["refid"])
    })?;
    // What the server sent: its root delay / 2 + root dispersion (ntp-query's
    // own `root_distance` adds the exchange it measured, through qemu's NAT).
    let sent_distance = crate::report::sent_distance(sent);
    // Read at different moments (timesyncd prints microseconds).
    let band = crate::report::DISPERSION_BAND;
    ensure(distance.is_some_and(|d| (d - sent_distance).abs() <= band), || {
        format!("root distance {distance:?} s, ntpd-sim sent {sent_distance} s")
    })?;
    Ok(format!(
        "leap 0, stratum {sent_stratum}, reference {REFID}, root distance {:.1} µs (ntpd-sim sent {:.1} µs)",
        distance.unwrap_or(f64::NAN) * 1e6,
        sent_distance * 1e6
    ))
}
