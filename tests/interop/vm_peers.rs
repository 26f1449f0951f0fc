//! The matrix's one boot of the test VM (tests/vm/interop.sh) for the
//! clients that adjust the clock they run on and cannot be kept off it:
//! systemd-timesyncd, then OpenNTPD (client, then server), one after the
//! other in the same guest. qemu runs in a network namespace of its own
//! ([`ntp_e2e::vm::boot_in`]) whose loopback is the guest's 10.0.2.2,
//! where ntpd-sim serves on port 123: systemd-timesyncd asks no other
//! port, and this host's own port 123 is left alone. Both peers' threads
//! call [`run`]; the first boots, the other waits for the same run.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ntp_e2e::bin;
use ntp_e2e::netns::Netns;
use ntp_e2e::process::wait_for;
use ntp_e2e::vm::{boot_in, build_image_with, finished_console, vm_dir, Extras};
use serde_json::Value;

use crate::bed::{unpacked, vm_turn};

/// The reference ID ntpd-sim advertises to the guest.
pub const REFID: &str = "XSIM";
/// Seconds systemd-timesyncd has for its first synchronization: it asks at
/// once, and with a server that answers it is synchronized in one exchange.
const TIMESYNCD_LIMIT: u64 = 60;
/// Seconds OpenNTPD has to say "clock synced". By its design it first
/// needs eight good replies (its filter's eight slots, at 5 s then 30 s
/// intervals: about 100 s), adjusts, and is synced at the next adjustment
/// once that one has been slewed, which waits for the slots its choice
/// cleared to fill again (one to eight replies, 30 s each): 1.5 to 6.5
/// minutes (107 to 342 s in five runs), and a lost reply costs one more.
const OPENNTPD_LIMIT: u64 = 480;
/// Seconds OpenNTPD serves, synchronized, while the host reads it.
const SERVE: u64 = 75;
/// The guest's UDP port 123 on the namespace's 127.0.0.1.
const FORWARD: u16 = 1123;

/// What the VM run came to.
pub struct VmRun {
    /// The guest's console (its `VM ...` lines).
    pub console: String,
    /// What ntpd-sim advertised (ntp-query's entry for it, in the namespace).
    pub advertised: Value,
    /// OpenNTPD's server as read from the host side, or why it could not be.
    pub served: Result<Served, String>,
}

/// OpenNTPD's server, read through the forwarded port.
pub struct Served {
    /// ntp-query's entry for it.
    pub entry: Value,
    /// The offset of ntpd-sim's upstream side following it.
    pub follower_offset: f64,
    /// The stratum that ntpd-sim then served.
    pub follower_stratum: u64,
}

/// The one run, booted by whichever peer asks first.
pub fn run() -> &'static Result<VmRun, String> {
    static RUN: OnceLock<Result<VmRun, String>> = OnceLock::new();
    RUN.get_or_init(|| {
        std::panic::catch_unwind(AssertUnwindSafe(boot)).unwrap_or_else(|panic| {
            let why = panic.downcast_ref::<String>().cloned();
            Err(why.or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
        })
    })
}

/// The console lines `VM PREFIX ...`, without that.
pub fn lines<'a>(console: &'a str, prefix: &str) -> Vec<&'a str> {
    let prefix = format!("VM {prefix} ");
    console.lines().filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str())).collect()
}

fn boot() -> Result<VmRun, String> {
    let _turn = vm_turn();
    let ns = Netns::new("vmpeers");
    let server = ns.serve("127.0.0.1:123", &["--refid", REFID, "--http", "127.0.0.1:9123", "--no-control-socket"]);
    // Once it answers (it has just started).
    let advertised = wait_for(Duration::from_secs(10), || {
        query(&ns, &["-n", "1", "127.0.0.1:123"]).ok().filter(|json| json["servers"][0]["error"].is_null())
    })
    .ok_or_else(|| format!("ntpd-sim did not answer in the namespace: {}", server.output()))?;
    let programs: Vec<PathBuf> = [
        ("openntpd", "usr/sbin/ntpd"),
        ("openntpd", "usr/sbin/ntpctl"),
        ("systemd-timesyncd", "lib/systemd/systemd-timesyncd"),
    ]
    .iter()
    .map(|(name, file)| PathBuf::from(unpacked(name, file).0))
    .collect();
    let image = tempfile::tempdir().map_err(|e| e.to_string())?;
    build_image_with(&vm_dir().join("interop.sh"), image.path(), &Extras { programs: &programs, ..Default::default() });
    let args = format!("vm.timesyncd={TIMESYNCD_LIMIT} vm.openntpd={OPENNTPD_LIMIT} vm.serve={SERVE}");
    let mut qemu = boot_in(&ns, image.path(), &args, FORWARD);
    let before_serving = Duration::from_secs(60 + TIMESYNCD_LIMIT + OPENNTPD_LIMIT);
    let served = match qemu.wait_for_line("VM openntpd synced", before_serving) {
        Some(_) => read_server(&ns),
        None => Err("OpenNTPD never said \"clock synced\" (its ntpctl lines below)".into()),
    };
    wait_for(Duration::from_secs(SERVE + 60), || (!qemu.is_running()).then_some(()));
    let console = finished_console(&mut qemu, "vm-interop-console.log");
    drop(server);
    Ok(VmRun { console, advertised, served })
}

/// ntp-query reads OpenNTPD through the forward until it answers as a
/// synchronized server; then an ntpd-sim follows it.
fn read_server(ns: &Netns) -> Result<Served, String> {
    let target = format!("127.0.0.1:{FORWARD}");
    let entry = wait_for(Duration::from_secs(20), || {
        let json = query(ns, &["-n", "4", "-i", "0.5", &target]).ok()?;
        let entry = json["servers"][0].clone();
        (entry["error"].is_null() && entry["stratum"].as_u64().is_some_and(|s| (1..16).contains(&s))).then_some(entry)
    })
    .ok_or_else(|| format!("ntp-query got no synchronized answer from OpenNTPD: {:?}", query(ns, &[&target])))?;
    let http = "127.0.0.1:9124";
    let args = ["--upstream", &target, "--min-poll", "0", "--max-poll", "1", "--http", http, "--no-control-socket"];
    let follower = ns.serve("127.0.0.1:12300", &args);
    let synced = ns.wait_status(http, Duration::from_secs(40), |s| s["system"]["synchronized"] == true);
    let status = synced.ok_or_else(|| format!("ntpd-sim did not synchronize to OpenNTPD: {}", follower.output()))?;
    Ok(Served {
        entry,
        follower_offset: status["upstreams"][0]["offset"].as_f64().unwrap_or(f64::NAN),
        follower_stratum: status["system"]["stratum"].as_u64().unwrap_or(0),
    })
}

/// `ntp-query --json` with `args` in `ns`: its JSON.
fn query(ns: &Netns, args: &[&str]) -> Result<Value, String> {
    let output = ns.command(bin("ntp-query")).arg("--json").args(args).output().map_err(|e| e.to_string())?;
    serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("ntp-query {args:?}: {}", String::from_utf8_lossy(&output.stderr)))
}
