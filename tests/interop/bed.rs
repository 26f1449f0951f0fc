//! Two hosts of the test's own, linked by a veth pair: host A runs
//! ntpd-sim (and ntp-query, and the relays), host B the peer. Both serve on
//! port 123 if they like (each namespace has its own), and a peer that
//! binds the wildcard address (NTPsec does) cannot collide with ntpd-sim.
//! Host A also answers on two more addresses, where [`Relay`]s forward
//! NTP and NTS-KE to whichever host serves: one as it is, one with a byte
//! of every NTS reply flipped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ntp_e2e::netns::Netns;
use ntp_e2e::nts::TestCa;
use ntp_e2e::process::wait_for;
use ntp_e2e::{bin, Daemon};

/// The names of host A, host B, the faithful relay and the tampering one,
/// in every host's `/etc/hosts` and the certificate (an NTS client checks
/// a name more readily than an address).
pub const NAMES: [&str; 4] = ["ntpd-sim.test", "peer.test", "relay.test", "tamper.test"];

/// Held by a pair while it runs the test VM: one VM at a time (two cores;
/// a VM under TCG takes one whole).
pub fn vm_turn() -> std::sync::MutexGuard<'static, ()> {
    static VM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    VM.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The NTS-KE port every server of the matrix uses.
pub const KE_PORT: u16 = 4460;

/// Host A (ntpd-sim's) and host B (the peer's), linked.
#[derive(Debug)]
pub struct Bed {
    /// ntpd-sim's host.
    pub a: Netns,
    /// The peer's host.
    pub b: Netns,
    subnet: u32,
    /// A CA and a certificate for every address of the bed.
    pub ca: TestCa,
}

impl Bed {
    /// Two new hosts, `10.77.N.1` (A, also `.3` and `.4` for the relays)
    /// and `10.77.N.2` (B), with N unique in this run.
    pub fn new(purpose: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let subnet = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(subnet < 255, "too many beds");
        let a = Netns::new(&format!("{purpose}a"));
        let b = Netns::new(&format!("{purpose}b"));
        let tag = std::process::id() % 100_000;
        let (va, vb) = (format!("ia{tag}x{subnet}"), format!("ib{tag}x{subnet}"));
        run(Command::new("ip")
            .args(["link", "add", &va, "netns", a.name(), "type", "veth", "peer", "name", &vb])
            .args(["netns", b.name()]));
        for (ns, dev, hosts) in [(&a, &va, &[1, 3, 4][..]), (&b, &vb, &[2][..])] {
            for host in hosts {
                run(ns.command("ip").args(["addr", "add", &format!("10.77.{subnet}.{host}/24"), "dev", dev]));
            }
            run(ns.command("ip").args(["link", "set", dev, "up"]));
        }
        let mut names: Vec<String> = [1, 2, 3, 4].iter().map(|h| format!("10.77.{subnet}.{h}")).collect();
        let hosts: String = names.iter().zip(NAMES).map(|(ip, name)| format!("{ip} {name}\n")).collect();
        for ns in [&a, &b] {
            ns.set_etc_file("hosts", &format!("127.0.0.1 localhost\n{hosts}"));
        }
        names.extend(NAMES.iter().map(|n| n.to_string()));
        let ca = TestCa::for_addresses(&names.iter().map(String::as_str).collect::<Vec<_>>());
        Self { a, b, subnet, ca }
    }

    /// Host A's address, where ntpd-sim serves.
    pub fn a_ip(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    /// Host B's address, where the peer serves.
    pub fn b_ip(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    /// A relay's address on host A: the tampering one or the faithful one.
    pub fn relay_ip(&self, tamper: bool) -> String {
        format!("10.77.{}.{}", self.subnet, if tamper { 4 } else { 3 })
    }

    /// A relay's name: `tamper.test` or `relay.test`.
    pub fn relay_name(tamper: bool) -> &'static str {
        NAMES[if tamper { 3 } else { 2 }]
    }

    /// `ntpd-sim serve` on host A's address, port 123, with NTS-KE on
    /// [`KE_PORT`] and `/status` on port 9123, with `args`.
    pub fn serve(&self, args: &[&str]) -> Daemon {
        let listen = format!("{}:123", self.a_ip());
        let ke = format!("{}:{KE_PORT}", self.a_ip());
        let http = self.http();
        let (cert, key) = (self.ca.server_cert(), self.ca.server_key());
        let mut all = vec!["--nts-listen", &ke, "--http", &http, "--no-control-socket"];
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        all.extend_from_slice(&["--nts-cert", &cert, "--nts-key", &key]);
        all.extend_from_slice(args);
        let daemon = self.a.serve(&listen, &all);
        ntp_e2e::nts::wait_tcp_open_in(&self.a, &self.a_ip(), KE_PORT);
        daemon
    }

    /// ntpd-sim's `/status` address on host A.
    pub fn http(&self) -> String {
        format!("{}:9123", self.a_ip())
    }

    /// `ntp-query` with `args`, run on host A; its JSON (`--json` is added).
    pub fn query(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let output = self.a.command(bin("ntp-query")).arg("--json").args(args).output().map_err(|e| e.to_string())?;
        serde_json::from_slice(&output.stdout)
            .map_err(|_| format!("ntp-query {args:?}: {}", String::from_utf8_lossy(&output.stderr)))
    }

    /// A relay on host A at [`Bed::relay_ip`] forwarding NTP (UDP 123) and
    /// NTS-KE (TCP [`KE_PORT`]) to `to` (an address of the bed).
    pub fn relay(&self, to: &str, tamper: bool) -> Relay {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/relay.py");
        let listen = self.relay_ip(tamper);
        let mut args = vec![script.display().to_string(), listen.clone(), to.to_string()];
        if tamper {
            args.push("--tamper".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = self.a.spawn("/usr/bin/python3", &args);
        let ready = daemon.wait_for_line("relaying", Duration::from_secs(10));
        assert!(ready.is_some(), "relay did not start: {}", daemon.output());
        Relay { daemon, address: listen }
    }
}

/// A relay process ([`Bed::relay`]); stopped when dropped.
#[derive(Debug)]
pub struct Relay {
    daemon: Daemon,
    /// Where clients reach it (NTP on 123, NTS-KE on [`KE_PORT`]).
    pub address: String,
}

impl Relay {
    /// How many NTS replies it has tampered with, from its log.
    pub fn tampered(&self) -> usize {
        self.daemon.output().lines().filter(|l| l.starts_with("tampered")).count()
    }
}

/// The command `program` on `ns` without the right to set any clock:
/// `CAP_SYS_TIME` dropped from the bounding and inheritable sets before
/// the program starts, so even running as root (as NTPsec insists) the
/// kernel refuses every clock write it tries. Checked on a harmless
/// program first, so a setpriv that failed to drop it is found before a
/// time daemon runs.
pub fn without_clock_rights(ns: &Netns, program: &str, args: &[&str]) -> Daemon {
    let probe = ns
        .command(SETPRIV)
        .args(["--bounding-set=-sys_time", "--inh-caps=-sys_time", "cat", "/proc/self/status"])
        .output()
        .expect("setpriv");
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "setpriv failed: {}", String::from_utf8_lossy(&probe.stderr));
    assert!(!has_sys_time(&text), "setpriv kept CAP_SYS_TIME: {text}");
    let mut all = vec!["--bounding-set=-sys_time", "--inh-caps=-sys_time", program];
    all.extend_from_slice(args);
    let daemon = ns.spawn(SETPRIV, &all);
    // The pid is `ip netns exec`'s until it has exec'd setpriv, and
    // setpriv's until it has exec'd the program: read the program's own
    // capabilities once the process is the program.
    let exe = std::fs::canonicalize(program).unwrap_or_else(|_| program.into());
    let proc = PathBuf::from(format!("/proc/{}", daemon.pid()));
    let started = wait_for(Duration::from_secs(5), || {
        let running = std::fs::read_link(proc.join("exe")).ok()?;
        (running == exe).then(|| std::fs::read_to_string(proc.join("status")).ok()).flatten()
    });
    let status = started.unwrap_or_else(|| panic!("{program} did not start (or exited at once): {}", daemon.output()));
    assert!(!has_sys_time(&status), "{program} runs with CAP_SYS_TIME: {status}");
    daemon
}

/// Whether a `/proc/PID/status` text gives any of the permitted,
/// effective, bounding or ambient sets CAP_SYS_TIME (bit 25).
fn has_sys_time(status: &str) -> bool {
    ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"].iter().any(|set| {
        let line = status.lines().find(|l| l.starts_with(set));
        let bits = line.and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok());
        // A set not shown or not read counts as holding it.
        bits.is_none_or(|bits| bits & (1 << 25) != 0)
    })
}

/// util-linux's setpriv, the one program that drops the capability.
const SETPRIV: &str = "/usr/bin/setpriv";

/// Runs `command`; panics with its stderr if it fails.
pub fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// The version Debian's package `name` has installed.
pub fn package_version(name: &str) -> String {
    let output = Command::new("dpkg-query").args(["-W", "-f", "${Version}", name]).output();
    output.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_else(
        || panic!("Debian package {name} is not installed: run .ci/run (it installs every interop peer)"),
    )
}

/// Where `.ci/run` unpacked a Debian package that cannot be installed
/// beside chrony (they conflict on `time-daemon`): `/opt/ntp-peers/NAME`,
/// with the package's version in `VERSION`. Returns (path of `file` in
/// it, version).
pub fn unpacked(name: &str, file: &str) -> (String, String) {
    let root = PathBuf::from("/opt/ntp-peers").join(name);
    let path = root.join(file);
    assert!(path.exists(), "{} missing: run .ci/run, which unpacks Debian's {name} there", path.display());
    let version = std::fs::read_to_string(root.join("VERSION")).unwrap_or_default().trim().to_string();
    (path.display().to_string(), version)
}

/// The tampering check of an NTS pair: `client(false)` through the
/// faithful relay to `server` must give an offset, `client(true)` through
/// the tampering one must not, and the tampering relay must have changed
/// replies. Returns why the client refused them.
pub fn relayed(bed: &Bed, server: &str, client: impl Fn(bool) -> Result<f64, String>) -> Result<String, String> {
    let faithful = bed.relay(server, false);
    let tampering = bed.relay(server, true);
    let through = client(false).map_err(|e| format!("no answer through the faithful relay: {e}"))?;
    let refused = client(true);
    drop(faithful);
    let changed = tampering.tampered();
    match refused {
        Ok(offset) => Err(format!("tampered replies accepted: offset {offset} ({changed} changed)")),
        Err(_) if changed == 0 => Err("the tampering relay saw no NTS reply to change".into()),
        Err(why) => {
            Ok(format!("{changed} replies changed; {through:+.6} s through the faithful relay; {}", why.trim()))
        }
    }
}

/// An ntpd-sim on host A at `listen` following `upstream` (`HOST`, or
/// `nts://HOST` trusting the bed's CA), polling every 2^`polls.0` to
/// 2^`polls.1` s, once it serves at `stratum`: its offset of the upstream
/// (or why it did not get there in 40 s), with the daemon, still running.
pub fn follow(bed: &Bed, listen: &str, upstream: &str, polls: (i8, i8), stratum: u8) -> Result<(f64, Daemon), String> {
    let http = format!("{}:9124", bed.a_ip());
    let ca = bed.ca.ca_cert().display().to_string();
    let (min, max) = (polls.0.to_string(), polls.1.to_string());
    let args = ["--upstream", upstream, "--min-poll", &min, "--max-poll", &max, "--http", &http, "--no-control-socket"];
    let follower = bed.a.serve(listen, &[&args[..], &["--nts-ca-file", &ca]].concat());
    let synced = bed.a.wait_status(&http, Duration::from_secs(40), |s| s["system"]["stratum"] == stratum);
    let status = synced
        .ok_or_else(|| format!("ntpd-sim did not reach stratum {stratum} on {upstream}: {}", follower.output()))?;
    Ok((status["upstreams"][0]["offset"].as_f64().unwrap_or(f64::NAN), follower))
}

/// The tampering check of an NTS server on the bed at `server`, with
/// `ntp-query --nts` through both relays ([`relayed`]).
pub fn nts_query_relayed(bed: &Bed, server: &str) -> Result<String, String> {
    let ca = bed.ca.ca_cert().display().to_string();
    relayed(bed, server, |tamper| {
        let json = bed.query(&["-n", "2", "--nts", "--ca-file", &ca, Bed::relay_name(tamper)])?;
        let entry = &json["servers"][0];
        entry["offset"].as_f64().filter(|_| entry["error"].is_null()).ok_or_else(|| entry["error"].to_string())
    })
}

/// `ntp-query` on host A of the peer's server on host B (with NTS:
/// `peer.test`, NTS-KE on [`KE_PORT`]), eight samples, until it answers at
/// `stratum`: the target it queried and its entry, or why it did not
/// within 20 s.
pub fn query_peer(bed: &Bed, nts: bool, stratum: u8) -> Result<(String, serde_json::Value), String> {
    let ca = bed.ca.ca_cert().display().to_string();
    let target = if nts { NAMES[1].to_string() } else { format!("{}:123", bed.b_ip()) };
    let mut query = vec!["-n", "8", "-i", "0.1"];
    if nts {
        query.extend_from_slice(&["--nts", "--ca-file", &ca]);
        ntp_e2e::nts::wait_tcp_open_in(&bed.a, &bed.b_ip(), KE_PORT);
    }
    query.push(&target);
    let entry = wait_for(Duration::from_secs(20), || {
        let entry = bed.query(&query).ok()?["servers"][0].clone();
        (entry["error"].is_null() && entry["stratum"] == stratum).then_some(entry)
    });
    let entry = entry.ok_or_else(|| format!("no stratum-{stratum} answer to ntp-query: {:?}", bed.query(&query)))?;
    Ok((target, entry))
}
